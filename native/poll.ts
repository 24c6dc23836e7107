// Blocking poll(2) for the data-plane worker's notify mode: the worker sleeps
// on its wake eventfd and the rings' kick eventfds. Blocking a worker thread
// is the point; never call this with a timeout on the main thread.
import { c, errno, POLLFD_SIZE, POLLIN } from './libc.js';
import { EINTR, SysError } from './errors.js';
import { scratch } from './scratch.js';

/**
 * Waits until one of fds[0..count) is readable (POLLIN) or timeoutMs passes
 * (-1: forever). Fills revents[0..count) (0 for fds not ready; POLLERR,
 * POLLHUP, POLLNVAL show up as well) and returns how many are ready; 0 on
 * timeout or when a signal interrupted the wait.
 */
export function pollFds(fds: Int32Array, count: number, revents: Int16Array, timeoutMs: number): number {
  if (!Number.isInteger(count) || count < 0 || count > fds.length || count > revents.length) {
    throw new RangeError(`count ${count} must be 0..min(fds.length ${fds.length}, revents.length ${revents.length})`);
  }
  const s = scratch(count * POLLFD_SIZE || 8);
  const { dv } = s;
  for (let i = 0; i < count; i++) {
    const o = i * POLLFD_SIZE;
    dv.setInt32(o, fds[i]!, true);
    dv.setInt16(o + 4, POLLIN, true);
    dv.setInt16(o + 6, 0, true);
  }
  const n = c.poll(s.ptr, count, Math.trunc(timeoutMs)) as number;
  if (n < 0) {
    const e = errno();
    revents.fill(0, 0, count);
    if (e === EINTR) return 0;
    throw new SysError('poll', e, `${count} fds`);
  }
  for (let i = 0; i < count; i++) revents[i] = dv.getInt16(i * POLLFD_SIZE + 6, true);
  return n;
}
