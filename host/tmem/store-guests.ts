// The one store of the vring worker and its guests, one per VM, shared by
// every device of that VM (tmem today, tmem-blk next): the same maxmem, cap,
// RAM and host capacity accounting whichever device a page came through.
//
// A VM's store guest is made by the first device instance that acquires it
// and lives while any holds it: a tmem-only VM behaves as before (its pages
// go when its connection goes); a device that must keep its pages across
// reconnects (a block device) acquires once and keeps its hold.
//
// Device modules reach this through WorkerHost.shared, so the tmem and blk
// worker halves get the same object without importing each other.
import type { WorkerHost } from '../vhost-user/device.js';
import { INFO_LENGTH, INFO_PERSISTENT_LIMIT_PAGES, INFO_PERSISTENT_PAGES, TmemStore } from './store/store.js';

const PAGE = 4096n;

/** The operator's per-VM limits and state, as the main halves send them in open params. */
export interface VmStoreLimits {
  readonly maxmemBytes: bigint;
  readonly shareGroup: string | null;
  /** Cap on the VM's tmem pages of both kinds (bytes); null: none but the capacity. */
  readonly tmemMaxBytes: bigint | null;
  /** The VM's declared RAM, a floor for the maxmem rule (bytes). */
  readonly ramFloorBytes: bigint;
  readonly frozen: boolean;
}

interface Held {
  readonly guest: number;
  refs: number;
}

/** Pages freed per reclaim step while idle. */
const RECLAIM_BUDGET = 256;
/** Store frames faulted in per idle step (a request arriving meanwhile waits for at most this many faults). */
const PREFAULT_STEP = 8;

export class StoreGuests {
  readonly store: TmemStore;
  private readonly byVm = new Map<string, Held>();

  constructor(store: TmemStore) {
    this.store = store;
  }

  /** The VM's store guest, made with `limits` if no device holds it yet. */
  acquire(vm: string, limits: VmStoreLimits): number {
    const h = this.byVm.get(vm);
    if (h) {
      h.refs++;
      return h.guest;
    }
    const guest = this.store.addGuest({
      name: vm,
      maxmemPages: Number(limits.maxmemBytes / PAGE),
      ramPages: 0,
      shareGroup: limits.shareGroup,
      capPages: limits.tmemMaxBytes === null ? null : Number(limits.tmemMaxBytes / PAGE),
      ramFloorPages: Number(limits.ramFloorBytes / PAGE),
    });
    if (limits.frozen) this.store.setFrozen(guest, true);
    this.byVm.set(vm, { guest, refs: 1 });
    return guest;
  }

  /**
   * The operator's new maxmem for a VM (tmemctl set VM maxmem=): applied to
   * its store guest if a device holds one, whichever device; null if none
   * does (the next acquire brings the new value in its open params).
   */
  setMaxmem(vm: string, maxmemBytes: bigint): { persistentLimitPages: number; persistentPages: number } | null {
    const h = this.byVm.get(vm);
    if (!h) return null;
    this.store.setMaxmem(h.guest, Number(maxmemBytes / PAGE));
    const info = new Float64Array(INFO_LENGTH);
    this.store.info(h.guest, info);
    return { persistentLimitPages: info[INFO_PERSISTENT_LIMIT_PAGES]!, persistentPages: info[INFO_PERSISTENT_PAGES]! };
  }

  /** How many device instances hold the VM's guest. */
  holders(vm: string): number {
    return this.byVm.get(vm)?.refs ?? 0;
  }

  /** Drops one hold; the last one removes the guest and frees its pages (in reclaim steps). */
  release(vm: string): void {
    const h = this.byVm.get(vm);
    if (!h) return;
    if (--h.refs > 0) return;
    this.byVm.delete(vm);
    this.store.removeGuest(h.guest);
  }

  /** Cheap: whether idle() has work (the engine asks after serving requests). */
  idleWanted(): boolean {
    const s = this.store;
    return s.reclaimPending() > 0 || s.prefaultWanted();
  }

  /**
   * Idle work: free the pages of destroyed pools and removed guests, then
   * fault in never-used frames ahead of use (a first write to a frame is a
   * page fault, ~20 us in a VM). True while either has work left.
   */
  idle(): boolean {
    const s = this.store;
    if (s.reclaimPending() > 0) {
      s.reclaimStep(RECLAIM_BUDGET);
      return true; // prefault next time
    }
    return s.prefaultStep(PREFAULT_STEP) > 0;
  }
}

/** The worker's one StoreGuests (made from the daemon's device config on first use). */
export function storeGuests(host: WorkerHost): StoreGuests {
  return host.shared('tmem.store', () => {
    const c = host.config;
    const capacityPages = c.capacityPages;
    const maxPoolsPerGuest = c.maxPoolsPerGuest;
    if (typeof capacityPages !== 'number' || typeof maxPoolsPerGuest !== 'number') throw new Error('device config needs capacityPages and maxPoolsPerGuest (numbers)');
    return new StoreGuests(new TmemStore({ capacityPages, maxPoolsPerGuest }));
  });
}
