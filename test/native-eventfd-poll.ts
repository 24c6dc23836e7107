// native/eventfd.ts and native/poll.ts.
import t from 'tap';
import * as native from '../native/index.js';
import { c, F_GETFL, O_NONBLOCK } from '../native/libc.js';

t.test('eventfd: counter adds up, read resets it, empty read is null', async (t) => {
  const fd = native.eventfd();
  t.teardown(() => native.close(fd));
  t.equal(native.eventfdRead(fd), null, 'EAGAIN on a zero counter');
  native.eventfdWrite(fd);
  native.eventfdWrite(fd, 41n);
  t.equal(native.eventfdRead(fd), 42n);
  t.equal(native.eventfdRead(fd), null);
});

t.test('eventfd: initial value; write to a saturated counter is not an error', async (t) => {
  const fd = native.eventfd(5);
  t.teardown(() => native.close(fd));
  native.eventfdWrite(fd, 0xfffffffffffffffen - 5n); // counter at its maximum
  native.eventfdWrite(fd, 1n); // would block (EAGAIN): already signalled, so fine
  t.equal(native.eventfdRead(fd), 0xfffffffffffffffen);
  t.throws(() => native.eventfdRead(-1), { name: 'SysError', code: 'EBADF', syscall: 'read' });
});

t.test('pollFds: times out with nothing ready', async (t) => {
  const a = native.eventfd();
  const b = native.eventfd();
  t.teardown(() => [a, b].forEach(native.close));
  const fds = Int32Array.of(a, b);
  const rev = Int16Array.of(99, 99);
  const t0 = performance.now();
  t.equal(native.pollFds(fds, 2, rev, 50), 0);
  const dt = performance.now() - t0;
  t.ok(dt >= 45, `waited ~50 ms (${dt.toFixed(1)})`);
  t.same([...rev], [0, 0]);
});

t.test('pollFds: reports exactly the readable fds, only within count', async (t) => {
  const a = native.eventfd();
  const b = native.eventfd();
  const c = native.eventfd(1);
  t.teardown(() => [a, b, c].forEach(native.close));
  native.eventfdWrite(b);
  const fds = Int32Array.of(a, b, c);
  const rev = new Int16Array(3);
  t.equal(native.pollFds(fds, 2, rev, 1000), 1, 'c is ready but beyond count');
  t.same([...rev], [0, 1 /* POLLIN */, 0]);
  t.equal(native.pollFds(fds, 3, rev, 0), 2);
  t.same([...rev], [0, 1, 1]);
  t.throws(() => native.pollFds(fds, 4, rev, 0), RangeError);
});

t.test('pollFds: a socket with data or a hung-up peer is ready', async (t) => {
  const [x, y] = native.socketPair();
  t.teardown(() => native.close(y));
  const fds = Int32Array.of(y);
  const rev = new Int16Array(1);
  t.equal(native.pollFds(fds, 1, rev, 0), 0);
  native.sendMsg(x, Uint8Array.of(1));
  t.equal(native.pollFds(fds, 1, rev, 0), 1);
  native.recvMsg(y, new Uint8Array(4), []);
  native.close(x);
  t.equal(native.pollFds(fds, 1, rev, 0), 1);
  t.ok(rev[0]! & 0x10, 'POLLHUP');
});

t.test('adoptEventfd: an eventfd is made non-blocking; a socket, a memfd or a closed fd is refused', async (t) => {
  // an eventfd made without EFD_NONBLOCK, as a careless front-end might send it
  const blocking = c.eventfd(0, 0) as number;
  const [a, b] = native.socketPair();
  const mfd = native.memfdCreate('not-an-eventfd', 4096n);
  t.teardown(() => [blocking, a, b, mfd].forEach((fd) => native.close(fd)));
  t.notOk((c.fcntl(blocking, F_GETFL, 0) as number) & O_NONBLOCK, 'starts blocking');
  native.adoptEventfd(blocking);
  t.ok((c.fcntl(blocking, F_GETFL, 0) as number) & O_NONBLOCK, 'non-blocking once adopted');
  t.equal(native.eventfdRead(blocking), null, 'an empty read returns at once instead of blocking');
  t.throws(() => native.adoptEventfd(a), { name: 'SysError', code: 'EINVAL', message: /socket:\[\d+\], not an eventfd/ });
  t.throws(() => native.adoptEventfd(mfd), { name: 'SysError', code: 'EINVAL', message: /memfd:not-an-eventfd/ });
  const gone = native.eventfd();
  native.close(gone);
  t.throws(() => native.adoptEventfd(gone), { name: 'SysError', code: 'EBADF' });
});
