// The one place that knows the order of stopping: every QEMU first, then
// every tmemd (QEMU waits on the daemon's replies; a daemon gone first leaves
// QEMU hanging or aborting), then the run directories. Used by run-vm.mjs,
// kernbench, and test/e2e/harness.ts (Cleanup).
import fs from 'node:fs';
import path from 'node:path';
import { buildAll, type Built, type KernelName } from './build.js';
import { Daemon, type Exit } from './daemon.js';
import { makeRunDir, mib, sleep, type Sink } from './paths.js';
import { Vm, type VmOptions } from './vm.js';

export interface StopResult { qemu: Exit[]; daemons: Exit[] }

export class Session {
  readonly vms: Vm[] = [];
  readonly daemons: Daemon[] = [];
  /** directories removed after both are stopped */
  readonly dirs: string[] = [];
  #stopping: Promise<StopResult> | null = null;
  #guarded = false;
  readonly #onExit = (): void => this.killSync();
  readonly #onSignal = (sig: NodeJS.Signals): void => {
    this.killSync();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };

  add<T extends Vm | Daemon>(x: T): T {
    if (x instanceof Vm) this.vms.push(x); else this.daemons.push(x);
    return x;
  }

  addDir(dir: string): string {
    if (!this.dirs.includes(dir)) this.dirs.push(dir);
    return dir;
  }

  /**
   * If this process exits or gets SIGTERM/SIGINT before stop(), SIGKILL QEMU
   * and then the daemons, synchronously, so that nothing is left behind.
   */
  guardProcess(): this {
    if (this.#guarded) return this;
    this.#guarded = true;
    process.on('exit', this.#onExit);
    process.on('SIGTERM', this.#onSignal);
    process.on('SIGINT', this.#onSignal);
    return this;
  }

  #unguard(): void {
    if (!this.#guarded) return;
    this.#guarded = false;
    process.off('exit', this.#onExit);
    process.off('SIGTERM', this.#onSignal);
    process.off('SIGINT', this.#onSignal);
  }

  /** The last resort: SIGKILL every QEMU, then every daemon, without waiting; remove the directories. */
  killSync(): void {
    for (const v of this.vms) v.killSync();
    for (const d of this.daemons) d.killSync();
    for (const dir of this.dirs) fs.rmSync(dir, { recursive: true, force: true });
  }

  /** QEMU first (QMP quit; SIGKILL if it does not go), then the daemons (continued if SIGSTOPped), then the dirs. Once. */
  stop(): Promise<StopResult> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<StopResult> {
    const r: StopResult = { qemu: [], daemons: [] };
    for (const v of this.vms) {
      // a VM whose daemon is dead or stopped may not quit cleanly
      if (!v.exited()) await Promise.race([v.quit(6000), sleep(8000)]);
      r.qemu.push(v.exited() ?? await v.kill('SIGKILL'));
    }
    for (const d of this.daemons) r.daemons.push(await d.stop(10000));
    for (const dir of this.dirs) fs.rmSync(dir, { recursive: true, force: true });
    this.#unguard();
    return r;
  }
}

export interface LaunchOptions extends Omit<Partial<VmOptions>, 'kernel' | 'qemu' | 'rootfs' | 'tmemfiles' | 'tmemSocket'> {
  kernel?: KernelName;
  /** start tmemd and give the VM the tmem device (default true) */
  tmem?: boolean;
  /** the daemon command */
  tmemd?: string | undefined;
  maxmem?: string | undefined;
  capacity?: string | undefined;
  /**
   * tmem-blk: a disk of this size served by the daemon (blk-socket= in the run
   * directory, --blk-overflow-dir RUNDIR/overflow), given to the VM as QEMU's
   * vhost-user-blk-pci (the guest finds it at PCI 00:10.0). Needs tmem !== false.
   */
  blkSize?: string | undefined;
  daemonArgs?: string[] | undefined;
  daemonLog?: Sink | null | undefined;
  /** virtio_tmem.ko (default: the kernel's own, see buildAll) */
  module?: string | undefined;
  extra?: string | undefined;
  log?: Sink | null | undefined;
  /** keep the run directory after stop() */
  keepRunDir?: boolean | undefined;
}

export interface Launched { session: Session; vm: Vm; daemon: Daemon | null; built: Built; runDir: string; stop(): Promise<StopResult> }

/**
 * The whole thing, as `npm run vm` does it: build, start the daemon (unless
 * tmem === false), start the VM; stop() quits QEMU first, then the daemon.
 */
export async function launch(opts: LaunchOptions = {}): Promise<Launched> {
  const log = opts.log === undefined ? process.stderr : opts.log;
  const built = await buildAll({ kernel: opts.kernel ?? 'tmem', module: opts.noModule ? 'none' : opts.module, extra: opts.extra, log });
  const session = new Session();
  const runDir = opts.runDir ?? makeRunDir(opts.name ?? 'vm');
  if (!opts.keepRunDir && !opts.runDir) session.addDir(runDir);
  const cpus = opts.cpus ?? 2;
  const queues = opts.queues ?? cpus;
  let daemon: Daemon | null = null;
  const blkSocket = opts.blkSize ? path.join(runDir, 'blk.sock') : undefined;
  try {
    if (opts.blkSize && opts.tmem === false) throw new Error('launch: blkSize needs the daemon (tmem !== false)');
    if (blkSocket) fs.mkdirSync(path.join(runDir, 'overflow'), { recursive: true });
    if (opts.tmem !== false) {
      daemon = session.add(await Daemon.start({
        blkSocket, blkSize: opts.blkSize, blkOverflowDir: blkSocket ? path.join(runDir, 'overflow') : undefined,
        cmd: opts.tmemd, socket: path.join(runDir, 'tmem.sock'), name: opts.name ?? 'vm0',
        maxmem: opts.maxmem ?? `${2 * mib(opts.ram ?? '512M')}M`, capacity: opts.capacity ?? '1G', queues,
        control: path.join(runDir, 'tmemd-control.sock'), args: opts.daemonArgs ?? [], log: opts.daemonLog === undefined ? log : opts.daemonLog,
      }));
    }
    const vm = session.add(await Vm.start({ ...opts, ...built, cpus, queues, runDir, tmemSocket: daemon ? daemon.socket : null, blkSocket: blkSocket ?? null }));
    return { session, vm, daemon, built, runDir, stop: () => session.stop() };
  } catch (e) {
    await session.stop();
    throw e;
  }
}
