// The descriptor chain walker, one rule per test (host/virtio/chain.ts).
import t from 'tap';
import { ChainWalker } from '../host/virtio/chain.js';
import { GuestMemory, SegmentList } from '../host/virtio/guest-memory.js';
import { DriverRing, F_INDIRECT, F_NEXT, F_WRITE, FakeGuest, writeDesc, type Desc } from './virtio-driver.js';

const NUM = 16;

function setup(opts: { windowSize?: number; size?: number } = {}) {
  const g = new FakeGuest(opts.size ?? 1 << 20, { windowSize: opts.windowSize ?? 1 << 30 });
  const r = new DriverRing(g, NUM);
  const w = new ChainWalker();
  w.mem = g.mem;
  const view = new DataView(g.ram.buffer);
  const walk = (head: number, indirect = true) => w.walk(view, g.off(r.desc), NUM, head, indirect);
  return { g, r, w, walk };
}

function bytesOf(list: SegmentList): Uint8Array {
  const out = new Uint8Array(list.total);
  list.readInto(0, out, 0, list.total);
  return out;
}

t.test('a direct chain yields its readable then writable bytes', async (t) => {
  const { g, r, w, walk } = setup();
  const a = g.put(Uint8Array.from([1, 2, 3]));
  const b = g.put(Uint8Array.from([4, 5]));
  const c = g.alloc(16);
  const head = r.chain([{ addr: a, len: 3 }, { addr: b, len: 2 }, { addr: c, len: 16, flags: F_WRITE }]);
  t.ok(walk(head), w.error);
  t.same([...bytesOf(w.readable)], [1, 2, 3, 4, 5]);
  t.equal(w.readable.count, 2);
  t.equal(w.writable.total, 16);
  t.equal(w.descriptors, 3);
});

t.test('a loop ends when the ttl (queue size) runs out', async (t) => {
  const { g, r, w, walk } = setup();
  const a = g.alloc(16);
  writeDesc(g, r.desc, 0, { addr: a, len: 1, flags: F_NEXT, next: 1 });
  writeDesc(g, r.desc, 1, { addr: a, len: 1, flags: F_NEXT, next: 0 });
  t.notOk(walk(0));
  t.match(w.error, /longer than the queue size/);
  t.equal(w.descriptors, NUM);
});

t.test('a self loop ends too', async (t) => {
  const { g, r, w, walk } = setup();
  writeDesc(g, r.desc, 3, { addr: g.alloc(16), len: 16, flags: F_NEXT | F_WRITE, next: 3 });
  t.notOk(walk(3));
  t.match(w.error, /longer than the queue size/);
});

t.test('a chain of exactly the queue size is fine, one more is refused', async (t) => {
  const { g, r, w, walk } = setup();
  const a = g.alloc(16);
  const descs: Desc[] = Array.from({ length: NUM }, () => ({ addr: a, len: 1 }));
  const head = r.chain(descs);
  t.ok(walk(head), w.error);
  t.equal(w.readable.total, NUM);
  // indirect: a table of NUM entries is NUM buffers, a full-length chain (as
  // QEMU and libvhost-user accept it: Linux's virtio-blk sends seg_max + 2
  // entries); NUM + 1 entries: too long
  const ok = g.alloc(16 * NUM);
  for (let i = 0; i < NUM; i++) writeDesc(g, ok, i, { addr: a, len: 1, flags: i < NUM - 1 ? F_NEXT : 0, next: i + 1 });
  writeDesc(g, r.desc, 0, { addr: ok, len: 16 * NUM, flags: F_INDIRECT });
  t.ok(walk(0), w.error);
  t.equal(w.descriptors, NUM + 1);
  t.equal(w.readable.total, NUM);
  const long = g.alloc(16 * (NUM + 1));
  for (let i = 0; i <= NUM; i++) writeDesc(g, long, i, { addr: a, len: 1, flags: i < NUM ? F_NEXT : 0, next: i + 1 });
  writeDesc(g, r.desc, 0, { addr: long, len: 16 * (NUM + 1), flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /indirect table .* longer than the queue size/);
});

t.test('a loop inside an indirect table ends', async (t) => {
  const { g, r, w, walk } = setup();
  const tbl = g.alloc(32);
  writeDesc(g, tbl, 0, { addr: g.alloc(16), len: 4, flags: F_NEXT, next: 1 });
  writeDesc(g, tbl, 1, { addr: g.alloc(16), len: 4, flags: F_NEXT, next: 0 });
  writeDesc(g, r.desc, 0, { addr: tbl, len: 32, flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /longer than the queue size/);
});

t.test('an indirect table is walked like a chain', async (t) => {
  const { g, r, w, walk } = setup();
  const a = g.put(Uint8Array.from([9, 8, 7]));
  const resp = g.alloc(16);
  const tbl = g.alloc(48);
  writeDesc(g, tbl, 0, { addr: a, len: 3, flags: F_NEXT, next: 2 });
  writeDesc(g, tbl, 2, { addr: resp, len: 16, flags: F_WRITE });
  writeDesc(g, r.desc, 5, { addr: tbl, len: 48, flags: F_INDIRECT });
  t.ok(walk(5), w.error);
  t.same([...bytesOf(w.readable)], [9, 8, 7]);
  t.equal(w.writable.total, 16);
});

t.test('direct descriptors may precede the indirect one', async (t) => {
  const { g, r, w, walk } = setup();
  const a = g.put(Uint8Array.from([1]));
  const tbl = g.alloc(16);
  writeDesc(g, tbl, 0, { addr: g.alloc(16), len: 16, flags: F_WRITE });
  writeDesc(g, r.desc, 0, { addr: a, len: 1, flags: F_NEXT, next: 1 });
  writeDesc(g, r.desc, 1, { addr: tbl, len: 16, flags: F_INDIRECT });
  t.ok(walk(0), w.error);
  t.equal(w.readable.total, 1);
  t.equal(w.writable.total, 16);
});

t.test('a nested indirect table is refused', async (t) => {
  const { g, r, w, walk } = setup();
  const inner = g.alloc(16);
  writeDesc(g, inner, 0, { addr: g.alloc(16), len: 16, flags: F_WRITE });
  const outer = g.alloc(16);
  writeDesc(g, outer, 0, { addr: inner, len: 16, flags: F_INDIRECT });
  writeDesc(g, r.desc, 0, { addr: outer, len: 16, flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /nested/);
});

t.test('an empty indirect table is refused', async (t) => {
  const { g, r, w, walk } = setup();
  writeDesc(g, r.desc, 0, { addr: g.alloc(16), len: 0, flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /empty/);
});

t.test('an indirect table that is not a multiple of 16 bytes is refused', async (t) => {
  const { g, r, w, walk } = setup();
  writeDesc(g, r.desc, 0, { addr: g.alloc(32), len: 24, flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /multiple of 16/);
});

t.test('an indirect table outside guest RAM is refused', async (t) => {
  const { r, w, walk, g } = setup();
  writeDesc(g, r.desc, 0, { addr: g.ram.length - 16, len: 32, flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /outside guest memory/);
});

t.test('indirect descriptors need VIRTIO_RING_F_INDIRECT_DESC', async (t) => {
  const { g, r, w, walk } = setup();
  const tbl = g.alloc(16);
  writeDesc(g, tbl, 0, { addr: g.alloc(16), len: 16, flags: F_WRITE });
  writeDesc(g, r.desc, 0, { addr: tbl, len: 16, flags: F_INDIRECT });
  t.notOk(walk(0, false));
  t.match(w.error, /INDIRECT_DESC/);
  t.ok(walk(0, true));
});

t.test('an indirect table split over windows is read correctly', async (t) => {
  const { g, r, w, walk } = setup({ windowSize: 4096 });
  g.alloc(4096 - 16 - g.off(g.alloc(0)) % 4096, 1); // place the table across a window boundary
  const tbl = g.alloc(32, 16);
  t.equal(Math.floor(g.off(tbl) / 4096) !== Math.floor((g.off(tbl) + 31) / 4096), true, 'table crosses a window');
  const a = g.put(Uint8Array.from([42]));
  writeDesc(g, tbl, 0, { addr: a, len: 1, flags: F_NEXT, next: 1 });
  writeDesc(g, tbl, 1, { addr: g.alloc(16), len: 16, flags: F_WRITE });
  writeDesc(g, r.desc, 0, { addr: tbl, len: 32, flags: F_INDIRECT });
  t.ok(walk(0), w.error);
  t.same([...bytesOf(w.readable)], [42]);
});

t.test('a readable descriptor after a writable one is refused', async (t) => {
  const { g, r, w, walk } = setup();
  const head = r.chain([
    { addr: g.alloc(16), len: 16, flags: F_WRITE },
    { addr: g.alloc(16), len: 16 },
  ]);
  t.notOk(walk(head));
  t.match(w.error, /readable descriptor after a writable/);
});

t.test('the readable-after-writable rule holds inside an indirect table', async (t) => {
  const { g, r, w, walk } = setup();
  const tbl = g.alloc(32);
  writeDesc(g, tbl, 0, { addr: g.alloc(16), len: 16, flags: F_WRITE | F_NEXT, next: 1 });
  writeDesc(g, tbl, 1, { addr: g.alloc(16), len: 4 });
  writeDesc(g, r.desc, 0, { addr: tbl, len: 32, flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /readable descriptor after a writable/);
});

t.test('a descriptor outside guest RAM is refused', async (t) => {
  const { g, r, w, walk } = setup({ size: 1 << 16 });
  let head = r.chain([{ addr: 1 << 16, len: 1 }]);
  t.notOk(walk(head));
  t.match(w.error, /outside guest memory/);
  head = r.chain([{ addr: (1 << 16) - 8, len: 16, flags: F_WRITE }]); // straddles the end
  t.notOk(walk(head));
  head = r.chain([{ addr: 0x1_0000_0000_0000n, len: 16 }]);
  t.notOk(walk(head));
  t.ok(g.ram.every((x, i) => i < g.off(r.used) + 6 + 8 * NUM || x === 0), 'nothing written');
});

t.test('a range that wraps the 64-bit address space is refused', async (t) => {
  const { r, w, walk } = setup();
  const head = r.chain([{ addr: 0xffff_ffff_ffff_fff0n, len: 0x20, flags: F_WRITE }]);
  t.notOk(walk(head));
  t.match(w.error, /outside guest memory/);
});

t.test('a range falling in a hole between regions is refused; contiguous regions are joined', async (t) => {
  const a = new Uint8Array(4096);
  const b = new Uint8Array(4096);
  const c = new Uint8Array(4096);
  const mem = GuestMemory.fromBuffers([
    { guestPhysAddr: 0, bytes: a },
    { guestPhysAddr: 4096, bytes: b },
    { guestPhysAddr: 3 * 4096, bytes: c },
  ]);
  const list = new SegmentList(8);
  t.ok(mem.translate(4000, 200, list), 'across two contiguous regions');
  t.equal(list.count, 2);
  t.equal(list.total, 200);
  list.clear();
  t.notOk(mem.translate(2 * 4096 - 10, 20, list), 'into the hole');
  list.clear();
  t.notOk(mem.translate(2 * 4096 + 5, 1, list), 'inside the hole');
  list.clear();
  t.ok(mem.translate(3 * 4096, 4096, list));
  t.notOk(mem.translate(3 * 4096, 4097, list), 'past the last region');
});

t.test('userspace addresses translate through userspace_addr', async (t) => {
  const ram = new Uint8Array(8192);
  ram[100] = 7;
  const mem = GuestMemory.fromBuffers([{ guestPhysAddr: 0x10000, userspaceAddr: 0x7f0000000000, bytes: ram }]);
  const s = mem.slice(0x7f0000000000 + 100, 1, true);
  t.ok(s);
  t.equal(s!.bytes[s!.offset], 7);
  t.equal(mem.slice(0x10000 + 100, 1, true), null, 'a GPA is not a user address');
  t.equal(mem.slice(0x10000 + 100, 1, false)!.bytes[100], 7);
});

t.test('overlapping regions are refused when the table is built', async (t) => {
  t.throws(() =>
    GuestMemory.fromBuffers([
      { guestPhysAddr: 0, bytes: new Uint8Array(8192) },
      { guestPhysAddr: 4096, userspaceAddr: 1 << 20, bytes: new Uint8Array(4096) },
    ]),
  );
});

t.test('zero-length descriptors carry no bytes and their address is not used', async (t) => {
  const { g, r, w, walk } = setup();
  const a = g.put(Uint8Array.from([5]));
  const head = r.chain([
    { addr: 0xdead_beef_0000n, len: 0 },
    { addr: a, len: 1 },
    { addr: 0xffff_ffff_ffff_ffffn, len: 0, flags: F_WRITE },
    { addr: g.alloc(16), len: 16, flags: F_WRITE },
  ]);
  t.ok(walk(head), w.error);
  t.equal(w.readable.count, 1);
  t.equal(w.writable.count, 1);
  t.same([...bytesOf(w.readable)], [5]);
});

t.test('bytes split over many descriptors arrive in order', async (t) => {
  const { g, r, w, walk } = setup();
  const descs: Desc[] = [];
  for (let i = 0; i < NUM - 1; i++) descs.push({ addr: g.put(Uint8Array.from([i, i + 100])), len: 2 });
  descs.push({ addr: g.alloc(16), len: 16, flags: F_WRITE });
  t.ok(walk(r.chain(descs)), w.error);
  const exp: number[] = [];
  for (let i = 0; i < NUM - 1; i++) exp.push(i, i + 100);
  t.same([...bytesOf(w.readable)], exp);
});

t.test('a descriptor crossing a window boundary becomes two segments', async (t) => {
  const { g, r, w, walk } = setup({ windowSize: 4096 });
  const base = g.alloc(8192, 4096);
  g.ram[g.off(base) + 4095] = 1;
  g.ram[g.off(base) + 4096] = 2;
  const head = r.chain([{ addr: base + 4095, len: 2 }, { addr: g.alloc(16), len: 16, flags: F_WRITE }]);
  t.ok(walk(head), w.error);
  t.equal(w.readable.count, 2);
  t.same([...bytesOf(w.readable)], [1, 2]);
});

t.test('head and next indices must lie inside their table', async (t) => {
  const { g, r, w, walk } = setup();
  t.notOk(walk(NUM));
  t.match(w.error, /head/);
  writeDesc(g, r.desc, 0, { addr: g.alloc(16), len: 1, flags: F_NEXT, next: NUM });
  t.notOk(walk(0));
  t.match(w.error, /next index/);
  const tbl = g.alloc(16);
  writeDesc(g, tbl, 0, { addr: g.alloc(16), len: 1, flags: F_NEXT, next: 1 });
  writeDesc(g, r.desc, 0, { addr: tbl, len: 16, flags: F_INDIRECT });
  t.notOk(walk(0));
  t.match(w.error, /indirect table/);
});

t.test('a walk without guest memory is refused', async (t) => {
  const w = new ChainWalker();
  t.notOk(w.walk(new DataView(new ArrayBuffer(256)), 0, 16, 0, true));
});

t.test('more segments than the list holds is a refusal, not an overflow', async (t) => {
  const g = new FakeGuest(1 << 16, { windowSize: 16 });
  const r = new DriverRing(g, NUM);
  const w = new ChainWalker(4);
  w.mem = g.mem;
  const head = r.chain([{ addr: g.alloc(128), len: 128 }]);
  t.notOk(w.walk(new DataView(g.ram.buffer), g.off(r.desc), NUM, head, true));
  t.match(w.error, /segments/);
});
