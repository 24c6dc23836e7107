// tmemd under systemd's protocols, against the built daemon:
// - socket activation with systemd's own test tool, systemd-socket-activate
//   (Debian's systemd package): it binds the VM socket, waits for the first
//   connection (as a socket unit does) and execs tmemd with LISTEN_PID,
//   LISTEN_FDS and LISTEN_FDNAMES. The test plays systemd's notification
//   socket (NOTIFY_SOCKET, a datagram socket with SO_PASSCRED) and QEMU:
//   READY=1 comes from tmemd's pid once it serves (the control socket
//   answers with the VM listed at that moment), the queued vhost-user
//   connection on the inherited socket gets its GET_FEATURES reply, SIGTERM
//   gives STOPPING=1 and exit 0, and systemd's socket file is left to systemd.
// - journald priorities: with stderr the stream JOURNAL_STREAM names, every
//   line has its <N> prefix; with another stream, none.
// - the watchdog (WATCHDOG_USEC: WATCHDOG=1 pings; none when WATCHDOG_PID is
//   another process's) and an abstract NOTIFY_SOCKET ('@name').
// - sd_listen_fds's rules in process: LISTEN_PID decides, the variables are
//   removed from the environment whatever the outcome.
// - bad input: a unit started without its socket (LISTEN_FDS=0, a
//   LISTEN_FDNAMES without the VM's name, with the real tool too), a socket
//   bound elsewhere, not listening, left over, or names that do not add up:
//   one line on stderr, exit 1, STATUS=failed and never READY=1.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as native from '../native/index.js';
import { bindDatagram, recvDatagram } from '../native/notify.js';
import { requestDaemon } from '../host/control/client.js';
import { takeListenFds } from '../host/service/activation.js';
import { UNTRACED } from './loadgen/harness.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const TMEMD = join(root, 'dist/host/tmemd.js');
const SSA = '/usr/bin/systemd-socket-activate';

if (!existsSync(TMEMD)) throw new Error(`${TMEMD} is missing: run npm run build first`);
if (!existsSync(SSA)) throw new Error(`${SSA} is missing: install Debian's systemd package (apt-get install systemd)`);

const dir = mkdtempSync(join(tmpdir(), 'tmem-systemd-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const COMMON = ['--capacity', '16M', '--queues', '1'];

/** A child process with stdout/stderr collected. */
class Proc {
  readonly proc: ChildProcess;
  private piped = '';
  readonly exited: Promise<number | null>;
  /** errFile: the file stderr was redirected to (the stdio array holds its fd), read with the pipes' text. */
  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv, stdio: (number | 'pipe' | 'ignore')[] = ['ignore', 'pipe', 'pipe'], private readonly errFile?: string) {
    this.proc = spawn(cmd, args, { env, stdio });
    this.proc.stdout?.setEncoding('utf8').on('data', (d: string) => (this.piped += d));
    this.proc.stderr?.setEncoding('utf8').on('data', (d: string) => (this.piped += d));
    this.exited = new Promise((res) => this.proc.once('exit', (code) => res(code)));
  }
  get out(): string {
    return this.errFile ? this.piped + readFileSync(this.errFile, 'utf8') : this.piped;
  }
  async waitFor(re: RegExp, ms = 30000): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.out)) {
      if (this.proc.exitCode !== null) throw new Error(`exited (${this.proc.exitCode}) before ${re}:\n${this.out}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; output so far:\n${this.out}`);
      await sleep(20);
    }
  }
  async finish(ms = 30000): Promise<number | null> {
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), ms);
    const code = await this.exited;
    clearTimeout(timer);
    // the pipes may still hold the last lines
    await sleep(50);
    return code;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Plays systemd's notification socket. */
class NotifySocket {
  readonly fd: number;
  readonly got: { pid: number; text: string }[] = [];
  constructor(readonly path: string) {
    this.fd = bindDatagram(path);
  }
  drain(): void {
    for (let d = recvDatagram(this.fd); d !== null; d = recvDatagram(this.fd)) this.got.push({ pid: d.pid, text: d.data.toString('utf8') });
  }
  /** The first datagram with a line `line`, waiting for it. */
  async waitFor(line: string, ms = 30000): Promise<{ pid: number; text: string }> {
    const end = Date.now() + ms;
    for (;;) {
      this.drain();
      const m = this.got.find((g) => g.text.split('\n').includes(line));
      if (m) return m;
      if (Date.now() > end) throw new Error(`no ${line} within ${ms} ms; got ${JSON.stringify(this.got)}`);
      await sleep(20);
    }
  }
  close(): void {
    native.close(this.fd);
  }
}

/** GET_FEATURES (request 1) on a connected socket; the reply's flags and u64, read with a timeout. */
function getFeatures(fd: number, timeoutMs = 10000): { flags: number; features: bigint } {
  const req = Buffer.alloc(12);
  req.writeUInt32LE(1, 0); // VHOST_USER_GET_FEATURES
  req.writeUInt32LE(1, 4); // version 1
  req.writeUInt32LE(0, 8);
  native.sendMsg(fd, req);
  const reply = Buffer.alloc(20);
  let have = 0;
  const end = Date.now() + timeoutMs;
  while (have < reply.length) {
    const left = end - Date.now();
    if (left <= 0 || native.pollFds(Int32Array.of(fd), 1, new Int16Array(1), left) === 0) throw new Error(`no GET_FEATURES reply within ${timeoutMs} ms`);
    const n = native.recvMsg(fd, reply.subarray(have), []);
    if (n === 0) throw new Error('the daemon closed the connection instead of answering GET_FEATURES');
    if (n !== null) have += n;
  }
  if (reply.readUInt32LE(0) !== 1 || reply.readUInt32LE(8) !== 8) throw new Error(`unexpected reply header ${reply.subarray(0, 12).toString('hex')}`);
  return { flags: reply.readUInt32LE(4), features: reply.readBigUInt64LE(12) };
}

/**
 * tmemd started the way a socket unit starts a service, without the real
 * tool (for what it cannot make: LISTEN_FDS=0, wrong sockets): the fds go in
 * at 3.. through spawn's stdio, LISTEN_PID is the shell's pid, which exec
 * hands to node.
 */
function activated(fds: number[], env: Record<string, string>, args: string[], notify: string, stderr: number | 'pipe' = 'pipe'): Proc {
  return new Proc('sh', ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', 'sh', ...UNTRACED, process.execPath, TMEMD, ...args], { ...process.env, NOTIFY_SOCKET: notify, ...env }, ['ignore', 'pipe', stderr, ...fds]);
}

t.test('socket-activated by systemd-socket-activate: READY=1 once serving, the inherited socket served, SIGTERM → STOPPING=1 and exit 0', async (t) => {
  const sock = join(dir, 'vm0.sock');
  const ctl = join(dir, 'ctl.sock');
  const notify = new NotifySocket(join(dir, 'notify'));
  t.teardown(() => notify.close());
  // stderr to a file: tmemd's lines are in it the moment write(2) returns, so what it holds when
  // READY=1 arrives is what tmemd had done before it sent READY=1.
  const errPath = join(dir, 'ssa.log');
  const errFd = openSync(errPath, 'w');
  const p = new Proc(SSA, ['-l', sock, '--fdname=vm0', '-E', `NOTIFY_SOCKET=${notify.path}`, ...UNTRACED, process.execPath, TMEMD, '--vm', `name=vm0,socket=${sock},maxmem=1G`, '--control', ctl, ...COMMON], process.env, ['ignore', 'pipe', errFd], errPath);
  closeSync(errFd);
  t.teardown(() => p.proc.kill('SIGKILL'));
  await p.waitFor(/Listening on .*vm0\.sock/);
  // QEMU connects first: the connection waits in the socket's backlog, and starts tmemd.
  const client = native.connectUnix(sock);
  t.teardown(() => native.close(client));
  const ready = await notify.waitFor('READY=1');
  t.equal(ready.pid, p.proc.pid, 'READY=1 comes from the main pid (systemd-socket-activate execs tmemd in place)');
  t.match(ready.text, /^READY=1\nSTATUS=serving 1 VM socket\(s\)$/, 'with a STATUS= line');
  t.equal(notify.got.indexOf(ready), 0, 'nothing before READY=1');
  const before = readFileSync(errPath, 'utf8');
  t.match(before, /vm vm0: listening on fd=3/, 'sent after the listener was watching the inherited socket');
  t.match(before, /control socket on /, 'after the control socket listened');
  t.match(before, /tmemd info: ready: /, "and after tmemd's own ready line");
  // At READY=1 the daemon is up: its control socket answers and lists the VM.
  const r = await requestDaemon(ctl, { cmd: 'guests' }, 10000);
  t.ok(r.ok, 'the control socket answers as soon as READY=1 arrived');
  t.same((r.result as { name: string }[]).map((g) => g.name), ['vm0'], 'with the VM');
  const f = getFeatures(client);
  t.equal(f.flags, 0x5, 'GET_FEATURES answered on the inherited socket (flags 0x5)');
  t.ok(f.features & (1n << 32n) && f.features & (1n << 30n), `features 0x${f.features.toString(16)} include VERSION_1 and PROTOCOL_FEATURES`);
  t.match(p.out, /vm vm0: socket .*vm0\.sock from systemd \(fd 3\)/, 'the log says the socket came from systemd');
  t.notMatch(p.out, /tmemd (warn|error):/, 'no warning or error');
  p.proc.kill('SIGTERM');
  const code = await p.finish();
  const stopping = await notify.waitFor('STOPPING=1');
  t.equal(stopping.pid, p.proc.pid, 'STOPPING=1 from the main pid');
  t.ok(notify.got.indexOf(stopping) > notify.got.indexOf(ready), 'after READY=1');
  t.equal(code, 0, 'exit status 0 after SIGTERM');
  t.ok(existsSync(sock), "systemd's socket file is left to systemd (tmemd removes only sockets it created)");
});

t.test('journald priorities when stderr is JOURNAL_STREAM, none otherwise', async (t) => {
  for (const journal of [true, false]) {
    const logPath = join(dir, `log-${journal}`);
    const errFd = openSync(logPath, 'w');
    const st = fstatSync(errFd, { bigint: true });
    // false: a JOURNAL_STREAM that names another file (stderr was redirected after systemd set it)
    const js = journal ? `${st.dev}:${st.ino}` : `${st.dev}:${st.ino + 1n}`;
    const lsock = join(dir, `j-${journal}.sock`);
    const lfd = native.listenUnix(lsock);
    const notify = new NotifySocket(join(dir, `notify-j-${journal}`));
    // socket-mode with an inherited socket: a warning line
    const p = activated([lfd], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'vm0', JOURNAL_STREAM: js }, ['--vm', `name=vm0,socket=${lsock},maxmem=1G,socket-mode=0660`, '--control', 'none', '-v', ...COMMON], notify.path, errFd);
    native.close(lfd);
    closeSync(errFd);
    await notify.waitFor('READY=1');
    p.proc.kill('SIGTERM');
    t.equal(await p.finish(), 0, 'exit 0');
    notify.close();
    const lines = readFileSync(logPath, 'utf8').split('\n').filter((l) => l !== '');
    t.ok(lines.length >= 4, `${lines.length} lines`);
    if (journal) {
      const bad = lines.filter((l) => !/^<(3|4|6|7)>tmemd (error|warn|info|debug): /.test(l));
      t.same(bad, [], 'every line has its priority prefix');
      t.ok(lines.some((l) => l.startsWith('<4>tmemd warn: vm vm0: socket-mode')), 'warn is <4>');
      t.ok(lines.some((l) => l.startsWith('<6>tmemd info: ready')), 'info is <6>');
      t.ok(lines.some((l) => l.startsWith('<7>tmemd debug: ')), 'debug is <7>');
    } else {
      t.same(lines.filter((l) => l.startsWith('<')), [], 'no prefixes when stderr is not the journal stream');
      t.ok(lines.some((l) => l.startsWith('tmemd warn: vm vm0: socket-mode')), 'the same warning, plain');
    }
  }
});

/** A start that must fail: one line, exit 1, STATUS=failed, no READY=1. The fds are closed here. */
async function failingStart(t: Test, fds: number[], env: Record<string, string>, vms: string[], re: RegExp): Promise<void> {
  const notify = new NotifySocket(join(dir, `notify-bad-${Math.random().toString(36).slice(2)}`));
  const p = activated(fds, env, [...vms.flatMap((v) => ['--vm', v]), '--control', 'none', ...COMMON], notify.path);
  for (const fd of fds) native.close(fd);
  const code = await p.finish();
  const lines = p.out.split('\n').filter((l) => l !== '');
  t.equal(code, 1, 'exit status 1');
  t.equal(lines.length, 1, `one line: ${p.out.trim()}`);
  t.match(lines[0] ?? '', re, 'that says what is wrong');
  notify.drain();
  t.notOk(notify.got.some((g) => g.text.split('\n').includes('READY=1')), 'never READY=1');
  t.ok(notify.got.some((g) => g.text.startsWith('STATUS=failed: ')), 'STATUS=failed: tells systemctl status why');
  notify.close();
}

t.test('a unit started without its socket, or with the wrong one: one line, exit 1, no READY=1', async (t) => {
  const vm = (name: string) => `name=${name},socket=${join(dir, `${name}.bad.sock`)},maxmem=1G`;
  const listen = (name: string) => native.listenUnix(join(dir, `${name}.bad.sock`));
  const cleanup = () => {
    for (const n of ['a', 'b', 'c', 'other']) rmSync(join(dir, `${n}.bad.sock`), { force: true });
  };

  await t.test('LISTEN_FDS=0 while the config needs a socket', async (t) => {
    await failingStart(t, [], { LISTEN_FDS: '0' }, [vm('a')], /^tmemd: vm a: started by systemd with 0 socket\(s\) \(LISTEN_FDNAMES=none\) but none named 'a': start its socket unit \(systemctl start tmemd@a\.socket\)/);
  });
  await t.test("LISTEN_FDNAMES without the VM's name", async (t) => {
    cleanup();
    await failingStart(t, [listen('a')], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'other' }, [vm('a')], /^tmemd: vm a: started by systemd with 1 socket\(s\) \(LISTEN_FDNAMES=other\) but none named 'a'/);
  });
  await t.test('the socket of one VM missing among two', async (t) => {
    cleanup();
    await failingStart(t, [listen('a')], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'a' }, [vm('a'), vm('b')], /^tmemd: vm b: .* but none named 'b'/);
  });
  await t.test('a socket no VM claims', async (t) => {
    cleanup();
    await failingStart(t, [listen('a'), listen('b')], { LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b' }, [vm('a')], /^tmemd: systemd passed socket 'b' \(fd 4\) but no VM is named 'b'/);
  });
  await t.test('a socket bound at another path than the VM socket=', async (t) => {
    cleanup();
    await failingStart(t, [listen('other')], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'a' }, [vm('a')], /^tmemd: vm a: systemd's socket 'a' \(fd 3\) is bound to .*other\.bad\.sock, not to the VM's socket=.*a\.bad\.sock/);
  });
  await t.test('an fd that is not a listening socket', async (t) => {
    cleanup();
    const file = openSync(join(dir, 'plain-file'), 'w');
    await failingStart(t, [file], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'a' }, [vm('a')], /^tmemd: vm a: systemd's socket 'a' \(fd 3\) is not a listening Unix stream socket/);
  });
  await t.test('a connected, not listening, socket', async (t) => {
    cleanup();
    const [x, y] = native.socketPair();
    await failingStart(t, [x!], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'a' }, [vm('a')], /^tmemd: vm a: systemd's socket 'a' \(fd 3\) is not a listening Unix stream socket.*not listening/);
    native.close(y!);
  });
  await t.test('LISTEN_FDNAMES naming fewer sockets than LISTEN_FDS', async (t) => {
    cleanup();
    await failingStart(t, [listen('a'), listen('b')], { LISTEN_FDS: '2', LISTEN_FDNAMES: 'a' }, [vm('a')], /^tmemd: LISTEN_FDNAMES='a' names 1 socket\(s\) but LISTEN_FDS=2$/);
  });
  await t.test('LISTEN_FDS not a number', async (t) => {
    cleanup();
    await failingStart(t, [], { LISTEN_FDS: '1x' }, [vm('a')], /^tmemd: LISTEN_FDS='1x' is not a number of sockets/);
  });
  await t.test('two sockets with one name', async (t) => {
    cleanup();
    await failingStart(t, [listen('a'), listen('b')], { LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:a' }, [vm('a')], /^tmemd: systemd passed two sockets named 'a' \(fds 3 and 4/);
  });
  cleanup();
});

t.test("the real tool, with the socket under another name: tmemd refuses to start", async (t) => {
  const sock = join(dir, 'vm9.sock');
  const notify = new NotifySocket(join(dir, 'notify-ssa-bad'));
  t.teardown(() => notify.close());
  const p = new Proc(SSA, ['-l', sock, '--fdname=vm8', '-E', `NOTIFY_SOCKET=${notify.path}`, ...UNTRACED, process.execPath, TMEMD, '--vm', `name=vm9,socket=${sock},maxmem=1G`, '--control', 'none', ...COMMON], process.env);
  t.teardown(() => p.proc.kill('SIGKILL'));
  await p.waitFor(/Listening on .*vm9\.sock/);
  const client = native.connectUnix(sock);
  const code = await p.finish();
  native.close(client);
  t.equal(code, 1, 'exit status 1');
  const tmemdLines = p.out.split('\n').filter((l) => l.startsWith('tmemd'));
  t.equal(tmemdLines.length, 1, `one line from tmemd: ${tmemdLines.join(' | ')}`);
  t.match(tmemdLines[0] ?? '', /^tmemd: vm vm9: started by systemd with 1 socket\(s\) \(LISTEN_FDNAMES=vm8\) but none named 'vm9'/);
  notify.drain();
  t.notOk(notify.got.some((g) => g.text.includes('READY=1')), 'never READY=1');
});

t.test('WATCHDOG_USEC: WATCHDOG=1 pings to an abstract NOTIFY_SOCKET; none for another WATCHDOG_PID', async (t) => {
  for (const forUs of [true, false]) {
    const name = `@tmem-test-notify-${process.pid}-${forUs}`;
    const notify = new NotifySocket(name);
    const lsock = join(dir, `wd-${forUs}.sock`);
    const lfd = native.listenUnix(lsock);
    const env: Record<string, string> = { LISTEN_FDS: '1', LISTEN_FDNAMES: 'vm0', WATCHDOG_USEC: '200000' };
    if (!forUs) env.WATCHDOG_PID = '1';
    const p = activated([lfd], env, ['--vm', `name=vm0,socket=${lsock},maxmem=1G`, '--control', 'none', ...COMMON], name);
    native.close(lfd);
    await notify.waitFor('READY=1');
    if (forUs) {
      // pings every 100 ms: wait for three
      for (let n = 0; notify.got.filter((g) => g.text === 'WATCHDOG=1').length < 3; n++) {
        if (n > 600) throw new Error(`fewer than 3 WATCHDOG=1 in 30 s: ${JSON.stringify(notify.got)}`);
        await sleep(50);
        notify.drain();
      }
      t.ok(notify.got.filter((g) => g.text === 'WATCHDOG=1').every((g) => g.pid === p.proc.pid), 'WATCHDOG=1 from the main pid, on the abstract socket');
      t.match(p.out, /systemd watchdog: pinging every 100 ms/, 'logged with its interval');
    } else {
      t.notMatch(p.out, /systemd watchdog/, 'no pinging for a WATCHDOG_PID that is not ours');
    }
    p.proc.kill('SIGTERM');
    t.equal(await p.finish(), 0, 'exit 0');
    notify.drain();
    if (!forUs) t.notOk(notify.got.some((g) => g.text.includes('WATCHDOG=1')), 'not one WATCHDOG=1 from start to exit');
    t.ok(notify.got.some((g) => g.text.startsWith('STOPPING=1')), 'STOPPING=1');
    notify.close();
  }
});

t.test("sd_listen_fds's rules, in process", async (t) => {
  const env = (e: Record<string, string>): NodeJS.ProcessEnv => ({ ...e });
  let e = env({ LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b', OTHER: 'x' });
  t.same(takeListenFds(e, 4242), [{ fd: 3, name: 'a' }, { fd: 4, name: 'b' }], 'fds from 3, named in order');
  t.same(e, { OTHER: 'x' }, 'the three variables are removed');
  e = env({ LISTEN_PID: '4243', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b' });
  t.equal(takeListenFds(e, 4242), null, "another process's sockets are not taken");
  t.same(e, {}, 'and the variables are removed all the same');
  e = env({ LISTEN_FDS: '1' });
  t.equal(takeListenFds(e, 4242), null, 'no LISTEN_PID: not ours (as libsystemd)');
  t.same(takeListenFds(env({ LISTEN_PID: '4242', LISTEN_FDS: '1' }), 4242), [{ fd: 3, name: 'unknown' }], "no LISTEN_FDNAMES: systemd's 'unknown'");
  t.same(takeListenFds(env({ LISTEN_PID: '4242', LISTEN_FDS: '0', LISTEN_FDNAMES: '' }), 4242), [], 'LISTEN_FDS=0: activated, no sockets');
  t.throws(() => takeListenFds(env({ LISTEN_PID: 'x', LISTEN_FDS: '1' }), 4242), /LISTEN_PID='x' is not a process id/);
  t.throws(() => takeListenFds(env({ LISTEN_PID: '4242' }), 4242), /LISTEN_FDS is not set/);
  t.throws(() => takeListenFds(env({ LISTEN_PID: '4242', LISTEN_FDS: '-1' }), 4242), /LISTEN_FDS='-1' is not a number of sockets/);
  t.throws(() => takeListenFds(env({ LISTEN_PID: '4242', LISTEN_FDS: '99999' }), 4242), /is not a number of sockets/);
  t.throws(() => takeListenFds(env({ LISTEN_PID: '4242', LISTEN_FDS: '1', LISTEN_FDNAMES: 'a:b' }), 4242), /names 2 socket\(s\) but LISTEN_FDS=1/);
});
