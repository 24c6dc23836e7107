// The seam between the vhost-user core and a device, in the manner of
// rust-vmm's `VhostUserBackend` trait. The core (this folder) does the
// sockets, the message table, guest memory, the vrings and their state; a
// device says what it offers and answers one descriptor chain at a time.
//
// A device has two halves because the rings are served on the vring worker
// thread while the sockets are on the main thread:
//
//   - VhostUserDevice (main thread, one per configured VM and device kind):
//     features, protocol features, queues, config space, and the parameters
//     its worker half is opened with for each connection. It keeps what the
//     operator set for the VM (survives reconnects) and sends device control
//     ops (freeze, flush, limits) to its connected instance.
//   - DeviceWorkerModule (vring worker): an ES module the worker imports by
//     URL at start (so this folder imports no device). Its factory is made
//     once per worker (the place for state shared by all instances of all
//     VMs, e.g. the tmem store, through WorkerHost.shared) and opens one
//     WorkerDevice per connection (VM, device kind, connection).
//
// Nothing here is tmem: a second device (vhost-user-blk) implements the same
// two interfaces and needs no change in host/vhost-user/.
import type { SegmentList } from '../virtio/guest-memory.js';
import type { CounterSpec } from '../counters.js';

// ------------------------------------------------------------------ records
// One type per record, shared by the protocol table, the commands and the worker.

/** One guest memory region (SET_MEM_TABLE); `fd` belongs to whoever holds the record. */
export interface MemoryRegion {
  readonly fd: number;
  readonly guestPhysAddr: bigint;
  readonly size: bigint;
  readonly userspaceAddr: bigint;
  readonly mmapOffset: bigint;
}

/** Ring addresses in the front-end's (QEMU's) virtual address space (SET_VRING_ADDR). */
export interface VringAddr {
  readonly descUser: bigint;
  readonly usedUser: bigint;
  readonly availUser: bigint;
}

/** What the core checks of guest RAM before it maps it (per VM, from the operator). */
export interface MemoryPolicy {
  /** Most guest RAM (sum of the regions) accepted; null: no bound. */
  readonly maxRamBytes: bigint | null;
  /** Accept RAM files not sealed against shrinking (tmpfs/hugetlbfs file); default false. */
  readonly allowUnsealed: boolean;
}

// ------------------------------------------------------------------ main thread

/** A device as the main thread sees it: one per configured VM and device kind. */
export interface VhostUserDevice {
  /** The VM's name (log lines, stats, control). */
  readonly vm: string;
  /** Device kind, e.g. 'tmem' or 'blk': selects the worker module, names counters. */
  readonly kind: string;
  /** URL (file: URL string) of the module the worker imports for this kind (DeviceWorkerModule). */
  readonly workerModule: string;
  /** Queues offered (GET_QUEUE_NUM with MQ; the queue index range accepted). */
  numQueues(): number;
  /** Largest queue size SET_VRING_NUM may ask for (a power of 2, at most 32768). */
  maxQueueSize(): number;
  /** Virtio features offered by GET_FEATURES (VHOST_USER_F_PROTOCOL_FEATURES included). */
  features(): bigint;
  /** vhost-user protocol features offered (CONFIG if getConfig exists; MQ; REPLY_ACK ...). */
  protocolFeatures(): bigint;
  /** Guest RAM rules for this VM (checked by the core before mapping). */
  memoryPolicy(): MemoryPolicy;
  /**
   * GET_CONFIG (protocol feature CONFIG): `size` bytes of the virtio config
   * space from `offset`. Absent: the device has no config space (GET_CONFIG
   * is then refused). The core checks offset/size against the 256-byte
   * maximum of the message; the device returns exactly `size` bytes
   * (zero-filled past its config space).
   */
  getConfig?(offset: number, size: number): Uint8Array;
  /** SET_CONFIG: the driver wrote `data` at `offset`; throw (a one-line Error) to refuse. */
  setConfig?(offset: number, data: Uint8Array, flags: number): void;
  /**
   * A front-end connected. Returns the parameters its worker half is opened
   * with (structured-clonable: plain objects, bigints, no functions). Throw
   * to refuse the connection (logged, connection closed).
   */
  open(conn: DeviceConnection): unknown;
  /** The connection `conn` is gone (its worker instance is being closed). Never throws. */
  closed(conn: DeviceConnection): void;
  /** For the "guest connected/left" log lines (e.g. "maxmem 1 GiB"). */
  describe?(): string;
}

/** The core's handle on one connection's worker instance, given to the device's main half. */
export interface DeviceConnection {
  /** The instance id: one id per connection, in every log line, stats record and command. */
  readonly id: number;
  readonly connectedAt: Date;
  /** Guest RAM (bytes) as the worker reported it at the last SET_MEM_TABLE; 0 before. */
  readonly guestRamBytes: bigint;
  /** Runs a device control op on the worker instance (WorkerDevice.control); rejects with its Error. */
  control(op: string, args?: unknown): Promise<unknown>;
}

// ------------------------------------------------------------------ vring worker

/** What the vring worker offers a device module. */
export interface WorkerHost {
  /** The daemon's device configuration given at start (structured clone), e.g. { capacityPages, maxPoolsPerGuest }. */
  readonly config: Readonly<Record<string, unknown>>;
  /** 'poll' | 'notify' (a device may tune its idle work). */
  readonly mode: 'poll' | 'notify';
  log(level: 'error' | 'warn' | 'info' | 'debug', msg: string): void;
  /** One object per key in this worker, made on first use: state shared by device kinds (the tmem store). */
  shared<T>(key: string, create: () => T): T;
}

/** Facts about one instance, fixed for its life. */
export interface InstanceInfo {
  readonly id: number;
  readonly vm: string;
  readonly kind: string;
  /** Queues offered (the main half's numQueues()). */
  readonly numQueues: number;
}

/** The module a kind's worker half lives in: `export function createDeviceKind(host): DeviceKind`. */
export interface DeviceWorkerModule {
  createDeviceKind(host: WorkerHost): DeviceKind;
}

/** One device kind in the worker: opens instances, owns their shared state. */
export interface DeviceKind {
  /** This kind's counters, one entry per slot of every instance's `counters` array. */
  readonly counters: readonly CounterSpec[];
  /** A connection opened: `params` is what VhostUserDevice.open returned. Throw to refuse. */
  open(info: InstanceInfo, params: unknown): WorkerDevice;
  /**
   * Bounded idle work (reclaim, prefault, write-back), called when no ring
   * had work. Returns true while more is pending (the worker then does not
   * sleep). Must stay short (tens of microseconds): requests wait behind it.
   */
  idle?(): boolean;
  /**
   * Cheap: whether idle() has work to do now. The engine asks after a pass
   * that served requests, so a request stream that leaves no idle work does
   * not pay an idle() call per wake-up. A kind without it has idle() run
   * after every pass that served requests.
   */
  idleWanted?(): boolean;
  /** Kind-wide control ops (e.g. set capacity); rejects with a one-line Error. */
  control?(op: string, args: unknown): unknown;
  /** Kind-wide statistics for `tmemctl stats` (e.g. the store). */
  stats?(): Record<string, unknown>;
}

/**
 * One connection's device in the worker. Every method runs on the worker
 * thread, next to the rings; `handle` is the hot path (no allocation).
 */
/**
 * WorkerDevice.handle's answer for "not now": serving the chain would wait
 * (tmem-blk: its pages are on the disk, their read has been started), and
 * nothing was done. The engine gives the head back, as if it had not been
 * read, parks the queue (its later chains wait behind this one: completions
 * stay in ring order) and serves everything else; it offers the chain
 * again on each pass (poll mode) or every 0.1 ms (notify mode, the
 * worker's PARKED_RETRY_MS). GET_VRING_BASE meanwhile reports the parked head as not yet
 * taken, so a front-end that stops the ring gets it again at the next start.
 * The device bounds how long it says this for one chain (a disk that never
 * delivers must not hold a request forever).
 */
export const HANDLE_LATER = -1;

export interface WorkerDevice {
  /** This instance's counters, laid out as DeviceKind.counters (the core sums them host-wide). */
  readonly counters: Float64Array;
  /** Why the last handle() returned 0. */
  readonly error: string;
  /**
   * Set by handle(): the chain was malformed or asked for something the
   * device refuses (tmem INVALID/UNSUPPORTED, blk UNSUPP/IOERR for a bad
   * request). The fairness budget charges such chains PENALTY times their
   * descriptors instead of their bytes.
   */
  readonly refused: boolean;
  /**
   * Set by handle(): budget units to charge beyond the chain's descriptors
   * and bytes, for work the bytes do not show (tmem-blk: each page read
   * from or written to its overflow file, a synchronous file I/O on the
   * worker that every other guest waits behind). Absent or 0: none.
   */
  readonly extraCost?: number;
  /**
   * What an unanswerable chain (the walker refused it, or handle() returned
   * 0) does to its queue. false (the default): it is completed with used
   * length 0, which the tmem ABI defines as "unanswerable". true: the queue
   * is marked broken and stops, with nothing completed, as libvhost-user's
   * vu_panic and QEMU's virtio_error do; a device whose driver takes a
   * completion without a status byte as success (Linux's virtio-blk reads a
   * stale status of 0, VIRTIO_BLK_S_OK) must choose this, so a write that
   * was never made is never reported as done.
   */
  readonly unanswerableBreaksQueue?: boolean;
  /** SET_FEATURES: the acked virtio features. */
  setFeatures(features: bigint): void;
  /** SET_MEM_TABLE: guest RAM is now `ramBytes` (the core mapped it). */
  memoryChanged(ramBytes: bigint): void;
  /** The front-end addressed `count` queues so far (QEMU addresses each it has: its num_vqs). */
  queuesAddressed?(count: number): void;
  /**
   * Answers one request: `rd` the device-readable bytes, `wr` the writable
   * bytes, in chain order. Returns the used length (bytes written); 0 when
   * the chain is unanswerable (then `error` says why); HANDLE_LATER when
   * answering now would wait (for a disk), having changed nothing.
   */
  handle(queue: number, rd: SegmentList, wr: SegmentList): number;
  /** RESET_OWNER/RESET_DEVICE: the rings stopped; the connection stays. */
  reset?(): void;
  /** A device control op from the main half (freeze, flush, ...); rejects with a one-line Error. */
  control?(op: string, args: unknown): unknown;
  /** Idle work of this instance; true while more is pending (as DeviceKind.idle). */
  idle?(): boolean;
  /** Per-instance statistics for `tmemctl stats` (beyond the counters). */
  stats?(): Record<string, unknown>;
  /** The connection is gone: free what this instance holds. Never throws. */
  close(): void;
}
