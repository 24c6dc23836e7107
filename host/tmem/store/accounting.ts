// Accounting: who holds what, the counters, and the limits.
//
// Every counter of the store is declared in this one block (STORE_COUNTERS,
// the shape of host/counters.ts) and exported in one place
// (TmemStore.stats()), zswap style. A guest and each of its pools
// carry one Float64Array of these counters; the host totals live in
// HostCounts.
import { type CounterBlock, counterIndex, countersObject as specsObject } from '../../counters.js';
import type { ListEnds } from './lru.js';

/**
 * Every per-guest / per-pool counter of the store, in slot order (the table
 * shape of host/counters.ts; metrics and `tmemctl stats` read these specs).
 */
export const STORE_COUNTERS = [
  { name: 'puts', help: 'PUT_PAGE requests that named an existing pool', kind: 'counter', unit: 'requests' },
  { name: 'putsNoSpace', help: 'PUTs refused for lack of room (limit or capacity)', kind: 'counter', unit: 'requests' },
  { name: 'putsFrozen', help: 'PUTs refused because the guest is frozen', kind: 'counter', unit: 'requests' },
  { name: 'putsInvalid', help: 'PUTs refused as invalid', kind: 'counter', unit: 'requests' },
  { name: 'gets', help: 'GET_PAGE requests that named an existing pool', kind: 'counter', unit: 'requests' },
  { name: 'hits', help: 'GETs that found their page', kind: 'counter', unit: 'requests' },
  { name: 'flushPages', help: 'FLUSH_PAGE requests', kind: 'counter', unit: 'requests' },
  { name: 'flushObjects', help: 'FLUSH_OBJECT requests', kind: 'counter', unit: 'requests' },
  { name: 'flushedPages', help: 'pages removed by FLUSH_PAGE and FLUSH_OBJECT', kind: 'counter', unit: 'pages' },
  { name: 'evictions', help: 'ephemeral pages taken by the LRU to make room', kind: 'counter', unit: 'pages' },
  { name: 'persistentPages', help: 'persistent pages held now', kind: 'gauge', unit: 'pages' },
  { name: 'persistentPeak', help: 'most persistent pages ever held', kind: 'gauge', unit: 'pages' },
  { name: 'ephemeralPages', help: 'ephemeral pages held now', kind: 'gauge', unit: 'pages' },
  { name: 'ephemeralPeak', help: 'most ephemeral pages ever held', kind: 'gauge', unit: 'pages' },
] as const;

export const STORE_COUNTER_BLOCK: CounterBlock = { subsystem: 'store', scope: 'vm', counters: STORE_COUNTERS };

/** Index of each per-guest / per-pool counter. */
export const C = counterIndex(STORE_COUNTERS);
export const NCOUNTERS = STORE_COUNTERS.length;

export function newCounters(): Float64Array {
  return new Float64Array(NCOUNTERS);
}

/** Counters as a plain object (control path). */
export function countersObject(c: Float64Array): Record<string, number> {
  return specsObject(STORE_COUNTERS, c);
}

/** Adds d pages of a kind to a counter block, keeping the peak. */
export function addPages(c: Float64Array, persistent: boolean, d: number): void {
  if (persistent) {
    const n = (c[C.persistentPages] += d);
    if (n > c[C.persistentPeak]!) c[C.persistentPeak] = n;
  } else {
    const n = (c[C.ephemeralPages] += d);
    if (n > c[C.ephemeralPeak]!) c[C.ephemeralPeak] = n;
  }
}

/** A pool: private (one guest) or shared (any guests of one share group, by uuid). */
export class Pool {
  /** Number naming the pool inside the handle index; reused only once the pool is fully reclaimed. */
  readonly slot: number;
  readonly persistent: boolean;
  readonly shared: boolean;
  /** Private pools: the guest whose counters it feeds; shared pools: null. */
  readonly owner: Guest | null;
  /** Shared pools: their key in the share-group table. */
  readonly sharedKey: string | null;
  /** Guest pool ids referring to this pool. */
  refs = 1;
  /** Unreachable: destroyed, its pages waiting for reclaimStep. */
  dead = false;
  /** Pages of a dead pool not yet freed. */
  pendingPages = 0;
  /** TmemStore.info's pass that counted this pool last (counts a shared pool once per guest). */
  infoMark = 0;
  readonly stats = newCounters();

  constructor(slot: number, persistent: boolean, shared: boolean, owner: Guest | null, sharedKey: string | null) {
    this.slot = slot;
    this.persistent = persistent;
    this.shared = shared;
    this.owner = owner;
    this.sharedKey = sharedKey;
  }

  pages(): number {
    return this.stats[this.persistent ? C.persistentPages : C.ephemeralPages]!;
  }
}

export class Guest {
  readonly id: number;
  readonly name: string;
  maxmemPages: number;
  /** RAM the front-end reported (sum of the mem table's regions). */
  ramPages: number;
  /**
   * The operator's floor on RAM for the maxmem rule (the VM's declared RAM,
   * `ram=`): a front-end reporting less does not get more persistent pages.
   */
  readonly ramFloorPages: number;
  /** The operator's cap on the pages of both kinds in this guest's private pools (`tmem-max=`); Infinity: none. */
  readonly capPages: number;
  /** Capped guests: their private ephemeral pages, oldest first (evicted first when at the cap). */
  readonly own: ListEnds | null;
  shareGroup: string | null;
  frozen = false;
  /** Pool id -> pool (null = free id). Length = max pools per guest. */
  readonly pools: (Pool | null)[];
  /**
   * Device pools (TmemStore.newDevicePool: a block device's disk): handle ->
   * pool (null = destroyed). No tmem pool id reaches them.
   */
  readonly devicePools: (Pool | null)[] = [];
  readonly stats = newCounters();

  constructor(
    id: number,
    name: string,
    maxmemPages: number,
    ramPages: number,
    shareGroup: string | null,
    maxPools: number,
    limits: { ramFloorPages?: number; capPages?: number | null; own?: ListEnds | null } = {},
  ) {
    this.id = id;
    this.name = name;
    this.maxmemPages = maxmemPages;
    this.ramPages = ramPages;
    this.ramFloorPages = Math.max(0, limits.ramFloorPages ?? 0);
    this.capPages = limits.capPages === undefined || limits.capPages === null ? Infinity : Math.max(0, limits.capPages);
    this.own = this.capPages === Infinity ? null : (limits.own ?? null);
    this.shareGroup = shareGroup;
    this.pools = new Array<Pool | null>(maxPools).fill(null);
  }

  /**
   * Persistent pages this guest may hold (docs/ABI-host-limits.md):
   * min(max(0, maxmem - max(RAM floor, RAM)), cap).
   */
  persistentLimit(): number {
    return Math.min(Math.max(0, this.maxmemPages - Math.max(this.ramFloorPages, this.ramPages)), this.capPages);
  }

  /** Pages of both kinds in the guest's private pools (what the cap bounds). */
  held(): number {
    return this.stats[C.persistentPages]! + this.stats[C.ephemeralPages]!;
  }

  /** Room for one more persistent page under the guest's limit. */
  persistentRoom(): boolean {
    return this.stats[C.persistentPages]! < this.persistentLimit();
  }
}

/** Host-wide page counts: free + ephemeral (freeable) + persistent + pending reclaim = capacity. */
export class HostCounts {
  ephemeral = 0;
  persistent = 0;
  /** Pages of destroyed pools not yet reclaimed (also freeable). */
  pending = 0;
}
