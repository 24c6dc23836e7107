// The main thread's handle on the data-plane worker (host/ARCHITECTURE.md,
// "host/dataplane/"). Every call is synchronous: the command goes into the
// SPSC ring of the shared buffer, the worker is woken through its wake
// eventfd (it may be blocked in poll(2)), and the caller sleeps in
// Atomics.wait on the reply slot. A worker that does not answer within the
// reply timeout is reported as a DataPlaneError, never waited for forever.
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as native from '../../native/index.js';
import type { Logger } from '../log.js';
import {
  Cmd,
  CMD_NAMES,
  CMD_SLOTS,
  COUNTER_NAMES,
  type CounterName,
  CTL_CMD_HEAD,
  CTL_CMD_TAIL,
  CTL_REPLY_SEQ,
  CTL_STATE,
  jsonEncode,
  OFF_REPLY,
  REC_MAX_ARGS,
  REC_MAX_PAYLOAD,
  REC_OFF_ARGS,
  REC_OFF_CMD,
  REC_OFF_GUEST,
  REC_OFF_PAYLOAD,
  REC_OFF_PAYLOAD_LEN,
  REC_OFF_QUEUE,
  REC_OFF_SEQ,
  recordOffset,
  REPLY_OFF_ERROR,
  REPLY_OFF_PAYLOAD,
  REPLY_OFF_PAYLOAD_LEN,
  REPLY_OFF_SEQ,
  REPLY_OFF_VALUE,
  SHARED_BYTES,
  sharedViews,
  type SharedViews,
  type WorkerConfig,
  type WorkerLogMessage,
  WorkerState,
} from './commands.js';

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
  readonly capacityPages: number;
  readonly maxPoolsPerGuest: number;
  readonly log: Logger;
  /** Poll mode: ms of idle spinning before the worker blocks in poll(2) with kicks re-enabled (default 50; Infinity = spin forever). */
  readonly pollSpinMs?: number;
  /** How long a call waits for the worker's reply before it throws (default 5000 ms). */
  readonly replyTimeoutMs?: number;
  /** Pages freed per store.reclaimStep while the worker is idle (default 256). */
  readonly reclaimBudget?: number;
}

export interface MemRegion {
  readonly fd: number;
  readonly guestPhysAddr: bigint;
  readonly size: bigint;
  readonly userspaceAddr: bigint;
  readonly mmapOffset: bigint;
}

export interface VringAddr {
  readonly descUser: bigint;
  readonly usedUser: bigint;
  readonly availUser: bigint;
}

export interface AddGuestOptions {
  readonly name: string;
  readonly maxmemBytes: bigint;
  readonly shareGroup: string | null;
  readonly numQueues: number;
  /** Most guest RAM (sum of the mem table's regions) accepted; larger tables are refused (default: no bound). */
  readonly maxRamBytes?: bigint;
  /** Accept guest RAM files not sealed against shrinking (a tmpfs or hugetlbfs file); default false. */
  readonly allowUnsealed?: boolean;
  /** Most tmem pages (both kinds) the guest may hold, in bytes; null/undefined: no cap but the host's capacity. */
  readonly tmemMaxBytes?: bigint | null;
  /** RAM the maxmem rule assumes at least (the persistent limit is maxmem - max(this, reported RAM)); default 0. */
  readonly ramFloorBytes?: bigint;
}

/** What the main thread checks of a guest before the worker maps anything (setMemTable). */
interface GuestPolicy {
  readonly name: string;
  readonly numQueues: number;
  readonly maxRamBytes: bigint | null;
  readonly allowUnsealed: boolean;
}

/** How often guests whose removal the worker has not confirmed are tried again (ms). */
const REMOVAL_RETRY_MS = 100;

/** Most queues one guest may have (virtio allows 65535; QEMU's generic device far fewer). */
export const MAX_QUEUES_PER_GUEST = 1024;
/** Most memory regions in one mem table (vhost-user's CONFIGURE_MEM_SLOTS maximum is 509). */
export const MAX_MEM_REGIONS = 509;
/** Largest queue size (virtio split rings). */
export const MAX_QUEUE_SIZE = 32768;

const U64_MAX = (1n << 64n) - 1n;
const PAGE = 4096n;

/** Where the compiled worker lives: beside this file in dist/, or dist/ of the repository when run from the .ts sources. */
function workerUrl(): URL {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return new URL('./worker.js', import.meta.url);
  const root = resolve(dirname(here), '../..');
  const built = join(root, 'dist/host/vhost-user/worker.js');
  if (!existsSync(built)) throw new DataPlaneError(`the data-plane worker must be built first (npm run build): ${built} is missing`);
  return pathToFileURL(built);
}

export class DataPlane {
  private readonly views: SharedViews;
  private readonly worker: Worker;
  private readonly wakeFd: number;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private seq = 0;
  private dead: string | null = null;
  /**
   * A command that timed out: its seq and name. Until the worker's reply
   * counter reaches it, calls fail at once instead of each waiting out the
   * timeout (QEMU waits on every reply with its VM stopped); once it does,
   * the data plane is used again: a worker that was only slow recovers.
   */
  private overdue: { seq: number; name: string; since: number } | null = null;
  /** Whether the command of handOver's call reached the worker's ring (its fds are then the worker's). */
  private posted = false;
  private readonly exited: Promise<void>;
  private readonly guests = new Map<number, GuestPolicy>();
  /**
   * Guests gone from the main thread whose RemoveGuest the worker has not
   * confirmed (it was stalled, or did not answer in time). They are tried
   * again until it does, so nothing of a guest (mapping, fds, pages) stays
   * behind after it left.
   */
  private readonly removals = new Set<number>();
  private removalTimer: NodeJS.Timeout | null = null;

  private readonly gone: { value: boolean };

  private constructor(views: SharedViews, worker: Worker, wakeFd: number, log: Logger, timeoutMs: number, exited: Promise<void>, gone: { value: boolean }) {
    this.gone = gone;
    this.views = views;
    this.worker = worker;
    this.wakeFd = wakeFd;
    this.log = log;
    this.timeoutMs = timeoutMs;
    this.exited = exited;
  }

  static async start(opts: DataPlaneOptions): Promise<DataPlane> {
    if (opts.mode !== 'poll' && opts.mode !== 'notify') throw new DataPlaneError(`mode must be poll or notify, not ${String(opts.mode)}`);
    if (!Number.isSafeInteger(opts.capacityPages) || opts.capacityPages < 0) throw new DataPlaneError('capacityPages must be a non-negative integer');
    if (!Number.isSafeInteger(opts.maxPoolsPerGuest) || opts.maxPoolsPerGuest < 1) throw new DataPlaneError('maxPoolsPerGuest must be a positive integer');
    const sab = new SharedArrayBuffer(SHARED_BYTES);
    const views = sharedViews(sab);
    const wakeFd = native.eventfd(0);
    const config: WorkerConfig = {
      sab,
      mode: opts.mode,
      capacityPages: opts.capacityPages,
      maxPoolsPerGuest: opts.maxPoolsPerGuest,
      wakeFd,
      pollSpinMs: opts.pollSpinMs ?? 50,
      reclaimBudget: opts.reclaimBudget ?? 256,
    };
    let worker: Worker;
    try {
      worker = new Worker(workerUrl(), { workerData: config, name: 'tmemd-dataplane' });
    } catch (e) {
      native.close(wakeFd);
      throw e;
    }
    const log = opts.log;
    let dp: DataPlane | null = null;
    // The wake eventfd is closed only once the worker is gone (it may be blocked in poll(2) on it).
    const gone = { value: false };
    const exited = new Promise<void>((res) =>
      worker.once('exit', () => {
        gone.value = true;
        try {
          native.close(wakeFd);
        } catch {
          /* ignore */
        }
        res();
      }),
    );
    await new Promise<void>((res, rej) => {
      const onMsg = (m: WorkerLogMessage | { type: 'ready' }) => {
        if (m.type === 'ready') {
          res();
          return;
        }
        log[m.level](m.msg);
      };
      worker.on('message', onMsg);
      worker.once('error', (e) => {
        if (dp) dp.markDead(`data-plane worker failed: ${e.message}`);
        else rej(new DataPlaneError(`data-plane worker failed to start: ${e.message}`));
        log.error(`data-plane worker failed: ${e.stack ?? e.message}`);
      });
      worker.once('exit', (code) => {
        if (dp) dp.markDead(`data-plane worker exited (code ${code})`);
        else rej(new DataPlaneError(`data-plane worker exited during start (code ${code})`));
      });
    }).catch(async (e) => {
      await worker.terminate();
      throw e;
    });
    dp = new DataPlane(views, worker, wakeFd, log, opts.replyTimeoutMs ?? 5000, exited, gone);
    dp.call(Cmd.Ping, -1, -1, []);
    return dp;
  }

  private markDead(why: string): void {
    if (this.dead) return;
    this.dead = why;
    if (Atomics.load(this.views.ctl, CTL_STATE) !== WorkerState.Stopped) this.log.error(why);
  }

  /** Sends one command and waits for its reply. */
  private call(cmd: number, guest: number, queue: number, args: readonly number[], payload?: string): { value: number; payload: string } {
    if (this.dead || this.gone.value) throw new DataPlaneError(`data plane is down: ${this.dead}`);
    const { ctl, dv, bytes } = this.views;
    if (this.overdue) {
      const o = this.overdue;
      if (Atomics.load(ctl, CTL_REPLY_SEQ) !== o.seq) throw new DataPlaneError(`data-plane worker has not answered ${o.name} yet (stalled for ${Date.now() - o.since} ms)`);
      this.overdue = null;
      this.log.warn(`data-plane worker answered ${o.name} after ${Date.now() - o.since} ms; in service again`);
    }
    const head = Atomics.load(ctl, CTL_CMD_HEAD);
    const tail = Atomics.load(ctl, CTL_CMD_TAIL);
    if (head - tail >= CMD_SLOTS) throw new DataPlaneError('data-plane command ring is full (worker not consuming)');
    if (args.length > REC_MAX_ARGS) throw new DataPlaneError('too many command arguments');
    const rec = recordOffset(head % CMD_SLOTS);
    const seq = (this.seq = (this.seq + 1) | 0) || (this.seq = 1);
    dv.setInt32(rec + REC_OFF_SEQ, seq, true);
    dv.setInt32(rec + REC_OFF_CMD, cmd, true);
    dv.setInt32(rec + REC_OFF_GUEST, guest, true);
    dv.setInt32(rec + REC_OFF_QUEUE, queue, true);
    for (let i = 0; i < args.length; i++) dv.setFloat64(rec + REC_OFF_ARGS + 8 * i, args[i]!, true);
    let plen = 0;
    if (payload !== undefined) {
      const b = Buffer.from(payload, 'utf8');
      if (b.length > REC_MAX_PAYLOAD) throw new DataPlaneError('command payload too large');
      bytes.set(b, rec + REC_OFF_PAYLOAD);
      plen = b.length;
    }
    dv.setInt32(rec + REC_OFF_PAYLOAD_LEN, plen, true);
    Atomics.store(ctl, CTL_CMD_HEAD, head + 1);
    this.posted = true;
    try {
      native.eventfdWrite(this.wakeFd, 1n);
    } catch (e) {
      this.markDead(`cannot wake the data-plane worker: ${(e as Error).message}`);
      throw new DataPlaneError(`data plane is down: ${this.dead}`);
    }
    // Spin briefly (poll mode answers in microseconds), then sleep.
    let spins = 0;
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const r = Atomics.load(ctl, CTL_REPLY_SEQ);
      if (r === seq) break;
      if (spins < 2000) {
        spins++;
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        const name = CMD_NAMES[cmd] ?? String(cmd);
        this.overdue = { seq, name, since: Date.now() - this.timeoutMs };
        this.log.error(`data-plane worker did not answer ${name} within ${this.timeoutMs} ms; refusing commands until it does`);
        throw new DataPlaneError(`data-plane worker did not answer ${name} within ${this.timeoutMs} ms (hung?)`);
      }
      Atomics.wait(ctl, CTL_REPLY_SEQ, r, Math.min(left, 100));
    }
    const err = dv.getInt32(OFF_REPLY + REPLY_OFF_ERROR, true);
    const value = dv.getFloat64(OFF_REPLY + REPLY_OFF_VALUE, true);
    const len = dv.getInt32(OFF_REPLY + REPLY_OFF_PAYLOAD_LEN, true);
    if (dv.getInt32(OFF_REPLY + REPLY_OFF_SEQ, true) !== seq) throw new DataPlaneError('data-plane reply out of sequence');
    const text = len > 0 ? Buffer.from(this.views.sab, OFF_REPLY + REPLY_OFF_PAYLOAD, len).toString('utf8') : '';
    if (err) throw new DataPlaneError(text || 'data-plane command failed', true);
    return { value, payload: text };
  }

  private guest(g: number): GuestPolicy {
    const st = this.guests.get(g);
    if (!st) throw new DataPlaneError(`unknown guest ${g}`);
    return st;
  }

  private queue(g: number, q: number): void {
    const st = this.guest(g);
    if (!Number.isInteger(q) || q < 0 || q >= st.numQueues) throw new DataPlaneError(`guest ${st.name}: no queue ${q} (it has ${st.numQueues})`);
  }

  private static fd(fd: number, what: string): number {
    if (!Number.isInteger(fd) || fd < -1 || fd > 0x7fffffff) throw new DataPlaneError(`${what}: bad fd ${fd}`);
    return fd;
  }

  private static u64(v: bigint, what: string): bigint {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw new DataPlaneError(`${what} must be a u64 bigint`);
    return v;
  }

  addGuest(o: AddGuestOptions): number {
    if (typeof o.name !== 'string' || o.name.length === 0) throw new DataPlaneError('guest name must be a non-empty string');
    DataPlane.u64(o.maxmemBytes, 'maxmemBytes');
    if (o.shareGroup !== null && typeof o.shareGroup !== 'string') throw new DataPlaneError('shareGroup must be a string or null');
    if (!Number.isInteger(o.numQueues) || o.numQueues < 1 || o.numQueues > MAX_QUEUES_PER_GUEST) {
      throw new DataPlaneError(`numQueues must be 1..${MAX_QUEUES_PER_GUEST}`);
    }
    if (o.maxRamBytes !== undefined) DataPlane.u64(o.maxRamBytes, 'maxRamBytes');
    if (o.tmemMaxBytes !== undefined && o.tmemMaxBytes !== null) DataPlane.u64(o.tmemMaxBytes, 'tmemMaxBytes');
    if (o.ramFloorBytes !== undefined) DataPlane.u64(o.ramFloorBytes, 'ramFloorBytes');
    const limits = {
      capPages: o.tmemMaxBytes === undefined || o.tmemMaxBytes === null ? null : Number(o.tmemMaxBytes / PAGE),
      ramFloorPages: Number((o.ramFloorBytes ?? 0n) / PAGE),
    };
    const r = this.call(Cmd.AddGuest, -1, -1, [], jsonEncode({ name: o.name, maxmemBytes: o.maxmemBytes, shareGroup: o.shareGroup, numQueues: o.numQueues, limits }));
    this.guests.set(r.value, { name: o.name, numQueues: o.numQueues, maxRamBytes: o.maxRamBytes ?? null, allowUnsealed: o.allowUnsealed === true });
    return r.value;
  }

  setFeatures(g: number, features: bigint): void {
    this.guest(g);
    DataPlane.u64(features, 'features');
    this.call(Cmd.SetFeatures, g, -1, [Number(features & 0xffffffffn), Number(features >> 32n)]);
  }

  /**
   * Checked here, before the worker maps anything (a refusal closes the fds
   * and throws a DataPlaneError saying what is wrong and what to do):
   * the guest's RAM is at most its maxRamBytes; each region's fd is a memfd
   * or a file on tmpfs or hugetlbfs, sealed against shrinking unless
   * allowUnsealed (a file that shrinks under a mapping is SIGBUS for the
   * whole daemon), and holds the region (offset + size within the file).
   */
  setMemTable(g: number, regions: readonly MemRegion[]): void {
    this.handOver(Array.isArray(regions) ? regions.map((r) => r.fd) : [], () => {
      const st = this.guest(g);
      if (!Array.isArray(regions) || regions.length > MAX_MEM_REGIONS) throw new DataPlaneError(`a mem table has at most ${MAX_MEM_REGIONS} regions`);
      let ram = 0n;
      for (const r of regions) {
        DataPlane.fd(r.fd, 'memory region');
        if (r.fd < 0) throw new DataPlaneError('memory region: fd missing');
        for (const k of ['guestPhysAddr', 'size', 'userspaceAddr', 'mmapOffset'] as const) DataPlane.u64(r[k], `memory region ${k}`);
        ram += r.size;
      }
      if (st.maxRamBytes !== null && ram > st.maxRamBytes) {
        throw new DataPlaneError(
          `guest RAM of ${ram} bytes (${regions.length} region(s)) is more than max-ram (${st.maxRamBytes} bytes) for VM ${st.name}; raise max-ram= if the VM really has that much RAM`,
        );
      }
      regions.forEach((r, i) => {
        let f: native.GuestRamFile;
        try {
          f = native.inspectGuestRamFd(r.fd);
        } catch (e) {
          // "mmap (fd 7 is a file on ...): EINVAL: invalid argument": the part in brackets says it
          const m = /^mmap \((.*)\): EINVAL: invalid argument$/.exec((e as Error).message);
          throw new DataPlaneError(`region ${i}: ${m ? m[1] : (e as Error).message}; give guest RAM as memory-backend-memfd (share=on)`);
        }
        if (!f.noShrink && !st.allowUnsealed) {
          throw new DataPlaneError(
            `region ${i}: the guest RAM file (on ${f.fs}) is not sealed against shrinking: whoever holds it could truncate it and crash tmemd (SIGBUS) with every VM; ` +
              `use -object memory-backend-memfd (seal=on is its default), or accept the risk with allow-unsealed=on for VM ${st.name}`,
          );
        }
        if (r.mmapOffset + r.size > f.size) {
          throw new DataPlaneError(`region ${i}: ${r.size} bytes at offset ${r.mmapOffset} go past the end of the file (${f.size} bytes)`);
        }
      });
      this.call(Cmd.SetMemTable, g, -1, [], jsonEncode(regions));
    });
  }

  setVringNum(g: number, q: number, num: number): void {
    this.queue(g, q);
    if (!Number.isInteger(num) || num < 1 || num > MAX_QUEUE_SIZE || (num & (num - 1)) !== 0) {
      throw new DataPlaneError(`queue size must be a power of 2 up to ${MAX_QUEUE_SIZE}, not ${num}`);
    }
    this.call(Cmd.SetVringNum, g, q, [num]);
  }

  setVringAddr(g: number, q: number, a: VringAddr): void {
    this.queue(g, q);
    const d = DataPlane.u64(a.descUser, 'descUser');
    const u = DataPlane.u64(a.usedUser, 'usedUser');
    const av = DataPlane.u64(a.availUser, 'availUser');
    const safe = BigInt(Number.MAX_SAFE_INTEGER);
    // Addresses beyond 2^53 cannot be inside any mapping; pass them as -1 (the worker refuses them when the ring starts).
    const n = (x: bigint) => (x > safe ? -1 : Number(x));
    this.call(Cmd.SetVringAddr, g, q, [n(d), n(u), n(av)]);
  }

  setVringBase(g: number, q: number, base: number): void {
    this.queue(g, q);
    if (!Number.isInteger(base) || base < 0 || base > 0xffff) throw new DataPlaneError(`vring base must be 0..65535, not ${base}`);
    this.call(Cmd.SetVringBase, g, q, [base]);
  }

  /** Stops the ring and returns the next avail index it would have processed. */
  getVringBase(g: number, q: number): number {
    this.queue(g, q);
    return this.call(Cmd.GetVringBase, g, q, []).value;
  }

  setVringKick(g: number, q: number, fd: number): void {
    this.handOver([fd], () => {
      this.queue(g, q);
      this.call(Cmd.SetVringKick, g, q, [DataPlane.fd(fd, 'kick')]);
    });
  }

  setVringCall(g: number, q: number, fd: number): void {
    this.handOver([fd], () => {
      this.queue(g, q);
      this.call(Cmd.SetVringCall, g, q, [DataPlane.fd(fd, 'call')]);
    });
  }

  setVringErr(g: number, q: number, fd: number): void {
    this.handOver([fd], () => {
      this.queue(g, q);
      this.call(Cmd.SetVringErr, g, q, [DataPlane.fd(fd, 'err')]);
    });
  }

  setVringEnable(g: number, q: number, enable: boolean): void {
    this.queue(g, q);
    this.call(Cmd.SetVringEnable, g, q, [enable ? 1 : 0]);
  }

  /**
   * Stops the guest's rings, unmaps its memory, closes its fds and frees its
   * store state. The guest is gone for the main thread at once; if the
   * worker cannot confirm it now (stalled, or too slow), the removal is
   * queued and tried again every REMOVAL_RETRY_MS until it does: this never
   * throws for a worker that is only late. Returns false when it was queued.
   */
  removeGuest(g: number): boolean {
    const st = this.guest(g);
    this.guests.delete(g);
    this.removals.add(g);
    this.drainRemovals();
    if (this.removals.has(g)) {
      this.log.warn(`guest ${st.name} (${g}): the data-plane worker has not confirmed its removal; retrying every ${REMOVAL_RETRY_MS} ms until it does`);
      return false;
    }
    return true;
  }

  /** Guests whose removal the worker has not confirmed yet (tests, stats). */
  get pendingRemovals(): number {
    return this.removals.size;
  }

  /** Tries every queued removal; stops at the first the worker does not answer, and re-arms the retry timer. */
  private drainRemovals(): void {
    for (const g of [...this.removals]) {
      if (this.dead || this.gone.value) {
        // the worker is gone, and every guest's mapping and fds with it
        this.removals.clear();
        break;
      }
      try {
        this.call(Cmd.RemoveGuest, g, -1, []);
        this.removals.delete(g);
      } catch (e) {
        if (e instanceof DataPlaneError && e.answered) {
          // The worker answered: removed by an earlier, late-answered try ("unknown guest"), or it failed there (logged by it).
          if (!/^unknown guest /.test(e.message)) this.log.error(`removing guest ${g}: ${e.message}`);
          this.removals.delete(g);
          continue;
        }
        break;
      }
    }
    if (this.removals.size > 0 && this.removalTimer === null && !this.dead) {
      this.removalTimer = setInterval(() => this.drainRemovals(), REMOVAL_RETRY_MS);
      this.removalTimer.unref();
    } else if (this.removals.size === 0 && this.removalTimer !== null) {
      clearInterval(this.removalTimer);
      this.removalTimer = null;
      this.log.info('data-plane worker confirmed every queued guest removal');
    }
  }

  setFrozen(g: number, frozen: boolean): void {
    this.guest(g);
    this.call(Cmd.SetFrozen, g, -1, [frozen ? 1 : 0]);
  }

  flushGuest(g: number): void {
    this.guest(g);
    this.call(Cmd.FlushGuest, g, -1, []);
  }

  setShareGroup(g: number, group: string | null): void {
    this.guest(g);
    if (group !== null && typeof group !== 'string') throw new DataPlaneError('shareGroup must be a string or null');
    this.call(Cmd.SetShareGroup, g, -1, [], jsonEncode({ group }));
  }

  /** Store statistics, the data plane's counters and per-guest state (one round trip to the worker). */
  stats(): Record<string, unknown> {
    const r = this.call(Cmd.Stats, -1, -1, []);
    return JSON.parse(r.payload) as Record<string, unknown>;
  }

  /** The data plane's global counters, read from the shared buffer without a round trip. */
  counters(): Record<CounterName, number> {
    const out = {} as Record<CounterName, number>;
    COUNTER_NAMES.forEach((n, i) => (out[n] = this.views.counters[i]!));
    return out;
  }

  /** Tests only: makes the worker stall for ms milliseconds (to see a hung worker reported). */
  debugStall(ms: number): void {
    this.call(Cmd.DebugStall, -1, -1, [ms]);
  }

  /** Whether the worker is alive and answering (not stopped, not overdue with a reply). */
  get alive(): boolean {
    return this.dead === null && (this.overdue === null || Atomics.load(this.views.ctl, CTL_REPLY_SEQ) === this.overdue.seq);
  }

  /**
   * Runs `send`, which hands `fds` to the worker. If it fails before the
   * command reached the worker (bad argument, data plane down or stalled),
   * nobody owns the fds: they are closed here, so a refused message leaks
   * nothing. After that point they are the worker's, even if its reply is late.
   */
  private handOver(fds: readonly number[], send: () => void): void {
    this.posted = false;
    try {
      send();
    } catch (e) {
      if (!this.posted) native.closeQuietly(fds.filter((fd) => Number.isInteger(fd) && fd >= 0));
      throw e;
    }
  }

  /** Stops the worker (every guest's rings, mappings and fds go with it). */
  async stop(): Promise<void> {
    let stopped = false;
    if (!this.dead) {
      try {
        this.call(Cmd.Stop, -1, -1, []);
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
    if (this.removalTimer !== null) clearInterval(this.removalTimer);
    this.removalTimer = null;
    this.removals.clear();
    this.guests.clear();
    this.markDead('data plane stopped');
  }
}
