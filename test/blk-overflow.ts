// tmem-blk's overflow path (host/blk/block-store.ts, overflow-file.ts): a
// block device cannot refuse a write, so what the store has no room for
// (host capacity, the VM's maxmem limit) goes to the VM's sparse overflow
// file and reads back exact; discard punches its blocks (st_blocks drops);
// read pages come back to RAM when room returns; a write that can be kept
// nowhere is an I/O error that loses nothing already written.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TmemStore } from '../host/tmem/store/store.js';
import { BlockStore } from '../host/blk/block-store.js';
import { OverflowFile } from '../host/blk/overflow-file.js';
import { StorePages } from '../host/blk/store-pages.js';
import { BlkHandler } from '../host/blk/blk-handler.js';
import { BC } from '../host/blk/counters.js';
import { SegmentList } from '../host/virtio/guest-memory.js';
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '../host/blk/virtio-blk.js';
import { pattern as pageData } from './virtio-driver.js';

const PAGE = 4096;

function tmpDir(t: Test): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'blk-overflow-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Plain-buffer requests: a header segment, a data segment, a status segment (SegmentLists as the walker makes them). */
class Driver {
  readonly rd = new SegmentList(8);
  readonly wr = new SegmentList(8);
  private readonly hdr = new Uint8Array(16);
  private readonly status = new Uint8Array(1);
  constructor(readonly h: BlkHandler) {}
  private header(type: number, sector: number): void {
    const v = new DataView(this.hdr.buffer);
    v.setUint32(0, type, true);
    v.setBigUint64(8, BigInt(sector), true);
    this.rd.clear();
    this.wr.clear();
    this.rd.push(this.hdr, v, 0, 16);
  }
  write(sector: number, data: Uint8Array): number {
    this.header(VIRTIO_BLK_T_OUT, sector);
    this.rd.push(data, new DataView(data.buffer, data.byteOffset, data.byteLength), 0, data.length);
    this.wr.push(this.status, new DataView(this.status.buffer), 0, 1);
    this.status[0] = 0xee;
    this.h.handle(this.rd, this.wr);
    return this.status[0]!;
  }
  read(sector: number, len: number): { status: number; data: Uint8Array } {
    const data = new Uint8Array(len);
    this.header(VIRTIO_BLK_T_IN, sector);
    if (len > 0) this.wr.push(data, new DataView(data.buffer), 0, len);
    this.wr.push(this.status, new DataView(this.status.buffer), 0, 1);
    this.status[0] = 0xee;
    this.h.handle(this.rd, this.wr);
    return { status: this.status[0]!, data };
  }
  dwz(type: number, sector: number, num: number, flags = 0): number {
    const seg = new Uint8Array(16);
    const v = new DataView(seg.buffer);
    v.setBigUint64(0, BigInt(sector), true);
    v.setUint32(8, num, true);
    v.setUint32(12, flags, true);
    this.header(type, 0);
    this.rd.push(seg, v, 0, 16);
    this.wr.push(this.status, new DataView(this.status.buffer), 0, 1);
    this.status[0] = 0xee;
    this.h.handle(this.rd, this.wr);
    return this.status[0]!;
  }
}

function setup(t: Test, o: { capacityPages: number; maxmemPages?: number; diskPages: number; file?: boolean }) {
  const store = new TmemStore({ capacityPages: o.capacityPages, maxPoolsPerGuest: 16 });
  const g = store.addGuest({ name: 'vm', maxmemPages: o.maxmemPages ?? 1 << 20, ramPages: 0, shareGroup: null });
  const dir = tmpDir(t);
  const file = o.file === false ? null : OverflowFile.open(path.join(dir, 'vm.overflow'), o.diskPages * PAGE);
  const bs = new BlockStore(new StorePages(store, g), o.diskPages, file);
  t.teardown(() => bs.close());
  const h = new BlkHandler(bs, 'vm');
  const persistent = () => (store.stats() as { persistentPages: number }).persistentPages;
  return { store, g, bs, h, d: new Driver(h), file, dir, persistent };
}

t.test('the overflow file: 0600, sparse, regular files only, truncated at open, removed at close', async (t) => {
  const dir = tmpDir(t);
  const p = path.join(dir, 'a.overflow');
  fs.writeFileSync(p, 'left over from an earlier run', { mode: 0o644 });
  const f = OverflowFile.open(p, 1 << 30);
  const st = fs.statSync(p);
  t.equal(st.mode & 0o777, 0o600, 'mode 0600');
  t.equal(st.size, 1 << 30, 'size = the disk');
  t.equal(f.blocks(), 0, 'no blocks: the old contents are gone, the file is sparse');
  t.ok(f.writePage(1000, pageData(1), 0));
  t.ok(f.blocks() >= 8, 'a written page holds blocks');
  const back = new Uint8Array(PAGE);
  t.ok(f.readPage(1000, back, 0));
  t.same(back, pageData(1));
  t.ok(f.punch(1000, 1));
  t.equal(f.blocks(), 0, 'punched: no blocks');
  t.ok(f.readPage(1000, back, 0));
  t.ok(back.every((x) => x === 0), 'a punched page reads as zeros');
  const fdInfo = fs.readdirSync('/proc/self/fd').map((n) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${n}`);
    } catch {
      return '';
    }
  });
  t.ok(fdInfo.includes(p), 'the file is open');
  f.close();
  t.notOk(fs.existsSync(p), 'removed at close');
  fs.symlinkSync('/etc/passwd', path.join(dir, 'b.overflow'));
  t.throws(() => OverflowFile.open(path.join(dir, 'b.overflow'), PAGE), /overflow file .*b\.overflow/, 'a symlink is refused (O_NOFOLLOW)');
  fs.mkdirSync(path.join(dir, 'c.overflow'));
  t.throws(() => OverflowFile.open(path.join(dir, 'c.overflow'), PAGE), /overflow file/, 'a directory is refused');
  t.throws(() => OverflowFile.open(path.join(dir, 'missing', 'd.overflow'), PAGE), /ENOENT/, 'a missing directory is a clear error');
});

t.test('host capacity reached: the rest goes to the file, everything reads back exact', async (t) => {
  const s = setup(t, { capacityPages: 16, diskPages: 64 });
  for (let p = 0; p < 64; p++) t.equal(s.d.write(p * 8, pageData(p)), VIRTIO_BLK_S_OK, `page ${p} written`);
  t.equal(s.bs.ramPages, 16, '16 pages in RAM');
  t.equal(s.bs.filePages, 48, '48 pages in the overflow file');
  t.equal(s.persistent(), 16, 'the store counts its 16');
  t.ok(s.file!.blocks() >= 48 * 8, `file holds the 48 pages (${s.file!.blocks()} blocks)`);
  const all = s.d.read(0, 64 * PAGE);
  t.equal(all.status, VIRTIO_BLK_S_OK);
  let bad = 0;
  for (let p = 0; p < 64; p++) if (!Buffer.from(all.data.subarray(p * PAGE, (p + 1) * PAGE)).equals(Buffer.from(pageData(p)))) bad++;
  t.equal(bad, 0, 'all 64 pages exact');
  // sub-page writes into pages that live in the file: RMW through the file
  t.equal(s.d.write(40 * 8 + 3, pageData(500, 1024)), VIRTIO_BLK_S_OK);
  const want = pageData(40);
  want.set(pageData(500, 1024), 3 * 512);
  t.same(s.d.read(40 * 8, PAGE).data, want, 'sub-page write to a file page merged');
  // overwrite of a RAM page stays in RAM, of a file page goes to RAM only when there is room (none)
  t.equal(s.d.write(0, pageData(600)), VIRTIO_BLK_S_OK);
  t.equal(s.bs.ramPages, 16);
  t.same(s.d.read(0, PAGE).data, pageData(600));
});

t.test("the VM's maxmem limit reached: the file takes the rest; room back: read pages return to RAM", async (t) => {
  const s = setup(t, { capacityPages: 1000, maxmemPages: 10, diskPages: 32 });
  for (let p = 0; p < 32; p++) s.d.write(p * 8, pageData(p));
  t.equal(s.bs.ramPages, 10, 'the limit: 10 pages in RAM');
  t.equal(s.bs.filePages, 22);
  t.equal(s.persistent(), 10);
  // the guest reads pages 20..24 from the file (hot), nothing can move yet
  for (let p = 20; p < 25; p++) t.same(s.d.read(p * 8, PAGE).data, pageData(p));
  t.equal(s.bs.promotionPending(), true, 'hot pages to promote');
  t.equal(s.bs.idleStep(100), 5, 'no room: nothing moved, 5 hot pages wait');
  t.equal(s.bs.promotionPending(), false, 'backing off after a refusal');
  t.equal(s.bs.counters[BC.promoted], 0);
  // discard 6 RAM pages (0..5): room for 6
  t.equal(s.d.dwz(VIRTIO_BLK_T_DISCARD, 0, 48), VIRTIO_BLK_S_OK);
  t.equal(s.persistent(), 4, 'discard gave 6 pages back to the store');
  // the backoff after the refusal: wait it out
  await new Promise((r) => setTimeout(r, 120));
  t.equal(s.bs.promotionPending(), true, 'the backoff is over');
  t.equal(s.bs.idleStep(100), 0, 'hot pages all promoted');
  t.equal(s.bs.promotionPending(), false);
  t.equal(s.bs.counters[BC.promoted], 5);
  t.equal(s.bs.ramPages, 9);
  t.equal(s.bs.filePages, 17);
  for (let p = 6; p < 32; p++) if (!Buffer.from(s.d.read(p * 8, PAGE).data).equals(Buffer.from(pageData(p)))) t.fail(`page ${p} wrong`);
  t.ok(s.d.read(0, 6 * PAGE).data.every((x) => x === 0), 'discarded pages read as zeros');
});

t.test('discard and write zeroes punch the overflow file and free the store', async (t) => {
  const s = setup(t, { capacityPages: 8, diskPages: 64 });
  for (let p = 0; p < 64; p++) s.d.write(p * 8, pageData(p));
  t.equal(s.persistent(), 8);
  const blocks = s.file!.blocks();
  t.ok(blocks >= 56 * 8, `56 file pages hold blocks (${blocks})`);
  t.equal(s.d.dwz(VIRTIO_BLK_T_DISCARD, 0, 32 * 8), VIRTIO_BLK_S_OK);
  t.equal(s.persistent(), 0, 'the 8 RAM pages are back in the store');
  t.equal(s.bs.filePages, 32);
  t.ok(s.file!.blocks() <= blocks - 24 * 8, `24 file pages punched (${blocks} -> ${s.file!.blocks()} blocks)`);
  t.equal(s.d.dwz(VIRTIO_BLK_T_WRITE_ZEROES, 32 * 8, 32 * 8, 1), VIRTIO_BLK_S_OK);
  t.equal(s.bs.filePages, 0);
  t.equal(s.file!.blocks(), 0, 'every block punched: st_blocks 0');
  t.ok(s.d.read(0, 64 * PAGE).data.every((x) => x === 0), 'the whole disk reads as zeros');
});

t.test('no overflow file and the store full: IOERR, nothing already written lost', async (t) => {
  const s = setup(t, { capacityPages: 4, diskPages: 16, file: false });
  for (let p = 0; p < 4; p++) t.equal(s.d.write(p * 8, pageData(p)), VIRTIO_BLK_S_OK);
  t.equal(s.d.write(4 * 8, pageData(4)), VIRTIO_BLK_S_IOERR, 'a fifth page: IOERR');
  t.match(s.bs.error, /no room .* no overflow file/);
  t.equal(s.h.refused, false, 'a store failure is not a refused (bad) request');
  t.ok(s.d.read(32, PAGE).data.every((x) => x === 0), 'the refused page was never stored');
  t.equal(s.d.write(8 + 2, pageData(50, 512)), VIRTIO_BLK_S_OK, 'a sub-page overwrite of a RAM page fits');
  // the VM's limit drops below what it holds: a held page is still overwritten in place (no more memory), a new one refused
  s.store.setMaxmem(s.g, 2);
  t.equal(s.d.write(0 + 1, pageData(51, 512)), VIRTIO_BLK_S_OK, 'overwrite of a held page above the limit: in place');
  t.equal(s.d.write(9 * 8, pageData(52)), VIRTIO_BLK_S_IOERR, 'a new page above the limit: IOERR');
  const want0 = pageData(0);
  want0.set(pageData(51, 512), 512);
  t.same(s.d.read(0, PAGE).data, want0);
  const want1 = pageData(1);
  want1.set(pageData(50, 512), 1024);
  t.same(s.d.read(8, PAGE).data, want1);
  t.equal(s.bs.bad.count, 0, 'no page lost');
});

t.test('store above the limit or frozen, with a file: held pages overwritten in place, new ones to the file, exact', async (t) => {
  const s = setup(t, { capacityPages: 100, maxmemPages: 8, diskPages: 16 });
  for (let p = 0; p < 8; p++) s.d.write(p * 8, pageData(p));
  s.store.setMaxmem(s.g, 4);
  t.equal(s.d.write(3 * 8 + 1, pageData(70, 512)), VIRTIO_BLK_S_OK, 'RMW of a RAM page above the limit');
  t.equal(s.bs.filePages, 0, 'overwritten in place');
  t.equal(s.d.write(9 * 8, pageData(9)), VIRTIO_BLK_S_OK, 'a new page above the limit');
  t.equal(s.bs.filePages, 1, 'went to the file');
  s.store.setMaxmem(s.g, 100);
  s.store.setFrozen(s.g, true);
  t.equal(s.d.write(10 * 8, pageData(10)), VIRTIO_BLK_S_OK, 'a new page of a frozen VM');
  t.equal(s.bs.filePages, 2, 'went to the file');
  t.equal(s.d.write(0, pageData(100)), VIRTIO_BLK_S_OK, 'a held page of a frozen VM');
  t.equal(s.persistent(), 8, 'the store holds the same 8');
  const want = pageData(3);
  want.set(pageData(70, 512), 512);
  t.same(s.d.read(3 * 8, PAGE).data, want);
  t.same(s.d.read(0, PAGE).data, pageData(100));
  for (const p of [1, 2, 4, 5, 6, 7, 9, 10]) t.same(s.d.read(p * 8, PAGE).data, pageData(p), `page ${p}`);
});

t.test('the overflow file failing: IOERR, the old data intact', async (t) => {
  const s = setup(t, { capacityPages: 2, diskPages: 8 });
  for (let p = 0; p < 4; p++) s.d.write(p * 8, pageData(p));
  t.equal(s.bs.filePages, 2);
  // a file whose writes fail (a full or broken disk)
  const f = s.file!;
  const realWrite = f.writePage.bind(f);
  f.writePage = (p: number) => {
    f.error = `overflow file: write of page ${p}: ENOSPC: no space left on device`;
    return false;
  };
  t.equal(s.d.write(3 * 8 + 4, pageData(80, 1024)), VIRTIO_BLK_S_IOERR, 'RMW of a file page: IOERR');
  t.equal(s.d.write(5 * 8, pageData(81)), VIRTIO_BLK_S_IOERR, 'a new page: IOERR');
  t.match(s.bs.error, /ENOSPC/);
  f.writePage = realWrite;
  for (let p = 0; p < 4; p++) t.same(s.d.read(p * 8, PAGE).data, pageData(p), `page ${p} intact`);
  t.ok(s.d.read(5 * 8, PAGE).data.every((x) => x === 0), 'the refused page reads as before (zeros)');
});

t.test('debug verification (TMEMD_BLK_VERIFY): a page changed behind the disk is reported', async (t) => {
  const s = setup(t, { capacityPages: 2, diskPages: 8 });
  s.bs.enableVerify();
  for (let p = 0; p < 4; p++) s.d.write(p * 8, pageData(p));
  for (let p = 0; p < 8; p++) s.d.read(p * 8, PAGE);
  t.equal(s.bs.verifyFailures, 0, 'everything read as written (RAM, file, zeros)');
  // page 3 lives in the file: change it there
  t.ok(s.bs.inFile.has(3));
  fs.writeSync(fs.openSync(s.file!.path, 'r+'), Buffer.alloc(16, 0x55), 0, 16, 3 * PAGE);
  s.d.read(3 * 8, PAGE);
  t.equal(s.bs.verifyFailures, 1);
  t.match(s.bs.verifyLog[0], /page 3 from file/);
});
