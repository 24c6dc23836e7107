// Helpers of the end-to-end tests (test/e2e-*.ts): the built images of
// vm-images/ (built beforehand by `node vm-images/setup.mjs`), tmemd and QEMU
// started through vm-images/lib/vm.mjs, cleanup that always stops QEMU before
// the daemon (even when the test fails or is killed), the daemon's statistics
// (control socket and tmemctl --json), QMP block statistics, and the
// console handshake of the guest scripts (vm-images/guest/workloads/e2e-*.sh).
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { requestDaemon } from '../../host/control/client.js';

/** The repository root (this file runs from test/e2e/ or dist/test/e2e/). */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'vm-images', 'lib', 'vm.mjs'))) return d;
    d = dirname(d);
  }
  throw new Error('cannot find the repository root from ' + fileURLToPath(import.meta.url));
}

export const ROOT = repoRoot();
export const TMEMD = join(ROOT, 'dist/host/tmemd.js');
export const TMEMCTL = join(ROOT, 'dist/host/tmemctl.js');
export const MODULE = join(ROOT, 'guest-driver/virtio_tmem.ko');
export const CACHE = process.env.TMEM_KVM_CACHE || '/var/cache/tmem-kvm';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ------------------------------------------------------------ vm.mjs (untyped)

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Json = any;

export interface Built {
  qemu: string;
  kernelDir: string;
  bzImage: string;
  kernelBuildDir: string;
  rootfs: string;
  tmemfiles: string;
}

export interface Daemon {
  proc: import('node:child_process').ChildProcess;
  socket: string;
  output(): string;
  wait(): Promise<{ code: number | null; signal: string | null }>;
  stop(graceMs?: number): Promise<{ code: number | null; signal: string | null }>;
}

export interface Vm {
  proc: import('node:child_process').ChildProcess;
  runDir: string;
  output(): string;
  /** The guest's @@ marker lines (the harness port; the console without one). */
  markers(): string;
  write(s: string): void;
  qmp(cmd: string, args?: unknown): Promise<Json>;
  blockstats(): Promise<Record<string, Record<string, number>>>;
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  waitForResult(ms?: number): Promise<Json>;
  waitForShutdown(ms?: number): Promise<unknown>;
  wait(): Promise<{ code: number | null; signal: string | null }>;
  exited(): { code: number | null; signal: string | null } | null;
  quit(graceMs?: number): Promise<{ code: number | null; signal: string | null }>;
  kill(sig?: string): Promise<{ code: number | null; signal: string | null }>;
}

interface VmLib {
  buildAll(o: Json): Promise<Built>;
  startDaemon(o: Json): Promise<Daemon>;
  startVm(o: Json): Promise<Vm>;
  makeRunDir(prefix: string): string;
  detectAccel(): string;
}

let vmlibP: Promise<VmLib> | null = null;
function vmlib(): Promise<VmLib> {
  vmlibP ??= import(pathToFileURL(join(ROOT, 'vm-images/lib/vm.mjs')).href) as Promise<VmLib>;
  return vmlibP;
}

// ------------------------------------------------------------ cleanup

/**
 * Everything a test started, stopped in the right order: every QEMU first,
 * then every daemon (continued first if it was stopped with SIGSTOP), then the
 * run directories. Runs from t.teardown, and synchronously (SIGKILL) if the
 * test process is killed or exits early, so no process is ever left behind.
 */
export class Cleanup {
  vms: Vm[] = [];
  daemons: Daemon[] = [];
  dirs: string[] = [];
  private done = false;
  private readonly onExit = () => this.killSync();
  private readonly onSignal = (sig: NodeJS.Signals) => {
    this.killSync();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };

  constructor() {
    process.on('exit', this.onExit);
    process.on('SIGTERM', this.onSignal);
    process.on('SIGINT', this.onSignal);
  }

  /** The last resort: SIGKILL QEMU, then the daemons, without waiting. */
  killSync(): void {
    for (const v of this.vms) if (!v.exited() && v.proc.pid) try { process.kill(v.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    for (const d of this.daemons) if (d.proc.exitCode === null && d.proc.signalCode === null && d.proc.pid) try { process.kill(d.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  }

  async run(): Promise<void> {
    if (this.done) return;
    this.done = true;
    for (const v of this.vms) {
      if (v.exited()) continue;
      // quit over QMP; a VM whose daemon is dead or stopped may not quit cleanly
      await Promise.race([v.quit(6000), sleep(8000)]);
      if (!v.exited()) await v.kill('SIGKILL');
    }
    for (const d of this.daemons) {
      if (d.proc.exitCode !== null || d.proc.signalCode !== null) continue;
      try { if (d.proc.pid) process.kill(d.proc.pid, 'SIGCONT'); } catch { /* gone */ }
      await d.stop(10000);
    }
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
    process.off('exit', this.onExit);
    process.off('SIGTERM', this.onSignal);
    process.off('SIGINT', this.onSignal);
  }
}

// ------------------------------------------------------------ environment

/** What the helpers need of a tap test. */
export interface TapLike {
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
}

export interface Env {
  lib: VmLib;
  built: Built;
  accel: string;
  cleanup: Cleanup;
}

function need(ok: boolean, what: string): void {
  if (!ok) throw new Error(`end-to-end test prerequisite missing: ${what}`);
}

/**
 * Checks that everything the VM needs was built (by `node vm-images/setup.mjs`,
 * which `npm test` runs before tap) and fails loudly otherwise: this never
 * starts a kernel build. Then refreshes the small project-files disk (the
 * module and the guest scripts, ~1 s) and registers the cleanup.
 */
export async function e2eEnv(t: TapLike): Promise<Env> {
  need(existsSync(TMEMD), `${TMEMD} (run npm run build)`);
  const kernel = join(CACHE, 'kernel');
  need(existsSync(join(kernel, 'bzImage')), `guest kernel ${kernel}/bzImage (run node vm-images/setup.mjs)`);
  need(existsSync(join(kernel, 'build', 'Module.symvers')), `guest kernel build tree ${kernel}/build (run node vm-images/setup.mjs)`);
  need(existsSync(join(CACHE, 'rootfs', 'rootfs.img')), `root image ${CACHE}/rootfs/rootfs.img (run node vm-images/setup.mjs)`);
  need(existsSync(join(CACHE, 'qemu', 'bin', 'qemu-system-x86_64')) || !!process.env.TMEM_KVM_QEMU, `QEMU ${CACHE}/qemu/bin/qemu-system-x86_64 (run node vm-images/setup.mjs)`);
  need(existsSync(MODULE), `guest module ${MODULE} (run node vm-images/setup.mjs, or make -C guest-driver)`);
  need(statSync(MODULE).mtimeMs >= statSync(join(kernel, 'bzImage')).mtimeMs, `guest module ${MODULE} is older than the guest kernel: rebuild it (make -C guest-driver)`);
  const lib = await vmlib();
  const log: string[] = [];
  const sink = { write: (d: unknown) => { log.push(String(d)); return true; } };
  let built: Built;
  try {
    built = await lib.buildAll({ module: MODULE, log: sink });
  } catch (e) {
    throw new Error(`vm-images build check failed: ${(e as Error).message}\n${log.join('').slice(-3000)}`);
  }
  if (/building|make -j|mmdebstrap/i.test(log.join('')) && !/cached/.test(log.join(''))) t.comment('note: vm-images built something inside the test');
  const cleanup = new Cleanup();
  t.teardown(() => cleanup.run());
  const accel = lib.detectAccel();
  t.comment(`accel ${accel}; kernel ${built.kernelDir}; files disk ${built.tmemfiles}`);
  return { lib, built, accel, cleanup };
}

// ------------------------------------------------------------ daemon and VM

export interface DaemonHandle {
  daemon: Daemon;
  control: string;
  name: string;
  runDir: string;
}

export async function startTmemd(env: Env, o: { name?: string; maxmem?: string; capacity?: string; queues?: number; queuesMode?: 'poll' | 'notify'; runDir?: string; args?: string[] } = {}): Promise<DaemonHandle> {
  const runDir = o.runDir ?? env.lib.makeRunDir('e2e');
  if (!env.cleanup.dirs.includes(runDir)) env.cleanup.dirs.push(runDir);
  const name = o.name ?? 'e2e';
  const control = join(runDir, 'ctl.sock');
  const daemon = await env.lib.startDaemon({
    cmd: `node ${TMEMD}`, socket: join(runDir, 'tmem.sock'), name, maxmem: o.maxmem ?? '1G',
    capacity: o.capacity ?? '1G', queues: o.queues ?? 2, control, log: null, args: [...(o.queuesMode ? ['--queues-mode', o.queuesMode] : []), ...(o.args ?? [])],
  });
  env.cleanup.daemons.push(daemon);
  return { daemon, control, name, runDir };
}

export interface VmOpts {
  daemon?: DaemonHandle | null;
  run: string;
  ram?: string;
  cpus?: number;
  swapSize?: string;
  dataSize?: string;
  modparams?: string;
  noModule?: boolean;
  runDir?: string;
  /** The vhost-user socket, when not the daemon's first VM's (a daemon serving several VMs). */
  socket?: string;
  /** A guest reboot resets the VM in the same QEMU (same vhost-user connection) instead of ending it. */
  allowReboot?: boolean;
}

export async function bootVm(env: Env, o: VmOpts): Promise<Vm> {
  const runDir = o.runDir ?? o.daemon?.runDir ?? env.lib.makeRunDir('e2e');
  if (!env.cleanup.dirs.includes(runDir)) env.cleanup.dirs.push(runDir);
  const vm = await env.lib.startVm({
    ...env.built, accel: env.accel, ram: o.ram ?? '256M', cpus: o.cpus ?? 2, queues: o.cpus ?? 2,
    swapSize: o.swapSize ?? '768M', dataSize: o.dataSize ?? '1G', run: o.run, modparams: o.modparams,
    noModule: o.noModule, allowReboot: o.allowReboot, runDir, tmemSocket: o.daemon ? (o.socket ?? o.daemon.daemon.socket) : null,
    name: 'tmem-e2e',
  });
  env.cleanup.vms.push(vm);
  return vm;
}

/** Waits for "@@TMEM-READY" and checks the module loaded as asked. */
export async function waitReady(vm: Vm, module: boolean, ms = 180000): Promise<string> {
  const m = await vm.waitFor(/@@TMEM-READY[^\n]*/, ms);
  const line = m[0];
  if (module && !/module=loaded/.test(line)) throw new Error(`the guest did not load virtio_tmem: ${line}\n${vm.output().slice(-3000)}`);
  // bootVm always gives the guest the harness port (vm.mjs): markers read off the console could be torn
  if (!/ harness=port\b/.test(line)) throw new Error(`the guest did not open the harness port (markers would come over the console, where kernel messages tear lines): ${line}\n${vm.output().slice(-3000)}`);
  return line;
}

/** Waits for the guest script's "@@E2E-WAIT name" (e2e_wait); resolves with go(), which lets it continue. */
export async function atGate(vm: Vm, name: string, ms = 600000): Promise<() => void> {
  await vm.waitFor(new RegExp(`@@E2E-WAIT ${name}\\b`), ms);
  return () => vm.write('go\n');
}

/** Kernel trouble on the console (DEBUG_ATOMIC_SLEEP, lockups, oopses, warnings). */
export function kernelTrouble(console: string): string[] {
  return console.split('\n').filter((l) => /BUG:|WARNING:|Oops|soft lockup|hard LOCKUP|blocked for more than|Call Trace|sleeping function called|Kernel panic/.test(l) && !/@@E2E-DMESG/.test(l));
}

/** The "@@E2E-DMESG ..." lines the guest script printed. */
export function dmesgLines(console: string): string[] {
  return console.split('\n').filter((l) => l.includes('@@E2E-DMESG ')).map((l) => l.slice(l.indexOf('@@E2E-DMESG ') + 12).trim());
}

/** The "@@E2E-POOLS tag ..." lines: the driver's pool table at that point. */
export function poolLines(console: string, tag: string): string[] {
  const p = `@@E2E-POOLS ${tag} `;
  return console.split('\n').filter((l) => l.includes(p)).map((l) => l.slice(l.indexOf(p) + p.length).trim()).filter((l) => l !== 'begin' && l !== 'end');
}

// ------------------------------------------------------------ statistics

/** "name value" lines (the driver's debugfs stats) -> numbers. */
export function kv(text: string | undefined): Record<string, number> {
  const o: Record<string, number> = {};
  for (const line of (text ?? '').split('\n')) {
    const m = /^(\w+)\s+(-?\d+)\s*$/.exec(line);
    if (m) o[m[1]!] = Number(m[2]);
  }
  return o;
}

/** The daemon's stats over its control socket. */
export async function daemonStats(d: DaemonHandle, timeoutMs = 10000): Promise<Json> {
  const r = await requestDaemon(d.control, { cmd: 'stats' }, timeoutMs);
  if (!r.ok) throw new Error(`tmemd stats: ${r.error}`);
  return r.result;
}

/** The VM's entry in the daemon's stats (guests[].name === d.name). */
export function guestEntry(stats: Json, name: string): Json {
  const g = (stats.guests as Json[]).find((x) => x.name === name);
  if (!g) throw new Error(`no VM named ${name} in the daemon's stats`);
  return g;
}

/** `tmemctl --control <sock> --json <args>`, parsed. */
export function tmemctl(d: DaemonHandle, ...args: string[]): Promise<Json> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [TMEMCTL, '--control', d.control, '--json', ...args], { timeout: 20000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`tmemctl ${args.join(' ')}: ${err.message}\n${stderr}`));
      try { resolve(JSON.parse(stdout)); } catch (e) { reject(new Error(`tmemctl ${args.join(' ')}: not JSON: ${(e as Error).message}: ${stdout.slice(0, 500)}`)); }
    });
  });
}

/** Polls the daemon's stats in the background; keeps the peaks of the VM's pages. */
export class StatsPoller {
  peakPersistent = 0;
  peakEphemeral = 0;
  last: Json = null;
  samples = 0;
  private stopped = false;
  private readonly loop: Promise<void>;

  constructor(private readonly d: DaemonHandle, private readonly periodMs = 2000) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        const s = await daemonStats(this.d, 5000);
        const g = guestEntry(s, this.d.name);
        this.last = g;
        this.samples++;
        if (g.store) {
          this.peakPersistent = Math.max(this.peakPersistent, g.store.persistentPages ?? 0);
          this.peakEphemeral = Math.max(this.peakEphemeral, g.store.ephemeralPages ?? 0);
        }
      } catch { /* daemon busy or gone: try again */ }
      await sleep(this.periodMs);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/** Waits until pred(stats) holds (polling the control socket); returns the stats. */
export async function waitDaemon(d: DaemonHandle, pred: (s: Json) => boolean, ms: number, what: string): Promise<Json> {
  const deadline = Date.now() + ms;
  let last: Json = null;
  for (;;) {
    try { last = await daemonStats(d, 5000); if (pred(last)) return last; } catch { /* retry */ }
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms waiting for the daemon: ${what}; last stats: ${JSON.stringify(last?.guests ?? last)?.slice(0, 2000)}`);
    await sleep(500);
  }
}

/** Pages in a blockstats delta. */
export const pages = (bytes: number) => Math.round(bytes / 4096);
export const mibs = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

/** Block statistics difference b - a for one device. */
export function bsDelta(a: Record<string, Record<string, number>>, b: Record<string, Record<string, number>>, dev: string): Record<string, number> {
  const o: Record<string, number> = {};
  for (const k of ['rd_bytes', 'rd_operations', 'wr_bytes', 'wr_operations']) o[k] = (b[dev]?.[k] ?? 0) - (a[dev]?.[k] ?? 0);
  return o;
}

/** Last lines of a text, for failure messages. */
export const tail = (s: string, n = 3000) => s.slice(-n);

export function readText(p: string): string {
  try { return readFileSync(p, 'utf8'); } catch { return ''; }
}

/** The "@@E2E-KV tag name value" lines (e2e_counters) of one tag, as numbers. */
export function counters(console: string, tag: string): Record<string, number> {
  const o: Record<string, number> = {};
  const re = new RegExp(`@@E2E-KV ${tag} (\\w+) (-?\\d+)`, 'g');
  for (const m of console.matchAll(re)) o[m[1]!] = Number(m[2]);
  return o;
}

/** after - before, key by key. */
export function diff(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const o: Record<string, number> = {};
  for (const k of Object.keys(b)) o[k] = b[k]! - (a[k] ?? 0);
  return o;
}
