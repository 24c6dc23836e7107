#!/usr/bin/env -S node --inspect-port=192.0.2.1:9229
// tmemd: the tmem host daemon. Parses the command line (host/config.ts),
// starts the data plane, listens on one vhost-user socket per VM and on the
// operator's control socket, and runs in the foreground until SIGTERM or
// SIGINT, when it closes every guest, removes the sockets it created and
// exits. It never daemonizes (QEMU's backend program conventions).
// The interpreter line gives Node an inspector address that cannot be bound
// (INSPECTOR_BLACKHOLE in debug-guard.ts): a SIGUSR1 during Node's bootstrap,
// before debug-guard's listener exists, then fails to open the inspector.
// debug-guard first: its SIGUSR1/SIGUSR2 listeners must exist before anything else runs.
import { assertNoInspector, setDebugGuardSink } from './debug-guard.js';
import * as native from '../native/index.js';
import { ConfigError, type DaemonConfig, DEFAULT_SOCKET_MODE, HELP, parseArgs, type SocketAccessSpec, type VmSpec } from './config.js';
import { folderProblem } from './control/client.js';
import { type ControlContext, ControlServer, handleControlRequest } from './control/server.js';
import { DataPlane } from './vhost-user/client.js';
import { createLogger, type Logger } from './log.js';
import { type MetricsServer, startMetrics } from './metrics/index.js';
import { startService, stderrSink } from './service/index.js';
import { formatSize } from './units.js';
import { type ListenerIo, type SocketAccess, VhostUserListener, type Watcher } from './vhost-user/listener.js';
import { TMEM_DEVICE_FEATURES, TMEM_PROTOCOL_FEATURES, TmemVm, type TmemVmConfig, tmemWorkerModule } from './tmem/vm.js';
import { BlkVm, blkWorkerModule } from './blk/vm.js';
import { parseTestHooks, TEST_HOOKS_ENV } from './vhost-user/commands.js';

const PAGE = 4096n;

/** What --print-capabilities prints (docs/interop/vhost-user.rst, "Backend program conventions"). */
export function capabilities(): { type: string; features: string[] } {
  // QEMU's VHostUserBackendType list has no tmem; no vhost-user.json descriptor is installed for that reason.
  return { type: 'tmem', features: [] };
}

function nativeIo(): ListenerIo {
  return {
    recvMsg: (fd, buf, fdsOut, maxFds) => native.recvMsg(fd, buf, fdsOut, maxFds),
    sendMsg: (fd, buf, fds) => native.sendMsg(fd, buf, fds),
    close: (fd) => native.close(fd),
    adoptEventfd: (fd) => native.adoptEventfd(fd),
    listenUnix: (path, backlog, access) => native.listenUnix(path, backlog, access),
    peerCredentials: (fd) => native.peerCredentials(fd),
    acceptConnection: (fd) => native.acceptConnection(fd),
    checkListeningUnixSocket: (fd) => native.checkListeningUnixSocket(fd),
  };
}

/**
 * Some process listens on this socket path (else the file is a stale one).
 * Asked of the kernel (sock_diag, native/sockdiag.ts), never by connecting:
 * a connect would become the other daemon's guest for a moment, and a QEMU
 * connecting then would be refused as a second guest.
 */
function socketInUse(path: string): boolean {
  try {
    return native.unixPathHasListener(path);
  } catch (e) {
    throw new Error(`cannot tell whether a process listens on ${path} (${(e as Error).message}); remove it by hand if none does`);
  }
}

/** A VM's settings as its devices take them (tmem and tmem-blk alike), listening at `where`. */
function vmConfig(v: VmSpec, where: string): TmemVmConfig {
  const lim = v.limits;
  return { name: v.name, maxmemBytes: v.maxmemBytes, shareGroup: v.shareGroup, where, maxRamBytes: lim.maxRamBytes, allowUnsealed: lim.allowUnsealed, tmemMaxBytes: lim.tmemMaxBytes, ramBytes: lim.ramBytes };
}

/** A VM's socket-mode/owner/group (or the --socket-* defaults) with names resolved; throws on an unknown user or group. */
function socketAccess(vm: string, spec: SocketAccessSpec, defaults: SocketAccessSpec): SocketAccess {
  const owner = spec.owner ?? defaults.owner;
  const group = spec.group ?? defaults.group;
  const uid = owner === null ? undefined : native.lookupUid(owner);
  if (uid === null) throw new Error(`vm ${vm}: socket-owner '${owner}': no such user`);
  const gid = group === null ? undefined : native.lookupGid(group);
  if (gid === null) throw new Error(`vm ${vm}: socket-group '${group}': no such group`);
  return { mode: spec.mode ?? defaults.mode ?? DEFAULT_SOCKET_MODE, uid, gid };
}

/** "mode 0660, owner 64055, group 993" for the listening line. */
function describeAccess(a: SocketAccess): string {
  return `mode 0${(a.mode ?? 0).toString(8)}${a.uid !== undefined ? `, owner ${a.uid}` : ''}${a.gid !== undefined ? `, group ${a.gid}` : ''}`;
}

class Daemon {
  private dp: DataPlane | null = null;
  private watcher: native.FdWatcher | null = null;
  private readonly listeners: VhostUserListener[] = [];
  private readonly vms: TmemVm[] = [];
  private readonly blkVms: BlkVm[] = [];
  private control: ControlServer | null = null;
  private metrics: MetricsServer | null = null;
  /** The capacity in force (tmemctl set capacity=) and the most it may be (--capacity). */
  private readonly capacity: { readonly maxBytes: bigint; currentBytes: bigint };
  private stopping: Promise<void> | null = null;
  private readonly startedAt = new Date();

  constructor(
    private readonly cfg: DaemonConfig,
    private readonly log: Logger,
  ) {
    this.capacity = { maxBytes: cfg.capacityBytes, currentBytes: cfg.capacityBytes };
  }

  /** Throws with a one-line message on any startup failure (after undoing what was done). */
  async start(): Promise<void> {
    const { cfg, log } = this;
    // tmem-blk disks are checked before anything starts (size, overflow folder)
    const blkVms = new Map<string, BlkVm>();
    for (const v of cfg.vms) {
      if (v.blk === null) continue;
      if (cfg.blkOverflowDir === null) throw new Error(`VM ${v.name}: blk-socket= needs --blk-overflow-dir DIR (a block device cannot refuse a write: pages the store has no room for go to DIR/<vm>.overflow)`);
      blkVms.set(v.name, new BlkVm({ ...vmConfig(v, v.blk.socket), sizeBytes: v.blk.sizeBytes, overflowDir: cfg.blkOverflowDir }, { numQueues: cfg.queues }));
    }
    try {
      this.dp = await DataPlane.start({
        mode: cfg.queuesMode,
        pollSpinMs: cfg.pollSpinMs,
        log,
        // Every device kind the worker may run; its store is made from deviceConfig on first use.
        devices: [{ kind: 'tmem', module: tmemWorkerModule() }, ...(cfg.vms.some((v) => v.blk !== null) ? [{ kind: 'blk', module: blkWorkerModule() }] : [])],
        deviceConfig: { capacityPages: Number(cfg.capacityBytes / PAGE), maxPoolsPerGuest: cfg.maxPools },
      });
    } catch (e) {
      throw new Error(`cannot start the data plane: ${(e as Error).message}`);
    }
    try {
      const watcher = new native.FdWatcher((msg, err) => log.error(`fd watcher: ${msg}${err ? `: ${(err as Error).message ?? String(err)}` : ''}`));
      this.watcher = watcher;
      const w: Watcher = { watch: (fd, cb) => watcher.watch(fd, cb), unwatch: (fd) => watcher.unwatch(fd) };
      const io = nativeIo();
      for (const v of cfg.vms) {
        const where = v.socket ?? `fd=${v.fd}`;
        const vm = new TmemVm(vmConfig(v, where), { numQueues: cfg.queues });
        const access = v.socket !== null ? socketAccess(v.name, v.socketAccess, cfg.socketDefaults) : undefined;
        const l = new VhostUserListener({ on: v.socket !== null ? { path: v.socket } : { fd: v.fd! }, device: vm, vrings: this.dp, label: `vm ${v.name}`, io, watcher: w, log, inUse: socketInUse, access });
        l.start();
        this.vms.push(vm);
        this.listeners.push(l);
        log.info(`vm ${v.name}: listening on ${where} (maxmem ${formatSize(v.maxmemBytes)}${v.shareGroup ? `, share group ${v.shareGroup}` : ''})${access ? ` with ${describeAccess(access)}` : ''}`);
        const bvm = blkVms.get(v.name);
        if (v.blk !== null && bvm !== undefined) {
          // tmem-blk (docs/tmem-blk.md): the VM's block device on its own socket, same store guest
          const bAccess = socketAccess(v.name, v.socketAccess, cfg.socketDefaults);
          const bl = new VhostUserListener({ on: { path: v.blk.socket }, device: bvm, vrings: this.dp, io, watcher: w, log, inUse: socketInUse, access: bAccess });
          bl.start();
          this.blkVms.push(bvm);
          this.listeners.push(bl);
          log.info(`vm ${v.name}: tmem-blk listening on ${v.blk.socket} (disk ${formatSize(v.blk.sizeBytes)}, overflow ${bvm.overflowPath}) with ${describeAccess(bAccess)}`);
        }
      }
      const dp = this.dp;
      const ctx: ControlContext = { vms: this.vms, stats: () => dp.stats(), info: () => this.info(), log, kindControl: (kind, op, args) => dp.kindControl(kind, op, args), capacity: this.capacity };
      if (cfg.control !== null) {
        const control = new ControlServer(cfg.control, ctx, socketInUse);
        try {
          await control.start();
        } catch (e) {
          throw new Error(`cannot listen on the control socket ${cfg.control}: ${folderProblem(cfg.control) ?? (e as Error).message}`);
        }
        this.control = control;
        log.info(`control socket on ${cfg.control} (mode 0600; root${process.getuid?.() ? ` and uid ${process.getuid()}` : ''} only)`);
      }
      if (cfg.metricsListen !== null) {
        // the snapshot `tmemctl stats` prints, taken at each scrape
        this.metrics = await startMetrics(cfg.metricsListen, async () => {
          const r = await handleControlRequest(ctx, { cmd: 'stats' });
          if (!r.ok) throw new Error(r.error);
          return r.result;
        }, log, () => ({ workerAlive: dp.alive, commandsInFlight: dp.inFlight }));
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    log.info(
      `ready: capacity ${formatSize(cfg.capacityBytes)}, ${cfg.queuesMode} mode${cfg.queuesMode === 'poll' ? ` (idle spin ${cfg.pollSpinMs} ms)` : ''}, ${cfg.queues} queue(s) per guest, ${cfg.maxPools} pools per guest, features 0x${TMEM_DEVICE_FEATURES.toString(16)}, protocol features 0x${TMEM_PROTOCOL_FEATURES.toString(16)}`,
    );
  }

  private info(): Record<string, unknown> {
    const { cfg } = this;
    return {
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      capacityBytes: this.capacity.currentBytes.toString(),
      capacityMaxBytes: cfg.capacityBytes.toString(),
      queuesPerGuest: cfg.queues,
      pollSpinMs: cfg.queuesMode === 'poll' ? (Number.isFinite(cfg.pollSpinMs) ? cfg.pollSpinMs : 'inf') : null,
      maxPoolsPerGuest: cfg.maxPools,
      vms: this.vms.length,
      guestsConnected: this.vms.filter((v) => v.session !== null).length,
      refusedConnections: this.listeners.reduce((a, l) => a + l.refused, 0),
    };
  }

  /** Closes every guest, stops listening (removing our socket files), stops the data plane. Idempotent. */
  stop(): Promise<void> {
    if (!this.stopping) this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    for (const l of this.listeners) {
      try {
        l.stop();
      } catch (e) {
        this.log.warn(`stopping ${l.where}: ${(e as Error).message}`);
      }
    }
    if (this.metrics) {
      try {
        await this.metrics.stop();
      } catch (e) {
        this.log.warn(`stopping the metrics endpoint: ${(e as Error).message}`);
      }
    }
    if (this.control) {
      try {
        await this.control.stop();
      } catch (e) {
        this.log.warn(`stopping the control socket: ${(e as Error).message}`);
      }
    }
    if (this.dp) {
      try {
        await this.dp.stop();
      } catch (e) {
        this.log.warn(`stopping the data plane: ${(e as Error).message}`);
      }
    }
    for (const b of this.blkVms) b.removeOverflowFile();
    try {
      this.watcher?.close();
    } catch {
      /* ignore */
    }
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tmemd: ${e.message} (see tmemd --help)\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.kind === 'capabilities') {
    process.stdout.write(JSON.stringify(capabilities(), null, 2) + '\n');
    return 0;
  }
  // Test hooks make the worker stall on purpose: never in production.
  const hooks = process.env[TEST_HOOKS_ENV];
  if (hooks !== undefined && hooks !== '') {
    if (process.env.NODE_ENV !== 'test') {
      process.stderr.write(`tmemd: ${TEST_HOOKS_ENV} is a test hook; refused outside NODE_ENV=test\n`);
      return 1;
    }
    try {
      parseTestHooks(hooks);
    } catch (e) {
      process.stderr.write(`tmemd: ${(e as Error).message}\n`);
      return 2;
    }
  }
  const log = createLogger(parsed.config.logLevel, stderrSink());
  let svc: ReturnType<typeof startService>; // systemd: its sockets by name, sd_notify (host/service/)
  try {
    svc = startService(parsed.config, log);
  } catch (e) {
    process.stderr.write(`tmemd: ${(e as Error).message}\n`);
    return 1;
  }
  const { config: cfg, notifier } = svc;
  if (hooks) log.warn(`test hooks enabled (${TEST_HOOKS_ENV}=${hooks}): not for production`);
  for (const w of cfg.warnings) log.warn(w);
  setDebugGuardSink((m) => log.warn(m));
  try {
    assertNoInspector();
  } catch (e) {
    process.stderr.write(`tmemd: ${(e as Error).message}\n`);
    return 1;
  }
  // Last resort only: every message and request has its own try/catch. A bug
  // that still escapes is logged; dying would take every guest's QEMU down.
  process.on('uncaughtException', (e) => log.error(`BUG: uncaught exception (daemon continues): ${e.stack ?? e}`));
  process.on('unhandledRejection', (e) => log.error(`BUG: unhandled rejection (daemon continues): ${(e as Error)?.stack ?? String(e)}`));

  const d = new Daemon(cfg, log);
  // Signals are caught from the start: one that arrives while starting stops the daemon once it has started.
  let signalled: NodeJS.Signals | null = null;
  let onStopSignal: ((sig: NodeJS.Signals) => void) | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      log.warn(`${sig} again: exiting at once`);
      process.exit(1);
    }
    signalled = sig;
    onStopSignal?.(sig);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onSignal);
  try {
    await d.start();
    // Again now that the event loop has turned: a SIGUSR1 during Node's own
    // bootstrap, before debug-guard existed, may have opened the inspector since.
    assertNoInspector();
  } catch (e) {
    await d.stop();
    process.stderr.write(`tmemd: ${(e as Error).message}\n`);
    notifier.status(`failed: ${(e as Error).message}`);
    return 1;
  }
  notifier.ready(`serving ${cfg.vms.length} VM socket(s)`);
  return await new Promise<number>((resolve) => {
    onStopSignal = (sig: NodeJS.Signals) => {
      log.info(`${sig}: stopping`);
      notifier.stopping();
      // A stuck data plane must not keep the daemon from exiting: the sockets are removed first, synchronously.
      const force = setTimeout(() => {
        log.warn('stop took too long; exiting');
        resolve(0);
      }, 3000);
      force.unref();
      void d.stop().then(() => {
        clearTimeout(force);
        log.info('stopped');
        resolve(0);
      });
    };
    if (signalled) onStopSignal(signalled);
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The worker thread or a stray handle must not keep a stopped daemon alive.
    setImmediate(() => process.exit(code));
  },
  (e) => {
    process.stderr.write(`tmemd: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
