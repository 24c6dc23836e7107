// A model store for device and engine tests: just enough of TmemStore's
// contract (host/ARCHITECTURE.md) to see what the device asks of it, with
// knobs to make a put fail. Its own test checks the model.
import t from 'tap';
import { TMEM_POOL_PERSIST, TMEM_POOL_SHARED, TMEM_S_INVALID, TMEM_S_MISS, TMEM_S_OK, TMEM_REQF_EXCLUSIVE } from '../shared/abi.js';
import type { DeviceStore } from '../host/tmem/device.js';

export class FakeStore implements DeviceStore {
  pools = new Map<string, { persist: boolean }>();
  pages = new Map<string, Uint8Array>();
  nextPool = new Map<number, number>();
  /** When set, putPage returns this instead of storing. */
  putStatus: number | null = null;
  calls: string[] = [];
  guests = new Map<number, { name: string; ramPages: number; frozen: boolean }>();
  private nextGuest = 1;
  reclaimLeft = 0;

  private key(g: number, pool: number, oid: Uint32Array, index?: number): string {
    return `${g}/${pool}/${Array.from(oid).join('.')}` + (index === undefined ? '' : `/${index}`);
  }

  addGuest(o: { name: string; maxmemPages: number; ramPages: number; shareGroup: string | null }): number {
    const id = this.nextGuest++;
    this.guests.set(id, { name: o.name, ramPages: o.ramPages, frozen: false });
    return id;
  }
  setGuestRam(g: number, ramPages: number): void {
    this.guests.get(g)!.ramPages = ramPages;
  }
  setShareGroup(): void {}
  setFrozen(g: number, f: boolean): void {
    this.guests.get(g)!.frozen = f;
  }
  flushGuest(g: number): void {
    for (const k of [...this.pages.keys()]) if (k.startsWith(`${g}/`)) this.pages.delete(k);
  }
  removeGuest(g: number): void {
    this.flushGuest(g);
    this.guests.delete(g);
    this.reclaimLeft = 3;
  }
  reclaimStep(): number {
    if (this.reclaimLeft > 0) this.reclaimLeft--;
    return this.reclaimLeft;
  }
  stats(): Record<string, unknown> {
    return { pages: this.pages.size };
  }

  newPool(g: number, flags: number, pageSize: number, uuid: Uint8Array, uuidOffset: number, sharedNegotiated: boolean): number {
    this.calls.push(`newPool ${flags} ${pageSize} ${uuid[uuidOffset]} ${sharedNegotiated}`);
    if (pageSize !== 4096 || flags & ~3 || (flags & TMEM_POOL_SHARED && (flags & TMEM_POOL_PERSIST || !sharedNegotiated))) return TMEM_S_INVALID;
    const id = this.nextPool.get(g) ?? 0;
    this.nextPool.set(g, id + 1);
    this.pools.set(`${g}/${id}`, { persist: (flags & TMEM_POOL_PERSIST) !== 0 });
    return id;
  }
  destroyPool(g: number, poolId: number): number {
    if (!this.pools.delete(`${g}/${poolId}`)) return TMEM_S_INVALID;
    for (const k of [...this.pages.keys()]) if (k.startsWith(`${g}/${poolId}/`)) this.pages.delete(k);
    return TMEM_S_OK;
  }
  reset(g: number): number {
    let n = 0;
    for (const k of [...this.pools.keys()]) if (k.startsWith(`${g}/`)) n += this.destroyPool(g, Number(k.split('/')[1])) === TMEM_S_OK ? 1 : 0;
    return n;
  }
  putPage(g: number, poolId: number, oid: Uint32Array, index: number, src: Uint8Array, srcOffset: number): number {
    this.calls.push(`put ${poolId} ${index}`);
    if (!this.pools.has(`${g}/${poolId}`)) return TMEM_S_INVALID;
    if (this.putStatus !== null) {
      // as the store does: a failed PUT empties the handle (put-put-get)
      this.pages.delete(this.key(g, poolId, oid, index));
      return this.putStatus;
    }
    this.pages.set(this.key(g, poolId, oid, index), src.slice(srcOffset, srcOffset + 4096));
    return TMEM_S_OK;
  }
  putRefused(g: number, poolId: number, oid: Uint32Array, index: number): number {
    this.calls.push(`putRefused ${poolId} ${index}`);
    if (!this.pools.has(`${g}/${poolId}`)) return TMEM_S_INVALID;
    this.pages.delete(this.key(g, poolId, oid, index));
    return TMEM_S_INVALID;
  }
  getPage(g: number, poolId: number, oid: Uint32Array, index: number, reqFlags: number, dst: Uint8Array, dstOffset: number): number {
    const pool = this.pools.get(`${g}/${poolId}`);
    if (!pool) return TMEM_S_INVALID;
    const k = this.key(g, poolId, oid, index);
    const p = this.pages.get(k);
    if (!p) return TMEM_S_MISS;
    dst.set(p, dstOffset);
    if (!pool.persist || reqFlags & TMEM_REQF_EXCLUSIVE) this.pages.delete(k);
    return TMEM_S_OK;
  }
  flushPage(g: number, poolId: number, oid: Uint32Array, index: number): number {
    this.calls.push(`flush ${poolId} ${index}`);
    if (!this.pools.has(`${g}/${poolId}`)) return TMEM_S_INVALID;
    this.pages.delete(this.key(g, poolId, oid, index));
    return TMEM_S_OK;
  }
  flushObject(g: number, poolId: number, oid: Uint32Array): number {
    if (!this.pools.has(`${g}/${poolId}`)) return TMEM_S_INVALID;
    const pre = this.key(g, poolId, oid) + '/';
    let n = 0;
    for (const k of [...this.pages.keys()]) if (k.startsWith(pre)) n += this.pages.delete(k) ? 1 : 0;
    return n;
  }
  info(_g: number, out: Float64Array): void {
    // the layout of host/tmem/info-layout.ts
    out[0] = 16;
    out[1] = 0x100000;
    out[2] = 0x40000;
    out[3] = 5;
    out[4] = 0x123456789a;
  }
}

t.test('the fake store keeps pages per handle', async (t) => {
  const s = new FakeStore();
  const g = s.addGuest({ name: 'x', maxmemPages: 0, ramPages: 0, shareGroup: null });
  const p = s.newPool(g, TMEM_POOL_PERSIST, 4096, new Uint8Array(16), 0, false);
  const oid = new Uint32Array(6);
  t.equal(s.putPage(g, p, oid, 1, new Uint8Array(4096).fill(3), 0), TMEM_S_OK);
  const d = new Uint8Array(4096);
  t.equal(s.getPage(g, p, oid, 1, 0, d, 0), TMEM_S_OK);
  t.equal(d[0], 3);
});
