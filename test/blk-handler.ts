// tmem-blk's request handler (host/blk/blk-handler.ts) against VIRTIO 1.2
// §5.2.6 and docs/tmem-blk.md: every request type, every bad request (status
// and used length), sub-page and unaligned I/O by read-modify-write checked
// against a shadow copy of the disk, data split over descriptors anywhere,
// discard and write zeroes giving pages back to the store. Chains are real:
// descriptors in a split ring of guest RAM, walked by the ChainWalker, so the
// handler sees the SegmentLists the worker gives it. The store is the real
// TmemStore.
import t from 'tap';
import { ChainWalker } from '../host/virtio/chain.js';
import { TmemStore } from '../host/tmem/store/store.js';
import { BlockStore } from '../host/blk/block-store.js';
import { StorePages } from '../host/blk/store-pages.js';
import { BlkHandler } from '../host/blk/blk-handler.js';
import { PageBitmap } from '../host/blk/page-bitmap.js';
import { BC } from '../host/blk/counters.js';
import {
  BLK_FEATURES,
  BLK_MAX_DWZ_SECTORS,
  BLK_MAX_DWZ_SEG,
  BLK_SEG_MAX,
  bit,
  blkConfigSpace,
  checkBlkSize,
} from '../host/blk/blk-config.js';
import {
  BLK_CONFIG_SIZE,
  CFG_BLK_SIZE,
  CFG_CAPACITY,
  CFG_DISCARD_SECTOR_ALIGNMENT,
  CFG_MAX_DISCARD_SECTORS,
  CFG_MAX_DISCARD_SEG,
  CFG_MAX_WRITE_ZEROES_SECTORS,
  CFG_MAX_WRITE_ZEROES_SEG,
  CFG_NUM_QUEUES,
  CFG_SEG_MAX,
  CFG_WRITE_ZEROES_MAY_UNMAP,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_GET_LIFETIME,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_F_VERSION_1,
} from '../host/blk/virtio-blk.js';
import { DriverRing, F_INDIRECT, F_WRITE, FakeGuest, pattern, writeDesc, type Desc } from './virtio-driver.js';

const PAGE = 4096;
const STATUS_FILL = 0xee;

/** Deterministic pseudo-random numbers (xorshift32). */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

interface ReqOpts {
  /** Bytes written by the device: data area length for IN / GET_ID (default: computed from sectors). */
  inLen?: number;
  /** Data the driver sends after the header (OUT) or segments (DISCARD, WRITE_ZEROES). */
  out?: Uint8Array;
  /** Cut the data area (either direction) into descriptors of these lengths, cycling. */
  split?: number[];
  /** Status area length (default 1). */
  statusLen?: number;
  /** Header bytes sent (default 16). */
  hdrLen?: number;
  /** Send the whole chain through one indirect table. */
  indirect?: boolean;
  reserved?: number;
}

function setup(o: { diskPages?: number; capacityPages?: number; maxmemPages?: number; serial?: string; queueSize?: number } = {}) {
  const store = new TmemStore({ capacityPages: o.capacityPages ?? 4096, maxPoolsPerGuest: 16 });
  const g = store.addGuest({ name: 'vm', maxmemPages: o.maxmemPages ?? 1 << 20, ramPages: 0, shareGroup: null });
  const pages = new StorePages(store, g);
  const bs = new BlockStore(pages, o.diskPages ?? 64, null);
  const h = new BlkHandler(bs, o.serial ?? 'tmem-blk-test-serial-long');
  const guest = new FakeGuest(4 << 20);
  const view = new DataView(guest.ram.buffer);
  let ring = new DriverRing(guest, o.queueSize ?? 256);
  const walker = new ChainWalker();
  walker.mem = guest.mem;
  // fixed areas reused by every request
  const hdrA = guest.alloc(64, 16);
  const dataA = guest.alloc(1 << 20, 4096);
  const statA = guest.alloc(64, 16);
  const indA = guest.alloc(16 * 256, 16);

  const run = (descs: Desc[], indirect: boolean): number => {
    let head: number;
    if (indirect) {
      descs.forEach((d, k) => writeDesc(guest, indA, k, { ...d, flags: (d.flags ?? 0) | (k < descs.length - 1 ? 1 : 0), next: k + 1 }));
      head = ring.chain([{ addr: indA, len: 16 * descs.length, flags: F_INDIRECT }]);
    } else head = ring.chain(descs);
    if (!walker.walk(view, guest.off(ring.desc), ring.num, head, true)) throw new Error(walker.error);
    return h.handle(walker.readable, walker.writable);
  };

  /** One request; returns the used length, the status byte and the bytes the device wrote into the data area. */
  const req = (type: number, sector: bigint | number, opts: ReqOpts = {}) => {
    const hdr = new Uint8Array(16);
    const hv = new DataView(hdr.buffer);
    hv.setUint32(0, type, true);
    hv.setUint32(4, opts.reserved ?? 0, true);
    hv.setBigUint64(8, BigInt(sector), true);
    const hdrLen = opts.hdrLen ?? 16;
    guest.write(hdrA, hdr.subarray(0, Math.min(16, hdrLen)));
    const descs: Desc[] = [];
    if (hdrLen > 0) descs.push({ addr: hdrA, len: hdrLen });
    const cut = (len: number, flags: number) => {
      const sp = opts.split ?? [len];
      let at = 0;
      let k = 0;
      while (at < len) {
        const n = Math.min(sp[k++ % sp.length]!, len - at);
        descs.push({ addr: dataA + at, len: n, flags });
        at += n;
      }
    };
    let inLen = 0;
    if (opts.out) {
      guest.write(dataA, opts.out);
      cut(opts.out.length, 0);
    } else {
      inLen = opts.inLen ?? 0;
      guest.ram.fill(0xaa, guest.off(dataA), guest.off(dataA) + inLen);
      cut(inLen, F_WRITE);
    }
    const sl = opts.statusLen ?? 1;
    guest.ram.fill(STATUS_FILL, guest.off(statA), guest.off(statA) + 64);
    if (sl > 0) descs.push({ addr: statA, len: sl, flags: F_WRITE });
    const used = run(descs, opts.indirect === true);
    return { used, status: sl > 0 ? guest.ram[guest.off(statA) + sl - 1]! : -1, data: guest.read(dataA, inLen) };
  };
  const write = (sector: number, data: Uint8Array, opts: ReqOpts = {}) => req(VIRTIO_BLK_T_OUT, sector, { ...opts, out: data });
  const read = (sector: number, len: number, opts: ReqOpts = {}) => req(VIRTIO_BLK_T_IN, sector, { ...opts, inLen: len });
  const seg = (list: { sector: number | bigint; num: number; flags?: number }[]) => {
    const b = new Uint8Array(16 * list.length);
    const v = new DataView(b.buffer);
    list.forEach((s, k) => {
      v.setBigUint64(16 * k, BigInt(s.sector), true);
      v.setUint32(16 * k + 8, s.num, true);
      v.setUint32(16 * k + 12, s.flags ?? 0, true);
    });
    return b;
  };
  const persistentPages = () => (store.stats() as { persistentPages: number }).persistentPages;
  const newRing = () => {
    ring = new DriverRing(guest, o.queueSize ?? 256);
  };
  return { store, g, pages, bs, h, guest, req, write, read, seg, persistentPages, newRing };
}

t.test('features and config space: what QEMU reads with GET_CONFIG', async (t) => {
  for (const b of [VIRTIO_F_VERSION_1, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES]) {
    t.not(BLK_FEATURES & bit(b), 0n, `feature bit ${b} offered`);
  }
  t.equal(BLK_FEATURES & bit(VIRTIO_BLK_F_RO), 0n, 'not read-only');
  const c = blkConfigSpace(8 * 2 ** 30, 4);
  t.equal(c.length, BLK_CONFIG_SIZE);
  const v = new DataView(c.buffer);
  t.equal(v.getBigUint64(CFG_CAPACITY, true), BigInt((8 * 2 ** 30) / 512), 'capacity in 512-byte sectors');
  t.equal(v.getUint32(CFG_SEG_MAX, true), BLK_SEG_MAX);
  t.equal(v.getUint32(CFG_BLK_SIZE, true), 4096);
  t.equal(v.getUint16(CFG_NUM_QUEUES, true), 4);
  t.equal(v.getUint32(CFG_MAX_DISCARD_SECTORS, true), BLK_MAX_DWZ_SECTORS);
  t.equal(v.getUint32(CFG_MAX_DISCARD_SEG, true), BLK_MAX_DWZ_SEG);
  t.equal(v.getUint32(CFG_DISCARD_SECTOR_ALIGNMENT, true), 8);
  t.equal(v.getUint32(CFG_MAX_WRITE_ZEROES_SECTORS, true), BLK_MAX_DWZ_SECTORS);
  t.equal(v.getUint32(CFG_MAX_WRITE_ZEROES_SEG, true), BLK_MAX_DWZ_SEG);
  t.equal(v.getUint8(CFG_WRITE_ZEROES_MAY_UNMAP), 1);
  t.equal(checkBlkSize(8 * 2 ** 30), null);
  t.match(checkBlkSize(4097), /multiple of 4096/);
  t.match(checkBlkSize(0), /outside/);
  t.match(checkBlkSize(2 ** 41), /outside/);
});

t.test('OUT then IN of whole pages: exact data, used lengths, counted in the store', async (t) => {
  const s = setup();
  const data = pattern(1, 3 * PAGE);
  const w = s.write(8, data);
  t.same([w.used, w.status, s.h.refused], [1, VIRTIO_BLK_S_OK, false], 'OUT: status only');
  t.equal(s.persistentPages(), 3, 'three pages in the store, persistent');
  t.equal(s.bs.ramPages, 3);
  const r = s.read(8, 3 * PAGE);
  t.same([r.used, r.status], [3 * PAGE + 1, VIRTIO_BLK_S_OK], 'IN: data + status');
  t.ok(Buffer.from(r.data).equals(Buffer.from(data)), 'read back exact');
  const z = s.read(64, PAGE);
  t.same([z.used, z.status], [PAGE + 1, VIRTIO_BLK_S_OK]);
  t.ok(z.data.every((x) => x === 0), 'never written: zeros');
  const e = s.read(0, 0);
  t.same([e.used, e.status], [1, VIRTIO_BLK_S_OK], 'zero-length IN');
  // the same through one indirect table and split over odd descriptor lengths
  const d2 = pattern(2, 2 * PAGE);
  t.equal(s.write(40, d2, { indirect: true, split: [512, 1000, 3000, 24] }).status, VIRTIO_BLK_S_OK);
  const r2 = s.read(40, 2 * PAGE, { split: [7, 4089, 100] });
  t.ok(Buffer.from(r2.data).equals(Buffer.from(d2)), 'gathered and scattered copies exact');
  t.equal(r2.used, 2 * PAGE + 1);
});

t.test('sub-page and unaligned I/O: read-modify-write against a shadow disk', async (t) => {
  const pages = 32;
  const s = setup({ diskPages: pages });
  const shadow = new Uint8Array(pages * PAGE);
  const rand = rng(7);
  let ops = 0;
  for (let i = 0; i < 400; i++) {
    const sectors = 1 + rand(40);
    const sector = rand(pages * 8 - sectors + 1);
    const split = rand(3) === 0 ? [512 * (1 + rand(8)), 1 + rand(5000)] : undefined;
    if (rand(2) === 0) {
      const data = pattern(1000 + i, sectors * 512);
      const w = s.write(sector, data, { split });
      if (w.status !== VIRTIO_BLK_S_OK || w.used !== 1) {
        t.fail(`write ${sector}+${sectors}: status ${w.status} used ${w.used}`);
        return;
      }
      shadow.set(data, sector * 512);
    } else {
      const r = s.read(sector, sectors * 512, { split });
      if (r.status !== VIRTIO_BLK_S_OK || r.used !== sectors * 512 + 1 || !Buffer.from(r.data).equals(Buffer.from(shadow.subarray(sector * 512, (sector + sectors) * 512)))) {
        t.fail(`read ${sector}+${sectors}: status ${r.status} used ${r.used} or wrong data`);
        return;
      }
    }
    ops++;
  }
  t.equal(ops, 400, '400 random requests served exactly');
  t.ok(s.h.counters[BC.rmwPages] > 50, `sub-page writes merged (${s.h.counters[BC.rmwPages]} pages)`);
  const all = s.read(0, pages * PAGE);
  t.ok(Buffer.from(all.data).equals(Buffer.from(shadow)), 'the whole disk equals the shadow');
  // one sector in the middle of a page: its neighbours keep their bytes
  const before = s.read(16, PAGE).data;
  t.equal(s.write(19, pattern(99, 512)).status, VIRTIO_BLK_S_OK);
  const after = s.read(16, PAGE).data;
  t.ok(Buffer.from(after.subarray(0, 1536)).equals(Buffer.from(before.subarray(0, 1536))), 'sectors before kept');
  t.ok(Buffer.from(after.subarray(1536, 2048)).equals(Buffer.from(pattern(99, 512))), 'the sector written');
  t.ok(Buffer.from(after.subarray(2048)).equals(Buffer.from(before.subarray(2048))), 'sectors after kept');
});

t.test('FLUSH, GET_ID, unknown types', async (t) => {
  const s = setup({ serial: 'tmem-blk-vm' });
  const f = s.req(VIRTIO_BLK_T_FLUSH, 0);
  t.same([f.used, f.status], [1, VIRTIO_BLK_S_OK], 'FLUSH');
  const id = s.req(VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 });
  t.same([id.used, id.status], [21, VIRTIO_BLK_S_OK], 'GET_ID: 20 bytes + status');
  const want = new Uint8Array(20);
  want.set(Buffer.from('tmem-blk-vm'));
  t.same([...id.data], [...want], 'serial, NUL padded');
  const short = s.req(VIRTIO_BLK_T_GET_ID, 0, { inLen: 4 });
  t.same([short.used, short.status, Buffer.from(short.data).toString()], [5, VIRTIO_BLK_S_OK, 'tmem'], 'a shorter buffer gets a prefix');
  const long = setup({ serial: 'x'.repeat(30) });
  const l = long.req(VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 });
  t.equal(Buffer.from(l.data).toString(), 'x'.repeat(20), 'a 20-byte serial has no NUL');
  for (const type of [VIRTIO_BLK_T_GET_LIFETIME, 2, 3, 99, 0x80000001]) {
    const u = s.req(type, 0);
    t.same([u.used, u.status, s.h.refused], [1, VIRTIO_BLK_S_UNSUPP, true], `type ${type}: UNSUPP, refused`);
  }
  t.equal(s.h.counters[BC.statusUnsupp], 5);
});

t.test('bad requests: IOERR with only the status written, nothing changed', async (t) => {
  const s = setup({ diskPages: 4 });
  const keep = pattern(5, 4 * PAGE);
  s.write(0, keep);
  const io = (r: { used: number; status: number }, what: string) => t.same([r.used, r.status, s.h.refused], [1, VIRTIO_BLK_S_IOERR, true], `${what} (refused)`);
  io(s.read(32, 512), 'IN past the end');
  io(s.read(31, 1024), 'IN crossing the end');
  io(s.read(0, 1000), 'IN of a length that is not whole sectors');
  io(s.write(32, pattern(1, 512)), 'OUT past the end');
  io(s.write(30, pattern(1, 2048)), 'OUT crossing the end');
  io(s.write(0, pattern(1, 700)), 'OUT of a length that is not whole sectors');
  io(s.req(VIRTIO_BLK_T_IN, 2n ** 63n, { inLen: 512 }), 'IN at sector 2^63');
  io(s.req(VIRTIO_BLK_T_OUT, 2n ** 54n - 1n, { out: pattern(1, 512) }), 'OUT at a sector whose byte offset passes 2^53');
  io(s.req(VIRTIO_BLK_T_IN, 0, { hdrLen: 8, inLen: 512 }), 'header of 8 bytes');
  io(s.req(VIRTIO_BLK_T_IN, 0, { hdrLen: 0, inLen: 512 }), 'no header at all');
  io(s.req(VIRTIO_BLK_T_IN, 0, { out: pattern(1, 512) }), 'IN with readable data after the header');
  io(s.req(VIRTIO_BLK_T_OUT, 0, { out: pattern(1, 512), statusLen: 2 }), 'OUT with 2 writable bytes');
  io(s.req(VIRTIO_BLK_T_FLUSH, 0, { statusLen: 4 }), 'FLUSH with 4 writable bytes');
  io(s.req(VIRTIO_BLK_T_FLUSH, 0, { out: pattern(1, 16) }), 'FLUSH with data');
  io(s.req(VIRTIO_BLK_T_GET_ID, 0, { out: pattern(1, 16), inLen: 0 }), 'GET_ID with data');
  // the status is the last writable byte, whatever the lengths
  const r = s.req(VIRTIO_BLK_T_OUT, 0, { out: pattern(1, 512), statusLen: 3 });
  t.same(s.guest.read(0, 0).length, 0);
  t.equal(r.status, VIRTIO_BLK_S_IOERR, 'status in the last of 3 writable bytes');
  const none = s.req(VIRTIO_BLK_T_IN, 0, { statusLen: 0 });
  t.equal(none.used, 0, 'no writable byte: unanswerable, used length 0');
  t.equal(s.h.counters[BC.unanswerable], 1);
  t.ok(s.h.error.length > 0, 'the reason is kept');
  const back = s.read(0, 4 * PAGE);
  t.ok(Buffer.from(back.data).equals(Buffer.from(keep)), 'the disk is unchanged by every refused request');
});

t.test('DISCARD: whole pages go back to the store, partial pages keep their data', async (t) => {
  const s = setup({ diskPages: 64 });
  const data = pattern(3, 16 * PAGE);
  s.write(0, data);
  t.equal(s.persistentPages(), 16);
  const d = s.req(VIRTIO_BLK_T_DISCARD, 0, { out: s.seg([{ sector: 8, num: 32 }]) });
  t.same([d.used, d.status], [1, VIRTIO_BLK_S_OK]);
  t.equal(s.persistentPages(), 12, 'four pages freed in the store');
  const r = s.read(8, 4 * PAGE);
  t.ok(r.data.every((x) => x === 0), 'discarded pages read as zeros');
  // sectors 44..60: page 5 partly (44-47), page 6 whole (48-55), page 7 partly (56-59)
  t.equal(s.req(VIRTIO_BLK_T_DISCARD, 0, { out: s.seg([{ sector: 44, num: 16 }]) }).status, VIRTIO_BLK_S_OK);
  t.equal(s.persistentPages(), 11, 'only the whole page freed');
  t.ok(Buffer.from(s.read(40, PAGE).data).equals(Buffer.from(data.subarray(5 * PAGE, 6 * PAGE))), 'partly discarded page kept');
  t.ok(Buffer.from(s.read(56, PAGE).data).equals(Buffer.from(data.subarray(7 * PAGE, 8 * PAGE))), 'partly discarded page kept');
  // several segments in one request
  const m = s.req(VIRTIO_BLK_T_DISCARD, 0, { out: s.seg([{ sector: 64, num: 8 }, { sector: 80, num: 16 }, { sector: 0, num: 0 }]) });
  t.equal(m.status, VIRTIO_BLK_S_OK);
  t.equal(s.persistentPages(), 8);
  t.equal(s.bs.counters[BC.freedPages]! > 0, true);
});

t.test('DISCARD and WRITE_ZEROES refusals (flags UNSUPP, sizes IOERR) change nothing', async (t) => {
  const s = setup({ diskPages: 65536 }); // exactly BLK_MAX_DWZ_SEG segments of BLK_MAX_DWZ_SECTORS
  const data = pattern(4, 8 * PAGE);
  s.write(0, data);
  const both = [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES];
  for (const type of both) {
    const st = (segs: Uint8Array) => s.req(type, 0, { out: segs }).status;
    t.equal(st(s.seg([{ sector: 0, num: 8, flags: 2 }])), VIRTIO_BLK_S_UNSUPP, `${type}: unknown flag`);
    t.equal(st(s.seg([{ sector: 0, num: 8 }, { sector: 8, num: 8, flags: 0x80 }])), VIRTIO_BLK_S_UNSUPP, `${type}: unknown flag in segment 2`);
    t.equal(st(s.seg([{ sector: 0, num: BLK_MAX_DWZ_SECTORS + 8 }])), VIRTIO_BLK_S_IOERR, `${type}: more sectors than the max`);
    t.equal(st(s.seg(Array.from({ length: BLK_MAX_DWZ_SEG + 1 }, (_, k) => ({ sector: 8 * k, num: 8 })))), VIRTIO_BLK_S_IOERR, `${type}: more segments than the max`);
    t.equal(st(s.seg([{ sector: 65536 * 8 - 8, num: 16 }])), VIRTIO_BLK_S_IOERR, `${type}: past the end`);
    t.equal(st(s.seg([{ sector: 2n ** 63n, num: 8 }])), VIRTIO_BLK_S_IOERR, `${type}: sector 2^63`);
    t.equal(st(s.seg([{ sector: 0, num: 8 }, { sector: 65536 * 8, num: 8 }])), VIRTIO_BLK_S_IOERR, `${type}: second segment past the end`);
    t.equal(st(new Uint8Array(24)), VIRTIO_BLK_S_IOERR, `${type}: 24 bytes of segments`);
    t.equal(st(new Uint8Array(0)), VIRTIO_BLK_S_IOERR, `${type}: no segment`);
    t.equal(s.req(type, 0, { out: s.seg([{ sector: 0, num: 8 }]), statusLen: 2 }).status, VIRTIO_BLK_S_IOERR, `${type}: 2 writable bytes`);
  }
  t.equal(s.req(VIRTIO_BLK_T_DISCARD, 0, { out: s.seg([{ sector: 0, num: 8, flags: 1 }]) }).status, VIRTIO_BLK_S_UNSUPP, 'DISCARD with UNMAP');
  t.equal(s.persistentPages(), 8, 'no page freed');
  t.ok(Buffer.from(s.read(0, 8 * PAGE).data).equals(Buffer.from(data)), 'data unchanged');
  // the largest allowed request is served
  const max = s.req(VIRTIO_BLK_T_DISCARD, 0, { out: s.seg(Array.from({ length: BLK_MAX_DWZ_SEG }, (_, k) => ({ sector: k * BLK_MAX_DWZ_SECTORS, num: BLK_MAX_DWZ_SECTORS }))) });
  t.equal(max.status, VIRTIO_BLK_S_OK, 'max segments of max sectors');
  t.equal(s.persistentPages(), 0);
});

t.test('WRITE_ZEROES: partial pages zeroed by RMW, whole pages freed (with or without UNMAP)', async (t) => {
  const s = setup({ diskPages: 16 });
  const data = pattern(6, 8 * PAGE);
  s.write(0, data);
  const shadow = data.slice();
  // sectors 3..21: page 0 from sector 3, page 1 whole, page 2 sectors 16..21
  t.equal(s.req(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: s.seg([{ sector: 3, num: 19, flags: 1 }]) }).status, VIRTIO_BLK_S_OK);
  shadow.fill(0, 3 * 512, 22 * 512);
  t.equal(s.persistentPages(), 7, 'the whole page freed');
  // inside one page, not at its start
  t.equal(s.req(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: s.seg([{ sector: 33, num: 2 }]) }).status, VIRTIO_BLK_S_OK);
  shadow.fill(0, 33 * 512, 35 * 512);
  // from a page start, ending inside it
  t.equal(s.req(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: s.seg([{ sector: 40, num: 3 }]) }).status, VIRTIO_BLK_S_OK);
  shadow.fill(0, 40 * 512, 43 * 512);
  // page-aligned pages 6 and 7 without UNMAP
  t.equal(s.req(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: s.seg([{ sector: 48, num: 16 }]) }).status, VIRTIO_BLK_S_OK);
  shadow.fill(0, 48 * 512, 64 * 512);
  t.equal(s.persistentPages(), 5);
  t.ok(Buffer.from(s.read(0, 8 * PAGE).data).equals(Buffer.from(shadow)), 'disk equals the shadow');
});

t.test('a new ring (ring restart) sees the same disk', async (t) => {
  const s = setup();
  const data = pattern(8, 5 * PAGE + 1024);
  s.write(13, data);
  s.newRing();
  const r = s.read(13, data.length);
  t.ok(Buffer.from(r.data).equals(Buffer.from(data)), 'data read through a fresh ring');
});

t.test('PageBitmap: set, clear, count, next across words', async (t) => {
  const b = new PageBitmap(1001);
  for (const p of [0, 31, 32, 63, 64, 999, 1000, 31]) b.set(p);
  t.equal(b.count, 7, 'setting twice counts once');
  const seen: number[] = [];
  for (let p = b.next(0, b.pages); p >= 0; p = b.next(p + 1, b.pages)) seen.push(p);
  t.same(seen, [0, 31, 32, 63, 64, 999, 1000]);
  t.equal(b.next(65, 999), -1, 'nothing in [65, 999)');
  t.equal(b.next(33, 64), 63);
  b.clear(63);
  b.clear(63);
  t.equal(b.count, 6, 'clearing twice counts once');
  t.equal(b.next(33, 1001), 64);
  t.ok(b.has(1000) && !b.has(63) && !b.has(1));
});

t.test('seg_max: the largest request Linux builds (one indirect table) fits the walker at queue size 128', async (t) => {
  const s = setup({ diskPages: 256, queueSize: 128 });
  const data = pattern(11, BLK_SEG_MAX * PAGE);
  const w = s.write(0, data, { indirect: true, split: [PAGE] });
  t.same([w.used, w.status], [1, VIRTIO_BLK_S_OK], `${BLK_SEG_MAX} data descriptors + header + status in one indirect table`);
  const r = s.read(0, BLK_SEG_MAX * PAGE, { indirect: true, split: [PAGE] });
  t.ok(Buffer.from(r.data).equals(Buffer.from(data)), 'read back through as many descriptors');
  // one more segment (129 buffers) and the core's walker refuses the chain (the bound is tight)
  t.throws(() => s.write(0, pattern(12, (BLK_SEG_MAX + 1) * PAGE), { indirect: true, split: [PAGE] }), /ttl|long|queue|table/i);
});
