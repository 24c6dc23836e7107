// The data-plane worker thread: owns the TmemStore, every guest's memory and
// queues (an Engine), and runs one of two loops.
//
// notify mode: block in poll(2) on the kick eventfds and the wake eventfd;
//   a kick scans its queue, which is drained, then kicks are re-enabled
//   (avail_event or clearing NO_NOTIFY) and the ring re-checked.
//
// poll mode: busy-poll every running ring with kicks suppressed
//   (VRING_USED_F_NO_NOTIFY, or avail_event kept out of reach with
//   EVENT_IDX), so a request costs the guest no VM exit. After pollSpinMs
//   without any request (50 ms by default) the worker re-enables kicks on
//   every ring, re-checks them, and blocks in poll(2) on the kick and wake
//   eventfds; the first kick puts it back to spinning with kicks suppressed.
//   Why: spinning forever burns a core per daemon even with every guest
//   idle; sleeping on a timer (spin, then poll(2) with a short timeout while
//   kicks stay suppressed) would add up to that timeout to the first request
//   after a pause. With kicks re-enabled only while asleep, the first request
//   after an idle period costs one kick (a few microseconds of wake-up) and
//   every request of a busy period none; pollSpinMs = Infinity gives pure
//   busy polling.
//
// Commands from the main thread arrive in the SPSC ring of the shared buffer
// (commands.ts); the wake eventfd interrupts poll(2). Idle time runs
// store.reclaimStep in bounded steps.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import * as native from '../../native/index.js';
import { TmemStore } from '../tmem/store/store.js';
import {
  Cmd,
  CMD_SLOTS,
  COUNTER_INDEX as CI,
  COUNTER_NAMES,
  CTL_CMD_HEAD,
  CTL_CMD_TAIL,
  CTL_REPLY_SEQ,
  CTL_STATE,
  jsonEncode,
  OFF_REPLY,
  REC_OFF_ARGS,
  REC_OFF_CMD,
  REC_OFF_GUEST,
  REC_OFF_PAYLOAD,
  REC_OFF_PAYLOAD_LEN,
  REC_OFF_QUEUE,
  REC_OFF_SEQ,
  recordOffset,
  REPLY_MAX_PAYLOAD,
  REPLY_OFF_ERROR,
  REPLY_OFF_PAYLOAD,
  REPLY_OFF_PAYLOAD_LEN,
  REPLY_OFF_SEQ,
  REPLY_OFF_VALUE,
  sharedViews,
  type SharedViews,
  type WorkerConfig,
  WorkerState,
} from './commands.js';
import { Engine, type EngineStore, type GuestLimits, type MemRegionSpec, type Queue } from './engine.js';
import { INFO_LAYOUT } from '../tmem/info-layout.js';

type Level = 'error' | 'warn' | 'info' | 'debug';


/**
 * One turn of this thread's event loop. The loops never return to it
 * otherwise, and Node frees the native side of external ArrayBuffers (every
 * koffi.view: the guest RAM windows) from the event loop once they are
 * garbage: without a turn, each SET_MEM_TABLE and each guest that left kept
 * ~200 bytes of malloc forever (issue 13, the RSS growth per connection;
 * test/churn-plateau.ts). Taken after a batch of commands (those map and
 * unmap), never on the data path; costs microseconds.
 */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
class Worker {
  private readonly cfg: WorkerConfig;
  private readonly v: SharedViews;
  private readonly engine: Engine;
  private readonly store: TmemStore;
  // poll(2) set: [0] = wake eventfd, then the kick eventfds of running queues
  private pfds = new Int32Array(64);
  private revents = new Int16Array(64);
  private pqueues: (Queue | null)[] = [];
  private pcount = 1;
  private pgen = -1;
  private anyNoKick = false;
  private stopping = false;
  private errors = 0;

  constructor(cfg: WorkerConfig) {
    this.cfg = cfg;
    this.v = sharedViews(cfg.sab);
    this.store = new TmemStore({ capacityPages: cfg.capacityPages, maxPoolsPerGuest: cfg.maxPoolsPerGuest });
    this.engine = new Engine(this.store as unknown as EngineStore, native, (l, m) => this.log(l, m), this.v.counters, INFO_LAYOUT, cfg.mode === 'poll');
  }

  log(level: Level, msg: string): void {
    parentPort!.postMessage({ type: 'log', level, msg: `dataplane: ${msg}` });
  }

  async run(): Promise<void> {
    Atomics.store(this.v.ctl, CTL_STATE, WorkerState.Running);
    parentPort!.postMessage({ type: 'ready' });
    this.log('debug', `worker running in ${this.cfg.mode} mode`);
    if (this.cfg.mode === 'poll') await this.pollLoop();
    else await this.notifyLoop();
    this.engine.removeAll();
    Atomics.store(this.v.ctl, CTL_STATE, WorkerState.Stopped);
  }

  private commandsPending(): boolean {
    // Checked on every spin of the poll loop: one Atomics.load (the head is the
    // main thread's); the tail is this thread's own, a plain load sees it.
    return Atomics.load(this.v.ctl, CTL_CMD_HEAD) !== this.v.ctl[CTL_CMD_TAIL];
  }

  private async notifyLoop(): Promise<void> {
    const e = this.engine;
    const k = this.v.counters;
    while (!this.stopping) {
      try {
        if (this.commandsPending()) {
          this.handleCommands();
          if (this.stopping) break;
          await yieldToEventLoop();
        }
        const work = e.pass(false);
        k[CI.loopIterations]!++;
        if (work === 0) {
          e.reclaim(this.cfg.reclaimBudget);
          if (!e.reclaimPending) e.prefault();
        }
        let scan = false;
        const run = e.running;
        for (let i = 0; i < run.length; i++) if (run[i]!.q.scan) scan = true;
        this.buildPollSet();
        this.wait(scan || e.reclaimPending || e.prefaultPending || this.commandsPending() ? 0 : this.anyNoKick ? 1 : 1000);
      } catch (err) {
        this.loopError(err);
      }
    }
  }

  private async pollLoop(): Promise<void> {
    const e = this.engine;
    const k = this.v.counters;
    const spinMs = this.cfg.pollSpinMs;
    let idle = 0;
    let idleSince = 0;
    while (!this.stopping) {
      try {
        if (this.commandsPending()) {
          this.handleCommands();
          if (this.stopping) break;
          await yieldToEventLoop();
        }
        const work = e.pass(true);
        k[CI.loopIterations]!++;
        // deferred: a guest's turn ended with work left (the budget rule in engine.ts)
        if (work > 0 || e.deferred) {
          idle = 0;
          continue;
        }
        if (idle++ === 0) {
          idleSince = performance.now();
          continue;
        }
        if ((idle & 255) !== 0) continue;
        e.reclaim(this.cfg.reclaimBudget);
        if (!e.reclaimPending) e.prefault();
        if (e.reclaimPending || e.prefaultPending || !(performance.now() - idleSince >= spinMs)) continue;
        // Idle long enough: kicks on, re-check, sleep until a kick or a command.
        if (e.enableAllKicks() || this.commandsPending()) {
          e.suppressAllKicks();
          idle = 0;
          continue;
        }
        k[CI.pollSleeps]!++;
        this.buildPollSet();
        const n = this.wait(this.anyNoKick ? 1 : 1000);
        e.suppressAllKicks();
        // A timeout with nothing ready goes back to sleep after one more short spin.
        idle = n > 0 ? 0 : 1;
      } catch (err) {
        this.loopError(err);
      }
    }
  }

  private loopError(err: unknown): void {
    this.errors++;
    if (this.errors <= 20 || this.errors % 1000 === 0) this.log('error', `worker loop error #${this.errors}: ${(err as Error)?.stack ?? String(err)}`);
  }

  private buildPollSet(): void {
    const e = this.engine;
    if (this.pgen === e.generation) return;
    this.pgen = e.generation;
    const run = e.running;
    if (this.pfds.length < run.length + 1) {
      this.pfds = new Int32Array(2 * (run.length + 1));
      this.revents = new Int16Array(this.pfds.length);
    }
    this.pfds[0] = this.cfg.wakeFd;
    this.pqueues = [null];
    let n = 1;
    let noKick = false;
    for (const { q } of run) {
      if (q.kickFd >= 0) {
        this.pfds[n++] = q.kickFd;
        this.pqueues.push(q);
      } else noKick = true;
    }
    this.pcount = n;
    this.anyNoKick = noKick;
  }

  /** poll(2) on the wake and kick eventfds; consumes what fired. Returns the number ready. */
  private wait(timeoutMs: number): number {
    const n = native.pollFds(this.pfds, this.pcount, this.revents, timeoutMs);
    if (n <= 0) return 0;
    for (let i = 0; i < this.pcount; i++) {
      if (this.revents[i] === 0) continue;
      if (i === 0) native.eventfdRead(this.cfg.wakeFd);
      else this.engine.kicked(this.pqueues[i]!);
    }
    return n;
  }

  // ------------------------------------------------------------ commands

  private handleCommands(): void {
    const { ctl } = this.v;
    for (;;) {
      const tail = Atomics.load(ctl, CTL_CMD_TAIL);
      if (tail === Atomics.load(ctl, CTL_CMD_HEAD)) return;
      const rec = recordOffset(tail % CMD_SLOTS);
      this.v.counters[CI.commands]!++;
      this.execute(rec);
      Atomics.store(ctl, CTL_CMD_TAIL, tail + 1);
      if (this.stopping) return;
    }
  }

  private execute(rec: number): void {
    const dv = this.v.dv;
    const seq = dv.getInt32(rec + REC_OFF_SEQ, true);
    const cmd = dv.getInt32(rec + REC_OFF_CMD, true);
    const g = dv.getInt32(rec + REC_OFF_GUEST, true);
    const q = dv.getInt32(rec + REC_OFF_QUEUE, true);
    const arg = (i: number) => dv.getFloat64(rec + REC_OFF_ARGS + 8 * i, true);
    const plen = dv.getInt32(rec + REC_OFF_PAYLOAD_LEN, true);
    const payload = () => Buffer.from(this.v.sab, rec + REC_OFF_PAYLOAD, plen).toString('utf8');
    let value = 0;
    let text = '';
    let error = false;
    try {
      const e = this.engine;
      switch (cmd) {
        case Cmd.Ping:
          break;
        case Cmd.AddGuest: {
          const o = JSON.parse(payload()) as { name: string; maxmemBytes: string; shareGroup: string | null; numQueues: number; limits?: GuestLimits };
          value = e.addGuest(o.name, BigInt(o.maxmemBytes), o.shareGroup, o.numQueues, o.limits);
          break;
        }
        case Cmd.RemoveGuest:
          e.removeGuest(g);
          break;
        case Cmd.SetFeatures:
          e.setFeatures(g, BigInt(arg(0)) | (BigInt(arg(1)) << 32n));
          break;
        case Cmd.SetMemTable: {
          const rs = JSON.parse(payload()) as Record<keyof MemRegionSpec, string | number>[];
          e.setMemTable(
            g,
            rs.map((r) => ({
              fd: Number(r.fd),
              guestPhysAddr: BigInt(r.guestPhysAddr),
              size: BigInt(r.size),
              userspaceAddr: BigInt(r.userspaceAddr),
              mmapOffset: BigInt(r.mmapOffset),
            })),
          );
          break;
        }
        case Cmd.SetVringNum:
          e.setVringNum(g, q, arg(0));
          break;
        case Cmd.SetVringAddr:
          e.setVringAddr(g, q, arg(0), arg(1), arg(2));
          break;
        case Cmd.SetVringBase:
          e.setVringBase(g, q, arg(0));
          break;
        case Cmd.GetVringBase:
          value = e.getVringBase(g, q);
          break;
        case Cmd.SetVringKick:
          e.setVringFd(g, q, 'kickFd', arg(0));
          break;
        case Cmd.SetVringCall:
          e.setVringFd(g, q, 'callFd', arg(0));
          break;
        case Cmd.SetVringErr:
          e.setVringFd(g, q, 'errFd', arg(0));
          break;
        case Cmd.SetVringEnable:
          e.setVringEnable(g, q, arg(0) !== 0);
          break;
        case Cmd.SetFrozen:
          e.setFrozen(g, arg(0) !== 0);
          break;
        case Cmd.FlushGuest:
          e.flushGuest(g);
          break;
        case Cmd.SetShareGroup:
          e.setShareGroup(g, (JSON.parse(payload()) as { group: string | null }).group);
          break;
        case Cmd.Stats: {
          e.publishCounters();
          const counters: Record<string, number> = {};
          COUNTER_NAMES.forEach((n, i) => (counters[n] = this.v.counters[i]!));
          text = jsonEncode({ mode: this.cfg.mode, counters, store: this.store.stats(), guests: e.guestStats() });
          break;
        }
        case Cmd.Stop:
          this.stopping = true;
          break;
        case Cmd.DebugStall:
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.min(arg(0), 60_000));
          break;
        default:
          throw new Error(`unknown data-plane command ${cmd}`);
      }
    } catch (err) {
      error = true;
      text = (err as Error).message ?? String(err);
    }
    this.reply(seq, error, value, text);
  }

  private reply(seq: number, error: boolean, value: number, text: string): void {
    const { dv, bytes, ctl } = this.v;
    let b = Buffer.from(text, 'utf8');
    if (b.length > REPLY_MAX_PAYLOAD) {
      b = error ? b.subarray(0, REPLY_MAX_PAYLOAD) : Buffer.from(JSON.stringify({ error: 'reply too large' }));
    }
    bytes.set(b, OFF_REPLY + REPLY_OFF_PAYLOAD);
    dv.setInt32(OFF_REPLY + REPLY_OFF_PAYLOAD_LEN, b.length, true);
    dv.setInt32(OFF_REPLY + REPLY_OFF_ERROR, error ? 1 : 0, true);
    dv.setFloat64(OFF_REPLY + REPLY_OFF_VALUE, value, true);
    dv.setInt32(OFF_REPLY + REPLY_OFF_SEQ, seq, true);
    Atomics.store(ctl, CTL_REPLY_SEQ, seq);
    Atomics.notify(ctl, CTL_REPLY_SEQ);
  }
}

if (!isMainThread && parentPort && workerData && (workerData as WorkerConfig).sab) {
  const cfg = workerData as WorkerConfig;
  let w: Worker;
  try {
    w = new Worker(cfg);
  } catch (err) {
    Atomics.store(new Int32Array(cfg.sab, 0, 16), CTL_STATE, WorkerState.Crashed);
    throw err;
  }
  // A rejection (a bug: the loops catch their errors) is an uncaught error of the worker, as a throw was.
  void w.run();
}
