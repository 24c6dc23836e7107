// The tmem device's main half (host/vhost-user/vm-device.ts, VmDevice):
// one TmemVm per configured VM (one listening socket). It offers the
// features of ABI.md, opens each connection's worker instance
// (host/tmem/worker.ts) with the VM's limits, and keeps what the operator set
// for the VM (frozen, share group) so that it survives reconnects; operator
// changes go to the connected instance as control ops.
import { TMEM_F_SHARED } from '../../shared/abi.js';
import { formatSize } from '../units.js';
import { bit, VHOST_USER_F_PROTOCOL_FEATURES, VhostUserProtocolFeature, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../vhost-user/messages.js';
import { compiledModuleUrl } from '../vhost-user/module-url.js';
import { VmDevice, type VmDeviceConfig } from '../vhost-user/vm-device.js';
import type { TmemOpenParams } from './worker.js';

/** Virtio features of the tmem device (ABI.md "Transport"), plus VHOST_USER_F_PROTOCOL_FEATURES. */
export const TMEM_DEVICE_FEATURES: bigint =
  bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(TMEM_F_SHARED) | bit(VHOST_USER_F_PROTOCOL_FEATURES);

/** Protocol features: MQ (GET_QUEUE_NUM) and REPLY_ACK. No CONFIG (config_size 0), no CONFIGURE_MEM_SLOTS, no STATUS. */
export const TMEM_PROTOCOL_FEATURES: bigint = bit(VhostUserProtocolFeature.MQ) | bit(VhostUserProtocolFeature.REPLY_ACK);

/** Largest queue size offered (QEMU's VIRTQUEUE_MAX_SIZE). */
export const TMEM_MAX_QUEUE_SIZE = 1024;

/** The VM's settings for its store guest (tmem-blk's disk shares that guest and takes them too). */
export interface TmemVmConfig extends VmDeviceConfig {
  readonly maxmemBytes: bigint;
  readonly shareGroup: string | null;
  /** Cap on the tmem pages of both kinds this VM may hold (bytes); null/undefined: none. */
  readonly tmemMaxBytes?: bigint | null;
  /** The VM's declared RAM, a floor for the maxmem rule (bytes); default 0. */
  readonly ramBytes?: bigint;
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

export class TmemVm extends VmDevice<TmemOpenParams> {
  readonly kind = 'tmem';
  private maxmemValue: bigint;
  readonly tmemMaxBytes: bigint | null;
  readonly ramFloorBytes: bigint;
  private shareGroupValue: string | null;
  private frozenValue = false;

  constructor(cfg: TmemVmConfig, o: TmemVmOptions) {
    super(cfg, { numQueues: o.numQueues, maxQueueSize: TMEM_MAX_QUEUE_SIZE, features: TMEM_DEVICE_FEATURES, protocolFeatures: TMEM_PROTOCOL_FEATURES });
    this.maxmemValue = cfg.maxmemBytes;
    this.tmemMaxBytes = cfg.tmemMaxBytes ?? null;
    this.ramFloorBytes = cfg.ramBytes ?? 0n;
    this.shareGroupValue = cfg.shareGroup;
  }

  /** The worker half's module, as the vring worker imports it (compiled). */
  get workerModule(): string {
    return tmemWorkerModule();
  }

  /** The VM's name. */
  get name(): string {
    return this.vm;
  }

  /** The VM's limits as they are now: a reconnecting guest gets what the operator set meanwhile. */
  protected openParams(): TmemOpenParams {
    return { maxmemBytes: this.maxmemBytes, shareGroup: this.shareGroupValue, tmemMaxBytes: this.tmemMaxBytes, ramFloorBytes: this.ramFloorBytes, frozen: this.frozenValue };
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
    const s = this.session;
    if (s) await s.control('setFrozen', { frozen });
    this.frozenValue = frozen;
  }

  /** Operator: drop every page the connected guest holds. False when no guest is connected. */
  async flush(): Promise<boolean> {
    const s = this.session;
    if (!s) return false;
    await s.control('flush');
    return true;
  }

  /** Operator: which shared pools this VM may join (null: none but its own). */
  async setShareGroup(group: string | null): Promise<void> {
    const s = this.session;
    if (s) await s.control('setShareGroup', { group });
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
    const s = this.session;
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
      connections: this.connectionCount,
      maxRamBytes: this.maxRamBytes === null ? null : this.maxRamBytes.toString(),
      tmemMaxBytes: this.tmemMaxBytes === null ? null : this.tmemMaxBytes.toString(),
      declaredRamBytes: this.ramFloorBytes.toString(),
      allowUnsealed: this.allowUnsealed,
    };
  }
}
