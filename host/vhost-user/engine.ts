// The vrings and guest memory of every connection, independent of the thread
// it runs in, and of the device: each connection is an Instance holding its
// guest memory, its queues and their fds, and a WorkerDevice (device.ts) that
// answers one chain at a time. The worker (worker.ts) owns one Engine and
// drives it in poll or notify mode; tests drive one directly with fake OS
// functions and ArrayBuffer RAM. The *_exec-style methods (setMemTable,
// setVringNum, ...) are the vhost-user messages' effects, run here, next to
// the rings (libvhost-user's vu_*_exec); the protocol table (connection.ts)
// has validated the message already.
//
// Isolation: everything a guest can influence is checked (chain walker,
// device) and any exception while serving one queue marks that queue broken
// (logged, err eventfd signalled); other queues and guests go on.
//
// Fairness (the budget rule): one worker serves every guest, so a pass gives
// each instance a turn in round robin, and a turn is bounded by work, not by
// chains. A chain's cost is the descriptors the walker read (an indirect
// table's entries included) plus one unit per BYTES_PER_UNIT bytes the device
// moved; a chain the device could not answer (used len 0) or `refused`
// (tmem INVALID/UNSUPPORTED, ...) costs PENALTY times its descriptors, so a
// guest sending malformed chains gets that much less of the worker. A device
// may add units for work its bytes do not show (WorkerDevice.extraCost:
// tmem-blk's overflow-file I/O), so a guest whose requests hit the disk
// holds the worker for fewer of them per turn. Each pass
// tops an instance's credit up by TURN_UNITS, to at most TURN_UNITS (an idle
// guest banks nothing); its turn serves its queues, round robin from where
// the last turn stopped, while the credit is positive. A chain cannot be cut
// in two, so the last one of a turn may overdraw: the debt is carried, and an
// instance in debt sits out passes until the top-ups repay it. Hence a
// request waits, behind each other guest, for at most TURN_UNITS plus one
// chain (a chain is at most the queue size of descriptors, 1024 from QEMU,
// and one page of data); and a guest that floods with long or malformed
// chains gets at most its share.
import { ChainWalker } from '../virtio/chain.js';
import { GuestMemory, mappedWindows, type RegionSource } from '../virtio/guest-memory.js';
import { SplitQueue } from '../virtio/split-queue.js';
import { countersObject } from '../counters.js';
import { HANDLE_LATER, type DeviceKind, type InstanceInfo, type MemoryPolicy, type MemoryRegion, type VringAddr, type WorkerDevice } from './device.js';
import { VC, VRING_COUNTERS } from './counters.js';
import { VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from './messages.js';

/** What a guest RAM file is (native.inspectGuestRamFd). */
export interface GuestRamFile {
  readonly fs: string;
  readonly noShrink: boolean;
  readonly size: bigint;
}

/** The OS functions the engine needs (native/ in the worker, fakes in tests). */
export interface EngineOs {
  mmapShared(fd: number, length: bigint, offset: bigint): OsMapping;
  munmap(m: OsMapping): void;
  close(fd: number): void;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value?: bigint): void;
  /** Absent in tests with ArrayBuffer RAM: the file checks of setMemTable are skipped. */
  inspectGuestRamFd?(fd: number): GuestRamFile;
}

export interface OsMapping {
  readonly windows: readonly { readonly offset: bigint; readonly length?: number; readonly bytes: Uint8Array }[];
}

export interface EngineLog {
  (level: 'error' | 'warn' | 'info' | 'debug', msg: string): void;
}

/** A refused command: the message goes back to the main thread as the command's error. */
export class EngineError extends Error {}

const PAGE = 4096n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/**
 * Work units an instance may spend per pass (its turn), over all its queues.
 * A unit is one descriptor walked or BYTES_PER_UNIT bytes moved; a 4 KiB PUT
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
/** Log lines per instance per second before the rest are counted and summarised. */
const LOG_BURST = 10;

export class Queue {
  readonly index: number;
  num = 0;
  /** Ring addresses as numbers; -1: beyond 2^53, so inside no mapping (the ring then refuses to start). */
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
  /** The device answered HANDLE_LATER for the chain at the ring's head: offered again every pass until it is served. */
  parked = false;
  completed = 0;
  unanswerable = 0;

  constructor(index: number) {
    this.index = index;
  }
}

/** One connection: its memory, queues and device. The only holder of each of these. */
export class Instance {
  readonly id: number;
  readonly vm: string;
  readonly kind: string;
  readonly queues: Queue[];
  readonly dev: WorkerDevice;
  readonly policy: MemoryPolicy;
  /** The vring counters of this instance (VRING_COUNTERS layout). */
  readonly counters = new Float64Array(VRING_COUNTERS.length);
  features = 0n;
  eventIdx = false;
  indirect = false;
  mem: GuestMemory | null = null;
  mappings: OsMapping[] = [];
  /** The instance's running queues, in index order (rebuilt with Engine.running). */
  runQueues: Queue[] = [];
  /** Work units left in this pass; negative: debt from the last chain of a turn (budget rule). */
  credit = 0;
  /** Position in runQueues where the next turn starts. */
  nextQueue = 0;
  /** Queues the front-end addressed (highest index + 1). */
  frontQueues = 0;
  // log rate limit
  logWindowStart = 0;
  logCount = 0;
  logSuppressed = 0;

  constructor(info: InstanceInfo, policy: MemoryPolicy, dev: WorkerDevice) {
    this.id = info.id;
    this.vm = info.vm;
    this.kind = info.kind;
    this.policy = policy;
    this.dev = dev;
    this.queues = Array.from({ length: info.numQueues }, (_, i) => new Queue(i));
  }

  get label(): string {
    return `vm ${this.vm} ${this.kind}#${this.id}`;
  }

}

export class Engine {
  readonly instances = new Map<number, Instance>();
  /** Running queues, for the worker's poll set (rebuilt when a ring starts or stops). */
  running: { g: Instance; q: Queue }[] = [];
  /** Instances with a running queue, in turn order (rebuilt with running). */
  runInstances: Instance[] = [];
  /**
   * Set by pass(): an instance had (or may have had) work left when its turn
   * ended (budget spent, or sitting out a debt), so the caller must pass
   * again soon rather than sleep.
   */
  deferred = false;
  /**
   * Set by pass(): a queue waits for its device (HANDLE_LATER). The worker
   * then sleeps only briefly (worker.ts, PARKED_RETRY_MS), so the parked
   * chain is offered again soon after its data can have arrived.
   */
  parked = false;
  /** Bumped whenever the set of running queues or their kick fds changes. */
  generation = 0;
  /**
   * Whether idle() has work: set when the last idle() left some, when a
   * connection closes or a control op ran, and after a pass that served
   * requests if a device kind wants its idle hook (DeviceKind.idleWanted).
   */
  idlePending = true;
  /** Vring counters of instances that have closed (host-wide sums keep them). */
  readonly closedCounters = new Float64Array(VRING_COUNTERS.length);
  private readonly walker = new ChainWalker();
  private readonly os: EngineOs;
  private readonly log: EngineLog;
  private readonly pollMode: boolean;
  private readonly kinds: DeviceKind[] = [];
  /** Open instances whose device has an idle hook of its own (they are asked after every pass with work). */
  private instanceIdleHooks = 0;

  constructor(os: EngineOs, log: EngineLog, pollMode: boolean) {
    this.os = os;
    this.log = log;
    this.pollMode = pollMode;
  }

  /** A device kind whose idle hook the engine runs. */
  addKind(k: DeviceKind): void {
    this.kinds.push(k);
  }

  // ---------------------------------------------------------------- lookup

  private instance(id: number): Instance {
    const g = this.instances.get(id);
    if (!g) throw new EngineError(`unknown instance ${id}`);
    return g;
  }

  private queue(id: number, q: number): { g: Instance; q: Queue } {
    const g = this.instance(id);
    const qu = g.queues[q];
    if (!qu) throw new EngineError(`${g.label}: no queue ${q}`);
    if (q + 1 > g.frontQueues) {
      // vhost-user never says num_vqs, but QEMU addresses every queue it has
      // by index (SET_VRING_CALL/ERR at realize), so highest + 1 is its num_vqs.
      g.frontQueues = q + 1;
      g.dev.queuesAddressed?.(g.frontQueues);
    }
    return { g, q: qu };
  }

  // ---------------------------------------------------------------- connections

  /** A connection opened: `dev` is the device kind's instance for it. */
  open(info: InstanceInfo, policy: MemoryPolicy, dev: WorkerDevice): void {
    if (this.instances.has(info.id)) throw new EngineError(`instance ${info.id} exists`);
    this.instances.set(info.id, new Instance(info, policy, dev));
    if (dev.idle) this.instanceIdleHooks++;
  }

  /** The connection is gone: stop its rings, close its fds, unmap its memory, close its device. */
  close(id: number): void {
    const g = this.instance(id);
    for (const q of g.queues) {
      this.stopRing(q);
      this.closeFd(q, 'kickFd');
      this.closeFd(q, 'callFd');
      this.closeFd(q, 'errFd');
    }
    this.instances.delete(id);
    if (g.dev.idle) this.instanceIdleHooks--;
    this.rebuild();
    g.mem = null;
    this.unmapAll(g.mappings);
    g.mappings = [];
    for (let i = 0; i < g.counters.length; i++) this.closedCounters[i] += g.counters[i]!;
    try {
      g.dev.close();
    } catch (e) {
      this.log('error', `${g.label}: closing the device: ${(e as Error).message}`);
    }
    this.idlePending = true;
  }

  closeAll(): void {
    for (const id of [...this.instances.keys()]) {
      try {
        this.close(id);
      } catch (e) {
        this.log('error', `closing instance ${id}: ${(e as Error).message}`);
      }
    }
  }

  // ---------------------------------------------------------------- messages (*_exec)

  /** SET_FEATURES. */
  setFeatures(id: number, features: bigint): void {
    const g = this.instance(id);
    g.features = features;
    g.eventIdx = ((features >> BigInt(VIRTIO_RING_F_EVENT_IDX)) & 1n) === 1n;
    g.indirect = ((features >> BigInt(VIRTIO_RING_F_INDIRECT_DESC)) & 1n) === 1n;
    g.dev.setFeatures(features);
    this.restartRunning(g);
  }

  /**
   * SET_MEM_TABLE: checks the regions' files (before anything is mapped: a
   * refusal says what is wrong and what to do), maps them, moves the running
   * rings onto the new mapping, and tells the device. Takes the fds: they
   * are closed here whatever happens (a mapping keeps its file). Returns the
   * guest's RAM in bytes.
   */
  setMemTable(id: number, regions: readonly MemoryRegion[]): bigint {
    let g: Instance;
    try {
      g = this.instance(id);
      this.checkRegions(g, regions);
    } catch (e) {
      for (const r of regions) this.tryClose(r.fd);
      throw e;
    }
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
      throw new EngineError(`${g.label}: memory table refused: ${(e as Error).message}`);
    } finally {
      for (const r of regions) this.tryClose(r.fd);
    }
    const old = g.mappings;
    g.mappings = maps;
    this.restartRunning(g);
    this.unmapAll(old);
    g.dev.memoryChanged(ram);
    return ram;
  }

  /**
   * The guest's RAM is at most its max-ram; each region's fd is a memfd or a
   * file on tmpfs or hugetlbfs, sealed against shrinking unless allowed (a
   * file that shrinks under a mapping is SIGBUS for the whole daemon), and
   * holds the region (offset + size within the file).
   */
  private checkRegions(g: Instance, regions: readonly MemoryRegion[]): void {
    let ram = 0n;
    for (const r of regions) ram += r.size;
    const p = g.policy;
    if (p.maxRamBytes !== null && ram > p.maxRamBytes) {
      throw new EngineError(
        `guest RAM of ${ram} bytes (${regions.length} region(s)) is more than max-ram (${p.maxRamBytes} bytes) for VM ${g.vm}; raise max-ram= if the VM really has that much RAM`,
      );
    }
    const inspect = this.os.inspectGuestRamFd;
    if (!inspect) return;
    regions.forEach((r, i) => {
      let f: GuestRamFile;
      try {
        f = inspect(r.fd);
      } catch (e) {
        // "mmap (fd 7 is a file on ...): EINVAL: invalid argument": the part in brackets says it
        const m = /^mmap \((.*)\): EINVAL: invalid argument$/.exec((e as Error).message);
        throw new EngineError(`region ${i}: ${m ? m[1] : (e as Error).message}; give guest RAM as memory-backend-memfd (share=on)`);
      }
      if (!f.noShrink && !p.allowUnsealed) {
        throw new EngineError(
          `region ${i}: the guest RAM file (on ${f.fs}) is not sealed against shrinking: whoever holds it could truncate it and crash tmemd (SIGBUS) with every VM; ` +
            `use -object memory-backend-memfd (seal=on is its default), or accept the risk with allow-unsealed=on for VM ${g.vm}`,
        );
      }
      if (r.mmapOffset + r.size > f.size) {
        throw new EngineError(`region ${i}: ${r.size} bytes at offset ${r.mmapOffset} go past the end of the file (${f.size} bytes)`);
      }
    });
  }

  /** SET_VRING_NUM (size already checked against the device's maximum). */
  setVringNum(id: number, qi: number, num: number): void {
    const { g, q } = this.queue(id, qi);
    q.num = num;
    this.restartQueue(g, q);
  }

  /** SET_VRING_ADDR. */
  setVringAddr(id: number, qi: number, a: VringAddr): void {
    const { g, q } = this.queue(id, qi);
    // Beyond 2^53 no mapping reaches: -1, which the ring refuses when it starts.
    const n = (x: bigint): number => (x > MAX_SAFE ? -1 : Number(x));
    q.desc = n(a.descUser);
    q.used = n(a.usedUser);
    q.avail = n(a.availUser);
    q.addrSet = true;
    q.broken = null;
    this.restartQueue(g, q);
  }

  /** SET_VRING_BASE. */
  setVringBase(id: number, qi: number, base: number): void {
    const { g, q } = this.queue(id, qi);
    if (q.ring) q.ring.lastAvail = base & 0xffff;
    q.base = base & 0xffff;
    q.broken = null;
    this.restartQueue(g, q);
  }

  /** GET_VRING_BASE: stops the ring (kick and call fds closed, as libvhost-user does) and returns the next avail index. */
  getVringBase(id: number, qi: number): number {
    const { q } = this.queue(id, qi);
    this.stopRing(q);
    q.enabled = false;
    this.closeFd(q, 'kickFd');
    this.closeFd(q, 'callFd');
    this.rebuild();
    return q.base;
  }

  /** SET_VRING_KICK/CALL/ERR (fd -1: none); takes the fd. */
  setVringFd(id: number, qi: number, which: 'kickFd' | 'callFd' | 'errFd', fd: number): void {
    let q: Queue;
    try {
      q = this.queue(id, qi).q;
    } catch (e) {
      if (fd >= 0) this.tryClose(fd);
      throw e;
    }
    if (q[which] !== fd) this.closeFd(q, which);
    q[which] = fd;
    if (which === 'kickFd') {
      q.scan = true;
      this.generation++;
    }
  }

  /** SET_VRING_ENABLE. */
  setVringEnable(id: number, qi: number, enable: boolean): void {
    const { g, q } = this.queue(id, qi);
    if (enable && !q.enabled) q.broken = null;
    q.enabled = enable;
    if (enable) {
      this.restartQueue(g, q);
      q.scan = true; // the kick may have come before the enable
    } else {
      this.stopRing(q);
      this.rebuild();
    }
  }

  /** RESET_OWNER / RESET_DEVICE: every ring stops; the device keeps its state (tmem: ring restarts change nothing). */
  reset(id: number): void {
    const g = this.instance(id);
    for (const q of g.queues) {
      q.enabled = false;
      this.stopRing(q);
    }
    g.features = 0n;
    this.rebuild();
    g.dev.reset?.();
  }

  /** A device control op for one instance. */
  control(id: number, op: string, args: unknown): unknown {
    const g = this.instance(id);
    if (!g.dev.control) throw new EngineError(`${g.label}: the ${g.kind} device has no control ops`);
    const r = g.dev.control(op, args);
    this.idlePending = true; // a flush or reset leaves pages to reclaim
    return r;
  }

  instanceStats(): Record<string, unknown>[] {
    return [...this.instances.values()].map((g) => ({
      id: g.id,
      vm: g.vm,
      kind: g.kind,
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
      // the budget rule (top of this file): workUnits, penalizedChains, turnsCut are in the counters
      credit: g.credit,
      // by block, as the host-wide sums: { vring: {...}, <kind>: {...} }
      counters: { vring: countersObject(VRING_COUNTERS, g.counters) } as Record<string, Record<string, number>>,
      ...(g.dev.stats ? { device: g.dev.stats() } : {}),
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
    if (fd < 0) return;
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

  private stopRing(q: Queue): void {
    if (q.ring) {
      q.base = q.ring.lastAvail;
      q.ring = null;
    }
  }

  private restartRunning(g: Instance): void {
    for (const q of g.queues) if (q.ring || q.enabled) this.restartQueue(g, q);
  }

  /** (Re)creates the ring view of a queue that should run, or stops it. */
  private restartQueue(g: Instance, q: Queue): void {
    this.stopRing(q);
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
    const out: { g: Instance; q: Queue }[] = [];
    const gs: Instance[] = [];
    for (const g of this.instances.values()) {
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
    this.runInstances = gs;
    this.generation++;
  }

  markBroken(g: Instance, q: Queue, why: string): void {
    this.stopRing(q);
    q.broken = why;
    g.counters[VC.brokenQueues]!++;
    this.log('error', `${g.label} queue ${q.index}: broken, stopped: ${why}`);
    if (q.errFd >= 0) {
      try {
        this.os.eventfdWrite(q.errFd, 1n);
      } catch (e) {
        this.log('warn', `${g.label} queue ${q.index}: err eventfd: ${(e as Error).message}`);
      }
    }
    this.rebuild();
  }

  /**
   * Whether one more line about this instance fits in LOG_BURST a second; if
   * not, it is counted and summarised when the next second starts. Checked
   * before the line is built, so a flood of bad chains costs no strings.
   */
  logAllowed(g: Instance): boolean {
    const now = Date.now();
    if (now - g.logWindowStart >= 1000) {
      if (g.logSuppressed > 0) this.log('warn', `${g.label}: ${g.logSuppressed} more such messages suppressed`);
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

  /**
   * Serves what the queue's avail ring holds while the instance has credit
   * (g.credit, charged per chain as the budget rule says), completes each
   * chain in ring order, then signals the call eventfd if the guest asks for
   * it. Returns the chains completed.
   */
  serveQueue(g: Instance, q: Queue): number {
    const ring = q.ring;
    if (ring === null) return 0;
    const walker = this.walker;
    const dev = g.dev;
    const c = g.counters;
    walker.mem = g.mem!;
    let done = 0;
    let credit = g.credit;
    let stopped = false;
    try {
      while (credit > 0 && !stopped) {
        const n = ring.pending();
        if (n < 0) {
          this.markBroken(g, q, `avail idx ${ring.availIdx()} is more than the queue size ${ring.num} ahead of ${ring.lastAvail}`);
          break;
        }
        if (n === 0) break;
        for (let i = 0; i < n && credit > 0; i++) {
          const head = ring.popHead();
          let len: number;
          // Refused, unanswerable, or refused by the device: nothing beyond
          // the header was moved whatever lengths the chain claims; the walk
          // is the cost, times the penalty.
          let bad = true;
          let unanswerable: string | null = null;
          if (walker.walk(ring.descView, ring.descOff, ring.num, head, g.indirect)) {
            len = dev.handle(q.index, walker.readable, walker.writable);
            if (len === HANDLE_LATER) {
              // Not now (device.ts): the head goes back, the queue waits
              // behind it and is offered again next pass. The walk is paid.
              ring.lastAvail = (ring.lastAvail - 1) & 0xffff;
              if (!q.parked) c[VC.parkedChains]!++;
              q.parked = true;
              const cost = walker.descriptors > 0 ? walker.descriptors : 1;
              credit -= cost;
              c[VC.workUnits] += cost;
              stopped = true;
              break;
            }
            q.parked = false;
            if (len === 0) {
              c[VC.unanswerable]!++;
              q.unanswerable++;
              unanswerable = `request at head ${head} unanswerable: ${dev.error}`;
            } else bad = dev.refused;
          } else {
            c[VC.unanswerable]!++;
            c[VC.chainsRefused]!++;
            q.unanswerable++;
            len = 0;
            unanswerable = `chain at head ${head} refused: ${walker.error}`;
          }
          if (unanswerable !== null) {
            if (dev.unanswerableBreaksQueue === true) {
              // Nothing is completed: the driver must not take this chain as
              // done. The head is given back, so the base a GET_VRING_BASE
              // reports still names it.
              ring.lastAvail = (ring.lastAvail - 1) & 0xffff;
              this.markBroken(g, q, unanswerable);
              stopped = true;
              break;
            }
            if (this.logAllowed(g)) this.log('warn', `${g.label}: queue ${q.index}: ${unanswerable}`);
          }
          let cost: number;
          if (bad) {
            // At least one descriptor's worth: a head outside the queue reads none.
            cost = PENALTY * (walker.descriptors > 0 ? walker.descriptors : 1);
            c[VC.penalizedChains]!++;
          } else {
            cost = walker.descriptors + Math.ceil((walker.readable.total + len) / BYTES_PER_UNIT);
            const extra = dev.extraCost;
            if (extra !== undefined && extra > 0) cost += extra;
          }
          credit -= cost;
          c[VC.workUnits] += cost;
          c[VC.requests]!++;
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

  private notify(g: Instance, q: Queue, ring: SplitQueue): void {
    if (!ring.needsNotify()) {
      g.counters[VC.callsSuppressed]!++;
      return;
    }
    if (q.callFd < 0) return;
    try {
      this.os.eventfdWrite(q.callFd, 1n);
      g.counters[VC.calls]!++;
    } catch (e) {
      if (this.logAllowed(g)) this.log('warn', `${g.label}: queue ${q.index}: call eventfd: ${(e as Error).message}`);
    }
  }

  /**
   * One pass: a turn for every instance with a running queue (budget rule at
   * the top of this file). Serves every running queue (poll mode), or the
   * queues marked for a scan (notify mode). In notify mode a queue is
   * drained, then kicks are re-enabled and the ring re-checked, so no request
   * is left behind waiting for a kick that the guest will not send; a queue
   * cut short by its instance's budget stays marked and is served next pass.
   * Returns the chains completed; `deferred` says whether work was left.
   */
  pass(all: boolean): number {
    let work = 0;
    let deferred = false;
    let parked = false;
    const gs = this.runInstances;
    for (let i = 0; i < gs.length; i++) {
      const g = gs[i]!;
      const c = g.credit + TURN_UNITS;
      g.credit = c > TURN_UNITS ? TURN_UNITS : c;
      if (g.credit <= 0) {
        // Sitting out a debt; its queues keep their scan marks.
        g.counters[VC.turnsCut]!++;
        deferred = true;
        continue;
      }
      const qs = g.runQueues;
      const nq = qs.length;
      const first = g.nextQueue < nq ? g.nextQueue : 0;
      for (let k = 0; k < nq; k++) {
        const pos = first + k < nq ? first + k : first + k - nq;
        const q = qs[pos]!;
        if (!all && !q.scan && !q.parked && q.kickFd >= 0) continue;
        q.scan = false;
        work += this.serveQueue(g, q);
        if (q.parked) parked = true;
        if (g.credit <= 0) {
          // Turn over, perhaps with more waiting here: the instance's other
          // queues go first next turn, then this one again.
          if (!all && q.ring !== null) q.scan = true;
          g.nextQueue = pos + 1 < nq ? pos + 1 : 0;
          g.counters[VC.turnsCut]!++;
          deferred = true;
          break;
        }
        // a parked queue's head is still pending: it is offered again by the parked path, not scanned at once (no spin)
        if (!all && q.ring !== null && q.ring.enableKicks() && !q.parked) q.scan = true;
      }
    }
    this.deferred = deferred;
    this.parked = parked;
    // Requests served may leave idle work (tmem: prefault ahead, reclaim after DESTROY_POOL/RESET).
    if (work > 0 && !this.idlePending) this.idlePending = this.idleWanted();
    return work;
  }

  /** Whether any device kind or instance has idle work after requests were served (DeviceKind.idleWanted). */
  private idleWanted(): boolean {
    if (this.instanceIdleHooks > 0) return true;
    const ks = this.kinds;
    for (let i = 0; i < ks.length; i++) {
      const k = ks[i]!;
      try {
        if (k.idleWanted ? k.idleWanted() : k.idle !== undefined) return true;
      } catch (e) {
        this.log('error', `idle work: ${(e as Error).message}`);
        return true;
      }
    }
    return false;
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

  /** A queue's kick eventfd fired and the caller does not read eventfds (an edge-triggered set): scan the queue. */
  kickedNoRead(g: Instance, q: Queue): void {
    q.scan = true;
    g.counters[VC.kicks]!++;
  }

  /** A queue's kick eventfd fired: consume it and scan the queue. */
  kicked(g: Instance, q: Queue): void {
    if (q.kickFd >= 0) {
      try {
        this.os.eventfdRead(q.kickFd);
      } catch {
        /* an eventfd read fails only if the fd is gone; the ring is still scanned */
      }
    }
    q.scan = true;
    g.counters[VC.kicks]!++;
  }

  /**
   * Idle work: each device kind's hook, then each instance's, in small
   * steps (a request arriving meanwhile waits for one step). Returns whether
   * any is still pending; the worker then does not sleep.
   */
  idle(): boolean {
    if (!this.idlePending) return false;
    let more = false;
    for (const k of this.kinds) {
      try {
        if (k.idle?.()) more = true;
      } catch (e) {
        this.log('error', `idle work: ${(e as Error).message}`);
      }
    }
    for (const g of this.instances.values()) {
      try {
        if (g.dev.idle?.()) more = true;
      } catch (e) {
        if (this.logAllowed(g)) this.log('error', `${g.label}: idle work: ${(e as Error).message}`);
      }
    }
    this.idlePending = more;
    return more;
  }
}
