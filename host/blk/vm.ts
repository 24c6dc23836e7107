// tmem-blk's main half (host/vhost-user/vm-device.ts, VmDevice): one
// BlkVm per VM with `blk-socket=`. It offers a virtio block device (features
// and config space from blk-config.ts) and opens each connection's worker
// instance (host/blk/worker.ts) with the VM's limits, the disk's size and
// its overflow file. docs/tmem-blk.md is the contract.
import { accessSync, constants as fsConstants, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { bit, VhostUserProtocolFeature } from '../vhost-user/messages.js';
import { compiledModuleUrl } from '../vhost-user/module-url.js';
import { VmDevice } from '../vhost-user/vm-device.js';
import type { TmemVmConfig } from '../tmem/vm.js';
import { BLK_FEATURES, blkConfigSpace, checkBlkSize } from './blk-config.js';
import { VIRTIO_BLK_ID_BYTES } from './virtio-blk.js';
import type { BlkOpenParams } from './worker.js';

/** MQ (GET_QUEUE_NUM), REPLY_ACK, CONFIG (GET_CONFIG: QEMU's vhost-user-blk needs it to realize the device). */
export const BLK_PROTOCOL_FEATURES: bigint = bit(VhostUserProtocolFeature.MQ) | bit(VhostUserProtocolFeature.REPLY_ACK) | bit(VhostUserProtocolFeature.CONFIG);

/** Largest queue size offered (QEMU's VIRTQUEUE_MAX_SIZE; vhost-user-blk-pci's queue-size may be up to 1024). */
export const BLK_MAX_QUEUE_SIZE = 1024;

/** The VM's settings as TmemVm takes them (the disk's pages sit in the VM's store guest), `where` its blk-socket=, and the disk. */
export interface BlkVmConfig extends TmemVmConfig {
  /** blk-size= in bytes. */
  readonly sizeBytes: bigint;
  /** --blk-overflow-dir (absolute), or null. */
  readonly overflowDir: string | null;
}

/**
 * The overflow file's name for a VM: DIR/<vm>.overflow, with the bytes a
 * file name cannot hold ('/', NUL, a leading '.') and '%' itself written as
 * %XX, so two VM names never share a file.
 */
export function overflowFileName(vm: string): string {
  let out = '';
  for (let i = 0; i < vm.length; i++) {
    const ch = vm[i]!;
    const code = vm.charCodeAt(i);
    if (ch === '/' || ch === '%' || code === 0 || (i === 0 && ch === '.')) out += '%' + code.toString(16).toUpperCase().padStart(2, '0');
    else out += ch;
  }
  return `${out}.overflow`;
}

/** The blk worker half's module URL (host/blk/worker.ts compiled). */
export function blkWorkerModule(): string {
  return compiledModuleUrl(import.meta.url, './worker.js');
}

export class BlkVm extends VmDevice<BlkOpenParams> {
  readonly kind = 'blk';
  readonly sizeBytes: number;
  readonly overflowPath: string | null;
  private readonly cfg: BlkVmConfig;
  private readonly config: Uint8Array;
  /** The operator's freeze of the VM's store guest, passed at open (TmemVm keeps the live value). */
  frozen = false;

  /** Throws an Error with one line when the disk cannot be served (size out of range, overflow folder not writable). */
  constructor(cfg: BlkVmConfig, o: { numQueues: number }) {
    super(cfg, { numQueues: o.numQueues, maxQueueSize: BLK_MAX_QUEUE_SIZE, features: BLK_FEATURES, protocolFeatures: BLK_PROTOCOL_FEATURES });
    const size = Number(cfg.sizeBytes);
    const bad = checkBlkSize(size);
    if (bad !== null) throw new Error(`VM ${cfg.name}: ${bad}`);
    if (cfg.overflowDir !== null) {
      try {
        accessSync(cfg.overflowDir, fsConstants.W_OK | fsConstants.X_OK);
      } catch (e) {
        throw new Error(`VM ${cfg.name}: --blk-overflow-dir ${cfg.overflowDir} is not writable by tmemd (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    }
    this.cfg = cfg;
    this.sizeBytes = size;
    this.overflowPath = cfg.overflowDir === null ? null : join(cfg.overflowDir, overflowFileName(cfg.name));
    this.config = blkConfigSpace(size, o.numQueues);
  }

  get workerModule(): string {
    return blkWorkerModule();
  }

  /** struct virtio_blk_config from `offset`, `size` bytes, zero past its end. */
  getConfig(offset: number, size: number): Uint8Array {
    const out = new Uint8Array(size);
    if (offset < this.config.length) out.set(this.config.subarray(offset, Math.min(this.config.length, offset + size)));
    return out;
  }

  /** The only writable field of virtio_blk_config is `writeback`, with CONFIG_WCE, which is not offered. */
  setConfig(offset: number, data: Uint8Array): void {
    throw new Error(`the blk config space is read-only (SET_CONFIG of ${data.length} bytes at ${offset}; CONFIG_WCE is not offered)`);
  }

  protected openParams(): BlkOpenParams {
    const c = this.cfg;
    return {
      maxmemBytes: c.maxmemBytes,
      shareGroup: c.shareGroup,
      tmemMaxBytes: c.tmemMaxBytes ?? null,
      ramFloorBytes: c.ramBytes ?? 0n,
      frozen: this.frozen,
      sizeBytes: this.sizeBytes,
      overflowPath: this.overflowPath,
      serial: c.name.slice(0, VIRTIO_BLK_ID_BYTES),
    };
  }

  /** After the data plane stopped: the overflow file means nothing without the worker's bitmap (docs/tmem-blk.md). */
  removeOverflowFile(): void {
    if (this.overflowPath === null) return;
    try {
      unlinkSync(this.overflowPath);
    } catch {
      // never made (no connection) or already gone
    }
  }

  describe(): string {
    return `tmem-blk disk ${this.sizeBytes} bytes, overflow ${this.overflowPath ?? 'none'}`;
  }
}
