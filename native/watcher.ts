// Readiness of fds delivered to the main thread's event loop, without Node
// ever reading them (Node 20 has no public fd watcher, and net.Socket would
// consume the bytes and drop SCM_RIGHTS fds).
//
// How: one epoll fd; at most one outstanding koffi async call of
// epoll_wait(-1) on libuv's threadpool; its completion callback dispatches to
// the watchers on the main thread. Every watched fd is EPOLLONESHOT and is
// re-armed after its callback, so a callback that does not drain its fd is
// simply called again (level-triggered) and an fd never fires twice while
// its callback might still be deciding to unwatch it.
//
// Keeping the process alive: an outstanding async call holds the event loop
// open (it is a napi_async_work). So there is no outstanding wait while the
// watch set is empty, and unwatching the last fd or close() writes a wake
// eventfd (in the epoll set) so the wait returns at once instead of pinning
// the loop. Adding an fd needs no wake: epoll_ctl on an epoll fd that another
// thread waits on takes effect for that wait.
//
// Cost: the wait occupies one libuv threadpool thread (4 by default) for as
// long as anything is watched. Use one FdWatcher per process.
import { allocOwned, freeOwned, type Scratch, scratch } from './scratch.js';
import {
  c,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_EVENT_SIZE,
  EPOLLIN,
  EPOLLONESHOT,
  errno,
} from './libc.js';
import { check, EINTR, SysError } from './errors.js';
import { closeQuietly } from './fd.js';
import { eventfd, eventfdRead, eventfdWrite } from './eventfd.js';

export { EPOLLERR, EPOLLHUP, EPOLLIN } from './libc.js';

/** Events taken per epoll_wait. */
const MAX_EVENTS = 64;
/** epoll data of the wake eventfd: no watched fd has generation 0. */
const WAKE_GEN = 0;

export type FdWatcherLog = (msg: string, err?: unknown) => void;

interface Watch {
  readonly fd: number;
  /** Distinguishes this watch from an earlier one of the same fd number (stale events). */
  readonly gen: number;
  readonly onReady: (events: number) => void;
}

export class FdWatcher {
  private readonly epfd: number;
  private readonly wakeFd: number;
  private readonly events: Scratch;
  private readonly watches = new Map<number, Watch>();
  private readonly log: FdWatcherLog;
  private nextGen = 1;
  private waiting = false;
  private closed = false;
  private freed = false;
  /** Pending retry after a failed epoll_wait (never expected; avoids a hot loop of failures). */
  private retry: NodeJS.Timeout | null = null;

  constructor(log?: FdWatcherLog) {
    this.log = log ?? ((msg, err) => console.error(`FdWatcher: ${msg}`, err ?? ''));
    this.epfd = check('epoll_create1', c.epoll_create1(EPOLL_CLOEXEC), errno);
    try {
      this.wakeFd = eventfd(0);
    } catch (e) {
      closeQuietly([this.epfd]);
      throw e;
    }
    try {
      this.ctl(EPOLL_CTL_ADD, this.wakeFd, EPOLLIN, WAKE_GEN);
    } catch (e) {
      closeQuietly([this.epfd, this.wakeFd]);
      throw e;
    }
    // Owned memory: the threadpool thread writes here while JS goes on using scratch.
    this.events = allocOwned(MAX_EVENTS * EPOLL_EVENT_SIZE);
  }

  /** Number of fds watched. */
  get size(): number {
    return this.watches.size;
  }

  /**
   * Calls onReady(epoll events: EPOLLIN, EPOLLHUP, EPOLLERR bits) on the event
   * loop whenever `fd` is readable or hung up, until unwatch(fd). The callback
   * should read what it wants; if it leaves the fd readable it is called again.
   */
  watch(fd: number, onReady: (events: number) => void): void {
    if (this.closed) throw new Error('FdWatcher: watch() after close()');
    if (this.watches.has(fd)) throw new Error(`FdWatcher: fd ${fd} is already watched`);
    const gen = this.nextGen;
    this.nextGen = gen >= 0xffffffff ? 1 : gen + 1;
    this.ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLONESHOT, gen);
    this.watches.set(fd, { fd, gen, onReady });
    this.startWait();
  }

  /** Stops watching `fd` (no callback after this returns). Unknown fds are ignored. Call it before closing the fd. */
  unwatch(fd: number): void {
    if (!this.watches.delete(fd)) return;
    // EBADF/ENOENT: the fd was already closed, which removed it from the epoll set.
    c.epoll_ctl(this.epfd, EPOLL_CTL_DEL, fd, null);
    if (this.watches.size === 0 && this.waiting) eventfdWrite(this.wakeFd);
  }

  /** Stops all watching and releases the epoll fd (at once, or when the outstanding wait returns, which the wake makes immediate). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watches.clear();
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    if (this.waiting) eventfdWrite(this.wakeFd);
    else this.free();
  }

  private free(): void {
    if (this.freed) return;
    this.freed = true;
    closeQuietly([this.epfd, this.wakeFd]);
    freeOwned(this.events);
  }

  /** epoll_ctl with a packed 12-byte epoll_event: data = fd (low 32 bits) | gen (high 32 bits). */
  private ctl(op: number, fd: number, events: number, gen: number): void {
    const s = scratch(EPOLL_EVENT_SIZE);
    s.dv.setUint32(0, events >>> 0, true);
    s.dv.setInt32(4, fd, true);
    s.dv.setUint32(8, gen, true);
    if (c.epoll_ctl(this.epfd, op, fd, s.ptr) < 0) throw new SysError('epoll_ctl', errno(), `fd ${fd}`);
  }

  private startWait(): void {
    if (this.waiting || this.closed || this.retry !== null || this.watches.size === 0) return;
    this.waiting = true;
    try {
      c.epoll_wait.async(this.epfd, this.events.ptr, MAX_EVENTS, -1, (err: unknown, n: number) => this.onWaitDone(err, n));
    } catch (e) {
      this.waiting = false;
      throw e;
    }
  }

  private onWaitDone(err: unknown, n: number): void {
    this.waiting = false;
    if (this.closed) {
      this.free();
      return;
    }
    let failed = false;
    try {
      if (err) {
        failed = true;
        this.log('epoll_wait failed; retrying in 100 ms', err);
      } else if (n < 0) {
        const e = errno(); // koffi restores the async call's errno for this callback
        if (e !== EINTR) {
          failed = true;
          this.log('epoll_wait failed; retrying in 100 ms', new SysError('epoll_wait', e));
        }
      } else {
        this.dispatch(n);
      }
    } catch (e) {
      this.log('dispatch failed', e);
    }
    if (this.closed) this.free();
    else if (failed) {
      this.retry = setTimeout(() => {
        this.retry = null;
        this.startWait();
      }, 100);
    } else this.startWait();
  }

  private dispatch(n: number): void {
    // Copy the events out first: callbacks may watch, unwatch or close.
    const dv = this.events.dv;
    const fired: { ev: number; fd: number; gen: number }[] = [];
    for (let i = 0; i < n; i++) {
      const o = i * EPOLL_EVENT_SIZE;
      fired.push({ ev: dv.getUint32(o, true), fd: dv.getInt32(o + 4, true), gen: dv.getUint32(o + 8, true) });
    }
    for (const { ev, fd, gen } of fired) {
      if (this.closed) return;
      if (gen === WAKE_GEN) {
        eventfdRead(this.wakeFd);
        continue;
      }
      const w = this.watches.get(fd);
      if (w === undefined || w.gen !== gen) continue; // unwatched (and maybe re-watched) since
      try {
        w.onReady(ev);
      } catch (e) {
        this.log(`callback for fd ${fd} threw`, e);
      }
      if (this.closed || this.watches.get(fd) !== w) continue;
      try {
        this.ctl(EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLONESHOT, gen);
      } catch (e) {
        // Typically EBADF: the fd was closed without unwatch. Forget it.
        this.watches.delete(fd);
        this.log(`cannot re-arm fd ${fd}; no longer watched`, e);
      }
    }
  }
}
