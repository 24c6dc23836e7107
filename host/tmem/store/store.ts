// TmemStore: the tmem operations of ABI.md ("Semantics", "Edge rules") on top
// of the handle index, the page frames, the LRU and the accounting. The
// store's rules are all in this file; the data structures are elsewhere:
//
//   handle-index.ts  (pool, oid, index) -> page record; object/pool lists
//   frames.ts        page bytes in preallocated chunks (frame = page record)
//   lru.ts           the host-wide LRU of ephemeral pages
//   accounting.ts    guests, pools, counters, limits
//
// The rules:
//  - PUT copies. A PUT to a handle that holds a page overwrites it in place;
//    a PUT that fails for any reason (INVALID, FROZEN, NOSPACE) on an existing
//    pool leaves the handle empty (put-put-get never returns the old data).
//  - Room for a new page comes from the free frames, else from the pages of
//    destroyed pools still waiting for reclaim, else by evicting the oldest
//    ephemeral page of the host-wide LRU. Persistent pages are never on the
//    LRU, so an ephemeral PUT never evicts them, while a persistent PUT
//    evicts ephemeral pages before it is refused.
//  - A guest's persistent pages never exceed its limit,
//    min(max(0, maxmem - max(RAM floor, RAM)), cap) (docs/ABI-host-limits.md);
//    a persistent PUT beyond that is NOSPACE (even an overwrite, when a RAM
//    change left the guest above its limit).
//  - A guest with a cap (tmem-max) never holds more than cap pages of both
//    kinds in its private pools: a new page at the cap first evicts the
//    guest's own oldest private ephemeral page; with none, NOSPACE.
//  - GET: private ephemeral pools always remove the page (exclusive cache);
//    private persistent pools remove it only with TMEM_REQF_EXCLUSIVE; shared
//    pools never remove (a hit refreshes the page on the LRU).
//  - Pages vanish only by PUT-driven eviction (ephemeral), exclusive GET,
//    FLUSH, DESTROY_POOL/RESET, flushGuest and removeGuest; so a GET that
//    missed keeps missing until a PUT of that handle (get-get).
//  - Status order (ABI.md): bad flags / page size / arguments INVALID, unknown
//    pool INVALID, shared pool without a share group DENIED (NEW_POOL), frozen
//    guest FROZEN (PUT only), no room / limit / pool count NOSPACE.
//  - Shared pools are keyed by (share group, uuid). NEW_POOL of a uuid the
//    guest already holds gives another pool id for the same pool; each pool id
//    is one reference; the pages go with the last reference. Changing a
//    guest's share group drops its references to pools of the old group.
//  - Destroyed pools (DESTROY_POOL, RESET, removeGuest, flushGuest) become
//    unreachable at once and stop counting against their guest; their pages
//    are freed by reclaimStep(budget) in bounded steps, or one at a time by a
//    PUT that needs room.
//  - Device pools (newDevicePool: tmem-blk's disk) are persistent pools of
//    a guest that no tmem pool id reaches: RESET, DESTROY_POOL and
//    flushGuest leave them alone; destroyDevicePool and removeGuest free
//    them. Their pages count like any persistent page (limit, cap, capacity);
//    a page held is overwritten in place (no more memory, never refused), a
//    refused new page changes nothing, and a GET never removes.
//  - Nothing throws on guest input: every op returns a TMEM_S_* status or a
//    non-negative value. An unknown guest id is INVALID too.
import {
  TMEM_PAGE_SIZE,
  TMEM_POOL_PERSIST,
  TMEM_POOL_SHARED,
  TMEM_OP_GET_PAGE,
  TMEM_REQF_EXCLUSIVE,
  TMEM_S_DENIED,
  TMEM_S_FROZEN,
  TMEM_S_INVALID,
  TMEM_S_MISS,
  TMEM_S_NOSPACE,
  TMEM_S_OK,
  TMEM_UUID_SIZE,
} from '../../../shared/abi.js';
import { C, Guest, HostCounts, Pool, addPages, countersObject } from './accounting.js';
import { type ChunkAllocator, FrameStore } from './frames.js';
import { HandleIndex, NIL } from './handle-index.js';
import { ListSet, Lru } from './lru.js';

export { STORE_COUNTERS, STORE_COUNTER_BLOCK } from './accounting.js';

/**
 * Layout of info(g, out): out is a Float64Array of at least INFO_LENGTH
 * entries, filled with the store-dependent fields of struct tmem_info.
 *   [0] max_pools               pool ids per guest
 *   [1] capacity_pages          host capacity, all guests, both kinds
 *   [2] persistent_limit_pages  max(0, maxmem - RAM) of this guest
 *   [3] persistent_pages        this guest's persistent pages now
 *   [4] ephemeral_pages         ephemeral pages now in this guest's private
 *                               pools plus those of the shared pools it holds
 *   [5..7] 0 (reserved)
 * (host/tmem/info-layout.ts mirrors this.)
 */
export const INFO_MAX_POOLS = 0;
export const INFO_CAPACITY_PAGES = 1;
export const INFO_PERSISTENT_LIMIT_PAGES = 2;
export const INFO_PERSISTENT_PAGES = 3;
export const INFO_EPHEMERAL_PAGES = 4;
export const INFO_LENGTH = 8;

export interface StoreOptions {
  /** Host tmem capacity in 4 KiB pages, all guests, both kinds. */
  capacityPages: number;
  /** Pool ids per guest (shared ones included). */
  maxPoolsPerGuest: number;
  /** Tests: the handle index's hash seed (default: random per store). */
  hashSeed?: number;
  /** Tests: allocates a chunk of frames (default new Uint8Array; throws when out of memory). */
  allocFrames?: ChunkAllocator;
}

export interface GuestOptions {
  name: string;
  maxmemPages: number;
  ramPages: number;
  /** Share group for shared pools; null = none (shared NEW_POOL is DENIED). */
  shareGroup: string | null;
  /** Most pages of both kinds in the guest's private pools; null/undefined = no cap but the capacity. */
  capPages?: number | null;
  /** RAM the maxmem rule assumes at least (pages; default 0). */
  ramFloorPages?: number;
}

const PAGE = TMEM_PAGE_SIZE;
/** The largest capacityPages (page records are numbered in int32). */
export const MAX_CAPACITY_PAGES = 2 ** 31 - 1;
/** Never-used frames prefaultStep keeps faulted in ahead of use (64 MiB). */
const PREFAULT_AHEAD_PAGES = 16384;
/** prefaultWanted() says yes once this many of those frames have been used: the idle steps then refill in a batch. */
const PREFAULT_REFILL_PAGES = 64;

/** Device pools hold one object: the page's index is all that names it. */
const DEVICE_OID = new Uint32Array(6);

function isU32(n: number): boolean {
  return n >>> 0 === n;
}

/**
 * The tmem_req.flags bits each op defines (ABI.md): EXCLUSIVE for GET_PAGE,
 * none for the others. The device refuses a request whose flags go beyond
 * these (INVALID) with this rule, and getPage checks its own with it.
 */
export function requestFlagsAllowed(op: number): number {
  return op === TMEM_OP_GET_PAGE ? TMEM_REQF_EXCLUSIVE : 0;
}

export class TmemStore {
  /** Pages the structures are sized for: the most setCapacity may give. */
  readonly capacityPages: number;
  /**
   * The capacity in force (setCapacity; at most capacityPages): no page is
   * taken while this many are held (live and pending reclaim). Persistent
   * pages above it after a shrink are kept; new pages are refused meanwhile.
   */
  private limitPages: number;
  readonly maxPoolsPerGuest: number;
  private readonly index: HandleIndex;
  private readonly frames: FrameStore;
  private readonly lru: Lru;
  readonly host = new HostCounts();

  /** Guest id -> guest (ids from 1, reused after removal). */
  private readonly guests: (Guest | null)[] = [null];
  /** Pool slot -> pool, for pages found by the LRU or by reclaim. */
  private readonly poolsBySlot: (Pool | null)[] = [];
  private readonly freeSlots: number[] = [];
  /** (share group, uuid) -> live shared pool. */
  private readonly sharedPools = new Map<string, Pool>();
  /** Frames below this have been faulted in by prefaultStep (or used). */
  private prefaulted = 0;
  /** Dead pools whose pages are still to be freed, oldest first. */
  private pendingPools: Pool[] = [];
  /** Passes of info() so far (Pool.infoMark). */
  private infoPass = 0;
  /** Capped guests' own LRU lists (made with the first capped guest). */
  private ownLists: ListSet | null = null;

  constructor(opts: StoreOptions) {
    const cap = Math.floor(opts.capacityPages);
    const mp = Math.floor(opts.maxPoolsPerGuest);
    if (!(cap >= 0 && cap <= MAX_CAPACITY_PAGES)) throw new RangeError(`capacityPages out of range: ${opts.capacityPages}`);
    if (!(mp >= 1 && mp < 2 ** 20)) throw new RangeError(`maxPoolsPerGuest out of range: ${opts.maxPoolsPerGuest}`);
    this.capacityPages = cap;
    this.limitPages = cap;
    this.maxPoolsPerGuest = mp;
    this.index = new HandleIndex(cap, { seed: opts.hashSeed });
    this.frames = new FrameStore(cap, opts.allocFrames);
    this.lru = new Lru(cap);
  }

  // ---- guests (operator / transport) -------------------------------------

  addGuest(o: GuestOptions): number {
    let id = this.guests.indexOf(null, 1);
    if (id < 0) id = this.guests.length;
    const capped = o.capPages !== undefined && o.capPages !== null && o.capPages >= 0 && o.capPages < Infinity;
    if (capped && this.ownLists === null) this.ownLists = new ListSet(this.capacityPages);
    this.guests[id] = new Guest(id, o.name, Math.max(0, o.maxmemPages), Math.max(0, o.ramPages), o.shareGroup, this.maxPoolsPerGuest, {
      ramFloorPages: o.ramFloorPages,
      capPages: capped ? Math.floor(o.capPages!) : null,
      own: capped ? ListSet.ends() : null,
    });
    return id;
  }

  private guestAt(g: number): Guest | null {
    return (isU32(g) && this.guests[g]) || null;
  }

  /** RAM changed (memory table). Lowering the limit below what is held keeps the pages but refuses new ones. */
  setGuestRam(g: number, ramPages: number): void {
    const guest = this.guestAt(g);
    if (guest) guest.ramPages = Math.max(0, ramPages);
  }

  setMaxmem(g: number, maxmemPages: number): void {
    const guest = this.guestAt(g);
    if (guest) guest.maxmemPages = Math.max(0, maxmemPages);
  }

  /** Moves the guest to another share group (or none), dropping its references to shared pools of the old one. */
  setShareGroup(g: number, group: string | null): void {
    const guest = this.guestAt(g);
    if (!guest || guest.shareGroup === group) return;
    for (let id = 0; id < guest.pools.length; id++) {
      const p = guest.pools[id];
      if (p && p.shared) this.dropPoolId(guest, id);
    }
    guest.shareGroup = group;
  }

  setFrozen(g: number, frozen: boolean): void {
    const guest = this.guestAt(g);
    if (guest) guest.frozen = frozen;
  }

  /**
   * Drops every page of the guest's private pools; the pools stay (same ids,
   * same counters). Shared pools are not the guest's alone and are kept.
   */
  flushGuest(g: number): void {
    const guest = this.guestAt(g);
    if (!guest) return;
    for (let id = 0; id < guest.pools.length; id++) {
      const p = guest.pools[id];
      if (!p || p.shared || p.pages() === 0) continue;
      this.retire(p); // zeroes p's page counts
      const fresh = new Pool(this.allocSlot(), p.persistent, false, guest, null);
      fresh.stats.set(p.stats);
      this.poolsBySlot[fresh.slot] = fresh;
      guest.pools[id] = fresh;
    }
  }

  /** The guest is gone: its private pools are freed (in reclaim steps) and its shared references dropped. */
  removeGuest(g: number): void {
    const guest = this.guestAt(g);
    if (!guest) return;
    for (let id = 0; id < guest.pools.length; id++) if (guest.pools[id]) this.dropPoolId(guest, id);
    for (let h = 0; h < guest.devicePools.length; h++) this.destroyDevicePool(g, h);
    this.guests[g] = null;
  }

  // ---- pools ---------------------------------------------------------------

  private allocSlot(): number {
    const s = this.freeSlots.pop();
    if (s !== undefined) return s;
    this.poolsBySlot.push(null);
    return this.poolsBySlot.length - 1;
  }

  private poolAt(guest: Guest, poolId: number): Pool | null {
    return (isU32(poolId) && poolId < guest.pools.length && guest.pools[poolId]) || null;
  }

  /** NEW_POOL: returns the new pool id or a TMEM_S_* status. */
  newPool(g: number, flags: number, pageSize: number, uuid: Uint8Array, uuidOffset: number, sharedNegotiated: boolean): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    if (!isU32(flags) || (flags & ~(TMEM_POOL_PERSIST | TMEM_POOL_SHARED)) !== 0) return TMEM_S_INVALID;
    const persistent = (flags & TMEM_POOL_PERSIST) !== 0;
    const shared = (flags & TMEM_POOL_SHARED) !== 0;
    if (shared && (persistent || !sharedNegotiated)) return TMEM_S_INVALID;
    if (pageSize !== PAGE) return TMEM_S_INVALID;
    if (shared && !(isU32(uuidOffset) && uuidOffset + TMEM_UUID_SIZE <= uuid.length)) return TMEM_S_INVALID;
    if (shared && guest.shareGroup === null) return TMEM_S_DENIED;
    const id = guest.pools.indexOf(null);
    if (id < 0) return TMEM_S_NOSPACE;
    let pool: Pool;
    if (shared) {
      let key = guest.shareGroup + '\u0000';
      for (let i = 0; i < TMEM_UUID_SIZE; i++) key += uuid[uuidOffset + i]!.toString(16).padStart(2, '0');
      const old = this.sharedPools.get(key);
      if (old) {
        old.refs++;
        pool = old;
      } else {
        pool = new Pool(this.allocSlot(), false, true, null, key);
        this.sharedPools.set(key, pool);
      }
    } else {
      pool = new Pool(this.allocSlot(), persistent, false, guest, null);
    }
    this.poolsBySlot[pool.slot] = pool;
    guest.pools[id] = pool;
    return id;
  }

  /** DESTROY_POOL: the pool id is free at once; the pages go (with a shared pool's last reference) in reclaim steps. */
  destroyPool(g: number, poolId: number): number {
    const guest = this.guestAt(g);
    if (!guest || !this.poolAt(guest, poolId)) return TMEM_S_INVALID;
    this.dropPoolId(guest, poolId);
    return TMEM_S_OK;
  }

  /** RESET: destroys every pool id of the guest; returns how many. */
  reset(g: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    let n = 0;
    for (let id = 0; id < guest.pools.length; id++) {
      if (guest.pools[id]) {
        this.dropPoolId(guest, id);
        n++;
      }
    }
    return n;
  }

  private dropPoolId(guest: Guest, id: number): void {
    const pool = guest.pools[id]!;
    guest.pools[id] = null;
    if (--pool.refs > 0) return;
    if (pool.sharedKey !== null) this.sharedPools.delete(pool.sharedKey);
    this.retire(pool);
  }

  /** Makes a pool unreachable: its pages leave the guest's and the host's live counts now and wait for reclaim. */
  private retire(pool: Pool): void {
    pool.dead = true;
    const n = pool.pages();
    if (n === 0) return this.releaseSlot(pool);
    addPages(pool.stats, pool.persistent, -n);
    if (pool.owner) addPages(pool.owner.stats, pool.persistent, -n);
    if (pool.persistent) this.host.persistent -= n;
    else this.host.ephemeral -= n;
    pool.pendingPages = n;
    this.host.pending += n;
    this.pendingPools.push(pool);
  }

  private releaseSlot(pool: Pool): void {
    this.poolsBySlot[pool.slot] = null;
    this.freeSlots.push(pool.slot);
  }

  /**
   * Frees up to budgetPages pages of destroyed pools and removed guests;
   * returns the pages still pending (0 = nothing left to do).
   */
  reclaimStep(budgetPages: number): number {
    let budget = Math.max(0, Math.floor(budgetPages));
    while (this.pendingPools.length > 0) {
      const pool = this.pendingPools[0]!;
      if (pool.pendingPages === 0) {
        this.pendingPools.shift();
        continue;
      }
      if (budget === 0) break;
      const o = this.index.poolFirstObject(pool.slot);
      if (o === NIL) {
        // cannot happen while the counts are right; never loop or throw on it
        this.host.pending -= pool.pendingPages;
        pool.pendingPages = 0;
        this.releaseSlot(pool);
        continue;
      }
      this.removePage(this.index.objHead[o]!, pool);
      budget--;
    }
    return this.host.pending;
  }

  /**
   * Idle work: faults in up to budgetPages never-used frames, keeping
   * PREFAULT_AHEAD_PAGES of them ready ahead of the frames in use, so that a
   * fresh store's first PUTs do not each take a page fault. Returns the pages
   * still to fault in (0 = nothing to do).
   */
  prefaultStep(budgetPages: number): number {
    const from = this.prefaultFrom();
    const end = this.prefaultEnd();
    const n = Math.max(0, Math.min(Math.floor(budgetPages), end - from));
    for (let f = from; f < from + n; f++) {
      if (!this.frames.prefault(f)) {
        // out of memory: stop for now (a later call tries again)
        this.prefaulted = f;
        return 0;
      }
    }
    this.prefaulted = from + n;
    return end - this.prefaulted;
  }

  /**
   * Cheap: whether prefaultStep has work worth an idle step: the frames
   * faulted in ahead of use have fallen PREFAULT_REFILL_PAGES short (or
   * fewer remain below the capacity).
   */
  prefaultWanted(): boolean {
    const from = this.prefaultFrom();
    const end = this.prefaultEnd();
    return from < end && (end - from >= PREFAULT_REFILL_PAGES || end === this.limitPages);
  }

  /** The first frame prefaultStep would fault in: past those already in and those in use. */
  private prefaultFrom(): number {
    return Math.max(this.prefaulted, this.index.freshFrom);
  }

  /** Where the frames kept ready ahead of use end: PREFAULT_AHEAD_PAGES past the frames in use, at most the capacity. */
  private prefaultEnd(): number {
    return Math.min(this.limitPages, this.index.freshFrom + PREFAULT_AHEAD_PAGES);
  }

  /** Pages of destroyed pools not yet freed. */
  reclaimPending(): number {
    return this.host.pending;
  }

  /** The capacity in force, in pages (setCapacity). */
  get capacityLimitPages(): number {
    return this.limitPages;
  }

  /**
   * The operator changes the capacity (tmemctl set capacity=), within the
   * pages the store was sized for. Shrinking below what is held frees the
   * pages of destroyed pools, then evicts ephemeral pages oldest first
   * (counted as evictions); persistent pages are never dropped, as in Xen:
   * while they alone exceed the capacity every new page is refused
   * (NOSPACE) until guests release some. Growing takes effect at once.
   * Returns what it did; a capacity out of range changes nothing (null).
   */
  setCapacity(pages: number): { evicted: number; reclaimed: number; overPages: number } | null {
    if (!Number.isSafeInteger(pages) || pages < 0 || pages > this.capacityPages) return null;
    this.limitPages = pages;
    let reclaimed = 0;
    let evicted = 0;
    while (this.index.pagesUsed > pages && this.host.pending > 0) {
      const before = this.host.pending;
      this.reclaimStep(Math.min(before, this.index.pagesUsed - pages));
      reclaimed += before - this.host.pending;
    }
    while (this.index.pagesUsed > pages && this.evictOldest()) evicted++;
    return { evicted, reclaimed, overPages: Math.max(0, this.index.pagesUsed - pages) };
  }

  /** Evicts the oldest ephemeral page of the host-wide LRU; false when there is none. */
  private evictOldest(): boolean {
    const v = this.lru.head;
    if (v === NIL) return false;
    const pool = this.poolsBySlot[this.index.objPool[this.index.pgObj[v]!]!]!;
    pool.stats[C.evictions]++;
    if (pool.owner) pool.owner.stats[C.evictions]++;
    this.removePage(v, pool);
    return true;
  }

  // ---- pages ---------------------------------------------------------------

  /** Frees page p of pool (LRU, index, frame, counts). */
  private removePage(p: number, pool: Pool): void {
    if (!pool.persistent) {
      this.lru.remove(p);
      const own = pool.owner?.own;
      if (own) this.ownLists!.remove(p, own);
    }
    const o = this.index.freePage(p);
    if (this.index.objHead[o] === NIL) this.index.removeObject(o);
    if (pool.dead) {
      this.host.pending--;
      if (--pool.pendingPages === 0) this.releaseSlot(pool);
      return;
    }
    addPages(pool.stats, pool.persistent, -1);
    if (pool.owner) addPages(pool.owner.stats, pool.persistent, -1);
    if (pool.persistent) this.host.persistent--;
    else this.host.ephemeral--;
  }

  /**
   * A free page record for a new page: recycled frames, then the frames of
   * destroyed pools (pending reclaim), then never-used frames, then LRU
   * eviction. NIL = no room. Frames already written come first because the
   * first write to a never-used frame is a page fault (microseconds to tens
   * of microseconds in a VM), which would otherwise land on the PUT. A
   * never-used frame whose chunk cannot be allocated (out of memory) is
   * given back unused, and the LRU is tried instead.
   */
  private obtainPage(): number {
    for (;;) {
      // at the capacity in force (below the structures' size after a shrink), only freeing makes room
      const room = this.index.pagesUsed < this.limitPages;
      let p = room ? this.index.allocRecycled() : NIL;
      if (p !== NIL) return p;
      const pending = this.host.pending;
      if (pending > 0 && this.reclaimStep(1) < pending) continue;
      p = room ? this.index.allocFresh() : NIL;
      if (p !== NIL) {
        if (this.frames.ensure(p)) return p;
        // its chunk cannot be allocated (out of memory): evict instead
        this.index.unallocPage(p);
      }
      if (!this.evictOldest()) return NIL;
    }
  }

  /** The page stored under (pool, oid, index), or NIL. */
  private lookup(pool: Pool, oid: Uint32Array, index: number): number {
    const o = this.index.findObject(pool.slot, oid);
    return o === NIL ? NIL : this.index.findPage(o, index);
  }

  /** PUT_PAGE: copies 4096 bytes from src[srcOffset..] into the store. */
  putPage(g: number, poolId: number, oid: Uint32Array, index: number, src: Uint8Array, srcOffset: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.poolAt(guest, poolId);
    if (!pool) return TMEM_S_INVALID;
    guest.stats[C.puts]++;
    pool.stats[C.puts]++;
    if (oid.length < 6 || !isU32(index)) return this.putFailed(guest, pool, C.putsInvalid, NIL);
    const o0 = this.index.findObject(pool.slot, oid);
    let p = o0 === NIL ? NIL : this.index.findPage(o0, index);
    if (!isU32(srcOffset) || srcOffset + PAGE > src.length) return this.putFailed(guest, pool, C.putsInvalid, p);
    if (guest.frozen) return this.putFailed(guest, pool, C.putsFrozen, p);
    const owner = pool.owner;
    if (p !== NIL) {
      // put-put: overwrite in place unless the guest is above its limit
      if (pool.persistent && owner!.stats[C.persistentPages]! > owner!.persistentLimit()) {
        return this.putFailed(guest, pool, C.putsNoSpace, p);
      }
      this.frames.copyIn(p, src, srcOffset);
      if (!pool.persistent) {
        this.lru.touch(p);
        if (owner?.own) this.ownLists!.touch(p, owner.own);
      }
      return TMEM_S_OK;
    }
    if (pool.persistent && !owner!.persistentRoom()) return this.putFailed(guest, pool, C.putsNoSpace, NIL);
    if (!this.insertPage(pool, o0, oid, index, src, srcOffset)) return this.putFailed(guest, pool, C.putsNoSpace, NIL);
    return TMEM_S_OK;
  }

  /**
   * A new page under (pool, oid, index), known absent (o0: its object or
   * NIL), when there is room: the cap (a capped guest makes room from its
   * own oldest ephemeral page, never another guest's), then obtainPage.
   * False = no room, nothing changed.
   */
  private insertPage(pool: Pool, o0: number, oid: Uint32Array, index: number, src: Uint8Array, srcOffset: number): boolean {
    const owner = pool.owner;
    if (owner !== null && owner.own !== null && owner.held() >= owner.capPages && !this.evictOwn(owner)) return false;
    const p = this.obtainPage();
    if (p === NIL) return false;
    // obtainPage only removes objects (eviction, reclaim) and a removed
    // record is not reused before the next addObject: o0 is still the object
    // unless it was freed (objPool NIL), and an absent object is still absent
    const o = o0 !== NIL && this.index.objPool[o0] !== NIL ? o0 : this.index.addObject(pool.slot, oid);
    this.index.linkPage(p, o, index);
    this.frames.copyIn(p, src, srcOffset);
    addPages(pool.stats, pool.persistent, 1);
    if (owner) addPages(owner.stats, pool.persistent, 1);
    if (pool.persistent) this.host.persistent++;
    else {
      this.host.ephemeral++;
      this.lru.push(p);
      if (owner?.own) this.ownLists!.push(p, owner.own);
    }
    return true;
  }

  // ---- device pools (a device's own pages in its VM's accounting) ---------

  /**
   * A persistent pool of guest g for a device (tmem-blk's disk), outside
   * the tmem pool ids: RESET, DESTROY_POOL and flushGuest do not reach it.
   * Returns its handle (>= 0) or TMEM_S_INVALID for an unknown guest.
   */
  newDevicePool(g: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = new Pool(this.allocSlot(), true, false, guest, null);
    this.poolsBySlot[pool.slot] = pool;
    let h = guest.devicePools.indexOf(null);
    if (h < 0) h = guest.devicePools.push(pool) - 1;
    else guest.devicePools[h] = pool;
    return h;
  }

  private devicePoolAt(guest: Guest, h: number): Pool | null {
    return (isU32(h) && h < guest.devicePools.length && guest.devicePools[h]) || null;
  }

  /**
   * Stores page `index` of device pool h. A page held is overwritten in
   * place, always (it takes no more memory). A new page obeys the guest's
   * frozen state, limit, cap and the capacity like any persistent PUT;
   * refused (FROZEN, NOSPACE), nothing changes.
   */
  putDevicePage(g: number, h: number, index: number, src: Uint8Array, srcOffset: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.devicePoolAt(guest, h);
    if (!pool) return TMEM_S_INVALID;
    guest.stats[C.puts]++;
    pool.stats[C.puts]++;
    if (!isU32(index) || !isU32(srcOffset) || srcOffset + PAGE > src.length) return this.putFailed(guest, pool, C.putsInvalid, NIL);
    const o0 = this.index.findObject(pool.slot, DEVICE_OID);
    const p = o0 === NIL ? NIL : this.index.findPage(o0, index);
    if (p !== NIL) {
      this.frames.copyIn(p, src, srcOffset);
      return TMEM_S_OK;
    }
    if (guest.frozen) return this.putFailed(guest, pool, C.putsFrozen, NIL);
    if (!guest.persistentRoom() || !this.insertPage(pool, o0, DEVICE_OID, index, src, srcOffset)) return this.putFailed(guest, pool, C.putsNoSpace, NIL);
    return TMEM_S_OK;
  }

  /** Copies page `index` of device pool h into dst[dstOffset..]; OK, MISS or INVALID. Never removes it. */
  getDevicePage(g: number, h: number, index: number, dst: Uint8Array, dstOffset: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.devicePoolAt(guest, h);
    if (!pool || !isU32(index) || !isU32(dstOffset) || dstOffset + PAGE > dst.length) return TMEM_S_INVALID;
    return this.readHandle(guest, pool, DEVICE_OID, index, dst, dstOffset) === NIL ? TMEM_S_MISS : TMEM_S_OK;
  }

  /** Drops page `index` of device pool h (absent is fine). */
  flushDevicePage(g: number, h: number, index: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.devicePoolAt(guest, h);
    if (!pool || !isU32(index)) return TMEM_S_INVALID;
    this.flushHandle(guest, pool, DEVICE_OID, index);
    return TMEM_S_OK;
  }

  /** The device's pool goes: unreachable at once, its pages freed in reclaim steps. */
  destroyDevicePool(g: number, h: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.devicePoolAt(guest, h);
    if (!pool) return TMEM_S_INVALID;
    guest.devicePools[h] = null;
    this.retire(pool);
    return TMEM_S_OK;
  }

  /**
   * A PUT_PAGE the device found malformed (lengths or flags): INVALID, and,
   * as for any failed PUT, the handle it names is empty afterwards
   * (put-put-get). Counted as a refused put of an existing pool.
   */
  putRefused(g: number, poolId: number, oid: Uint32Array, index: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.poolAt(guest, poolId);
    if (!pool) return TMEM_S_INVALID;
    guest.stats[C.puts]++;
    pool.stats[C.puts]++;
    const p = oid.length < 6 || !isU32(index) ? NIL : this.lookup(pool, oid, index);
    return this.putFailed(guest, pool, C.putsInvalid, p);
  }

  /** Evicts the capped guest's oldest private ephemeral page; false when it has none. */
  private evictOwn(guest: Guest): boolean {
    const v = guest.own!.head;
    if (v === NIL) return false;
    const pool = this.poolsBySlot[this.index.objPool[this.index.pgObj[v]!]!]!;
    pool.stats[C.evictions]++;
    guest.stats[C.evictions]++;
    this.removePage(v, pool);
    return true;
  }

  /** A refused PUT: counts the reason and empties the handle (page p, if any; a device PUT passes NIL: its page is kept). */
  private putFailed(guest: Guest, pool: Pool, reason: number, p: number): number {
    guest.stats[reason]++;
    pool.stats[reason]++;
    if (p !== NIL) this.removePage(p, pool);
    return reason === C.putsFrozen ? TMEM_S_FROZEN : reason === C.putsNoSpace ? TMEM_S_NOSPACE : TMEM_S_INVALID;
  }

  /** GET_PAGE: copies the page into dst[dstOffset..]; OK, MISS or INVALID. */
  getPage(g: number, poolId: number, oid: Uint32Array, index: number, reqFlags: number, dst: Uint8Array, dstOffset: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    if (!isU32(reqFlags) || (reqFlags & ~requestFlagsAllowed(TMEM_OP_GET_PAGE)) !== 0) return TMEM_S_INVALID;
    const pool = this.poolAt(guest, poolId);
    if (!pool) return TMEM_S_INVALID;
    if (oid.length < 6 || !isU32(index) || !isU32(dstOffset) || dstOffset + PAGE > dst.length) return TMEM_S_INVALID;
    const p = this.readHandle(guest, pool, oid, index, dst, dstOffset);
    if (p === NIL) return TMEM_S_MISS;
    if (pool.shared) this.lru.touch(p);
    else if (!pool.persistent || (reqFlags & TMEM_REQF_EXCLUSIVE) !== 0) this.removePage(p, pool);
    return TMEM_S_OK;
  }

  /** FLUSH_PAGE: the handle is empty afterwards; flushing what is absent succeeds. */
  flushPage(g: number, poolId: number, oid: Uint32Array, index: number): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.poolAt(guest, poolId);
    if (!pool || oid.length < 6 || !isU32(index)) return TMEM_S_INVALID;
    this.flushHandle(guest, pool, oid, index);
    return TMEM_S_OK;
  }

  /** A GET of a checked handle (tmem's or a device's): counted, the page (if any) copied to dst; returns it or NIL. */
  private readHandle(guest: Guest, pool: Pool, oid: Uint32Array, index: number, dst: Uint8Array, dstOffset: number): number {
    guest.stats[C.gets]++;
    pool.stats[C.gets]++;
    const p = this.lookup(pool, oid, index);
    if (p === NIL) return NIL;
    guest.stats[C.hits]++;
    pool.stats[C.hits]++;
    this.frames.copyOut(p, dst, dstOffset);
    return p;
  }

  /** A FLUSH of a checked handle (tmem's or a device's): counted, the page (if any) removed. */
  private flushHandle(guest: Guest, pool: Pool, oid: Uint32Array, index: number): void {
    guest.stats[C.flushPages]++;
    pool.stats[C.flushPages]++;
    const p = this.lookup(pool, oid, index);
    if (p !== NIL) {
      this.removePage(p, pool);
      guest.stats[C.flushedPages]++;
      pool.stats[C.flushedPages]++;
    }
  }

  /** FLUSH_OBJECT: empties every handle of (pool, oid); returns the pages flushed. */
  flushObject(g: number, poolId: number, oid: Uint32Array): number {
    const guest = this.guestAt(g);
    if (!guest) return TMEM_S_INVALID;
    const pool = this.poolAt(guest, poolId);
    if (!pool || oid.length < 6) return TMEM_S_INVALID;
    guest.stats[C.flushObjects]++;
    pool.stats[C.flushObjects]++;
    const o = this.index.findObject(pool.slot, oid);
    if (o === NIL) return 0;
    let n = 0;
    // removing the object's last page frees the object record (objPool = NIL)
    while (this.index.objPool[o] !== NIL) {
      this.removePage(this.index.objHead[o]!, pool);
      n++;
    }
    guest.stats[C.flushedPages] += n;
    pool.stats[C.flushedPages] += n;
    return n;
  }

  /** INFO: fills out with the store's fields of struct tmem_info (layout above). */
  info(g: number, out: Float64Array): void {
    out.fill(0, 0, Math.min(out.length, INFO_LENGTH));
    out[INFO_MAX_POOLS] = this.maxPoolsPerGuest;
    out[INFO_CAPACITY_PAGES] = this.limitPages;
    const guest = this.guestAt(g);
    if (!guest) return;
    out[INFO_PERSISTENT_LIMIT_PAGES] = guest.persistentLimit();
    out[INFO_PERSISTENT_PAGES] = guest.stats[C.persistentPages]!;
    let eph = guest.stats[C.ephemeralPages]!;
    // a shared pool may sit under several ids: count it once (linear: a mark per pass)
    const mark = ++this.infoPass;
    for (let id = 0; id < guest.pools.length; id++) {
      const p = guest.pools[id];
      if (p && p.shared && p.infoMark !== mark) {
        p.infoMark = mark;
        eph += p.pages();
      }
    }
    out[INFO_EPHEMERAL_PAGES] = eph;
  }

  // ---- control path --------------------------------------------------------

  /** Metadata bytes (index + LRU + pool/guest tables, not frames). */
  metaBytes(): number {
    return this.index.metaBytes() + this.lru.metaBytes() + (this.ownLists?.metaBytes() ?? 0);
  }

  /** Pages stored now, live and pending reclaim. */
  pagesStored(): number {
    return this.index.pagesUsed;
  }

  /** Everything the operator may want to see, as a plain object. */
  stats(): Record<string, unknown> {
    const h = this.host;
    const guests: Record<string, unknown>[] = [];
    for (const guest of this.guests) {
      if (!guest) continue;
      const pools: Record<string, unknown>[] = [];
      guest.pools.forEach((p, id) => {
        if (p) pools.push({ id, persistent: p.persistent, shared: p.shared, refs: p.refs, ...countersObject(p.stats) });
      });
      guests.push({
        id: guest.id,
        name: guest.name,
        frozen: guest.frozen,
        shareGroup: guest.shareGroup,
        maxmemPages: guest.maxmemPages,
        ramPages: guest.ramPages,
        ramFloorPages: guest.ramFloorPages,
        capPages: guest.capPages === Infinity ? null : guest.capPages,
        persistentLimitPages: guest.persistentLimit(),
        ...countersObject(guest.stats),
        pools,
        devicePools: guest.devicePools.flatMap((p, handle) => (p ? [{ handle, persistent: true, ...countersObject(p.stats) }] : [])),
      });
    }
    return {
      capacityPages: this.limitPages,
      capacityMaxPages: this.capacityPages,
      freePages: Math.max(0, this.limitPages - h.ephemeral - h.persistent - h.pending),
      ephemeralPages: h.ephemeral,
      persistentPages: h.persistent,
      reclaimPendingPages: h.pending,
      sharedPools: this.sharedPools.size,
      objects: this.index.objectsUsed,
      metaBytes: this.metaBytes(),
      frameBytes: this.frames.allocatedBytes(),
      guests,
    };
  }
}
