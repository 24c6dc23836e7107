// The vring worker thread: owns every connection's guest memory and queues
// (an Engine), loads the device kinds' worker halves by URL (so this folder
// imports no device), and runs one of two loops.
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
// Commands (commands.ts) arrive on a MessagePort, taken synchronously with
// receiveMessageOnPort when the posted counter moved; each runs to
// completion here, next to the rings, and its reply is posted back. Idle
// time runs the devices' idle hooks in bounded steps.
import { isMainThread, type MessagePort, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import * as native from '../../native/index.js';
import { addCounters, countersObject } from '../counters.js';
import { CTL_POSTED, CTL_STATE, type Envelope, parseTestHooks, TEST_HOOKS_ENV, type WorkerConfig, type WorkerEvent, WorkerState } from './commands.js';
import type { DeviceKind, DeviceWorkerModule, WorkerHost } from './device.js';
import { WC, WORKER_COUNTERS, VRING_COUNTERS } from './counters.js';
import { Engine, type Instance, type Queue } from './engine.js';

type Level = 'error' | 'warn' | 'info' | 'debug';

/**
 * One turn of this thread's event loop. The loops never return to it
 * otherwise, and Node frees the native side of external ArrayBuffers (every
 * koffi.view: the guest RAM windows) from the event loop once they are
 * garbage: without a turn, each SET_MEM_TABLE and each guest that left kept
 * ~200 bytes of malloc forever (test/churn-plateau.ts). Taken after a batch
 * of commands (those map and unmap), never on the data path; costs
 * microseconds.
 */
/**
 * How long the notify loop sleeps while a queue is parked (HANDLE_LATER):
 * about one disk read (the chain waits for its pages to reach the page
 * cache), so the chain is served soon after and the loop does not spin.
 */
const PARKED_RETRY_MS = 0.1;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function post(m: WorkerEvent): void {
  parentPort!.postMessage(m);
}

/** A kind loaded in this worker, with the counters of its closed instances. */
interface LoadedKind {
  readonly kind: DeviceKind;
  readonly closed: Float64Array;
}

class VringWorker {
  private readonly cfg: WorkerConfig;
  private readonly ctl: Int32Array;
  private readonly port: MessagePort;
  private readonly engine: Engine;
  private readonly kinds = new Map<string, LoadedKind>();
  private readonly counters = new Float64Array(WORKER_COUNTERS.length);
  /** tmemd checked NODE_ENV=test before starting the worker with these. */
  private readonly hooks = parseTestHooks(process.env[TEST_HOOKS_ENV]);
  /** Commands taken from the port so far (compared with the main thread's posted counter). */
  private taken = 0;
  // The sleep set: [0] = wake eventfd, then the kick eventfds of running
  // queues, in an edge-triggered epoll whose counters are never read, so a
  // wake-up is one epoll_wait and no read(2) per fd (native/eventfd-set.ts).
  private pfds = new Int32Array(64);
  private readonly kickSet = new native.EventfdSet();
  private ready = new Int32Array(64);
  private pqueues: ({ g: Instance; q: Queue } | null)[] = [];
  private pgen = -1;
  private anyNoKick = false;
  private stopping = false;
  private errors = 0;

  constructor(cfg: WorkerConfig) {
    this.cfg = cfg;
    this.ctl = new Int32Array(cfg.ctl);
    this.port = cfg.port;
    this.engine = new Engine(native, (l, m) => this.log(l, m), cfg.mode === 'poll');
  }

  log(level: Level, msg: string): void {
    post({ type: 'log', level, msg: `vrings: ${msg}` });
  }

  /** Imports every device kind's worker half and makes its factory. */
  async load(): Promise<void> {
    const shared = new Map<string, unknown>();
    const host: WorkerHost = {
      config: this.cfg.deviceConfig,
      mode: this.cfg.mode,
      log: (level, msg) => this.log(level, msg),
      shared: <T>(key: string, create: () => T): T => {
        if (!shared.has(key)) shared.set(key, create());
        return shared.get(key) as T;
      },
    };
    for (const d of this.cfg.devices) {
      const m = (await import(d.module)) as Partial<DeviceWorkerModule>;
      if (typeof m.createDeviceKind !== 'function') throw new Error(`device module ${d.module} (${d.kind}) exports no createDeviceKind`);
      const kind = m.createDeviceKind(host);
      this.kinds.set(d.kind, { kind, closed: new Float64Array(kind.counters.length) });
      this.engine.addKind(kind);
    }
  }

  async run(): Promise<void> {
    Atomics.store(this.ctl, CTL_STATE, WorkerState.Running);
    post({ type: 'ready' });
    this.log('debug', `worker running in ${this.cfg.mode} mode`);
    if (this.cfg.mode === 'poll') await this.pollLoop();
    else await this.notifyLoop();
    this.engine.closeAll();
    this.kickSet.close();
    Atomics.store(this.ctl, CTL_STATE, WorkerState.Stopped);
  }

  private commandsPending(): boolean {
    // Checked on every spin of the poll loop: one Atomics.load of the main thread's counter.
    return Atomics.load(this.ctl, CTL_POSTED) !== this.taken;
  }

  private async notifyLoop(): Promise<void> {
    const e = this.engine;
    const k = this.counters;
    while (!this.stopping) {
      try {
        if (this.commandsPending()) {
          this.handleCommands();
          if (this.stopping) break;
          await yieldToEventLoop();
        }
        e.pass(false);
        k[WC.loopIterations]!++;
        let scan = false;
        const run = e.running;
        for (let i = 0; i < run.length; i++) if (run[i]!.q.scan) scan = true;
        // Idle steps in the same turn as the work once no queue waits for a
        // scan: a served kick then costs one wait, not a second pass and a
        // poll(2) with timeout 0 first (helper CPU's measurement, notes/cpu.md E1).
        let idle = false;
        if (!scan && !e.deferred && e.idlePending) {
          k[WC.idleSteps]!++;
          idle = e.idle();
        }
        this.buildPollSet();
        // a parked queue (HANDLE_LATER) is offered again every PARKED_RETRY_MS (its data is on the way from a
        // disk: about a disk read), a queue without a kick fd every 1 ms
        this.wait(scan || idle || e.deferred || this.commandsPending() ? 0 : e.parked ? PARKED_RETRY_MS : this.anyNoKick ? 1 : 1000);
      } catch (err) {
        this.loopError(err);
      }
    }
  }

  private async pollLoop(): Promise<void> {
    const e = this.engine;
    const k = this.counters;
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
        k[WC.loopIterations]!++;
        // deferred: an instance's turn ended with work left (the budget rule in engine.ts)
        if (work > 0 || e.deferred) {
          idle = 0;
          continue;
        }
        if (idle++ === 0) {
          idleSince = performance.now();
          continue;
        }
        if ((idle & 255) !== 0) continue;
        let more = false;
        if (e.idlePending) {
          k[WC.idleSteps]!++;
          more = e.idle();
        }
        if (more || !(performance.now() - idleSince >= spinMs)) continue;
        // Idle long enough: kicks on, re-check, sleep until a kick or a command.
        if (e.enableAllKicks() || this.commandsPending()) {
          e.suppressAllKicks();
          idle = 0;
          continue;
        }
        k[WC.pollSleeps]!++;
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
      this.ready = new Int32Array(this.pfds.length);
    }
    this.pfds[0] = this.cfg.wakeFd;
    this.pqueues = [null];
    let n = 1;
    let noKick = false;
    for (const r of run) {
      if (r.q.kickFd >= 0) {
        this.pfds[n++] = r.q.kickFd;
        this.pqueues.push(r);
      } else noKick = true;
    }
    this.kickSet.setFds(this.pfds, n);
    // A kick fd that could not be watched is polled instead (the 1 ms sleep of anyNoKick).
    this.anyNoKick = noKick || this.kickSet.failed > 0;
  }

  /** Sleeps on the wake and kick eventfds; marks the kicked queues for a scan. Returns the number ready. */
  private wait(timeoutMs: number): number {
    const n = this.kickSet.wait(timeoutMs, this.ready);
    for (let i = 0; i < n; i++) {
      const idx = this.ready[i]!;
      // index 0 is the wake eventfd: the commands are seen through the posted counter
      if (idx === 0) continue;
      const r = this.pqueues[idx];
      if (r) this.engine.kickedNoRead(r.g, r.q);
    }
    return n;
  }

  // ------------------------------------------------------------ commands

  private handleCommands(): void {
    for (;;) {
      const m = receiveMessageOnPort(this.port);
      if (m === undefined) return;
      this.taken++;
      this.counters[WC.commands]!++;
      const env = m.message as Envelope;
      let value: unknown;
      try {
        value = this.execute(env);
      } catch (err) {
        this.port.postMessage({ seq: env.seq, ok: false, error: (err as Error)?.message ?? String(err) });
        continue;
      }
      this.port.postMessage({ seq: env.seq, ok: true, value: value === undefined ? null : value });
      if (this.stopping) return;
    }
  }

  /** Test hook: a stall before this VM's command (commands.ts, TEST_HOOKS_ENV). */
  private stallFor(c: Envelope): void {
    if (this.hooks.stalls.length === 0 || !('id' in c)) return;
    const vm = c.op === 'open' ? c.vm : this.engine.instances.get(c.id)?.vm;
    const h = this.hooks.stalls.find((s) => s.vm === vm && s.op === c.op);
    if (!h) return;
    this.log('warn', `test hook: stalling ${h.ms} ms before ${c.op} of vm ${vm}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, h.ms);
  }

  /** One command, run to completion; its return value is the reply's. */
  private execute(c: Envelope): unknown {
    const e = this.engine;
    this.stallFor(c);
    switch (c.op) {
      case 'ping':
        return null;
      case 'stop':
        this.stopping = true;
        return null;
      case 'open': {
        const k = this.kinds.get(c.kind);
        if (!k) throw new Error(`no device kind '${c.kind}' in this worker (loaded: ${[...this.kinds.keys()].join(', ') || 'none'})`);
        const info = { id: c.id, vm: c.vm, kind: c.kind, numQueues: c.numQueues };
        const dev = k.kind.open(info, c.params);
        try {
          e.open(info, c.policy, dev);
        } catch (err) {
          dev.close();
          throw err;
        }
        return null;
      }
      case 'close': {
        const g = e.instances.get(c.id);
        if (!g) throw new Error(`unknown instance ${c.id}`);
        const k = this.kinds.get(g.kind);
        if (k) addCounters(k.closed, g.dev.counters);
        e.close(c.id);
        return null;
      }
      case 'setFeatures':
        return e.setFeatures(c.id, c.features);
      case 'setMemTable':
        return e.setMemTable(c.id, c.regions);
      case 'setVringNum':
        return e.setVringNum(c.id, c.queue, c.num);
      case 'setVringAddr':
        return e.setVringAddr(c.id, c.queue, c.addr);
      case 'setVringBase':
        return e.setVringBase(c.id, c.queue, c.base);
      case 'getVringBase':
        return e.getVringBase(c.id, c.queue);
      case 'setVringKick':
        return e.setVringFd(c.id, c.queue, 'kickFd', c.fd);
      case 'setVringCall':
        return e.setVringFd(c.id, c.queue, 'callFd', c.fd);
      case 'setVringErr':
        return e.setVringFd(c.id, c.queue, 'errFd', c.fd);
      case 'setVringEnable':
        return e.setVringEnable(c.id, c.queue, c.enable);
      case 'reset':
        return e.reset(c.id);
      case 'control':
        return e.control(c.id, c.name, c.args);
      case 'kindControl': {
        const k = this.kinds.get(c.kind);
        if (!k) throw new Error(`no device kind '${c.kind}'`);
        if (!k.kind.control) throw new Error(`the ${c.kind} device has no kind-wide control ops`);
        const r = k.kind.control(c.name, c.args);
        e.idlePending = true;
        return r;
      }
      case 'stats':
        return this.stats();
      case 'debugStall':
        if (!this.hooks.debug) throw new Error(`debugStall is a test hook (${TEST_HOOKS_ENV}=debug not set)`);
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.min(c.ms, 60_000));
        return null;
      default: {
        const never: never = c;
        throw new Error(`unknown command ${JSON.stringify((never as { op?: unknown }).op)}`);
      }
    }
  }

  private stats(): unknown {
    const e = this.engine;
    const vring = Float64Array.from(e.closedCounters);
    const perKind = new Map<string, Float64Array>();
    for (const [name, k] of this.kinds) perKind.set(name, Float64Array.from(k.closed));
    const instances = e.instanceStats();
    for (const g of e.instances.values()) {
      addCounters(vring, g.counters);
      const sum = perKind.get(g.kind);
      if (sum) addCounters(sum, g.dev.counters);
    }
    // Each instance's device counters by name, beside its vring counters.
    for (const s of instances) {
      const g = e.instances.get(s.id as number)!;
      const k = this.kinds.get(g.kind);
      if (k) (s.counters as Record<string, Record<string, number>>)[g.kind] = countersObject(k.kind.counters, g.dev.counters);
    }
    const counters: Record<string, Record<string, number>> = { vring: countersObject(VRING_COUNTERS, vring) };
    const kinds: Record<string, Record<string, unknown>> = {};
    for (const [name, k] of this.kinds) {
      counters[name] = countersObject(k.kind.counters, perKind.get(name)!);
      kinds[name] = k.kind.stats ? k.kind.stats() : {};
    }
    return { mode: this.cfg.mode, worker: countersObject(WORKER_COUNTERS, this.counters), counters, instances, kinds };
  }
}

if (!isMainThread && parentPort && workerData && (workerData as WorkerConfig).ctl) {
  const cfg = workerData as WorkerConfig;
  const w = new VringWorker(cfg);
  w.load().then(
    // A rejection of run (a bug: the loops catch their errors) is an uncaught error of the worker.
    () => void w.run(),
    (err: unknown) => {
      Atomics.store(new Int32Array(cfg.ctl), CTL_STATE, WorkerState.Crashed);
      post({ type: 'failed', msg: (err as Error)?.message ?? String(err) });
    },
  );
}
