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
export const NIL = -1;

const OID_WORDS = 6;

/** Smallest power of two >= n (n >= 1). */
function pow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

function mix(h: number, w: number): number {
  h = Math.imul(h ^ w, 0x9e3779b1);
  return h ^ (h >>> 15);
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
  private readonly pgMask: number;
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
  private objMask = 0;
  private objFree = NIL;
  private objBump = 0;
  objectsUsed = 0;

  // pool slot -> first object (grown on demand)
  private poolHeadArr: Int32Array = new Int32Array(16).fill(NIL);

  constructor(capacityPages: number) {
    const n = capacityPages;
    this.capacity = n;
    this.pgObj = new Int32Array(n).fill(NIL);
    this.pgIndex = new Uint32Array(n);
    this.pgNext = new Int32Array(n).fill(NIL);
    this.pgObjPrev = new Int32Array(n).fill(NIL);
    this.pgObjNext = new Int32Array(n).fill(NIL);
    this.pgBuckets = new Int32Array(pow2(Math.max(1, n))).fill(NIL);
    this.pgMask = this.pgBuckets.length - 1;
    this.growObjects(Math.min(n, 1024));
  }

  // ---- objects -------------------------------------------------------------

  private objHash(slot: number, oid: Uint32Array): number {
    let h = mix(0x2545f491, slot);
    for (let i = 0; i < OID_WORDS; i++) h = mix(h, oid[i]!);
    return h & this.objMask;
  }

  /** The object (slot, oid), or NIL. */
  findObject(slot: number, oid: Uint32Array): number {
    let o = this.objBuckets[this.objHash(slot, oid)]!;
    const k = this.objOid;
    while (o !== NIL) {
      const b = o * OID_WORDS;
      if (
        this.objPool[o] === slot &&
        k[b] === oid[0] && k[b + 1] === oid[1] && k[b + 2] === oid[2] &&
        k[b + 3] === oid[3] && k[b + 4] === oid[4] && k[b + 5] === oid[5]
      ) return o;
      o = this.objNext[o]!;
    }
    return NIL;
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
    this.objOid.set(oid.subarray(0, OID_WORDS), o * OID_WORDS);
    this.objHead[o] = NIL;
    const b = this.objHash(slot, oid);
    this.objNext[o] = this.objBuckets[b]!;
    this.objBuckets[b] = o;
    this.poolLink(slot, o);
    this.objectsUsed++;
    return o;
  }

  /** Removes object o, which must have no pages. */
  removeObject(o: number): void {
    const slot = this.objPool[o]!;
    const b = this.objHash(slot, this.objOid.subarray(o * OID_WORDS, o * OID_WORDS + OID_WORDS));
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
    this.objBuckets = new Int32Array(pow2(cap)).fill(NIL);
    this.objMask = this.objBuckets.length - 1;
    for (let o = 0; o < old; o++) {
      const slot = this.objPool[o]!;
      if (slot === NIL) continue;
      const b = this.objHash(slot, this.objOid.subarray(o * OID_WORDS, o * OID_WORDS + OID_WORDS));
      this.objNext[o] = this.objBuckets[b]!;
      this.objBuckets[b] = o;
    }
  }

  // ---- pages ---------------------------------------------------------------

  private pgHash(o: number, index: number): number {
    return mix(mix(0x68e31da4, o), index) & this.pgMask;
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
