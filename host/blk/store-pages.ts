// The disk's pages in the tmem store: one persistent pool of the VM's store
// guest, so they count against the same maxmem limit, tmem-max cap and host
// capacity as the guest's frontswap pages and show in `tmemctl stats` (the
// pool's persistentPages). Page p of the disk is (pool, oid 0, index p).
//
// This adapter is the only code that knows how the disk sits in the store;
// block-store.ts sees put/get/flush by page number.
import { TMEM_PAGE_SIZE, TMEM_POOL_PERSIST, TMEM_S_NOSPACE, TMEM_S_OK } from '../../shared/abi.js';
import { INFO_LENGTH, INFO_PERSISTENT_LIMIT_PAGES, INFO_PERSISTENT_PAGES } from '../tmem/store/store.js';

/** What block-store.ts needs from wherever RAM pages live. */
export interface BlockPages {
  /**
   * Stores 4096 bytes of src at src[off] as page p; `held` says the store
   * holds p now. Returns TMEM_S_OK or the store's refusal; `keptOld` then
   * says whether a held page's previous copy is still there.
   */
  put(p: number, src: Uint8Array, off: number, held: boolean): number;
  keptOld: boolean;
  /** Copies page p to dst[off]; TMEM_S_OK, or TMEM_S_MISS when the store does not hold it. */
  get(p: number, dst: Uint8Array, off: number): number;
  /** Drops page p (absent is fine). */
  flush(p: number): void;
  /** Drops every page (the disk goes away); the store frees them in its reclaim steps. */
  destroy(): void;
}

/** The part of TmemStore the adapter calls (host/store/store.ts). */
export interface PageStoreApi {
  newPool(g: number, flags: number, pageSize: number, uuid: Uint8Array, uuidOffset: number, sharedNegotiated: boolean): number;
  destroyPool(g: number, poolId: number): number;
  putPage(g: number, poolId: number, oid: Uint32Array, index: number, src: Uint8Array, srcOffset: number): number;
  getPage(g: number, poolId: number, oid: Uint32Array, index: number, reqFlags: number, dst: Uint8Array, dstOffset: number): number;
  flushPage(g: number, poolId: number, oid: Uint32Array, index: number): number;
  info(g: number, out: Float64Array): void;
}

const NO_UUID = new Uint8Array(16);

export class StorePages implements BlockPages {
  keptOld = true;
  readonly storeGuest: number;
  readonly poolId: number;
  private readonly store: PageStoreApi;
  private readonly oid = new Uint32Array(6);
  private readonly info = new Float64Array(INFO_LENGTH);

  /** Makes the disk's pool in guest g. Throws when the store refuses (no pool id left). */
  constructor(store: PageStoreApi, g: number) {
    const id = store.newPool(g, TMEM_POOL_PERSIST, TMEM_PAGE_SIZE, NO_UUID, 0, false);
    if (id < 0) throw new Error(`the store refused a persistent pool for the disk (status ${id})`);
    this.store = store;
    this.storeGuest = g;
    this.poolId = id;
  }

  put(p: number, src: Uint8Array, off: number, held: boolean): number {
    if (held) {
      // The store empties a handle whose overwrite it refuses (tmem's
      // put-put-get rule); the disk must keep the old page until the new one
      // is safe elsewhere, so an overwrite the limit would refuse is not tried.
      this.store.info(this.storeGuest, this.info);
      if (this.info[INFO_PERSISTENT_PAGES]! > this.info[INFO_PERSISTENT_LIMIT_PAGES]!) {
        this.keptOld = true;
        return TMEM_S_NOSPACE;
      }
    }
    const st = this.store.putPage(this.storeGuest, this.poolId, this.oid, p, src, off);
    this.keptOld = st === TMEM_S_OK || !held;
    return st;
  }

  get(p: number, dst: Uint8Array, off: number): number {
    return this.store.getPage(this.storeGuest, this.poolId, this.oid, p, 0, dst, off);
  }

  flush(p: number): void {
    this.store.flushPage(this.storeGuest, this.poolId, this.oid, p);
  }

  destroy(): void {
    this.store.destroyPool(this.storeGuest, this.poolId);
  }
}
