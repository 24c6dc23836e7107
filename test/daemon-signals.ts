// SIGUSR1 must never open Node's inspector in tmemd (issue 13 item 3): the
// built daemon, with its data-plane worker thread running, gets SIGUSR1 and
// SIGUSR2 and keeps serving (tmemctl stats), prints no "Debugger listening",
// owns no TCP listening socket and says once that it ignored them. Started
// with --inspect (NODE_OPTIONS or the command line) it refuses to run with a
// one-line reason, unless TMEMD_ALLOW_INSPECTOR=1.
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requestDaemon } from '../host/control/client.js';
import { Daemon } from './vhost/harness.js';

/** The socket inodes of pid's open fds. */
function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const f of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${f}`));
      if (m) out.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

/** "addr:port" of every TCP socket in LISTEN (state 0A) whose inode is in `inodes`. */
function tcpListeners(inodes: Set<string>): string[] {
  const out: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      if (f[3] === '0A' && inodes.has(f[9]!)) out.push(f[1]!);
    }
  }
  return out;
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function tcpOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

const dir = mkdtempSync(join(tmpdir(), 'tmemd-signals-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function args(tag: string): string[] {
  return ['--vm', `name=${tag},socket=${join(dir, `${tag}.sock`)},maxmem=1G`, '--control', join(dir, `${tag}-ctl.sock`), '--capacity', '64M'];
}

t.test('SIGUSR1 and SIGUSR2 are ignored with a log line; no inspector opens', async (t) => {
  const inspectorOpenBefore = await tcpOpen(9229);
  const d = new Daemon(args('sig'));
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  const pid = d.proc.pid!;
  // The data plane's worker thread is running: signals reach the process, not one thread.
  const threads = readdirSync(`/proc/${pid}/task`).length;
  t.ok(threads > 1, `daemon has ${threads} threads (worker included)`);
  for (const sig of ['SIGUSR1', 'SIGUSR2', 'SIGUSR1', 'SIGUSR1', 'SIGUSR2'] as const) {
    process.kill(pid, sig);
    await new Promise((r) => setTimeout(r, 50));
  }
  // process._debugProcess(pid), Node's own way to open another process's debugger, is a SIGUSR1 too.
  (process as unknown as { _debugProcess(pid: number): void })._debugProcess(pid);
  await d.waitFor(/ignored SIGUSR1 x1/);
  // Node opens the inspector from a helper thread after the signal; give it ample time to (wrongly) do so.
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(d.proc.exitCode, null, 'daemon still running');
  t.equal(d.proc.signalCode, null, 'not killed by a signal');
  const r = await requestDaemon(join(dir, 'sig-ctl.sock'), { cmd: 'stats' }, 10000);
  t.equal(r.ok, true, 'tmemctl stats answered after the signals');
  t.notMatch(d.stderr, /Debugger listening/, 'no "Debugger listening" line');
  t.same(tcpListeners(socketInodes(pid)), [], 'the daemon owns no TCP listening socket');
  if (!inspectorOpenBefore) t.equal(await tcpOpen(9229), false, 'nothing accepts on 127.0.0.1:9229');
  // The five signals after the first are counted in one line when the 10 s interval ends; lines stay few.
  const lines = d.stderr.split('\n').filter((l) => /ignored SIG/.test(l));
  t.equal(lines.length, 1, `one log line so far for 6 signals: ${JSON.stringify(lines)}`);
  t.match(lines[0], /^tmemd warn: ignored SIGUSR1 x1 \(tmemd has no debugger/);
  await d.waitFor(/ignored (SIGUSR2 x2, SIGUSR1 x3|SIGUSR1 x3, SIGUSR2 x2) \(/, 20000);
  t.pass('the rest are counted in one line when the interval ends');
  const st = await d.stop();
  t.equal(st.code, 0, 'SIGTERM still stops it cleanly');
});

t.test('NODE_OPTIONS=--inspect is refused with a clear line', async (t) => {
  const d = new Daemon(args('env'), { env: { ...process.env, NODE_OPTIONS: '--inspect=127.0.0.1:0' } });
  const st = await d.exited;
  t.equal(st.code, 1, 'exit status 1');
  t.match(d.stderr, /tmemd: refusing to run with a debugger: --inspect=127\.0\.0\.1:0 given \(command line or NODE_OPTIONS\)/);
  t.match(d.stderr, /TMEMD_ALLOW_INSPECTOR=1/);
  t.notMatch(d.stderr, /ready:/, 'never became ready');
});

t.test('--inspect on the node command line is refused too', async (t) => {
  const d = new Daemon(args('argv'), { nodeArgs: ['--inspect=127.0.0.1:0'] });
  const st = await d.exited;
  t.equal(st.code, 1, 'exit status 1');
  t.match(d.stderr, /tmemd: refusing to run with a debugger: --inspect=127\.0\.0\.1:0 given/);
});

t.test('TMEMD_ALLOW_INSPECTOR=1 lets a developer use --inspect', async (t) => {
  const d = new Daemon(args('dev'), { env: { ...process.env, NODE_OPTIONS: '--inspect=127.0.0.1:0', TMEMD_ALLOW_INSPECTOR: '1' } });
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  t.match(d.stderr, /Debugger listening on ws:\/\/127\.0\.0\.1:/, 'the inspector the developer asked for is open');
  const st = await d.stop();
  t.equal(st.code, 0);
});
