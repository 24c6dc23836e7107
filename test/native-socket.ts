// native/socket.ts against the real kernel: round trips, SCM_RIGHTS, EOF, EAGAIN.
import t, { type Test } from 'tap';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../native/index.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;
const bytes = (s: string) => new Uint8Array(Buffer.from(s));
const text = (b: Uint8Array, n: number) => Buffer.from(b.subarray(0, n)).toString();

/** A socket listening at a path in a new directory; both gone at the test's end. */
function listening(t: Test): { path: string; l: number } {
  const dir = mkdtempSync(join(tmpdir(), 'native-sock-'));
  const path = join(dir, 's');
  const l = native.listenUnix(path);
  t.teardown(() => {
    native.close(l);
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, l };
}

/** Writes `tag` into a memfd through fd `a` (write via mmap) and checks it through fd `b`. */
function sameFile(a: number, b: number): boolean {
  const sa = native.fstat(a);
  const sb = native.fstat(b);
  return sa.dev === sb.dev && sa.ino === sb.ino;
}

t.test('socketpair round trip', async (t) => {
  const [a, b] = native.socketPair();
  t.teardown(() => [a, b].forEach(native.close));
  t.equal(native.sendMsg(a, bytes('hello')), 5);
  const buf = new Uint8Array(64);
  const fds: number[] = [];
  t.equal(native.recvMsg(b, buf, fds), 5);
  t.equal(text(buf, 5), 'hello');
  t.same(fds, []);
});

t.test('listenUnix + connectUnix + acceptConnection round trip both ways', async (t) => {
  const { path, l } = listening(t);
  t.equal(native.acceptConnection(l), null, 'nothing pending: null');
  native.checkListeningUnixSocket(l);
  const client = native.connectUnix(path);
  const server = native.acceptConnection(l);
  t.type(server, 'number');
  t.teardown(() => [client, server!].forEach(native.close));
  native.sendMsg(client, bytes('ping'));
  const buf = new Uint8Array(16);
  t.equal(native.recvMsg(server!, buf, []), 4);
  t.equal(text(buf, 4), 'ping');
  native.sendMsg(server!, bytes('pong!'));
  t.equal(native.recvMsg(client, buf, []), 5);
  t.equal(text(buf, 5), 'pong!');
});

t.test('checkListeningUnixSocket rejects a connected socket and a non-socket', async (t) => {
  const [a, b] = native.socketPair();
  const efd = native.eventfd();
  t.teardown(() => [a, b, efd].forEach(native.close));
  t.throws(() => native.checkListeningUnixSocket(a), { name: 'SysError', code: 'EINVAL' });
  t.throws(() => native.checkListeningUnixSocket(efd), { name: 'SysError', code: 'ENOTSOCK' });
});

t.test('listenUnix on a path in use fails with EADDRINUSE', async (t) => {
  const { path } = listening(t);
  t.throws(() => native.listenUnix(path), { name: 'SysError', code: 'EADDRINUSE', syscall: 'bind' });
  t.throws(() => native.listenUnix('x'.repeat(200)), { code: 'ENAMETOOLONG' });
});

t.test('passes 1 fd with SCM_RIGHTS: same file, CLOEXEC', async (t) => {
  const [a, b] = native.socketPair();
  const mfd = native.memfdCreate('one', 4096n);
  t.teardown(() => [a, b, mfd].forEach(native.close));
  native.sendMsg(a, bytes('x'), [mfd]);
  const fds: number[] = [];
  t.equal(native.recvMsg(b, new Uint8Array(8), fds), 1);
  t.equal(fds.length, 1);
  t.not(fds[0], mfd, 'a new fd number');
  t.ok(sameFile(fds[0]!, mfd), 'refers to the same memfd');
  native.close(fds[0]!);
});

t.test('passes 32 fds with SCM_RIGHTS: each refers to its file, data visible through them', async (t) => {
  const [a, b] = native.socketPair();
  const sent: number[] = [];
  for (let i = 0; i < 32; i++) sent.push(native.memfdCreate(`m${i}`, 4096n));
  t.teardown(() => [a, b, ...sent].forEach(native.close));
  native.sendMsg(a, bytes('32 fds'), sent);
  const fds: number[] = [];
  t.equal(native.recvMsg(b, new Uint8Array(64), fds), 6);
  t.equal(fds.length, 32);
  for (let i = 0; i < 32; i++) {
    t.ok(sameFile(fds[i]!, sent[i]!), `fd ${i} in order`);
    // Write through the sender's fd mapping, read through the receiver's.
    const ms = native.mmapShared(sent[i]!, 4096n, 0n);
    const mr = native.mmapShared(fds[i]!, 4096n, 0n);
    ms.windows[0]!.bytes[7] = i + 1;
    t.equal(mr.windows[0]!.bytes[7], i + 1);
    native.munmap(ms);
    native.munmap(mr);
  }
  fds.forEach(native.close);
});

t.test('fds of consecutive messages arrive in order, with their bytes', async (t) => {
  // The kernel never merges messages that carry fds into one recvmsg, so
  // receive until both bytes are in and check every fd.
  const [a, b] = native.socketPair();
  const e1 = native.eventfd();
  const e2 = native.eventfd();
  t.teardown(() => [a, b, e1, e2].forEach(native.close));
  native.sendMsg(a, bytes('a'), [e1]);
  native.sendMsg(a, bytes('b'), [e2, e1]);
  const fds: number[] = [];
  const buf = new Uint8Array(8);
  let got = 0;
  while (got < 2) got += native.recvMsg(b, buf, fds) ?? 0;
  t.equal(fds.length, 3);
  t.ok(sameFile(fds[0]!, e1) && sameFile(fds[1]!, e2) && sameFile(fds[2]!, e1));
  fds.forEach(native.close);
});

t.test('more fds than the receiver allows: MSG_CTRUNC error, no fd leaked', async (t) => {
  const [a, b] = native.socketPair();
  const sent: number[] = [];
  for (let i = 0; i < 8; i++) sent.push(native.eventfd());
  t.teardown(() => [a, b, ...sent].forEach(native.close));
  native.sendMsg(a, bytes('too many'), sent);
  const before = openFds();
  const fds: number[] = [];
  t.throws(() => native.recvMsg(b, new Uint8Array(64), fds, 4), { name: 'SysError', code: 'EMSGSIZE', syscall: 'recvmsg', message: /MSG_CTRUNC/ });
  t.same(fds, [], 'nothing handed out');
  t.equal(openFds(), before, 'the fds that arrived were closed');
});

t.test('EOF: recvMsg returns 0 once the peer closed', async (t) => {
  const [a, b] = native.socketPair();
  t.teardown(() => native.close(b));
  native.sendMsg(a, bytes('last'));
  native.close(a);
  const buf = new Uint8Array(16);
  t.equal(native.recvMsg(b, buf, []), 4);
  t.equal(native.recvMsg(b, buf, []), 0);
});

t.test('EAGAIN: recvMsg on an empty non-blocking socket returns null', async (t) => {
  const [a, b] = native.socketPair(true);
  t.teardown(() => [a, b].forEach(native.close));
  t.equal(native.recvMsg(b, new Uint8Array(16), []), null);
  native.sendMsg(a, bytes('now'));
  t.equal(native.recvMsg(b, new Uint8Array(16), []), 3);
  t.equal(native.recvMsg(b, new Uint8Array(16), []), null);
});

t.test('sendMsg to a closed peer is EPIPE, not SIGPIPE', async (t) => {
  const [a, b] = native.socketPair();
  t.teardown(() => native.close(a));
  native.close(b);
  t.throws(() => native.sendMsg(a, bytes('x')), { name: 'SysError', code: 'EPIPE', syscall: 'sendmsg' });
});

t.test('errors are SysErrors with errno, code and syscall', async (t) => {
  const e = t.throws(() => native.close(-1)) as unknown as native.SysError;
  t.equal(e.name, 'SysError');
  t.equal(e.code, 'EBADF');
  t.equal(e.errno, 9);
  t.equal(e.syscall, 'close');
  t.match(e.message, /close .*EBADF: bad file descriptor/);
});
