// fallocate(2) for tmem-blk's overflow file (host/blk/overflow-file.ts):
// punching a hole gives a discarded or promoted page's disk blocks back to
// the host file system while the file keeps its size (sparse), so a guest's
// discard shows in st_blocks and on the host's free space.
//
// Node's fs has no fallocate, so this is the one koffi call it needs; the
// declaration is local to this module (libc.ts holds the calls the rest of
// native/ shares).
import { lib, errno } from './libc.js';
import { check } from './errors.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
const fallocate = lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as (...a: any[]) => number;

/** linux/falloc.h */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;

/**
 * Deallocates bytes [offset, offset + length) of the file: later reads give
 * zeros, the size is unchanged. Throws SysError (EOPNOTSUPP on a file system
 * without hole punching, EBADF, ...). Offsets are numbers (below 2^53).
 */
export function punchHole(fd: number, offset: number, length: number): void {
  check('fallocate', fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length), errno, `fd ${fd} punch ${offset}+${length}`);
}
