// native/eventfd-set.ts: the edge-triggered set of eventfds the data-plane
// worker sleeps on (one epoll_wait per wake-up, counters never read).
import t from 'tap';
import * as native from '../native/index.js';
import { closeAtEnd } from './native/harness.js';
import { c, F_GETFD } from '../native/libc.js';

function fresh(n: number): number[] {
  return Array.from({ length: n }, () => native.eventfd());
}

function readyOf(set: native.EventfdSet, timeoutMs: number, room = 8): number[] {
  const ready = new Int32Array(room);
  const n = set.wait(timeoutMs, ready);
  return [...ready.subarray(0, n)].sort((a, b) => a - b);
}

t.test('each write is reported once, by index, without reading the counter', async (t) => {
  const fds = fresh(3);
  const set = closeAtEnd(t, new native.EventfdSet(), ...fds);
  set.setFds(Int32Array.from(fds), 3);
  t.equal(set.failed, 0);
  t.same(readyOf(set, 0), [], 'nothing written: nothing ready');
  native.eventfdWrite(fds[1]!);
  t.same(readyOf(set, 1000), [1], 'the written fd, by its index');
  t.same(readyOf(set, 0), [], 'reported once (edge), though its counter is still 1');
  native.eventfdWrite(fds[1]!);
  t.same(readyOf(set, 1000), [1], 'a second write on a non-zero counter is a new event');
  native.eventfdWrite(fds[0]!);
  native.eventfdWrite(fds[2]!);
  native.eventfdWrite(fds[2]!);
  t.same(readyOf(set, 1000), [0, 2], 'two fds written, one of them twice: each reported once');
  t.equal(native.eventfdRead(fds[1]!), 2n, 'the counters were never read by the set');
});

t.test('an fd already signalled when added is reported; a timeout returns 0', async (t) => {
  const a = native.eventfd(1);
  const b = native.eventfd();
  const set = closeAtEnd(t, new native.EventfdSet(), a, b);
  set.setFds(Int32Array.of(a, b), 2);
  t.same(readyOf(set, 1000), [0]);
  const t0 = performance.now();
  t.same(readyOf(set, 30), []);
  t.ok(performance.now() - t0 >= 25, 'waited for the timeout');
});

t.test('the owner may close its fds: the set keeps its own, and forgets the old ones on the next setFds', async (t) => {
  const a = native.eventfd();
  // the front-end's copy of the same eventfd (the file stays open after the daemon closes its fd)
  const peer = c.fcntl(a, 1030 /* F_DUPFD_CLOEXEC */, 0) as number;
  const b = native.eventfd();
  const set = closeAtEnd(t, new native.EventfdSet(), peer, b);
  set.setFds(Int32Array.of(a), 1);
  native.close(a); // engine.ts closes a kick fd when the ring stops
  native.eventfdWrite(peer);
  t.same(readyOf(set, 1000), [0], 'still watched through the set\'s own fd');
  set.setFds(Int32Array.of(b), 1);
  native.eventfdWrite(peer);
  t.same(readyOf(set, 50), [], 'the old file is not reported any more (no stale registration)');
  native.eventfdWrite(b);
  t.same(readyOf(set, 1000), [0], 'the new set works');
});

t.test('an fd that cannot be watched is left out and counted; the others work', async (t) => {
  const a = native.eventfd();
  const set = closeAtEnd(t, new native.EventfdSet(), a);
  const notOpen = 1_000_000;
  t.equal(c.fcntl(notOpen, F_GETFD, 0), -1, 'fd 1000000 is not open');
  set.setFds(Int32Array.of(notOpen, a), 2);
  t.equal(set.failed, 1);
  native.eventfdWrite(a);
  t.same(readyOf(set, 1000), [1]);
  set.setFds(Int32Array.of(a), 1);
  t.equal(set.failed, 0, 'counted per setFds');
  t.throws(() => set.setFds(Int32Array.of(a), 2), RangeError, 'count beyond the array');
});

t.test('more ready entries than room: at most ready.length per wait, the rest at the next', async (t) => {
  const fds = fresh(70);
  const set = closeAtEnd(t, new native.EventfdSet(), ...fds);
  set.setFds(Int32Array.from(fds), fds.length);
  for (const fd of fds) native.eventfdWrite(fd);
  const seen = new Set<number>();
  const first = readyOf(set, 1000, 64);
  t.equal(first.length, 64);
  first.forEach((i) => seen.add(i));
  for (const i of readyOf(set, 1000, 64)) seen.add(i);
  t.equal(seen.size, 70, 'every index reported once over two waits');
  t.throws(() => set.wait(0, new Int32Array(0)), RangeError);
});

t.test('close is final and idempotent; its fds are closed', async (t) => {
  const a = native.eventfd();
  t.teardown(() => native.close(a));
  const set = new native.EventfdSet();
  set.setFds(Int32Array.of(a), 1);
  const before = native.fstat(a);
  set.close();
  set.close();
  t.throws(() => set.setFds(Int32Array.of(a), 1), { name: 'SysError', code: 'EBADF' });
  t.same(native.fstat(a), before, 'the owner\'s fd is untouched');
});

t.test('a timeout of a fraction of a millisecond (epoll_pwait2): a written fd is reported, an idle set times out with 0', async (t) => {
  const fds = fresh(2);
  const set = closeAtEnd(t, new native.EventfdSet(), ...fds);
  set.setFds(Int32Array.from(fds), 2);
  t.same(readyOf(set, 0.1), [], 'nothing written: back with nothing after 0.1 ms');
  native.eventfdWrite(fds[1]!);
  t.same(readyOf(set, 0.25), [1], 'the written fd');
  t.same(readyOf(set, 2.5), [], 'a fractional timeout above a millisecond too');
});
