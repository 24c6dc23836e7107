// The main event loop never waits on the vring worker: with the worker made
// late on purpose (the TMEMD_TEST_HOOKS test hook, refused outside
// NODE_ENV=test), another VM's socket and the control socket keep answering;
// the late VM gets its reply once the worker answers, or, past the reply
// timeout, a failure ack and a closed connection with a log line, and its
// removal runs when the worker gets to it. Checked by order of events, not by
// timing thresholds.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as native from '../native/index.js';
import { requestDaemon } from '../host/control/client.js';
import { decodeHeader, encodeMsg, encodeVringState, VHOST_USER_HDR_SIZE, VHOST_USER_NEED_REPLY_MASK, VhostUserRequest as R } from '../host/vhost-user/messages.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const TMEMD = join(root, 'dist/host/tmemd.js');
const V1 = 0x1;

class Daemon {
  readonly proc: ChildProcess;
  stderr = '';
  readonly exited: Promise<number | null>;
  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.proc = spawn(process.execPath, [TMEMD, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((res) => this.proc.once('exit', (code) => res(code)));
  }
  async waitFor(re: RegExp, ms = 30000): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.stderr)) {
      if (this.proc.exitCode !== null) throw new Error(`tmemd exited (${this.proc.exitCode}) before ${re}:\n${this.stderr}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; stderr so far:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  async stop(): Promise<number | null> {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15000);
    const c = await this.exited;
    clearTimeout(timer);
    return c;
  }
}

/** A front-end socket: send, and read a reply with poll(2) (the daemon is another process). */
class Front {
  readonly fd = -1;
  constructor(path: string) {
    (this as { fd: number }).fd = native.connectUnix(path);
  }
  send(req: number, payload?: Buffer, flags = V1): void {
    const b = encodeMsg(req, flags, payload);
    let off = native.sendMsg(this.fd, b);
    while (off < b.length) off += native.sendMsg(this.fd, b.subarray(off));
  }
  /** Whether a byte (or EOF) is there to read now, without waiting. */
  readable(): boolean {
    return native.pollFds(Int32Array.of(this.fd), 1, new Int16Array(1), 0) > 0;
  }
  private read(n: number, timeoutMs: number): Buffer | 'eof' {
    const out = Buffer.alloc(n);
    let have = 0;
    const end = Date.now() + timeoutMs;
    while (have < n) {
      const left = end - Date.now();
      if (left <= 0 || native.pollFds(Int32Array.of(this.fd), 1, new Int16Array(1), left) === 0) throw new Error(`no reply within ${timeoutMs} ms`);
      let r: number | null;
      try {
        r = native.recvMsg(this.fd, out.subarray(have), []);
      } catch (e) {
        if ((e as { code?: string }).code === 'ECONNRESET' && have === 0) return 'eof';
        throw e;
      }
      if (r === 0) return 'eof';
      if (r !== null) have += r;
    }
    return out;
  }
  /** The next reply's request and payload, or 'eof'. */
  reply(timeoutMs = 20000): { request: number; payload: Buffer } | 'eof' {
    const h = this.read(VHOST_USER_HDR_SIZE, timeoutMs);
    if (h === 'eof') return 'eof';
    const hd = decodeHeader(h);
    const p = hd.size ? this.read(hd.size, timeoutMs) : Buffer.alloc(0);
    if (p === 'eof') throw new Error('EOF in a reply');
    return { request: hd.request, payload: p };
  }
  close(): void {
    native.close(this.fd);
  }
}

t.test('the test hook is refused outside NODE_ENV=test', async (t) => {
  const r = spawnSync(process.execPath, [TMEMD, '--vm', 'name=a,socket=/tmp/none.sock,maxmem=64M', '--control', 'none'], {
    encoding: 'utf8',
    env: { ...process.env, NODE_ENV: 'production', TMEMD_TEST_HOOKS: 'stall:a:open:10' },
    timeout: 20000,
  });
  t.equal(r.status, 1);
  t.match(r.stderr, /^tmemd: TMEMD_TEST_HOOKS is a test hook; refused outside NODE_ENV=test\n$/);
});

t.test('one VM late in the worker: another VM and the control socket answer; the late VM gets its reply, or is closed past the timeout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-late-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = (n: string) => join(dir, `${n}.sock`);
  const ctl = join(dir, 'ctl.sock');
  const d = new Daemon(
    ['--vm', `name=slow,socket=${sock('slow')},maxmem=64M`, '--vm', `name=late,socket=${sock('late')},maxmem=64M`, '--vm', `name=fast,socket=${sock('fast')},maxmem=64M`, '--control', ctl, '--capacity', '64M'],
    { NODE_ENV: 'test', TMEMD_TEST_HOOKS: 'stall:slow:getVringBase:3000,stall:late:setVringNum:7000' },
  );
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  t.match(d.stderr, /test hooks enabled/, 'the daemon says loudly that test hooks are on');

  const fast = new Front(sock('fast'));
  fast.send(R.GET_FEATURES);
  t.match(fast.reply(), { request: R.GET_FEATURES }, 'the fast VM is connected');

  // 1. slow: GET_VRING_BASE, which the worker answers 3 s late (under the 5 s reply timeout)
  const slow = new Front(sock('slow'));
  slow.send(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
  fast.send(R.GET_FEATURES);
  t.match(fast.reply(), { request: R.GET_FEATURES }, 'the other VM answers while the worker is late');
  fast.send(R.GET_QUEUE_NUM);
  t.match(fast.reply(), { request: R.GET_QUEUE_NUM });
  const g = await requestDaemon(ctl, { cmd: 'guests' }, 10000);
  t.equal(g.ok, true, 'the control socket answers while the worker is late');
  t.notOk(slow.readable(), 'and all that happened before the late VM got its reply');
  const r = slow.reply();
  t.not(r, 'eof');
  if (r !== 'eof') {
    t.equal(r.request, R.GET_VRING_BASE, 'the late VM gets its reply once the worker answers');
    t.same([r.payload.readUInt32LE(0), r.payload.readUInt32LE(4)], [0, 0]);
  }
  slow.send(R.GET_FEATURES);
  t.match(slow.reply(), { request: R.GET_FEATURES }, 'and its connection goes on');

  // 2. late: SET_VRING_NUM with NEED_REPLY, which the worker answers 7 s late (past the 5 s timeout)
  const late = new Front(sock('late'));
  late.send(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 256 }), V1 | VHOST_USER_NEED_REPLY_MASK);
  fast.send(R.GET_FEATURES);
  t.match(fast.reply(), { request: R.GET_FEATURES }, 'the other VM answers meanwhile');
  t.equal((await requestDaemon(ctl, { cmd: 'guests' }, 10000)).ok, true, 'so does the control socket');
  const nack = late.reply();
  t.not(nack, 'eof');
  if (nack !== 'eof') {
    t.equal(nack.request, R.SET_VRING_NUM);
    t.equal(nack.payload.readBigUInt64LE(0), 1n, 'past the timeout: the front-end is told the request failed');
  }
  t.equal(late.reply(), 'eof', 'then the connection is closed');
  await d.waitFor(/vm late: SET_VRING_NUM \(8\) failed: vring worker did not answer setVringNum within 5000 ms/);
  t.pass('with a log line saying why');
  // the worker gets to the late command, then to the close queued behind it
  await d.waitFor(/vring worker answered setVringNum after \d+ ms/);
  const stats = await requestDaemon(ctl, { cmd: 'stats' }, 20000);
  t.equal(stats.ok, true);
  const res = (stats as { result: { guests: { name: string; connected: boolean; dataplane: unknown; store: unknown }[] } }).result;
  const lateVm = res.guests.find((x) => x.name === 'late')!;
  t.same([lateVm.connected, lateVm.dataplane, lateVm.store], [false, null, null], 'nothing of the late VM is left in the worker or the store');
  t.equal(res.guests.find((x) => x.name === 'fast')!.connected, true, 'the fast VM is still connected');
  fast.close();
  slow.close();
  late.close();
  t.equal(await d.stop(), 0, 'clean exit');
});
