// The tmem device's worker half as the vring worker loads it (by URL:
// host/vhost-user/device.ts, DeviceWorkerModule). One TmemInstance per
// connection, all on the worker's one store (store-guests.ts), where the
// VM's store guest is shared with its other devices.
import { TMEM_F_SHARED } from '../../shared/abi.js';
import type { DeviceKind, InstanceInfo, WorkerDevice, WorkerHost } from '../vhost-user/device.js';
import { TMEM_COUNTERS } from './counters.js';
import { TmemDevice } from './device.js';
import { INFO_LAYOUT } from './info-layout.js';
import { StoreGuests, storeGuests, type VmStoreLimits } from './store-guests.js';

const PAGE = 4096n;

/** What TmemVm.open sends for each connection (structured clone). */
export type TmemOpenParams = VmStoreLimits;

/** Control ops of a tmem instance (TmemVm sends them). */
export type TmemControl =
  | { readonly op: 'setFrozen'; readonly args: { readonly frozen: boolean } }
  | { readonly op: 'flush'; readonly args: null }
  | { readonly op: 'setShareGroup'; readonly args: { readonly group: string | null } }
  | { readonly op: 'setMaxmem'; readonly args: { readonly bytes: bigint } };

export class TmemInstance extends TmemDevice implements WorkerDevice {
  private readonly guests: StoreGuests;
  private readonly vm: string;
  private closed = false;

  constructor(guests: StoreGuests, info: InstanceInfo, p: TmemOpenParams) {
    const g = guests.acquire(info.vm, p);
    // Until the front-end addresses its queues, INFO reports what we offer.
    super(guests.store, INFO_LAYOUT, { storeGuest: g, sharedNegotiated: false, numQueues: info.numQueues });
    this.guests = guests;
    this.vm = info.vm;
  }

  setFeatures(features: bigint): void {
    this.guest.sharedNegotiated = ((features >> BigInt(TMEM_F_SHARED)) & 1n) === 1n;
  }

  memoryChanged(ramBytes: bigint): void {
    this.guests.store.setGuestRam(this.guest.storeGuest, Number(ramBytes / PAGE));
  }

  /** ABI.md: INFO.num_queues is the queues the front-end has. */
  queuesAddressed(count: number): void {
    this.guest.numQueues = count;
  }

  control(op: string, args: unknown): unknown {
    const g = this.guest.storeGuest;
    const s = this.guests.store;
    const c = { op, args } as TmemControl;
    switch (c.op) {
      case 'setFrozen':
        s.setFrozen(g, c.args.frozen === true);
        return null;
      case 'flush':
        s.flushGuest(g);
        return null;
      case 'setShareGroup':
        s.setShareGroup(g, c.args.group);
        return null;
      case 'setMaxmem':
        s.setMaxmem(g, Number(c.args.bytes / PAGE));
        return null;
      default:
        throw new Error(`unknown tmem control op '${op}'`);
    }
  }

  stats(): Record<string, unknown> {
    return { storeGuest: this.guest.storeGuest };
  }

  /** The connection is gone: its pages go (with the guest, or its pools if another device of the VM holds the guest). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.guests.holders(this.vm) > 1) this.guests.store.reset(this.guest.storeGuest);
    this.guests.release(this.vm);
  }
}

export function createDeviceKind(host: WorkerHost): DeviceKind {
  const guests = storeGuests(host);
  return {
    counters: TMEM_COUNTERS,
    open: (info, params) => new TmemInstance(guests, info, params as TmemOpenParams),
    idle: () => guests.idle(),
    idleWanted: () => guests.idleWanted(),
    stats: () => ({ store: guests.store.stats() }),
    control: (op, args) => {
      if (op === 'setCapacity') return guests.store.setCapacity(Number((args as { pages: number }).pages));
      if (op === 'setMaxmem') {
        const a = args as { vm: string; bytes: bigint };
        return guests.setMaxmem(a.vm, BigInt(a.bytes));
      }
      throw new Error(`unknown tmem control op '${op}'`);
    },
  };
}
