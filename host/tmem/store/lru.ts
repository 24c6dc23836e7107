// The host-wide LRU of ephemeral pages, across all guests and pools.
//
// A doubly linked list threaded through two Int32Arrays indexed by page
// record: O(1) append, touch and unlink, no allocation. Persistent pages are
// never on it, which is how an ephemeral PUT is kept from evicting them.
export const NIL = -1;

export class Lru {
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  /** Oldest page (the next victim), NIL when empty. */
  head = NIL;
  /** Newest page. */
  tail = NIL;
  size = 0;

  constructor(capacityPages: number) {
    this.prev = new Int32Array(capacityPages).fill(NIL);
    this.next = new Int32Array(capacityPages).fill(NIL);
  }

  /** Appends page p as the newest. p must not be on the list. */
  push(p: number): void {
    this.prev[p] = this.tail;
    this.next[p] = NIL;
    if (this.tail === NIL) this.head = p;
    else this.next[this.tail] = p;
    this.tail = p;
    this.size++;
  }

  /** Unlinks page p, which must be on the list. */
  remove(p: number): void {
    const a = this.prev[p]!;
    const b = this.next[p]!;
    if (a === NIL) this.head = b;
    else this.next[a] = b;
    if (b === NIL) this.tail = a;
    else this.prev[b] = a;
    this.prev[p] = NIL;
    this.next[p] = NIL;
    this.size--;
  }

  /** Marks page p as just used. */
  touch(p: number): void {
    if (this.tail === p) return;
    this.remove(p);
    this.push(p);
  }

  /** The page after p towards the newest end (for tests and stats). */
  newer(p: number): number {
    return this.next[p]!;
  }

  metaBytes(): number {
    return this.prev.byteLength + this.next.byteLength;
  }
}

/** The two ends of one list of a ListSet (kept by its owner, e.g. a Guest). */
export interface ListEnds {
  head: number;
  tail: number;
  size: number;
}

/**
 * Many LRU lists over one pair of arrays indexed by page record: each page
 * is on at most one list. Used for each capped guest's private ephemeral
 * pages, so that a guest at its cap (tmem-max) evicts its own oldest page,
 * not another guest's. O(1), no allocation; the arrays are made on first use
 * (only capped guests pay the 8 bytes per page).
 */
export class ListSet {
  private readonly prev: Int32Array;
  private readonly next: Int32Array;

  constructor(capacityPages: number) {
    this.prev = new Int32Array(capacityPages).fill(NIL);
    this.next = new Int32Array(capacityPages).fill(NIL);
  }

  static ends(): ListEnds {
    return { head: NIL, tail: NIL, size: 0 };
  }

  push(p: number, l: ListEnds): void {
    this.prev[p] = l.tail;
    this.next[p] = NIL;
    if (l.tail === NIL) l.head = p;
    else this.next[l.tail] = p;
    l.tail = p;
    l.size++;
  }

  remove(p: number, l: ListEnds): void {
    const a = this.prev[p]!;
    const b = this.next[p]!;
    if (a === NIL) l.head = b;
    else this.next[a] = b;
    if (b === NIL) l.tail = a;
    else this.prev[b] = a;
    this.prev[p] = NIL;
    this.next[p] = NIL;
    l.size--;
  }

  touch(p: number, l: ListEnds): void {
    if (l.tail === p) return;
    this.remove(p, l);
    this.push(p, l);
  }

  metaBytes(): number {
    return this.prev.byteLength + this.next.byteLength;
  }
}
