// The main thread's handle on the vring worker (host/ARCHITECTURE.md). Every
// call posts one Command (commands.ts) and returns a Promise of its reply: the
// event loop never waits on the worker, so one guest's late command does not
// hold up other VMs' sockets or the control socket.
//
// A command not answered within the reply timeout rejects with a
// DataPlaneError (answered = false); the worker still runs it later, in
// order, and its late reply is logged. Commands are executed in the order
// posted, so a connection that gives up on a late command and closes posts
// its `close` after it: nothing of the guest (mapping, fds, pages) stays once
// the worker gets there. Closes not yet confirmed are counted in
// `pendingRemovals`.
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import * as native from '../../native/index.js';
import type { Logger } from '../log.js';
import {
  type Command,
  CTL_BYTES,
  CTL_POSTED,
  CTL_STATE,
  type DeviceModuleSpec,
  type Envelope,
  type Reply,
  type WorkerConfig,
  type WorkerEvent,
  WorkerState,
} from './commands.js';
import type { MemoryPolicy, MemoryRegion, VringAddr } from './device.js';
import { compiledModuleUrl } from './module-url.js';

export class DataPlaneError extends Error {
  /** The worker answered (with this error); false: it was not reached or did not answer in time. */
  readonly answered: boolean;
  constructor(msg: string, answered = false) {
    super(msg);
    this.name = 'DataPlaneError';
    this.answered = answered;
  }
}

export interface DataPlaneOptions {
  readonly mode: 'poll' | 'notify';
  readonly log: Logger;
  /** The device kinds the worker loads (their worker halves, by module URL). */
  readonly devices: readonly DeviceModuleSpec[];
  /** Given to every device module as WorkerHost.config (structured clone). */
  readonly deviceConfig: Readonly<Record<string, unknown>>;
  /** Poll mode: ms of idle spinning before the worker blocks in poll(2) with kicks re-enabled (default 50; Infinity = spin forever). */
  readonly pollSpinMs?: number;
  /** How long a call waits for the worker's reply before it rejects (default 5000 ms). */
  readonly replyTimeoutMs?: number;
}

/** What a connection opens in the worker. */
export interface OpenOptions {
  readonly vm: string;
  readonly kind: string;
  readonly numQueues: number;
  readonly policy: MemoryPolicy;
  /** The device's open parameters (VhostUserDevice.open), structured-clonable. */
  readonly params: unknown;
}

interface Pending {
  readonly op: string;
  readonly at: number;
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout | null;
  /** Timed out already: the reply, when it comes, is only logged (and given to onLate). */
  late: boolean;
  readonly onLate: ((r: Reply) => void) | undefined;
}

export class DataPlane {
  private readonly ctl: Int32Array;
  private readonly port: MessagePort;
  private readonly worker: Worker;
  private readonly wakeFd: number;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly exited: Promise<void>;
  private readonly gone: { value: boolean };
  private seq = 0;
  private nextId = 1;
  private dead: string | null = null;
  private readonly pending = new Map<number, Pending>();
  /** Instances whose close the worker has not confirmed yet. */
  private readonly removals = new Set<number>();

  private constructor(ctl: Int32Array, port: MessagePort, worker: Worker, wakeFd: number, log: Logger, timeoutMs: number, exited: Promise<void>, gone: { value: boolean }) {
    this.ctl = ctl;
    this.port = port;
    this.worker = worker;
    this.wakeFd = wakeFd;
    this.log = log;
    this.timeoutMs = timeoutMs;
    this.exited = exited;
    this.gone = gone;
    port.on('message', (r: Reply) => this.onReply(r));
    // The port must not keep the process alive: the worker does that while it runs.
    port.unref();
  }

  static async start(opts: DataPlaneOptions): Promise<DataPlane> {
    if (opts.mode !== 'poll' && opts.mode !== 'notify') throw new DataPlaneError(`mode must be poll or notify, not ${String(opts.mode)}`);
    const sab = new SharedArrayBuffer(CTL_BYTES);
    const ctl = new Int32Array(sab);
    const wakeFd = native.eventfd(0);
    const { port1, port2 } = new MessageChannel();
    const config: WorkerConfig = {
      ctl: sab,
      port: port2,
      mode: opts.mode,
      wakeFd,
      pollSpinMs: opts.pollSpinMs ?? 50,
      devices: opts.devices,
      deviceConfig: opts.deviceConfig,
    };
    let worker: Worker;
    try {
      worker = new Worker(new URL(compiledModuleUrl(import.meta.url, './worker.js')), { workerData: config, transferList: [port2], name: 'tmemd-vrings' });
    } catch (e) {
      native.close(wakeFd);
      port1.close();
      throw e;
    }
    const log = opts.log;
    let dp: DataPlane | null = null;
    // The wake eventfd is closed only once the worker is gone (it may be blocked in poll(2) on it).
    const gone = { value: false };
    const exited = new Promise<void>((res) =>
      worker.once('exit', () => {
        gone.value = true;
        native.closeQuietly([wakeFd]);
        res();
      }),
    );
    await new Promise<void>((res, rej) => {
      worker.on('message', (m: WorkerEvent) => {
        if (m.type === 'ready') res();
        else if (m.type === 'failed') rej(new DataPlaneError(`vring worker failed to start: ${m.msg}`));
        else log[m.level](m.msg);
      });
      worker.once('error', (e) => {
        if (dp) dp.markDead(`vring worker failed: ${e.message}`);
        else rej(new DataPlaneError(`vring worker failed to start: ${e.message}`));
        log.error(`vring worker failed: ${e.stack ?? e.message}`);
      });
      worker.once('exit', (code) => {
        if (dp) dp.markDead(`vring worker exited (code ${code})`);
        else rej(new DataPlaneError(`vring worker exited during start (code ${code})`));
      });
    }).catch(async (e) => {
      await worker.terminate();
      port1.close();
      throw e;
    });
    dp = new DataPlane(ctl, port1, worker, wakeFd, log, opts.replyTimeoutMs ?? 5000, exited, gone);
    await dp.call({ op: 'ping' });
    return dp;
  }

  private markDead(why: string): void {
    if (this.dead) return;
    this.dead = why;
    if (Atomics.load(this.ctl, CTL_STATE) !== WorkerState.Stopped) this.log.error(why);
    const err = new DataPlaneError(`data plane is down: ${why}`);
    for (const [seq, p] of this.pending) {
      if (p.timer) clearTimeout(p.timer);
      if (!p.late) p.reject(err);
      this.pending.delete(seq);
    }
    this.removals.clear();
  }

  /**
   * Posts one command; resolves with its value or rejects with a
   * DataPlaneError (answered = true: the worker refused it; false: not
   * reached or not answered within the timeout).
   */
  call(cmd: Command, onLate?: (r: Reply) => void): Promise<unknown> {
    if (this.dead || this.gone.value) return Promise.reject(new DataPlaneError(`data plane is down: ${this.dead ?? 'worker gone'}`));
    const seq = (this.seq = (this.seq + 1) | 0) || (this.seq = 1);
    const env: Envelope = { ...cmd, seq };
    try {
      this.port.postMessage(env);
    } catch (e) {
      return Promise.reject(new DataPlaneError(`cannot post ${cmd.op} to the vring worker: ${(e as Error).message}`));
    }
    Atomics.add(this.ctl, CTL_POSTED, 1);
    try {
      native.eventfdWrite(this.wakeFd, 1n);
    } catch (e) {
      this.markDead(`cannot wake the vring worker: ${(e as Error).message}`);
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { op: cmd.op, at: Date.now(), resolve, reject, timer: null, late: false, onLate };
      p.timer = setTimeout(() => {
        p.timer = null;
        p.late = true;
        this.log.error(`vring worker did not answer ${cmd.op} within ${this.timeoutMs} ms`);
        reject(new DataPlaneError(`vring worker did not answer ${cmd.op} within ${this.timeoutMs} ms (stalled?)`));
      }, this.timeoutMs);
      p.timer.unref();
      this.pending.set(seq, p);
    });
  }

  private onReply(r: Reply): void {
    const p = this.pending.get(r.seq);
    if (!p) return;
    this.pending.delete(r.seq);
    if (p.timer) clearTimeout(p.timer);
    if (p.late) {
      this.log.warn(`vring worker answered ${p.op} after ${Date.now() - p.at} ms${r.ok ? '' : `: ${r.error}`}`);
      p.onLate?.(r);
      return;
    }
    if (r.ok) p.resolve(r.value);
    else p.reject(new DataPlaneError(r.error, true));
  }

  /** Commands posted and not answered yet (late ones included). */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Whether the worker is alive and has no command overdue. */
  get alive(): boolean {
    if (this.dead !== null || this.gone.value) return false;
    for (const p of this.pending.values()) if (p.late) return false;
    return true;
  }

  // ------------------------------------------------------------ connections

  /** The id of the next connection: one id per connection, used by every command and stats record of it. */
  newInstanceId(): number {
    return this.nextId++;
  }

  /** A connection opened: the worker opens the device's instance `id` for it. */
  async open(id: number, o: OpenOptions): Promise<void> {
    await this.call({ op: 'open', id, vm: o.vm, kind: o.kind, numQueues: o.numQueues, policy: o.policy, params: o.params });
  }

  /**
   * The connection is gone: the worker stops its rings, unmaps its memory,
   * closes its fds and its device instance. Never rejects: a close the
   * worker does not confirm in time stays counted in pendingRemovals until
   * it does (it is already posted, and runs in order). Resolves true when
   * confirmed within the timeout.
   */
  async close(id: number): Promise<boolean> {
    this.removals.add(id);
    try {
      // A late confirmation, however late, ends the pending removal.
      await this.call({ op: 'close', id }, () => this.removalDone(id));
      this.removalDone(id);
      return true;
    } catch (e) {
      if ((e as DataPlaneError).answered) {
        this.log.error(`closing instance ${id}: ${(e as Error).message}`);
        this.removalDone(id);
        return true;
      }
      // Down: the worker is gone, and every instance's mapping and fds with it.
      if (this.dead || this.gone.value) this.removals.delete(id);
      else this.log.warn(`instance ${id}: the vring worker has not confirmed its removal; it is queued and runs when the worker gets to it`);
      return false;
    }
  }

  private removalDone(id: number): void {
    if (!this.removals.delete(id)) return;
    if (this.removals.size === 0) this.log.debug('vring worker confirmed every queued removal');
  }

  /** Closes the worker has not confirmed (tests, stats). */
  get pendingRemovals(): number {
    return this.removals.size;
  }

  // ------------------------------------------------------------ messages

  async setFeatures(id: number, features: bigint): Promise<void> {
    await this.call({ op: 'setFeatures', id, features });
  }

  /** Hands the regions' fds to the worker (closed here if the command cannot be posted). Resolves with the guest's RAM in bytes. */
  async setMemTable(id: number, regions: readonly MemoryRegion[]): Promise<bigint> {
    return (await this.handOver(
      regions.map((r) => r.fd),
      () => this.call({ op: 'setMemTable', id, regions }),
    )) as bigint;
  }

  async setVringNum(id: number, queue: number, num: number): Promise<void> {
    await this.call({ op: 'setVringNum', id, queue, num });
  }

  async setVringAddr(id: number, queue: number, addr: VringAddr): Promise<void> {
    await this.call({ op: 'setVringAddr', id, queue, addr });
  }

  async setVringBase(id: number, queue: number, base: number): Promise<void> {
    await this.call({ op: 'setVringBase', id, queue, base });
  }

  /** Stops the ring and resolves with the next avail index it would have processed. */
  async getVringBase(id: number, queue: number): Promise<number> {
    return (await this.call({ op: 'getVringBase', id, queue })) as number;
  }

  async setVringFd(id: number, which: 'setVringKick' | 'setVringCall' | 'setVringErr', queue: number, fd: number): Promise<void> {
    await this.handOver(fd >= 0 ? [fd] : [], () => this.call({ op: which, id, queue, fd }));
  }

  async setVringEnable(id: number, queue: number, enable: boolean): Promise<void> {
    await this.call({ op: 'setVringEnable', id, queue, enable });
  }

  async reset(id: number): Promise<void> {
    await this.call({ op: 'reset', id });
  }

  /** A device control op on one instance (WorkerDevice.control). */
  control(id: number, name: string, args?: unknown): Promise<unknown> {
    return this.call({ op: 'control', id, name, args: args ?? null });
  }

  /** A kind-wide control op (DeviceKind.control). */
  kindControl(kind: string, name: string, args?: unknown): Promise<unknown> {
    return this.call({ op: 'kindControl', kind, name, args: args ?? null });
  }

  /** Counters, per-instance state and every kind's statistics (one round trip). */
  async stats(): Promise<WorkerStats> {
    return (await this.call({ op: 'stats' })) as WorkerStats;
  }

  /** Tests only (the worker refuses it unless TMEMD_TEST_HOOKS=1): the worker stalls for ms milliseconds. */
  async debugStall(ms: number): Promise<void> {
    await this.call({ op: 'debugStall', ms });
  }

  /**
   * Runs `send`, which hands `fds` to the worker. If the command cannot be
   * posted (data plane down), nobody owns the fds: they are closed here, so
   * a refused message leaks nothing. Once posted they are the worker's, even
   * if its reply is late or an error.
   */
  private handOver(fds: readonly number[], send: () => Promise<unknown>): Promise<unknown> {
    if (this.dead || this.gone.value) native.closeQuietly(fds.filter((fd) => Number.isInteger(fd) && fd >= 0));
    return send();
  }

  /** Stops the worker (every instance's rings, mappings and fds go with it). */
  async stop(): Promise<void> {
    let stopped = false;
    if (!this.dead && !this.gone.value) {
      try {
        await this.call({ op: 'stop' });
        stopped = true;
      } catch (e) {
        this.log.warn(`data plane stop: ${(e as Error).message}`);
      }
    }
    if (!stopped && !this.gone.value) {
      try {
        native.eventfdWrite(this.wakeFd, 1n); // out of poll(2), so that terminate() can act
      } catch {
        /* already gone */
      }
      await this.worker.terminate();
    }
    await this.exited;
    this.markDead('data plane stopped');
    this.port.close();
  }
}

/** The `stats` reply. */
export interface WorkerStats {
  readonly mode: 'poll' | 'notify';
  /** The worker's own counters (WORKER_COUNTERS by name). */
  readonly worker: Record<string, number>;
  /** Host-wide sums of every instance block, live and closed: { vring: {...}, tmem: {...} }. */
  readonly counters: Record<string, Record<string, number>>;
  /** Per connection: id, vm, kind, queues, vring counters, device counters and stats. */
  readonly instances: Record<string, unknown>[];
  /** Per kind: DeviceKind.stats() (tmem: the store). */
  readonly kinds: Record<string, Record<string, unknown>>;
}
