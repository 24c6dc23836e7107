// Store hardening against hostile or unlucky input (host/tmem/store/): INFO stays
// linear in pool ids, the handle index's hashes are keyed (a guest cannot
// precompute keys that share one hash chain), and running out of memory for
// a new frame chunk is a refused PUT, not an exception.
import t from 'tap';
import { TMEM_POOL_PERSIST as PERSIST, TMEM_POOL_SHARED as SHARED, TMEM_S_MISS, TMEM_S_NOSPACE, TMEM_S_OK } from '../shared/abi.js';
import { HandleIndex } from '../host/tmem/store/handle-index.js';
import { INFO_EPHEMERAL_PAGES, INFO_LENGTH, INFO_PERSISTENT_PAGES, TmemStore } from '../host/tmem/store/store.js';

const EPH = 0;
const PAGE = 4096;
const NO_UUID = new Uint8Array(16);
const CHUNK_PAGES = 1 << 16; // frames.ts

function uuid(n: number): Uint8Array {
  const u = new Uint8Array(16);
  new DataView(u.buffer).setUint32(0, n + 1);
  return u;
}

function oid(a: number, b = 0): Uint32Array {
  return new Uint32Array([a, 0, b, 0, 0, 0]);
}

function page(fill: number): Uint8Array {
  return new Uint8Array(PAGE).fill(fill);
}

const dst = new Uint8Array(PAGE);

function infoOf(s: TmemStore, g: number): Float64Array {
  const out = new Float64Array(INFO_LENGTH);
  s.info(g, out);
  return out;
}

// ---- 1. INFO is linear in pool ids ----------------------------------------

t.test('INFO: linear in pool ids (each id read once), a shared pool counted once per guest', async (t) => {
  const N = 2000;
  const s = new TmemStore({ capacityPages: 4096, maxPoolsPerGuest: N });
  const g = s.addGuest({ name: 'a', maxmemPages: 0, ramPages: 0, shareGroup: 'grp' });
  const h = s.addGuest({ name: 'b', maxmemPages: 0, ramPages: 0, shareGroup: 'grp' });
  // ids 0..N/2-1: distinct shared pools (uuid k) holding k % 3 pages; the
  // rest: more references to those pools; a private pool holding 5 pages
  const priv = s.newPool(g, EPH, PAGE, NO_UUID, 0, false);
  for (let i = 0; i < 5; i++) t.equal(s.putPage(g, priv, oid(1), i, page(1), 0), TMEM_S_OK);
  let expected = 5;
  for (let k = 0; k < N / 2; k++) {
    const id = s.newPool(g, SHARED, PAGE, uuid(k), 0, true);
    t.ok(id >= 0, 'pool id');
    for (let i = 0; i < k % 3; i++) s.putPage(g, id, oid(k), i, page(2), 0);
    expected += k % 3;
  }
  while (s.newPool(g, SHARED, PAGE, uuid((N - 1) % (N / 2)), 0, true) >= 0);
  // guest b holds one of the pools, twice
  const hb = s.newPool(h, SHARED, PAGE, uuid(5), 0, true);
  s.newPool(h, SHARED, PAGE, uuid(5), 0, true);
  t.ok(hb >= 0);

  // count reads of guest.pools elements (the store's own field)
  const guest = (s as unknown as { guests: { pools: unknown[] }[] }).guests[g]!;
  let reads = 0;
  guest.pools = new Proxy(guest.pools, {
    get(target, key, recv) {
      if (typeof key === 'string' && /^\d+$/.test(key)) reads++;
      return Reflect.get(target, key, recv) as unknown;
    },
  });
  const out = infoOf(s, g);
  t.equal(out[INFO_EPHEMERAL_PAGES], expected, 'private pages + each shared pool once');
  t.ok(reads <= 2 * N, `INFO read ${reads} pool slots for ${N} ids (linear: at most ${2 * N})`);
  t.equal(infoOf(s, h)[INFO_EPHEMERAL_PAGES], 5 % 3, 'guest b: its pool once, right after guest a counted it');
  t.equal(infoOf(s, g)[INFO_EPHEMERAL_PAGES], expected, 'the same again (each pass has its own mark)');
  t.equal(infoOf(s, h)[INFO_EPHEMERAL_PAGES], 5 % 3);
});

// ---- 2. keyed hashes in the handle index ------------------------------------

// The index's former unkeyed hash, as a guest could have computed it offline.
function oldMix(h: number, w: number): number {
  h = Math.imul(h ^ w, 0x9e3779b1);
  return h ^ (h >>> 15);
}
function oldObjBucket(slot: number, o: Uint32Array, mask: number): number {
  let h = oldMix(0x2545f491, slot);
  for (let i = 0; i < 6; i++) h = oldMix(h, o[i]!);
  return h & mask;
}
function oldPageBucket(obj: number, index: number, mask: number): number {
  return oldMix(oldMix(0x68e31da4, obj), index) & mask;
}

/** n oids (oid[0] varies) that the unkeyed hash put in object bucket 0 of a 1024-bucket table. */
function precomputedOids(n: number): Uint32Array[] {
  const out: Uint32Array[] = [];
  for (let a = 0; out.length < n; a++) {
    const o = oid(a, 0xabcd);
    if (oldObjBucket(0, o, 1023) === 0) out.push(o);
  }
  return out;
}

t.test('hash keys: oids precomputed to collide under an unkeyed hash spread over the table', async (t) => {
  const oids = precomputedOids(300);
  for (const opts of [{ seed: 1 }, { seed: 0xdeadbeef }, {}]) {
    const ix = new HandleIndex(4096, opts);
    for (const o of oids) ix.addObject(0, o);
    const { objects } = ix.longestChains();
    t.ok(objects <= 12, `seed ${opts.seed ?? 'random'}: longest object chain ${objects} for 300 keys (unkeyed: 300)`);
  }
});

t.test('hash keys: page indices precomputed to collide under an unkeyed hash spread over the table', async (t) => {
  const idx: number[] = [];
  for (let i = 0; idx.length < 300; i++) if (oldPageBucket(0, i, 4095) === 0) idx.push(i);
  for (const opts of [{ seed: 7 }, {}]) {
    const ix = new HandleIndex(4096, opts);
    const o = ix.addObject(0, oid(1));
    t.equal(o, 0, 'the first object record, as precomputed');
    for (const i of idx) ix.linkPage(ix.allocPage(), o, i);
    for (const i of idx) t.not(ix.findPage(o, i), -1);
    const { pages } = ix.longestChains();
    t.ok(pages <= 12, `seed ${opts.seed ?? 'random'}: longest page chain ${pages} for 300 keys (unkeyed: 300)`);
  }
});

t.test('hash keys: the difference that passed one multiply unchanged (a top bit) does not give seed-independent collisions', async (t) => {
  // with one multiply per word, flipping bit 31 of word i and bits 31 and 16
  // of word i+1 left the state unchanged for every seed: 32 keys, one chain
  const base = [0x12345678, 0x9abcdef0, 0x0fedcba9, 0x87654321, 0x13579bdf, 0x2468ace0];
  const family: Uint32Array[] = [];
  for (let m = 0; m < 32; m++) {
    const w = Uint32Array.from(base);
    for (let i = 0; i < 5; i++) {
      if (m & (1 << i)) {
        w[i]! ^= 0x80000000;
        w[i + 1]! ^= 0x80010000;
      }
    }
    family.push(w);
  }
  const full = (o: Uint32Array) => {
    let h = 0x1234; // any seed
    h = oldMix(h, 0);
    for (let i = 0; i < 6; i++) h = oldMix(h, o[i]!);
    return h;
  };
  t.equal(new Set(family.map(full)).size, 1, 'the family collides fully under a single-multiply step');
  for (const seed of [1, 2, 3]) {
    const ix = new HandleIndex(4096, { seed });
    for (const o of family) ix.addObject(0, o);
    const { objects } = ix.longestChains();
    t.ok(objects <= 5, `seed ${seed}: longest chain ${objects} for the 32 keys`);
  }
});

t.test('hash keys: the layout depends on the seed; an explicit seed reproduces it; the default is random', async (t) => {
  const keys = Array.from({ length: 64 }, (_, i) => oid(i * 7919, i));
  const layout = (ix: HandleIndex) => keys.map((k) => ix.objectBucket(0, k)).join(',');
  const pageLayout = (ix: HandleIndex) => keys.map((_, i) => ix.pageBucket(3, i * 104729)).join(',');
  const a1 = new HandleIndex(4096, { seed: 42 });
  const a2 = new HandleIndex(4096, { seed: 42 });
  const b = new HandleIndex(4096, { seed: 43 });
  t.equal(layout(a1), layout(a2), 'same seed, same object buckets');
  t.equal(pageLayout(a1), pageLayout(a2), 'same seed, same page buckets');
  t.not(layout(a1), layout(b), 'another seed, other object buckets');
  t.not(pageLayout(a1), pageLayout(b), 'another seed, other page buckets');
  const r1 = new HandleIndex(4096);
  const r2 = new HandleIndex(4096);
  t.not(layout(r1), layout(r2), 'two default indexes draw different seeds');

  // keys chosen to collide under one seed are spread under another
  const coll: Uint32Array[] = [];
  for (let a = 0; coll.length < 200; a++) {
    const k = oid(a, 99);
    if (a1.objectBucket(0, k) === 0) coll.push(k);
  }
  for (const k of coll) a2.addObject(0, k);
  t.equal(a2.longestChains().objects, 200, 'knowing the seed is what it takes to collide');
  const other = new HandleIndex(4096, { seed: 44 });
  for (const k of coll) other.addObject(0, k);
  t.ok(other.longestChains().objects <= 10, `another seed: longest chain ${other.longestChains().objects}`);
  const random = new HandleIndex(4096);
  for (const k of coll) random.addObject(0, k);
  t.ok(random.longestChains().objects <= 12, `a random seed: longest chain ${random.longestChains().objects}`);
});

t.test('hash keys: the store works the same under any seed (tiny and growing tables)', async (t) => {
  for (const capacityPages of [0, 1, 2, 3000]) {
    for (const hashSeed of [0, 1, 0xffffffff, undefined]) {
      const s = new TmemStore({ capacityPages, maxPoolsPerGuest: 2, hashSeed });
      const g = s.addGuest({ name: 'a', maxmemPages: 10_000, ramPages: 0, shareGroup: null });
      const p = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
      let ok = 0;
      for (let i = 0; i < capacityPages; i++) if (s.putPage(g, p, oid(i >> 1, i), i, page(i & 0xff), 0) === TMEM_S_OK) ok++;
      t.equal(ok, capacityPages, `capacity ${capacityPages}, seed ${hashSeed}: every PUT stored`);
      let hits = 0;
      for (let i = 0; i < capacityPages; i++) if (s.getPage(g, p, oid(i >> 1, i), i, 0, dst, 0) === TMEM_S_OK && dst[0] === (i & 0xff)) hits++;
      t.equal(hits, capacityPages, 'every page found');
      t.equal(s.putPage(g, p, oid(1e6), 0, page(1), 0), TMEM_S_NOSPACE, 'full');
    }
  }
});

// ---- 3. out of memory for a frame chunk -------------------------------------

/** An allocator that fails (as V8 does: RangeError) while `fail` is set, and counts calls. */
function flakyAlloc() {
  const a = {
    fail: true,
    calls: 0,
    alloc: (bytes: number): Uint8Array => {
      a.calls++;
      if (a.fail) throw new RangeError('Array buffer allocation failed');
      return new Uint8Array(bytes);
    },
  };
  return a;
}

t.test('out of memory: a PUT whose new frame chunk cannot be allocated is NOSPACE, the handle empty, nothing counted', async (t) => {
  const a = flakyAlloc();
  const s = new TmemStore({ capacityPages: 16, maxPoolsPerGuest: 4, allocFrames: a.alloc });
  const g = s.addGuest({ name: 'a', maxmemPages: 100, ramPages: 0, shareGroup: null });
  const p = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
  const e = s.newPool(g, EPH, PAGE, NO_UUID, 0, false);
  t.equal(s.putPage(g, p, oid(1), 0, page(7), 0), TMEM_S_NOSPACE, 'persistent PUT: NOSPACE, no throw');
  t.equal(s.putPage(g, e, oid(1), 0, page(7), 0), TMEM_S_NOSPACE, 'ephemeral PUT: NOSPACE, no throw');
  t.ok(a.calls >= 2, 'the allocation was tried');
  t.equal(s.getPage(g, p, oid(1), 0, 0, dst, 0), TMEM_S_MISS, 'the handle is empty');
  t.equal(s.getPage(g, e, oid(1), 0, 0, dst, 0), TMEM_S_MISS, 'the handle is empty');
  t.equal(s.pagesStored(), 0, 'no page record held');
  t.equal(infoOf(s, g)[INFO_PERSISTENT_PAGES], 0);
  const st = s.stats() as { freePages: number; persistentPages: number; ephemeralPages: number; objects: number; frameBytes: number; guests: { putsNoSpace: number }[] };
  t.equal(st.freePages, 16);
  t.equal(st.persistentPages, 0);
  t.equal(st.ephemeralPages, 0);
  t.equal(st.objects, 0, 'no object left behind');
  t.equal(st.frameBytes, 0);
  t.equal(st.guests[0]!.putsNoSpace, 2, 'counted as refused');
  t.equal(s.flushObject(g, p, oid(1)), 0, 'FLUSH_OBJECT finds nothing');
  t.equal(s.prefaultStep(64), 0, 'prefaultStep does not throw either: nothing it can do now');

  // memory is back: the same frames are used, everything is consistent
  a.fail = false;
  for (let i = 0; i < 16; i++) t.equal(s.putPage(g, p, oid(1), i, page(i), 0), TMEM_S_OK);
  t.equal(s.putPage(g, p, oid(2), 0, page(1), 0), TMEM_S_NOSPACE, 'capacity is exactly 16 pages');
  for (let i = 0; i < 16; i++) {
    t.equal(s.getPage(g, p, oid(1), i, 0, dst, 0), TMEM_S_OK);
    t.equal(dst[0], i);
  }
  t.equal(s.pagesStored(), 16);
  t.equal((s.stats() as { freePages: number }).freePages, 0);
});

t.test('out of memory in a later chunk: persistent PUT NOSPACE, ephemeral PUT evicts instead; prefault stops', async (t) => {
  // two chunks: the first allocates, the second (8 frames) does not
  const a = flakyAlloc();
  a.fail = false;
  const alloc = (bytes: number) => {
    if (a.calls === 1) a.fail = true;
    return a.alloc(bytes);
  };
  const cap = CHUNK_PAGES + 8;
  const s = new TmemStore({ capacityPages: cap, maxPoolsPerGuest: 4, allocFrames: alloc });
  const g = s.addGuest({ name: 'a', maxmemPages: cap, ramPages: 0, shareGroup: null });
  const e = s.newPool(g, EPH, PAGE, NO_UUID, 0, false);
  const src = page(3);
  for (let i = 0; i < CHUNK_PAGES; i++) {
    if (s.putPage(g, e, oid(i >>> 6), i & 63, src, 0) !== TMEM_S_OK) {
      t.fail(`put ${i}`);
      break;
    }
  }
  t.equal(s.pagesStored(), CHUNK_PAGES, 'the first chunk is full');
  t.equal(s.prefaultStep(1024), 0, 'prefault: the next chunk cannot be had, no throw');

  // ephemeral: the oldest page is evicted for the new one
  t.equal(s.putPage(g, e, oid(1e6), 0, page(9), 0), TMEM_S_OK, 'ephemeral PUT evicts instead of failing');
  t.equal(s.getPage(g, e, oid(0), 0, 0, dst, 0), TMEM_S_MISS, 'the oldest page was evicted');
  t.equal(s.getPage(g, e, oid(1e6), 0, 0, dst, 0), TMEM_S_OK, 'the new page is there');
  t.equal(dst[0], 9);

  // persistent: after flushing every ephemeral page, the only free frames are recycled ones
  s.flushGuest(g);
  while (s.reclaimStep(1 << 20) > 0);
  const p = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
  let ok = 0;
  for (let i = 0; i < CHUNK_PAGES; i++) if (s.putPage(g, p, oid(i >>> 6), i & 63, src, 0) === TMEM_S_OK) ok++;
  t.equal(ok, CHUNK_PAGES, 'the first chunk holds persistent pages again');
  t.equal(s.putPage(g, p, oid(2e6), 0, page(5), 0), TMEM_S_NOSPACE, 'persistent PUT: NOSPACE (nothing to evict, no memory)');
  t.equal(s.getPage(g, p, oid(2e6), 0, 0, dst, 0), TMEM_S_MISS, 'the handle is empty');
  t.equal(s.pagesStored(), CHUNK_PAGES);
  const st = s.stats() as { freePages: number; persistentPages: number; objects: number };
  t.equal(st.persistentPages, CHUNK_PAGES);
  t.equal(st.freePages, 8, 'the 8 frames of the missing chunk are still free');
  t.equal(st.objects, CHUNK_PAGES / 64, 'no object left behind');

  a.fail = false;
  t.equal(s.putPage(g, p, oid(2e6), 0, page(5), 0), TMEM_S_OK, 'memory back: the next chunk is allocated');
  t.equal(s.getPage(g, p, oid(2e6), 0, 0, dst, 0), TMEM_S_OK);
  t.equal(dst[0], 5);
});

t.test('PUT: the object looked up before making room is reused only if eviction left it', async (t) => {
  // capacity 1: the new page of object A evicts A's only page, so A's record is freed and made again
  const s1 = new TmemStore({ capacityPages: 1, maxPoolsPerGuest: 2, hashSeed: 5 });
  const g1 = s1.addGuest({ name: 'a', maxmemPages: 0, ramPages: 0, shareGroup: null });
  const e1 = s1.newPool(g1, EPH, PAGE, NO_UUID, 0, false);
  t.equal(s1.putPage(g1, e1, oid(0xa), 0, page(1), 0), TMEM_S_OK);
  t.equal(s1.putPage(g1, e1, oid(0xa), 1, page(2), 0), TMEM_S_OK);
  t.equal(s1.getPage(g1, e1, oid(0xa), 0, 0, dst, 0), TMEM_S_MISS, 'evicted');
  t.equal(s1.getPage(g1, e1, oid(0xa), 1, 0, dst, 0), TMEM_S_OK);
  t.equal(dst[0], 2);
  t.equal(s1.pagesStored(), 0);
  t.equal((s1.stats() as { objects: number }).objects, 0);

  // capacity 2: B's page is evicted, A keeps its record and gets a second page
  const s = new TmemStore({ capacityPages: 2, maxPoolsPerGuest: 2, hashSeed: 5 });
  const g = s.addGuest({ name: 'a', maxmemPages: 0, ramPages: 0, shareGroup: null });
  const e = s.newPool(g, EPH, PAGE, NO_UUID, 0, false);
  t.equal(s.putPage(g, e, oid(0xb), 0, page(1), 0), TMEM_S_OK);
  t.equal(s.putPage(g, e, oid(0xa), 0, page(2), 0), TMEM_S_OK);
  t.equal(s.putPage(g, e, oid(0xa), 1, page(3), 0), TMEM_S_OK);
  t.equal((s.stats() as { objects: number }).objects, 1, 'only A is left');
  t.equal(s.flushObject(g, e, oid(0xa)), 2, 'both of A\'s pages are under one object');
  t.equal(s.getPage(g, e, oid(0xb), 0, 0, dst, 0), TMEM_S_MISS);
  t.equal(s.pagesStored(), 0);
});

// ---- last-object cache and page bucket locality (handle-index.ts) ----------

t.test('last-object cache: a removed object is not found, not even once its record is reused', async (t) => {
  const ix = new HandleIndex(64, { seed: 3 });
  const a = ix.addObject(0, oid(0xa));
  t.equal(ix.findObject(0, oid(0xa)), a, 'found (and cached)');
  t.equal(ix.findObject(1, oid(0xa)), -1, 'another pool slot, same oid: not the cached object');
  t.equal(ix.findObject(0, oid(0xa, 1)), -1, 'another oid word: not the cached object');
  ix.removeObject(a);
  t.equal(ix.findObject(0, oid(0xa)), -1, 'removed: a miss');
  const b = ix.addObject(0, oid(0xb));
  t.equal(b, a, 'the record is reused');
  t.equal(ix.findObject(0, oid(0xa)), -1, 'the old key does not reach the new object');
  t.equal(ix.findObject(0, oid(0xb)), b);
  const a2 = ix.addObject(0, oid(0xa));
  t.equal(ix.findObject(0, oid(0xb)), b);
  t.equal(ix.findObject(0, oid(0xa)), a2, 're-created: the new record');
  // an object cached before the arrays grow (and rehash) is still right after
  const big = new HandleIndex(8192, { seed: 4 });
  const ids: number[] = [];
  for (let i = 0; i < 3000; i++) {
    ids.push(big.addObject(i & 3, oid(i, 7)));
    t.equal(big.findObject(i & 3, oid(i, 7)), ids[i], `object ${i} right after it was added`);
  }
  let wrong = 0;
  for (let i = 0; i < 3000; i++) if (big.findObject(i & 3, oid(i, 7)) !== ids[i] || big.findObject((i + 1) & 3, oid(i, 7)) !== -1) wrong++;
  t.equal(wrong, 0, 'every object found under its slot only, after growing');
});

t.test('last-object cache: FLUSH_OBJECT, DESTROY_POOL and reset leave no stale object behind', async (t) => {
  const s = new TmemStore({ capacityPages: 64, maxPoolsPerGuest: 4, hashSeed: 9 });
  const g = s.addGuest({ name: 'a', maxmemPages: 64, ramPages: 0, shareGroup: null });
  const p1 = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
  const p2 = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
  const get = (p: number, o: Uint32Array, i: number): number => (s.getPage(g, p, o, i, 0, dst, 0) === TMEM_S_OK ? dst[0]! : -1);
  t.equal(s.putPage(g, p1, oid(1), 0, page(11), 0), TMEM_S_OK);
  t.equal(s.putPage(g, p2, oid(1), 0, page(21), 0), TMEM_S_OK);
  t.equal(s.putPage(g, p1, oid(1), 1, page(12), 0), TMEM_S_OK);
  t.equal(get(p1, oid(1), 0), 11);
  t.equal(get(p2, oid(1), 0), 21, 'same oid in another pool: its own object');
  t.equal(get(p1, oid(1), 1), 12);
  t.equal(s.flushObject(g, p1, oid(1)), 2);
  t.equal(get(p1, oid(1), 0), -1, 'flushed object: a miss');
  t.equal(get(p1, oid(1), 1), -1);
  t.equal(s.putPage(g, p1, oid(2), 5, page(13), 0), TMEM_S_OK, 'a new object, maybe in the flushed record');
  t.equal(get(p1, oid(1), 5), -1, 'the flushed oid does not reach it');
  t.equal(get(p1, oid(2), 5), 13);
  t.equal(s.putPage(g, p1, oid(1), 0, page(14), 0), TMEM_S_OK, 're-created');
  t.equal(get(p1, oid(1), 0), 14);
  t.equal(get(p2, oid(1), 0), 21);
  t.equal(get(p2, oid(1), 0), 21);
  s.destroyPool(g, p2);
  const p3 = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
  t.equal(get(p3, oid(1), 0), -1, 'a pool made after DESTROY_POOL (maybe in its slot) is empty');
  t.equal(s.putPage(g, p3, oid(3), 0, page(31), 0), TMEM_S_OK);
  t.equal(get(p3, oid(1), 0), -1);
  t.equal(get(p3, oid(3), 0), 31);
  t.equal(get(p1, oid(1), 0), 14);
  s.reset(g);
  const p4 = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
  t.equal(get(p4, oid(3), 0), -1, 'after reset: nothing');
  t.equal(get(p4, oid(1), 0), -1);
  while (s.reclaimPending() > 0) s.reclaimStep(16);
  t.equal(s.pagesStored(), 0, 'destroyed pools reclaimed');
  t.equal(get(p4, oid(1), 0), -1, 'and still nothing after reclaim');
});

t.test('page buckets: one object\'s consecutive indexes share a block of 64 buckets, but a guest cannot pick the buckets', async (t) => {
  for (const opts of [{ seed: 11 }, { seed: 12 }, {}]) {
    const ix = new HandleIndex(4096, opts);
    const o = ix.addObject(0, oid(1));
    // locality: the 64 indexes of an aligned group fill one aligned block of 64 buckets, one each
    const group = 1234;
    const bs = new Set<number>();
    for (let i = 0; i < 64; i++) bs.add(ix.pageBucket(o, group * 64 + i));
    const blocks = new Set([...bs].map((b) => b >>> 6));
    t.equal(bs.size, 64, 'the group\'s indexes: 64 distinct buckets');
    t.equal(blocks.size, 1, 'in one aligned block');
    // one index per group, all with the same low bits: spread over the whole table, not 1/64 of it
    for (let i = 0; i < 4096; i++) ix.linkPage(ix.allocPage(), o, i * 64);
    const { pages } = ix.longestChains();
    t.ok(pages <= 12, `seed ${opts.seed ?? 'random'}: longest page chain ${pages} for 4096 indexes = 0 mod 64 (at a fixed offset: 64)`);
    let missing = 0;
    for (let i = 0; i < 4096; i++) if (ix.findPage(o, i * 64) === -1) missing++;
    t.equal(missing, 0);
  }
  // full groups of many objects: the chains stay short
  for (const seed of [21, 22]) {
    const ix = new HandleIndex(4096, { seed });
    for (let j = 0; j < 64; j++) {
      const o = ix.addObject(0, oid(j));
      for (let i = 0; i < 64; i++) ix.linkPage(ix.allocPage(), o, j * 4096 + i);
    }
    const { pages } = ix.longestChains();
    t.ok(pages <= 12, `seed ${seed}: longest page chain ${pages} for 64 objects of 64 consecutive pages`);
  }
});

t.test('prefaultWanted: yes on a fresh store, no once the frames ahead are faulted in, yes again only after 64 of them were used', async (t) => {
  const s = new TmemStore({ capacityPages: 1 << 20, maxPoolsPerGuest: 4 });
  const g = s.addGuest({ name: 'a', maxmemPages: 1 << 20, ramPages: 0, shareGroup: null });
  const p = s.newPool(g, PERSIST, PAGE, NO_UUID, 0, false);
  t.ok(s.prefaultWanted(), 'a fresh store wants its frames faulted in');
  let steps = 0;
  while (s.prefaultStep(1024) > 0) steps++;
  t.ok(steps > 0, 'prefaultStep had work');
  t.notOk(s.prefaultWanted(), 'nothing wanted once the frames ahead are in');
  for (let i = 0; i < 63; i++) t.equal(s.putPage(g, p, oid(1), i, page(i), 0), TMEM_S_OK);
  t.notOk(s.prefaultWanted(), '63 fresh frames used: not yet worth an idle step');
  t.equal(s.putPage(g, p, oid(1), 63, page(63), 0), TMEM_S_OK);
  t.ok(s.prefaultWanted(), '64 used: the idle steps refill them');
  t.equal(s.prefaultStep(1024), 0, 'one step refills all 64');
  t.notOk(s.prefaultWanted());
  for (let i = 0; i < 64; i++) t.equal(s.putPage(g, p, oid(1), i, page(i + 1), 0), TMEM_S_OK, 'PUT over a stored page');
  t.notOk(s.prefaultWanted(), 'PUTs that replace stored pages use no fresh frame: nothing wanted');
});

t.test('prefaultWanted near the capacity: the last frames below it are wanted even when fewer than 64', async (t) => {
  const s = new TmemStore({ capacityPages: 40, maxPoolsPerGuest: 4 });
  s.addGuest({ name: 'a', maxmemPages: 40, ramPages: 0, shareGroup: null });
  t.ok(s.prefaultWanted(), '40 frames to fault in');
  t.equal(s.prefaultStep(8), 32, '8 in, 32 to go');
  t.ok(s.prefaultWanted(), 'still wanted');
  while (s.prefaultStep(8) > 0);
  t.notOk(s.prefaultWanted(), 'all 40 in');
});
