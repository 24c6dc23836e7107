// A seeded, bounded fuzz test of the vhost-user surface a hostile front-end
// controls (another local user's QEMU, or anything that can connect to a VM
// socket): message headers, sizes, payload fields, fds, memory tables, ring
// addresses, order, and how the bytes are split over sendmsg calls.
//
// Every sequence starts from QEMU's real start sequence and is mutated by a
// deterministic PRNG. The seed is printed with every failure; TMEM_FUZZ_SEED
// picks another seed, TMEM_FUZZ_ITERS and TMEM_FUZZ_DAEMON_ITERS set the
// iteration counts, TMEM_FUZZ_ONLY=i replays iteration i alone (of each part),
// TMEM_FUZZ_VERBOSE=1 prints the vring worker's lines.
//
// 1. In-process (most iterations): the real connection (host/vhost-user/
//    connection.ts) on a socketpair, the real vring worker (DataPlane, tmem
//    device) behind it, real memfds and eventfds. For every sequence: nothing
//    escapes (the connection answers or closes with a reason), every reply
//    is well formed and answers the message it should, the fds of this
//    process are back to where they were once the connection is gone, and a
//    valid sequence on a fresh connection still works afterwards.
// 2. The built daemon (fewer iterations): fuzzed connections on one VM's
//    socket over real sockets, closed at random points, while the C load
//    generator verifies every page on a second VM and a third VM answers
//    GET_FEATURES throughout. The daemon never exits nor logs "BUG:", logs a
//    reason for each closed connection, and its fd count comes back.
import t from 'tap';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../native/index.js';
import { DataPlane } from '../host/vhost-user/client.js';
import { VhostUserConnection, type ConnIo } from '../host/vhost-user/connection.js';
import { TMEM_DEVICE_FEATURES, TMEM_PROTOCOL_FEATURES, TmemVm, tmemWorkerModule } from '../host/tmem/vm.js';
import { BLK_PROTOCOL_FEATURES, BlkVm, blkWorkerModule } from '../host/blk/vm.js';
import { BLK_FEATURES, blkConfigSpace } from '../host/blk/blk-config.js';
import type { VhostUserDevice } from '../host/vhost-user/device.js';
import type { Logger } from '../host/log.js';
import {
  decodeHeader,
  encodeHeader,
  encodeMemTable,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  requestName,
  VHOST_USER_HDR_SIZE,
  VHOST_USER_MAX_PAYLOAD,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_FLAGS,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VhostUserRequest as R,
  type MemoryRegionDesc,
} from '../host/vhost-user/messages.js';
import { buildLoadgen, explain, runLoadgen, type LoadgenResult } from './loadgen/harness.js';
import { Daemon, until, VhostSocket } from './vhost/harness.js';
import { requestDaemon } from '../host/control/client.js';

const DEFAULT_SEED = 0x7e3d1;
const SEED = envInt('TMEM_FUZZ_SEED', DEFAULT_SEED);
const ITERS = envInt('TMEM_FUZZ_ITERS', 800);
const DAEMON_ITERS = envInt('TMEM_FUZZ_DAEMON_ITERS', 300);
const BLK_ITERS = envInt('TMEM_FUZZ_BLK_ITERS', 250);
/** Only this iteration (of each part): the replay of one failure. */
const ONLY = process.env.TMEM_FUZZ_ONLY ? envInt('TMEM_FUZZ_ONLY', 0) : null;
const iterations = (n: number): number[] => (ONLY !== null ? [ONLY] : Array.from({ length: n }, (_, i) => i));

function envInt(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v} is not a non-negative integer`);
  return n;
}

// ------------------------------------------------------------------ PRNG

/** mulberry32: one 32-bit state, fast, and well enough spread for test input (not for anything secret). */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    let x = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  }
  /** 0..n-1 */
  int(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** The seed of iteration i of a part: the same (SEED, part, i) always gives the same sequence. */
const iterSeed = (part: number, i: number): number => (Math.imul(SEED ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(part * 0x10000 + i + 1, 0xc2b2ae35)) >>> 0;
const replay = (part: string, i: number) => `seed ${SEED}, ${part} iteration ${i} (replay: TMEM_FUZZ_SEED=${SEED} TMEM_FUZZ_ONLY=${i})`;

// ------------------------------------------------------------------ what a front-end sends

/** Kinds of fd a fuzzed message may carry (made just before sending; the sender's copy is closed after the sequence). */
type FdKind = 'eventfd' | 'ram' | 'ramGarbage' | 'ramUnsealed' | 'ramTiny' | 'devnull' | 'socket';
const FD_KINDS: readonly FdKind[] = ['eventfd', 'ram', 'ramUnsealed', 'ramTiny', 'devnull', 'socket'];

interface Msg {
  req: number;
  flags: number;
  payload: Buffer;
  /** the header's size field when it disagrees with the payload */
  size?: number;
  fds: FdKind[];
}

/** A step of a sequence: a message, or something the test does between messages. */
type Step =
  | { readonly kind: 'msg'; m: Msg }
  /** raw bytes (garbage) in the stream */
  | { readonly kind: 'raw'; bytes: Buffer; fds: FdKind[] }
  /** the front-end kicks every kick eventfd it sent */
  | { readonly kind: 'kick' }
  /** the daemon closes the connection (what listener.stop does at shutdown), at whatever point it is */
  | { readonly kind: 'externalClose' }
  /** the front-end goes away here (the rest is never sent) */
  | { readonly kind: 'hangup' };

const V1 = VHOST_USER_VERSION;
const ACK = V1 | VHOST_USER_NEED_REPLY_MASK;
const NQ = 2;

/**
 * The device under fuzzing: what it offers and how QEMU starts it. The
 * in-process tests set it before they run (they run one after another);
 * tmem unless a test says otherwise.
 */
interface Profile {
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  /** tmem-blk: QEMU reads the config space at realize (CONFIG negotiated) */
  readonly config: Uint8Array | null;
}
const TMEM: Profile = { features: TMEM_DEVICE_FEATURES, protocolFeatures: TMEM_PROTOCOL_FEATURES, config: null };
const BLK_SIZE = 64n << 20n;
const BLK: Profile = { features: BLK_FEATURES, protocolFeatures: BLK_PROTOCOL_FEATURES, config: blkConfigSpace(Number(BLK_SIZE), NQ) };
let dev: Profile = TMEM;

type Tap = Pick<typeof t, 'teardown' | 'comment' | 'fail' | 'equal' | 'same' | 'ok' | 'notOk'>;
const QSIZE = 256;
const RAM_FILE = 2n << 20n; // each guest RAM memfd
const REGION = 1n << 20n;
const UA = 0x7f3400000000n;

const ringAddr = (q: number) => ({ desc: UA + BigInt(q) * 0x10000n, avail: UA + BigInt(q) * 0x10000n + 0x4000n, used: UA + BigInt(q) * 0x10000n + 0x8000n });
const region = (i: number): MemoryRegionDesc => ({ guestPhysAddr: BigInt(i) * REGION * 4n, size: REGION, userspaceAddr: UA + BigInt(i) * REGION * 4n, mmapOffset: 0n });
const msg = (req: number, payload: Buffer = Buffer.alloc(0), flags = V1, fds: FdKind[] = []): Step => ({ kind: 'msg', m: { req, flags, payload, fds } });

/** QEMU's realize and driver start for a tmem device of NQ queues, then a stop of every ring (DESIGN.md, test/vhost-connection.ts). */
function validSequence(bases: readonly number[] = [0, 0]): Step[] {
  const s: Step[] = [
    msg(R.GET_FEATURES),
    msg(R.GET_PROTOCOL_FEATURES),
    msg(R.SET_PROTOCOL_FEATURES, encodeU64(dev.protocolFeatures)),
    msg(R.GET_QUEUE_NUM),
    ...(dev.config ? [msg(R.GET_CONFIG, configPayload(0, dev.config.length))] : []),
    msg(R.SET_OWNER, undefined, ACK),
    msg(R.GET_FEATURES),
  ];
  for (let q = 0; q < NQ; q++) {
    s.push(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ACK, ['eventfd']));
    s.push(msg(R.SET_VRING_ERR, encodeVringFile(q, false), ACK, ['eventfd']));
  }
  s.push(msg(R.SET_FEATURES, encodeU64(dev.features), ACK));
  s.push(msg(R.SET_MEM_TABLE, encodeMemTable([region(0)]), ACK, ['ram']));
  for (let q = 0; q < NQ; q++) {
    const a = ringAddr(q);
    s.push(msg(R.SET_VRING_NUM, encodeVringState({ index: q, num: QSIZE }), ACK));
    s.push(msg(R.SET_VRING_BASE, encodeVringState({ index: q, num: bases[q]! }), ACK));
    s.push(msg(R.SET_VRING_ADDR, encodeVringAddr({ index: q, flags: 0, descUser: a.desc, availUser: a.avail, usedUser: a.used, logGuest: 0n }), ACK));
    s.push(msg(R.SET_VRING_KICK, encodeVringFile(q, false), ACK, ['eventfd']));
    s.push(msg(R.SET_VRING_CALL, encodeVringFile(q, false), ACK, ['eventfd']));
  }
  for (let q = 0; q < NQ; q++) s.push(msg(R.SET_VRING_ENABLE, encodeVringState({ index: q, num: 1 }), ACK));
  for (let q = 0; q < NQ; q++) {
    s.push(msg(R.SET_VRING_ENABLE, encodeVringState({ index: q, num: 0 }), ACK));
    s.push(msg(R.GET_VRING_BASE, encodeVringState({ index: q, num: 0 }), ACK));
  }
  return s;
}

// ------------------------------------------------------------------ mutations

const KNOWN = Object.values(R) as number[];
const U32_EDGES = [0, 1, 2, 3, 7, 8, 255, 256, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];
const NUMS = [0, 1, 2, 3, 255, 256, 1023, 1024, 2048, 32768, 65535, 65536, 0xffffffff];
const U64_EDGES = [0n, 1n, 0xfffn, 1n << 32n, 1n << 53n, (1n << 53n) + 16n, 1n << 63n, (1n << 64n) - 16n, (1n << 64n) - 1n];

function randomRequest(r: Rng): number {
  switch (r.int(4)) {
    case 0:
      return r.pick(KNOWN);
    case 1:
      return r.int(48);
    case 2:
      return r.pick(U32_EDGES);
    default:
      return r.u32();
  }
}

function randomFlags(r: Rng): number {
  return r.pick([0, 1, 2, 3, 1 | VHOST_USER_REPLY_MASK, ACK, ACK | VHOST_USER_REPLY_MASK, 1 | ((r.u32() << 4) >>> 0), r.u32(), 0x9, 0xb]) >>> 0;
}

function randomU64(r: Rng): bigint {
  switch (r.int(4)) {
    case 0:
      return r.pick(U64_EDGES);
    case 1:
      return UA + BigInt(r.int(8 << 20)) - (1n << 20n);
    case 2:
      return BigInt(r.u32());
    default:
      return r.u64();
  }
}

function randomRegion(r: Rng): MemoryRegionDesc {
  const base = region(r.int(3));
  switch (r.int(8)) {
    case 0:
      return { ...base, size: 0n };
    case 1:
      return { ...base, size: r.pick([1n, 4095n, RAM_FILE, RAM_FILE + 1n, 1n << 40n, 1n << 63n, (1n << 64n) - 1n]) };
    case 2:
      return { ...base, guestPhysAddr: (1n << 64n) - 4096n, size: 8192n };
    case 3:
      return { ...base, mmapOffset: r.pick([1n, 4096n, REGION, RAM_FILE, RAM_FILE - 4096n, 1n << 62n, (1n << 64n) - 4096n]) };
    case 4:
      return { ...base, userspaceAddr: randomU64(r) };
    case 5:
      return { guestPhysAddr: randomU64(r), size: randomU64(r), userspaceAddr: randomU64(r), mmapOffset: randomU64(r) };
    default:
      return base;
  }
}

/** The payload of `req` with fuzzed fields (right size, wrong values). */
function fuzzedPayload(r: Rng, req: number): { payload: Buffer; fds?: FdKind[] } {
  const idx = () => (r.chance(0.5) ? r.int(NQ) : r.pick(U32_EDGES));
  switch (req) {
    case R.SET_VRING_NUM:
    case R.SET_VRING_BASE:
    case R.GET_VRING_BASE:
    case R.SET_VRING_ENABLE:
      return { payload: encodeVringState({ index: idx(), num: r.chance(0.7) ? r.pick(NUMS) : r.u32() }) };
    case R.SET_VRING_ADDR: {
      const a = ringAddr(r.int(NQ));
      const f = (x: bigint) => (r.chance(0.4) ? x : r.chance(0.5) ? x + BigInt(r.pick([1, 2, 4, 8, 16, 0x100000, -16, -0x100000])) : randomU64(r));
      const v = (x: bigint) => BigInt.asUintN(64, x);
      return { payload: encodeVringAddr({ index: idx(), flags: r.chance(0.5) ? 0 : r.u32(), descUser: v(f(a.desc)), availUser: v(f(a.avail)), usedUser: v(f(a.used)), logGuest: randomU64(r) }) };
    }
    case R.SET_VRING_KICK:
    case R.SET_VRING_CALL:
    case R.SET_VRING_ERR: {
      const v = r.chance(0.5) ? encodeVringFile(idx() & 0xff, r.chance(0.3)) : encodeU64(randomU64(r));
      return { payload: v, fds: r.chance(0.7) ? ['eventfd'] : r.chance(0.5) ? [] : [r.pick(FD_KINDS)] };
    }
    case R.SET_MEM_TABLE: {
      const n = r.int(10);
      const regions = Array.from({ length: Math.min(n, 8) }, () => randomRegion(r));
      if (n >= 2 && r.chance(0.3)) regions[1] = { ...regions[0]! }; // overlap
      let p = encodeMemTable(regions);
      if (n > 8 || r.chance(0.1)) {
        p = Buffer.from(p);
        p.writeUInt32LE(r.chance(0.5) ? n : r.u32(), 0);
      }
      const nfds = r.chance(0.7) ? regions.length : r.int(10);
      return { payload: p, fds: Array.from({ length: nfds }, () => (r.chance(0.7) ? 'ram' : r.pick(FD_KINDS))) };
    }
    case R.SET_FEATURES:
      return { payload: encodeU64(r.chance(0.5) ? dev.features & randomU64(r) : randomU64(r)) };
    case R.SET_PROTOCOL_FEATURES:
      return { payload: encodeU64(r.chance(0.5) ? dev.protocolFeatures & randomU64(r) : randomU64(r)) };
    case R.GET_CONFIG:
    case R.SET_CONFIG: {
      // offset and size around the 256-byte config space and the device's own (virtio_blk_config: 60 bytes)
      const size = r.pick([0, 1, 4, 8, 59, 60, 61, 64, 255, 256, 257, 0xffffffff, r.u32()]);
      const b = Buffer.alloc(12 + (r.chance(0.7) ? Math.min(size, 300) : r.int(300)));
      b.writeUInt32LE(r.pick([0, 1, 4, 20, 56, 60, 64, 200, 255, 256, 257, 0xfffffff0, r.u32()]) >>> 0, 0);
      b.writeUInt32LE(size >>> 0, 4);
      b.writeUInt32LE(r.chance(0.7) ? 0 : r.u32(), 8);
      r.bytes(b.length - 12).copy(b, 12);
      return { payload: b };
    }
    default:
      return { payload: r.bytes(r.pick([0, 0, 4, 8, 8, 12, 40, 64, 300])) };
  }
}

/** One mutation of the sequence, at a random place. */
function mutate(r: Rng, s: Step[]): void {
  const msgs = () => s.map((x, i) => [x, i] as const).filter(([x]) => x.kind === 'msg') as [{ kind: 'msg'; m: Msg }, number][];
  // half the time biased to the end of the sequence, so that mutations reach the rings, not only the handshake
  const anyMsg = () => {
    const all = msgs();
    if (!all.length) return null;
    return all[r.chance(0.5) ? r.int(all.length) : Math.max(r.int(all.length), r.int(all.length))]!;
  };
  switch (r.int(21)) {
    case 20: {
      // a flood: more messages than a connection handles per wakeup (64), every one wanting an answer
      const m = r.pick([
        { req: R.GET_FEATURES, flags: V1, payload: Buffer.alloc(0), fds: [] },
        { req: R.GET_QUEUE_NUM, flags: ACK, payload: Buffer.alloc(0), fds: [] },
        { req: R.SET_VRING_BASE, flags: ACK, payload: encodeVringState({ index: 0, num: 0 }), fds: [] },
      ] as Msg[]);
      const copies: Step[] = Array.from({ length: 60 + r.int(200) }, () => ({ kind: 'msg', m: { ...m, fds: [] } }));
      s.splice(r.int(s.length + 1), 0, ...copies);
      break;
    }
    case 18:
    case 19: {
      // a well-formed memory table the worker has to judge: files too small, not sealed, not memory at all,
      // offsets past the end, more than max-ram, holes; sometimes sent again while the rings run
      const n = 1 + r.int(3);
      const regions: MemoryRegionDesc[] = [];
      const kinds: FdKind[] = [];
      for (let i = 0; i < n; i++) {
        const reg = region(i);
        const twist = r.int(8);
        regions.push(
          twist === 0 ? { ...reg, mmapOffset: r.pick([RAM_FILE, RAM_FILE - 4096n, REGION + 4096n, 4095n, 1n << 40n]) }
          : twist === 1 ? { ...reg, size: r.pick([RAM_FILE + 4096n, 1n << 30n, 1n << 40n]) }
          : twist === 2 ? { ...reg, userspaceAddr: reg.userspaceAddr + BigInt(r.pick([4096, -4096, 0x10000, 1 << 20])) }
          : twist === 3 ? { ...reg, mmapOffset: BigInt(r.pick([4096, 0x1000 * 17, 0x80000])), size: REGION / 2n }
          : reg,
        );
        kinds.push(twist === 4 ? r.pick(['ramUnsealed', 'ramTiny', 'devnull', 'eventfd', 'socket'] as const) : r.chance(0.3) ? 'ramGarbage' : 'ram');
      }
      const m: Msg = { req: R.SET_MEM_TABLE, flags: r.chance(0.7) ? ACK : V1, payload: encodeMemTable(regions), fds: kinds };
      const at = msgs().find(([x]) => x.m.req === R.SET_MEM_TABLE);
      if (at && r.chance(0.6)) at[0].m = m;
      else s.splice(s.length - r.int(Math.min(6, s.length + 1)), 0, { kind: 'msg', m });
      break;
    }
    case 17: {
      // guest RAM full of garbage, the rings kicked: the worker parses whatever is there
      for (const [x] of msgs()) if (x.m.req === R.SET_MEM_TABLE) x.m.fds = x.m.fds.map((k) => (k === 'ram' ? 'ramGarbage' : k));
      for (let k = 1 + r.int(3); k > 0; k--) s.splice(s.length - r.int(Math.min(6, s.length + 1)), 0, { kind: 'kick' });
      break;
    }
    case 16: {
      // a stray fd on a message that takes none (or fewer)
      const x = anyMsg();
      if (x) x[0].m.fds = [...x[0].m.fds, r.pick(FD_KINDS)];
      break;
    }
    case 0: {
      // a random request code, known or not
      const x = anyMsg();
      if (x) x[0].m.req = randomRequest(r);
      break;
    }
    case 1: {
      const x = anyMsg();
      if (x) x[0].m.flags = randomFlags(r);
      break;
    }
    case 2: {
      // a size field that disagrees with the payload
      const x = anyMsg();
      if (x) x[0].m.size = r.chance(0.6) ? Math.max(0, x[0].m.payload.length + r.pick([-8, -4, -1, 1, 4, 8, 32])) : r.pick([VHOST_USER_MAX_PAYLOAD, VHOST_USER_MAX_PAYLOAD + 1, 0xffffffff, r.u32()]);
      break;
    }
    case 3: {
      // truncated or oversized payload, the size field following it
      const x = anyMsg();
      if (x) {
        const p = x[0].m.payload;
        x[0].m.payload = r.chance(0.5) ? p.subarray(0, r.int(p.length + 1)) : Buffer.concat([p, r.bytes(r.pick([1, 4, 8, 100, VHOST_USER_MAX_PAYLOAD - p.length]))]);
      }
      break;
    }
    case 4:
    case 5: {
      // fuzzed field values, right size
      const x = anyMsg();
      if (x) {
        const f = fuzzedPayload(r, x[0].m.req);
        x[0].m.payload = f.payload;
        if (f.fds) x[0].m.fds = f.fds;
      }
      break;
    }
    case 6: {
      // wrong fds: none, extra, another kind, too many for one message
      const x = anyMsg();
      if (!x) break;
      const m = x[0].m;
      switch (r.int(4)) {
        case 0:
          m.fds = [];
          break;
        case 1:
          m.fds = [...m.fds, ...Array.from({ length: 1 + r.int(3) }, () => r.pick(FD_KINDS))];
          break;
        case 2:
          m.fds = m.fds.map(() => r.pick(FD_KINDS));
          break;
        default:
          m.fds = Array.from({ length: 8 + r.int(5) }, () => r.pick(FD_KINDS));
      }
      break;
    }
    case 7: {
      // out of order: swap two steps
      if (s.length < 2) break;
      const i = r.int(s.length);
      const j = r.int(s.length);
      [s[i], s[j]] = [s[j]!, s[i]!];
      break;
    }
    case 8: {
      // move a step elsewhere (rings before memory, SET_MEM_TABLE while rings run, ...)
      if (s.length < 2) break;
      const [x] = s.splice(r.int(s.length), 1);
      s.splice(r.int(s.length + 1), 0, x!);
      break;
    }
    case 9: {
      // a message twice (GET_VRING_BASE twice, SET_MEM_TABLE again, ...)
      const x = anyMsg();
      if (x) s.splice(x[1] + 1 + r.int(s.length - x[1]), 0, { kind: 'msg', m: { ...x[0].m, fds: [...x[0].m.fds] } });
      break;
    }
    case 10:
      if (s.length) s.splice(r.int(s.length), 1 + r.int(3));
      break;
    case 11: {
      // a new message, known or not, with fuzzed contents
      const req = randomRequest(r);
      const f = fuzzedPayload(r, req);
      s.splice(r.int(s.length + 1), 0, { kind: 'msg', m: { req, flags: r.chance(0.7) ? r.pick([V1, ACK]) : randomFlags(r), payload: f.payload, fds: f.fds ?? (r.chance(0.2) ? [r.pick(FD_KINDS)] : []) } });
      break;
    }
    case 12:
      s.splice(r.int(s.length + 1), 0, { kind: 'raw', bytes: r.bytes(1 + r.int(40)), fds: r.chance(0.3) ? [r.pick(FD_KINDS)] : [] });
      break;
    case 13:
      s.splice(r.int(s.length + 1), 0, { kind: 'kick' });
      break;
    case 14:
      s.splice(r.int(s.length + 1), 0, { kind: 'externalClose' });
      break;
    default:
      s.splice(r.int(s.length + 1), 0, { kind: 'hangup' });
  }
}

/** A fuzzed sequence: the valid one with 1..6 mutations, or (rarely) random messages only. */
function fuzzedSequence(r: Rng): Step[] {
  let s: Step[];
  if (r.chance(0.08)) {
    s = Array.from({ length: 1 + r.int(12) }, () => {
      const req = randomRequest(r);
      const f = fuzzedPayload(r, req);
      return { kind: 'msg', m: { req, flags: randomFlags(r), payload: f.payload, fds: f.fds ?? [] } } as Step;
    });
  } else {
    s = validSequence(r.chance(0.7) ? [0, 0] : [r.int(0x10000), r.int(2)]);
    for (let k = 1 + r.int(6); k > 0; k--) mutate(r, s);
  }
  return s;
}

/** struct VhostUserConfig asking for `size` bytes at `offset`. */
function configPayload(offset: number, size: number): Buffer {
  const b = Buffer.alloc(12 + size);
  b.writeUInt32LE(offset, 0);
  b.writeUInt32LE(size, 4);
  return b;
}

function wireBytes(m: Msg): Buffer {
  return Buffer.concat([encodeHeader({ request: m.req, flags: m.flags, size: m.size ?? m.payload.length }), m.payload]);
}

/** The messages the daemon frames out of `stream` (its rule: header, version 1, no reply bit, size within bounds, request not 0, then exactly size bytes). */
function frame(stream: Buffer): { req: number; flags: number; payload: Buffer }[] {
  const out: { req: number; flags: number; payload: Buffer }[] = [];
  let o = 0;
  while (o + VHOST_USER_HDR_SIZE <= stream.length) {
    const h = decodeHeader(stream.subarray(o));
    if ((h.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION || h.flags & VHOST_USER_REPLY_MASK || h.size > VHOST_USER_MAX_PAYLOAD || h.request === 0) break;
    if (o + VHOST_USER_HDR_SIZE + h.size > stream.length) break;
    out.push({ req: h.request, flags: h.flags, payload: stream.subarray(o + VHOST_USER_HDR_SIZE, o + VHOST_USER_HDR_SIZE + h.size) });
    o += VHOST_USER_HDR_SIZE + h.size;
  }
  return out;
}

/** Requests answered with their own payload (connection.ts REQUESTS_WITH_REPLY). */
const WITH_REPLY = new Set<number>([R.GET_FEATURES, R.GET_PROTOCOL_FEATURES, R.GET_QUEUE_NUM, R.GET_VRING_BASE, R.GET_CONFIG, R.GET_MAX_MEM_SLOTS, R.GET_STATUS, R.GET_INFLIGHT_FD]);

interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

/** Splits received bytes into replies; throws on a header no reply may have. */
function parseReplies(bytes: Buffer): { replies: Reply[]; rest: Buffer } {
  const replies: Reply[] = [];
  let o = 0;
  while (o + VHOST_USER_HDR_SIZE <= bytes.length) {
    const h = decodeHeader(bytes.subarray(o));
    if (h.flags !== VHOST_USER_REPLY_FLAGS) throw new Error(`reply flags 0x${h.flags.toString(16)}, not 0x5 (version 1 | REPLY)`);
    if (h.size > 8 + 256 + 12) throw new Error(`reply to ${requestName(h.request)} of ${h.size} bytes`);
    if (o + VHOST_USER_HDR_SIZE + h.size > bytes.length) break;
    replies.push({ request: h.request, flags: h.flags, payload: Buffer.from(bytes.subarray(o + VHOST_USER_HDR_SIZE, o + VHOST_USER_HDR_SIZE + h.size)) });
    o += VHOST_USER_HDR_SIZE + h.size;
  }
  return { replies, rest: bytes.subarray(o) };
}

/** What the reply to a successfully handled message must look like; null when it gets none. */
function expectedReply(m: { req: number; flags: number; payload: Buffer }): ((p: Buffer) => string | null) | null {
  const u64Is = (v: bigint) => (p: Buffer) => (p.length !== 8 ? `payload of ${p.length} bytes, not 8` : p.readBigUInt64LE(0) !== v ? `0x${p.readBigUInt64LE(0).toString(16)}, expected 0x${v.toString(16)}` : null);
  switch (m.req) {
    case R.GET_FEATURES:
      return u64Is(dev.features);
    case R.GET_PROTOCOL_FEATURES:
      return u64Is(dev.protocolFeatures);
    case R.GET_QUEUE_NUM:
      return u64Is(BigInt(NQ));
    case R.GET_CONFIG:
      if (dev.config) {
        const cfg = dev.config;
        return (p) => {
          const [off, size] = [m.payload.readUInt32LE(0), m.payload.readUInt32LE(4)];
          if (p.length !== 12 + size) return `payload of ${p.length} bytes for ${size} config bytes`;
          if (p.readUInt32LE(0) !== off || p.readUInt32LE(4) !== size) return `offset/size ${p.readUInt32LE(0)}/${p.readUInt32LE(4)} not echoed (${off}/${size})`;
          const want = Buffer.alloc(size);
          if (off < cfg.length) want.set(cfg.subarray(off, Math.min(cfg.length, off + size)));
          return want.equals(p.subarray(12)) ? null : `config bytes ${p.subarray(12).toString('hex')}, expected ${want.toString('hex')}`;
        };
      }
      break;
    case R.GET_VRING_BASE:
      return (p) => (p.length !== 8 ? `payload of ${p.length} bytes, not 8` : p.readUInt32LE(0) !== m.payload.readUInt32LE(0) ? `index ${p.readUInt32LE(0)} not echoed (${m.payload.readUInt32LE(0)})` : p.readUInt32LE(4) > 0xffff ? `base ${p.readUInt32LE(4)} beyond 16 bits` : null);
  }
  if (WITH_REPLY.has(m.req)) return () => `${requestName(m.req)} is not offered, yet answered`;
  return m.flags & VHOST_USER_NEED_REPLY_MASK ? u64Is(0n) : null;
}

/**
 * Checks the replies against the messages the connection dispatched (the
 * first `dispatched` framed ones): in order, one per message that wants one,
 * shaped right; only the last dispatched message may have failed (then:
 * a NEED_REPLY ack of 1 or nothing, and the close reason names it).
 */
function checkReplies(framed: ReturnType<typeof frame>, dispatched: number, replies: Reply[], reason: string | null, externallyClosed: boolean): string | null {
  if (dispatched > framed.length) return `${dispatched} messages dispatched out of ${framed.length} sent`;
  let k = 0;
  for (let i = 0; i < dispatched; i++) {
    const m = framed[i]!;
    const last = i === dispatched - 1;
    const failedHere = last && reason !== null && reason.includes(requestName(m.req));
    const want = expectedReply(m);
    const r = replies[k];
    if (r && r.request === m.req && (want !== null || failedHere)) {
      k++;
      if (failedHere && !WITH_REPLY.has(m.req) && r.payload.length === 8 && r.payload.readBigUInt64LE(0) === 1n) {
        if (!(m.flags & VHOST_USER_NEED_REPLY_MASK)) return `${requestName(m.req)} without NEED_REPLY got a failure ack`;
        continue;
      }
      const bad = want ? want(r.payload) : `${requestName(m.req)} got a reply it should not have`;
      if (bad) return `reply ${k - 1} to message ${i} ${requestName(m.req)}: ${bad}`;
      continue;
    }
    if (want !== null && !(last && (failedHere || externallyClosed))) return `message ${i} ${requestName(m.req)} (flags 0x${m.flags.toString(16)}) was handled but not answered (next reply: ${r ? requestName(r.request) : 'none'}; close reason: ${reason})`;
  }
  if (k < replies.length) return `${replies.length - k} reply(ies) answer nothing sent: first ${requestName(replies[k]!.request)}`;
  return null;
}

// ------------------------------------------------------------------ fds

function fdTable(pid: number | 'self' = 'self'): Map<string, string> {
  const m = new Map<string, string>();
  for (const f of readdirSync(`/proc/${pid}/fd`)) {
    try {
      m.set(f, readlinkSync(`/proc/${pid}/fd/${f}`));
    } catch {
      /* closed meanwhile (the readdir's own fd) */
    }
  }
  return m;
}

function fdDiff(before: Map<string, string>, after: Map<string, string>): string {
  const out: string[] = [];
  for (const [k, v] of after) if (before.get(k) !== v) out.push(`+${k} -> ${v}`);
  for (const [k, v] of before) if (after.get(k) !== v) out.push(`-${k} -> ${v}`);
  return out.join(', ');
}

/**
 * The first 256 KiB of a guest's RAM (region 0 maps it at guest-physical 0,
 * the rings of validSequence sit in it) with rings a hostile driver wrote:
 * descriptors of random flags, lengths, nexts and addresses (mostly inside
 * the region), an avail ring a few entries ahead with random heads, and
 * random bytes where the descriptors point.
 */
function garbageRings(r: Rng): Buffer {
  const b = r.bytes(0x40000);
  for (let q = 0; q < NQ; q++) {
    const base = q * 0x10000;
    for (let i = 0; i < QSIZE; i++) {
      const o = base + i * 16;
      b.writeBigUInt64LE(r.chance(0.8) ? BigInt(r.int(0x40000)) : randomU64(r), o);
      b.writeUInt32LE(r.pick([0, 1, 8, 16, 24, 64, 4096, 4097, 0x10000, r.u32(), r.int(0x2000)]) >>> 0, o + 8);
      b.writeUInt16LE(r.chance(0.7) ? r.int(8) : r.int(0x10000), o + 12); // NEXT 1, WRITE 2, INDIRECT 4
      b.writeUInt16LE(r.chance(0.8) ? r.int(QSIZE) : r.int(0x10000), o + 14);
    }
    const avail = base + 0x4000;
    b.writeUInt16LE(r.chance(0.8) ? 0 : r.int(0x10000), avail);
    b.writeUInt16LE(r.chance(0.8) ? 1 + r.int(16) : r.int(0x10000), avail + 2);
    for (let i = 0; i < QSIZE; i++) b.writeUInt16LE(r.chance(0.8) ? r.int(QSIZE) : r.int(0x10000), avail + 4 + 2 * i);
    b.fill(0, base + 0x8000, base + 0x8000 + 4 + 8 * QSIZE + 2); // used ring: the device's to write
  }
  return b;
}

/** Makes the fds of one sequence; closes all of them at the end. */
class FdFactory {
  readonly made: number[] = [];
  readonly kicks: number[] = [];
  /** r: where ramGarbage's bytes come from */
  constructor(private readonly r: Rng = new Rng(0)) {}
  make(k: FdKind): number {
    let fd: number;
    switch (k) {
      case 'eventfd':
        fd = native.eventfd(0);
        break;
      case 'ram':
        fd = native.memfdCreate('fuzz-ram', RAM_FILE);
        break;
      case 'ramGarbage': {
        // rings (and what their descriptors point at) full of random bytes, mostly small numbers so that some land in the region
        fd = native.memfdCreate('fuzz-ram-garbage', RAM_FILE);
        const b = garbageRings(this.r);
        writeSync(fd, b, 0, b.length, 0);
        break;
      }
      case 'ramUnsealed':
        fd = native.memfdCreate('fuzz-ram-unsealed', RAM_FILE, { seal: false });
        break;
      case 'ramTiny':
        fd = native.memfdCreate('fuzz-ram-tiny', 4096n);
        break;
      case 'devnull':
        fd = openSync('/dev/null', 'r');
        break;
      case 'socket': {
        const [a, b] = native.socketPair();
        this.made.push(b);
        fd = a;
        break;
      }
    }
    this.made.push(fd);
    return fd;
  }
  /** numbers of fds made and closed already (closeAll), for telling our fds from others in a leak report */
  readonly closedNumbers: number[] = [];
  closeAll(): void {
    this.closedNumbers.push(...this.made);
    for (const fd of this.made.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        /* a socketpair end, closed */
      }
    }
  }
}

/** The chunks a step list is sent as: message bytes split at random points; each message's fds on one of its chunks. */
type Chunk = { bytes: Buffer; fds: FdKind[]; reqHint: number } | Exclude<Step, { kind: 'msg' } | { kind: 'raw' }>;

function chunks(r: Rng, steps: Step[]): Chunk[] {
  const out: Chunk[] = [];
  const mode = r.int(4); // 0: a message per sendmsg, 1: random cuts, 2: byte by byte for a while, 3: several messages per sendmsg
  let carry: { bytes: Buffer; fds: FdKind[]; reqHint: number } | null = null;
  for (const st of steps) {
    if (st.kind !== 'msg' && st.kind !== 'raw') {
      if (carry) out.push(carry);
      carry = null;
      out.push(st);
      continue;
    }
    const bytes = st.kind === 'msg' ? wireBytes(st.m) : st.bytes;
    const fds = st.kind === 'msg' ? st.m.fds : st.fds;
    const req = st.kind === 'msg' ? st.m.req : -1;
    if (mode === 3) {
      // fds may only ride on the first chunk of what they came with: flush before a message with fds
      if (carry && (fds.length === 0 || carry.bytes.length === 0) && r.chance(0.7)) {
        carry.bytes = Buffer.concat([carry.bytes, bytes]);
        continue;
      }
      if (carry) out.push(carry);
      carry = { bytes, fds, reqHint: req };
      continue;
    }
    let cuts: number[] = [];
    if (mode === 1) cuts = Array.from({ length: r.int(4) }, () => r.int(bytes.length));
    if (mode === 2 && r.chance(0.3)) cuts = Array.from({ length: Math.min(bytes.length, 24) }, (_, i) => i);
    cuts = [...new Set(cuts.filter((c) => c > 0 && c < bytes.length))].sort((a, b) => a - b);
    const fdAt = fds.length && cuts.length && r.chance(0.2) ? r.int(cuts.length + 1) : 0;
    let prev = 0;
    [...cuts, bytes.length].forEach((c, i) => {
      out.push({ bytes: bytes.subarray(prev, c), fds: i === fdAt ? fds : [], reqHint: req });
      prev = c;
    });
  }
  if (carry) out.push(carry);
  return out.filter((c) => !('bytes' in c) || c.bytes.length > 0);
}

// ------------------------------------------------------------------ in-process

const settle = () => new Promise<void>((res) => setImmediate(res));

/** Waits until cond holds (true) or ms have passed (false): a turn of the event loop at a time at first, then 1 ms sleeps. */
async function soon(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  for (let i = 0; !cond(); i++) {
    if (Date.now() > end) return false;
    if (i < 200) await settle();
    else await new Promise((res) => setTimeout(res, 1));
  }
  return true;
}

function readable(fd: number): boolean {
  return native.pollFds(Int32Array.of(fd), 1, new Int16Array(1), 0) > 0;
}

/** Every unhandled rejection of this process while the fuzzer runs (none may happen). */
const unhandled: string[] = [];
process.on('unhandledRejection', (e) => unhandled.push(String((e as Error)?.stack ?? e)));

/**
 * Lines that mean a bug, not a refused front-end: an exception that escaped
 * a handler (onReadable's catch-all), a close of an fd already closed.
 */
const CONNECTION_BUG = /internal error|BUG|closing fd \d+:/;
/** The worker's: an exception that is not a guest's fault (engine.ts serveQueue's catch-all), its loop's catch-all, a double close, a failed munmap. */
const WORKER_BUG = /internal error|loop error|BUG|uncaught|close\(\d+\)|munmap:/i;

interface RunResult {
  replies: Reply[];
  framed: ReturnType<typeof frame>;
  dispatched: number;
  reason: string | null;
  externallyClosed: boolean;
  lines: string[];
  /** every fd number the connection received */
  received: number[];
}

const nativeIo: ConnIo = {
  recvMsg: (fd, buf, fdsOut, maxFds) => native.recvMsg(fd, buf, fdsOut, maxFds),
  sendMsg: (fd, buf, fds) => native.sendMsg(fd, buf, fds),
  close: (fd) => native.close(fd),
  adoptEventfd: (fd) => native.adoptEventfd(fd),
};

/**
 * One connection: the steps sent over a socketpair, the connection driven
 * after each chunk until it has read what there is and no worker command is
 * in flight (a bound of 10 s is a hang). Ends with the front-end closing its
 * end, and waits until the connection has closed and the worker has removed
 * its instance.
 */
async function runInProcess(dp: DataPlane, vm: VhostUserDevice, r: Rng, steps: Step[], fdf: FdFactory, what: string): Promise<RunResult> {
  const [fe, be] = native.socketPair(true);
  const lines: string[] = [];
  const log: Logger = { error: (m) => lines.push(`error: ${m}`), warn: (m) => lines.push(`warn: ${m}`), info: (m) => lines.push(`info: ${m}`), debug: () => {} };
  const received: number[] = [];
  const io: ConnIo = {
    ...nativeIo,
    recvMsg: (fd, buf, fdsOut, maxFds) => {
      const n0 = fdsOut.length;
      const n = native.recvMsg(fd, buf, fdsOut, maxFds);
      received.push(...fdsOut.slice(n0));
      return n;
    },
  };
  const conn = new VhostUserConnection({ fd: be, io, device: vm, vrings: dp, log, label: `vm ${vm.vm}` });
  conn.open().catch((e: unknown) => conn.close(`cannot add the guest: ${(e as Error).message}; connection closed`, 'error'));
  const sent: Buffer[] = [];
  let inbox = Buffer.alloc(0);
  let externallyClosed = false;
  /** An externalClose step was met: the daemon stops the connection as soon as a worker command is in flight (else at the end). */
  let closeArmed = false;
  const stop = () => {
    closeArmed = false;
    if (!conn.closed) externallyClosed = true;
    conn.close('daemon stopping');
  };
  let feOpen = true;
  const drain = () => {
    for (;;) {
      const buf = Buffer.alloc(4096);
      const fds: number[] = [];
      let n: number | null;
      try {
        n = native.recvMsg(fe, buf, fds);
      } catch {
        return; // ECONNRESET: the connection closed with our bytes unread
      }
      native.closeQuietly(fds);
      if (fds.length) throw new Error(`${what}: a reply carried ${fds.length} fd(s)`);
      if (!n) return;
      inbox = Buffer.concat([inbox, buf.subarray(0, n)]);
    }
  };
  const quiesce = async () => {
    const end = Date.now() + 10000;
    conn.onReadable();
    while (!conn.closed && (conn.waitingFor !== null || readable(be))) {
      if (Date.now() > end) throw new Error(`${what}: hang: after 10 s the connection still waits for ${conn.waitingFor ?? 'nothing'} with bytes ${readable(be) ? '' : 'not '}readable`);
      await settle();
      if (!conn.closed && conn.waitingFor === null) conn.onReadable();
    }
    drain();
  };
  try {
    for (const c of chunks(r, steps)) {
      if ('kind' in c) {
        if (c.kind === 'kick') for (const k of fdf.kicks) native.eventfdWrite(k, 1n);
        else if (c.kind === 'externalClose') closeArmed = true;
        else if (c.kind === 'hangup') break;
        continue;
      }
      if (conn.closed) break;
      const fds = c.fds.map((k) => fdf.make(k));
      if (c.reqHint === R.SET_VRING_KICK) fdf.kicks.push(...fds.filter((_, i) => c.fds[i] === 'eventfd'));
      let off = 0;
      let broken = false;
      while (off < c.bytes.length && !broken) {
        try {
          off += native.sendMsg(fe, c.bytes.subarray(off), off === 0 ? fds : []);
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (code === 'EAGAIN') {
            await quiesce();
            continue;
          }
          if (code === 'EPIPE' || code === 'ECONNRESET') broken = true;
          else throw e;
        }
      }
      sent.push(c.bytes.subarray(0, off));
      if (broken) break;
      // the watcher fires; mostly the test then waits for the worker's answer, sometimes it goes on at once (a close may then meet a command in flight)
      if (!conn.closed && conn.waitingFor === null) conn.onReadable();
      if (closeArmed && conn.waitingFor !== null) stop();
      if (r.chance(0.75)) await quiesce();
      else if (r.chance(0.5)) await settle();
    }
    if (closeArmed) stop();
    await quiesce();
    // the front-end leaves
    native.close(fe);
    feOpen = false;
    if (!conn.closed) conn.onReadable();
    if (!(await soon(() => conn.closed, 10000))) throw new Error(`${what}: hang: the connection did not close within 10 s of the front-end leaving (waiting for ${conn.waitingFor})`);
  } finally {
    if (feOpen) {
      drain();
      native.close(fe);
    }
    if (!conn.closed) conn.close('test cleanup');
  }
  if (!(await soon(() => dp.pendingRemovals === 0, 10000))) throw new Error(`${what}: the worker did not confirm the instance's removal within 10 s`);
  const parsed = parseReplies(inbox);
  if (parsed.rest.length) throw new Error(`${what}: ${parsed.rest.length} bytes of a partial reply`);
  const dispatched = [...conn.counts.values()].reduce((a, b) => a + b, 0);
  return { replies: parsed.replies, framed: frame(Buffer.concat(sent)), dispatched, reason: conn.closeReason, externallyClosed, lines, received };
}

/** The valid sequence on a fresh connection: everything acked with 0, the bases set come back. */
async function healthyRun(dp: DataPlane, vm: VhostUserDevice, seed: number, what: string): Promise<string | null> {
  const r = new Rng(seed);
  const bases = [r.int(0x10000), r.int(0x10000)];
  // rings enabled with base != 0 over zeroed RAM would look broken: enable with base 0, then set the base on the stopped ring and read it back
  const s = validSequence([0, 0]);
  for (let q = 0; q < NQ; q++) {
    s.push(msg(R.SET_VRING_BASE, encodeVringState({ index: q, num: bases[q]! }), ACK));
    s.push(msg(R.GET_VRING_BASE, encodeVringState({ index: q, num: 0 }), V1));
  }
  const fdf = new FdFactory();
  let res: RunResult;
  try {
    // one message per sendmsg, no mutation (chunks() mode is drawn from its own rng)
    res = await runInProcess(dp, vm, new Rng(4), s, fdf, what);
  } finally {
    fdf.closeAll();
  }
  if (res.reason !== 'front-end closed the connection') return `closed with '${res.reason}'\n${res.lines.join('\n')}`;
  const framed = s.map((x) => (x as { m: Msg }).m);
  if (res.dispatched !== framed.length) return `${res.dispatched} of ${framed.length} messages dispatched`;
  const bad = checkReplies(res.framed, res.dispatched, res.replies, null, false);
  if (bad) return bad;
  const tail = res.replies.filter((x) => x.request === R.GET_VRING_BASE).slice(-NQ).map((x) => x.payload.readUInt32LE(4));
  if (tail.join() !== bases.join()) return `GET_VRING_BASE after SET_VRING_BASE gave ${tail.join()}, expected ${bases.join()}`;
  return null;
}

/** The vring worker every in-process test shares (as the daemon has one), and the VM its connections belong to. */
async function dataPlane(t: Pick<typeof import('tap').default, 'teardown'>, lines: string[], kind: 'tmem' | 'blk' = 'tmem'): Promise<{ dp: DataPlane; vm: VhostUserDevice }> {
  const log: Logger = { error: (m) => lines.push(`error: ${m}`), warn: (m) => lines.push(`warn: ${m}`), info: () => {}, debug: () => {} };
  // both kinds, as tmemd loads them when a VM has a disk (tmem-blk's pages sit in the VM's store guest)
  const dp = await DataPlane.start({ mode: 'notify', devices: [{ kind: 'tmem', module: tmemWorkerModule() }, { kind: 'blk', module: blkWorkerModule() }], deviceConfig: { capacityPages: 1024, maxPoolsPerGuest: 4 }, log });
  t.teardown(() => dp.stop());
  const cfg = { name: 'fz', where: 'socketpair', maxmemBytes: 1n << 30n, shareGroup: null, maxRamBytes: 64n << 20n };
  let vm: VhostUserDevice;
  if (kind === 'tmem') vm = new TmemVm(cfg, { numQueues: NQ });
  else {
    const dir = mkdtempSync(join(tmpdir(), 'tmemd-fuzz-blk-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    vm = new BlkVm({ ...cfg, sizeBytes: BLK_SIZE, overflowDir: dir }, { numQueues: NQ });
  }
  // warm-up: whatever the worker and the store make on first use (an eventfd, the store) is made now, before any fd count
  const warm = await healthyRun(dp, vm, 1, 'warm-up');
  if (warm) throw new Error(`the valid sequence fails before any fuzzing: ${warm}`);
  return { dp, vm };
}

// Found by this fuzzer (seed 517073, iterations 138, 268, 311): a message
// whose handler waits for the worker (or refuses it asynchronously), closed
// meanwhile by the daemon (shutdown; a refused open), leaked the fds it had
// not taken: nobody closed them once the answer came to a closed connection.
t.test('fds a message did not take are closed when the connection closes while its worker command is in flight', async (t) => {
  const { dp, vm } = await dataPlane(t, []);
  for (const [name, req, payload, kinds] of [
    ['SET_FEATURES with a stray eventfd (the worker has setFeatures)', R.SET_FEATURES, encodeU64(TMEM_DEVICE_FEATURES), ['eventfd']],
    ['SET_VRING_KICK with two fds (refused by its async handler)', R.SET_VRING_KICK, encodeVringFile(0, false), ['eventfd', 'eventfd']],
    ['SET_MEM_TABLE of one region with two memfds (refused by its async handler)', R.SET_MEM_TABLE, encodeMemTable([region(0)]), ['ram', 'ram']],
  ] as const) {
    const before = fdTable();
    const [fe, be] = native.socketPair(true);
    const conn = new VhostUserConnection({ fd: be, io: nativeIo, device: vm, vrings: dp, log: { error() {}, warn() {}, info() {}, debug() {} }, label: 'vm fz' });
    conn.open().catch(() => {});
    const fdf = new FdFactory();
    native.sendMsg(fe, wireBytes({ req, flags: ACK, payload, fds: [] }), kinds.map((k) => fdf.make(k)));
    fdf.closeAll();
    conn.onReadable();
    t.equal(conn.waitingFor, requestName(req), `${name}: in flight`);
    conn.close('daemon stopping');
    t.ok(await soon(() => dp.pendingRemovals === 0, 10000), `${name}: the worker removed the instance`);
    native.close(fe);
    t.ok(await soon(() => fdTable().size === before.size, 3000), `${name}: every fd received is closed (${fdDiff(before, fdTable()) || 'none left'})`);
  }
});

// Found while chasing a late fd close in this fuzzer: an open the worker
// answers after the reply timeout was taken for a refusal ("no instance to
// close"), so the connection's close posted no close and the instance the
// worker then opened stayed in it for good, with whatever the messages
// queued behind the open handed it (guest RAM mappings, eventfds).
t.test('a connection whose open the worker answers late closes the instance the worker then opens', async (t) => {
  process.env.TMEMD_TEST_HOOKS = 'stall:late:open:600';
  const dp = await DataPlane.start({ mode: 'notify', devices: [{ kind: 'tmem', module: tmemWorkerModule() }], deviceConfig: { capacityPages: 1024, maxPoolsPerGuest: 4 }, log: { error() {}, warn() {}, info() {}, debug() {} }, replyTimeoutMs: 200 });
  delete process.env.TMEMD_TEST_HOOKS;
  t.teardown(() => dp.stop());
  const vm = new TmemVm({ name: 'late', where: 'socketpair', maxmemBytes: 1n << 30n, shareGroup: null }, { numQueues: NQ });
  const [fe, be] = native.socketPair(true);
  let reason: string | null = null;
  const conn = new VhostUserConnection({ fd: be, io: nativeIo, device: vm, vrings: dp, log: { error() {}, warn() {}, info() {}, debug() {} }, label: 'vm late', onClose: (_c, r) => (reason = r) });
  // what the listener does: a refused or unanswered open closes the connection
  conn.open().catch((e: unknown) => conn.close(`cannot add the guest: ${(e as Error).message}; connection closed`, 'error'));
  // the guest's RAM, queued behind the open
  const ram = native.memfdCreate('late-ram', RAM_FILE);
  native.sendMsg(fe, wireBytes({ req: R.SET_MEM_TABLE, flags: V1, payload: encodeMemTable([region(0)]), fds: [] }), [ram]);
  native.close(ram);
  conn.onReadable();
  t.ok(await soon(() => reason !== null, 5000), 'the connection closes when the open is not answered in time');
  t.match(reason, /cannot add the guest: vring worker did not answer open within 200 ms/);
  native.close(fe);
  t.ok(await soon(() => dp.pendingRemovals === 0, 10000), 'the removal is confirmed once the worker gets to it');
  await new Promise((res) => setTimeout(res, 1000)); // the stall (600 ms) is over: the worker ran whatever was queued
  const st = await dp.stats();
  t.same(st.instances, [], 'no instance is left in the worker (its guest RAM unmapped, its fds closed)');
});

t.test(`in-process: ${ITERS} fuzzed sequences against the connection and the vring worker, seed ${SEED}`, (t) => fuzzInProcess(t, 'tmem', ITERS, 1));

t.test(`in-process, tmem-blk (config space, virtio-blk rings): ${BLK_ITERS} fuzzed sequences, seed ${SEED}`, async (t) => {
  dev = BLK;
  t.teardown(() => void (dev = TMEM));
  await fuzzInProcess(t, 'blk', BLK_ITERS, 3);
});

/** The in-process fuzzing of one device kind (`dev` is its profile). */
async function fuzzInProcess(t: Tap, kind: 'tmem' | 'blk', iters: number, part: number): Promise<void> {
  const workerLines: string[] = [];
  const { dp, vm } = await dataPlane(t, workerLines, kind);

  const baseline = fdTable().size;
  const t0 = Date.now();
  let failures = 0;
  const reasons = new Map<string, number>();
  let dispatchedSum = 0;
  let brokenQueues = 0;
  for (const i of iterations(iters)) {
    if (failures >= 3) break;
    const seed = iterSeed(part, i);
    const r = new Rng(seed);
    const steps = fuzzedSequence(r);
    const before = fdTable();
    const fdf = new FdFactory(r);
    const what = replay(kind === 'tmem' ? 'in-process' : 'in-process tmem-blk', i);
    let res: RunResult | null = null;
    let err: string | null = null;
    try {
      res = await runInProcess(dp, vm, r, steps, fdf, what);
    } catch (e) {
      err = (e as Error).stack ?? String(e);
    } finally {
      fdf.closeAll();
    }
    const problems: string[] = [];
    if (err) problems.push(err);
    if (res) {
      const internal = res.lines.filter((l) => CONNECTION_BUG.test(l));
      if (internal.length) problems.push(`the connection hit a bug: ${internal.join(' | ')}`);
      if (res.reason === null) problems.push('the connection is not closed');
      const bad = checkReplies(res.framed, res.dispatched, res.replies, res.reason, res.externallyClosed);
      if (bad) problems.push(`replies: ${bad}`);
      const k = (res.reason ?? 'open').replace(/\d+/g, 'N').replace(/:.*$/, '');
      reasons.set(k, (reasons.get(k) ?? 0) + 1);
      dispatchedSum += res.dispatched;
    }
    const wl = workerLines.splice(0);
    brokenQueues += wl.filter((l) => /broken, stopped/.test(l)).length;
    if (process.env.TMEM_FUZZ_VERBOSE) for (const l of wl) t.comment(`worker: ${l.slice(0, 300)}`);
    const wbugs = wl.filter((l) => WORKER_BUG.test(l));
    if (wbugs.length) problems.push(`the vring worker hit a bug: ${wbugs.join(' | ')}`);
    if (unhandled.length) problems.push(`unhandled rejection: ${unhandled.splice(0).join(' | ')}`);
    if (!(await soon(() => fdTable().size === before.size, 3000))) {
      const after = fdTable();
      const diff = fdDiff(before, after);
      const added = [...after.keys()].filter((k) => before.get(k) !== after.get(k)).map(Number);
      const t1 = Date.now();
      // a leak, or a close that came late: which one helps whoever reads the failure
      const closedLate = await soon(() => fdTable().size === before.size, 10000);
      const ours = added.filter((fd) => res?.received.includes(fd) || fdf.made.includes(fd) || fdf.closedNumbers.includes(fd));
      if (added.length > 0 && ours.length === 0) {
        // Twice, under load 8-10 on 2 cores (seed 517073: iteration 189; tmem-blk iteration 156), an
        // eventfd appeared under a number neither the connection received nor the test made, and was gone
        // by the end of the run; never when the iteration is replayed. Not the connection's fds: noted here
        // with what the kernel says of it, and left to the end-of-run check (every fd back to the baseline).
        const info = added.map((fd) => {
          try {
            return `${fd}: ${readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').replace(/\n/g, ' ')}`;
          } catch {
            return `${fd}: closed`;
          }
        });
        t.comment(`${what}: fd(s) outside the connection ${closedLate ? 'came and went' : 'still open after 13 s'}: ${diff} (${info.join('; ')})`);
      } else {
        problems.push(
          `fd leak: ${before.size} fds before, then ${diff} (${closedLate ? `closed ${Date.now() - t1 + 3000} ms after the connection was gone` : 'still open 13 s after'}; ` +
            `numbers the connection received: ${res?.received.join(',') || 'none'}, the test made: ${[...fdf.made, ...fdf.closedNumbers].join(',') || 'none'}); worker: ${wl.join(' | ') || 'nothing'}`,
        );
      }
    }
    const healthy = await healthyRun(dp, vm, seed ^ 0x5a5a5a5a, `${what}, the valid sequence after it`);
    if (healthy) problems.push(`the valid sequence on a fresh connection after it fails: ${healthy}`);
    if (problems.length) {
      failures++;
      t.fail(`${what}: ${problems.join('; ')}`, {
        steps: steps.map((s) => (s.kind === 'msg' ? `${requestName(s.m.req)} flags 0x${s.m.flags.toString(16)} size ${s.m.size ?? s.m.payload.length}/${s.m.payload.length} fds [${s.m.fds.join(',')}] ${s.m.payload.subarray(0, 48).toString('hex')}` : s.kind)),
        log: res?.lines,
      });
    }
  }
  t.equal(failures, 0, `every fuzzed sequence kept the properties (seed ${SEED})`);
  t.comment(`in-process ${kind}: ${iters} sequences in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${(dispatchedSum / Math.max(1, iters)).toFixed(1)} messages handled per sequence, ${brokenQueues} rings the worker stopped as broken; close reasons: ${[...reasons].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${v}x ${k}`).join('; ')}`);
  t.ok(await soon(() => fdTable().size === baseline, 5000), `fds of this process back to the baseline of ${baseline} (${fdTable().size} now)`);
  const stats = await dp.stats();
  t.same(stats.instances, [], 'no instance left in the worker');
  t.notOk(workerLines.some((l) => WORKER_BUG.test(l)), 'the worker logged no bug');
}

// ------------------------------------------------------------------ the built daemon

/**
 * The replies of a daemon connection, checked without knowing how far the
 * daemon got: each answers, in order, a later framed message that wants one
 * and is shaped right; a failure ack (1) is the last reply.
 */
function checkDaemonReplies(framed: ReturnType<typeof frame>, replies: Reply[]): string | null {
  let i = 0;
  for (let k = 0; k < replies.length; k++) {
    const r = replies[k]!;
    while (i < framed.length && !(framed[i]!.req === r.request && (WITH_REPLY.has(r.request) || framed[i]!.flags & VHOST_USER_NEED_REPLY_MASK))) i++;
    const m = framed[i++];
    if (!m) return `reply ${k} (${requestName(r.request)}) answers nothing sent`;
    if (!WITH_REPLY.has(m.req) && r.payload.length === 8 && r.payload.readBigUInt64LE(0) === 1n) {
      if (k !== replies.length - 1) return `reply ${k}: a failure ack for ${requestName(m.req)}, yet more replies came`;
      continue;
    }
    const want = expectedReply(m);
    const bad = want ? want(r.payload) : `${requestName(m.req)} got a reply it should not have`;
    if (bad) return `reply ${k} to ${requestName(m.req)}: ${bad}`;
  }
  return null;
}

/** Whether fd has a byte or EOF to read within ms. */
function waitReadable(fd: number, ms: number): boolean {
  return native.pollFds(Int32Array.of(fd), 1, new Int16Array(1), ms) > 0;
}

/**
 * One fuzzed connection to the daemon over its real socket: chunks sent as
 * they come (blocking socket; a sequence is far below the socket buffer),
 * replies read when there, the connection closed at the sequence's hangup or
 * after its end (then after waiting up to 300 ms for the daemon's answer or
 * close). Returns a problem, or null.
 */
async function fuzzDaemonConnection(path: string, r: Rng, steps: Step[]): Promise<string | null> {
  const fdf = new FdFactory(r);
  const fe = native.connectUnix(path);
  let inbox = Buffer.alloc(0);
  let eof = false;
  const sent: Buffer[] = [];
  const drain = (ms: number) => {
    while (!eof && waitReadable(fe, ms)) {
      const buf = Buffer.alloc(4096);
      const fds: number[] = [];
      let n: number | null;
      try {
        n = native.recvMsg(fe, buf, fds);
      } catch {
        eof = true; // ECONNRESET: closed with our bytes unread
        break;
      }
      native.closeQuietly(fds);
      if (n === 0) eof = true;
      else if (n) inbox = Buffer.concat([inbox, buf.subarray(0, n)]);
    }
  };
  const all = chunks(r, steps);
  // a quarter of the front-ends go away in the middle of a chunk (of a header, a payload)
  const cut = r.chance(0.25) ? r.int(all.length) : -1;
  try {
    for (const [ci, c] of all.entries()) {
      if ('kind' in c) {
        if (c.kind === 'kick') for (const k of fdf.kicks) native.eventfdWrite(k, 1n);
        else break; // hangup, or the daemon's close (which only the in-process part can make): the front-end goes here
        continue;
      }
      if (ci === cut) c.bytes = c.bytes.subarray(0, r.int(c.bytes.length));
      if (c.bytes.length === 0) break;
      const fds = c.fds.map((k) => fdf.make(k));
      if (c.reqHint === R.SET_VRING_KICK) fdf.kicks.push(...fds.filter((_, i) => c.fds[i] === 'eventfd'));
      let off = 0;
      try {
        while (off < c.bytes.length) off += native.sendMsg(fe, c.bytes.subarray(off), off === 0 ? fds : []);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code !== 'EPIPE' && code !== 'ECONNRESET') throw e;
        sent.push(c.bytes.subarray(0, off));
        break;
      }
      sent.push(c.bytes);
      drain(0);
      if (eof || ci === cut) break;
      if (r.chance(0.2)) await new Promise((res) => setTimeout(res, r.int(3)));
    }
    if (r.chance(0.5)) drain(300);
  } finally {
    native.close(fe);
    fdf.closeAll();
  }
  let parsed: ReturnType<typeof parseReplies>;
  try {
    parsed = parseReplies(inbox);
  } catch (e) {
    return (e as Error).message;
  }
  return checkDaemonReplies(frame(Buffer.concat(sent)), parsed.replies);
}

function fdCountOf(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

t.test(`built daemon: ${DAEMON_ITERS} fuzzed connections on one VM while the load generator verifies another and a third answers GET_FEATURES`, async (t) => {
  buildLoadgen();
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-fuzz-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = (n: string) => join(dir, `${n}.sock`);
  const ctl = join(dir, 'ctl.sock');
  const d = new Daemon(['--vm', `name=fz,socket=${sock('fz')},maxmem=1G`, '--vm', `name=ok,socket=${sock('ok')},maxmem=1G`, '--vm', `name=pg,socket=${sock('pg')},maxmem=1G`, '--capacity', '64M', '--queues', '2', '--queues-mode', 'notify', '--control', ctl]);
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  const pid = d.proc.pid!;
  const lg = (seed: number, ops: number) => runLoadgen('verify', sock('ok'), ['--queues', '2', '--depth', '8', '--ops', String(ops), '--seed', String(seed), '--timeout-ms', '10000'], 120000);
  /** Whether VM `vm` has no connection (asked over the control socket: its log lines are rate-limited). */
  const gone = async (vm: string) => {
    const r = await requestDaemon(ctl, { cmd: 'guests' }, 10000);
    if (!r.ok) throw new Error(`guests: ${r.error}`);
    return !(r.result as { name: string; connected: boolean }[]).find((g) => g.name === vm)!.connected;
  };
  const okGone = () => gone('ok');

  // warm-up, then the baseline: the pinger connected, the store made, one load generator run come and gone
  const pg = new VhostSocket(sock('pg'), 5000);
  let pgOpen = true;
  const pgClose = () => {
    if (pgOpen) pg.close();
    pgOpen = false;
  };
  t.teardown(pgClose);
  const answers: number[] = [];
  const ping = () => {
    pg.send(R.GET_FEATURES);
    const r = pg.reply(R.GET_FEATURES);
    if (r.flags !== VHOST_USER_REPLY_FLAGS || r.payload.length !== 8 || r.payload.readBigUInt64LE(0) !== TMEM_DEVICE_FEATURES) throw new Error(`GET_FEATURES answered flags 0x${r.flags.toString(16)}, ${r.payload.toString('hex')}`);
    answers.push(Date.now());
  };
  ping();
  const w = await lg(1, 2000);
  t.equal(w.code, 0, 'warm-up load generator run verifies', { output: explain(w) });
  t.ok(await until(okGone, 10000), 'its connection is gone');
  // the least of a few samples: a control connection of okGone may still be closing in the daemon
  let baseline = Infinity;
  for (let k = 0; k < 5; k++) {
    await new Promise((res) => setTimeout(res, 100));
    baseline = Math.min(baseline, fdCountOf(pid));
  }

  // the load generator verifies pages on VM ok for as long as the fuzzing lasts, one run after another
  let fuzzing = true;
  const runs: LoadgenResult[] = [];
  /** Why the runs stopped before the fuzzing did (null: they went on throughout). */
  let lgStopped: string | null = null;
  const lgLoop = (async () => {
    for (let k = 2; fuzzing; k++) {
      const res = await lg(k, 300000);
      runs.push(res);
      if (res.code !== 0) return void (lgStopped = `run ${k - 1} failed`);
      // the next run connects once the daemon has seen this one leave (else it is refused as a second connection)
      if (!(await until(okGone, 10000))) return void (lgStopped = `VM ok still connected 10 s after run ${k - 1} ended`);
    }
  })();
  await d.waitFor(/vm ok: guest memory/);

  const t0 = Date.now();
  const problems: string[] = [];
  for (const i of iterations(DAEMON_ITERS)) {
    const r = new Rng(iterSeed(2, i));
    const steps = fuzzedSequence(r);
    try {
      const bad = await fuzzDaemonConnection(sock('fz'), r, steps);
      if (bad) problems.push(`${replay('daemon', i)}: ${bad}`);
    } catch (e) {
      problems.push(`${replay('daemon', i)}: ${(e as Error).message}`);
    }
    ping();
    if (!d.alive || problems.length >= 3) break;
  }
  const fuzzSecs = (Date.now() - t0) / 1000;
  fuzzing = false;
  await lgLoop;

  t.same(problems, [], `every fuzzed connection got well-formed replies (seed ${SEED})`);
  t.ok(d.alive, 'tmemd still runs');
  t.notMatch(d.stderr, /BUG:/, 'tmemd logged no BUG: (nothing uncaught)');
  t.equal(lgStopped, null, 'the load generator ran as long as the fuzzing');
  t.ok(runs.length > 0 && runs.every((x) => x.code === 0), `the load generator on VM ok verified every page in each of its ${runs.length} run(s) meanwhile (a reply later than 10 s fails it)`, { output: runs.filter((x) => x.code !== 0).map((x) => explain(x)).join('\n') });
  const gaps = answers.slice(1).map((a, k) => a - answers[k]!);
  const maxGap = Math.max(...gaps);
  t.ok(maxGap < 10000, `VM pg answered GET_FEATURES ${answers.length} times, the longest gap between answers ${maxGap} ms`);
  t.ok(await until(() => gone('fz'), 10000), 'the last fuzzed connection closed once its front-end left');
  t.ok(await until(() => fdCountOf(pid) <= baseline, 20000), `tmemd's fds back to the baseline of ${baseline} (${fdCountOf(pid)} now) once the fuzzed connections are gone`);

  // a reason line for each closed connection, as far as the per-VM limiter lets lines through (100 a minute): connected, why, left
  const fz = d.stderr.split('\n').filter((l) => l.includes('vm fz:'));
  let groups = 0;
  let withReason = 0;
  let open = false;
  let reason = false;
  for (const l of fz) {
    if (/suppressed \d+ log message/.test(l)) break;
    if (/guest connected/.test(l)) {
      open = true;
      reason = false;
    } else if (/guest left/.test(l)) {
      if (open) {
        groups++;
        if (reason) withReason++;
      }
      open = false;
    } else if (open && !/guest memory:|carried \d+ fd/.test(l)) reason = true;
  }
  const refused = fz.filter((l) => /refused a second connection/.test(l)).length;
  t.equal(withReason, groups, `each of the ${groups} connections seen leaving (of ${DAEMON_ITERS}; ${refused} refused as second connections) has a line saying why`);
  t.ok(groups + refused >= Math.min(DAEMON_ITERS, 25), `the daemon logged the connections (${groups} left, ${refused} refused) until its per-VM limit`);
  t.comment(`daemon: ${DAEMON_ITERS} fuzzed connections in ${fuzzSecs.toFixed(1)} s; load generator: ${runs.length} run(s), ${runs.reduce((a, x) => a + Number(x.json?.ops ?? 0), 0)} ops`);
  pgClose();
  const s = await d.stop();
  t.equal(s.code, 0, 'clean exit');
});
