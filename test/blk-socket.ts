// tmem-blk end to end through tmemd's blk socket: the built daemon
// (dist/host/tmemd.js) against a TypeScript vhost-user-blk front-end that
// does what QEMU's vhost-user-blk-pci does (realize with GET_CONFIG, driver
// start, memfd guest RAM it maps itself, a split ring, kick and call
// eventfds). Real virtio-blk requests: writes beyond the host capacity go to
// the overflow file and read back exact; sub-page I/O; GET_ID; a bad request;
// discard gives the pages back (tmemctl stats, the file's st_blocks); a ring
// restart and a reconnect keep the data; SIGTERM removes the overflow file;
// no --blk-overflow-dir refuses to start.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../native/index.js';
import { requestDaemon } from '../host/control/client.js';
import {
  bit,
  encodeConfig,
  encodeMemTable,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VhostUserProtocolFeature as PF,
  VhostUserRequest as R,
} from '../host/vhost-user/messages.js';
import { BLK_FEATURES } from '../host/blk/blk-config.js';
import {
  CFG_BLK_SIZE,
  CFG_CAPACITY,
  CFG_MAX_DISCARD_SEG,
  CFG_NUM_QUEUES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
} from '../host/blk/virtio-blk.js';
import { DriverRing, F_WRITE, FakeGuest, pattern as pageData, type Desc } from './virtio-driver.js';
import { ACK, Daemon, TMEMD, VhostSocket } from './vhost/harness.js';

const PAGE = 4096;
const RAM = 4n << 20n;
const UVA = 0x7f3400000000n;
const QSIZE = 128;
const DISK_PAGES = 256; // 1 MiB disk
const CAPACITY_PAGES = 64; // 256 KiB of store: most of the disk overflows

/** The front-end: socket, guest RAM (a memfd it maps), one queue. */
class BlkFrontEnd extends VhostSocket {
  readonly fds: number[] = [];
  mem!: native.Mapping;
  guest!: FakeGuest;
  ring!: DriverRing;
  kick = -1;
  call = -1;
  config: Buffer = Buffer.alloc(0);
  features = 0n;
  hdrA = 0;
  dataA = 0;
  private statA = 0;

  constructor(path: string) {
    super(path, 10000);
  }

  /** The payload of the reply to req, which must carry the reply flags (0x5). */
  private answer(req: number): Buffer {
    const r = this.reply(req);
    if (r.flags !== 0x5) throw new Error(`reply flags 0x${r.flags.toString(16)}`);
    return r.payload;
  }

  private ev(): number {
    const fd = native.eventfd(0);
    this.fds.push(fd);
    return fd;
  }

  /** QEMU's realize (features, protocol features, queue count, config space) and driver start. */
  start(): void {
    this.send(R.GET_FEATURES);
    this.features = this.answer(R.GET_FEATURES).readBigUInt64LE(0);
    this.send(R.GET_PROTOCOL_FEATURES);
    const pf = this.answer(R.GET_PROTOCOL_FEATURES).readBigUInt64LE(0);
    if (!(pf & bit(PF.CONFIG))) throw new Error('no CONFIG protocol feature');
    this.send(R.SET_PROTOCOL_FEATURES, encodeU64(pf & (bit(PF.MQ) | bit(PF.CONFIG) | bit(PF.REPLY_ACK))));
    this.send(R.GET_QUEUE_NUM);
    this.answer(R.GET_QUEUE_NUM);
    this.send(R.SET_OWNER);
    this.send(R.GET_CONFIG, encodeConfig(0, 0, new Uint8Array(60)));
    this.config = Buffer.from(this.answer(R.GET_CONFIG).subarray(12));
    this.send(R.SET_VRING_CALL, encodeVringFile(0, false), [this.ev()]);
    this.driverStart();
  }

  driverStart(): void {
    this.send(R.SET_FEATURES, encodeU64(this.features & (bit(32) | bit(28) | bit(29) | BLK_FEATURES)));
    const m = native.memfdCreate('blk-test-ram', RAM);
    this.fds.push(m);
    this.mem = native.mmapShared(m, RAM, 0n);
    this.guest = new FakeGuest(Number(RAM), { ram: this.mem.windows[0]!.bytes });
    this.send(R.SET_MEM_TABLE, encodeMemTable([{ guestPhysAddr: 0n, size: RAM, userspaceAddr: UVA, mmapOffset: 0n }]), [m], ACK);
    if (this.answer(R.SET_MEM_TABLE).readBigUInt64LE(0) !== 0n) throw new Error('SET_MEM_TABLE refused');
    this.ring = new DriverRing(this.guest, QSIZE);
    this.hdrA = this.guest.alloc(64, 16);
    this.statA = this.guest.alloc(64, 16);
    this.dataA = this.guest.alloc(256 << 10, PAGE);
    this.startRing(0);
  }

  startRing(base: number): void {
    const r = this.ring;
    this.send(R.SET_VRING_NUM, encodeVringState({ index: 0, num: QSIZE }));
    this.send(R.SET_VRING_BASE, encodeVringState({ index: 0, num: base }));
    this.send(R.SET_VRING_ADDR, encodeVringAddr({ index: 0, flags: 0, descUser: UVA + BigInt(r.desc), availUser: UVA + BigInt(r.avail), usedUser: UVA + BigInt(r.used), logGuest: 0n }));
    this.kick = this.ev();
    this.call = this.ev();
    this.send(R.SET_VRING_KICK, encodeVringFile(0, false), [this.kick]);
    this.send(R.SET_VRING_CALL, encodeVringFile(0, false), [this.call]);
    this.send(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }), [], ACK);
    this.answer(R.SET_VRING_ENABLE);
  }

  /** SET_VRING_ENABLE 0 and GET_VRING_BASE: the next avail index the device would take. */
  stopRing(): number {
    this.send(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 0 }));
    this.send(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    return this.answer(R.GET_VRING_BASE).readUInt32LE(4);
  }

  /** One request; waits for its completion (used ring). */
  async req(type: number, sector: number, o: { out?: Uint8Array; inLen?: number } = {}, waitMs = 10000): Promise<{ used: number; status: number; data: Uint8Array }> {
    const g = this.guest;
    const hdr = Buffer.alloc(16);
    hdr.writeUInt32LE(type, 0);
    hdr.writeBigUInt64LE(BigInt(sector), 8);
    g.write(this.hdrA, hdr);
    const descs: Desc[] = [{ addr: this.hdrA, len: 16 }];
    const inLen = o.inLen ?? 0;
    if (o.out) {
      g.write(this.dataA, o.out);
      descs.push({ addr: this.dataA, len: o.out.length });
    } else if (inLen > 0) {
      g.ram.fill(0xaa, g.off(this.dataA), g.off(this.dataA) + inLen);
      descs.push({ addr: this.dataA, len: inLen, flags: F_WRITE });
    }
    g.ram[g.off(this.statA)] = 0xee;
    descs.push({ addr: this.statA, len: 1, flags: F_WRITE });
    const before = this.ring.usedIdx();
    this.ring.publish(this.ring.chain(descs));
    native.eventfdWrite(this.kick);
    const end = Date.now() + waitMs;
    while (this.ring.usedIdx() === before) {
      if (Date.now() > end) throw new Error(`request not completed within ${waitMs} ms`);
      await new Promise((r) => setTimeout(r, 1));
    }
    const u = this.ring.takeUsed();
    return { used: u[u.length - 1]!.len, status: g.ram[g.off(this.statA)]!, data: g.read(this.dataA, inLen) };
  }

  override close(): void {
    super.close();
    try {
      native.munmap(this.mem);
    } catch {
      /* never mapped */
    }
    for (const fd of this.fds) {
      try {
        native.close(fd);
      } catch {
        /* sent and closed */
      }
    }
  }
}

interface StatsJson {
  host: { counters: { blk?: Record<string, number> } };
  guests: { name: string; blk: { ramPages: number; overflowPages: number; overflowFileBytes: number } | null; store: { persistentPages: number; devicePools: { persistentPages: number }[] } | null }[];
}

async function stats(ctl: string): Promise<StatsJson> {
  const r = await requestDaemon(ctl, { cmd: 'stats' }, 10000);
  if (!r.ok) throw new Error(`stats failed: ${r.error}`);
  return r.result as StatsJson;
}

/** A private directory (gone at the test's end) with the overflow directory and the blk socket's path in it. */
function blkDir(t: Test): { dir: string; ov: string; blkSock: string } {
  const dir = mkdtempSync(join(tmpdir(), 'blk-socket-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ov = join(dir, 'ov');
  mkdirSync(ov);
  return { dir, ov, blkSock: join(dir, 'blk.sock') };
}

t.test('tmem-blk through the socket', async (t) => {
  const { dir, ov, blkSock } = blkDir(t);
  const ctl = join(dir, 'ctl.sock');
  const d = new Daemon([
    '--vm', `name=vm1,socket=${join(dir, 'tmem.sock')},maxmem=1G,blk-socket=${blkSock},blk-size=${DISK_PAGES * 4}K`,
    '--blk-overflow-dir', ov, '--capacity', `${CAPACITY_PAGES * 4}K`, '--queues', '2', '--queues-mode', 'notify', '--control', ctl,
  ]);
  t.teardown(() => d.stop());
  await d.waitFor(/ready/);
  t.match(d.stderr, /tmem-blk listening on .*blk\.sock \(disk 1 MiB/);

  let fe = new BlkFrontEnd(blkSock);
  fe.start();
  t.equal(fe.features, BLK_FEATURES, 'GET_FEATURES: the blk features');
  t.ok(fe.features & bit(VHOST_USER_F_PROTOCOL_FEATURES), 'with VHOST_USER_F_PROTOCOL_FEATURES');
  t.equal(fe.config.length, 60, 'GET_CONFIG: 60 bytes');
  t.equal(fe.config.readBigUInt64LE(CFG_CAPACITY), BigInt(DISK_PAGES * 8), 'capacity in sectors');
  t.equal(fe.config.readUInt32LE(CFG_BLK_SIZE), 4096);
  t.equal(fe.config.readUInt16LE(CFG_NUM_QUEUES), 2);
  t.equal(fe.config.readUInt32LE(CFG_MAX_DISCARD_SEG), 16);

  // fill the whole disk: more than the store holds
  for (let p = 0; p < DISK_PAGES; p += 16) {
    const chunk = new Uint8Array(16 * PAGE);
    for (let k = 0; k < 16; k++) chunk.set(pageData(p + k), k * PAGE);
    const w = await fe.req(VIRTIO_BLK_T_OUT, p * 8, { out: chunk });
    if (w.status !== VIRTIO_BLK_S_OK || w.used !== 1) t.fail(`write of pages ${p}..: status ${w.status} used ${w.used}`);
  }
  let s = await stats(ctl);
  const g = s.guests.find((x) => x.name === 'vm1')!;
  t.equal(g.blk?.ramPages, CAPACITY_PAGES, 'the store holds its capacity');
  t.equal(g.blk?.overflowPages, DISK_PAGES - CAPACITY_PAGES, 'the rest is in the overflow file');
  t.equal(g.store?.devicePools[0]?.persistentPages, CAPACITY_PAGES, "counted in the VM's store guest");
  const ovFile = join(ov, 'vm1.overflow');
  t.equal(statSync(ovFile).mode & 0o777, 0o600, 'overflow file 0600');
  t.ok(statSync(ovFile).blocks >= (DISK_PAGES - CAPACITY_PAGES) * 8, 'overflow file holds the pages');
  const check = async (what: string) => {
    let bad = 0;
    for (let p = 0; p < DISK_PAGES; p += 32) {
      const r = await fe.req(VIRTIO_BLK_T_IN, p * 8, { inLen: 32 * PAGE });
      if (r.status !== VIRTIO_BLK_S_OK || r.used !== 32 * PAGE + 1) bad++;
      for (let k = 0; k < 32; k++) if (!Buffer.from(r.data.subarray(k * PAGE, (k + 1) * PAGE)).equals(Buffer.from(expect[p + k]!))) bad++;
    }
    t.equal(bad, 0, `${what}: every page exact`);
  };
  const expect: Uint8Array[] = Array.from({ length: DISK_PAGES }, (_, p) => pageData(p));
  await check('after the fill');

  // sub-page write in RAM and in the file
  for (const p of [1, 200]) {
    const part = pageData(1000 + p, 1024);
    t.equal((await fe.req(VIRTIO_BLK_T_OUT, p * 8 + 5, { out: part })).status, VIRTIO_BLK_S_OK, `1 KiB at sector ${p * 8 + 5}`);
    expect[p]!.set(part, 5 * 512);
  }
  const id = await fe.req(VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 });
  t.same([id.used, id.status, Buffer.from(id.data.subarray(0, 4)).toString()], [21, VIRTIO_BLK_S_OK, 'vm1\0'], 'GET_ID');
  const bad = await fe.req(VIRTIO_BLK_T_IN, DISK_PAGES * 8, { inLen: 512 });
  t.same([bad.used, bad.status], [1, VIRTIO_BLK_S_IOERR], 'IN past the end: IOERR');

  // ring restart: stop, start again from where the device stopped
  const next = fe.stopRing();
  t.equal(next, fe.ring.availIdx, 'GET_VRING_BASE: every request taken');
  fe.startRing(next);
  await check('after a ring restart');

  // reconnect (a new QEMU for the same VM)
  fe.close();
  await d.waitFor(/vm vm1 blk: guest left/);
  fe = new BlkFrontEnd(blkSock);
  fe.start();
  await check('after a reconnect');

  // discard everything: RAM back to the store, file blocks punched
  for (let p = 0; p < DISK_PAGES; p += 64) {
    const seg = Buffer.alloc(16);
    seg.writeBigUInt64LE(BigInt(p * 8), 0);
    seg.writeUInt32LE(64 * 8, 8);
    t.equal((await fe.req(VIRTIO_BLK_T_DISCARD, 0, { out: seg })).status, VIRTIO_BLK_S_OK);
  }
  s = await stats(ctl);
  const g2 = s.guests.find((x) => x.name === 'vm1')!;
  t.same([g2.blk?.ramPages, g2.blk?.overflowPages, g2.store?.devicePools[0]?.persistentPages], [0, 0, 0], 'no page held after the discard');
  t.equal(statSync(ovFile).blocks, 0, 'overflow file: every block punched');
  t.ok((s.host.counters.blk?.discards ?? 0) >= 4, 'discards counted host-wide');
  const z = await fe.req(VIRTIO_BLK_T_IN, 0, { inLen: PAGE });
  t.ok(z.data.every((x) => x === 0), 'discarded pages read as zeros');
  fe.close();
  const st = await d.stop();
  t.equal(st.code, 0, 'tmemd exits 0 on SIGTERM');
  t.notOk(existsSync(ovFile), 'the overflow file is removed at stop');
});

t.test('a chain tmem-blk cannot answer breaks its queue: never completed as if written', async (t) => {
  // Linux's virtio-blk takes a completion without a status byte as success
  // (it reads a stale 0, VIRTIO_BLK_S_OK), so such a chain must stop the
  // queue, as libvhost-user's vu_panic does, instead of completing it.
  const { dir, ov, blkSock } = blkDir(t);
  const d = new Daemon([
    '--vm', `name=vm1,socket=${join(dir, 'tmem.sock')},maxmem=1G,blk-socket=${blkSock},blk-size=1M`,
    '--blk-overflow-dir', ov, '--capacity', '1M', '--queues', '1', '--queues-mode', 'notify', '--control', 'none',
  ]);
  t.teardown(() => d.stop());
  await d.waitFor(/ready/);
  const fe = new BlkFrontEnd(blkSock);
  t.teardown(() => fe.close());
  fe.start();
  const w = await fe.req(VIRTIO_BLK_T_OUT, 0, { out: pageData(7) });
  t.same([w.used, w.status], [1, VIRTIO_BLK_S_OK], 'a valid write first');
  const g = fe.guest;
  const hdr = Buffer.alloc(16);
  hdr.writeUInt32LE(VIRTIO_BLK_T_OUT, 0);
  g.write(fe.hdrA, hdr);
  g.write(fe.dataA, pageData(8));
  const before = fe.ring.usedIdx();
  // header and data, no writable descriptor: nowhere to put the status
  fe.ring.publish(fe.ring.chain([{ addr: fe.hdrA, len: 16 }, { addr: fe.dataA, len: PAGE }]));
  native.eventfdWrite(fe.kick);
  await d.waitFor(/queue 0: broken, stopped: request at head \d+ unanswerable: no writable byte for the status/);
  t.equal(fe.ring.usedIdx(), before, 'the chain is not completed');
  await t.rejects(fe.req(VIRTIO_BLK_T_IN, 0, { inLen: PAGE }, 500), /not completed/, 'the queue is stopped');
  t.equal(fe.stopRing(), before, 'GET_VRING_BASE still names the unanswered chain');
});

t.test('a disk without --blk-overflow-dir: tmemd refuses to start, one line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'blk-socket-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [TMEMD, '--vm', `name=vm1,socket=${join(dir, 't.sock')},maxmem=1G,blk-socket=${join(dir, 'b.sock')}`], { encoding: 'utf8', timeout: 20000 });
  t.not(r.status, 0);
  t.match(r.stderr, /blk-socket= needs --blk-overflow-dir/);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
});
