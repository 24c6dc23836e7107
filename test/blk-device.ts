// tmem-blk's two device halves on the core's seam (host/vhost-user/device.ts):
// BlkVm (main thread: features, protocol features, config space, open
// params, overflow file name) and the worker kind (host/blk/worker.ts: one
// disk per VM kept across connections, the VM's store guest shared with its
// tmem device, idle promotion). Driven without a socket; test/blk-socket.ts
// goes through a real vhost-user connection.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlkVm, BLK_PROTOCOL_FEATURES, overflowFileName } from '../host/blk/vm.js';
import { createDeviceKind, type BlkInstance, type BlkOpenParams, MAX_PARK_MS, OVERFLOW_PAGE_UNITS } from '../host/blk/worker.js';
import { fadvise, pageCached, POSIX_FADV_DONTNEED } from '../native/file-cache.js';
import { fakeWorkerHost } from './engine/fakes.js';
import { createDeviceKind as createTmemKind } from '../host/tmem/worker.js';
import { storeGuests } from '../host/tmem/store-guests.js';
import { HANDLE_LATER, type DeviceConnection } from '../host/vhost-user/device.js';
import { SegmentList } from '../host/virtio/guest-memory.js';
import { BC, blkCountersObject } from '../host/blk/counters.js';
import { BLK_FEATURES } from '../host/blk/blk-config.js';
import { CFG_CAPACITY, CFG_NUM_QUEUES, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../host/blk/virtio-blk.js';

const PAGE = 4096;

function tmpDir(t: Test): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'blk-device-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

const fakeHost = (capacityPages: number) => fakeWorkerHost({ capacityPages, maxPoolsPerGuest: 16 }, 'notify');

const conn = (id: number): DeviceConnection => ({ id, connectedAt: new Date(), guestRamBytes: 0n, control: async () => null });

function params(dir: string | null, o: Partial<BlkOpenParams> = {}): BlkOpenParams {
  return {
    maxmemBytes: 1n << 30n,
    shareGroup: null,
    tmemMaxBytes: null,
    ramFloorBytes: 0n,
    frozen: false,
    sizeBytes: 64 * PAGE,
    overflowPath: dir === null ? null : path.join(dir, 'vm.overflow'),
    serial: 'vm',
    ...o,
  };
}

/** Requests on plain buffers through a WorkerDevice's handle(). */
function io(dev: BlkInstance) {
  const rd = new SegmentList(4);
  const wr = new SegmentList(4);
  const hdr = new Uint8Array(16);
  const st = new Uint8Array(1);
  const run = (type: number, sector: number, out: Uint8Array | null, inLen: number) => {
    const v = new DataView(hdr.buffer);
    v.setUint32(0, type, true);
    v.setBigUint64(8, BigInt(sector), true);
    rd.clear();
    wr.clear();
    rd.push(hdr, v, 0, 16);
    if (out) rd.push(out, new DataView(out.buffer), 0, out.length);
    const data = new Uint8Array(inLen);
    if (inLen) wr.push(data, new DataView(data.buffer), 0, inLen);
    wr.push(st, new DataView(st.buffer), 0, 1);
    const used = dev.handle(0, rd, wr);
    return { used, status: st[0]!, data };
  };
  return {
    write: (sector: number, d: Uint8Array) => run(VIRTIO_BLK_T_OUT, sector, d, 0),
    read: (sector: number, len: number) => run(VIRTIO_BLK_T_IN, sector, null, len),
    getId: () => run(VIRTIO_BLK_T_GET_ID, 0, null, 20),
  };
}

function pageData(seed: number): Uint8Array {
  const b = new Uint8Array(PAGE);
  for (let i = 0; i < PAGE; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

t.test('BlkVm: what the front-end is offered', async (t) => {
  const dir = tmpDir(t);
  const vm = new BlkVm({ name: 'vm1', maxmemBytes: 1n << 30n, shareGroup: null, where: '/x', sizeBytes: 1n << 30n, overflowDir: dir }, { numQueues: 4 });
  t.equal(vm.kind, 'blk');
  t.equal(vm.features(), BLK_FEATURES);
  t.equal(vm.protocolFeatures() & (1n << 9n), 1n << 9n, 'protocol feature CONFIG');
  t.equal(vm.protocolFeatures() & 1n, 1n, 'protocol feature MQ');
  t.equal(BLK_PROTOCOL_FEATURES & (1n << 3n), 1n << 3n, 'REPLY_ACK');
  t.equal(vm.numQueues(), 4);
  const cfg = vm.getConfig(0, 60);
  t.equal(new DataView(cfg.buffer).getBigUint64(CFG_CAPACITY, true), (1n << 30n) / 512n);
  t.equal(new DataView(cfg.buffer).getUint16(CFG_NUM_QUEUES, true), 4);
  const part = vm.getConfig(34, 2);
  t.same([...part], [4, 0], 'a slice from an offset');
  const past = vm.getConfig(56, 16);
  t.equal(past.length, 16);
  t.same([...past.subarray(4)], new Array(12).fill(0), 'zero past the config space');
  t.throws(() => vm.setConfig(32, new Uint8Array([1])), /read-only/);
  const p = vm.open(conn(1));
  t.equal(p.sizeBytes, 1 << 30);
  t.equal(p.overflowPath, path.join(dir, 'vm1.overflow'));
  t.equal(p.serial, 'vm1');
  t.equal(vm.session?.id, 1);
  vm.closed(conn(2));
  t.equal(vm.session?.id, 1, 'another connection closing leaves the session');
  t.equal(overflowFileName('a/b'), 'a%2Fb.overflow');
  t.equal(overflowFileName('..x'), '%2E.x.overflow');
  t.equal(overflowFileName('50%'), '50%25.overflow');
  t.equal(overflowFileName('vm-1.test'), 'vm-1.test.overflow');
  t.throws(() => new BlkVm({ name: 'v', maxmemBytes: 0n, shareGroup: null, where: '', sizeBytes: 5000n, overflowDir: null }, { numQueues: 1 }), /VM v: blk-size 5000 is not a multiple of 4096/);
  t.throws(() => new BlkVm({ name: 'v', maxmemBytes: 0n, shareGroup: null, where: '', sizeBytes: 1n << 41n, overflowDir: null }, { numQueues: 1 }), /outside/);
  t.throws(() => new BlkVm({ name: 'v', maxmemBytes: 0n, shareGroup: null, where: '', sizeBytes: 4096n, overflowDir: path.join(dir, 'nope') }, { numQueues: 1 }), /not writable by tmemd \(ENOENT\)/);
});

t.test('worker kind: one disk per VM, kept across connections; the store guest shared with tmem', async (t) => {
  const dir = tmpDir(t);
  const host = fakeHost(1000);
  const kind = createDeviceKind(host);
  const tmemKind = createTmemKind(host);
  const info = { id: 1, vm: 'vm', kind: 'blk', numQueues: 2 };
  const a = kind.open(info, params(dir)) as BlkInstance;
  const x = io(a);
  for (let p = 0; p < 10; p++) t.equal(x.write(p * 8, pageData(p)).status, VIRTIO_BLK_S_OK);
  const id = x.getId();
  t.same([id.used, Buffer.from(id.data.subarray(0, 2)).toString(), id.data[2]], [21, 'vm', 0], 'GET_ID: the VM name, NUL padded');
  t.equal(a.counters[BC.writes], 10, 'counted in the instance');
  const guests = storeGuests(host);
  const stats = guests.store.stats() as { persistentPages: number; guests: { name: string; persistentPages: number }[] };
  t.equal(stats.persistentPages, 10, 'the disk pages are persistent pages of the store');
  t.equal(stats.guests.find((g) => g.name === 'vm')?.persistentPages, 10, 'counted to the VM');
  // the VM's tmem device connects: same store guest
  const tm = tmemKind.open({ id: 2, vm: 'vm', kind: 'tmem', numQueues: 2 }, { maxmemBytes: 1n << 30n, shareGroup: null, tmemMaxBytes: null, ramFloorBytes: 0n, frozen: false });
  t.equal(guests.holders('vm'), 2, 'blk and tmem hold the same store guest');
  tm.close();
  t.equal(guests.holders('vm'), 1, 'tmem gone, the disk keeps the guest');
  a.close();
  t.equal(guests.holders('vm'), 1, 'the disk outlives its connection');
  const b = kind.open({ ...info, id: 3 }, params(dir)) as BlkInstance;
  const y = io(b);
  for (let p = 0; p < 10; p++) if (!Buffer.from(y.read(p * 8, PAGE).data).equals(Buffer.from(pageData(p)))) t.fail(`page ${p} after reconnect`);
  t.equal(b.counters[BC.reads], 10, 'the new instance counts its own');
  t.same([b.counters[BC.ramPages], b.counters[BC.overflowPages]], [10, 0], 'gauges: pages in RAM and in the file now');
  t.same([a.counters[BC.ramPages], a.counters[BC.overflowPages]], [0, 0], 'a closed instance holds none');
  t.equal(a.counters[BC.reads], 0);
  t.throws(() => kind.open({ ...info, id: 4 }, params(dir, { sizeBytes: 128 * PAGE })), /keeps its size/);
  const ks = kind.stats!() as { disks: { vm: string; ramPages: number; overflowPages: number; sizeBytes: number }[] };
  t.same(ks.disks.map((d) => [d.vm, d.ramPages, d.overflowPages, d.sizeBytes]), [['vm', 10, 0, 64 * PAGE]]);
  t.same(Object.keys(blkCountersObject(b.counters)).length, b.counters.length);
});

t.test('worker kind: overflow and idle promotion', async (t) => {
  const dir = tmpDir(t);
  const host = fakeHost(8);
  const kind = createDeviceKind(host);
  const inst = kind.open({ id: 1, vm: 'vm', kind: 'blk', numQueues: 1 }, params(dir)) as BlkInstance;
  const x = io(inst);
  for (let p = 0; p < 16; p++) x.write(p * 8, pageData(p));
  t.equal(inst.counters[BC.overflowWrites], 8, 'eight pages to the overflow file');
  t.equal(inst.extraCost, OVERFLOW_PAGE_UNITS, 'the last write went to the file: charged OVERFLOW_PAGE_UNITS beyond its bytes (the budget rule)');
  x.write(0, pageData(0));
  t.equal(inst.extraCost, 0, 'a write that stays in RAM: nothing extra');
  x.read(8 * 8, 2 * PAGE);
  t.equal(inst.extraCost, 2 * OVERFLOW_PAGE_UNITS, 'a two-page read from the file: twice');
  t.ok(fs.existsSync(path.join(dir, 'vm.overflow')));
  t.equal(fs.statSync(path.join(dir, 'vm.overflow')).mode & 0o777, 0o600);
  for (let p = 8; p < 12; p++) x.read(p * 8, PAGE); // hot
  // room: discard pages 0..3 through WRITE_ZEROES would need a segment; free via the store's own path instead
  inst.disk.store.free(0, 4);
  let more = true;
  for (let i = 0; i < 10 && more; i++) more = kind.idle!();
  t.equal(more, false, 'idle work done');
  t.equal(inst.counters[BC.promoted], 4, 'the 4 hot pages came back to RAM');
  for (let p = 4; p < 16; p++) if (!Buffer.from(x.read(p * 8, PAGE).data).equals(Buffer.from(pageData(p)))) t.fail(`page ${p}`);
  t.equal(inst.disk.store.filePages, 4);
  t.same([inst.counters[BC.ramPages], inst.counters[BC.overflowPages]], [8, 4], 'gauges after promotion and reads');
});

t.test('the disk is a device pool: no tmem request or operator flush reaches it; removeGuest frees it', async (t) => {
  const host = fakeHost(100);
  const kind = createDeviceKind(host);
  const inst = kind.open({ id: 1, vm: 'vm', kind: 'blk', numQueues: 1 }, params(null)) as BlkInstance;
  const x = io(inst);
  for (let p = 0; p < 5; p++) x.write(p * 8, pageData(p));
  const { store } = storeGuests(host);
  const g = inst.disk.storeGuest;
  const oid = new Uint32Array(6);
  const page = new Uint8Array(PAGE);
  t.equal(store.getPage(g, 0, oid, 0, 0, page, 0), -22, 'pool id 0 is not the disk (INVALID: no tmem pool)');
  t.equal(store.putPage(g, inst.disk.pages.poolId, oid, 0, page, 0), -22, "the disk's handle is no tmem pool id");
  t.equal(store.reset(g), 0, 'RESET destroys no pool');
  store.flushGuest(g);
  t.equal(store.destroyPool(g, 0), -22);
  for (let p = 0; p < 5; p++) if (!Buffer.from(x.read(p * 8, PAGE).data).equals(Buffer.from(pageData(p)))) t.fail(`page ${p} after RESET and flush`);
  const sg = (store.stats() as { guests: { name: string; persistentPages: number; devicePools: { handle: number; persistentPages: number }[] }[] }).guests[0]!;
  t.equal(sg.persistentPages, 5, 'counted as persistent pages of the guest');
  t.same(sg.devicePools.map((d) => [d.handle, d.persistentPages]), [[0, 5]], 'listed as a device pool');
  const info = new Float64Array(8);
  store.info(g, info);
  t.equal(info[3], 5, "INFO's persistent_pages includes the disk (one accounting)");
  store.removeGuest(g);
  t.equal(store.reclaimPending(), 5, 'removeGuest: the disk pages wait for reclaim');
  store.reclaimStep(100);
  t.equal((store.stats() as { persistentPages: number }).persistentPages, 0);
});

/**
 * A folder for an overflow file whose page cache can be dropped: the temp
 * folder unless it is tmpfs (whose pages are always in memory), else one in
 * the repository.
 */
function diskDir(t: Test): string {
  const base = fs.statfsSync(os.tmpdir()).type === 0x01021994 ? path.join(path.dirname(new URL(import.meta.url).pathname), '..') : os.tmpdir();
  const d = fs.mkdtempSync(path.join(base, '.blk-disk-wait-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Bytes of the file in the page cache, by fincore(1) (mincore: asking never reads, unlike a RWF_NOWAIT read, which starts read-ahead). */
function residentBytes(file: string): number {
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`fincore ${file} failed (util-linux): ${r.error?.message ?? r.stderr}`);
  return Number(r.stdout.trim());
}

/**
 * Writes the overflow file back and drops it from the page cache (this file
 * only), as memory pressure would, until fincore shows none of it cached:
 * DONTNEED is best effort (a page still on a per-CPU LRU list, or under
 * write-back, stays), so it is asked again, up to 100 times.
 */
async function dropCache(t: Test, file: string): Promise<void> {
  const fd = fs.openSync(file, 'r+');
  try {
    for (let i = 0; i < 100; i++) {
      fs.fsyncSync(fd);
      fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      if (residentBytes(file) === 0) return;
      await new Promise((res) => setTimeout(res, 10));
    }
    t.fail(`could not drop ${file} from the page cache in 100 tries (${residentBytes(file)} bytes stay)`);
  } finally {
    fs.closeSync(fd);
  }
}

/** A disk of 64 pages with room in RAM for 8: pages 8..15 written go to the overflow file. */
function overflowDisk(t: Test) {
  const dir = diskDir(t);
  const kind = createDeviceKind(fakeHost(8));
  const inst = kind.open({ id: 1, vm: 'vm', kind: 'blk', numQueues: 1 }, params(dir)) as BlkInstance;
  const x = io(inst);
  for (let p = 0; p < 16; p++) x.write(p * 8, pageData(p));
  const file = path.join(dir, 'vm.overflow');
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  return { inst, x, file, cached: (p: number) => pageCached(fd, p * PAGE) };
}

/**
 * Drops the file from the page cache and runs `op` until it answers
 * HANDLE_LATER (returned with the attempt), at most 50 times. The disk of
 * these VMs is fast enough that the pages sometimes arrive during the check
 * itself (the RWF_NOWAIT read starts read-ahead, and the read-ahead may be
 * done before it looks again): such an attempt must be served, exact.
 */
async function untilLater(t: Test, file: string, op: () => { used: number; status: number; data: Uint8Array }, exact: (d: Uint8Array) => boolean) {
  for (let attempt = 1; attempt <= 50; attempt++) {
    await dropCache(t, file);
    const r = op();
    if (r.used === HANDLE_LATER) return { r, attempt };
    if (r.status !== VIRTIO_BLK_S_OK || !exact(r.data)) t.fail(`attempt ${attempt}: served at once, but status ${r.status} or wrong data`);
  }
  t.fail('never answered HANDLE_LATER in 50 attempts with the file dropped from the page cache');
  return { r: op(), attempt: 50 };
}

t.test('a read of overflow pages the page cache does not hold waits (HANDLE_LATER, nothing changed) while the kernel reads them in, then is served exact', async (t) => {
  const { inst, x, file, cached } = overflowDisk(t);
  t.equal(inst.disk.store.filePages, 8, 'pages 8..15 in the file');
  const exact = (d: Uint8Array) => [0, 1, 2, 3].every((i) => Buffer.from(d.subarray(i * PAGE, (i + 1) * PAGE)).equals(Buffer.from(pageData(8 + i))));
  let before: number[] = [];
  const { r, attempt } = await untilLater(
    t,
    file,
    () => {
      before = [inst.counters[BC.requests]!, inst.counters[BC.reads]!, inst.counters[BC.overflowReads]!, inst.counters[BC.diskWaits]!];
      return x.read(8 * 8, 4 * PAGE);
    },
    exact,
  );
  t.equal(r.used, HANDLE_LATER, `a 4-page read of file pages just dropped from the cache: later (attempt ${attempt})`);
  t.equal(r.status, 0, 'no status written');
  t.same([inst.counters[BC.requests], inst.counters[BC.reads], inst.counters[BC.overflowReads]], before.slice(0, 3), 'nothing counted: the chain was not served');
  t.equal(inst.counters[BC.diskWaits], before[3]! + 1, 'one wait counted');
  t.equal(x.read(0, PAGE).used, PAGE + 1, 'a RAM page of the same disk is served at once (another queue, or the next chain once this one is served)');
  let tries = 1;
  let got = r;
  while (got.used === HANDLE_LATER && tries < 2000) {
    await new Promise((res) => setTimeout(res, 1));
    got = x.read(8 * 8, 4 * PAGE);
    tries++;
  }
  t.equal(got.used, 4 * PAGE + 1, `served after ${tries} offers`);
  t.equal(got.status, VIRTIO_BLK_S_OK);
  t.ok(exact(got.data), 'pages 8..11 exact');
  t.equal(inst.counters[BC.diskWaits], before[3]! + 1, 'one wait for the chain, however many offers');
  t.equal(inst.counters[BC.parkTimeouts], 0);
  t.equal(cached(11), 'cached', 'the whole range was asked for at the first offer');
});

t.test('only reads wait: a whole-page write to a file page is served at once, a partial one (a merge reads the page) waits', async (t) => {
  const { inst, x, file } = overflowDisk(t);
  await dropCache(t, file);
  t.equal(x.write(10 * 8, pageData(99)).used, 1, 'whole page: written at once, whatever is cached');
  const sector = new Uint8Array(512).fill(7);
  const { r, attempt } = await untilLater(t, file, () => x.write(12 * 8 + 1, sector), () => true);
  t.equal(r.used, HANDLE_LATER, `one sector of a page on the disk: later (attempt ${attempt})`);
  t.ok(inst.counters[BC.diskWaits]! >= 1);
});

t.test('a chain kept waiting past MAX_PARK_MS (a file system that ignores the read-ahead) is served by a read that waits', async (t) => {
  const { inst, x, file } = overflowDisk(t);
  await dropCache(t, file);
  const overflow = inst.disk.overflow!;
  overflow.readyToRead = () => false; // the page never reaches the cache by itself
  t.equal(x.read(9 * 8, PAGE).used, HANDLE_LATER);
  t.equal(x.read(9 * 8, PAGE).used, HANDLE_LATER, 'offered again at once: still within the bound');
  await new Promise((res) => setTimeout(res, MAX_PARK_MS + 20));
  const r = x.read(9 * 8, PAGE);
  t.equal(r.used, PAGE + 1, 'past the bound: served');
  t.ok(Buffer.from(r.data).equals(Buffer.from(pageData(9))), 'exact');
  t.equal(inst.counters[BC.parkTimeouts], 1);
  t.equal(x.read(10 * 8, PAGE).used, HANDLE_LATER, 'the next chain gets its own bound');
});
