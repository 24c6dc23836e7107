// The tmem store, one test per rule of ../shared/docs/ABI.md ("Semantics",
// "Edge rules"), named after the rule (host/tmem/store/store.ts).
import t from 'tap';
import {
  TMEM_POOL_PERSIST as PERSIST,
  TMEM_POOL_SHARED as SHARED,
  TMEM_REQF_EXCLUSIVE as EXCL,
  TMEM_S_DENIED,
  TMEM_S_FROZEN,
  TMEM_S_INVALID,
  TMEM_S_MISS,
  TMEM_S_NOSPACE,
  TMEM_S_OK,
} from '../shared/abi.js';
import {
  INFO_CAPACITY_PAGES,
  INFO_EPHEMERAL_PAGES,
  INFO_LENGTH,
  INFO_MAX_POOLS,
  INFO_PERSISTENT_LIMIT_PAGES,
  INFO_PERSISTENT_PAGES,
  TmemStore,
} from '../host/tmem/store/store.js';

const EPH = 0;
const NO_UUID = new Uint8Array(16);

function uuid(n: number): Uint8Array {
  return new Uint8Array(16).fill(n);
}

function oid(a: number, b = 0, c = 0): Uint32Array {
  return new Uint32Array([a, 0, b, 0, c, 0]);
}

function page(fill: number): Uint8Array {
  const p = new Uint8Array(4096).fill(fill);
  p[4095] = fill ^ 0xff;
  return p;
}

const dst = new Uint8Array(4096);

/** GET's status, and the first byte copied on a hit (-1 on a miss). */
function get(s: TmemStore, g: number, pool: number, o: Uint32Array, i: number, flags = 0): [number, number] {
  dst.fill(0xee);
  const r = s.getPage(g, pool, o, i, flags, dst, 0);
  return [r, r === TMEM_S_OK ? dst[0]! : -1];
}

function setup(opts: { capacity?: number; maxmem?: number; ram?: number; group?: string | null; maxPools?: number } = {}) {
  const s = new TmemStore({ capacityPages: opts.capacity ?? 64, maxPoolsPerGuest: opts.maxPools ?? 8 });
  const g = s.addGuest({ name: 'vm1', maxmemPages: opts.maxmem ?? 1000, ramPages: opts.ram ?? 500, shareGroup: opts.group ?? null });
  return { s, g };
}

t.test('copy not move: PUT copies the page, later changes to the source are not seen', async (t) => {
  const { s, g } = setup();
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  const src = page(7);
  t.equal(s.putPage(g, p, oid(1), 0, src, 0), TMEM_S_OK);
  src.fill(9);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 7]);
  t.equal(dst[4095], 7 ^ 0xff, 'the whole page is copied');
  dst.fill(1);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 7], 'GET copies out too: changing a got page does not change the store');
});

t.test('copy at offsets: PUT and GET take a source/destination offset', async (t) => {
  const { s, g } = setup();
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  const big = new Uint8Array(3 * 4096);
  big.fill(5, 4096, 8192);
  t.equal(s.putPage(g, p, oid(1), 0, big, 4096), TMEM_S_OK);
  const out = new Uint8Array(2 * 4096 + 10);
  t.equal(s.getPage(g, p, oid(1), 0, 0, out, 10), TMEM_S_OK);
  t.equal(out[9], 0);
  t.equal(out[10], 5);
  t.equal(out[10 + 4095], 5);
  t.equal(out[10 + 4096], 0);
  t.equal(s.putPage(g, p, oid(1), 1, big, 2 * 4096 + 1), TMEM_S_INVALID, 'a source shorter than a page is INVALID');
  t.equal(s.getPage(g, p, oid(1), 0, 0, out, out.length - 4095), TMEM_S_INVALID, 'a destination shorter than a page is INVALID');
});

t.test('persistent guarantee: a stored persistent page is returned by every later GET until flushed', async (t) => {
  const { s, g } = setup({ capacity: 8 });
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  t.equal(s.putPage(g, p, oid(1), 3, page(3), 0), TMEM_S_OK);
  for (let i = 0; i < 100; i++) s.putPage(g, e, oid(2), i, page(i & 0x7f), 0); // capacity pressure
  for (let i = 0; i < 5; i++) t.same(get(s, g, p, oid(1), 3), [TMEM_S_OK, 3]);
  t.equal(s.flushPage(g, p, oid(1), 3), TMEM_S_OK);
  t.same(get(s, g, p, oid(1), 3), [TMEM_S_MISS, -1]);
});

t.test('ephemeral may vanish: ephemeral pages are evicted to make room', async (t) => {
  const { s, g } = setup({ capacity: 4 });
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 8; i++) t.equal(s.putPage(g, e, oid(1), i, page(i), 0), TMEM_S_OK, 'ephemeral PUTs succeed by evicting');
  let hits = 0;
  for (let i = 0; i < 8; i++) {
    const [r, v] = get(s, g, e, oid(1), i);
    if (r === TMEM_S_OK) {
      hits++;
      t.equal(v, i, 'what is returned is what was put');
    } else t.equal(r, TMEM_S_MISS);
  }
  t.equal(hits, 4);
  t.equal((s.stats().guests as { evictions: number }[])[0]!.evictions, 4);
});

t.test('private ephemeral gets are exclusive: the page is removed once got', async (t) => {
  const { s, g } = setup();
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  t.equal(s.putPage(g, e, oid(1), 0, page(1), 0), TMEM_S_OK);
  t.same(get(s, g, e, oid(1), 0), [TMEM_S_OK, 1]);
  t.same(get(s, g, e, oid(1), 0), [TMEM_S_MISS, -1]);
});

t.test('EXCLUSIVE flag on persistent pools: GET removes only with TMEM_REQF_EXCLUSIVE', async (t) => {
  const { s, g } = setup();
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  t.equal(s.putPage(g, p, oid(1), 0, page(1), 0), TMEM_S_OK);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 1]);
  t.same(get(s, g, p, oid(1), 0, EXCL), [TMEM_S_OK, 1]);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_MISS, -1]);
  const info = new Float64Array(INFO_LENGTH);
  s.info(g, info);
  t.equal(info[INFO_PERSISTENT_PAGES], 0, 'an exclusive get frees the page from the guest\'s count');
});

t.test('shared gets never remove, even with TMEM_REQF_EXCLUSIVE, and are seen by every guest of the group', async (t) => {
  const { s, g } = setup({ group: 'grp' });
  const g2 = s.addGuest({ name: 'vm2', maxmemPages: 0, ramPages: 0, shareGroup: 'grp' });
  const a = s.newPool(g, SHARED, 4096, uuid(1), 0, true);
  const b = s.newPool(g2, SHARED, 4096, uuid(1), 0, true);
  t.ok(a >= 0 && b >= 0);
  t.equal(s.putPage(g, a, oid(1), 0, page(4), 0), TMEM_S_OK);
  t.same(get(s, g2, b, oid(1), 0), [TMEM_S_OK, 4]);
  t.same(get(s, g2, b, oid(1), 0, EXCL), [TMEM_S_OK, 4]);
  t.same(get(s, g, a, oid(1), 0), [TMEM_S_OK, 4]);
});

t.test('put-put-get: after PUT(D1), PUT(D2), GET returns D2', async (t) => {
  const { s, g } = setup();
  for (const flags of [PERSIST, EPH]) {
    const p = s.newPool(g, flags, 4096, NO_UUID, 0, false);
    t.equal(s.putPage(g, p, oid(1), 0, page(1), 0), TMEM_S_OK);
    t.equal(s.putPage(g, p, oid(1), 0, page(2), 0), TMEM_S_OK);
    t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 2]);
  }
});

t.test('put-put-get with a failed second put: the handle is left empty (FROZEN, NOSPACE, INVALID)', async (t) => {
  // FROZEN
  {
    const { s, g } = setup();
    const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
    t.equal(s.putPage(g, p, oid(1), 0, page(1), 0), TMEM_S_OK);
    s.setFrozen(g, true);
    t.equal(s.putPage(g, p, oid(1), 0, page(2), 0), TMEM_S_FROZEN);
    s.setFrozen(g, false);
    t.same(get(s, g, p, oid(1), 0), [TMEM_S_MISS, -1], 'frozen second put');
  }
  // NOSPACE: the guest is above its persistent limit after a RAM change
  {
    const { s, g } = setup({ maxmem: 2, ram: 0 });
    const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
    t.equal(s.putPage(g, p, oid(1), 0, page(1), 0), TMEM_S_OK);
    t.equal(s.putPage(g, p, oid(1), 1, page(1), 0), TMEM_S_OK);
    s.setGuestRam(g, 1);
    t.equal(s.putPage(g, p, oid(1), 0, page(2), 0), TMEM_S_NOSPACE);
    t.same(get(s, g, p, oid(1), 0), [TMEM_S_MISS, -1], 'no-space second put');
    t.same(get(s, g, p, oid(1), 1), [TMEM_S_OK, 1], 'other pages stay');
  }
  // INVALID lengths
  {
    const { s, g } = setup();
    const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
    t.equal(s.putPage(g, p, oid(1), 0, page(1), 0), TMEM_S_OK);
    t.equal(s.putPage(g, p, oid(1), 0, new Uint8Array(100), 0), TMEM_S_INVALID);
    t.same(get(s, g, p, oid(1), 0), [TMEM_S_MISS, -1], 'invalid second put');
  }
  // NOSPACE for lack of room (ephemeral, everything else persistent)
  {
    const { s, g } = setup({ capacity: 2 });
    const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
    const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
    t.equal(s.putPage(g, e, oid(1), 0, page(1), 0), TMEM_S_OK);
    t.equal(s.putPage(g, p, oid(1), 0, page(1), 0), TMEM_S_OK);
    t.equal(s.putPage(g, p, oid(1), 1, page(1), 0), TMEM_S_OK, 'evicts the ephemeral page');
    t.equal(s.putPage(g, e, oid(1), 1, page(3), 0), TMEM_S_NOSPACE);
    t.same(get(s, g, e, oid(1), 1), [TMEM_S_MISS, -1]);
  }
});

t.test('get-get: a GET that missed keeps missing until a PUT of that handle', async (t) => {
  const { s, g } = setup({ capacity: 4 });
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  t.same(get(s, g, e, oid(1), 0), [TMEM_S_MISS, -1]);
  s.putPage(g, e, oid(1), 1, page(1), 0);
  s.flushPage(g, e, oid(1), 2);
  t.same(get(s, g, e, oid(1), 0), [TMEM_S_MISS, -1]);
  t.same(get(s, g, p, oid(1), 0, EXCL), [TMEM_S_MISS, -1]);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_MISS, -1]);
  s.putPage(g, e, oid(1), 0, page(6), 0);
  t.same(get(s, g, e, oid(1), 0), [TMEM_S_OK, 6]);
});

t.test('flush page: later GETs miss; flushing what is absent succeeds', async (t) => {
  const { s, g } = setup();
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  s.putPage(g, p, oid(1), 0, page(1), 0);
  s.putPage(g, p, oid(1), 1, page(2), 0);
  t.equal(s.flushPage(g, p, oid(1), 0), TMEM_S_OK);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_MISS, -1]);
  t.same(get(s, g, p, oid(1), 1), [TMEM_S_OK, 2]);
  t.equal(s.flushPage(g, p, oid(1), 0), TMEM_S_OK, 'already absent');
  t.equal(s.flushPage(g, p, oid(9), 9), TMEM_S_OK, 'never present');
  t.equal(s.flushPage(g, 7, oid(1), 0), TMEM_S_INVALID, 'unknown guest');
  t.equal(s.flushPage(g, 5, oid(1), 0), TMEM_S_INVALID, 'unknown pool');
});

t.test('flush object: every page of the object goes, other objects stay; value = pages flushed', async (t) => {
  const { s, g } = setup();
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 10; i++) s.putPage(g, p, oid(1, 2, 3), i, page(i), 0);
  s.putPage(g, p, oid(1, 2, 4), 0, page(50), 0);
  s.putPage(g, p, oid(1, 2), 0, page(51), 0);
  t.equal(s.flushObject(g, p, oid(1, 2, 3)), 10);
  for (let i = 0; i < 10; i++) t.same(get(s, g, p, oid(1, 2, 3), i), [TMEM_S_MISS, -1]);
  t.same(get(s, g, p, oid(1, 2, 4), 0), [TMEM_S_OK, 50], 'differs only in oid[2]');
  t.same(get(s, g, p, oid(1, 2), 0), [TMEM_S_OK, 51]);
  t.equal(s.flushObject(g, p, oid(1, 2, 3)), 0, 'absent object: 0 pages, success');
  t.equal(s.flushObject(g, 6, oid(1)), TMEM_S_INVALID, 'unknown pool');
  const hi = new Uint32Array([0xffffffff, 0xffffffff, 1, 2, 3, 0x80000000]);
  s.putPage(g, p, hi, 0xffffffff, page(9), 0);
  t.same(get(s, g, p, hi, 0xffffffff), [TMEM_S_OK, 9], 'full 192-bit oid and 32-bit index');
  t.equal(s.flushObject(g, p, hi), 1);
});

t.test('destroy pool: every page is freed, the pool id is unknown afterwards and reused', async (t) => {
  const { s, g } = setup({ capacity: 16 });
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 10; i++) s.putPage(g, p, oid(i), 0, page(i), 0);
  t.equal(s.destroyPool(g, p), TMEM_S_OK);
  t.equal(s.getPage(g, p, oid(1), 0, 0, dst, 0), TMEM_S_INVALID, 'the pool id is unknown');
  t.equal(s.destroyPool(g, p), TMEM_S_INVALID, 'twice');
  const info = new Float64Array(INFO_LENGTH);
  s.info(g, info);
  t.equal(info[INFO_PERSISTENT_PAGES], 0, 'the pages stop counting against the guest at once');
  t.equal(s.stats().reclaimPendingPages, 10);
  t.equal(s.reclaimStep(4), 6, 'reclaim in bounded steps');
  t.equal(s.reclaimStep(100), 0);
  t.equal(s.stats().freePages, 16);
  const q = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  t.equal(q, p, 'lowest free pool id');
  t.same(get(s, g, q, oid(1), 0), [TMEM_S_MISS, -1], 'a new pool with the old id is empty');
});

t.test('destroy pool: a PUT needing room takes it from pending reclaim before evicting', async (t) => {
  const { s, g } = setup({ capacity: 8 });
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 4; i++) s.putPage(g, e, oid(1), i, page(i), 0);
  for (let i = 0; i < 4; i++) s.putPage(g, p, oid(1), i, page(i), 0);
  s.destroyPool(g, p);
  const q = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 4; i++) t.equal(s.putPage(g, q, oid(2), i, page(10 + i), 0), TMEM_S_OK);
  for (let i = 0; i < 4; i++) t.same(get(s, g, e, oid(1), i), [TMEM_S_OK, i], 'no ephemeral page was evicted');
  t.equal(s.reclaimStep(10), 0);
});

t.test('frozen guest: PUT is FROZEN; GET, FLUSH, DESTROY, NEW_POOL and INFO work', async (t) => {
  const { s, g } = setup();
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  s.putPage(g, p, oid(1), 0, page(1), 0);
  s.setFrozen(g, true);
  t.equal(s.putPage(g, p, oid(1), 1, page(1), 0), TMEM_S_FROZEN);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 1]);
  t.equal(s.flushPage(g, p, oid(1), 0), TMEM_S_OK);
  const q = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  t.ok(q >= 0);
  t.equal(s.putPage(g, q, oid(1), 1, page(1), 0), TMEM_S_FROZEN);
  t.equal(s.putPage(g, 7, oid(1), 1, page(1), 0), TMEM_S_INVALID, 'unknown pool outranks FROZEN');
  t.equal(s.destroyPool(g, q), TMEM_S_OK);
  s.setFrozen(g, false);
  t.equal(s.putPage(g, p, oid(1), 1, page(1), 0), TMEM_S_OK, 'thawed');
});

t.test('reset: destroys every pool of the guest (value = pools destroyed), drops shared references', async (t) => {
  const { s, g } = setup({ group: 'grp' });
  const g2 = s.addGuest({ name: 'vm2', maxmemPages: 0, ramPages: 0, shareGroup: 'grp' });
  s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const a = s.newPool(g, SHARED, 4096, uuid(3), 0, true);
  const b = s.newPool(g2, SHARED, 4096, uuid(3), 0, true);
  s.putPage(g, a, oid(1), 0, page(3), 0);
  t.equal(s.reset(g), 3);
  t.equal(s.reset(g), 0);
  t.same(get(s, g2, b, oid(1), 0), [TMEM_S_OK, 3], 'the shared pool lives on with the other reference');
  t.equal(s.newPool(g, EPH, 4096, NO_UUID, 0, false), 0, 'pool ids start again');
});

t.test('remove guest: private pools freed, shared references dropped, pages gone with the last one', async (t) => {
  const { s, g } = setup({ group: 'grp', capacity: 16 });
  const g2 = s.addGuest({ name: 'vm2', maxmemPages: 0, ramPages: 0, shareGroup: 'grp' });
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  const a = s.newPool(g, SHARED, 4096, uuid(3), 0, true);
  const b = s.newPool(g2, SHARED, 4096, uuid(3), 0, true);
  for (let i = 0; i < 5; i++) s.putPage(g, p, oid(1), i, page(i), 0);
  s.putPage(g, a, oid(1), 0, page(3), 0);
  s.removeGuest(g);
  t.equal(s.putPage(g, p, oid(1), 0, page(0), 0), TMEM_S_INVALID, 'the guest is gone');
  t.same(get(s, g2, b, oid(1), 0), [TMEM_S_OK, 3]);
  t.equal(s.stats().persistentPages, 0);
  t.equal(s.reclaimStep(100), 0);
  s.removeGuest(g2);
  t.equal(s.reclaimStep(100), 0);
  t.equal(s.stats().freePages, 16);
  t.equal(s.stats().ephemeralPages, 0);
});

t.test('flush guest: private pages dropped, pools kept', async (t) => {
  const { s, g } = setup();
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  s.putPage(g, p, oid(1), 0, page(1), 0);
  s.flushGuest(g);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_MISS, -1]);
  t.equal(s.putPage(g, p, oid(1), 0, page(2), 0), TMEM_S_OK);
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 2]);
  s.reclaimStep(10);
  t.equal(s.stats().persistentPages, 1);
});

t.test('LRU order: the oldest ephemeral page goes first; PUT and shared GET refresh a page', async (t) => {
  const { s, g } = setup({ capacity: 3, group: 'grp' });
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const sh = s.newPool(g, SHARED, 4096, uuid(1), 0, true);
  s.putPage(g, e, oid(1), 0, page(0), 0);
  s.putPage(g, sh, oid(1), 1, page(1), 0);
  s.putPage(g, e, oid(1), 2, page(2), 0);
  s.putPage(g, e, oid(1), 0, page(10), 0); // refresh 0: order 1, 2, 0
  s.putPage(g, e, oid(1), 3, page(3), 0); // evicts 1
  t.same(get(s, g, sh, oid(1), 1), [TMEM_S_MISS, -1]);
  s.putPage(g, sh, oid(1), 1, page(1), 0); // evicts 2: order 0, 3, 1
  t.same(get(s, g, sh, oid(1), 1), [TMEM_S_OK, 1]); // refresh 1: order 0, 3, 1
  s.putPage(g, sh, oid(1), 4, page(4), 0); // evicts 0: order 3, 1, 4
  get(s, g, sh, oid(1), 1); // order 3, 4, 1
  s.putPage(g, e, oid(1), 5, page(5), 0); // evicts 3
  t.same(get(s, g, e, oid(1), 2), [TMEM_S_MISS, -1]);
  t.same(get(s, g, e, oid(1), 0), [TMEM_S_MISS, -1]);
  t.same(get(s, g, e, oid(1), 3), [TMEM_S_MISS, -1]);
  t.same(get(s, g, sh, oid(1), 1), [TMEM_S_OK, 1]);
  t.same(get(s, g, sh, oid(1), 4), [TMEM_S_OK, 4]);
  t.same(get(s, g, e, oid(1), 5), [TMEM_S_OK, 5]);
});

t.test('LRU is host-wide: one guest\'s ephemeral puts evict another guest\'s oldest pages', async (t) => {
  const { s, g } = setup({ capacity: 2 });
  const g2 = s.addGuest({ name: 'vm2', maxmemPages: 0, ramPages: 0, shareGroup: null });
  const e1 = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const e2 = s.newPool(g2, EPH, 4096, NO_UUID, 0, false);
  s.putPage(g, e1, oid(1), 0, page(1), 0);
  s.putPage(g2, e2, oid(1), 0, page(2), 0);
  s.putPage(g2, e2, oid(1), 1, page(3), 0);
  t.same(get(s, g, e1, oid(1), 0), [TMEM_S_MISS, -1]);
  t.same(get(s, g2, e2, oid(1), 0), [TMEM_S_OK, 2]);
});

t.test('capacity boundary: an ephemeral PUT never evicts persistent pages; a persistent PUT evicts ephemeral ones first', async (t) => {
  const { s, g } = setup({ capacity: 4 });
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 3; i++) t.equal(s.putPage(g, p, oid(1), i, page(i), 0), TMEM_S_OK);
  t.equal(s.putPage(g, e, oid(1), 0, page(9), 0), TMEM_S_OK, 'the last free page');
  t.equal(s.putPage(g, p, oid(1), 3, page(3), 0), TMEM_S_OK, 'evicts the ephemeral page');
  t.same(get(s, g, e, oid(1), 0), [TMEM_S_MISS, -1]);
  t.equal(s.putPage(g, e, oid(1), 1, page(9), 0), TMEM_S_NOSPACE, 'full of persistent pages');
  t.equal(s.putPage(g, p, oid(1), 4, page(4), 0), TMEM_S_NOSPACE, 'and no ephemeral page to evict');
  for (let i = 0; i < 4; i++) t.same(get(s, g, p, oid(1), i), [TMEM_S_OK, i]);
  const st = s.stats();
  t.equal(st.freePages, 0);
  t.equal(st.persistentPages, 4);
  t.equal(st.ephemeralPages, 0);
});

t.test('maxmem boundary: persistent pages never exceed max(0, maxmem - RAM); INFO reports it', async (t) => {
  const { s, g } = setup({ maxmem: 10, ram: 7 });
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 3; i++) t.equal(s.putPage(g, p, oid(1), i, page(i), 0), TMEM_S_OK);
  t.equal(s.putPage(g, p, oid(1), 3, page(3), 0), TMEM_S_NOSPACE);
  t.equal(s.putPage(g, p, oid(1), 2, page(7), 0), TMEM_S_OK, 'an overwrite at the limit is fine');
  t.equal(s.putPage(g, e, oid(1), 0, page(0), 0), TMEM_S_OK, 'the limit is for persistent pages only');
  const info = new Float64Array(INFO_LENGTH);
  s.info(g, info);
  t.equal(info[INFO_MAX_POOLS], 8);
  t.equal(info[INFO_CAPACITY_PAGES], 64);
  t.equal(info[INFO_PERSISTENT_LIMIT_PAGES], 3);
  t.equal(info[INFO_PERSISTENT_PAGES], 3);
  t.equal(info[INFO_EPHEMERAL_PAGES], 1);
  s.setGuestRam(g, 12);
  s.info(g, info);
  t.equal(info[INFO_PERSISTENT_LIMIT_PAGES], 0, 'RAM above maxmem: limit 0, not negative');
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 0], 'pages held stay');
  t.equal(s.putPage(g, p, oid(1), 5, page(3), 0), TMEM_S_NOSPACE);
  s.flushPage(g, p, oid(1), 0);
  s.setGuestRam(g, 8);
  t.equal(s.putPage(g, p, oid(1), 0, page(3), 0), TMEM_S_NOSPACE, 'limit 2, holding 2');
  s.setGuestRam(g, 7);
  t.equal(s.putPage(g, p, oid(1), 0, page(3), 0), TMEM_S_OK, 'limit 3, holding 2');
});

t.test('shared-pool access control: DENIED without a share group; pools keyed by (group, uuid)', async (t) => {
  const { s, g } = setup();
  const g2 = s.addGuest({ name: 'vm2', maxmemPages: 0, ramPages: 0, shareGroup: 'red' });
  const g3 = s.addGuest({ name: 'vm3', maxmemPages: 0, ramPages: 0, shareGroup: 'blue' });
  t.equal(s.newPool(g, SHARED, 4096, uuid(1), 0, true), TMEM_S_DENIED, 'no share group');
  t.equal(s.newPool(g, SHARED, 4096, uuid(1), 0, false), TMEM_S_INVALID, 'INVALID (not negotiated) outranks DENIED');
  t.equal(s.newPool(g, SHARED | PERSIST, 4096, uuid(1), 0, true), TMEM_S_INVALID, 'PERSIST|SHARED');
  const a = s.newPool(g2, SHARED, 4096, uuid(1), 0, true);
  const b = s.newPool(g3, SHARED, 4096, uuid(1), 0, true);
  s.putPage(g2, a, oid(1), 0, page(1), 0);
  t.same(get(s, g3, b, oid(1), 0), [TMEM_S_MISS, -1], 'same uuid, other group: another pool');
  const a2 = s.newPool(g2, SHARED, 4096, uuid(1), 0, true);
  t.not(a2, a, 'the same uuid again: a new pool id ...');
  t.same(get(s, g2, a2, oid(1), 0), [TMEM_S_OK, 1], '... for the same pool');
  t.equal(s.destroyPool(g2, a), TMEM_S_OK, 'drops one reference');
  t.same(get(s, g2, a2, oid(1), 0), [TMEM_S_OK, 1]);
  const big = new Uint8Array(40);
  big.fill(1, 20, 36);
  t.equal(s.newPool(g2, SHARED, 4096, big, 20, true) >= 0, true, 'uuid at an offset');
  s.setShareGroup(g2, null);
  t.same(get(s, g2, a2, oid(1), 0), [TMEM_S_INVALID, -1], 'leaving the group drops the references');
  s.setShareGroup(g, 'red');
  const c = s.newPool(g, SHARED, 4096, uuid(1), 0, true);
  t.same(get(s, g, c, oid(1), 0), [TMEM_S_MISS, -1], 'pages went with the last reference');
});

t.test('pool limit: NEW_POOL beyond max pools per guest is NOSPACE; shared ids count', async (t) => {
  const { s, g } = setup({ maxPools: 3, group: 'grp' });
  t.equal(s.newPool(g, EPH, 4096, NO_UUID, 0, false), 0);
  t.equal(s.newPool(g, SHARED, 4096, uuid(1), 0, true), 1);
  t.equal(s.newPool(g, SHARED, 4096, uuid(1), 0, true), 2);
  t.equal(s.newPool(g, PERSIST, 4096, NO_UUID, 0, false), TMEM_S_NOSPACE);
  t.equal(s.newPool(g, PERSIST, 4095, NO_UUID, 0, false), TMEM_S_INVALID, 'INVALID outranks NOSPACE');
  s.setFrozen(g, true);
  s.destroyPool(g, 1);
  t.equal(s.newPool(g, PERSIST, 4096, NO_UUID, 0, false), 1, 'a freed id is reused, frozen or not');
});

t.test('bad flags and page size: INVALID, and nothing throws on guest input', async (t) => {
  const { s, g } = setup();
  t.equal(s.newPool(g, 4, 4096, NO_UUID, 0, false), TMEM_S_INVALID, 'undefined pool flag');
  t.equal(s.newPool(g, 0x80000000, 4096, NO_UUID, 0, false), TMEM_S_INVALID);
  t.equal(s.newPool(g, 0, 8192, NO_UUID, 0, false), TMEM_S_INVALID, 'page size');
  t.equal(s.newPool(g, 0, 0, NO_UUID, 0, false), TMEM_S_INVALID);
  t.equal(s.newPool(g, SHARED, 4096, new Uint8Array(8), 0, true), TMEM_S_INVALID, 'short uuid');
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  s.putPage(g, p, oid(1), 0, page(1), 0);
  t.equal(s.getPage(g, p, oid(1), 0, 2, dst, 0), TMEM_S_INVALID, 'undefined request flag');
  t.same(get(s, g, p, oid(1), 0), [TMEM_S_OK, 1], 'a rejected GET removes nothing');
  for (const bad of [-1, 2 ** 32, 1.5, NaN, 0xffffffff]) {
    t.equal(s.putPage(g, bad, oid(1), 0, page(1), 0), TMEM_S_INVALID, `pool id ${bad}`);
    t.equal(s.getPage(g, bad, oid(1), 0, 0, dst, 0), TMEM_S_INVALID);
    t.equal(s.flushPage(g, bad, oid(1), 0), TMEM_S_INVALID);
    t.equal(s.flushObject(g, bad, oid(1)), TMEM_S_INVALID);
    t.equal(s.destroyPool(g, bad), TMEM_S_INVALID);
    t.equal(s.putPage(bad, p, oid(1), 0, page(1), 0), TMEM_S_INVALID, `guest id ${bad}`);
  }
  t.equal(s.putPage(g, p, oid(1), -1, page(1), 0), TMEM_S_INVALID, 'index out of u32');
  t.equal(s.reset(99), TMEM_S_INVALID);
  s.info(99, new Float64Array(INFO_LENGTH));
  s.setFrozen(99, true);
  s.removeGuest(99);
  s.flushGuest(99);
});

t.test('zero capacity: every PUT is NOSPACE', async (t) => {
  const { s, g } = setup({ capacity: 0 });
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  t.equal(s.putPage(g, e, oid(1), 0, page(1), 0), TMEM_S_NOSPACE);
  t.equal(s.putPage(g, p, oid(1), 0, page(1), 0), TMEM_S_NOSPACE);
});

t.test('statistics: per guest and per pool counters, host-wide free / ephemeral / persistent', async (t) => {
  const { s, g } = setup({ capacity: 4, maxmem: 2, ram: 0 });
  const e = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  s.putPage(g, p, oid(1), 0, page(1), 0);
  s.putPage(g, p, oid(1), 1, page(1), 0);
  s.putPage(g, p, oid(1), 2, page(1), 0); // NOSPACE (limit)
  for (let i = 0; i < 3; i++) s.putPage(g, e, oid(1), i, page(1), 0); // one eviction
  get(s, g, e, oid(1), 2);
  get(s, g, e, oid(1), 0);
  s.flushPage(g, p, oid(1), 0);
  const st = s.stats() as Record<string, unknown> & { guests: Record<string, unknown>[] };
  t.match(st, { capacityPages: 4, freePages: 2, ephemeralPages: 1, persistentPages: 1, reclaimPendingPages: 0 });
  t.match(st.guests[0], {
    puts: 6, putsNoSpace: 1, gets: 2, hits: 1, flushPages: 1, flushedPages: 1, evictions: 1,
    persistentPages: 1, persistentPeak: 2, ephemeralPages: 1, ephemeralPeak: 2,
  });
  t.match((st.guests[0]!.pools as unknown[])[1], { id: 1, persistent: true, puts: 3, putsNoSpace: 1, persistentPeak: 2 });
  t.doesNotThrow(() => JSON.stringify(st));
});

// ---- host limits (docs/ABI-host-limits.md): RAM floor and per-VM cap (tmem-max)

function infoOf(s: TmemStore, g: number): Float64Array {
  const out = new Float64Array(INFO_LENGTH);
  s.info(g, out);
  return out;
}

t.test('RAM floor: the persistent limit is maxmem - max(declared RAM, reported RAM); a guest reporting 1 MiB gains nothing', async (t) => {
  const s = new TmemStore({ capacityPages: 1024, maxPoolsPerGuest: 4 });
  const g = s.addGuest({ name: 'liar', maxmemPages: 1000, ramPages: 0, shareGroup: null, ramFloorPages: 800 });
  s.setGuestRam(g, 256); // the front-end reports 1 MiB of RAM
  t.equal(infoOf(s, g)[INFO_PERSISTENT_LIMIT_PAGES], 200, 'maxmem 1000 - floor 800, not 1000 - 256');
  s.setGuestRam(g, 900); // more than the floor: the reported RAM counts
  t.equal(infoOf(s, g)[INFO_PERSISTENT_LIMIT_PAGES], 100, 'maxmem 1000 - reported 900');
  const p = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 100; i++) t.equal(s.putPage(g, p, oid(1), i, page(i), 0), TMEM_S_OK);
  t.equal(s.putPage(g, p, oid(1), 100, page(1), 0), TMEM_S_NOSPACE, 'the 101st persistent page is NOSPACE');
  const free = s.addGuest({ name: 'nofloor', maxmemPages: 1000, ramPages: 256, shareGroup: null });
  t.equal(infoOf(s, free)[INFO_PERSISTENT_LIMIT_PAGES], 744, 'without a floor: maxmem - reported RAM, as before');
});

t.test('cap (tmem-max): the persistent limit is at most the cap; persistent + private ephemeral never exceed it', async (t) => {
  const s = new TmemStore({ capacityPages: 1024, maxPoolsPerGuest: 4 });
  const g = s.addGuest({ name: 'capped', maxmemPages: 100000, ramPages: 256, shareGroup: null, capPages: 50 });
  t.equal(infoOf(s, g)[INFO_PERSISTENT_LIMIT_PAGES], 50, 'min(maxmem - RAM, cap)');
  const pp = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  const ep = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 30; i++) t.equal(s.putPage(g, ep, oid(2), i, page(i), 0), TMEM_S_OK);
  for (let i = 0; i < 20; i++) t.equal(s.putPage(g, pp, oid(1), i, page(100 + i), 0), TMEM_S_OK);
  t.equal(infoOf(s, g)[INFO_EPHEMERAL_PAGES] + infoOf(s, g)[INFO_PERSISTENT_PAGES], 50, 'at the cap');
  // a persistent PUT at the cap evicts the guest's own oldest ephemeral page
  t.equal(s.putPage(g, pp, oid(1), 20, page(120), 0), TMEM_S_OK);
  t.same(get(s, g, ep, oid(2), 0), [TMEM_S_MISS, -1], 'its oldest ephemeral page made room');
  t.equal(infoOf(s, g)[INFO_EPHEMERAL_PAGES], 29);
  // an ephemeral PUT at the cap evicts its own oldest too (index 1 now)
  t.equal(s.putPage(g, ep, oid(3), 0, page(33), 0), TMEM_S_OK);
  t.same(get(s, g, ep, oid(2), 1), [TMEM_S_MISS, -1], 'oldest own ephemeral page evicted');
  t.same(get(s, g, ep, oid(2), 2), [TMEM_S_OK, 2], 'the next one is still there (and goes with this exclusive GET)');
  const st = s.stats() as { guests: { persistentPages: number; ephemeralPages: number; evictions: number; capPages: number }[] };
  t.ok(st.guests[0]!.persistentPages + st.guests[0]!.ephemeralPages <= 50, 'never above the cap');
  t.equal(st.guests[0]!.evictions, 2, 'both counted as evictions');
  t.equal(infoOf(s, g)[INFO_EPHEMERAL_PAGES] + infoOf(s, g)[INFO_PERSISTENT_PAGES], 49, 'one below the cap after the GET');
  t.equal(st.guests[0]!.capPages, 50);
  // only persistent pages: at the persistent limit (= cap) NOSPACE, nothing else is touched
  for (let i = 21; ; i++) {
    const r = s.putPage(g, pp, oid(1), i, page(i), 0);
    if (r !== TMEM_S_OK) {
      t.equal(r, TMEM_S_NOSPACE, 'persistent pages stop at the cap');
      break;
    }
  }
  t.equal(infoOf(s, g)[INFO_PERSISTENT_PAGES], 50);
  t.equal(infoOf(s, g)[INFO_EPHEMERAL_PAGES], 0, 'its ephemeral pages made way for its persistent ones');
});

t.test('cap: one capped VM cannot take the host capacity from another; others evict only through the host LRU', async (t) => {
  const s = new TmemStore({ capacityPages: 100, maxPoolsPerGuest: 4 });
  const hog = s.addGuest({ name: 'hog', maxmemPages: 1_000_000, ramPages: 256, shareGroup: null, capPages: 40 });
  const other = s.addGuest({ name: 'other', maxmemPages: 1_000_000, ramPages: 256, shareGroup: null });
  const hp = s.newPool(hog, PERSIST, 4096, NO_UUID, 0, false);
  const he = s.newPool(hog, EPH, 4096, NO_UUID, 0, false);
  let ok = 0;
  for (let i = 0; i < 500; i++) if (s.putPage(hog, i % 2 ? hp : he, oid(i % 2), i, page(i), 0) === TMEM_S_OK) ok++;
  const h = s.stats() as { freePages: number; guests: { name: string; persistentPages: number; ephemeralPages: number }[] };
  const hg = h.guests.find((x) => x.name === 'hog')!;
  t.ok(hg.persistentPages + hg.ephemeralPages <= 40, `hog holds ${hg.persistentPages + hg.ephemeralPages} pages (cap 40) after ${ok} accepted PUTs`);
  t.ok(h.freePages >= 60, 'the rest of the capacity is free for others');
  const op = s.newPool(other, PERSIST, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 60; i++) t.equal(s.putPage(other, op, oid(9), i, page(i), 0), TMEM_S_OK, `other's persistent page ${i}`);
  const after = s.stats() as { guests: { name: string; persistentPages: number }[] };
  t.equal(after.guests.find((x) => x.name === 'hog')!.persistentPages, hg.persistentPages, "the hog's persistent pages are untouched");
});

t.test('cap with removal and flush: pages of a capped guest leave its own list too (no stale entries)', async (t) => {
  const s = new TmemStore({ capacityPages: 64, maxPoolsPerGuest: 4 });
  const g = s.addGuest({ name: 'c', maxmemPages: 10000, ramPages: 0, shareGroup: null, capPages: 8 });
  const ep = s.newPool(g, EPH, 4096, NO_UUID, 0, false);
  for (let i = 0; i < 8; i++) s.putPage(g, ep, oid(1), i, page(i), 0);
  t.same(get(s, g, ep, oid(1), 3), [TMEM_S_OK, 3], 'exclusive GET removes the page');
  s.flushPage(g, ep, oid(1), 4);
  s.flushGuest(g);
  t.equal(s.reclaimStep(1000), 0);
  for (let i = 0; i < 20; i++) t.equal(s.putPage(g, ep, oid(2), i, page(i), 0), TMEM_S_OK);
  t.equal(infoOf(s, g)[INFO_EPHEMERAL_PAGES], 8, 'held at the cap');
  for (let i = 12; i < 20; i++) t.same(get(s, g, ep, oid(2), i), [TMEM_S_OK, i], `newest page ${i} kept`);
  s.removeGuest(g);
  t.equal(s.reclaimStep(1000), 0, 'removal frees everything');
  t.equal((s.stats() as { freePages: number }).freePages, 64);
});
