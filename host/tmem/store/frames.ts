// Page frames: the bytes of stored pages, in large preallocated chunks.
//
// Frame number f is the page record f of the handle index (one frame per
// stored page, 1:1), so the index's free list of page records is also the
// free list of frames. Chunks hold CHUNK_PAGES frames (256 MiB, well under
// the 1 GiB limit of one buffer) and are allocated the first time one of
// their frames is used, so a large capacity costs nothing until it fills.
// That allocation can fail (out of memory: RangeError); ensure() and
// prefault() report it instead of throwing, so the store can refuse the PUT.
import { TMEM_PAGE_SIZE } from '../../../shared/abi.js';

export const PAGE_SIZE = TMEM_PAGE_SIZE;
const PAGE_SHIFT = 12;
const CHUNK_SHIFT = 16;
const CHUNK_PAGES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_PAGES - 1;

/** Allocates one chunk of bytes (zeroed); throws when out of memory. */
export type ChunkAllocator = (bytes: number) => Uint8Array;

const newChunk: ChunkAllocator = (bytes) => new Uint8Array(bytes);

export class FrameStore {
  readonly capacity: number;
  private readonly chunks: (Uint8Array | undefined)[];
  private readonly alloc: ChunkAllocator;

  constructor(capacityPages: number, alloc: ChunkAllocator = newChunk) {
    this.capacity = capacityPages;
    this.alloc = alloc;
    this.chunks = new Array<Uint8Array | undefined>(Math.ceil(capacityPages / CHUNK_PAGES)).fill(undefined);
  }

  /**
   * Makes sure the chunk holding frame f exists (allocated on first use, the
   * last chunk only as large as needed); false when it cannot be allocated.
   * copyIn and copyOut need it for their frame.
   */
  ensure(f: number): boolean {
    const c = f >>> CHUNK_SHIFT;
    if (this.chunks[c] !== undefined) return true;
    const pages = Math.min(CHUNK_PAGES, this.capacity - c * CHUNK_PAGES);
    try {
      this.chunks[c] = this.alloc(pages << PAGE_SHIFT);
    } catch {
      return false; // out of memory (RangeError): the caller refuses the page
    }
    return true;
  }

  /** Copies one page from src[srcOffset..] into frame f (its chunk exists: ensure). */
  copyIn(f: number, src: Uint8Array, srcOffset: number): void {
    this.chunks[f >>> CHUNK_SHIFT]!.set(src.subarray(srcOffset, srcOffset + PAGE_SIZE), (f & CHUNK_MASK) << PAGE_SHIFT);
  }

  /** Copies frame f (a stored page, so its chunk exists) into dst[dstOffset..]. */
  copyOut(f: number, dst: Uint8Array, dstOffset: number): void {
    const o = (f & CHUNK_MASK) << PAGE_SHIFT;
    dst.set(this.chunks[f >>> CHUNK_SHIFT]!.subarray(o, o + PAGE_SIZE), dstOffset);
  }

  /**
   * Writes to frame f (a zero into bytes that are still zero) so that the OS
   * maps its page now rather than on the PUT that first fills it; false
   * when its chunk cannot be allocated.
   */
  prefault(f: number): boolean {
    if (!this.ensure(f)) return false;
    this.chunks[f >>> CHUNK_SHIFT]![(f & CHUNK_MASK) << PAGE_SHIFT] = 0;
    return true;
  }

  /** Bytes of frame memory allocated so far. */
  allocatedBytes(): number {
    let n = 0;
    for (const b of this.chunks) if (b !== undefined) n += b.byteLength;
    return n;
  }
}
