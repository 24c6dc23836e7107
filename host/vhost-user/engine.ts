// The data plane's state and work, independent of the thread it runs in:
// guests (their memory, queues and fds), the tmem device, the store. The
// worker (worker.ts) owns one Engine and drives it in poll or notify mode;
// tests can drive one directly with fake OS functions and ArrayBuffer RAM.
//
// Isolation: everything a guest can influence is checked (chain walker,
// device) and any exception while serving one queue marks that queue broken
// (logged, err eventfd signalled); other queues and guests go on.
//
// Fairness (the budget rule): one worker serves every guest, so a pass gives
// each guest a turn in round robin, and a turn is bounded by work, not by
// chains. A chain's cost is the descriptors the walker read (an indirect
// table's entries included) plus one unit per BYTES_PER_UNIT bytes the device
// moved; a chain the device refused (used len 0) or answered INVALID or
// UNSUPPORTED costs PENALTY times its descriptors, so a guest sending
// malformed chains gets that much less of the worker. Each pass tops a
// guest's credit up by TURN_UNITS, to at most TURN_UNITS (an idle guest banks
// nothing); its turn serves its queues, round robin from where the last turn
// stopped, while the credit is positive. A chain cannot be cut in two, so the
// last one of a turn may overdraw: the debt is carried, and a guest in debt
// sits out passes until the top-ups repay it. Hence a request waits, behind
// each other guest, for at most TURN_UNITS plus one chain (a chain is at most
// the queue size of descriptors, 1024 from QEMU, and one page of data); and a
// guest that floods with long or malformed chains gets at most its share.
import { TMEM_F_SHARED, TMEM_S_INVALID, TMEM_S_UNSUPPORTED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../shared/abi.js';
import { ChainWalker } from '../virtio/chain.js';
import { GuestMemory, mappedWindows, type RegionSource } from '../virtio/guest-memory.js';
import { SplitQueue } from '../virtio/split-queue.js';
import { type DeviceGuest, type DeviceStore, type InfoLayout, TmemDevice } from '../tmem/device.js';
import { COUNTER_INDEX as CI } from './commands.js';

/** The OS functions the engine needs (native/ in the worker, fakes in tests). */
export interface EngineOs {
  mmapShared(fd: number, length: bigint, offset: bigint): OsMapping;
  munmap(m: OsMapping): void;
  close(fd: number): void;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value?: bigint): void;
}

export interface OsMapping {
  readonly windows: readonly { readonly offset: bigint; readonly length?: number; readonly bytes: Uint8Array }[];
}

/** The store as the engine uses it (TmemStore, host/store/store.ts). */
export interface EngineStore extends DeviceStore {
  addGuest(o: { name: string; maxmemPages: number; ramPages: number; shareGroup: string | null } & GuestLimits): number;
  setGuestRam(g: number, ramPages: number): void;
  setShareGroup(g: number, group: string | null): void;
  setFrozen(g: number, frozen: boolean): void;
  flushGuest(g: number): void;
  removeGuest(g: number): void;
  reclaimStep(budgetPages: number): number;
  /** Pages of destroyed pools still to free (optional: test stores lack it). */
  reclaimPending?(): number;
  /** Faults in never-used frames ahead of use; returns the pages left (optional: test stores lack it). */
  prefaultStep?(budgetPages: number): number;
  stats(): unknown;
}

/** The operator's per-VM limits (host/store/accounting.ts, docs/ABI-host-limits.md). */
export interface GuestLimits {
  readonly capPages?: number | null;
  readonly ramFloorPages?: number;
}

export interface EngineLog {
  (level: 'error' | 'warn' | 'info' | 'debug', msg: string): void;
}

export interface MemRegionSpec {
  readonly fd: number;
  readonly guestPhysAddr: bigint;
  readonly size: bigint;
  readonly userspaceAddr: bigint;
  readonly mmapOffset: bigint;
}

export class EngineError extends Error {}

const PAGE = 4096n;
/**
 * Work units a guest may spend per pass (its turn), over all its queues. A
 * unit is one descriptor walked or BYTES_PER_UNIT bytes moved; a 4 KiB PUT
 * or GET of 3 descriptors costs 20, so a turn holds 13 of them (about 13 us
 * of work: what another guest's request may wait behind a busy guest).
 */
export const TURN_UNITS = 256;
/** Bytes the device moves per work unit (a page copy costs about what 16 descriptor reads do). */
export const BYTES_PER_UNIT = 256;
/** Cost multiplier for a chain refused or answered INVALID/UNSUPPORTED (see the budget rule above). */
export const PENALTY = 4;
/** Completions written per used idx publication within a batch (a power of 2). */
const PUBLISH_EVERY = 8;
/** Store frames faulted in per idle step (Engine.prefault). */
const PREFAULT_STEP = 8;

export class Queue {
  readonly index: number;
  num = 0;
  desc = -1;
  avail = -1;
  used = -1;
  addrSet = false;
  /** Next avail index when the ring is not running. */
  base = 0;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  enabled = false;
  broken: string | null = null;
  ring: SplitQueue | null = null;
  /** Scan at the next pass even without a kick (just enabled, or kicked). */
  scan = false;
  completed = 0;
  unanswerable = 0;

  constructor(index: number) {
    this.index = index;
  }
}

export class Guest {
  readonly id: number;
  readonly name: string;
  readonly storeGuest: number;
  readonly queues: Queue[];
  readonly dev: DeviceGuest;
  features = 0n;
  eventIdx = false;
  indirect = false;
  mem: GuestMemory | null = null;
  mappings: OsMapping[] = [];
  /** The guest's running queues, in index order (rebuilt with Engine.running). */
  runQueues: Queue[] = [];
  /** Work units left in this pass; negative: debt from the last chain of a turn (budget rule). */
  credit = 0;
  /** Position in runQueues where the next turn starts. */
  nextQueue = 0;
  /** Work units spent, and chains charged the penalty (statistics). */
  workUnits = 0;
  penalized = 0;
  /** Passes this guest sat out repaying debt, or ended with work left for the next pass (statistics). */
  turnsCut = 0;
  // log rate limit
  logWindowStart = 0;
  logCount = 0;
  logSuppressed = 0;

  constructor(id: number, name: string, storeGuest: number, numQueues: number) {
    this.id = id;
    this.name = name;
    this.storeGuest = storeGuest;
    this.queues = Array.from({ length: numQueues }, (_, i) => new Queue(i));
    // Until the front-end addresses its queues, INFO reports what we offer.
    this.dev = { storeGuest, sharedNegotiated: false, numQueues };
    this.frontQueues = 0;
  }

  /**
   * The queues the front-end has: vhost-user never says num_vqs, but QEMU
   * addresses every queue it has by index (SET_VRING_CALL/ERR at realize,
   * then the start sequence), so the highest index seen + 1 is its num_vqs,
   * which ABI.md wants in INFO.num_queues.
   */
  noteFrontQueue(q: number): void {
    if (q + 1 > this.frontQueues) {
      this.frontQueues = q + 1;
      this.dev.numQueues = this.frontQueues;
    }
  }

  private frontQueues: number;
}

/** Log lines per guest per second before the rest are counted and summarised. */
const LOG_BURST = 10;

export class Engine {
  readonly guests = new Map<number, Guest>();
  /** Running queues, for the worker's poll set (rebuilt when a ring starts or stops). */
  running: { g: Guest; q: Queue }[] = [];
  /** Guests with a running queue, in turn order (rebuilt with running). */
  runGuests: Guest[] = [];
  /**
   * Set by pass(): a guest had (or may have had) work left when its turn
   * ended (budget spent, or sitting out a debt), so the caller must pass
   * again soon rather than sleep.
   */
  deferred = false;
  /** Bumped whenever the set of running queues or their kick fds changes. */
  generation = 0;
  reclaimPending = false;
  /** Store frames may need faulting in (set again whenever requests were served). */
  prefaultPending = true;
  readonly device: TmemDevice;
  private readonly walker = new ChainWalker();
  private nextGuest = 1;
  private readonly store: EngineStore;
  private readonly os: EngineOs;
  private readonly log: EngineLog;
  private readonly counters: Float64Array;
  private readonly pollMode: boolean;
  calls = 0;
  callsSuppressed = 0;
  brokenQueues = 0;

  constructor(store: EngineStore, os: EngineOs, log: EngineLog, counters: Float64Array, infoLayout: InfoLayout, pollMode: boolean) {
    this.store = store;
    this.os = os;
    this.log = log;
    this.counters = counters;
    this.device = new TmemDevice(store, infoLayout);
    this.pollMode = pollMode;
  }

  // ---------------------------------------------------------------- control

  private guest(id: number): Guest {
    const g = this.guests.get(id);
    if (!g) throw new EngineError(`unknown guest ${id}`);
    return g;
  }

  private queue(id: number, q: number): { g: Guest; q: Queue } {
    const g = this.guest(id);
    const qu = g.queues[q];
    if (!qu) throw new EngineError(`guest ${g.name}: no queue ${q}`);
    g.noteFrontQueue(q);
    return { g, q: qu };
  }

  addGuest(name: string, maxmemBytes: bigint, shareGroup: string | null, numQueues: number, limits: GuestLimits = {}): number {
    const storeGuest = this.store.addGuest({ name, maxmemPages: Number(maxmemBytes / PAGE), ramPages: 0, shareGroup, capPages: limits.capPages ?? null, ramFloorPages: limits.ramFloorPages ?? 0 });
    const id = this.nextGuest++;
    this.guests.set(id, new Guest(id, name, storeGuest, numQueues));
    return id;
  }

  removeGuest(id: number): void {
    const g = this.guest(id);
    for (const q of g.queues) {
      this.stopRing(g, q);
      this.closeFd(q, 'kickFd');
      this.closeFd(q, 'callFd');
      this.closeFd(q, 'errFd');
    }
    this.guests.delete(id);
    this.rebuild();
    g.mem = null;
    this.unmapAll(g.mappings);
    g.mappings = [];
    this.store.removeGuest(g.storeGuest);
    this.reclaimPending = true;
  }

  removeAll(): void {
    for (const id of [...this.guests.keys()]) {
      try {
        this.removeGuest(id);
      } catch (e) {
        this.log('error', `removing guest ${id}: ${(e as Error).message}`);
      }
    }
  }

  setFeatures(id: number, features: bigint): void {
    const g = this.guest(id);
    g.features = features;
    g.eventIdx = ((features >> BigInt(VIRTIO_RING_F_EVENT_IDX)) & 1n) === 1n;
    g.indirect = ((features >> BigInt(VIRTIO_RING_F_INDIRECT_DESC)) & 1n) === 1n;
    g.dev.sharedNegotiated = ((features >> BigInt(TMEM_F_SHARED)) & 1n) === 1n;
    this.restartRunning(g);
  }

  setMemTable(id: number, regions: readonly MemRegionSpec[]): void {
    const g = this.guest(id);
    const maps: OsMapping[] = [];
    const sources: RegionSource[] = [];
    let ram = 0n;
    try {
      for (const r of regions) {
        // mmap wants a page-aligned offset: map from the page below and skip the difference.
        const delta = r.mmapOffset % PAGE;
        const m = this.os.mmapShared(r.fd, r.size + delta, r.mmapOffset - delta);
        maps.push(m);
        // lazy windows: a view is made when the guest first uses its range (guest-memory.ts)
        sources.push({ guestPhysAddr: r.guestPhysAddr, userspaceAddr: r.userspaceAddr, windows: mappedWindows(m.windows, delta) });
        ram += r.size;
      }
      g.mem = new GuestMemory(sources);
    } catch (e) {
      this.unmapAll(maps);
      throw new EngineError(`guest ${g.name}: memory table refused: ${(e as Error).message}`);
    } finally {
      for (const r of regions) this.tryClose(r.fd);
    }
    const old = g.mappings;
    g.mappings = maps;
    this.restartRunning(g);
    this.unmapAll(old);
    this.store.setGuestRam(g.storeGuest, Number(ram / PAGE));
  }

  setVringNum(id: number, qi: number, num: number): void {
    const { g, q } = this.queue(id, qi);
    q.num = num;
    this.restartQueue(g, q);
  }

  setVringAddr(id: number, qi: number, desc: number, used: number, avail: number): void {
    const { g, q } = this.queue(id, qi);
    q.desc = desc;
    q.used = used;
    q.avail = avail;
    q.addrSet = true;
    q.broken = null;
    this.restartQueue(g, q);
  }

  setVringBase(id: number, qi: number, base: number): void {
    const { g, q } = this.queue(id, qi);
    if (q.ring) q.ring.lastAvail = base & 0xffff;
    q.base = base & 0xffff;
    q.broken = null;
    this.restartQueue(g, q);
  }

  /** Stops the ring (kick and call fds closed, as libvhost-user does) and returns the next avail index. */
  getVringBase(id: number, qi: number): number {
    const { g, q } = this.queue(id, qi);
    this.stopRing(g, q);
    q.enabled = false;
    this.closeFd(q, 'kickFd');
    this.closeFd(q, 'callFd');
    this.rebuild();
    return q.base;
  }

  setVringFd(id: number, qi: number, which: 'kickFd' | 'callFd' | 'errFd', fd: number): void {
    const { q } = this.queue(id, qi);
    if (q[which] !== fd) this.closeFd(q, which);
    q[which] = fd;
    if (which === 'kickFd') {
      q.scan = true;
      this.generation++;
    }
  }

  setVringEnable(id: number, qi: number, enable: boolean): void {
    const { g, q } = this.queue(id, qi);
    if (enable && !q.enabled) q.broken = null;
    q.enabled = enable;
    if (enable) {
      this.restartQueue(g, q);
      q.scan = true; // the kick may have come before the enable
    } else {
      this.stopRing(g, q);
      this.rebuild();
    }
  }

  setFrozen(id: number, frozen: boolean): void {
    this.store.setFrozen(this.guest(id).storeGuest, frozen);
  }

  flushGuest(id: number): void {
    this.store.flushGuest(this.guest(id).storeGuest);
    this.reclaimPending = true;
  }

  setShareGroup(id: number, group: string | null): void {
    this.store.setShareGroup(this.guest(id).storeGuest, group);
  }

  guestStats(): unknown[] {
    return [...this.guests.values()].map((g) => ({
      id: g.id,
      name: g.name,
      ramBytes: g.mem ? g.mem.ramBytes : 0,
      regions: g.mem ? g.mem.regions.length : 0,
      features: '0x' + g.features.toString(16),
      queues: g.queues.map((q) => ({
        index: q.index,
        size: q.num,
        enabled: q.enabled,
        running: q.ring !== null,
        broken: q.broken,
        nextAvail: q.ring ? q.ring.lastAvail : q.base,
        usedIdx: q.ring ? q.ring.usedIdx : null,
        kickFd: q.kickFd >= 0,
        callFd: q.callFd >= 0,
        completed: q.completed,
        unanswerable: q.unanswerable,
      })),
      // the budget rule (top of this file)
      workUnits: g.workUnits,
      penalizedChains: g.penalized,
      turnsCut: g.turnsCut,
      credit: g.credit,
    }));
  }

  // ---------------------------------------------------------------- rings

  private closeFd(q: Queue, which: 'kickFd' | 'callFd' | 'errFd'): void {
    const fd = q[which];
    q[which] = -1;
    if (fd >= 0) this.tryClose(fd);
    if (which === 'kickFd') this.generation++;
  }

  private tryClose(fd: number): void {
    try {
      this.os.close(fd);
    } catch (e) {
      this.log('warn', `close(${fd}): ${(e as Error).message}`);
    }
  }

  private unmapAll(maps: readonly OsMapping[]): void {
    for (const m of maps) {
      try {
        this.os.munmap(m);
      } catch (e) {
        this.log('error', `munmap: ${(e as Error).message}`);
      }
    }
  }

  private stopRing(_g: Guest, q: Queue): void {
    if (q.ring) {
      q.base = q.ring.lastAvail;
      q.ring = null;
    }
  }

  private restartRunning(g: Guest): void {
    for (const q of g.queues) if (q.ring || q.enabled) this.restartQueue(g, q);
  }

  /** (Re)creates the ring view of a queue that should run, or stops it. */
  private restartQueue(g: Guest, q: Queue): void {
    this.stopRing(g, q);
    if (q.enabled && q.addrSet && q.num > 0 && g.mem !== null && q.broken === null) {
      const r = SplitQueue.create(g.mem, q.num, { desc: q.desc, avail: q.avail, used: q.used }, q.base, g.eventIdx, true);
      if (typeof r === 'string') this.markBroken(g, q, r);
      else {
        q.ring = r;
        q.scan = true;
        if (this.pollMode) r.suppressKicks();
      }
    }
    this.rebuild();
  }

  private rebuild(): void {
    const out: { g: Guest; q: Queue }[] = [];
    const gs: Guest[] = [];
    for (const g of this.guests.values()) {
      const qs: Queue[] = [];
      for (const q of g.queues) {
        if (!q.ring) continue;
        qs.push(q);
        out.push({ g, q });
      }
      g.runQueues = qs;
      if (qs.length > 0) gs.push(g);
    }
    this.running = out;
    this.runGuests = gs;
    this.generation++;
  }

  markBroken(g: Guest, q: Queue, why: string): void {
    this.stopRing(g, q);
    q.broken = why;
    this.brokenQueues++;
    this.counters[CI.brokenQueues] = this.brokenQueues;
    this.log('error', `guest ${g.name} queue ${q.index}: broken, stopped: ${why}`);
    if (q.errFd >= 0) {
      try {
        this.os.eventfdWrite(q.errFd, 1n);
      } catch (e) {
        this.log('warn', `guest ${g.name} queue ${q.index}: err eventfd: ${(e as Error).message}`);
      }
    }
    this.rebuild();
  }

  /**
   * Whether one more line about this guest fits in LOG_BURST a second; if
   * not, it is counted and summarised when the next second starts. Checked
   * before the line is built, so a flood of bad chains costs no strings.
   */
  logAllowed(g: Guest): boolean {
    const now = Date.now();
    if (now - g.logWindowStart >= 1000) {
      if (g.logSuppressed > 0) this.log('warn', `guest ${g.name}: ${g.logSuppressed} more such messages suppressed`);
      g.logWindowStart = now;
      g.logCount = 0;
      g.logSuppressed = 0;
    }
    if (g.logCount < LOG_BURST) {
      g.logCount++;
      return true;
    }
    g.logSuppressed++;
    return false;
  }

  /** Logs about one guest, at most LOG_BURST lines a second; the rest are counted. */
  guestLog(g: Guest, msg: string): void {
    if (this.logAllowed(g)) this.log('warn', `guest ${g.name}: ${msg}`);
  }

  /**
   * Serves what the queue's avail ring holds while the guest has credit
   * (g.credit, charged per chain as the budget rule says), completes each
   * chain in ring order, then signals the call eventfd if the guest asks for
   * it. Returns the chains completed.
   */
  serveQueue(g: Guest, q: Queue): number {
    const ring = q.ring;
    if (ring === null) return 0;
    const mem = g.mem!;
    const walker = this.walker;
    const device = this.device;
    walker.mem = mem;
    let done = 0;
    let credit = g.credit;
    try {
      while (credit > 0) {
        const n = ring.pending();
        if (n < 0) {
          this.markBroken(g, q, `avail idx ${ring.availIdx()} is more than the queue size ${ring.num} ahead of ${ring.lastAvail}`);
          break;
        }
        if (n === 0) break;
        for (let i = 0; i < n && credit > 0; i++) {
          const head = ring.popHead();
          let len: number;
          // Refused, unanswerable, INVALID or UNSUPPORTED: nothing beyond the
          // header was moved whatever lengths the chain claims; the walk is
          // the cost, times the penalty.
          let bad = true;
          if (walker.walk(ring.descView, ring.descOff, ring.num, head, g.indirect)) {
            len = device.handle(g.dev, walker.readable, walker.writable);
            if (len === 0) {
              q.unanswerable++;
              if (this.logAllowed(g)) this.log('warn', `guest ${g.name}: queue ${q.index}: request at head ${head} unanswerable: ${device.error}`);
            } else bad = device.lastStatus === TMEM_S_INVALID || device.lastStatus === TMEM_S_UNSUPPORTED;
          } else {
            device.counters.requests++;
            device.counters.unanswerable++;
            q.unanswerable++;
            len = 0;
            if (this.logAllowed(g)) this.log('warn', `guest ${g.name}: queue ${q.index}: chain at head ${head} refused: ${walker.error}`);
          }
          let cost: number;
          if (bad) {
            // At least one descriptor's worth: a head outside the queue reads none.
            cost = PENALTY * (walker.descriptors > 0 ? walker.descriptors : 1);
            g.penalized++;
          } else cost = walker.descriptors + Math.ceil((walker.readable.total + len) / BYTES_PER_UNIT);
          credit -= cost;
          g.workUnits += cost;
          ring.addUsed(head, len);
          done++;
          // Publish every PUBLISH_EVERY completions: fewer fenced stores and
          // cache-line transfers, while a deep queue still sees its first
          // completions early.
          if ((done & (PUBLISH_EVERY - 1)) === 0) ring.publishUsed();
        }
        ring.publishUsed();
      }
      q.completed += done;
      if (done > 0) this.notify(g, q, ring);
    } catch (e) {
      ring.publishUsed(); // what was completed before the fault stays completed
      this.markBroken(g, q, `internal error: ${(e as Error).stack ?? String(e)}`);
    }
    g.credit = credit;
    return done;
  }

  private notify(g: Guest, q: Queue, ring: SplitQueue): void {
    if (!ring.needsNotify()) {
      this.callsSuppressed++;
      return;
    }
    if (q.callFd < 0) return;
    try {
      this.os.eventfdWrite(q.callFd, 1n);
      this.calls++;
    } catch (e) {
      this.guestLog(g, `queue ${q.index}: call eventfd: ${(e as Error).message}`);
    }
  }

  /**
   * One pass: a turn for every guest with a running queue (budget rule at
   * the top of this file). Serves every running queue (poll mode), or the
   * queues marked for a scan (notify mode). In notify mode a queue is
   * drained, then kicks are re-enabled and the ring re-checked, so no request
   * is left behind waiting for a kick that the guest will not send; a queue
   * cut short by its guest's budget stays marked and is served next pass.
   * Returns the chains completed; `deferred` says whether work was left.
   */
  pass(all: boolean): number {
    let work = 0;
    let deferred = false;
    const gs = this.runGuests;
    for (let i = 0; i < gs.length; i++) {
      const g = gs[i]!;
      const c = g.credit + TURN_UNITS;
      g.credit = c > TURN_UNITS ? TURN_UNITS : c;
      if (g.credit <= 0) {
        // Sitting out a debt; its queues keep their scan marks.
        g.turnsCut++;
        deferred = true;
        continue;
      }
      const qs = g.runQueues;
      const nq = qs.length;
      const first = g.nextQueue < nq ? g.nextQueue : 0;
      for (let k = 0; k < nq; k++) {
        const pos = first + k < nq ? first + k : first + k - nq;
        const q = qs[pos]!;
        if (!all && !q.scan && q.kickFd >= 0) continue;
        q.scan = false;
        work += this.serveQueue(g, q);
        if (g.credit <= 0) {
          // Turn over, perhaps with more waiting here: the guest's other
          // queues go first next turn, then this one again.
          if (!all && q.ring !== null) q.scan = true;
          g.nextQueue = pos + 1 < nq ? pos + 1 : 0;
          g.turnsCut++;
          deferred = true;
          break;
        }
        if (!all && q.ring !== null && q.ring.enableKicks()) q.scan = true;
      }
    }
    this.deferred = deferred;
    if (work > 0) {
      this.prefaultPending = true;
      // DESTROY_POOL and RESET leave frames to free: reclaim them in idle
      // steps now rather than only when a later PUT needs the room.
      if (this.store.reclaimPending && this.store.reclaimPending() > 0) this.reclaimPending = true;
      this.publishCounters();
    }
    return work;
  }

  /** Poll mode, going to sleep: re-enable kicks everywhere. True if work arrived meanwhile (do not sleep). */
  enableAllKicks(): boolean {
    let work = false;
    for (const { q } of this.running) if (q.ring!.enableKicks()) work = true;
    return work;
  }

  suppressAllKicks(): void {
    for (const { q } of this.running) q.ring!.suppressKicks();
  }

  /** A queue's kick eventfd fired: consume it and scan the queue. */
  kicked(q: Queue): void {
    if (q.kickFd >= 0) {
      try {
        this.os.eventfdRead(q.kickFd);
      } catch {
        /* an eventfd read fails only if the fd is gone; the ring is still scanned */
      }
    }
    q.scan = true;
    this.counters[CI.kicks]!++;
  }

  reclaim(budget: number): void {
    if (!this.reclaimPending) return;
    this.reclaimPending = this.store.reclaimStep(budget) > 0;
    this.counters[CI.reclaimSteps]!++;
  }

  /**
   * Idle work after reclaim: faults in a few of the store's never-used frames
   * ahead of use, so that PUTs filling a fresh store do not each take a page
   * fault (about 20 us in a VM). Small steps: a request arriving meanwhile
   * waits for at most PREFAULT_STEP faults.
   */
  prefault(): void {
    if (!this.prefaultPending) return;
    this.prefaultPending = this.store.prefaultStep !== undefined && this.store.prefaultStep(PREFAULT_STEP) > 0;
  }

  publishCounters(): void {
    const c = this.device.counters;
    const k = this.counters;
    k[CI.requests] = c.requests;
    k[CI.unanswerable] = c.unanswerable;
    k[CI.opUnknown] = c.ops[0]!;
    k[CI.opNewPool] = c.ops[1]!;
    k[CI.opDestroyPool] = c.ops[2]!;
    k[CI.opPutPage] = c.ops[3]!;
    k[CI.opGetPage] = c.ops[4]!;
    k[CI.opFlushPage] = c.ops[5]!;
    k[CI.opFlushObject] = c.ops[6]!;
    k[CI.opInfo] = c.ops[7]!;
    k[CI.opReset] = c.ops[8]!;
    k[CI.statusOk] = c.ok;
    k[CI.statusMiss] = c.miss;
    k[CI.statusInvalid] = c.invalid;
    k[CI.statusNoSpace] = c.noSpace;
    k[CI.statusDenied] = c.denied;
    k[CI.statusFrozen] = c.frozen;
    k[CI.statusUnsupported] = c.unsupported;
    k[CI.putsGathered] = c.putsGathered;
    k[CI.getsScattered] = c.getsScattered;
    k[CI.calls] = this.calls;
    k[CI.callsSuppressed] = this.callsSuppressed;
  }
}
