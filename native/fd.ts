// Plain file descriptor calls shared by the other modules.
import { c, errno, F_GETFD, F_GETFL, F_SETFD, F_SETFL, FD_CLOEXEC, O_NONBLOCK, STAT_SIZE } from './libc.js';
import { check, EINTR, SysError } from './errors.js';
import { scratch } from './scratch.js';

/**
 * close(2). EINTR is not retried: on Linux the fd is released even then, and
 * retrying could close an fd another thread has just been given.
 */
export function close(fd: number): void {
  if (c.close(fd) < 0) {
    const e = errno();
    if (e !== EINTR) throw new SysError('close', e, `fd ${fd}`);
  }
}

/** Closes every fd, ignoring errors: for cleanup paths that are already failing. */
export function closeQuietly(fds: Iterable<number>): void {
  for (const fd of fds) c.close(fd);
}

/** Sets O_NONBLOCK and FD_CLOEXEC on an fd this process did not create (inherited). */
export function setNonblockCloexec(fd: number): void {
  const fl = check('fcntl', c.fcntl(fd, F_GETFL, 0), errno, `F_GETFL fd ${fd}`);
  if (!(fl & O_NONBLOCK)) check('fcntl', c.fcntl(fd, F_SETFL, fl | O_NONBLOCK), errno, `F_SETFL fd ${fd}`);
  const fdfl = check('fcntl', c.fcntl(fd, F_GETFD, 0), errno, `F_GETFD fd ${fd}`);
  if (!(fdfl & FD_CLOEXEC)) check('fcntl', c.fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC), errno, `F_SETFD fd ${fd}`);
}

/** S_IFMT bits of st_mode, and the regular-file type (memfds are regular files). */
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;

/**
 * Identity, type and size of an open file (fstat(2), x86_64 struct stat:
 * st_dev at 0, st_ino at 8, st_mode at 24, st_size at 48).
 */
export function fstat(fd: number): { dev: bigint; ino: bigint; mode: number; size: bigint } {
  const s = scratch(STAT_SIZE);
  check('fstat', c.fstat(fd, s.ptr), errno, `fd ${fd}`);
  return { dev: s.dv.getBigUint64(0, true), ino: s.dv.getBigUint64(8, true), mode: s.dv.getUint32(24, true), size: s.dv.getBigInt64(48, true) };
}
