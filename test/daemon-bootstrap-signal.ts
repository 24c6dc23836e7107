// A SIGUSR1 while Node is still bootstrapping tmemd (after Node installed
// its own SIGUSR1 handler, before host/debug-guard.ts replaced it) starts
// Node's inspector. tmemd's interpreter line gives Node an inspector address
// no host has (INSPECTOR_BLACKHOLE), so that start fails and nothing
// listens; started without it (`node dist/host/tmemd.js`), the inspector
// opens and tmemd refuses to run once ready (assertNoInspector).
//
// How the window is hit: the test reads the child's /proc/PID/status until
// SigCgt shows a SIGUSR1 handler (Node's, installed during bootstrap), then
// sends SIGUSR1 every millisecond until the daemon is ready or gone.
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { INSPECTOR_BLACKHOLE } from '../host/debug-guard.js';
import { UNTRACED } from './loadgen/harness.js';

const TMEMD = new URL('../dist/host/tmemd.js', import.meta.url).pathname;
const SIGUSR1_BIT = 1n << 9n; // signal 10, bit 9 of SigCgt

interface Run {
  /** SIGUSR1s sent after Node's handler was seen. */
  sent: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Whether the daemon logged "ready" and was still running afterwards. */
  readyAndRunning: boolean;
  stderr: string;
}

function catchesSigusr1(pid: number): boolean {
  try {
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m !== null && (BigInt(`0x${m[1]}`) & SIGUSR1_BIT) !== 0n;
  } catch {
    return false;
  }
}

/** Starts the daemon with `argv`, floods it with SIGUSR1 from Node's first handler until ready, then stops it. */
async function floodedStart(argv: string[], dir: string): Promise<Run> {
  const env = { ...process.env };
  delete env.TMEMD_ALLOW_INSPECTOR;
  // env(1) drops tap's tracing (UNTRACED) and execs: the pid is the daemon's
  const child: ChildProcess = spawn(UNTRACED[0]!, [...UNTRACED.slice(1), ...argv, '--vm', `name=a,socket=${join(dir, 'a.sock')},maxmem=256M`, '--capacity', '256M', '--control', 'none'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.on('exit', (code, signal) => res({ code, signal })));
  let gone = false;
  void exited.then(() => (gone = true));
  // Node's SIGUSR1 handler: read /proc in a tight loop (the window is tens of ms)
  const pid = child.pid!;
  const t0 = Date.now();
  while (!catchesSigusr1(pid) && Date.now() - t0 < 10_000) {
    if (gone) break;
  }
  let sent = 0;
  let readyAndRunning = false;
  const deadline = Date.now() + 20_000;
  while (!gone && Date.now() < deadline) {
    try {
      process.kill(pid, 'SIGUSR1');
      sent++;
    } catch {
      break;
    }
    await new Promise((r) => setTimeout(r, 1));
    if (/tmemd info: ready:/.test(stderr)) {
      // a few more after ready, then make sure it is still up
      await new Promise((r) => setTimeout(r, 200));
      readyAndRunning = !gone && child.exitCode === null;
      break;
    }
  }
  if (!gone) child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const { code, signal } = await exited;
  clearTimeout(killer);
  return { sent, code, signal, readyAndRunning, stderr };
}

const failedStarts = (s: string) => (s.match(/Starting inspector on [^ ]+ failed/g) ?? []).length;

t.test('the interpreter line names the black-hole inspector address, and the build made the daemon executable', async (t) => {
  t.equal(readFileSync(TMEMD, 'utf8').split('\n')[0], `#!/usr/bin/env -S node --inspect-port=${INSPECTOR_BLACKHOLE}`);
  t.doesNotThrow(() => accessSync(TMEMD, constants.X_OK), `${TMEMD} is executable (npm run build sets the mode)`);
});

t.test('started through its interpreter line, a SIGUSR1 flood during bootstrap opens no inspector; the daemon runs and stops cleanly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmem-bootsig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await floodedStart([TMEMD], dir);
  t.ok(r.sent > 0, `SIGUSR1 sent ${r.sent} times from Node's first handler on`);
  t.ok(failedStarts(r.stderr) > 0, `Node tried to start the inspector and could not bind ${INSPECTOR_BLACKHOLE} (${failedStarts(r.stderr)} times): the flood reached the bootstrap window`);
  t.notMatch(r.stderr, /Debugger listening/, 'no inspector listened');
  t.notMatch(r.stderr, /refusing to run with a debugger/);
  t.ok(r.readyAndRunning, 'the daemon got ready and kept running');
  t.equal(r.code, 0, `it stopped on SIGTERM with status 0 (signal ${String(r.signal)}): ${r.stderr.split('\n').slice(-4).join(' | ')}`);
});

t.test('without the flag (node dist/host/tmemd.js) the same flood opens the inspector, and tmemd refuses to run once ready', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmem-bootsig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await floodedStart([process.execPath, TMEMD], dir);
  t.ok(r.sent > 0, `SIGUSR1 sent ${r.sent} times`);
  t.match(r.stderr, /Debugger listening on ws:\/\/127\.0\.0\.1:9229/, 'Node opened its inspector during bootstrap: the window the interpreter line closes');
  t.match(r.stderr, /refusing to run with a debugger: the Node inspector is open/, 'the second line of defence: tmemd refuses to run');
  t.equal(r.code, 1, 'and exits 1');
  t.notOk(r.readyAndRunning);
});
