// The page cache, for tmem-blk's overflow file (host/blk/overflow-file.ts):
// whether a page of a file can be read without waiting for the disk, and
// asking the kernel to start reading it in the background.
//
// Why: the overflow file is read on the one vring worker that serves every
// guest. A read the page cache cannot answer waits for the disk (100 µs to
// milliseconds), and every other guest waits with it (README, "Beside
// tmem-blk's overflow file"). preadv2(RWF_NOWAIT) answers from the cache or
// fails with EAGAIN at once (Linux 4.14+ for buffered reads on ext4, xfs,
// btrfs; tmpfs pages are always in memory); posix_fadvise(WILLNEED) starts
// the read and returns without waiting for it. The device then parks the
// request (host/vhost-user/device.ts, HANDLE_LATER) and serves the others.
//
// Node's fs has neither call, so they are declared here, local to this
// module as fallocate.ts does.
import { lib, errno, IOVEC_SIZE } from './libc.js';
import { allocOwned, type Scratch } from './scratch.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
const preadv2 = lib.func('intptr_t preadv2(int fd, void *iov, int iovcnt, int64_t offset, int flags)') as (...a: any[]) => number;
const posixFadvise = lib.func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)') as (...a: any[]) => number;

/** linux/fs.h: fail with EAGAIN instead of waiting for I/O. */
export const RWF_NOWAIT = 0x08;
/** fcntl.h */
export const POSIX_FADV_WILLNEED = 3;
export const POSIX_FADV_DONTNEED = 4;
const EAGAIN = 11;
const EOPNOTSUPP = 95;

const PAGE = 4096;

/** One iovec and the page it points at, per thread (synchronous calls never nest). */
let region: Scratch | null = null;
function pageRegion(): Scratch {
  if (region === null) {
    region = allocOwned(IOVEC_SIZE + PAGE);
    region.dv.setBigUint64(0, region.ptr + BigInt(IOVEC_SIZE), true);
    region.dv.setBigUint64(8, BigInt(PAGE), true);
  }
  return region;
}

/**
 * Whether the 4096 bytes at `offset` of the file can be read now without
 * waiting for the disk: 'cached' (a whole page came from the page cache),
 * 'uncached' (EAGAIN, or only part of it was cached), 'unsupported' (the
 * file system does not do RWF_NOWAIT: EOPNOTSUPP) or 'error' (any other
 * failure, or the end of the file: the caller's real read reports it). The
 * bytes read are discarded.
 */
export function pageCached(fd: number, offset: number): 'cached' | 'uncached' | 'unsupported' | 'error' {
  const r = pageRegion();
  const n = preadv2(fd, r.ptr, 1, offset, RWF_NOWAIT);
  if (n === PAGE) return 'cached';
  if (n > 0) return 'uncached';
  if (n === 0) return 'error';
  const e = errno();
  return e === EAGAIN ? 'uncached' : e === EOPNOTSUPP ? 'unsupported' : 'error';
}

/** posix_fadvise; returns 0 or the error number (it does not set errno). Advice only: callers go on whatever it says. */
export function fadvise(fd: number, offset: number, length: number, advice: number): number {
  return posixFadvise(fd, offset, length, advice);
}
