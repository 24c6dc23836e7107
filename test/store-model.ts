// Model-based test of the tmem store: seeded random operations over several
// guests and pools under capacity pressure, each checked against a reference
// model (a plain Map) that allows exactly the freedom ABI.md gives: an
// ephemeral page may be missing. Never stale or wrong data, persistent pages
// never lost, statuses exact, limits never exceeded.
//
// TMEM_STORE_SEED=<n> replays one seed; TMEM_STORE_OPS=<n> changes the length.
import t from 'tap';
import {
  TMEM_POOL_PERSIST as PERSIST,
  TMEM_POOL_SHARED as SHARED,
  TMEM_REQF_EXCLUSIVE as EXCL,
  TMEM_S_FROZEN,
  TMEM_S_MISS,
  TMEM_S_NOSPACE,
  TMEM_S_OK,
} from '../shared/abi.js';
import { INFO_LENGTH, INFO_PERSISTENT_PAGES, TmemStore } from '../host/tmem/store/store.js';

const CAPACITY = 200;
const MAX_POOLS = 4;
const MAXMEM = 1100;
const OPS = Number(process.env.TMEM_STORE_OPS ?? 150_000);
const SEED = process.env.TMEM_STORE_SEED !== undefined ? Number(process.env.TMEM_STORE_SEED) : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

// ---- the reference model -------------------------------------------------

interface MPool { readonly id: number; readonly persistent: boolean; readonly shared: boolean; refs: number; readonly key: string }
interface MGuest { storeId: number; group: string | null; limit: number; frozen: boolean; pools: (MPool | null)[] }

/** Page content for value v: v at both ends and in the middle. */
function fillPage(buf: Uint8Array, v: number): void {
  const d = new DataView(buf.buffer, buf.byteOffset, 4096);
  d.setUint32(0, v, true);
  d.setUint32(2048, v ^ 0x5a5a5a5a, true);
  d.setUint32(4092, v, true);
}
function readPage(buf: Uint8Array): number {
  const d = new DataView(buf.buffer, buf.byteOffset, 4096);
  const v = d.getUint32(0, true);
  if (d.getUint32(2048, true) !== (v ^ 0x5a5a5a5a) || d.getUint32(4092, true) !== v) return -1; // torn
  return v;
}

t.test(`model-based: ${OPS} random ops against a Map model (seed ${SEED})`, async (t) => {
  t.comment(`seed ${SEED} (replay: TMEM_STORE_SEED=${SEED})`);
  const r = rng(SEED);
  const pick = (n: number) => Math.floor(r() * n);
  const s = new TmemStore({ capacityPages: CAPACITY, maxPoolsPerGuest: MAX_POOLS });

  /** key `${pool.id}/${oid}/${index}` -> value. Ephemeral entries mean "this value or nothing". */
  const pages = new Map<string, number>();
  const shared = new Map<string, MPool>();
  let nextPool = 1;
  let nextValue = 1;
  const groups = ['red', 'red', 'blue', null];
  const limits = [70, 60, 50, 90]; // sum > CAPACITY: persistent PUTs meet both limits
  const guests: MGuest[] = groups.map((group, i) => ({
    storeId: s.addGuest({ name: `vm${i}`, maxmemPages: MAXMEM, ramPages: MAXMEM - limits[i]!, shareGroup: group }),
    group,
    limit: limits[i]!,
    frozen: false,
    pools: new Array<MPool | null>(MAX_POOLS).fill(null),
  }));
  const owner = new Map<number, MGuest>(); // private pool id -> guest

  const persistentCount = (g: MGuest | null) => {
    let n = 0;
    for (const k of pages.keys()) {
      const id = Number(k.slice(0, k.indexOf('/')));
      const o = owner.get(id);
      if (o && persistent.has(id) && (g === null || o === g)) n++;
    }
    return n;
  };
  const persistent = new Set<number>();
  const dropPool = (p: MPool) => {
    if (--p.refs > 0) return;
    if (p.shared) shared.delete(p.key);
    for (const k of [...pages.keys()]) if (k.startsWith(`${p.id}/`)) pages.delete(k);
  };

  const oids = [0, 1, 2, 0xffffffff].map((w) => new Uint32Array([w, 7, w ^ 3, 0, 1, w]));
  const buf = new Uint8Array(4096 + 64);
  const out = new Uint8Array(4096);
  const info = new Float64Array(INFO_LENGTH);
  let op = '';
  let fails = 0;
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new Error(`seed ${SEED}, ${op}: ${what}`);
  };

  let i = 0;
  const seen = { putOk: 0, putNoSpace: 0, putFrozen: 0, hits: 0, ephemeralLost: 0 };
  try {
    for (i = 0; i < OPS; i++) {
      const gi = pick(guests.length);
      const g = guests[gi]!;
      const gid = g.storeId;
      const pid = pick(MAX_POOLS);
      const pool = g.pools[pid] ?? null;
      const oi = pick(oids.length);
      const index = pick(24);
      const key = pool ? `${pool.id}/${oi}/${index}` : '';
      const x = r();
      if (x < 0.45) {
        // PUT_PAGE
        const v = nextValue++;
        const off = pick(64);
        fillPage(buf.subarray(off), v);
        op = `op ${i}: put g${gi} p${pid} o${oi} i${index} v${v}`;
        const st = s.putPage(gid, pid, oids[oi]!, index, buf, off);
        if (!pool) {
          check(st < 0 && st !== TMEM_S_NOSPACE && st !== TMEM_S_FROZEN, `unknown pool gave ${st}`);
          continue;
        }
        let want: number;
        const present = pages.has(key);
        if (g.frozen) want = TMEM_S_FROZEN;
        else if (pool.persistent) {
          const mine = persistentCount(g);
          const all = persistentCount(null);
          if (present) want = mine > g.limit ? TMEM_S_NOSPACE : TMEM_S_OK;
          else want = mine >= g.limit || all >= CAPACITY ? TMEM_S_NOSPACE : TMEM_S_OK;
        } else want = persistentCount(null) >= CAPACITY ? TMEM_S_NOSPACE : TMEM_S_OK;
        check(st === want, `status ${st}, model wants ${want}`);
        seen[st === TMEM_S_OK ? 'putOk' : st === TMEM_S_NOSPACE ? 'putNoSpace' : 'putFrozen']++;
        if (st === TMEM_S_OK) pages.set(key, v);
        else pages.delete(key);
      } else if (x < 0.78) {
        // GET_PAGE
        const flags = r() < 0.3 ? EXCL : 0;
        op = `op ${i}: get g${gi} p${pid} o${oi} i${index} f${flags}`;
        out.fill(0);
        const st = s.getPage(gid, pid, oids[oi]!, index, flags, out, 0);
        if (!pool) {
          check(st < 0 && st !== TMEM_S_MISS, `unknown pool gave ${st}`);
          continue;
        }
        const v = pages.get(key);
        if (st === TMEM_S_OK) {
          check(v !== undefined, `hit on a handle the model says is empty (got ${readPage(out)})`);
          check(readPage(out) === v, `got ${readPage(out)}, model has ${v}`);
          seen.hits++;
          if (!pool.shared && (!pool.persistent || flags)) pages.delete(key);
        } else {
          check(st === TMEM_S_MISS, `status ${st}`);
          check(v === undefined || !pool.persistent, `persistent page ${v} lost`);
          if (v !== undefined) seen.ephemeralLost++;
          pages.delete(key); // get-get: it must keep missing
        }
      } else if (x < 0.86) {
        op = `op ${i}: flush g${gi} p${pid} o${oi} i${index}`;
        const st = s.flushPage(gid, pid, oids[oi]!, index);
        check(pool ? st === TMEM_S_OK : st < 0, `status ${st}`);
        if (pool) pages.delete(key);
      } else if (x < 0.89) {
        op = `op ${i}: flush object g${gi} p${pid} o${oi}`;
        const st = s.flushObject(gid, pid, oids[oi]!);
        if (!pool) {
          check(st < 0, `status ${st}`);
          continue;
        }
        const pre = `${pool.id}/${oi}/`;
        const keys = [...pages.keys()].filter((k) => k.startsWith(pre));
        check(pool.persistent ? st === keys.length : st >= 0 && st <= keys.length, `flushed ${st}, model has ${keys.length}`);
        for (const k of keys) pages.delete(k);
      } else if (x < 0.93) {
        // NEW_POOL or, now and then, DESTROY_POOL
        if (pool && r() < 0.1) {
          op = `op ${i}: destroy g${gi} p${pid}`;
          check(s.destroyPool(gid, pid) === TMEM_S_OK, 'destroy failed');
          g.pools[pid] = null;
          dropPool(pool);
        } else if (!pool) {
          const kind = pick(3); // 0 eph, 1 persist, 2 shared
          const flags = kind === 0 ? 0 : kind === 1 ? PERSIST : SHARED;
          const u = new Uint8Array(16).fill(pick(2));
          op = `op ${i}: new pool g${gi} flags ${flags}`;
          const st = s.newPool(gid, flags, 4096, u, 0, true);
          const free = g.pools.indexOf(null);
          if (kind === 2 && g.group === null) {
            check(st === -1, `shared pool without a group gave ${st}`);
            continue;
          }
          check(st === free, `pool id ${st}, model wants ${free}`);
          let p: MPool;
          if (kind === 2) {
            const k = `${g.group}:${u[0]}`;
            p = shared.get(k) ?? { id: nextPool++, persistent: false, shared: true, refs: 0, key: k };
            shared.set(k, p);
            p.refs++;
          } else {
            p = { id: nextPool++, persistent: kind === 1, shared: false, refs: 1, key: '' };
            owner.set(p.id, g);
            if (kind === 1) persistent.add(p.id);
          }
          g.pools[st] = p;
        }
      } else if (x < 0.96) {
        op = `op ${i}: reclaim`;
        const left = s.reclaimStep(pick(20));
        check(left >= 0, `reclaim ${left}`);
      } else if (x < 0.962) {
        op = `op ${i}: freeze g${gi}`;
        g.frozen = !g.frozen && r() < 0.3;
        s.setFrozen(gid, g.frozen);
      } else if (x < 0.964) {
        op = `op ${i}: ram g${gi}`;
        g.limit = pick(90);
        s.setGuestRam(gid, MAXMEM - g.limit);
      } else if (x < 0.9643) {
        op = `op ${i}: reset g${gi}`;
        const n = g.pools.filter((p) => p).length;
        check(s.reset(gid) === n, 'reset count');
        g.pools.forEach((p, j) => {
          if (p) dropPool(p);
          g.pools[j] = null;
        });
      } else if (x < 0.9645) {
        op = `op ${i}: remove guest g${gi}`;
        s.removeGuest(gid);
        g.pools.forEach((p, j) => {
          if (p) dropPool(p);
          g.pools[j] = null;
        });
        g.frozen = false;
        g.storeId = s.addGuest({ name: `vm${gi}`, maxmemPages: MAXMEM, ramPages: MAXMEM - g.limit, shareGroup: g.group });
      } else if (x < 0.9647) {
        op = `op ${i}: flush guest g${gi}`;
        s.flushGuest(gid);
        for (const p of g.pools) if (p && !p.shared) for (const k of [...pages.keys()]) if (k.startsWith(`${p.id}/`)) pages.delete(k);
      } else {
        // INFO and host-wide accounting
        op = `op ${i}: info g${gi}`;
        s.info(gid, info);
        check(info[INFO_PERSISTENT_PAGES] === persistentCount(g), `info persistent ${info[INFO_PERSISTENT_PAGES]}, model ${persistentCount(g)}`);
        const st = s.stats() as { freePages: number; ephemeralPages: number; persistentPages: number; reclaimPendingPages: number };
        check(st.persistentPages === persistentCount(null), `host persistent ${st.persistentPages}`);
        check(st.freePages >= 0 && st.freePages + st.ephemeralPages + st.persistentPages + st.reclaimPendingPages === CAPACITY, 'host counts');
      }
    }
    // every persistent page the model has is still there, with its data
    op = 'final sweep';
    for (const [k, v] of pages) {
      const [id, oi, index] = k.split('/').map(Number) as [number, number, number];
      const g = owner.get(id);
      if (!g || !persistent.has(id)) continue;
      const pid = g.pools.findIndex((p) => p?.id === id);
      check(s.getPage(g.storeId, pid, oids[oi]!, index, 0, out, 0) === TMEM_S_OK && readPage(out) === v, `persistent ${k} lost`);
    }
    s.reclaimStep(1e9);
    check((s.stats() as { reclaimPendingPages: number }).reclaimPendingPages === 0, 'reclaim finishes');
    t.comment(JSON.stringify(seen));
  } catch (e) {
    fails++;
    t.fail(`${(e as Error).message} (replay: TMEM_STORE_SEED=${SEED})`);
  }
  t.equal(fails, 0, `${i} ops checked`);
});
