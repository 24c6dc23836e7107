// The vhost-user engine (host/vhost-user/connection.ts) against a fake socket and
// a recording device: QEMU's sequence, reply flags and payloads, REPLY_ACK,
// partial reads, and every malformed input closing the connection with all
// its fds closed and nothing thrown.
import t from 'tap';
import type { BackendMemRegion, BackendSession, VhostUserBackend } from '../host/vhost-user/device.js';
import { type ConnIo, VhostUserConnection } from '../host/vhost-user/connection.js';
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

class FakeSession implements BackendSession {
  calls: Call[] = [];
  owned: number[] = [];
  closed = false;
  failOn: string | null = null;
  private rec(name: string, ...a: unknown[]) {
    this.calls.push([name, ...a]);
    if (this.failOn === name) throw new Error(`device refuses ${name}`);
  }
  setFeatures(f: bigint) {
    this.rec('setFeatures', f);
  }
  memoryChanged(regions: readonly BackendMemRegion[]) {
    this.owned.push(...regions.map((r) => r.fd));
    this.rec('memoryChanged', regions.length);
  }
  setVringNum(q: number, n: number) {
    this.rec('setVringNum', q, n);
  }
  setVringAddr(q: number, a: unknown) {
    this.rec('setVringAddr', q, a);
  }
  setVringBase(q: number, b: number) {
    this.rec('setVringBase', q, b);
  }
  getVringBase(q: number): number {
    this.rec('getVringBase', q);
    return 42;
  }
  setVringKick(q: number, fd: number) {
    if (fd >= 0) this.owned.push(fd);
    this.rec('setVringKick', q, fd);
  }
  setVringCall(q: number, fd: number) {
    if (fd >= 0) this.owned.push(fd);
    this.rec('setVringCall', q, fd);
  }
  setVringErr(q: number, fd: number) {
    if (fd >= 0) this.owned.push(fd);
    this.rec('setVringErr', q, fd);
  }
  setVringEnable(q: number, e: boolean) {
    this.rec('setVringEnable', q, e);
  }
  reset() {
    this.rec('reset');
  }
  close() {
    this.closed = true;
  }
}

class FakeBackend implements VhostUserBackend {
  readonly name = 'test';
  session = new FakeSession();
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
    return TMEM_PROTOCOL_FEATURES;
  }
  open() {
    return this.session;
  }
}

function setup() {
  const io = new FakeIo();
  const be = new FakeBackend();
  const lines: string[] = [];
  const log: Logger = { error: (m) => lines.push(`error: ${m}`), warn: (m) => lines.push(`warn: ${m}`), info: (m) => lines.push(`info: ${m}`), debug: () => {} };
  let closedWith: string | null = null;
  const conn = new VhostUserConnection({ fd: 3, io, backend: be, log, label: 'vm test', onClose: (_c, r) => (closedWith = r) });
  conn.open();
  const feed = (b: Buffer, fds: number[] = []) => {
    io.push(b, fds);
    conn.onReadable();
  };
  return { io, be, conn, lines, feed, closedWith: () => closedWith };
}

const msg = (req: number, payload?: Buffer, flags = V1) => encodeMsg(req, flags, payload);
const u64 = (v: bigint) => encodeU64(v);
const state = (index: number, num: number) => encodeVringState({ index, num });
const region = (i: number) => ({ guestPhysAddr: BigInt(i) << 32n, size: 1n << 30n, userspaceAddr: 0x7f0000000000n + (BigInt(i) << 32n), mmapOffset: 0n });
const addr = (index: number) => encodeVringAddr({ index, flags: 0, descUser: 0x7f0000001000n, usedUser: 0x7f0000003000n, availUser: 0x7f0000002000n, logGuest: 0n });

/** Every fd the peer sent is either closed by the engine or owned by the device, never both. */
function fdsAccounted(tt: Pick<typeof t, 'equal'>, s: ReturnType<typeof setup>, sent: number[]) {
  for (const fd of sent) {
    const c = s.io.closed.filter((x) => x === fd).length;
    const o = s.be.session.owned.filter((x) => x === fd).length;
    tt.equal(c + o, 1, `fd ${fd} closed or owned exactly once (closed ${c}, owned ${o})`);
  }
}

t.test("QEMU 11.1's sequence for vhost-user-test-device-pci, replies flagged 0x5", (t) => {
  const s = setup();
  const ack = VHOST_USER_NEED_REPLY_MASK | V1;
  // realize
  s.feed(msg(R.GET_FEATURES));
  s.feed(msg(R.GET_PROTOCOL_FEATURES));
  s.feed(msg(R.SET_PROTOCOL_FEATURES, u64(TMEM_PROTOCOL_FEATURES)));
  s.feed(msg(R.GET_QUEUE_NUM));
  s.feed(msg(R.SET_OWNER, undefined, ack));
  s.feed(msg(R.GET_FEATURES));
  for (let q = 0; q < 2; q++) {
    s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ack), [100 + q]);
    s.feed(msg(R.SET_VRING_ERR, encodeVringFile(q, false), ack), [110 + q]);
  }
  // driver start
  s.feed(msg(R.SET_FEATURES, u64(TMEM_DEVICE_FEATURES), ack));
  s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0), region(1)]), ack), [120, 121]);
  for (let q = 0; q < 2; q++) {
    s.feed(msg(R.SET_VRING_NUM, state(q, 256), ack));
    s.feed(msg(R.SET_VRING_BASE, state(q, 0), ack));
    s.feed(msg(R.SET_VRING_ADDR, addr(q), ack));
    s.feed(msg(R.SET_VRING_KICK, encodeVringFile(q, false), ack), [130 + q]);
    s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ack), [140 + q]);
    s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, true), ack));
  }
  for (let q = 0; q < 2; q++) s.feed(msg(R.SET_VRING_ENABLE, state(q, 1), ack));
  for (let q = 0; q < 2; q++) s.feed(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ack), [150 + q]);
  // stop
  for (let q = 0; q < 2; q++) {
    s.feed(msg(R.SET_VRING_ENABLE, state(q, 0), ack));
    s.feed(msg(R.GET_VRING_BASE, state(q, 0), ack));
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
    s.be.session.calls.filter((c) => c[0] === 'setVringCall').map((c) => c.slice(1)),
    [[0, 100], [1, 101], [0, 140], [0, -1], [1, 141], [1, -1], [0, 150], [1, 151]],
    'CALL fds and "no fd" forwarded in order',
  );
  t.same(s.be.session.calls.filter((c) => c[0] === 'setVringEnable').map((c) => c.slice(1)), [[0, true], [1, true], [0, false], [1, false]]);
  t.equal(s.io.closed.length, 0, 'no fd closed by the engine');
  t.equal(s.be.session.owned.length, 2 + 2 + 2 + 2 + 2 + 2, 'every fd handed to the device');
  t.ok(s.lines.some((l) => /guest memory: 2 region\(s\), RAM 2 GiB/.test(l)), 'RAM logged');
  t.end();
});

t.test('a message in pieces, and several messages in one read', (t) => {
  const s = setup();
  const m = msg(R.SET_MEM_TABLE, encodeMemTable([region(0)]));
  // header split, fd with the first byte, payload in 3 pieces
  s.feed(m.subarray(0, 5), [200]);
  s.feed(m.subarray(5, 12));
  s.feed(m.subarray(12, 20));
  t.equal(s.be.session.calls.length, 0, 'nothing dispatched before the whole message');
  s.feed(m.subarray(20));
  t.same(s.be.session.calls, [['memoryChanged', 1]]);
  t.same(s.be.session.owned, [200]);
  // two messages back to back in one chunk
  s.feed(Buffer.concat([msg(R.GET_FEATURES), msg(R.GET_QUEUE_NUM)]));
  t.same(s.io.replies().map((r) => r.request), [R.GET_FEATURES, R.GET_QUEUE_NUM]);
  t.equal(s.closedWith(), null);
  t.end();
});

t.test('malformed messages close the connection, never throw, close every fd', (t) => {
  const cases: [string, (s: ReturnType<typeof setup>) => void, RegExp, number[]][] = [
    ['oversized size field', (s) => s.feed(encodeHeader({ request: R.SET_FEATURES, flags: V1, size: 0x10000000 })), /payload size 268435456 exceeds the maximum/, []],
    ['wrong version', (s) => s.feed(msg(R.GET_FEATURES, undefined, 0x2)), /unsupported protocol version 2/, []],
    ['a reply where a request belongs', (s) => s.feed(msg(R.GET_FEATURES, undefined, 0x5)), /a reply/, []],
    ['unknown request', (s) => s.feed(msg(99, u64(0n)), [300]), /unsupported request 99/, [300]],
    ['known but unsupported request (GET_CONFIG)', (s) => s.feed(msg(R.GET_CONFIG, Buffer.alloc(12))), /unsupported GET_CONFIG \(24\)/, []],
    ['SET_FEATURES with 4 bytes', (s) => s.feed(msg(R.SET_FEATURES, Buffer.alloc(4))), /malformed SET_FEATURES \(2\): payload of 4 bytes, expected 8/, []],
    ['GET_FEATURES with a payload', (s) => s.feed(msg(R.GET_FEATURES, Buffer.alloc(8))), /payload of 8 bytes, expected 0/, []],
    ['SET_FEATURES with bits never offered', (s) => s.feed(msg(R.SET_FEATURES, u64(TMEM_DEVICE_FEATURES | bit(34)))), /bits never offered: 34/, []],
    ['SET_PROTOCOL_FEATURES with CONFIG', (s) => s.feed(msg(R.SET_PROTOCOL_FEATURES, u64(bit(9)))), /bits never offered: 9/, []],
    ['SET_VRING_NUM of 7 bytes', (s) => s.feed(msg(R.SET_VRING_NUM, Buffer.alloc(7))), /expected 8/, []],
    ['SET_VRING_NUM not a power of 2', (s) => s.feed(msg(R.SET_VRING_NUM, state(0, 300))), /size 300 is not a power of 2/, []],
    ['SET_VRING_NUM too large', (s) => s.feed(msg(R.SET_VRING_NUM, state(0, 2048))), /size 2048/, []],
    ['SET_VRING_NUM queue out of range', (s) => s.feed(msg(R.SET_VRING_NUM, state(2, 256))), /queue 2 does not exist \(the device has 2\)/, []],
    ['SET_VRING_ADDR of 32 bytes', (s) => s.feed(msg(R.SET_VRING_ADDR, Buffer.alloc(32))), /expected 40/, []],
    ['SET_VRING_ADDR misaligned', (s) => s.feed(msg(R.SET_VRING_ADDR, encodeVringAddr({ index: 0, flags: 0, descUser: 8n, usedUser: 0n, availUser: 0n, logGuest: 0n }))), /not 16-byte aligned/, []],
    ['SET_VRING_BASE beyond 16 bits', (s) => s.feed(msg(R.SET_VRING_BASE, state(0, 0x10000))), /16-bit/, []],
    ['SET_VRING_ENABLE 2', (s) => s.feed(msg(R.SET_VRING_ENABLE, state(0, 2))), /neither 0 nor 1/, []],
    ['SET_VRING_KICK without its fd', (s) => s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false))), /0 fd\(s\) received, expected 1/, []],
    ['SET_VRING_KICK with two fds', (s) => s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)), [301, 302]), /2 fd\(s\) received, expected 1/, [301, 302]],
    [
      'SET_VRING_KICK with an fd that is not an eventfd',
      (s) => {
        s.io.notEventfds.add(304);
        s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)), [304]);
      },
      /malformed SET_VRING_KICK \(12\): .*fd 304 is pipe:\[1\], not an eventfd/,
      [304],
    ],
    ['SET_VRING_CALL for a queue that does not exist', (s) => s.feed(msg(R.SET_VRING_CALL, encodeVringFile(5, false)), [303]), /queue 5 does not exist/, [303]],
    ['SET_MEM_TABLE shorter than its header', (s) => s.feed(msg(R.SET_MEM_TABLE, Buffer.alloc(4))), /shorter than the 8-byte memory header/, []],
    ['SET_MEM_TABLE with 9 regions', (s) => s.feed(msg(R.SET_MEM_TABLE, encodeMemTable(Array.from({ length: 9 }, (_, i) => region(i)))), [310, 311, 312, 313, 314, 315, 316, 317]), /9 regions \(at most 8\)/, [310, 311, 312, 313, 314, 315, 316, 317]],
    ['SET_MEM_TABLE size not matching nregions', (s) => s.feed(msg(R.SET_MEM_TABLE, Buffer.concat([encodeMemTable([region(0)]), Buffer.alloc(8)])), [320]), /payload of 48 bytes for 1 region\(s\), expected 40/, [320]],
    ['SET_MEM_TABLE fewer fds than regions', (s) => s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0), region(1)])), [321]), /1 fd\(s\) for 2 region\(s\)/, [321]],
    ['SET_MEM_TABLE region of size 0', (s) => s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([{ ...region(0), size: 0n }])), [322]), /region 0 has size 0/, [322]],
    ['SET_MEM_TABLE wrapping region', (s) => s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([{ ...region(0), guestPhysAddr: 0xfffffffffffff000n, size: 0x2000n }])), [323]), /guest-physical range wraps/, [323]],
    ['SET_MEM_TABLE overlapping regions', (s) => s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0), { ...region(0), userspaceAddr: 0n }])), [324, 325]), /regions 0 and 1 overlap/, [324, 325]],
    ['too many fds with one message', (s) => s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0)])), [330, 331, 332, 333, 334, 335, 336, 337, 338]), /9 fds with one message \(at most 8\)/, [330, 331, 332, 333, 334, 335, 336, 337, 338]],
    ['truncated control data (MSG_CTRUNC)', (s) => s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0)])), Array.from({ length: 40 }, (_, i) => 400 + i)), /reading the socket failed: control data truncated/, Array.from({ length: 40 }, (_, i) => 400 + i)],
    [
      'EOF in the middle of a header',
      (s) => {
        s.io.eof = true;
        s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)).subarray(0, 6), [340]);
      },
      /in the middle of a header \(6 of 12 bytes\)/,
      [340],
    ],
    [
      'EOF in the middle of a payload',
      (s) => {
        s.io.eof = true;
        s.feed(msg(R.SET_VRING_KICK, encodeVringFile(0, false)).subarray(0, 14), [341]);
      },
      /in the middle of SET_VRING_KICK \(12\) \(payload 2 of 8 bytes\)/,
      [341],
    ],
  ];
  for (const [name, act, re, fds] of cases) {
    t.test(name, (t) => {
      const s = setup();
      t.doesNotThrow(() => act(s));
      t.match(s.closedWith(), re, 'closed with a clear reason');
      t.ok(s.lines.some((l) => re.test(l)), 'one log line says why');
      t.ok(s.be.session.closed, 'the guest is removed');
      t.ok(s.io.closed.includes(3), 'the socket is closed');
      fdsAccounted(t, s, fds);
      t.equal(s.conn.closed, true);
      t.end();
    });
  }
  t.end();
});

t.test('fds on a message that takes none are closed; the message is still served', (t) => {
  const s = setup();
  s.feed(msg(R.GET_FEATURES), [500, 501]);
  t.same(s.io.closed, [500, 501]);
  t.equal(s.io.replies().length, 1);
  t.equal(s.closedWith(), null);
  t.ok(s.lines.some((l) => /GET_FEATURES \(1\) carried 2 fd\(s\) it does not take/.test(l)));
  // SET_VRING_CALL with "no fd" set but an fd attached: the fd is closed, the ring gets -1
  s.feed(msg(R.SET_VRING_CALL, encodeVringFile(1, true)), [502]);
  t.same(s.be.session.calls.at(-1), ['setVringCall', 1, -1]);
  t.ok(s.io.closed.includes(502));
  t.equal(s.closedWith(), null);
  t.end();
});

t.test('a device failure: NEED_REPLY gets a non-zero ack, then the connection closes', (t) => {
  const s = setup();
  s.be.session.failOn = 'memoryChanged';
  s.feed(msg(R.SET_MEM_TABLE, encodeMemTable([region(0)]), V1 | VHOST_USER_NEED_REPLY_MASK), [600]);
  const r = s.io.replies();
  t.equal(r.length, 1);
  t.equal(r[0]!.flags, 0x5);
  t.equal(r[0]!.payload.readBigUInt64LE(0), 1n, 'ack 1 = failure');
  t.match(s.closedWith(), /SET_MEM_TABLE \(5\) failed: device refuses memoryChanged/);
  t.same(s.be.session.owned, [600], 'the fd was the device’s once handed over');
  t.notOk(s.io.closed.includes(600), 'and the engine does not close it twice');
  t.end();
});

t.test('a reset stops the rings and keeps the connection', (t) => {
  const s = setup();
  s.feed(msg(R.RESET_OWNER));
  s.feed(msg(R.RESET_DEVICE));
  t.same(s.be.session.calls, [['reset'], ['reset']]);
  t.equal(s.closedWith(), null);
  t.end();
});

t.test('the front-end closing between messages is an ordinary goodbye', (t) => {
  const s = setup();
  s.feed(msg(R.GET_FEATURES));
  s.io.eof = true;
  s.conn.onReadable();
  t.equal(s.closedWith(), 'front-end closed the connection');
  t.ok(s.be.session.closed);
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
