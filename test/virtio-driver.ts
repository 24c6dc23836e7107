// A minimal virtio driver for tests: guest RAM in a plain ArrayBuffer, a bump
// allocator, a split ring the "guest" fills, and tmem request builders.
// Imported by the virtio, device and dataplane tests; its own test checks it.
import t from 'tap';
import { GuestMemory } from '../host/virtio/guest-memory.js';
import { TMEM_REQ_SIZE } from '../shared/abi.js';

export const F_NEXT = 1;
export const F_WRITE = 2;
export const F_INDIRECT = 4;

export class FakeGuest {
  readonly ram: Uint8Array;
  readonly dv: DataView;
  readonly gpa: number;
  private top: number;
  mem: GuestMemory;

  /** RAM of `size` bytes at guest-physical `gpa`, seen through windows of windowSize bytes. */
  constructor(size = 1 << 20, opts: { gpa?: number; windowSize?: number; ram?: Uint8Array } = {}) {
    this.ram = opts.ram ?? new Uint8Array(size);
    this.dv = new DataView(this.ram.buffer, this.ram.byteOffset, this.ram.byteLength);
    this.gpa = opts.gpa ?? 0;
    this.top = 0;
    this.mem = GuestMemory.fromBuffers([{ guestPhysAddr: this.gpa, bytes: this.ram, windowSize: opts.windowSize ?? 1 << 30 }]);
  }

  alloc(len: number, align = 16): number {
    this.top = Math.ceil(this.top / align) * align;
    const a = this.top;
    this.top += len;
    if (this.top > this.ram.length) throw new Error('fake guest out of RAM');
    return this.gpa + a;
  }

  off(gpa: number): number {
    return gpa - this.gpa;
  }

  write(gpa: number, bytes: Uint8Array): void {
    this.ram.set(bytes, this.off(gpa));
  }

  read(gpa: number, len: number): Uint8Array {
    return this.ram.slice(this.off(gpa), this.off(gpa) + len);
  }

  /** Allocates a buffer holding `bytes` and returns its address. */
  put(bytes: Uint8Array, align = 16): number {
    const a = this.alloc(Math.max(bytes.length, 1), align);
    this.write(a, bytes);
    return a;
  }
}

export interface Desc {
  addr: number | bigint;
  len: number;
  flags?: number;
  next?: number;
}

/** Writes descriptor i of the table at `table`. */
export function writeDesc(g: FakeGuest, table: number, i: number, d: Desc): void {
  const o = g.off(table) + 16 * i;
  const a = BigInt(d.addr);
  g.dv.setUint32(o, Number(a & 0xffffffffn), true);
  g.dv.setUint32(o + 4, Number((a >> 32n) & 0xffffffffn), true);
  g.dv.setUint32(o + 8, d.len, true);
  g.dv.setUint16(o + 12, d.flags ?? 0, true);
  g.dv.setUint16(o + 14, d.next ?? 0, true);
}

/** Writes a chain [d0 -> d1 -> ...] into consecutive entries from `first`, linking with NEXT. */
export function writeChain(g: FakeGuest, table: number, first: number, descs: readonly Desc[], size: number): void {
  descs.forEach((d, k) => {
    const last = k === descs.length - 1;
    writeDesc(g, table, (first + k) % size, { ...d, flags: (d.flags ?? 0) | (last ? 0 : F_NEXT), next: last ? 0 : (first + k + 1) % size });
  });
}

/** The driver side of a split ring in a FakeGuest. */
export class DriverRing {
  readonly g: FakeGuest;
  readonly num: number;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  availIdx = 0;
  usedSeen = 0;
  private nextDesc = 0;

  constructor(g: FakeGuest, num: number) {
    this.g = g;
    this.num = num;
    this.desc = g.alloc(16 * num, 16);
    this.avail = g.alloc(6 + 2 * num, 2);
    this.used = g.alloc(6 + 8 * num, 4);
  }

  get addrs(): { desc: number; avail: number; used: number } {
    return { desc: this.desc, avail: this.avail, used: this.used };
  }

  /** Writes a chain into free descriptor slots and returns its head. */
  chain(descs: readonly Desc[]): number {
    const head = this.nextDesc;
    writeChain(this.g, this.desc, head, descs, this.num);
    this.nextDesc = (this.nextDesc + descs.length) % this.num;
    return head;
  }

  /** Puts a head in the avail ring and publishes the new avail idx. */
  publish(head: number): void {
    const o = this.g.off(this.avail);
    this.g.dv.setUint16(o + 4 + 2 * (this.availIdx % this.num), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.g.dv.setUint16(o + 2, this.availIdx, true);
  }

  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.g.dv.setUint16(this.g.off(this.avail) + 2, this.availIdx, true);
  }

  setAvailFlags(f: number): void {
    this.g.dv.setUint16(this.g.off(this.avail), f, true);
  }

  setUsedEvent(v: number): void {
    this.g.dv.setUint16(this.g.off(this.avail) + 4 + 2 * this.num, v, true);
  }

  usedIdx(): number {
    return this.g.dv.getUint16(this.g.off(this.used) + 2, true);
  }

  usedFlags(): number {
    return this.g.dv.getUint16(this.g.off(this.used), true);
  }

  availEvent(): number {
    return this.g.dv.getUint16(this.g.off(this.used) + 4 + 8 * this.num, true);
  }

  usedElem(i: number): { id: number; len: number } {
    const o = this.g.off(this.used) + 4 + 8 * (i % this.num);
    return { id: this.g.dv.getUint32(o, true), len: this.g.dv.getUint32(o + 4, true) };
  }

  /** Used elements not yet seen by the driver. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const now = this.usedIdx();
    while (this.usedSeen !== now) {
      out.push(this.usedElem(this.usedSeen));
      this.usedSeen = (this.usedSeen + 1) & 0xffff;
    }
    return out;
  }
}

export interface ReqFields {
  op: number;
  flags?: number;
  pool?: number;
  index?: number;
  oid?: readonly [bigint, bigint, bigint];
  tag?: bigint;
}

export function reqHeader(r: ReqFields): Uint8Array {
  const b = new Uint8Array(TMEM_REQ_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, r.op, true);
  v.setUint32(4, r.flags ?? 0, true);
  v.setUint32(8, r.pool ?? 0, true);
  v.setUint32(12, r.index ?? 0, true);
  const oid = r.oid ?? [0n, 0n, 0n];
  oid.forEach((x, k) => v.setBigUint64(16 + 8 * k, x, true));
  v.setBigUint64(40, r.tag ?? 0n, true);
  return b;
}

export function newPoolPayload(flags: number, pageSize = 4096, uuid = new Uint8Array(16)): Uint8Array {
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setUint32(0, flags, true);
  v.setUint32(4, pageSize, true);
  b.set(uuid, 8);
  return b;
}

export function readResp(g: FakeGuest, gpa: number): { status: number; reserved: number; value: bigint } {
  const o = g.off(gpa);
  return { status: g.dv.getInt32(o, true), reserved: g.dv.getUint32(o + 4, true), value: g.dv.getBigUint64(o + 8, true) };
}

export function pattern(seed: number, len = 4096): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

t.test('the test driver lays out a split ring as virtio says', async (t) => {
  const g = new FakeGuest(1 << 16);
  const r = new DriverRing(g, 8);
  t.equal(r.desc % 16, 0);
  t.equal(r.used % 4, 0);
  const h = r.chain([{ addr: 0x100, len: 4 }, { addr: 0x200, len: 8, flags: F_WRITE }]);
  r.publish(h);
  t.equal(g.dv.getUint16(g.off(r.avail) + 2, true), 1);
  t.equal(g.dv.getUint16(g.off(r.desc) + 12, true), F_NEXT);
  t.equal(g.dv.getUint16(g.off(r.desc) + 16 + 12, true), F_WRITE);
});
