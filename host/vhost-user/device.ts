// The device side of the vhost-user engine, in the manner of rust-vmm's
// `VhostUserBackend` trait: the engine (connection.ts) does the socket, the
// message table, the validation and the replies; a device says how many
// queues it has, how large they may be, which features it offers, and is
// told what the front-end set up. A second device would implement this
// interface and leave the engine untouched.

/** One guest memory region as the device receives it; the device owns `fd` from then on. */
export interface BackendMemRegion {
  readonly fd: number;
  readonly guestPhysAddr: bigint;
  readonly size: bigint;
  readonly userspaceAddr: bigint;
  readonly mmapOffset: bigint;
}

/** Ring addresses in the front-end's (QEMU's) virtual address space. */
export interface BackendVringAddr {
  readonly descUser: bigint;
  readonly usedUser: bigint;
  readonly availUser: bigint;
}

/**
 * What one front-end connection (one guest) did to the device. The engine
 * calls these only with validated arguments (queue index in range, sizes
 * checked); a method that fails throws, and the engine closes that
 * connection only. Every fd handed over is the device's to close, also when
 * the method throws.
 */
export interface BackendSession {
  /** SET_FEATURES: the features the driver acknowledged (a subset of the offered ones). */
  setFeatures(features: bigint): void;
  /** SET_MEM_TABLE: guest memory changed; replaces every previous region. */
  memoryChanged(regions: readonly BackendMemRegion[]): void;
  setVringNum(queue: number, num: number): void;
  setVringAddr(queue: number, addr: BackendVringAddr): void;
  setVringBase(queue: number, base: number): void;
  /** GET_VRING_BASE: stops the ring and returns the next avail index it would process. */
  getVringBase(queue: number): number;
  /** fd -1: no eventfd (the front-end polls / does not want notifications). */
  setVringKick(queue: number, fd: number): void;
  setVringCall(queue: number, fd: number): void;
  setVringErr(queue: number, fd: number): void;
  setVringEnable(queue: number, enable: boolean): void;
  /** RESET_OWNER / RESET_DEVICE: stop every ring; the session stays (same guest). */
  reset(): void;
  /** The connection is gone: free everything of this guest. Never throws. */
  close(): void;
}

/** A vhost-user device: what the engine offers to every front-end that connects. */
export interface VhostUserBackend {
  /** For log lines: which VM this is. */
  readonly name: string;
  /** Queues offered (GET_QUEUE_NUM when MQ is offered). */
  numQueues(): number;
  /** Largest queue size SET_VRING_NUM may ask for (a power of 2). */
  maxQueueSize(): number;
  /** Virtio features offered by GET_FEATURES (VHOST_USER_F_PROTOCOL_FEATURES included). */
  features(): bigint;
  /** vhost-user protocol features offered by GET_PROTOCOL_FEATURES. */
  protocolFeatures(): bigint;
  /** A front-end connected: a new guest. */
  open(): BackendSession;
  /** For the "guest connected/left" log lines: what the device knows of the VM (e.g. its maxmem). */
  describe?(): string;
}
