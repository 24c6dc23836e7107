// One bit per page of a disk, in a Uint32Array: where tmem-blk keeps a page
// is two of these (block-store.ts), never a JS object per page.
export class PageBitmap {
  readonly pages: number;
  readonly words: Uint32Array;
  /** Bits set now (kept by set/clear, so counts cost nothing). */
  count = 0;

  constructor(pages: number) {
    this.pages = pages;
    this.words = new Uint32Array(Math.ceil(pages / 32));
  }

  has(p: number): boolean {
    return (this.words[p >>> 5]! & (1 << (p & 31))) !== 0;
  }

  set(p: number): void {
    const w = p >>> 5;
    const m = 1 << (p & 31);
    const x = this.words[w]!;
    if ((x & m) === 0) {
      this.words[w] = x | m;
      this.count++;
    }
  }

  clear(p: number): void {
    const w = p >>> 5;
    const m = 1 << (p & 31);
    const x = this.words[w]!;
    if ((x & m) !== 0) {
      this.words[w] = x & ~m;
      this.count--;
    }
  }

  /** The first set bit at or after `from` and below `end`, or -1. Skips empty words whole. */
  next(from: number, end: number): number {
    let p = from;
    while (p < end) {
      const x = this.words[p >>> 5]! >>> (p & 31);
      if (x === 0) {
        p = (p | 31) + 1;
        continue;
      }
      const q = p + (31 - Math.clz32(x & -x));
      return q < end ? q : -1;
    }
    return -1;
  }
}
