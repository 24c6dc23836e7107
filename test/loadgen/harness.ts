// Helpers for the load generator's tests (test/loadgen-*.ts) and nothing else:
// build the C front-end, start the built daemon, run the front-end against it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from test/loadgen/ or dist/test/loadgen/). */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'test', 'loadgen', 'Makefile'))) return d;
    d = dirname(d);
  }
  throw new Error('cannot find the repository root from ' + fileURLToPath(import.meta.url));
}

export const ROOT = repoRoot();
export const LOADGEN = join(ROOT, 'test/loadgen/build/tmem-loadgen');
export const TMEMD = join(ROOT, 'dist/host/tmemd.js');

/**
 * A command prefix that starts tmemd (or a script that starts it) from a
 * test as users run it: without the tracing tap gives every child
 * (NODE_OPTIONS=--import=@tapjs/processinfo). That loader runs a module-hooks
 * thread inside the daemon (seven more fds, an eventfd more opened later,
 * mid-run) and files process info: a test counting the daemon's fds counted
 * tap's. Removing NODE_OPTIONS from spawn's env is not enough, since tap hooks
 * spawn itself and puts it back (process-on-spawn); env(1) drops it after that
 * hook, then execs, so the pid is the daemon's.
 */
export const UNTRACED = ['/usr/bin/env', '-u', 'NODE_OPTIONS'];

/** Builds the load generator (make: nothing to do when up to date). Throws with the compiler's output. */
export function buildLoadgen(): string {
  const r = spawnSync('make', ['-s', '-C', join(ROOT, 'test/loadgen'), 'all'], { encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run make: ${r.error.message} (install gcc and make)`);
  if (r.status !== 0) throw new Error(`building the load generator failed:\n${r.stdout}${r.stderr}`);
  return LOADGEN;
}

export interface DaemonOpts {
  mode: 'poll' | 'notify';
  queues: number;
  /** e.g. "1G"; the VM's maxmem */
  maxmem: string;
  capacity?: string;
  shareGroup?: string;
  maxPools?: number;
}

/** A running tmemd on a private socket, stderr collected. */
export class Daemon {
  readonly proc: ChildProcess;
  readonly dir: string;
  readonly socket: string;
  log = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  constructor(o: DaemonOpts) {
    if (!existsSync(TMEMD)) throw new Error(`${TMEMD} is missing: run 'npm run build' first`);
    this.dir = mkdtempSync(join(tmpdir(), 'tmem-loadgen-'));
    this.socket = join(this.dir, 'vm.sock');
    let vm = `name=lg,socket=${this.socket},maxmem=${o.maxmem}`;
    if (o.shareGroup) vm += `,share-group=${o.shareGroup}`;
    const args = [TMEMD, '--vm', vm, '--capacity', o.capacity ?? '512M', '--queues-mode', o.mode, '--queues', String(o.queues), '--control', 'none'];
    if (o.maxPools) args.push('--max-pools', String(o.maxPools));
    this.proc = spawn(UNTRACED[0]!, [...UNTRACED.slice(1), process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.log += d));
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.log += d));
    this.exited = new Promise((res) => this.proc.once('exit', (code, signal) => res({ code, signal })));
  }
  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }
  /** Resolves once the daemon says it listens. */
  async ready(ms = 20000): Promise<void> {
    const end = Date.now() + ms;
    while (!/ready:/.test(this.log) || !existsSync(this.socket)) {
      if (!this.alive) throw new Error(`tmemd exited (${this.proc.exitCode ?? this.proc.signalCode}) at startup:\n${this.log}`);
      if (Date.now() > end) throw new Error(`tmemd not ready within ${ms} ms:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  /** SIGTERM, then SIGKILL after 5 s; removes the private directory. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.alive) this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    const r = await this.exited;
    clearTimeout(timer);
    rmSync(this.dir, { recursive: true, force: true });
    return r;
  }
}

export interface LoadgenResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The JSON object on the last line of stdout (null if absent). */
  json: Record<string, unknown> | null;
  /** stdout lines before the JSON line */
  lines: string[];
}

/** Runs the load generator; kills it after timeoutMs (a hang is then a failure, never a stuck test). */
export function runLoadgen(mode: string, socket: string, args: string[], timeoutMs = 300000): Promise<LoadgenResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(LOADGEN, [mode, '--socket', socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      const all = stdout.trimEnd().split('\n');
      let json: Record<string, unknown> | null = null;
      try {
        const last = all[all.length - 1] ?? '';
        if (last.startsWith('{')) json = JSON.parse(last) as Record<string, unknown>;
      } catch {
        json = null;
      }
      resolve({ code, signal, stdout, stderr, json, lines: json ? all.slice(0, -1) : all });
    });
  });
}

/** A readable summary for assertion messages. */
export function explain(r: LoadgenResult, d?: Daemon): string {
  const tail = (s: string, n: number) => s.split('\n').slice(-n).join('\n');
  return `exit ${r.code ?? r.signal}\n--- loadgen stdout (tail)\n${tail(r.stdout, 30)}\n--- loadgen stderr (tail)\n${tail(r.stderr, 15)}${d ? `\n--- tmemd log (tail)\n${tail(d.log, 15)}` : ''}`;
}
