// The tmem device's main half (host/vhost-user/device.ts, VhostUserDevice):
// one TmemVm per configured VM (one listening socket). It offers the
// features of ABI.md, opens each connection's worker instance
// (host/tmem/worker.ts) with the VM's limits, and keeps what the operator set
// for the VM (frozen, share group) so that it survives reconnects; operator
// changes go to the connected instance as control ops.
import { TMEM_F_SHARED } from '../../shared/abi.js';
import type { DeviceConnection, MemoryPolicy, VhostUserDevice } from '../vhost-user/device.js';
import { formatSize } from '../units.js';
import { bit, VHOST_USER_F_PROTOCOL_FEATURES, VhostUserProtocolFeature, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../vhost-user/messages.js';
import { compiledModuleUrl } from '../vhost-user/module-url.js';
import type { TmemOpenParams } from './worker.js';

/** Virtio features of the tmem device (ABI.md "Transport"), plus VHOST_USER_F_PROTOCOL_FEATURES. */
export const TMEM_DEVICE_FEATURES: bigint =
  bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(TMEM_F_SHARED) | bit(VHOST_USER_F_PROTOCOL_FEATURES);

/** Protocol features: MQ (GET_QUEUE_NUM) and REPLY_ACK. No CONFIG (config_size 0), no CONFIGURE_MEM_SLOTS, no STATUS. */
export const TMEM_PROTOCOL_FEATURES: bigint = bit(VhostUserProtocolFeature.MQ) | bit(VhostUserProtocolFeature.REPLY_ACK);

/** Largest queue size offered (QEMU's VIRTQUEUE_MAX_SIZE). */
export const TMEM_MAX_QUEUE_SIZE = 1024;

export interface TmemVmConfig {
  readonly name: string;
  readonly maxmemBytes: bigint;
  readonly shareGroup: string | null;
  /** Most guest RAM a front-end may hand over (a larger SET_MEM_TABLE is refused); null/undefined: no bound. */
  readonly maxRamBytes?: bigint | null;
  /** Accept guest RAM not sealed against shrinking (a tmpfs or hugetlbfs file); default false. */
  readonly allowUnsealed?: boolean;
  /** Cap on the tmem pages of both kinds this VM may hold (bytes); null/undefined: none. */
  readonly tmemMaxBytes?: bigint | null;
  /** The VM's declared RAM, a floor for the maxmem rule (bytes); default 0. */
  readonly ramBytes?: bigint;
  /** Where it listens, for `tmemctl guests` (a path or `fd=N`). */
  readonly where: string;
}

export interface TmemVmOptions {
  readonly numQueues: number;
}

/** What `tmemctl guests` shows of a VM. */
export interface VmStatus {
  name: string;
  socket: string;
  connected: boolean;
  /** The connection's instance id in the vring worker (one id per connection). */
  guestId: number | null;
  connectedAt: string | null;
  ramBytes: string;
  maxmemBytes: string;
  shareGroup: string | null;
  frozen: boolean;
  connections: number;
  maxRamBytes: string | null;
  tmemMaxBytes: string | null;
  declaredRamBytes: string;
  allowUnsealed: boolean;
}

/** The tmem worker half's module URL (host/tmem/worker.ts compiled). */
export function tmemWorkerModule(): string {
  return compiledModuleUrl(import.meta.url, './worker.js');
}

export class TmemVm implements VhostUserDevice {
  readonly kind = 'tmem';
  readonly vm: string;
  readonly where: string;
  private maxmemValue: bigint;
  readonly maxRamBytes: bigint | null;
  readonly allowUnsealed: boolean;
  readonly tmemMaxBytes: bigint | null;
  readonly ramFloorBytes: bigint;
  private readonly nq: number;
  private shareGroupValue: string | null;
  private frozenValue = false;
  private current: DeviceConnection | null = null;
  private connections = 0;

  constructor(cfg: TmemVmConfig, o: TmemVmOptions) {
    this.vm = cfg.name;
    this.where = cfg.where;
    this.maxmemValue = cfg.maxmemBytes;
    this.maxRamBytes = cfg.maxRamBytes ?? null;
    this.allowUnsealed = cfg.allowUnsealed === true;
    this.tmemMaxBytes = cfg.tmemMaxBytes ?? null;
    this.ramFloorBytes = cfg.ramBytes ?? 0n;
    this.shareGroupValue = cfg.shareGroup;
    this.nq = o.numQueues;
  }

  /** The worker half's module, as the vring worker imports it (compiled). */
  get workerModule(): string {
    return tmemWorkerModule();
  }

  /** The VM's name. */
  get name(): string {
    return this.vm;
  }

  numQueues(): number {
    return this.nq;
  }

  maxQueueSize(): number {
    return TMEM_MAX_QUEUE_SIZE;
  }

  features(): bigint {
    return TMEM_DEVICE_FEATURES;
  }

  protocolFeatures(): bigint {
    return TMEM_PROTOCOL_FEATURES;
  }

  memoryPolicy(): MemoryPolicy {
    return { maxRamBytes: this.maxRamBytes, allowUnsealed: this.allowUnsealed };
  }

  open(conn: DeviceConnection): TmemOpenParams {
    this.current = conn;
    this.connections++;
    return { maxmemBytes: this.maxmemBytes, shareGroup: this.shareGroupValue, tmemMaxBytes: this.tmemMaxBytes, ramFloorBytes: this.ramFloorBytes, frozen: this.frozenValue };
  }

  closed(conn: DeviceConnection): void {
    if (this.current === conn) this.current = null;
  }

  /** The connected front-end, if any. */
  get session(): DeviceConnection | null {
    return this.current;
  }

  /** The VM's maxmem (tmemctl set VM maxmem= changes it). */
  get maxmemBytes(): bigint {
    return this.maxmemValue;
  }

  /**
   * Operator: the VM's maxmem from now on (and for its next connections).
   * The store guest is changed by the tmem kind's setMaxmem (by VM name), so
   * a guest held by another device of the VM follows too.
   */
  setMaxmem(bytes: bigint): void {
    this.maxmemValue = bytes;
  }

  get frozen(): boolean {
    return this.frozenValue;
  }

  get shareGroup(): string | null {
    return this.shareGroupValue;
  }

  /** Operator: reject (or accept again) this VM's puts; kept across reconnects. */
  async setFrozen(frozen: boolean): Promise<void> {
    if (this.current) await this.current.control('setFrozen', { frozen });
    this.frozenValue = frozen;
  }

  /** Operator: drop every page the connected guest holds. False when no guest is connected. */
  async flush(): Promise<boolean> {
    if (!this.current) return false;
    await this.current.control('flush');
    return true;
  }

  /** Operator: which shared pools this VM may join (null: none but its own). */
  async setShareGroup(group: string | null): Promise<void> {
    if (this.current) await this.current.control('setShareGroup', { group });
    this.shareGroupValue = group;
  }

  describe(): string {
    return (
      `maxmem ${formatSize(this.maxmemBytes)}` +
      (this.ramFloorBytes > 0n ? `, ram ${formatSize(this.ramFloorBytes)}` : '') +
      (this.tmemMaxBytes !== null ? `, tmem-max ${formatSize(this.tmemMaxBytes)}` : '') +
      (this.maxRamBytes !== null ? `, max-ram ${formatSize(this.maxRamBytes)}` : '') +
      (this.allowUnsealed ? ', unsealed RAM allowed' : '') +
      (this.shareGroupValue ? `, share group ${this.shareGroupValue}` : '') +
      (this.frozenValue ? ', frozen' : '')
    );
  }

  status(): VmStatus {
    const s = this.current;
    return {
      name: this.vm,
      socket: this.where,
      connected: s !== null,
      guestId: s ? s.id : null,
      connectedAt: s ? s.connectedAt.toISOString() : null,
      ramBytes: (s ? s.guestRamBytes : 0n).toString(),
      maxmemBytes: this.maxmemBytes.toString(),
      shareGroup: this.shareGroupValue,
      frozen: this.frozenValue,
      connections: this.connections,
      maxRamBytes: this.maxRamBytes === null ? null : this.maxRamBytes.toString(),
      tmemMaxBytes: this.tmemMaxBytes === null ? null : this.tmemMaxBytes.toString(),
      declaredRamBytes: this.ramFloorBytes.toString(),
      allowUnsealed: this.allowUnsealed,
    };
  }
}
