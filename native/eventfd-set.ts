// A set of eventfds one thread sleeps on: the data-plane worker's kick
// eventfds and its wake eventfd. One epoll instance, edge-triggered, and the
// counters are never read: each write(2) to an eventfd (a guest kick through
// KVM's ioeventfd or QEMU, a command from the main thread) wakes the epoll
// wait queue and queues one event, whether the counter was zero or not. So a
// wake-up costs one epoll_wait(2) instead of poll(2) plus a read(2) per fd
// that fired, and no syscall is made to re-arm anything. (A counter grows by
// one per kick and saturates only after 2^64 - 2 of them; KVM's
// eventfd_signal clamps there rather than failing, a writer's EAGAIN counts
// as done in eventfdWrite.)
//
// The set holds its own dup(2) of every fd it watches: the owner of an fd
// (engine.ts closes kick fds when a ring stops) may close it at any time,
// and an epoll registration belongs to the open file, which the front-end
// still holds; only the set's own fd lets it unregister the file before
// letting go of it, so no stale registration keeps reporting a queue.
import { c, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_EVENT_SIZE, EPOLLET, EPOLLIN, errno, lib } from './libc.js';
import { check, EINTR, ERRNO, SysError } from './errors.js';
import { allocOwned, freeOwned, type Scratch } from './scratch.js';

const ENOSYS = 38;
/**
 * epoll_pwait2 (a struct timespec timeout: sub-millisecond sleeps), or null
 * where libc lacks it (glibc < 2.35) or the kernel said ENOSYS (< 5.11).
 */
type EpollPwait2 = (epfd: number, events: bigint, max: number, timeout: bigint, sigmask: null) => number;
let epollPwait2: EpollPwait2 | null = null;
try {
  epollPwait2 = lib.func('int epoll_pwait2(int epfd, void *events, int maxevents, void *timeout, void *sigmask)') as unknown as EpollPwait2;
} catch {
  epollPwait2 = null;
}

const F_DUPFD_CLOEXEC = 1030;

export class EventfdSet {
  private epfd: number;
  private dups = new Int32Array(0);
  private count = 0;
  private events: Scratch;
  private maxEvents: number;
  private ctl: Scratch;
  /** Entries of the last setFds that could not be watched (dup or epoll_ctl failed): their fds are not waited on. */
  failed = 0;

  constructor(maxEvents = 64) {
    this.epfd = check('epoll_create1', c.epoll_create1(EPOLL_CLOEXEC), errno);
    this.maxEvents = maxEvents;
    this.events = allocOwned(maxEvents * EPOLL_EVENT_SIZE);
    // an epoll_event for epoll_ctl, or the struct timespec (16 bytes) of an epoll_pwait2
    this.ctl = allocOwned(16);
  }

  /**
   * Watches fds[0..count) instead of what was watched before; a ready entry
   * is reported by its index i. An fd that is not open, or cannot be
   * watched, is left out and counted in `failed`. An fd already readable
   * when added is reported by the next wait.
   */
  setFds(fds: Int32Array, count: number): void {
    if (this.epfd < 0) throw new SysError('epoll_ctl', ERRNO.EBADF!, 'the eventfd set is closed');
    if (!Number.isInteger(count) || count < 0 || count > fds.length) throw new RangeError(`count ${count} must be 0..${fds.length}`);
    this.clear();
    if (this.dups.length < count) this.dups = new Int32Array(count);
    if (count > this.maxEvents) {
      freeOwned(this.events);
      this.maxEvents = count;
      this.events = allocOwned(count * EPOLL_EVENT_SIZE);
    }
    const dv = this.ctl.dv;
    let failed = 0;
    for (let i = 0; i < count; i++) {
      this.dups[i] = -1;
      const d = c.fcntl(fds[i]!, F_DUPFD_CLOEXEC, 0) as number;
      if (d < 0) {
        failed++;
        continue;
      }
      dv.setUint32(0, EPOLLIN | EPOLLET, true);
      dv.setUint32(4, i, true);
      dv.setUint32(8, 0, true);
      if ((c.epoll_ctl(this.epfd, EPOLL_CTL_ADD, d, this.ctl.ptr) as number) < 0) {
        c.close(d);
        failed++;
        continue;
      }
      this.dups[i] = d;
    }
    this.count = count;
    this.failed = failed;
  }

  /**
   * Sleeps until a watched eventfd is written or timeoutMs passes (-1:
   * forever). Writes the indexes of the entries that fired to ready[0..n)
   * and returns n (at most ready.length); 0 on timeout or a signal. A
   * fraction of a millisecond is kept (epoll_pwait2, Linux 5.11) where the
   * kernel and libc have it, else rounded up to whole milliseconds.
   */
  wait(timeoutMs: number, ready: Int32Array): number {
    const max = Math.min(ready.length, this.maxEvents);
    if (max === 0) throw new RangeError('ready must have room for one entry');
    let n: number;
    if (timeoutMs > 0 && !Number.isInteger(timeoutMs) && epollPwait2 !== null) {
      const ts = this.ctl.dv;
      const ns = Math.round(timeoutMs * 1e6);
      ts.setBigInt64(0, BigInt(Math.floor(ns / 1e9)), true);
      ts.setBigInt64(8, BigInt(ns % 1e9), true);
      n = epollPwait2(this.epfd, this.events.ptr, max, this.ctl.ptr, null);
      if (n < 0 && errno() === ENOSYS) {
        epollPwait2 = null;
        n = c.epoll_wait(this.epfd, this.events.ptr, max, Math.ceil(timeoutMs)) as number;
      }
    } else n = c.epoll_wait(this.epfd, this.events.ptr, max, timeoutMs < 0 ? -1 : Math.ceil(timeoutMs)) as number;
    if (n < 0) {
      const e = errno();
      if (e === EINTR) return 0;
      throw new SysError('epoll_wait', e);
    }
    const dv = this.events.dv;
    for (let i = 0; i < n; i++) ready[i] = dv.getUint32(i * EPOLL_EVENT_SIZE + 4, true);
    return n;
  }

  /** Stops watching everything (its dups are unregistered and closed). */
  clear(): void {
    for (let i = 0; i < this.count; i++) {
      const d = this.dups[i]!;
      if (d < 0) continue;
      c.epoll_ctl(this.epfd, EPOLL_CTL_DEL, d, null);
      c.close(d);
      this.dups[i] = -1;
    }
    this.count = 0;
  }

  close(): void {
    if (this.epfd < 0) return;
    this.clear();
    c.close(this.epfd);
    this.epfd = -1;
    freeOwned(this.events);
    freeOwned(this.ctl);
  }
}
