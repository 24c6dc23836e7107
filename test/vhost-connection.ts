// The vhost-user engine (host/vhost-user/connection.ts) against a fake socket and
// a recording device: QEMU's sequence, reply flags and payloads, REPLY_ACK,
// partial reads, and every malformed input closing the connection with all
// its fds closed and nothing thrown.
import t from 'tap';
import type { MemoryRegion, VhostUserDevice } from '../host/vhost-user/device.js';
import { type ConnIo, VhostUserConnection, type VringChannel } from '../host/vhost-user/connection.js';
import {
  bit,
  decodeHeader,
  encodeHeader,
  encodeMemTable,
  encodeMsg,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_FLAGS,
  VhostUserProtocolFeature,
  VhostUserRequest as R,
} from '../host/vhost-user/messages.js';
import { TMEM_DEVICE_FEATURES, TMEM_PROTOCOL_FEATURES } from '../host/tmem/vm.js';
import type { Logger } from '../host/log.js';

const V1 = 0x1;

/** A socket that delivers scripted chunks, each with its fds on its first byte. */
class FakeIo implements ConnIo {
  chunks: { bytes: Buffer; fds: number[] }[] = [];
  eof = false;
  sent: Buffer[] = [];
  closed: number[] = [];
  recvError: Error | null = null;
  recvMsg(_fd: number, buf: Uint8Array, fdsOut: number[], maxFds = 32): number | null {
    if (this.recvError) throw this.recvError;
    const c = this.chunks[0];
    if (!c) return this.eof ? 0 : null;
    const n = Math.min(buf.length, c.bytes.length);
    buf.set(c.bytes.subarray(0, n));
    if (c.fds.length) {
      if (c.fds.length > maxFds) {
        // MSG_CTRUNC: native closes what arrived and throws
        this.closed.push(...c.fds);
        c.fds = [];
        throw Object.assign(new Error('control data truncated'), { code: 'EMSGSIZE' });
      }
      fdsOut.push(...c.fds);
      c.fds = [];
    }
    c.bytes = c.bytes.subarray(n);
    if (c.bytes.length === 0) this.chunks.shift();
    return n;
  }
  sendMsg(_fd: number, buf: Uint8Array): number {
    this.sent.push(Buffer.from(buf));
    return buf.length;
  }
  close(fd: number): void {
    this.closed.push(fd);
  }
  /** fds the fake treats as something other than an eventfd (a pipe, a file). */
  notEventfds = new Set<number>();
  adoptEventfd(fd: number): void {
    if (this.notEventfds.has(fd)) throw new Error(`eventfd (fd ${fd} is pipe:[1], not an eventfd): EINVAL`);
  }
  push(bytes: Buffer, fds: number[] = []): void {
    this.chunks.push({ bytes, fds });
  }
  /** Replies as {request, flags, payload}. */
  replies(): { request: number; flags: number; payload: Buffer }[] {
    return this.sent.map((b) => ({ ...decodeHeader(b), payload: b.subarray(12) }));
  }
}

type Call = [string, ...unknown[]];

/** The vring worker as the connection sees it: records every command, owns the fds handed over. */
class FakeChannel implements VringChannel {
  calls: Call[] = [];
  owned: number[] = [];
  closed = false;
  failOn: string | null = null;
  private async rec(name: string, ...a: unknown[]): Promise<void> {
    this.calls.push([name, ...a]);
    if (this.failOn === name) throw new Error(`device refuses ${name}`);
  }
  newInstanceId() {
    return 7;
  }
  async open() {}
  async close() {
    this.closed = true;
    return true;
  }
  setFeatures(_id: number, f: bigint) {
    return this.rec('setFeatures', f);
  }
  async setMemTable(_id: number, regions: readonly MemoryRegion[]) {
    this.owned.push(...regions.map((r) => r.fd));
    await this.rec('memoryChanged', regions.length);
    return regions.reduce((a, r) => a + r.size, 0n);
  }
  setVringNum(_id: number, q: number, n: number) {
    return this.rec('setVringNum', q, n);
  }
  setVringAddr(_id: number, q: number, a: unknown) {
    return this.rec('setVringAddr', q, a);
  }
  setVringBase(_id: number, q: number, b: number) {
    return this.rec('setVringBase', q, b);
  }
  async getVringBase(_id: number, q: number): Promise<number> {
    await this.rec('getVringBase', q);
    return 42;
  }
  setVringFd(_id: number, which: string, q: number, fd: number) {
    if (fd >= 0) this.owned.push(fd);
    return this.rec(which, q, fd);
  }
  setVringEnable(_id: number, q: number, e: boolean) {
    return this.rec('setVringEnable', q, e);
  }
  reset() {
    return this.rec('reset');
  }
  async control() {
    return null;
  }
}

class FakeDevice implements VhostUserDevice {
  readonly vm = 'test';
  readonly kind = 'fake';
  readonly workerModule = 'file:///nowhere.js';
  config: Uint8Array | null = null;
  protoFeatures = TMEM_PROTOCOL_FEATURES;
  opened = 0;
  closedConns = 0;
  configWrites: [number, number[]][] = [];
  numQueues() {
    return 2;
  }
  maxQueueSize() {
    return 1024;
  }
  features() {
    return TMEM_DEVICE_FEATURES;
  }
  protocolFeatures() {
    return this.protoFeatures;
  }
  memoryPolicy() {
    return { maxRamBytes: null, allowUnsealed: false };
  }
  open() {
    this.opened++;
    return {};
  }
  closed() {
    this.closedConns++;
  }
}

/** A device with a config space (as a block device has): 16 bytes, writes refused past byte 8. */
class ConfigDevice extends FakeDevice {
  constructor() {
    super();
    this.config = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
    this.protoFeatures = TMEM_PROTOCOL_FEATURES | bit(VhostUserProtocolFeature.CONFIG);
  }
  getConfig(offset: number, size: number): Uint8Array {
    const out = new Uint8Array(size);
    out.set(this.config!.subarray(offset, offset + size));
    return out;
  }
  setConfig(offset: number, data: Uint8Array): void {
    if (offset + data.length > 8) throw new Error('bytes 8.. are read-only');
    this.configWrites.push([offset, [...data]]);
  }
}

function setup(device: FakeDevice = new FakeDevice()) {
  const io = new FakeIo();
  const ch = new FakeChannel();
  const lines: string[] = [];
  const log: Logger = { error: (m) => lines.push(`error: ${m}`), warn: (m) => lines.push(`warn: ${m}`), info: (m) => lines.push(`info: ${m}`), debug: () => {} };
  let closedWith: string | null = null;
  const conn = new VhostUserConnection({ fd: 3, io, device, vrings: ch, log, label: 'vm test', onClose: (_c, r) => (closedWith = r) });
  void conn.open();
  /** Feeds bytes and lets the worker's (fake) replies come back. */
  const feed = async (b: Buffer, fds: number[] = []) => {
    io.push(b, fds);
    conn.onReadable();
    await settle();
  };
  return { io, ch, device, conn, lines, feed, closedWith: () => closedWith };
}

/** Lets every resolved command's continuation run (the fake channel answers at once, asynchronously). */
const settle = () => new Promise<void>((r) => setImmediate(r));

const msg = (req: number, payload?: Buffer, flags = V1) => encodeMsg(req, flags, payload);
const u64 = (v: bigint) => encodeU64(v);
const state = (index: number, num: number) => encodeVringState({ index, num });
const region = (i: number) => ({ guestPhysAddr: BigInt(i) << 32n, size: 1n << 30n, userspaceAddr: 0x7f0000000000n + (BigInt(i) << 32n), mmapOffset: 0n });
const addr = (index: number) => encodeVringAddr({ index, flags: 0, descUser: 0x7f0000001000n, usedUser: 0x7f0000003000n, availUser: 0x7f0000002000n, logGuest: 0n });

/** Every fd the peer sent is either closed by the engine or owned by the device, never both. */
function fdsAccounted(tt: Pick<typeof t, 'equal'>, s: ReturnType<typeof setup>, sent: number[]) {
  for (const fd of sent) {
    const c = s.io.closed.filter((x) => x === fd).length;
    const o = s.ch.owned.filter((x) => x === fd).length;
    tt.equal(c + o, 1, `fd ${fd} closed or owned exactly once (closed ${c}, owned ${o})`);
  }
}

t.test("QEMU 11.1's sequence for vhost-user-test-device-pci, replies flagged 0x5", async (t) => {
  const s = setup();
  const ack = VHOST_USER_NEED_REPLY_MASK | V1;
  // realize
  await s.feed(msg(R.GET_FEATURES));
  await s.feed(msg(R.GET_PROTOCOL_FEATURES));
  await s.feed(msg(R.SET_PROTOCOL_FEATURES, u64(TMEM_PROTOCOL_FEATURES)));
  await s.feed(msg(R.GET_QUEUE_NUM));
  await s.feed(msg(R.SET_OWNER, undefined, ack));
  await s.feed(msg(R.GET_FEATURES));
  for (let q = 0; q < 2; q++) {
    await s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ack), [100 + q]);
    await s.feed(msg(R.SET_VRING_ERR, encodeVringFile(q, false), ack), [110 + q]);
  }
  // driver start
  await s.feed(msg(R.SET_FEATURES, u64(TMEM_DEVICE_FEATURES), ack));
  await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0), region(1)]), ack), [120, 121]);
  for (let q = 0; q < 2; q++) {
    await s.feed(msg(R.SET_VRING_NUM, state(q, 256), ack));
    await s.feed(msg(R.SET_VRING_BASE, state(q, 0), ack));
    await s.feed(msg(R.SET_VRING_ADDR, addr(q), ack));
    await s.feed(msg(R.SET_VRING_KICK, encodeVringFile(q, false), ack), [130 + q]);
    await s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ack), [140 + q]);
    await s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, true), ack));
  }
  for (let q = 0; q < 2; q++) await s.feed(msg(R.SET_VRING_ENABLE, state(q, 1), ack));
  for (let q = 0; q < 2; q++) await s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ack), [150 + q]);
  // stop
  for (let q = 0; q < 2; q++) {
    await s.feed(msg(R.SET_VRING_ENABLE, state(q, 0), ack));
    await s.feed(msg(R.GET_VRING_BASE, state(q, 0), ack));
  }
  t.equal(s.closedWith(), null, 'still open');
  const replies = s.io.replies();
  t.ok(replies.every((r) => r.flags === VHOST_USER_REPLY_FLAGS && r.flags === 0x5), 'every reply has flags exactly 0x5');
  const byReq = (req: number) => replies.filter((r) => r.request === req);
  const feats = byReq(R.GET_FEATURES);
  t.equal(feats.length, 2);
  const f = feats[0]!.payload.readBigUInt64LE(0);
  t.equal(feats[0]!.payload.length, 8);
  t.ok(f & bit(32), 'VIRTIO_F_VERSION_1');
  t.ok(f & bit(VHOST_USER_F_PROTOCOL_FEATURES), 'VHOST_USER_F_PROTOCOL_FEATURES');
  t.ok(f & bit(29) && f & bit(28) && f & bit(0), 'EVENT_IDX, INDIRECT_DESC, TMEM_F_SHARED');
  t.notOk(f & bit(34), 'no RING_PACKED');
  const pf = byReq(R.GET_PROTOCOL_FEATURES)[0]!.payload.readBigUInt64LE(0);
  t.ok(pf & bit(VhostUserProtocolFeature.REPLY_ACK), 'REPLY_ACK offered');
  t.ok(pf & bit(VhostUserProtocolFeature.MQ), 'MQ offered');
  t.notOk(pf & bit(VhostUserProtocolFeature.CONFIG), 'no CONFIG (config_size 0)');
  t.equal(byReq(R.GET_QUEUE_NUM)[0]!.payload.readBigUInt64LE(0), 2n);
  t.equal(byReq(R.SET_PROTOCOL_FEATURES).length, 0, 'no reply without NEED_REPLY');
  t.equal(byReq(R.SET_OWNER).length, 1, 'REPLY_ACK for SET_OWNER');
  t.equal(byReq(R.SET_OWNER)[0]!.payload.readBigUInt64LE(0), 0n, 'ack 0 = success');
  t.equal(byReq(R.SET_MEM_TABLE).length, 1);
  const gvb = byReq(R.GET_VRING_BASE);
  t.equal(gvb.length, 2, 'GET_VRING_BASE answered once each (NEED_REPLY adds no ack)');
  t.same([gvb[1]!.payload.readUInt32LE(0), gvb[1]!.payload.readUInt32LE(4)], [1, 42], 'vring state: index, next avail');
  t.equal(s.conn.guestRamBytes, 2n << 30n, 'RAM = sum of regions');
  t.same(
    s.ch.calls.filter((c) => c[0] === 'setVringCall').map((c) => c.slice(1)),
    [[0, 100], [1, 101], [0, 140], [0, -1], [1, 141], [1, -1], [0, 150], [1, 151]],
    'CALL fds and "no fd" forwarded in order',
  );
  t.same(s.ch.calls.filter((c) => c[0] === 'setVringEnable').map((c) => c.slice(1)), [[0, true], [1, true], [0, false], [1, false]]);
  t.equal(s.io.closed.length, 0, 'no fd closed by the engine');
  t.equal(s.ch.owned.length, 2 + 2 + 2 + 2 + 2 + 2, 'every fd handed to the device');
  t.ok(s.lines.some((l) => /guest memory: 2 region\(s\), RAM 2 GiB/.test(l)), 'RAM logged');
  t.end();
});

t.test('a message in pieces, and several messages in one read', async (t) => {
  const s = setup();
  const m = msg(R.SET_MEM_TABLE, encodeMemTable([region(0)]));
  // header split, fd with the first byte, payload in 3 pieces
  await s.feed(m.subarray(0, 5), [200]);
  await s.feed(m.subarray(5, 12));
  await s.feed(m.subarray(12, 20));
  t.equal(s.ch.calls.length, 0, 'nothing dispatched before the whole message');
  await s.feed(m.subarray(20));
  t.same(s.ch.calls, [['memoryChanged', 1]]);
  t.same(s.ch.owned, [200]);
  // two messages back to back in one chunk
  await s.feed(Buffer.concat([msg(R.GET_FEATURES), msg(R.GET_QUEUE_NUM)]));
  t.same(s.io.replies().map((r) => r.request), [R.GET_FEATURES, R.GET_QUEUE_NUM]);
  t.equal(s.closedWith(), null);
  t.end();
});

t.test('malformed messages close the connection, never throw, close every fd', async (t) => {
  const cases: [string, (s: ReturnType<typeof setup>) => Promise<void>, RegExp, number[]][] = [
    ['oversized size field', async (s) => await s.feed(encodeHeader({ request: R.SET_FEATURES, flags: V1, size: 0x10000000 })), /payload size 268435456 exceeds the maximum/, []],
    ['wrong version', async (s) => await s.feed(msg(R.GET_FEATURES, undefined, 0x2)), /unsupported protocol version 2/, []],
    ['a reply where a request belongs', async (s) => await s.feed(msg(R.GET_FEATURES, undefined, 0x5)), /a reply/, []],
    ['unknown request', async (s) => await s.feed(msg(99, u64(0n)), [300]), /unsupported request 99/, [300]],
    ['known but unsupported request (SET_LOG_BASE)', async (s) => await s.feed(msg(R.SET_LOG_BASE, Buffer.alloc(16))), /unsupported SET_LOG_BASE \(6\)/, []],
    ['GET_CONFIG without the CONFIG protocol feature', async (s) => await s.feed(msg(R.GET_CONFIG, Buffer.alloc(12))), /malformed GET_CONFIG \(24\): the CONFIG protocol feature was not negotiated/, []],
    ['SET_FEATURES with 4 bytes', async (s) => await s.feed(msg(R.SET_FEATURES, Buffer.alloc(4))), /malformed SET_FEATURES \(2\): payload of 4 bytes, expected 8/, []],
    ['GET_FEATURES with a payload', async (s) => await s.feed(msg(R.GET_FEATURES, Buffer.alloc(8))), /payload of 8 bytes, expected 0/, []],
    ['SET_FEATURES with bits never offered', async (s) => await s.feed(msg(R.SET_FEATURES, u64(TMEM_DEVICE_FEATURES | bit(34)))), /bits never offered: 34/, []],
    ['SET_PROTOCOL_FEATURES with CONFIG', async (s) => await s.feed(msg(R.SET_PROTOCOL_FEATURES, u64(bit(9)))), /bits never offered: 9/, []],
    ['SET_VRING_NUM of 7 bytes', async (s) => await s.feed(msg(R.SET_VRING_NUM, Buffer.alloc(7))), /expected 8/, []],
    ['SET_VRING_NUM not a power of 2', async (s) => await s.feed(msg(R.SET_VRING_NUM, state(0, 300))), /size 300 is not a power of 2/, []],
    ['SET_VRING_NUM too large', async (s) => await s.feed(msg(R.SET_VRING_NUM, state(0, 2048))), /size 2048/, []],
    ['SET_VRING_NUM queue out of range', async (s) => await s.feed(msg(R.SET_VRING_NUM, state(2, 256))), /queue 2 does not exist \(the device has 2\)/, []],
    ['SET_VRING_ADDR of 32 bytes', async (s) => await s.feed(msg(R.SET_VRING_ADDR, Buffer.alloc(32))), /expected 40/, []],
    ['SET_VRING_ADDR misaligned', async (s) => await s.feed(msg(R.SET_VRING_ADDR, encodeVringAddr({ index: 0, flags: 0, descUser: 8n, usedUser: 0n, availUser: 0n, logGuest: 0n }))), /not 16-byte aligned/, []],
    ['SET_VRING_BASE beyond 16 bits', async (s) => await s.feed(msg(R.SET_VRING_BASE, state(0, 0x10000))), /16-bit/, []],
    ['SET_VRING_ENABLE 2', async (s) => await s.feed(msg(R.SET_VRING_ENABLE, state(0, 2))), /neither 0 nor 1/, []],
    ['SET_VRING_KICK without its fd', async (s) => await s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false))), /0 fd\(s\) received, expected 1/, []],
    ['SET_VRING_KICK with two fds', async (s) => await s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)), [301, 302]), /2 fd\(s\) received, expected 1/, [301, 302]],
    [
      'SET_VRING_KICK with an fd that is not an eventfd',
      async (s) => {
        s.io.notEventfds.add(304);
        await s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)), [304]);
      },
      /malformed SET_VRING_KICK \(12\): .*fd 304 is pipe:\[1\], not an eventfd/,
      [304],
    ],
    ['SET_VRING_CALL for a queue that does not exist', async (s) => await s.feed(msg(R.SET_VRING_CALL, encodeVringFile(5, false)), [303]), /queue 5 does not exist/, [303]],
    ['SET_MEM_TABLE shorter than its header', async (s) => await s.feed(msg(R.SET_MEM_TABLE, Buffer.alloc(4))), /shorter than the 8-byte memory header/, []],
    ['SET_MEM_TABLE with 9 regions', async (s) => await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable(Array.from({ length: 9 }, (_, i) => region(i)))), [310, 311, 312, 313, 314, 315, 316, 317]), /9 regions \(at most 8\)/, [310, 311, 312, 313, 314, 315, 316, 317]],
    ['SET_MEM_TABLE size not matching nregions', async (s) => await s.feed(msg(R.SET_MEM_TABLE, Buffer.concat([encodeMemTable([region(0)]), Buffer.alloc(8)])), [320]), /payload of 48 bytes for 1 region\(s\), expected 40/, [320]],
    ['SET_MEM_TABLE fewer fds than regions', async (s) => await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0), region(1)])), [321]), /1 fd\(s\) for 2 region\(s\)/, [321]],
    ['SET_MEM_TABLE region of size 0', async (s) => await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([{ ...region(0), size: 0n }])), [322]), /region 0 has size 0/, [322]],
    ['SET_MEM_TABLE wrapping region', async (s) => await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([{ ...region(0), guestPhysAddr: 0xfffffffffffff000n, size: 0x2000n }])), [323]), /guest-physical range wraps/, [323]],
    ['SET_MEM_TABLE overlapping regions', async (s) => await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0), { ...region(0), userspaceAddr: 0n }])), [324, 325]), /regions 0 and 1 overlap/, [324, 325]],
    ['too many fds with one message', async (s) => await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0)])), [330, 331, 332, 333, 334, 335, 336, 337, 338]), /9 fds with one message \(at most 8\)/, [330, 331, 332, 333, 334, 335, 336, 337, 338]],
    ['truncated control data (MSG_CTRUNC)', async (s) => await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0)])), Array.from({ length: 40 }, (_, i) => 400 + i)), /reading the socket failed: control data truncated/, Array.from({ length: 40 }, (_, i) => 400 + i)],
    [
      'EOF in the middle of a header',
      async (s) => {
        s.io.eof = true;
        await s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)).subarray(0, 6), [340]);
      },
      /in the middle of a header \(6 of 12 bytes\)/,
      [340],
    ],
    [
      'EOF in the middle of a payload',
      async (s) => {
        s.io.eof = true;
        await s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)).subarray(0, 14), [341]);
      },
      /in the middle of SET_VRING_KICK \(12\) \(payload 2 of 8 bytes\)/,
      [341],
    ],
  ];
  for (const [name, act, re, fds] of cases) {
    t.test(name, async (t) => {
      const s = setup();
      await act(s);
      t.match(s.closedWith(), re, 'closed with a clear reason');
      t.ok(s.lines.some((l) => re.test(l)), 'one log line says why');
      t.ok(s.ch.closed, 'the guest is removed');
      t.ok(s.io.closed.includes(3), 'the socket is closed');
      fdsAccounted(t, s, fds);
      t.equal(s.conn.closed, true);
      t.end();
    });
  }
  t.end();
});

t.test('fds on a message that takes none are closed; the message is still served', async (t) => {
  const s = setup();
  await s.feed(msg(R.GET_FEATURES), [500, 501]);
  t.same(s.io.closed, [500, 501]);
  t.equal(s.io.replies().length, 1);
  t.equal(s.closedWith(), null);
  t.ok(s.lines.some((l) => /GET_FEATURES \(1\) carried 2 fd\(s\) it does not take/.test(l)));
  // SET_VRING_CALL with "no fd" set but an fd attached: the fd is closed, the ring gets -1
  await s.feed(msg(R.SET_VRING_CALL, encodeVringFile(1, true)), [502]);
  t.same(s.ch.calls.at(-1), ['setVringCall', 1, -1]);
  t.ok(s.io.closed.includes(502));
  t.equal(s.closedWith(), null);
  t.end();
});

t.test('a device failure: NEED_REPLY gets a non-zero ack, then the connection closes', async (t) => {
  const s = setup();
  s.ch.failOn = 'memoryChanged';
  await s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0)]), V1 | VHOST_USER_NEED_REPLY_MASK), [600]);
  const r = s.io.replies();
  t.equal(r.length, 1);
  t.equal(r[0]!.flags, 0x5);
  t.equal(r[0]!.payload.readBigUInt64LE(0), 1n, 'ack 1 = failure');
  t.match(s.closedWith(), /SET_MEM_TABLE \(5\) failed: device refuses memoryChanged/);
  t.same(s.ch.owned, [600], 'the fd was the device’s once handed over');
  t.notOk(s.io.closed.includes(600), 'and the engine does not close it twice');
  t.end();
});

t.test('a reset stops the rings and keeps the connection', async (t) => {
  const s = setup();
  await s.feed(msg(R.RESET_OWNER));
  await s.feed(msg(R.RESET_DEVICE));
  t.same(s.ch.calls, [['reset'], ['reset']]);
  t.equal(s.closedWith(), null);
  t.end();
});

t.test('the front-end closing between messages is an ordinary goodbye', async (t) => {
  const s = setup();
  await s.feed(msg(R.GET_FEATURES));
  s.io.eof = true;
  s.conn.onReadable();
  await settle();
  t.equal(s.closedWith(), 'front-end closed the connection');
  t.ok(s.ch.closed);
  s.conn.onReadable();
  s.conn.close('again');
  t.equal(s.closedWith(), 'front-end closed the connection', 'close is idempotent');
  t.end();
});

t.test('a flood is served in slices, not in one event-loop turn', async (t) => {
  const s = setup();
  const n = 200;
  s.io.push(Buffer.concat(Array.from({ length: n }, () => msg(R.GET_FEATURES))));
  s.conn.onReadable();
  t.equal(s.io.sent.length, 64, 'one slice');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(s.io.sent.length, n, 'the rest on later turns');
  t.end();
});

const configMsg = (offset: number, size: number, data?: Uint8Array) => {
  const b = Buffer.alloc(12 + size);
  b.writeUInt32LE(offset, 0);
  b.writeUInt32LE(size, 4);
  if (data) b.set(data, 12);
  return b;
};

t.test('GET_CONFIG with CONFIG negotiated: the device config bytes in a reply of the same shape', async (t) => {
  const s = setup(new ConfigDevice());
  const cfgFeature = TMEM_PROTOCOL_FEATURES | bit(VhostUserProtocolFeature.CONFIG);
  await s.feed(msg(R.GET_PROTOCOL_FEATURES));
  t.ok(s.io.replies()[0]!.payload.readBigUInt64LE(0) & bit(VhostUserProtocolFeature.CONFIG), 'CONFIG offered by a device with a config space');
  await s.feed(msg(R.SET_PROTOCOL_FEATURES, u64(cfgFeature)));
  await s.feed(msg(R.GET_CONFIG, configMsg(4, 8)));
  const r = s.io.replies().at(-1)!;
  t.equal(r.request, R.GET_CONFIG);
  t.equal(r.flags, 0x5);
  t.same([r.payload.readUInt32LE(0), r.payload.readUInt32LE(4)], [4, 8], 'offset and size echoed');
  t.same([...r.payload.subarray(12)], [5, 6, 7, 8, 9, 10, 11, 12], 'bytes 4..11 of the config space');
  // SET_CONFIG: accepted in range, refused by the device beyond it (connection closed, NEED_REPLY nacked)
  await s.feed(msg(R.SET_CONFIG, configMsg(0, 2, Uint8Array.of(0xaa, 0xbb)), V1 | VHOST_USER_NEED_REPLY_MASK));
  t.same(s.device.configWrites, [[0, [0xaa, 0xbb]]]);
  t.equal(s.io.replies().at(-1)!.payload.readBigUInt64LE(0), 0n, 'acked');
  t.equal(s.closedWith(), null);
  await s.feed(msg(R.SET_CONFIG, configMsg(6, 4, Uint8Array.of(1, 2, 3, 4)), V1 | VHOST_USER_NEED_REPLY_MASK));
  t.equal(s.io.replies().at(-1)!.payload.readBigUInt64LE(0), 1n, 'refusal nacked');
  t.match(s.closedWith(), /SET_CONFIG \(25\) failed: bytes 8.. are read-only/);
  t.end();
});

t.test('GET_CONFIG outside the 256-byte config space or with a wrong size is malformed', async (t) => {
  for (const [payload, re] of [
    [configMsg(250, 8), /config range 250\+8 is outside the 256-byte config space/],
    [Buffer.concat([configMsg(0, 4), Buffer.alloc(4)]), /payload of 20 bytes for 4 config bytes, expected 16/],
    [Buffer.alloc(8), /shorter than the 12-byte config header/],
  ] as const) {
    const s = setup(new ConfigDevice());
    await s.feed(msg(R.SET_PROTOCOL_FEATURES, u64(TMEM_PROTOCOL_FEATURES | bit(VhostUserProtocolFeature.CONFIG))));
    await s.feed(msg(R.GET_CONFIG, payload));
    t.match(s.closedWith(), re);
    t.ok(s.ch.closed, 'the instance is closed');
  }
  // a device without a config space never offers CONFIG, so it cannot be negotiated
  const s = setup();
  await s.feed(msg(R.SET_PROTOCOL_FEATURES, u64(TMEM_PROTOCOL_FEATURES | bit(VhostUserProtocolFeature.CONFIG))));
  t.match(s.closedWith(), /bits never offered: 9/);
  t.end();
});

t.test('while a command waits for the worker nothing more is read; its reply comes when the worker answers', async (t) => {
  const s = setup();
  let release!: (n: number) => void;
  s.ch.getVringBase = () => new Promise<number>((r) => (release = r));
  s.io.push(Buffer.concat([msg(R.GET_VRING_BASE, state(0, 0)), msg(R.GET_FEATURES)]));
  s.conn.onReadable();
  await settle();
  t.equal(s.io.replies().length, 0, 'no reply yet, and GET_FEATURES behind it not read');
  t.equal(s.conn.waitingFor, 'GET_VRING_BASE (11)');
  release(9);
  await settle();
  t.same(s.io.replies().map((r) => r.request), [R.GET_VRING_BASE, R.GET_FEATURES], 'in order once the worker answered');
  t.equal(s.io.replies()[0]!.payload.readUInt32LE(4), 9);
  t.equal(s.conn.waitingFor, null);
  t.end();
});

t.test('a worker that does not answer in time: NEED_REPLY gets a non-zero ack and the connection closes', async (t) => {
  const s = setup();
  s.ch.setVringEnable = () => Promise.reject(new Error('vring worker did not answer setVringEnable within 5000 ms (stalled?)'));
  await s.feed(msg(R.SET_VRING_ENABLE, state(0, 1), V1 | VHOST_USER_NEED_REPLY_MASK));
  t.equal(s.io.replies().at(-1)!.payload.readBigUInt64LE(0), 1n);
  t.match(s.closedWith(), /SET_VRING_ENABLE \(18\) failed: vring worker did not answer/);
  t.ok(s.ch.closed, 'the close is posted (the worker runs it after the late command)');
  t.equal(s.device.closedConns, 1, 'the device was told');
  t.end();
});
