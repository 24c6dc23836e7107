// Per-thread native memory for building C structs (msghdr, sockaddr_un,
// pollfd arrays, the 8 bytes of an eventfd read) without allocating on every
// call. Synchronous FFI calls never nest and JS is single-threaded per
// isolate, so one region per module instance (= per thread) is enough: a
// wrapper fills it, makes its call, and copies out what it needs before
// returning. Async calls (FdWatcher) must use memory of their own.
import koffi from 'koffi';

export interface Scratch {
  readonly ptr: bigint;
  readonly size: number;
  readonly u8: Uint8Array;
  readonly dv: DataView;
}

let current: Scratch | null = null;

function allocate(size: number): Scratch {
  const ptr = koffi.alloc('uint8_t', size) as bigint;
  const ab = koffi.view(ptr, size);
  return { ptr, size, u8: new Uint8Array(ab), dv: new DataView(ab) };
}

/** A region of at least `size` bytes (contents undefined). Grows by doubling; the old region is freed. */
export function scratch(size: number): Scratch {
  if (current !== null && current.size >= size) return current;
  let n = current?.size ?? 4096;
  while (n < size) n *= 2;
  if (current !== null) koffi.free(current.ptr);
  current = allocate(n);
  return current;
}

/** Native memory owned by the caller (freed with freeOwned), e.g. for an async call's output. */
export function allocOwned(size: number): Scratch {
  return allocate(size);
}

export function freeOwned(s: Scratch): void {
  koffi.free(s.ptr);
}
