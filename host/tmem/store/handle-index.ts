// The handle index: (pool, 192-bit oid, index) -> page record, in typed arrays.
//
// Two levels, as in Xen tmem (pool -> object -> page), so that FLUSH_OBJECT
// and DESTROY_POOL touch only what they free:
//
//   objects  keyed by (pool slot, oid): chained hash table; each object heads
//            a doubly linked list of its pages and sits on its pool's doubly
//            linked list of objects. Arrays grow by doubling (objects are
//            usually far fewer than pages), never beyond capacity (an object
//            lives only while it has a page).
//   pages    keyed by (object, index): chained hash table over records
//            0..capacity-1, preallocated. Record p is also frame p.
//
// Per page: obj, index, hash link, object prev/next = 20 bytes, plus one
// bucket (4..8 bytes). Per object: pool, oid, hash link, first page, pool
// prev/next = 44 bytes plus its bucket. No JS object or string per page.
//
// Both hashes are keyed: the guest chooses oids and indices, and the object
// table is shared by all guests, so an unkeyed hash would let one guest build
// keys that all land in one chain. Each index draws random keys once at
// construction (crypto.getRandomValues; HandleIndexOptions.seed for tests):
// one per key word (slot, 6 oid words; object, index). Each word, xored with
// its key, goes through two multiplies (no input difference passes them with
// a known output difference, as a flipped top bit passes one multiply); the
// results are xored and the bucket is the top bits. The words are mixed
// independently, so the CPU overlaps them: no slower than the former chain.
//
// Locality for what guests do (cleancache: consecutive pages of one file;
// frontswap: neighbouring swap offsets share an oid): the last object found
// is cached (one entry, emptied when it is removed), and a page's bucket is
// keyed by (object, index >>> 6) with the 64 indexes of a group in one
// aligned block of 64 buckets at a keyed rotation (see pgHash), so a run of
// pages costs about one cold bucket line per 16 pages instead of two per page.
import { getRandomValues } from 'node:crypto';

export const NIL = -1;

const OID_WORDS = 6;

/** Page indexes are hashed in aligned groups of 2^GROUP_BITS (see pgHash); the page table has at least that many buckets. */
const GROUP_BITS = 6;
const GROUP_MASK = (1 << GROUP_BITS) - 1;

/** Smallest power of two >= n (n >= 1). */
function pow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** One word's share of a hash: w xored with its key, through two multiplies (a bijection). */
function mixWord(x: number): number {
  x = Math.imul(x, 0x9e3779b1);
  return Math.imul(x ^ (x >>> 16), 0x85ebca77);
}

/** Hash key words: 7 for objects (slot, oid), 2 for pages (object, index). */
const KEY_WORDS = 9;

/** The key words from a test seed (splitmix32). */
function keysFromSeed(seed: number): Uint32Array {
  const out = new Uint32Array(KEY_WORDS);
  let a = seed >>> 0;
  for (let i = 0; i < KEY_WORDS; i++) {
    a = (a + 0x9e3779b9) >>> 0;
    let z = Math.imul(a ^ (a >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    out[i] = z ^ (z >>> 15);
  }
  return out;
}

export interface HandleIndexOptions {
  /** Hash seed (tests: reproducible layouts); default: random keys, drawn once here. */
  seed?: number;
}

export class HandleIndex {
  readonly capacity: number;

  // page records (capacity, preallocated)
  readonly pgObj: Int32Array; // owning object, NIL when free
  readonly pgIndex: Uint32Array;
  private readonly pgNext: Int32Array; // hash chain, or free list when free
  private readonly pgObjPrev: Int32Array;
  private readonly pgObjNext: Int32Array;
  private readonly pgBuckets: Int32Array;
  /** 32 - log2(buckets): the bucket is the top bits of the hash. */
  private readonly pgShift: number;
  private pgFree = NIL;
  private pgBump = 0;
  pagesUsed = 0;

  // object records (grown by doubling up to capacity)
  private objCap = 0;
  objPool: Int32Array = new Int32Array(0); // pool slot, NIL when free
  private objOid: Uint32Array = new Uint32Array(0);
  private objNext: Int32Array = new Int32Array(0); // hash chain, or free list
  objHead: Int32Array = new Int32Array(0); // first page, NIL when empty
  private objPoolPrev: Int32Array = new Int32Array(0);
  private objPoolNext: Int32Array = new Int32Array(0);
  private objBuckets: Int32Array = new Int32Array(0);
  private objShift = 31;
  private objFree = NIL;
  private objBump = 0;
  objectsUsed = 0;

  // the last object found or added: (slot, oid) -> id, so that consecutive
  // pages of one object (cleancache: one file; frontswap: neighbouring swap
  // offsets) skip the object bucket. cSlot NIL = empty. Emptied when that
  // object is removed and when the object arrays grow (ids do not change
  // there, but no lookup may outlive a rehash unchecked).
  private cSlot = NIL;
  private cObj = NIL;
  private c0 = 0;
  private c1 = 0;
  private c2 = 0;
  private c3 = 0;
  private c4 = 0;
  private c5 = 0;

  // pool slot -> first object (grown on demand)
  private poolHeadArr: Int32Array = new Int32Array(16).fill(NIL);

  // hash keys (per index, random unless a test gives a seed)
  private readonly k0: number;
  private readonly k1: number;
  private readonly k2: number;
  private readonly k3: number;
  private readonly k4: number;
  private readonly k5: number;
  private readonly k6: number;
  private readonly k7: number;
  private readonly k8: number;

  constructor(capacityPages: number, opts: HandleIndexOptions = {}) {
    const n = capacityPages;
    this.capacity = n;
    const k = opts.seed !== undefined ? keysFromSeed(opts.seed) : getRandomValues(new Uint32Array(KEY_WORDS));
    this.k0 = k[0]! | 0;
    this.k1 = k[1]! | 0;
    this.k2 = k[2]! | 0;
    this.k3 = k[3]! | 0;
    this.k4 = k[4]! | 0;
    this.k5 = k[5]! | 0;
    this.k6 = k[6]! | 0;
    this.k7 = k[7]! | 0;
    this.k8 = k[8]! | 0;
    this.pgObj = new Int32Array(n).fill(NIL);
    this.pgIndex = new Uint32Array(n);
    this.pgNext = new Int32Array(n).fill(NIL);
    this.pgObjPrev = new Int32Array(n).fill(NIL);
    this.pgObjNext = new Int32Array(n).fill(NIL);
    this.pgBuckets = new Int32Array(pow2(Math.max(GROUP_MASK + 1, n))).fill(NIL);
    this.pgShift = Math.clz32(this.pgBuckets.length) + 1;
    this.growObjects(Math.min(n, 1024));
  }

  // ---- objects -------------------------------------------------------------

  /** The bucket of (slot, the oid in k[b..b+5]). */
  private objHash(slot: number, k: Uint32Array, b: number): number {
    const h =
      mixWord(slot ^ this.k0) ^ mixWord(k[b]! ^ this.k1) ^ mixWord(k[b + 1]! ^ this.k2) ^ mixWord(k[b + 2]! ^ this.k3) ^
      mixWord(k[b + 3]! ^ this.k4) ^ mixWord(k[b + 4]! ^ this.k5) ^ mixWord(k[b + 5]! ^ this.k6);
    return h >>> this.objShift;
  }

  /** The object (slot, oid), or NIL. */
  findObject(slot: number, oid: Uint32Array): number {
    if (
      slot === this.cSlot && oid[0] === this.c0 && oid[1] === this.c1 && oid[2] === this.c2 &&
      oid[3] === this.c3 && oid[4] === this.c4 && oid[5] === this.c5
    ) return this.cObj;
    let o = this.objBuckets[this.objHash(slot, oid, 0)]!;
    const k = this.objOid;
    while (o !== NIL) {
      const b = o * OID_WORDS;
      if (
        this.objPool[o] === slot &&
        k[b] === oid[0] && k[b + 1] === oid[1] && k[b + 2] === oid[2] &&
        k[b + 3] === oid[3] && k[b + 4] === oid[4] && k[b + 5] === oid[5]
      ) {
        this.remember(slot, oid, o);
        return o;
      }
      o = this.objNext[o]!;
    }
    return NIL;
  }

  /** Fills the last-object cache with (slot, oid) -> o. */
  private remember(slot: number, oid: Uint32Array, o: number): void {
    this.cSlot = slot;
    this.cObj = o;
    this.c0 = oid[0]!;
    this.c1 = oid[1]!;
    this.c2 = oid[2]!;
    this.c3 = oid[3]!;
    this.c4 = oid[4]!;
    this.c5 = oid[5]!;
  }

  /** Empties the last-object cache. */
  private forget(): void {
    this.cSlot = NIL;
    this.cObj = NIL;
  }

  /** Creates the empty object (slot, oid), which must not exist. Never fails while objects <= pages <= capacity. */
  addObject(slot: number, oid: Uint32Array): number {
    let o = this.objFree;
    if (o !== NIL) this.objFree = this.objNext[o]!;
    else {
      if (this.objBump === this.objCap) this.growObjects(Math.min(this.capacity, this.objCap * 2));
      o = this.objBump++;
    }
    this.objPool[o] = slot;
    const k = this.objOid;
    const b0 = o * OID_WORDS;
    k[b0] = oid[0]!;
    k[b0 + 1] = oid[1]!;
    k[b0 + 2] = oid[2]!;
    k[b0 + 3] = oid[3]!;
    k[b0 + 4] = oid[4]!;
    k[b0 + 5] = oid[5]!;
    this.objHead[o] = NIL;
    const b = this.objHash(slot, oid, 0);
    this.objNext[o] = this.objBuckets[b]!;
    this.objBuckets[b] = o;
    this.poolLink(slot, o);
    this.objectsUsed++;
    this.remember(slot, oid, o);
    return o;
  }

  /** Removes object o, which must have no pages. */
  removeObject(o: number): void {
    if (o === this.cObj) this.forget();
    const slot = this.objPool[o]!;
    const b = this.objHash(slot, this.objOid, o * OID_WORDS);
    let x = this.objBuckets[b]!;
    if (x === o) this.objBuckets[b] = this.objNext[o]!;
    else {
      while (this.objNext[x] !== o) x = this.objNext[x]!;
      this.objNext[x] = this.objNext[o]!;
    }
    // off the pool's list
    const a = this.objPoolPrev[o]!;
    const c = this.objPoolNext[o]!;
    if (a === NIL) this.poolHeadArr[slot] = c;
    else this.objPoolNext[a] = c;
    if (c !== NIL) this.objPoolPrev[c] = a;
    this.objPool[o] = NIL;
    this.objNext[o] = this.objFree;
    this.objFree = o;
    this.objectsUsed--;
  }

  private poolLink(slot: number, o: number): void {
    if (slot >= this.poolHeadArr.length) {
      const a = new Int32Array(Math.max(slot + 1, this.poolHeadArr.length * 2)).fill(NIL);
      a.set(this.poolHeadArr);
      this.poolHeadArr = a;
    }
    const h = this.poolHeadArr[slot]!;
    this.objPoolPrev[o] = NIL;
    this.objPoolNext[o] = h;
    if (h !== NIL) this.objPoolPrev[h] = o;
    this.poolHeadArr[slot] = o;
  }

  /** The first object of pool slot, NIL when it has none. */
  poolFirstObject(slot: number): number {
    return slot < this.poolHeadArr.length ? this.poolHeadArr[slot]! : NIL;
  }

  /** Grows the object arrays to cap records and rehashes (rare: doubling). */
  private growObjects(cap: number): void {
    cap = Math.max(cap, 1);
    this.forget();
    const old = this.objCap;
    const grow = <T extends Int32Array | Uint32Array>(a: T, n: number, fill: boolean): T => {
      const b = (a instanceof Int32Array ? new Int32Array(n) : new Uint32Array(n)) as T;
      if (fill) b.fill(NIL);
      b.set(a);
      return b;
    };
    this.objPool = grow(this.objPool, cap, true);
    this.objOid = grow(this.objOid, cap * OID_WORDS, false);
    this.objNext = grow(this.objNext, cap, true);
    this.objHead = grow(this.objHead, cap, true);
    this.objPoolPrev = grow(this.objPoolPrev, cap, true);
    this.objPoolNext = grow(this.objPoolNext, cap, true);
    this.objCap = cap;
    this.objBuckets = new Int32Array(pow2(Math.max(2, cap))).fill(NIL);
    this.objShift = Math.clz32(this.objBuckets.length) + 1;
    for (let o = 0; o < old; o++) {
      const slot = this.objPool[o]!;
      if (slot === NIL) continue;
      const b = this.objHash(slot, this.objOid, o * OID_WORDS);
      this.objNext[o] = this.objBuckets[b]!;
      this.objBuckets[b] = o;
    }
  }

  // ---- pages ---------------------------------------------------------------

  /**
   * The bucket of (o, index), with locality: the keyed hash of (o, index >>> 6)
   * picks a bucket b; the group's 64 indexes go to the aligned block of 64
   * buckets holding b, starting at b and wrapping within the block, so
   * consecutive pages of one object share a few cache lines of buckets. The
   * guest chooses neither the block nor the offset in it (both come from the
   * keyed hash; the offset is not index & 63, or a guest using one index per
   * group could fill 1/64 of the buckets), and one group puts at most one page
   * in a bucket: a chain is as long as the groups sharing its block.
   */
  private pgHash(o: number, index: number): number {
    const b = (mixWord(o ^ this.k7) ^ mixWord((index >>> GROUP_BITS) ^ this.k8)) >>> this.pgShift;
    return (b & ~GROUP_MASK) | ((b + index) & GROUP_MASK);
  }

  /** The page (o, index), or NIL. */
  findPage(o: number, index: number): number {
    let p = this.pgBuckets[this.pgHash(o, index)]!;
    while (p !== NIL) {
      if (this.pgObj[p] === o && this.pgIndex[p] === index) return p;
      p = this.pgNext[p]!;
    }
    return NIL;
  }

  /** A free page record (and frame), NIL when all capacity is in use. */
  allocPage(): number {
    const p = this.allocRecycled();
    return p !== NIL ? p : this.allocFresh();
  }

  /** A page record freed before (its frame has been written, so it is faulted in), NIL when none. */
  allocRecycled(): number {
    const p = this.pgFree;
    if (p === NIL) return NIL;
    this.pgFree = this.pgNext[p]!;
    this.pagesUsed++;
    return p;
  }

  /** A never-used page record (its frame may not be faulted in yet), NIL when all have been used. */
  allocFresh(): number {
    if (this.pgBump >= this.capacity) return NIL;
    this.pagesUsed++;
    return this.pgBump++;
  }

  /** Gives back page record p, allocated but never linked (its frame could not be had). */
  unallocPage(p: number): void {
    this.pagesUsed--;
    if (p === this.pgBump - 1) this.pgBump--; // still never used
    else {
      this.pgNext[p] = this.pgFree;
      this.pgFree = p;
    }
  }

  /** Records below this have been used at least once (their frames were written). */
  get freshFrom(): number {
    return this.pgBump;
  }

  /** Files allocated page p under (o, index), which must not exist. */
  linkPage(p: number, o: number, index: number): void {
    this.pgObj[p] = o;
    this.pgIndex[p] = index;
    const b = this.pgHash(o, index);
    this.pgNext[p] = this.pgBuckets[b]!;
    this.pgBuckets[b] = p;
    const h = this.objHead[o]!;
    this.pgObjPrev[p] = NIL;
    this.pgObjNext[p] = h;
    if (h !== NIL) this.pgObjPrev[h] = p;
    this.objHead[o] = p;
  }

  /** Unfiles page p and returns it to the free list; returns its object (which may now be empty). */
  freePage(p: number): number {
    const o = this.pgObj[p]!;
    const b = this.pgHash(o, this.pgIndex[p]!);
    let x = this.pgBuckets[b]!;
    if (x === p) this.pgBuckets[b] = this.pgNext[p]!;
    else {
      while (this.pgNext[x] !== p) x = this.pgNext[x]!;
      this.pgNext[x] = this.pgNext[p]!;
    }
    const a = this.pgObjPrev[p]!;
    const c = this.pgObjNext[p]!;
    if (a === NIL) this.objHead[o] = c;
    else this.pgObjNext[a] = c;
    if (c !== NIL) this.pgObjPrev[c] = a;
    this.pgObj[p] = NIL;
    this.pgNext[p] = this.pgFree;
    this.pgFree = p;
    this.pagesUsed--;
    return o;
  }

  // ---- diagnostics (control path, tests) ------------------------------------

  /** The bucket (slot, oid) hashes to in the object table now. */
  objectBucket(slot: number, oid: Uint32Array): number {
    return this.objHash(slot, oid, 0);
  }

  /** The bucket (object o, index) hashes to in the page table. */
  pageBucket(o: number, index: number): number {
    return this.pgHash(o, index);
  }

  /** The longest hash chain of each table (walks every bucket: O(buckets + records)). */
  longestChains(): { objects: number; pages: number } {
    const longest = (buckets: Int32Array, next: Int32Array): number => {
      let max = 0;
      for (let b = 0; b < buckets.length; b++) {
        let n = 0;
        for (let x = buckets[b]!; x !== NIL; x = next[x]!) n++;
        if (n > max) max = n;
      }
      return max;
    };
    return { objects: longest(this.objBuckets, this.objNext), pages: longest(this.pgBuckets, this.pgNext) };
  }

  /** Bytes of metadata held by the index now. */
  metaBytes(): number {
    return (
      this.pgObj.byteLength + this.pgIndex.byteLength + this.pgNext.byteLength + this.pgObjPrev.byteLength +
      this.pgObjNext.byteLength + this.pgBuckets.byteLength + this.objPool.byteLength + this.objOid.byteLength +
      this.objNext.byteLength + this.objHead.byteLength + this.objPoolPrev.byteLength + this.objPoolNext.byteLength +
      this.objBuckets.byteLength + this.poolHeadArr.byteLength
    );
  }
}
