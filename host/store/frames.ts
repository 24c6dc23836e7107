// Page frames: the bytes of stored pages, in large preallocated chunks.
//
// Frame number f is the page record f of the handle index (one frame per
// stored page, 1:1), so the index's free list of page records is also the
// free list of frames. Chunks hold CHUNK_PAGES frames (256 MiB, well under
// the 1 GiB limit of one buffer) and are allocated the first time one of
// their frames is used, so a large capacity costs nothing until it fills.
import { TMEM_PAGE_SIZE } from '../../shared/abi.js';

export const PAGE_SIZE = TMEM_PAGE_SIZE;
const PAGE_SHIFT = 12;
const CHUNK_SHIFT = 16;
const CHUNK_PAGES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_PAGES - 1;

export class FrameStore {
  readonly capacity: number;
  private readonly chunks: (Uint8Array | undefined)[];

  constructor(capacityPages: number) {
    this.capacity = capacityPages;
    this.chunks = new Array<Uint8Array | undefined>(Math.ceil(capacityPages / CHUNK_PAGES)).fill(undefined);
  }

  /** The chunk holding frame f, allocated on first use (the last chunk only as large as needed). */
  private chunk(f: number): Uint8Array {
    const c = f >>> CHUNK_SHIFT;
    let b = this.chunks[c];
    if (b === undefined) {
      const pages = Math.min(CHUNK_PAGES, this.capacity - c * CHUNK_PAGES);
      b = new Uint8Array(pages << PAGE_SHIFT);
      this.chunks[c] = b;
    }
    return b;
  }

  /** Copies one page from src[srcOffset..] into frame f. */
  copyIn(f: number, src: Uint8Array, srcOffset: number): void {
    this.chunk(f).set(src.subarray(srcOffset, srcOffset + PAGE_SIZE), (f & CHUNK_MASK) << PAGE_SHIFT);
  }

  /** Copies frame f into dst[dstOffset..]. */
  copyOut(f: number, dst: Uint8Array, dstOffset: number): void {
    const o = (f & CHUNK_MASK) << PAGE_SHIFT;
    dst.set(this.chunk(f).subarray(o, o + PAGE_SIZE), dstOffset);
  }

  /**
   * Writes to frame f (a zero into bytes that are still zero) so that the OS
   * maps its page now rather than on the PUT that first fills it.
   */
  prefault(f: number): void {
    this.chunk(f)[(f & CHUNK_MASK) << PAGE_SHIFT] = 0;
  }

  /** Bytes of frame memory allocated so far. */
  allocatedBytes(): number {
    let n = 0;
    for (const b of this.chunks) if (b !== undefined) n += b.byteLength;
    return n;
  }
}
