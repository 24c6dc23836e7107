// What every device's main half (device.ts, VhostUserDevice) does the same
// way, whatever the device: it offers fixed features and queues for its
// life, applies the VM's guest RAM rules, and keeps which connection is the
// current one. A device (tmem, tmem-blk) extends VmDevice and adds only what
// is its own: the parameters its worker half is opened with, its config
// space, its operator controls.
import type { DeviceConnection, MemoryPolicy, VhostUserDevice } from './device.js';

/** The VM's settings every device of it takes. */
export interface VmDeviceConfig {
  readonly name: string;
  /** Where it listens, for log lines and `tmemctl guests` (a path or `fd=N`). */
  readonly where: string;
  /** Most guest RAM a front-end may hand over (a larger SET_MEM_TABLE is refused); null/undefined: no bound. */
  readonly maxRamBytes?: bigint | null;
  /** Accept guest RAM not sealed against shrinking (a tmpfs or hugetlbfs file); default false. */
  readonly allowUnsealed?: boolean;
}

/** What a device offers the front-end, fixed for its life. */
export interface DeviceOffer {
  readonly numQueues: number;
  /** A power of 2, at most 32768. */
  readonly maxQueueSize: number;
  /** Virtio features, VHOST_USER_F_PROTOCOL_FEATURES included. */
  readonly features: bigint;
  readonly protocolFeatures: bigint;
}

/** A device's main half, one per VM and device kind; P: what its worker half is opened with. */
export abstract class VmDevice<P> implements VhostUserDevice {
  abstract readonly kind: string;
  abstract readonly workerModule: string;
  readonly vm: string;
  readonly where: string;
  readonly maxRamBytes: bigint | null;
  readonly allowUnsealed: boolean;
  private readonly offer: DeviceOffer;
  private current: DeviceConnection | null = null;
  private connections = 0;

  constructor(cfg: VmDeviceConfig, offer: DeviceOffer) {
    this.vm = cfg.name;
    this.where = cfg.where;
    this.maxRamBytes = cfg.maxRamBytes ?? null;
    this.allowUnsealed = cfg.allowUnsealed === true;
    this.offer = offer;
  }

  /** The parameters of a new connection's worker instance (VhostUserDevice.open). */
  protected abstract openParams(): P;

  numQueues(): number {
    return this.offer.numQueues;
  }

  maxQueueSize(): number {
    return this.offer.maxQueueSize;
  }

  features(): bigint {
    return this.offer.features;
  }

  protocolFeatures(): bigint {
    return this.offer.protocolFeatures;
  }

  memoryPolicy(): MemoryPolicy {
    return { maxRamBytes: this.maxRamBytes, allowUnsealed: this.allowUnsealed };
  }

  /** A front-end connected: it is the current connection until it closes. */
  open(conn: DeviceConnection): P {
    this.current = conn;
    this.connections++;
    return this.openParams();
  }

  closed(conn: DeviceConnection): void {
    if (this.current === conn) this.current = null;
  }

  /** The connected front-end, if any. */
  get session(): DeviceConnection | null {
    return this.current;
  }

  /** Connections opened so far. */
  get connectionCount(): number {
    return this.connections;
  }
}
