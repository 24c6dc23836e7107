// The tmem device against ABI.md: every op, exact lengths, status precedence,
// used len, failed puts flushing, any split of the bytes over descriptors.
import t from 'tap';
import {
  TMEM_OP_DESTROY_POOL,
  TMEM_OP_FLUSH_OBJECT,
  TMEM_OP_FLUSH_PAGE,
  TMEM_OP_GET_PAGE,
  TMEM_OP_INFO,
  TMEM_OP_NEW_POOL,
  TMEM_OP_PUT_PAGE,
  TMEM_OP_RESET,
  TMEM_POOL_PERSIST,
  TMEM_POOL_SHARED,
  TMEM_REQF_EXCLUSIVE,
  TMEM_S_FROZEN,
  TMEM_S_INVALID,
  TMEM_S_MISS,
  TMEM_S_NOSPACE,
  TMEM_S_OK,
  TMEM_S_UNSUPPORTED,
} from '../shared/abi.js';
import { TmemDevice, type DeviceGuest } from '../host/tmem/device.js';
import { INFO_LAYOUT } from '../host/tmem/info-layout.js';
import { ChainWalker } from '../host/virtio/chain.js';
import { TC } from '../host/tmem/counters.js';
import { FakeStore } from './device-fake-store.js';
import { DriverRing, F_INDIRECT, F_WRITE, FakeGuest, newPoolPayload, pattern, readResp, reqHeader, writeDesc, type Desc, type ReqFields } from './virtio-driver.js';

const OID: [bigint, bigint, bigint] = [0x0102030405060708n, 0x1112131415161718n, 0x2122232425262728n];

function setup() {
  const g = new FakeGuest(4 << 20);
  const r = new DriverRing(g, 256);
  const w = new ChainWalker();
  w.mem = g.mem;
  const store = new FakeStore();
  const guest: DeviceGuest = { storeGuest: store.addGuest({ name: 'vm', maxmemPages: 0, ramPages: 0, shareGroup: null }), sharedNegotiated: false, numQueues: 3 };
  const dev = new TmemDevice(store, INFO_LAYOUT, guest);
  const view = new DataView(g.ram.buffer);
  /** Runs one chain; returns the used len. */
  const run = (descs: readonly Desc[]): number => {
    const head = r.chain(descs);
    if (!w.walk(view, g.off(r.desc), r.num, head, true)) throw new Error(w.error);
    return dev.handle(0, w.readable, w.writable);
  };
  /** A request the ordinary way: [header + readable payload in one descriptor or two, writable payload, response]. */
  const req = (f: ReqFields, opts: { rd?: Uint8Array; wr?: number; rdLen?: number } = {}) => {
    const descs: Desc[] = [{ addr: g.put(reqHeader(f)), len: 48 }];
    if (opts.rd) descs.push({ addr: g.put(opts.rd, 4096), len: opts.rdLen ?? opts.rd.length });
    let data = 0;
    if (opts.wr) {
      data = g.alloc(opts.wr, 4096);
      g.ram.fill(0xaa, g.off(data), g.off(data) + opts.wr);
      descs.push({ addr: data, len: opts.wr, flags: F_WRITE });
    }
    const resp = g.alloc(16);
    g.ram.fill(0xee, g.off(resp), g.off(resp) + 16);
    descs.push({ addr: resp, len: 16, flags: F_WRITE });
    const len = run(descs);
    return { len, ...readResp(g, resp), data, resp };
  };
  const newPool = (flags = TMEM_POOL_PERSIST) => Number(req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(flags) }).value);
  const put = (pool: number, index: number, page: Uint8Array, oid = OID) => req({ op: TMEM_OP_PUT_PAGE, pool, index, oid }, { rd: page });
  const get = (pool: number, index: number, flags = 0, oid = OID) => {
    const x = req({ op: TMEM_OP_GET_PAGE, pool, index, oid, flags }, { wr: 4096 });
    return { ...x, page: g.read(x.data, 4096) };
  };
  return { g, r, w, store, dev, guest, run, req, newPool, put, get };
}

t.test('NEW_POOL answers the new pool id; the payload reaches the store', async (t) => {
  const s = setup();
  const uuid = new Uint8Array(16).fill(7);
  const a = s.req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(TMEM_POOL_PERSIST, 4096, uuid) });
  t.same([a.status, a.len, a.value, a.reserved], [TMEM_S_OK, 16, 0n, 0]);
  t.equal(s.store.calls.at(-1), 'newPool 1 4096 7 false');
  const b = s.req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(0) });
  t.equal(b.value, 1n);
  s.guest.sharedNegotiated = true;
  s.req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(TMEM_POOL_SHARED) });
  t.equal(s.store.calls.at(-1), 'newPool 2 4096 0 true', 'TMEM_F_SHARED negotiation is passed on');
});

t.test('PUT then GET returns the page; GET hit used len = 4096 + 16', async (t) => {
  const s = setup();
  const p = s.newPool();
  const page = pattern(1);
  const a = s.put(p, 5, page);
  t.same([a.status, a.len], [TMEM_S_OK, 16]);
  const b = s.get(p, 5);
  t.same([b.status, b.len], [TMEM_S_OK, 4096 + 16]);
  t.same(b.page, page);
});

t.test('GET miss: status MISS, used len 16, data area not written', async (t) => {
  const s = setup();
  const p = s.newPool();
  const b = s.get(p, 9);
  t.same([b.status, b.len], [TMEM_S_MISS, 16]);
  t.ok(b.page.every((x) => x === 0xaa));
});

t.test('GET with TMEM_REQF_EXCLUSIVE removes the page from a persistent pool', async (t) => {
  const s = setup();
  const p = s.newPool();
  s.put(p, 1, pattern(2));
  t.equal(s.get(p, 1).status, TMEM_S_OK);
  t.equal(s.get(p, 1, TMEM_REQF_EXCLUSIVE).status, TMEM_S_OK);
  t.equal(s.get(p, 1).status, TMEM_S_MISS);
});

t.test('FLUSH_PAGE, FLUSH_OBJECT (value = pages flushed), DESTROY_POOL, RESET (value = pools destroyed)', async (t) => {
  const s = setup();
  const p = s.newPool();
  for (let i = 0; i < 4; i++) s.put(p, i, pattern(i));
  const f = s.req({ op: TMEM_OP_FLUSH_PAGE, pool: p, index: 0, oid: OID });
  t.same([f.status, f.len, f.value], [TMEM_S_OK, 16, 0n]);
  t.equal(s.get(p, 0).status, TMEM_S_MISS);
  const o = s.req({ op: TMEM_OP_FLUSH_OBJECT, pool: p, oid: OID });
  t.same([o.status, o.len, o.value], [TMEM_S_OK, 16, 3n]);
  t.equal(s.get(p, 1).status, TMEM_S_MISS);
  const d = s.req({ op: TMEM_OP_DESTROY_POOL, pool: p });
  t.same([d.status, d.len], [TMEM_S_OK, 16]);
  t.equal(s.get(p, 1).status, TMEM_S_INVALID, 'unknown pool afterwards');
  s.newPool();
  s.newPool();
  const r = s.req({ op: TMEM_OP_RESET });
  t.same([r.status, r.len, r.value], [TMEM_S_OK, 16, 2n]);
});

t.test('INFO writes struct tmem_info; used len 64 + 16', async (t) => {
  const s = setup();
  const a = s.req({ op: TMEM_OP_INFO }, { wr: 64 });
  t.same([a.status, a.len], [TMEM_S_OK, 80]);
  const v = new DataView(s.g.ram.buffer, s.g.off(a.data), 64);
  t.equal(v.getUint32(0, true), 1, 'abi_version');
  t.equal(v.getUint32(4, true), 4096, 'page_size');
  t.equal(v.getUint32(8, true), 16, 'max_pools');
  t.equal(v.getUint32(12, true), 3, 'num_queues = the guest\'s queues');
  t.equal(v.getBigUint64(16, true), 0x100000n, 'capacity_pages');
  t.equal(v.getBigUint64(24, true), 0x40000n, 'persistent_limit_pages');
  t.equal(v.getBigUint64(32, true), 5n, 'persistent_pages');
  t.equal(v.getBigUint64(40, true), 0x123456789an, 'ephemeral_pages');
  t.ok(new Uint8Array(s.g.ram.buffer, s.g.off(a.data) + 48, 16).every((x) => x === 0), 'reserved zero');
});

t.test('an unknown op is UNSUPPORTED, even with lengths that fit no op', async (t) => {
  const s = setup();
  for (const op of [0, 9, 0xffffffff]) {
    const a = s.req({ op });
    t.same([a.status, a.len], [TMEM_S_UNSUPPORTED, 16], `op ${op}`);
    const b = s.req({ op }, { rd: new Uint8Array(5), wr: 7 });
    t.same([b.status, b.len], [TMEM_S_UNSUPPORTED, 16], `op ${op}, odd lengths`);
  }
});

t.test('lengths are exact for every op: one byte more or less is INVALID', async (t) => {
  const s = setup();
  const p = s.newPool();
  const cases: [number, number, number][] = [
    [TMEM_OP_NEW_POOL, 24, 0],
    [TMEM_OP_DESTROY_POOL, 0, 0],
    [TMEM_OP_PUT_PAGE, 4096, 0],
    [TMEM_OP_GET_PAGE, 0, 4096],
    [TMEM_OP_FLUSH_PAGE, 0, 0],
    [TMEM_OP_FLUSH_OBJECT, 0, 0],
    [TMEM_OP_INFO, 0, 64],
    [TMEM_OP_RESET, 0, 0],
  ];
  for (const [op, rdn, wrn] of cases) {
    for (const [dr, dw] of [
      [1, 0],
      [-1, 0],
      [0, 1],
      [0, -1],
    ] as const) {
      if (rdn + dr < 0 || wrn + dw < 0) continue;
      const rd = rdn + dr > 0 ? new Uint8Array(rdn + dr) : undefined;
      const a = s.req({ op, pool: p }, { rd, wr: wrn + dw || undefined });
      t.same([a.status, a.len], [TMEM_S_INVALID, 16], `op ${op} readable ${rdn + dr} writable ${wrn + dw}`);
    }
  }
  t.ok(s.store.pools.size === 1, 'no destroy or reset happened');
});

t.test('a short header is INVALID', async (t) => {
  const s = setup();
  const resp = s.g.alloc(16);
  const hdr = reqHeader({ op: TMEM_OP_RESET });
  t.equal(s.run([{ addr: s.g.put(hdr), len: 47 }, { addr: resp, len: 16, flags: F_WRITE }]), 16);
  t.equal(readResp(s.g, resp).status, TMEM_S_INVALID);
  t.equal(s.run([{ addr: s.g.put(hdr), len: 3 }, { addr: resp, len: 16, flags: F_WRITE }]), 16);
  t.equal(readResp(s.g, resp).status, TMEM_S_INVALID);
  t.equal(s.run([{ addr: resp, len: 16, flags: F_WRITE }]), 16, 'no readable bytes at all');
  t.equal(readResp(s.g, resp).status, TMEM_S_INVALID);
});

t.test('flag bits an op does not define are INVALID', async (t) => {
  const s = setup();
  const p = s.newPool();
  s.put(p, 1, pattern(1));
  t.equal(s.put(p, 1, pattern(2), OID).status, TMEM_S_OK);
  t.equal(s.req({ op: TMEM_OP_PUT_PAGE, pool: p, index: 1, oid: OID, flags: TMEM_REQF_EXCLUSIVE }, { rd: pattern(3) }).status, TMEM_S_INVALID);
  t.equal(s.get(p, 1, 2).status, TMEM_S_INVALID);
  t.equal(s.req({ op: TMEM_OP_FLUSH_PAGE, pool: p, index: 1, oid: OID, flags: 1 }).status, TMEM_S_INVALID);
  t.equal(s.req({ op: TMEM_OP_INFO, flags: 0x80000000 }, { wr: 64 }).status, TMEM_S_INVALID);
  t.equal(s.req({ op: TMEM_OP_NEW_POOL, flags: 1 }, { rd: newPoolPayload(0) }).status, TMEM_S_INVALID);
});

t.test('pool flags the ABI does not allow are INVALID (the store decides, the device passes them on)', async (t) => {
  const s = setup();
  t.equal(s.req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(TMEM_POOL_SHARED) }).status, TMEM_S_INVALID, 'shared without TMEM_F_SHARED');
  s.guest.sharedNegotiated = true;
  t.equal(s.req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(TMEM_POOL_SHARED | TMEM_POOL_PERSIST) }).status, TMEM_S_INVALID, 'PERSIST|SHARED');
  t.equal(s.req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(4) }).status, TMEM_S_INVALID, 'unknown bit');
  t.equal(s.req({ op: TMEM_OP_NEW_POOL }, { rd: newPoolPayload(0, 8192) }).status, TMEM_S_INVALID, 'page size');
});

t.test('an unknown pool id is INVALID', async (t) => {
  const s = setup();
  t.equal(s.put(42, 0, pattern(1)).status, TMEM_S_INVALID);
  t.equal(s.get(42, 0).status, TMEM_S_INVALID);
  t.equal(s.req({ op: TMEM_OP_DESTROY_POOL, pool: 42 }).status, TMEM_S_INVALID);
});

t.test('fewer than 16 writable bytes: unanswerable, used len 0, nothing written', async (t) => {
  const s = setup();
  const p = s.newPool();
  s.put(p, 1, pattern(1));
  const resp = s.g.alloc(16);
  s.g.ram.fill(0xee, s.g.off(resp), s.g.off(resp) + 16);
  const before = s.g.ram.slice();
  const len = s.run([{ addr: s.g.put(reqHeader({ op: TMEM_OP_FLUSH_PAGE, pool: p, index: 1, oid: OID })), len: 48 }, { addr: resp, len: 15, flags: F_WRITE }]);
  t.equal(len, 0);
  t.match(s.dev.error, /16-byte response/);
  t.ok(s.dev.refused, 'refused: the fairness budget charges the penalty');
  t.same(s.g.ram.slice(s.g.off(resp), s.g.off(resp) + 16), before.slice(s.g.off(resp), s.g.off(resp) + 16));
  t.equal(s.get(p, 1).status, TMEM_S_OK, 'the flush did not happen');
  t.equal(s.run([{ addr: s.g.put(reqHeader({ op: TMEM_OP_RESET })), len: 48 }]), 0, 'no writable bytes at all');
});

t.test('a failed PUT leaves the handle empty (put-put-get): NOSPACE, FROZEN, INVALID lengths', async (t) => {
  const s = setup();
  const p = s.newPool();
  for (const [why, fail] of [
    ['NOSPACE', () => ((s.store.putStatus = TMEM_S_NOSPACE), s.put(p, 1, pattern(2)))],
    ['FROZEN', () => ((s.store.putStatus = TMEM_S_FROZEN), s.put(p, 1, pattern(2)))],
    ['INVALID length', () => s.req({ op: TMEM_OP_PUT_PAGE, pool: p, index: 1, oid: OID }, { rd: pattern(2), rdLen: 4095 })],
    ['INVALID flags', () => s.req({ op: TMEM_OP_PUT_PAGE, pool: p, index: 1, oid: OID, flags: 4 }, { rd: pattern(2) })],
  ] as const) {
    s.store.putStatus = null;
    t.equal(s.put(p, 1, pattern(1)).status, TMEM_S_OK);
    const a = fail();
    s.store.putStatus = null;
    t.not(a.status, TMEM_S_OK, why);
    t.equal(a.len, 16);
    t.equal(s.get(p, 1).status, TMEM_S_MISS, `${why}: the old copy is gone`);
  }
});

t.test('the bytes may be split over descriptors any way: header, page and response in pieces', async (t) => {
  const s = setup();
  const p = s.newPool();
  const page = pattern(7);
  const hdr = reqHeader({ op: TMEM_OP_PUT_PAGE, pool: p, index: 3, oid: OID });
  const all = new Uint8Array(48 + 4096);
  all.set(hdr);
  all.set(page, 48);
  // 1-byte descriptors for the header, then the page in 3 pieces that straddle the header
  const descs: Desc[] = [];
  for (let i = 0; i < 40; i++) descs.push({ addr: s.g.put(all.subarray(i, i + 1), 1), len: 1 });
  descs.push({ addr: s.g.put(all.subarray(40, 1000)), len: 960 });
  descs.push({ addr: 0, len: 0 });
  descs.push({ addr: s.g.put(all.subarray(1000, 3000)), len: 2000 });
  descs.push({ addr: s.g.put(all.subarray(3000)), len: all.length - 3000 });
  const r1 = s.g.alloc(16);
  const r2 = s.g.alloc(16);
  descs.push({ addr: r1, len: 8, flags: F_WRITE }, { addr: r2, len: 8, flags: F_WRITE });
  t.equal(s.run(descs), 16);
  t.equal(s.g.dv.getInt32(s.g.off(r1), true), TMEM_S_OK);
  t.equal(s.dev.counters[TC.putsGathered], 1);
  // GET: data in 2 pieces, the response sharing the second piece's descriptor
  const d1 = s.g.alloc(100);
  const d2 = s.g.alloc(4096 - 100 + 16);
  const len = s.run([
    { addr: s.g.put(reqHeader({ op: TMEM_OP_GET_PAGE, pool: p, index: 3, oid: OID })), len: 48 },
    { addr: d1, len: 100, flags: F_WRITE },
    { addr: d2, len: 4096 - 100 + 16, flags: F_WRITE },
  ]);
  t.equal(len, 4096 + 16);
  const got = new Uint8Array(4096);
  got.set(s.g.read(d1, 100));
  got.set(s.g.read(d2, 3996), 100);
  t.same(got, page);
  t.equal(s.g.dv.getInt32(s.g.off(d2) + 3996, true), TMEM_S_OK, 'response = the last 16 writable bytes');
  t.equal(s.dev.counters[TC.getsScattered], 1);
});

t.test('one writable descriptor holding page and response', async (t) => {
  const s = setup();
  const p = s.newPool();
  s.put(p, 1, pattern(9));
  const d = s.g.alloc(4112, 4096);
  const len = s.run([{ addr: s.g.put(reqHeader({ op: TMEM_OP_GET_PAGE, pool: p, index: 1, oid: OID })), len: 48 }, { addr: d, len: 4112, flags: F_WRITE }]);
  t.equal(len, 4112);
  t.same(s.g.read(d, 4096), pattern(9));
  t.equal(s.dev.counters[TC.getsScattered], 0, 'the page sat in one segment: copied in place');
});

t.test('a request through an indirect table (what a 5.10 guest sends)', async (t) => {
  const s = setup();
  const p = s.newPool();
  const tbl = s.g.alloc(48);
  const resp = s.g.alloc(16);
  writeDesc(s.g, tbl, 0, { addr: s.g.put(reqHeader({ op: TMEM_OP_PUT_PAGE, pool: p, index: 2, oid: OID })), len: 48, flags: 1, next: 1 });
  writeDesc(s.g, tbl, 1, { addr: s.g.put(pattern(4), 4096), len: 4096, flags: 1, next: 2 });
  writeDesc(s.g, tbl, 2, { addr: resp, len: 16, flags: F_WRITE });
  t.equal(s.run([{ addr: tbl, len: 48, flags: F_INDIRECT }]), 16);
  t.equal(readResp(s.g, resp).status, TMEM_S_OK);
  t.same(s.get(p, 2).page, pattern(4));
});

t.test('the response carries value as le64 and reserved 0', async (t) => {
  const s = setup();
  const p = s.newPool();
  for (let i = 0; i < 3; i++) s.put(p, i, pattern(i));
  const a = s.req({ op: TMEM_OP_FLUSH_OBJECT, pool: p, oid: OID });
  const raw = s.g.read(a.resp, 16);
  t.same([...raw], [0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
});
