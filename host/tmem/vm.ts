// The tmem device as a vhost-user backend: one TmemVm per configured VM
// (one listening socket). It offers the features of ABI.md and forwards the
// rings and guest memory to the data plane (host/vhost-user/client.ts); each
// connection is a new guest of the store. It also keeps what the operator
// set for the VM (frozen, share group), so that it survives reconnects.
import { TMEM_F_SHARED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../shared/abi.js';
import type { DataPlane } from '../vhost-user/client.js';
import type { Logger } from '../log.js';
import type { BackendMemRegion, BackendSession, BackendVringAddr, VhostUserBackend } from '../vhost-user/device.js';
import { formatBytes } from '../vhost-user/connection.js';
import { bit, VHOST_USER_F_PROTOCOL_FEATURES, VhostUserProtocolFeature } from '../vhost-user/messages.js';

/** The DataPlane calls the tmem device makes (a fake in unit tests). */
export type TmemDataPlane = Pick<
  DataPlane,
  | 'addGuest'
  | 'removeGuest'
  | 'setFeatures'
  | 'setMemTable'
  | 'setVringNum'
  | 'setVringAddr'
  | 'setVringBase'
  | 'getVringBase'
  | 'setVringKick'
  | 'setVringCall'
  | 'setVringErr'
  | 'setVringEnable'
  | 'setFrozen'
  | 'flushGuest'
  | 'setShareGroup'
>;

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
  readonly log: Logger;
}

/** What `tmemctl guests` shows of a VM. */
export interface VmStatus {
  name: string;
  socket: string;
  connected: boolean;
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

export class TmemVm implements VhostUserBackend {
  readonly name: string;
  readonly where: string;
  readonly maxmemBytes: bigint;
  readonly maxRamBytes: bigint | null;
  readonly allowUnsealed: boolean;
  readonly tmemMaxBytes: bigint | null;
  readonly ramFloorBytes: bigint;
  private readonly dp: TmemDataPlane;
  private readonly nq: number;
  private readonly log: Logger;
  private shareGroupValue: string | null;
  private frozenValue = false;
  private current: TmemSession | null = null;
  private connections = 0;

  constructor(cfg: TmemVmConfig, dp: TmemDataPlane, o: TmemVmOptions) {
    this.name = cfg.name;
    this.where = cfg.where;
    this.maxmemBytes = cfg.maxmemBytes;
    this.maxRamBytes = cfg.maxRamBytes ?? null;
    this.allowUnsealed = cfg.allowUnsealed === true;
    this.tmemMaxBytes = cfg.tmemMaxBytes ?? null;
    this.ramFloorBytes = cfg.ramBytes ?? 0n;
    this.shareGroupValue = cfg.shareGroup;
    this.dp = dp;
    this.nq = o.numQueues;
    this.log = o.log;
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

  open(): BackendSession {
    const g = this.dp.addGuest({
      name: this.name,
      maxmemBytes: this.maxmemBytes,
      shareGroup: this.shareGroupValue,
      numQueues: this.nq,
      ...(this.maxRamBytes !== null ? { maxRamBytes: this.maxRamBytes } : {}),
      allowUnsealed: this.allowUnsealed,
      tmemMaxBytes: this.tmemMaxBytes,
      ramFloorBytes: this.ramFloorBytes,
    });
    const s = new TmemSession(this, this.dp, g, this.nq, this.log);
    try {
      if (this.frozenValue) this.dp.setFrozen(g, true);
    } catch (e) {
      s.close();
      throw e;
    }
    this.current = s;
    this.connections++;
    return s;
  }

  /** Called by the session when it closes. */
  sessionClosed(s: TmemSession): void {
    if (this.current === s) this.current = null;
  }

  get session(): TmemSession | null {
    return this.current;
  }

  get frozen(): boolean {
    return this.frozenValue;
  }

  get shareGroup(): string | null {
    return this.shareGroupValue;
  }

  /** Operator: reject (or accept again) this VM's puts; kept across reconnects. */
  setFrozen(frozen: boolean): void {
    if (this.current) this.dp.setFrozen(this.current.guestId, frozen);
    this.frozenValue = frozen;
  }

  /** Operator: drop every page the connected guest holds. False when no guest is connected. */
  flush(): boolean {
    if (!this.current) return false;
    this.dp.flushGuest(this.current.guestId);
    return true;
  }

  /** Operator: which shared pools this VM may join (null: none but its own). */
  setShareGroup(group: string | null): void {
    if (this.current) this.dp.setShareGroup(this.current.guestId, group);
    this.shareGroupValue = group;
  }

  describe(): string {
    return (
      `maxmem ${formatBytes(this.maxmemBytes)}` +
      (this.ramFloorBytes > 0n ? `, ram ${formatBytes(this.ramFloorBytes)}` : '') +
      (this.tmemMaxBytes !== null ? `, tmem-max ${formatBytes(this.tmemMaxBytes)}` : '') +
      (this.maxRamBytes !== null ? `, max-ram ${formatBytes(this.maxRamBytes)}` : '') +
      (this.allowUnsealed ? ', unsealed RAM allowed' : '') +
      (this.shareGroupValue ? `, share group ${this.shareGroupValue}` : '') +
      (this.frozenValue ? ', frozen' : '')
    );
  }

  status(): VmStatus {
    const s = this.current;
    return {
      name: this.name,
      socket: this.where,
      connected: s !== null,
      guestId: s ? s.guestId : null,
      connectedAt: s ? s.connectedAt.toISOString() : null,
      ramBytes: (s ? s.ramBytes : 0n).toString(),
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

/** One connected guest: forwards the engine's calls to the data plane. */
export class TmemSession implements BackendSession {
  readonly connectedAt = new Date();
  ramBytes = 0n;
  private closed = false;

  constructor(
    private readonly vm: TmemVm,
    private readonly dp: TmemDataPlane,
    readonly guestId: number,
    private readonly numQueues: number,
    private readonly log: Logger,
  ) {}

  setFeatures(features: bigint): void {
    this.dp.setFeatures(this.guestId, features);
  }

  memoryChanged(regions: readonly BackendMemRegion[]): void {
    this.ramBytes = regions.reduce((a, r) => a + r.size, 0n);
    this.dp.setMemTable(this.guestId, regions);
  }

  setVringNum(q: number, num: number): void {
    this.dp.setVringNum(this.guestId, q, num);
  }

  setVringAddr(q: number, a: BackendVringAddr): void {
    this.dp.setVringAddr(this.guestId, q, a);
  }

  setVringBase(q: number, base: number): void {
    this.dp.setVringBase(this.guestId, q, base);
  }

  getVringBase(q: number): number {
    return this.dp.getVringBase(this.guestId, q);
  }

  setVringKick(q: number, fd: number): void {
    this.dp.setVringKick(this.guestId, q, fd);
  }

  setVringCall(q: number, fd: number): void {
    this.dp.setVringCall(this.guestId, q, fd);
  }

  setVringErr(q: number, fd: number): void {
    this.dp.setVringErr(this.guestId, q, fd);
  }

  setVringEnable(q: number, enable: boolean): void {
    this.dp.setVringEnable(this.guestId, q, enable);
  }

  /** RESET_OWNER/RESET_DEVICE: stop every ring; the store keeps the guest's pools (ABI.md: ring restarts change nothing). */
  reset(): void {
    for (let q = 0; q < this.numQueues; q++) this.dp.setVringEnable(this.guestId, q, false);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.vm.sessionClosed(this);
    // A late worker does not make this throw: the data plane queues the removal and retries until the worker confirms it.
    try {
      this.dp.removeGuest(this.guestId);
    } catch (e) {
      this.log.error(`vm ${this.vm.name}: removing guest ${this.guestId} from the data plane failed: ${(e as Error).message}`);
    }
  }
}
