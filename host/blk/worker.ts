// tmem-blk's worker half as the vring worker loads it (by URL:
// host/vhost-user/device.ts, DeviceWorkerModule).
//
// The disk of a VM (BlkDisk: its block store, handler, overflow file) is
// made at the VM's first connection and kept for the worker's life: a block
// device keeps its data across front-end reconnects and ring restarts, as
// any disk does. Each connection gets a BlkInstance (counters, the acked
// features) on the VM's one disk. The disk's pages sit in the VM's store
// guest (host/tmem/store-guests.ts), held once and never released, so they
// count with the VM's frontswap pages.
import { TMEM_PAGE_SIZE } from '../../shared/abi.js';
import { HANDLE_LATER, type DeviceKind, type InstanceInfo, type WorkerDevice, type WorkerHost } from '../vhost-user/device.js';
import { performance } from 'node:perf_hooks';
import { storeGuests, type StoreGuests, type VmStoreLimits } from '../tmem/store-guests.js';
import { BlkHandler } from './blk-handler.js';
import { BlockStore } from './block-store.js';
import { BC, BLK_COUNTERS, newBlkCounters } from './counters.js';
import { OverflowFile } from './overflow-file.js';
import { StorePages } from './store-pages.js';

/** What BlkVm.open sends for each connection (structured clone). */
export interface BlkOpenParams extends VmStoreLimits {
  /** The disk's capacity (a multiple of 4096; checked by the main half). */
  readonly sizeBytes: number;
  /** DIR/<vm>.overflow, or null (no overflow folder: writes the store refuses are IOERR). */
  readonly overflowPath: string | null;
  /** GET_ID's answer. */
  readonly serial: string;
}

/**
 * Budget units charged per page read from or written to the overflow file,
 * on top of its bytes (16 units): a quarter of a turn (TURN_UNITS 256), so a
 * guest whose requests go to the disk holds the worker for about four such
 * pages before the other guests' turns, instead of about thirteen.
 */
export const OVERFLOW_PAGE_UNITS = 64;

/**
 * How long one chain may wait for its overflow pages to reach the page
 * cache (HANDLE_LATER) before it is served by a read that waits for the
 * disk: a file system that ignores the read-ahead request must not hold a
 * request forever. A disk read takes well under this.
 */
export const MAX_PARK_MS = 200;

/** Pages promoted per idle call (each a pread and a store put: a few microseconds). */
const PROMOTE_STEP = 4;

/** One VM's disk in the worker. */
export class BlkDisk {
  readonly vm: string;
  readonly sizeBytes: number;
  readonly storeGuest: number;
  readonly pages: StorePages;
  readonly store: BlockStore;
  readonly handler: BlkHandler;
  readonly overflow: OverflowFile | null;
  /** Counted into while no connection is open (idle promotion). */
  readonly idleCounters = newBlkCounters();

  constructor(guests: StoreGuests, vm: string, p: BlkOpenParams) {
    this.vm = vm;
    this.sizeBytes = p.sizeBytes;
    const overflow = p.overflowPath === null ? null : OverflowFile.open(p.overflowPath, p.sizeBytes);
    let g = -1;
    try {
      g = guests.acquire(vm, p);
      this.pages = new StorePages(guests.store, g);
    } catch (e) {
      if (g >= 0) guests.release(vm);
      overflow?.close();
      throw e;
    }
    this.storeGuest = g;
    this.overflow = overflow;
    this.store = new BlockStore(this.pages, p.sizeBytes / TMEM_PAGE_SIZE, overflow);
    this.store.counters = this.idleCounters;
    if (process.env.TMEMD_BLK_VERIFY === '1') this.store.enableVerify();
    this.handler = new BlkHandler(this.store, p.serial);
  }

  stats(): Record<string, unknown> {
    const s = this.store;
    let overflowBlocks: number | null = null;
    try {
      overflowBlocks = this.overflow?.open ? this.overflow.blocks() : null;
    } catch {
      overflowBlocks = null;
    }
    return {
      vm: this.vm,
      sizeBytes: this.sizeBytes,
      storeGuest: this.storeGuest,
      poolId: this.pages.poolId,
      ramPages: s.ramPages,
      overflowPages: s.filePages,
      hotPages: s.hot.count,
      lostPages: s.bad.count,
      ...(s.verify !== null ? { verifyFailures: s.verifyFailures, verifyLog: s.verifyLog } : {}),
      overflowFile: this.overflow?.path ?? null,
      overflowFileBytes: overflowBlocks === null ? null : overflowBlocks * 512,
    };
  }
}

export class BlkInstance implements WorkerDevice {
  /** A blk driver reads a missing status byte as OK: never complete such a chain (device.ts). */
  readonly unanswerableBreaksQueue = true;
  readonly counters = newBlkCounters();
  readonly disk: BlkDisk;
  private readonly guests: StoreGuests;
  private closed = false;

  constructor(guests: StoreGuests, disk: BlkDisk) {
    this.guests = guests;
    this.disk = disk;
    disk.store.counters = this.counters;
    disk.store.publishGauges();
  }

  get error(): string {
    return this.disk.handler.error;
  }

  get refused(): boolean {
    return this.disk.handler.refused;
  }

  setFeatures(): void {
    // nothing depends on the acked features here: the core handles the ring features (EVENT_IDX, INDIRECT_DESC)
  }

  memoryChanged(ramBytes: bigint): void {
    this.guests.store.setGuestRam(this.disk.storeGuest, Number(ramBytes / BigInt(TMEM_PAGE_SIZE)));
  }

  /** Budget units of the last request's overflow-file pages (WorkerDevice.extraCost). */
  extraCost = 0;
  /** Per queue: when its head chain was first answered HANDLE_LATER (performance.now()), 0 when it is not parked. */
  private readonly parkedSince: number[] = [];

  handle(queue: number, rd: Parameters<WorkerDevice['handle']>[1], wr: Parameters<WorkerDevice['handle']>[2]): number {
    // Pages on the disk and not in the page cache: their reads are started
    // and the chain waits (HANDLE_LATER) instead of the worker, which serves
    // every other guest meanwhile. Past MAX_PARK_MS for one chain (a file
    // system that never brings them in) it is served, waiting, as before.
    const parked = this.parkedSince[queue] ?? 0;
    if (parked === 0 || performance.now() - parked < MAX_PARK_MS) {
      if (this.disk.handler.waitsForDisk(rd, wr)) {
        if (parked === 0) {
          this.parkedSince[queue] = performance.now();
          this.disk.store.counters[BC.diskWaits]++;
        }
        return HANDLE_LATER;
      }
    } else this.disk.store.counters[BC.parkTimeouts]++;
    this.parkedSince[queue] = 0;
    const c = this.disk.store.counters;
    const filePages = c[BC.overflowReads]! + c[BC.overflowWrites]!;
    const used = this.disk.handler.handle(rd, wr);
    this.extraCost = (c[BC.overflowReads]! + c[BC.overflowWrites]! - filePages) * OVERFLOW_PAGE_UNITS;
    this.disk.store.publishGauges();
    return used;
  }

  stats(): Record<string, unknown> {
    return this.disk.stats();
  }

  /** The connection is gone; the disk stays (its data is kept while tmemd runs). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.disk.store.counters === this.counters) this.disk.store.counters = this.disk.idleCounters;
    // a closed instance holds no pages: its gauges go to 0 (the disk's own record stays in the kind's stats)
    this.counters[BC.ramPages] = 0;
    this.counters[BC.overflowPages] = 0;
  }
}

export function createDeviceKind(host: WorkerHost): DeviceKind {
  const guests = storeGuests(host);
  const disks = new Map<string, BlkDisk>();
  return {
    counters: BLK_COUNTERS,
    open: (info: InstanceInfo, params: unknown): WorkerDevice => {
      const p = params as BlkOpenParams;
      let d = disks.get(info.vm);
      if (d === undefined) {
        d = new BlkDisk(guests, info.vm, p);
        disks.set(info.vm, d);
        host.log('info', `vm ${info.vm}: tmem-blk disk of ${p.sizeBytes} bytes, overflow ${p.overflowPath ?? 'none'}`);
      } else if (d.sizeBytes !== p.sizeBytes) {
        throw new Error(`vm ${info.vm}: the disk has ${d.sizeBytes} bytes, not ${p.sizeBytes}: a disk keeps its size while tmemd runs`);
      }
      return new BlkInstance(guests, d);
    },
    idle: (): boolean => {
      // the store's own reclaim and prefault run here too: a VM may have a disk and no tmem device
      let more = guests.idle();
      for (const d of disks.values()) {
        if (!d.store.promotionPending()) continue;
        d.store.idleStep(PROMOTE_STEP);
        d.store.publishGauges();
        if (d.store.promotionPending()) more = true;
      }
      return more;
    },
    idleWanted: (): boolean => {
      if (guests.idleWanted()) return true;
      for (const d of disks.values()) if (d.store.promotionPending()) return true;
      return false;
    },
    stats: () => ({ disks: [...disks.values()].map((d) => d.stats()) }),
  };
}
