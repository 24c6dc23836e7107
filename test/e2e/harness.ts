// Helpers of the end-to-end tests (test/e2e-*.ts): the built images of
// vm-images/ (built beforehand by `npm run setup`), tmemd and QEMU started
// through the VM library (vm-images/lib/, typed: Vm, Daemon, Session),
// cleanup that always stops QEMU before the daemon (even when the test fails
// or is killed), the daemon's statistics (control socket and tmemctl --json),
// QMP block statistics, the handshake of the guest scripts
// (vm-images/guest/workloads/e2e-*.sh), and the checks many tests share (a
// swapstress result, the end of a test: QEMU, then tmemd, tails on failure).
//
// The guest kernel is an option (vm-images/README.md says which tests what):
//   e2eEnv(t, { kernel?: 'tmem' | 'debian' })   the env's default kernel (default 'tmem')
//   bootVm(env, { ..., kernel?: 'tmem' | 'debian' })
//     'tmem'    the project's 5.10 build (cleancache + frontswap, THP off, lockup detectors
//               off); the module is guest-driver/virtio_tmem.ko (made by setup)
//     'debian'  Debian bullseye's own linux-image-5.10.0-N-amd64, unmodified (frontswap only,
//               THP always, lockup detectors on) with our initramfs; the module is built
//               from guest-driver/ against Debian's headers (cached by the sources' hash,
//               rebuilt here when they changed, a few seconds). Note: 5.10 sets THP to
//               never at boot when the guest has under 512 MiB of RAM, whatever the config
//               says (hugepage_init); a small guest that wants `always` writes it to sysfs.
//     'bookworm', 'bookworm-generic'  Debian 12's own 6.1 kernels (cloud: no zswap; generic: zswap),
//               unmodified, no module (6.1 has no frontswap): test/e2e-blk.ts swaps on tmem-blk.
//   A kernel other than the env's is prepared at its first bootVm (cached builds only).
//   waitReady() also checks that the guest runs the kernel asked for (uname -r);
//   vm.kernel.name / vm.kernel.version say which one a Vm boots.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requestDaemon } from '../../host/control/client.js';
import * as vmlib from '../../vm-images/lib/index.js';
import type { Accel, Built, Daemon, KernelName, Vm } from '../../vm-images/lib/index.js';

export type { Built, Daemon, KernelName, Vm } from '../../vm-images/lib/index.js';

/** The repository root (this file runs from test/e2e/ or dist/test/e2e/). */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'vm-images', 'build-kernel.sh'))) return d;
    d = dirname(d);
  }
  throw new Error('cannot find the repository root from ' + fileURLToPath(import.meta.url));
}

export const ROOT = repoRoot();
export const TMEMD = join(ROOT, 'dist/host/tmemd.js');
/** How the e2e tests start tmemd: without tap's process tracing (test/loadgen/harness.ts, UNTRACED). */
export const TMEMD_CMD = `/usr/bin/env -u NODE_OPTIONS node ${TMEMD}`;
export const TMEMCTL = join(ROOT, 'dist/host/tmemctl.js');
/** The module of the project's kernel ('tmem'); Debian's is built apart (vm-images/build-debian-module.sh). */
export const MODULE = join(ROOT, 'guest-driver/virtio_tmem.ko');
export const CACHE = vmlib.CACHE;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Json = any;

// ------------------------------------------------------------ cleanup

/**
 * Everything a test started, stopped in the right order (vm-images/lib/session.ts):
 * every QEMU first, then every daemon (continued first if it was stopped with
 * SIGSTOP), then the run directories. Runs from t.teardown, and synchronously
 * (SIGKILL) if the test process is killed or exits early, so no process is
 * ever left behind.
 */
export class Cleanup extends vmlib.Session {
  constructor() {
    super();
    this.guardProcess();
  }

  async run(): Promise<void> {
    await this.stop();
  }
}

// ------------------------------------------------------------ environment

/** What the helpers need of a tap test. */
export interface TapLike {
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
}

export interface Env {
  lib: typeof vmlib;
  /** what the env's kernel boots (the default of bootVm) */
  built: Built;
  kernel: KernelName;
  accel: Accel;
  cleanup: Cleanup;
  /** the builds per kernel, made on first use */
  builds: Map<KernelName, Built>;
  t: TapLike;
}

function need(ok: boolean, what: string): void {
  if (!ok) throw new Error(`end-to-end test prerequisite missing: ${what}`);
}

/**
 * Checks that what `kernel` needs was built (by `npm run setup`, which
 * `npm test` runs before tap) and fails loudly otherwise: this never starts
 * a kernel build. Then refreshes the small project-files disk (the module and
 * the guest scripts, ~1 s; for Debian's kernel also the module when
 * guest-driver/ changed).
 */
async function prepare(t: TapLike, kernel: KernelName): Promise<Built> {
  const setup = 'run npm run setup';
  need(existsSync(TMEMD), `${TMEMD} (run npm run build)`);
  need(existsSync(join(CACHE, 'rootfs', 'rootfs.img')), `root image ${CACHE}/rootfs/rootfs.img (${setup})`);
  need(existsSync(join(CACHE, 'qemu', 'bin', 'qemu-system-x86_64')) || !!process.env.TMEM_KVM_QEMU, `QEMU ${CACHE}/qemu/bin/qemu-system-x86_64 (${setup})`);
  let module: string | undefined;
  if (kernel === 'tmem') {
    const k = join(CACHE, 'kernel');
    need(existsSync(join(k, 'bzImage')), `guest kernel ${k}/bzImage (${setup})`);
    need(existsSync(join(k, 'build', 'Module.symvers')), `guest kernel build tree ${k}/build (${setup})`);
    need(existsSync(MODULE), `guest module ${MODULE} (${setup}, or make -C guest-driver)`);
    need(statSync(MODULE).mtimeMs >= statSync(join(k, 'bzImage')).mtimeMs, `guest module ${MODULE} is older than the guest kernel: rebuild it (make -C guest-driver)`);
    module = MODULE;
  } else {
    const k = join(CACHE, kernel === 'debian' ? 'debian-kernel' : kernel === 'bookworm' ? 'bookworm-cloud-kernel' : 'bookworm-generic-kernel');
    need(existsSync(join(k, '.done')), `Debian's kernel ${k} (${setup})`);
  }
  const log: string[] = [];
  const sink = { write: (d: unknown) => { log.push(String(d)); return true; } };
  let built: Built;
  try {
    built = await vmlib.buildAll({ kernel, module, log: sink });
  } catch (e) {
    throw new Error(`vm-images build check failed: ${(e as Error).message}\n${log.join('').slice(-3000)}`);
  }
  if (/make -j|mmdebstrap|apt-get download/i.test(log.join(''))) t.comment(`note: vm-images built something inside the test: ${log.join('').slice(-500)}`);
  t.comment(`kernel ${kernel} ${built.kernel.version} (${built.kernel.dir}); module ${built.module}; files disk ${built.tmemfiles}`);
  return built;
}

export async function e2eEnv(t: TapLike, o: { kernel?: KernelName } = {}): Promise<Env> {
  const kernel = vmlib.kernelName(o.kernel);
  const built = await prepare(t, kernel);
  const cleanup = new Cleanup();
  t.teardown(() => cleanup.run());
  const accel = vmlib.detectAccel();
  t.comment(`accel ${accel}`);
  return { lib: vmlib, built, kernel, accel, cleanup, builds: new Map([[kernel, built]]), t };
}

// ------------------------------------------------------------ daemon and VM

export interface DaemonHandle {
  daemon: Daemon;
  control: string;
  name: string;
  runDir: string;
}

export async function startTmemd(env: Env, o: { name?: string; maxmem?: string; capacity?: string; queues?: number; queuesMode?: 'poll' | 'notify'; runDir?: string; args?: string[] } = {}): Promise<DaemonHandle> {
  const runDir = env.cleanup.addDir(o.runDir ?? env.lib.makeRunDir('e2e'));
  const name = o.name ?? 'e2e';
  const control = join(runDir, 'ctl.sock');
  const daemon = await env.lib.startDaemon({
    cmd: TMEMD_CMD, socket: join(runDir, 'tmem.sock'), name, maxmem: o.maxmem ?? '1G',
    capacity: o.capacity ?? '1G', queues: o.queues ?? 2, control, log: null, args: [...(o.queuesMode ? ['--queues-mode', o.queuesMode] : []), ...(o.args ?? [])],
  });
  env.cleanup.add(daemon);
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
  /** The guest kernel (default: the env's, 'tmem' unless e2eEnv was given one); see the top of this file. */
  kernel?: KernelName;
}

export async function bootVm(env: Env, o: VmOpts): Promise<Vm> {
  const kernel = vmlib.kernelName(o.kernel ?? env.kernel);
  let built = env.builds.get(kernel);
  if (!built) {
    built = await prepare(env.t, kernel);
    env.builds.set(kernel, built);
  }
  const runDir = env.cleanup.addDir(o.runDir ?? o.daemon?.runDir ?? env.lib.makeRunDir('e2e'));
  const vm = await env.lib.startVm({
    ...built, accel: env.accel, ram: o.ram ?? '256M', cpus: o.cpus ?? 2, queues: o.cpus ?? 2,
    swapSize: o.swapSize ?? '768M', dataSize: o.dataSize ?? '1G', run: o.run, modparams: o.modparams,
    noModule: o.noModule, allowReboot: o.allowReboot, runDir, tmemSocket: o.daemon ? (o.socket ?? o.daemon.daemon.socket) : null,
    name: 'tmem-e2e',
  });
  env.cleanup.add(vm);
  return vm;
}

/** Waits for "@@TMEM-READY" and checks the kernel is the one asked for and the module loaded as asked. */
export async function waitReady(vm: Vm, module: boolean, ms = 180000): Promise<string> {
  const m = await vm.waitFor(/@@TMEM-READY[^\n]*/, ms);
  const line = m[0];
  if (!line.includes(` kernel=${vm.kernel.version} `)) throw new Error(`the guest does not run the ${vm.kernel.name} kernel ${vm.kernel.version}: ${line}`);
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

/**
 * At the guest script's gate `name`: the daemon's stats and the VM's entry in
 * them, taken while the guest waits there; then the guest is let go on.
 */
export async function statsAtGate(vm: Vm, d: DaemonHandle, name: string, ms?: number): Promise<{ stats: Json; guest: Json }> {
  const go = await atGate(vm, name, ms);
  const stats = await daemonStats(d);
  const guest = guestEntry(stats, d.name);
  go();
  return { stats, guest };
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

// ------------------------------------------------------------ checks and the end of a test

/** What the checks need of a tap test. */
export interface TapChecks extends TapLike {
  ok(value: unknown, message: string): unknown;
  equal(found: unknown, wanted: unknown, message: string): unknown;
  passing(): boolean;
}

/** The figures of a swapstress result (vm.waitForResult) as a comment. */
export function swapComment(t: TapLike, what: string, r: Json): void {
  const s = r.result ?? {};
  t.comment(`${what}: ${s.pages_checked} page checks of ${s.pages} pages x ${s.passes}, ${s.mismatches} mismatches; fill ${s.fill_s} s, held ${s.held_s} s, verify ${s.verify_s} s (passes ${JSON.stringify(s.verify_pass_s)})`);
}

/**
 * A swapstress result checked: exit status 0, verified, no page came back
 * different, every page checked on every pass, and more anonymous memory than
 * guest RAM (so it swapped). Its figures as a comment first unless the test
 * printed them already (comment: false).
 */
export function swapOk(t: TapChecks, what: string, r: Json, o: { comment?: boolean } = {}): void {
  const s = r.result ?? {};
  if (o.comment !== false) swapComment(t, what, r);
  t.equal(r.rc, 0, `${what}: exit status 0`);
  t.equal(s.ok, true, `${what}: verified`);
  t.equal(s.mismatches, 0, `${what}: no page came back different`);
  t.equal(s.pages_checked, s.pages * s.passes, `${what}: every page checked ${s.passes} time(s)`);
  t.ok(s.memtotal_kb * 1024 < s.pages * 4096, `${what}: more anonymous memory (${s.mib} MiB) than guest RAM (${Math.round(s.memtotal_kb / 1024)} MiB)`);
}

/**
 * tmem in use again `when` (e.g. 'after the resume'): the driver's frontswap
 * stores succeeded and its loads hit, none missed (after: the guest's counter
 * differences over that time), and tmemd took puts and answered gets with hits
 * between the VM's entries g0 and g1 (guestEntry).
 */
export function usedAgain(t: TapChecks, when: string, after: Record<string, number>, g0: Json, g1: Json): void {
  t.ok(after.drv_frontswap_stores_ok > 1000, `frontswap stores succeed ${when} (${after.drv_frontswap_stores_ok})`);
  t.ok(after.drv_frontswap_loads_hit > 1000, `frontswap loads hit ${when} (${after.drv_frontswap_loads_hit})`);
  t.equal(after.drv_frontswap_loads_miss, 0, `no load missed ${when}`);
  t.ok(g1.store?.puts - g0.store?.puts > 1000, `tmemd took puts ${when} (${g1.store?.puts - g0.store?.puts})`);
  t.ok(g1.store?.hits - g0.store?.hits > 1000, `tmemd answered gets with hits ${when} (${g1.store?.hits - g0.store?.hits})`);
}

/**
 * The end of a test: every QEMU quit first, then tmemd stopped (SIGTERM) and
 * its exit status 0 checked; on a failure the tails of the consoles and of the
 * daemon's log as comments.
 */
export async function finish(t: TapChecks, vms: Vm | Vm[], daemon: Daemon, stopped = 'tmemd stops cleanly'): Promise<void> {
  const all = Array.isArray(vms) ? vms : [vms];
  for (const vm of all) await vm.quit();
  const st = await daemon.stop();
  t.equal(st.code, 0, stopped);
  if (!t.passing()) {
    for (const vm of all) t.comment(tail(vm.output()));
    t.comment(tail(daemon.output()));
  }
}

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
