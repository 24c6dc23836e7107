// eventfds: the kick/call/err notifications of virtio rings and the data
// plane's wake signal. Reads and writes go through the per-thread scratch
// region (8 bytes), so the hot path allocates nothing.
import { readlinkSync } from 'node:fs';
import { c, EFD_CLOEXEC, EFD_NONBLOCK, errno } from './libc.js';
import { check, EAGAIN, EINTR, ERRNO, SysError } from './errors.js';
import { setNonblockCloexec } from './fd.js';
import { scratch } from './scratch.js';

/** A new eventfd (NONBLOCK, CLOEXEC) with counter `initial`. */
export function eventfd(initial = 0): number {
  return check('eventfd', c.eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC), errno, `initial ${initial}`);
}

/** Reads and resets the counter: its value, or null when it is zero (EAGAIN). */
export function eventfdRead(fd: number): bigint | null {
  const s = scratch(8);
  for (;;) {
    const n = c.read(fd, s.ptr, 8) as number;
    if (n === 8) return s.dv.getBigUint64(0, true);
    if (n >= 0) throw new SysError('read', 0, `eventfd ${fd}: short read of ${n} bytes`);
    const e = errno();
    if (e === EAGAIN) return null;
    if (e !== EINTR) throw new SysError('read', e, `eventfd ${fd}`);
  }
}

/**
 * Adds `value` to the counter. EAGAIN (the counter would pass 2^64-2) is not
 * an error: the fd is then already readable, which is all a notification needs.
 */
export function eventfdWrite(fd: number, value = 1n): void {
  const s = scratch(8);
  s.dv.setBigUint64(0, value, true);
  for (;;) {
    const n = c.write(fd, s.ptr, 8) as number;
    if (n === 8) return;
    if (n >= 0) throw new SysError('write', 0, `eventfd ${fd}: short write of ${n} bytes`);
    const e = errno();
    if (e === EAGAIN) return;
    if (e !== EINTR) throw new SysError('write', e, `eventfd ${fd}`);
  }
}

/**
 * Takes an fd a peer sent as an eventfd (vhost-user kick, call, err): checks
 * that it is one and makes it non-blocking. A blocking fd would let the peer
 * park the data-plane thread in read(2) or write(2) (a drained kick, a full
 * call counter, a pipe nobody reads), and a regular file is always readable
 * (a busy loop); both stall every guest, so they are refused.
 */
export function adoptEventfd(fd: number): void {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    throw new SysError('readlink', ERRNO.EBADF!, `fd ${fd} is not open`);
  }
  if (target !== 'anon_inode:[eventfd]') throw new SysError('eventfd', ERRNO.EINVAL!, `fd ${fd} is ${target}, not an eventfd`);
  setNonblockCloexec(fd);
}
