// The disk's pages in the tmem store: a device pool of the VM's store guest
// (TmemStore.newDevicePool), so they count against the same maxmem limit,
// tmem-max cap and host capacity as the guest's frontswap pages and show in
// `tmemctl stats` (the guest's devicePools), while no tmem request reaches
// them: a guest driver's RESET or DESTROY_POOL, or the operator's flush of
// the VM's tmem pages, leaves the disk alone. Page p of the disk is index p.
//
// This adapter is the only code that knows how the disk sits in the store;
// block-store.ts sees put/get/flush by page number.
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

/** The part of TmemStore the adapter calls (host/tmem/store/store.ts, device pools). */
export interface PageStoreApi {
  newDevicePool(g: number): number;
  destroyDevicePool(g: number, h: number): number;
  putDevicePage(g: number, h: number, index: number, src: Uint8Array, srcOffset: number): number;
  getDevicePage(g: number, h: number, index: number, dst: Uint8Array, dstOffset: number): number;
  flushDevicePage(g: number, h: number, index: number): number;
}

export class StorePages implements BlockPages {
  /** The store overwrites a held device page in place and changes nothing when it refuses. */
  keptOld = true;
  readonly storeGuest: number;
  readonly poolId: number;
  private readonly store: PageStoreApi;

  /** Makes the disk's pool in guest g. Throws when the store refuses. */
  constructor(store: PageStoreApi, g: number) {
    const h = store.newDevicePool(g);
    if (h < 0) throw new Error(`the store refused a device pool for the disk (status ${h})`);
    this.store = store;
    this.storeGuest = g;
    this.poolId = h;
  }

  put(p: number, src: Uint8Array, off: number): number {
    return this.store.putDevicePage(this.storeGuest, this.poolId, p, src, off);
  }

  get(p: number, dst: Uint8Array, off: number): number {
    return this.store.getDevicePage(this.storeGuest, this.poolId, p, dst, off);
  }

  flush(p: number): void {
    this.store.flushDevicePage(this.storeGuest, this.poolId, p);
  }

  destroy(): void {
    this.store.destroyDevicePool(this.storeGuest, this.poolId);
  }
}
