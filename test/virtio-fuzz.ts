// A seeded, bounded fuzz test of what a guest controls in the data plane:
// descriptor tables (direct, indirect, loops, lengths, addresses across
// regions and mapping windows), the split ring's indices and event fields,
// and the tmem and tmem-blk requests carried in them.
//
//   1. The chain walker (host/virtio/chain.ts) on random tables in a fake
//      guest memory of several regions and windows (and 8 GiB seen through
//      512 windows of one buffer, for lengths past 2^32), compared with a
//      model of its rules written here: same verdict, same number of
//      descriptors read (at most the queue size + 1: every view it reads
//      descriptors through counts, and a walk past that throws instead of
//      spinning), and on success segments that lie inside guest RAM, in
//      order, summing to what the accepted descriptors say.
//   2. The engine (host/vhost-user/engine.ts) with the real tmem and tmem-blk
//      worker devices on one store: two hostile guests fill their rings with
//      random chains and indices (idx jumps, heads out of range or repeated,
//      random event fields, now and then rings placed anywhere), their
//      devices now and then answer HANDLE_LATER, the front-end now and then
//      restarts a ring mid-drain, while two well-behaved guests do verified
//      I/O in between. Every byte the engine changes in a hostile guest's RAM
//      lies in its used ring or in a writable segment of a chain it
//      completed; the used idx moves by at most the chains made available;
//      each chain the device saw gets the answer the device's rules give
//      (status and used len, from a shape oracle here); no exception escapes
//      and none is caught inside the engine; the engine settles in a bounded
//      number of passes; the well-behaved guests' requests are answered in
//      the pass they were posted in, with the right data, and nothing else of
//      their RAM changes.
//
// Deterministic: TMEM_FUZZ_SEED (default below) picks the run,
// TMEM_FUZZ_ITERS the rounds; every failure names both, so a failure
// replays with the same two values.
import t, { type Test } from 'tap';
import { ChainWalker } from '../host/virtio/chain.js';
import { GuestMemory, SegmentList, type RegionSource } from '../host/virtio/guest-memory.js';
import { Engine, TURN_UNITS, type EngineOs, type OsMapping } from '../host/vhost-user/engine.js';
import { HANDLE_LATER, type WorkerDevice } from '../host/vhost-user/device.js';
import { createDeviceKind as createTmemKind, type TmemInstance } from '../host/tmem/worker.js';
import { createDeviceKind as createBlkKind, type BlkInstance, type BlkOpenParams } from '../host/blk/worker.js';
import { requestFlagsAllowed } from '../host/tmem/store/store.js';
import { BLK_MAX_DWZ_SECTORS, BLK_MAX_DWZ_SEG } from '../host/blk/blk-config.js';
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '../host/blk/virtio-blk.js';
import {
  OP_PAYLOAD,
  TMEM_OP_DESTROY_POOL,
  TMEM_OP_FLUSH_OBJECT,
  TMEM_OP_FLUSH_PAGE,
  TMEM_OP_GET_PAGE,
  TMEM_OP_INFO,
  TMEM_OP_NEW_POOL,
  TMEM_OP_PUT_PAGE,
  TMEM_OP_RESET,
  TMEM_POOL_PERSIST,
  TMEM_S_DENIED,
  TMEM_S_FROZEN,
  TMEM_S_INVALID,
  TMEM_S_MISS,
  TMEM_S_NOSPACE,
  TMEM_S_OK,
  TMEM_S_UNSUPPORTED,
} from '../shared/abi.js';
import { FakeEventfds, fakeWorkerHost } from './engine/fakes.js';
import { DriverRing, F_WRITE, FakeGuest, newPoolPayload, readResp, reqHeader, type Desc } from './virtio-driver.js';

const F_NEXT = 1;
const F_WR = 2;
const F_IND = 4;
const TWO32 = 0x1_0000_0000;
const KiB = 1024;
const MiB = 1024 * KiB;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

// ------------------------------------------------------------------ run parameters

function envInt(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v}: want a non-negative integer`);
  return n;
}

const SEED = envInt('TMEM_FUZZ_SEED', 0x7e3c_2026) >>> 0;
/** Rounds of the engine fuzz per mode; the walker fuzz walks WALKS_PER_ROUND chains per round. */
const ITERS = envInt('TMEM_FUZZ_ITERS', 120);
const WALKS_PER_ROUND = 25;
const REPLAY = `TMEM_FUZZ_SEED=${SEED} TMEM_FUZZ_ITERS=${ITERS}`;

/** splitmix32: small, fast, and the same sequence everywhere. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed | 0;
  }
  u32(): number {
    this.s = (this.s + 0x9e3779b9) | 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
  /** An integer in [0, n) for n up to 2^53. */
  int(n: number): number {
    if (n <= TWO32) return Math.floor((this.u32() / TWO32) * n);
    return Math.floor(((this.u32() * TWO32 + this.u32()) / 2 ** 64) * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.u32() / TWO32 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  fill(b: Uint8Array): void {
    for (let i = 0; i < b.length; i += 4) {
      const x = this.u32();
      b[i] = x;
      if (i + 1 < b.length) b[i + 1] = x >>> 8;
      if (i + 2 < b.length) b[i + 2] = x >>> 16;
      if (i + 3 < b.length) b[i + 3] = x >>> 24;
    }
  }
}

/** An exception in one line: its message and where it was thrown. */
function brief(err: unknown): string {
  const e = err as Error;
  const at = (e.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l)).slice(0, 3).map((l) => l.trim());
  return `${e.message ?? String(err)} (${at.join(' / ')})`;
}

/** Counts checks; reports a failed one with the seed and the round, at most a few per test (one bug fails many). */
class Checker {
  checks = 0;
  fails = 0;
  where = '';
  private readonly t: Test;
  constructor(tt: Test) {
    this.t = tt;
  }
  ok(cond: boolean, msg: string | (() => string)): boolean {
    this.checks++;
    if (cond) return true;
    this.fails++;
    if (this.fails <= 8) this.t.fail(`${typeof msg === 'string' ? msg : msg()} [${this.where}; replay: ${REPLAY}]`);
    return false;
  }
}

// ------------------------------------------------------------------ bounded walks

/**
 * Descriptor reads of the walk under way. Every view the walker can read a
 * descriptor through (the direct table, each window of guest RAM, its
 * scratch copy of a split table) counts its 16-bit reads (flags and next: two
 * per descriptor) here, and a walk that reads more descriptors than the rules
 * allow (queue size + 1) throws instead of spinning: a walk that does not end
 * fails with the seed rather than hanging the test.
 */
class Budget {
  reads = 0;
  limit = Infinity;
  spend(): void {
    if (++this.reads > this.limit) throw new Error(`walk read more than ${this.limit / 2} descriptors: it does not end`);
  }
}

// DataView's constructor is generic over its buffer type; a plain signature lets a class extend it
const DataViewBase: new (b: ArrayBufferLike, off: number, len: number) => DataView = DataView;

class CountingView extends DataViewBase {
  private readonly budget: Budget;
  constructor(b: Uint8Array, budget: Budget) {
    super(b.buffer, b.byteOffset, b.byteLength);
    this.budget = budget;
  }
  override getUint16(o: number, le?: boolean): number {
    this.budget.spend();
    return super.getUint16(o, le);
  }
}

// ------------------------------------------------------------------ the model of guest memory

/** One window of guest RAM as the model sees it: gpa range and its bytes. */
interface MWin {
  readonly gpa: number;
  readonly len: number;
  readonly bytes: Uint8Array;
}
interface Piece {
  gpa: number;
  len: number;
}

/** Regions cut into windows, as GuestMemory gets them and as the model reads them. */
class Layout {
  readonly wins: MWin[] = [];
  readonly regions: { gpa: number; size: number }[] = [];
  readonly byBytes = new Map<Uint8Array, MWin>();
  readonly mem: GuestMemory;

  /** regions: gpa and the byte arrays of its windows, in order. */
  constructor(regions: readonly { gpa: number; uva?: number; windows: readonly Uint8Array[] }[]) {
    const sources: RegionSource[] = [];
    for (const r of regions) {
      let off = 0;
      const ws: { offset: number; bytes: Uint8Array }[] = [];
      for (const b of r.windows) {
        const w = { gpa: r.gpa + off, len: b.length, bytes: b };
        this.wins.push(w);
        this.byBytes.set(b, w);
        ws.push({ offset: off, bytes: b });
        off += b.length;
      }
      this.regions.push({ gpa: r.gpa, size: off });
      sources.push({ guestPhysAddr: r.gpa, userspaceAddr: r.uva ?? r.gpa, windows: ws });
    }
    this.wins.sort((a, b) => a.gpa - b.gpa);
    this.mem = new GuestMemory(sources);
  }

  /** Makes every window's view count descriptor reads against `b` (the walker reads indirect tables through them). */
  count(b: Budget): void {
    for (const r of this.mem.regions) for (const w of r.windows) w.view = new CountingView(w.bytes, b);
  }

  find(a: number): MWin | null {
    const ws = this.wins;
    let lo = 0;
    let hi = ws.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const w = ws[mid]!;
      if (a < w.gpa) hi = mid - 1;
      else if (a >= w.gpa + w.len) lo = mid + 1;
      else return w;
    }
    return null;
  }

  /** [addr, addr + len) cut at window edges, or null if any byte is not guest RAM. */
  pieces(addr: number, len: number): Piece[] | null {
    if (!(addr >= 0) || addr + len > MAX_SAFE) return null;
    const out: Piece[] = [];
    let cur = addr;
    let left = len;
    while (left > 0) {
      const w = this.find(cur);
      if (w === null) return null;
      const n = Math.min(left, w.gpa + w.len - cur);
      out.push({ gpa: cur, len: n });
      cur += n;
      left -= n;
    }
    return out;
  }

  read(addr: number, len: number): Uint8Array | null {
    const ps = this.pieces(addr, len);
    if (ps === null) return null;
    const out = new Uint8Array(len);
    let o = 0;
    for (const p of ps) {
      const w = this.find(p.gpa)!;
      out.set(w.bytes.subarray(p.gpa - w.gpa, p.gpa - w.gpa + p.len), o);
      o += p.len;
    }
    return out;
  }
}

/** Cuts `bytes` into windows: the first of `first` bytes, the rest of `ws`. */
function cut(bytes: Uint8Array, first: number, ws: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  let n = Math.min(first, bytes.length);
  while (o < bytes.length) {
    out.push(bytes.subarray(o, o + n));
    o += n;
    n = Math.min(ws, bytes.length - o);
  }
  return out;
}

// ------------------------------------------------------------------ the model of the walker's rules

interface ModelWalk {
  ok: boolean;
  /** The chain went through an indirect table. */
  indirect: boolean;
  /** Descriptors the walker reads (the one naming an indirect table included). */
  steps: number;
  rd: Piece[];
  wr: Piece[];
  rdTotal: number;
  wrTotal: number;
}

/**
 * The chain rules of host/virtio/chain.ts's header, restated: ttl = queue
 * size (an indirect descriptor refunds its step), one level of indirect
 * table (not empty, whole descriptors, fits the ttl, in RAM in at most 8
 * pieces), next inside its table, no readable after writable, every byte in
 * RAM, zero-length descriptors not looked at, each direction below 4 GiB and
 * within `cap` segments.
 */
function modelWalk(L: Layout, table: Uint8Array, tableOff: number, num: number, head: number, indirectAllowed: boolean, cap: number): ModelWalk {
  const m: ModelWalk = { ok: false, indirect: false, steps: 0, rd: [], wr: [], rdTotal: 0, wrTotal: 0 };
  if (head >= num) return m;
  let ttl = num;
  let tb = table;
  let to = tableOff;
  let tn = num;
  let indirect = false;
  let sawW = false;
  let idx = head;
  for (;;) {
    if (ttl === 0) return m;
    ttl--;
    m.steps++;
    const dv = new DataView(tb.buffer, tb.byteOffset, tb.byteLength);
    const o = to + 16 * idx;
    const addr = dv.getUint32(o + 4, true) * TWO32 + dv.getUint32(o, true);
    const len = dv.getUint32(o + 8, true);
    const flags = dv.getUint16(o + 12, true);
    const next = dv.getUint16(o + 14, true);
    if (flags & F_IND) {
      if (indirect || !indirectAllowed || len === 0 || len % 16 !== 0) return m;
      ttl++;
      if (len / 16 > ttl) return m;
      const ps = L.pieces(addr, len);
      if (ps === null || ps.length > 8) return m;
      tb = L.read(addr, len)!;
      to = 0;
      tn = len / 16;
      idx = 0;
      indirect = m.indirect = true;
      continue;
    }
    const w = (flags & F_WR) !== 0;
    if (w) sawW = true;
    else if (sawW) return m;
    if (len > 0) {
      const ps = L.pieces(addr, len);
      const list = w ? m.wr : m.rd;
      if (ps === null || list.length + ps.length > cap) return m;
      list.push(...ps);
      if (w) m.wrTotal += len;
      else m.rdTotal += len;
      if ((w ? m.wrTotal : m.rdTotal) >= TWO32) return m;
    }
    if (!(flags & F_NEXT)) {
      m.ok = true;
      return m;
    }
    if (next >= tn) return m;
    idx = next;
  }
}

/** Writes one descriptor; addr may be beyond 2^53 (a bigint). */
function putDesc(b: Uint8Array, off: number, addr: number | bigint, len: number, flags: number, next: number): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const a = BigInt(addr);
  dv.setUint32(off, Number(a & 0xffff_ffffn), true);
  dv.setUint32(off + 4, Number((a >> 32n) & 0xffff_ffffn), true);
  dv.setUint32(off + 8, len >>> 0, true);
  dv.setUint16(off + 12, flags & 0xffff, true);
  dv.setUint16(off + 14, next & 0xffff, true);
}

/** The walker's segments, checked against guest RAM and the model's pieces. */
function checkSegments(c: Checker, L: Layout, list: SegmentList, want: Piece[], wantTotal: number, what: string): void {
  c.ok(list.count === want.length, () => `${what}: ${list.count} segments, the model has ${want.length}`);
  let total = 0;
  for (let i = 0; i < list.count; i++) {
    const w = L.byBytes.get(list.bufs[i]!);
    const off = list.offs[i]!;
    const len = list.lens[i]!;
    total += len;
    if (!c.ok(w !== undefined, `${what}: segment ${i} is not in a window of guest RAM`)) return;
    const v = list.views[i]!;
    c.ok(v.buffer === w!.bytes.buffer && v.byteOffset === w!.bytes.byteOffset && v.byteLength === w!.bytes.byteLength, `${what}: segment ${i}'s view is not its window's`);
    if (!c.ok(len > 0 && off >= 0 && off + len <= w!.len, () => `${what}: segment ${i} (${off}+${len}) outside its window of ${w!.len} bytes`)) return;
    const p = want[i];
    c.ok(p !== undefined && p.gpa === w!.gpa + off && p.len === len, () => `${what}: segment ${i} is 0x${(w!.gpa + off).toString(16)}+${len}, the model says ${p ? `0x${p.gpa.toString(16)}+${p.len}` : 'none'}`);
  }
  c.ok(total === list.total && total === wantTotal, () => `${what}: total ${list.total} (segments sum ${total}), the accepted descriptors say ${wantTotal}`);
}

// ------------------------------------------------------------------ 1. the chain walker

interface WalkMem {
  L: Layout;
  /** Region 0 holds the direct table at its start. */
  r0: { gpa: number; bytes: Uint8Array };
  /** Interesting addresses: region starts and ends, window edges. */
  edges: number[];
  big: { gpa: number; size: number } | null;
}

function walkMems(rng: Rng): WalkMem[] {
  const mk = (regions: { gpa: number; size: number; first: number; ws: number }[], big: boolean): WalkMem => {
    const rs: { gpa: number; windows: Uint8Array[] }[] = [];
    let r0: WalkMem['r0'] | null = null;
    for (const r of regions) {
      const b = new Uint8Array(r.size);
      rng.fill(b);
      r0 ??= { gpa: r.gpa, bytes: b };
      rs.push({ gpa: r.gpa, windows: cut(b, r.first, r.ws) });
    }
    let bigR: WalkMem['big'] = null;
    if (big) {
      // 8 GiB of RAM in 512 windows of 16 MiB, all views of one buffer (distinct
      // objects, so a segment still says which window it is in): descriptors of
      // up to 4 GiB and chains past 2^32 bytes
      const shared = new Uint8Array(16 * MiB);
      rng.fill(shared.subarray(0, 64 * KiB));
      const ws: Uint8Array[] = [];
      for (let i = 0; i < 512; i++) ws.push(shared.subarray(0));
      bigR = { gpa: 2 ** 33, size: 2 ** 33 };
      rs.push({ gpa: bigR.gpa, windows: ws });
    }
    const L = new Layout(rs);
    const edges: number[] = [];
    for (const w of L.wins) if (edges.length < 64 || w.gpa < 2 ** 33) edges.push(w.gpa, w.gpa + w.len);
    return { L, r0: r0!, edges, big: bigR };
  };
  return [
    // contiguous regions (joined), odd window sizes, a hole, a far region, 8 GiB
    mk(
      [
        { gpa: 0, size: 256 * KiB, first: 64 * KiB, ws: 64 * KiB },
        { gpa: 256 * KiB, size: 64 * KiB, first: 4096, ws: 4096 },
        { gpa: 1 * MiB, size: 32 * KiB, first: 1000, ws: 1000 },
        { gpa: 2 ** 52, size: 64 * KiB, first: 64 * KiB, ws: 64 * KiB },
      ],
      true,
    ),
    // RAM not at 0, a window edge inside the first page, a region ending where a hole starts
    mk(
      [
        { gpa: 0x3000, size: 192 * KiB, first: 24 * KiB, ws: 3 * KiB + 16 },
        { gpa: 0x3000 + 192 * KiB + 8192, size: 128 * KiB, first: 128 * KiB, ws: 128 * KiB },
      ],
      false,
    ),
  ];
}

/** A random descriptor address (number, or bigint beyond 2^53) for a buffer of `len` bytes. */
function randAddr(rng: Rng, m: WalkMem, len: number, tables: readonly number[]): number | bigint {
  const L = m.L;
  switch (rng.int(10)) {
    case 0:
    case 1:
    case 2: {
      const r = rng.pick(L.regions);
      return r.gpa + rng.int(Math.max(1, r.size - Math.min(len, r.size)));
    }
    case 3: {
      // across a window or region edge
      const e = rng.pick(m.edges);
      return Math.max(0, e - rng.int(Math.max(1, Math.min(len, 8192))));
    }
    case 4: {
      const r = rng.pick(L.regions);
      return r.gpa + r.size - rng.int(Math.max(1, Math.min(len, r.size) + 1)) + rng.int(2);
    }
    case 5: {
      if (m.big && rng.chance(0.7)) return m.big.gpa + rng.int(m.big.size);
      return rng.pick([0, 1, 2 ** 32 - 8, 2 ** 40, 2 ** 53 - 16, 2 ** 52 + 64 * KiB - 8]);
    }
    case 6:
      return rng.pick([0xffff_ffff_ffff_fff0n, 0x8000_0000_0000_0000n, BigInt(2 ** 53), 0x1_0000_0000_0000n + BigInt(rng.u32())]);
    case 7:
      return tables.length > 0 ? rng.pick(tables) + rng.int(3) * 16 : 0;
    case 8:
      return rng.int(2 ** 21);
    default:
      return rng.u32() * (rng.chance(0.1) ? 4096 : 1);
  }
}

function randLen(rng: Rng): number {
  switch (rng.int(10)) {
    case 0:
      return 0;
    case 1:
    case 2:
      return rng.range(1, 16);
    case 3:
    case 4:
      return rng.range(16, 4096);
    case 5:
      return 4096;
    case 6:
      return rng.range(4096, 128 * KiB);
    case 7:
      return rng.pick([0xffff_ffff, 0x8000_0000, TWO32 - rng.range(1, 64), 2 ** 31 + rng.int(2 ** 31)]);
    case 8:
      return rng.pick([16, 32, 48, 160, 15, 17, 4080]);
    default:
      return rng.u32();
  }
}

function randFlags(rng: Rng): number {
  let f = 0;
  if (rng.chance(0.7)) f |= F_NEXT;
  if (rng.chance(0.4)) f |= F_WR;
  if (rng.chance(0.12)) f |= F_IND;
  if (rng.chance(0.05)) f |= rng.u32() & 0xfff8;
  return f;
}

function randNext(rng: Rng, tn: number): number {
  if (rng.chance(0.9)) return rng.int(tn);
  return rng.pick([tn, tn + 1, 0xffff, rng.u32() & 0xffff]);
}

/** Writes a random descriptor. */
function randDesc(rng: Rng, m: WalkMem, b: Uint8Array, off: number, tn: number, tables: readonly number[]): void {
  const len = randLen(rng);
  putDesc(b, off, randAddr(rng, m, len, tables), len, randFlags(rng), randNext(rng, tn));
}

/**
 * Writes a well-formed chain of `n` buffers at entries `slots` of a table
 * (readable then writable, NEXT-linked), its buffers inside RAM (in the 8 GiB
 * region with `huge`: lengths up to 4 GiB). Returns nothing: the model says
 * what it is.
 */
function plantChain(rng: Rng, m: WalkMem, b: Uint8Array, off: number, slots: readonly number[], huge: boolean, tables: readonly number[], wild = 0.2, readOnly = false): void {
  const n = slots.length;
  const firstW = readOnly ? n : rng.int(n + 1);
  for (let k = 0; k < n; k++) {
    let addr: number | bigint;
    let len: number;
    if (huge && m.big) {
      len = rng.chance(0.5) ? 0xffff_ffff : rng.range(2 ** 30, 0xffff_ffff);
      addr = m.big.gpa + rng.int(m.big.size - len);
    } else {
      len = rng.chance(0.1) ? 0 : rng.pick([1, 16, 48, 512, 4096, rng.range(1, 9000)]);
      const r = rng.pick(m.L.regions);
      addr = rng.chance(wild) ? randAddr(rng, m, len, tables) : r.gpa + rng.int(Math.max(1, r.size - len));
    }
    const last = k === n - 1;
    putDesc(b, off + 16 * slots[k]!, addr, len, (last ? 0 : F_NEXT) | (k >= firstW ? F_WR : 0), last ? rng.int(0x10000) : slots[k + 1]!);
  }
}

/** k distinct entries of [0, n) in random order. */
function slotsOf(rng: Rng, n: number, k: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, k);
}

t.test(`the chain walker on random descriptor tables agrees with its rules and stays inside guest RAM (seed ${SEED})`, async (t) => {
  const rng = new Rng(SEED ^ 0x11);
  const c = new Checker(t);
  const mems = walkMems(rng);
  const budget = new Budget();
  for (const m of mems) m.L.count(budget);
  const tableViews = new Map<Uint8Array, CountingView>(mems.map((m) => [m.r0.bytes, new CountingView(m.r0.bytes, budget)]));
  const walkers = new Map<number, ChainWalker>();
  const stats = { walks: 0, accepted: 0, viaIndirect: 0, segments: 0, over4G: 0, loops: 0 };
  const walks = ITERS * WALKS_PER_ROUND;
  for (let it = 0; it < walks; it++) {
    c.where = `walk ${it}`;
    const m = rng.pick(mems);
    const L = m.L;
    const num = rng.pick([1, 2, 4, 8, 16, 64, 256, 1024]);
    const cap = rng.pick([1024, 1024, 1024, 64, 8, 3]);
    const indirectAllowed = rng.chance(0.85);
    const tb = m.r0.bytes;
    const tableOff = 16 * rng.int(4);
    // indirect tables: in region 0 after the direct table (aligned or not),
    // across a window or region edge, in the 8 GiB region, or outside RAM
    const tables: { addr: number; n: number }[] = [];
    const nt = rng.int(4);
    for (let k = 0; k < nt; k++) {
      const n = rng.chance(0.8) ? rng.range(1, Math.min(num + 2, 40)) : rng.range(1, num + 2);
      let addr: number;
      switch (rng.int(5)) {
        case 0:
        case 1:
          addr = m.r0.gpa + 16 * 1024 + 64 + 16 * rng.int(4096) + (rng.chance(0.15) ? rng.range(1, 15) : 0);
          break;
        case 2:
          addr = Math.max(m.r0.gpa + 16 * 1100, rng.pick(m.edges) - 16 * rng.range(1, n));
          break;
        case 3:
          addr = m.big ? m.big.gpa + 16 * MiB * rng.range(1, 8) - 16 * rng.int(n + 1) : m.r0.gpa + 20 * 1024;
          break;
        default:
          addr = rng.pick(L.regions).gpa + 16 * rng.int(2048);
      }
      const bytes = L.read(addr, 16 * n);
      if (bytes === null) continue; // not all in RAM: named by descriptors only
      tables.push({ addr, n });
    }
    const tAddrs = tables.map((x) => x.addr);
    // the direct table: random, then perhaps a well-formed chain from the head
    for (let i = 0; i < num; i++) randDesc(rng, m, tb, tableOff + 16 * i, num, tAddrs);
    let head = rng.int(num);
    let planted: { addr: number; n: number } | null = null;
    const shape = rng.int(10);
    if (shape < 6) {
      // (ending in an indirect table: a few readable buffers first, so that the table's chain may be well formed)
      const len = shape === 2 ? rng.range(1, Math.min(num, 3)) : rng.chance(0.2) ? num : rng.range(1, Math.min(num, 24));
      const slots = slotsOf(rng, num, len);
      head = slots[0]!;
      plantChain(rng, m, tb, tableOff, slots, shape === 0, tAddrs, shape === 2 ? 0.02 : 0.2, shape === 2);
      if (shape === 1) {
        // a loop: the last buffer points back into the chain
        const lastOff = tableOff + 16 * slots[len - 1]!;
        tb[lastOff + 12] |= F_NEXT;
        new DataView(tb.buffer, tb.byteOffset).setUint16(lastOff + 14, rng.pick(slots), true);
      }
      if (shape === 2 && tables.length > 0) {
        // ends in an indirect table holding a well-formed chain (or a nested one, or a misfit)
        const tt = rng.pick(tables);
        planted = tt;
        const tbytes = new Uint8Array(16 * tt.n);
        // a table's chain starts at its entry 0
        plantChain(rng, m, tbytes, 0, [0, ...slotsOf(rng, tt.n - 1, rng.range(0, tt.n - 1)).map((x) => x + 1)], false, tAddrs, 0.05);
        if (rng.chance(0.1)) putDesc(tbytes, 16 * rng.int(tt.n), rng.pick(tAddrs), 16 * rng.range(1, 4), F_IND, 0);
        if (rng.chance(0.2)) {
          // a loop inside the table
          const at = 16 * rng.int(tt.n);
          tbytes[at + 12] |= F_NEXT;
          new DataView(tbytes.buffer).setUint16(at + 14, rng.int(tt.n), true);
        }
        writeGuest(L, tt.addr, tbytes);
        const tlen = rng.chance(0.85) ? 16 * tt.n : rng.pick([0, 8, 16 * tt.n + 8, 16 * (tt.n + 1), 16 * (num + 1)]);
        putDesc(tb, tableOff + 16 * slots[len - 1]!, tt.addr, tlen, F_IND | (rng.chance(0.1) ? F_NEXT | F_WR : 0), rng.int(num));
      }
      if (shape === 3) {
        // one random change in a well-formed chain
        randDesc(rng, m, tb, tableOff + 16 * rng.pick(slots), num, tAddrs);
      }
    }
    // random contents for tables not written above
    for (const tt of tables) {
      if (tt !== planted && rng.chance(0.5)) {
        const tbytes = new Uint8Array(16 * tt.n);
        for (let i = 0; i < tt.n; i++) randDesc(rng, m, tbytes, 16 * i, tt.n, tAddrs);
        writeGuest(L, tt.addr, tbytes);
      }
    }
    if (rng.chance(0.05)) head = rng.pick([num, num + 1, 0xffff]);
    const model = modelWalk(L, tb, tableOff, num, head, indirectAllowed, cap);
    let w = walkers.get(cap);
    if (w === undefined) {
      w = new ChainWalker(cap);
      // its copy of a table split over windows, big enough for any table here (never replaced), counted too
      const scratch = new Uint8Array(16 * 2048);
      w['scratch'] = scratch;
      w['scratchView'] = new CountingView(scratch, budget);
      walkers.set(cap, w);
    }
    w.mem = L.mem;
    let ok: boolean;
    budget.reads = 0;
    budget.limit = 2 * (num + 1);
    try {
      ok = w.walk(tableViews.get(tb)!, tableOff, num, head, indirectAllowed);
    } catch (err) {
      c.ok(false, `the walker threw: ${brief(err)}`);
      continue;
    } finally {
      budget.limit = Infinity;
    }
    stats.walks++;
    c.ok(w.descriptors <= num + 1, () => `${w!.descriptors} descriptors read on a queue of ${num}: a loop must end within the queue size`);
    c.ok(w.descriptors === model.steps, () => `${w!.descriptors} descriptors read, the model reads ${model.steps}`);
    if (!c.ok(ok === model.ok, () => `walker ${ok ? 'accepted' : `refused (${w!.error})`}, the model ${model.ok ? 'accepts' : 'refuses'} (queue ${num}, head ${head}, cap ${cap}, indirect ${indirectAllowed})`)) continue;
    if (!ok) {
      c.ok(w.error.length > 0, 'a refusal without a reason');
      if (/4 GiB/.test(w.error)) stats.over4G++;
      if (/loop/.test(w.error)) stats.loops++;
      continue;
    }
    stats.accepted++;
    if (model.indirect) stats.viaIndirect++;
    stats.segments += w.readable.count + w.writable.count;
    checkSegments(c, L, w.readable, model.rd, model.rdTotal, 'readable');
    checkSegments(c, L, w.writable, model.wr, model.wrTotal, 'writable');
    c.ok(w.readable.total < TWO32 && w.writable.total < TWO32, 'a direction of 4 GiB or more accepted');
  }
  t.equal(c.fails, 0, `${c.checks} checks on ${stats.walks} walks: ${stats.accepted} accepted (${stats.viaIndirect} through an indirect table, ${stats.segments} segments), ${stats.loops} loops and ${stats.over4G} chains past 4 GiB refused`);
  // the generator must reach both verdicts and the interesting refusals, or the test checks little
  t.ok(stats.accepted > stats.walks / 20 && stats.accepted < stats.walks * 0.9, `both verdicts reached (${stats.accepted} of ${stats.walks} accepted)`);
  if (walks >= 1000) t.ok(stats.over4G > 0 && stats.loops > 0 && stats.viaIndirect > 0, `loops (${stats.loops}), chains past 4 GiB (${stats.over4G}) and accepted indirect tables (${stats.viaIndirect}) generated`);
});

function writeGuest(L: Layout, addr: number, bytes: Uint8Array): void {
  let o = 0;
  for (const p of L.pieces(addr, bytes.length)!) {
    const w = L.find(p.gpa)!;
    w.bytes.set(bytes.subarray(o, o + p.len), p.gpa - w.gpa);
    o += p.len;
  }
}

// ------------------------------------------------------------------ 2. split queue + engine + devices

const UVA = 0x7f00_0000_0000;
const EVENT_IDX = 1n << 29n;
const INDIRECT_DESC = 1n << 28n;
const VERSION_1 = 1n << 32n;
/** Bytes of a hostile guest's region 0 holding its rings and indirect tables (never a writable buffer). */
const CTRL = 64 * KiB;
const R0_SIZE = 256 * KiB;
const R1_SIZE = 256 * KiB;
const DESC_AT = 0;
const AVAIL_AT = 4096;
const USED_AT = 8192;
const TABLES_AT = 12 * KiB;
const TABLE_BYTES = 4096;
const NTABLES = (CTRL - TABLES_AT) / TABLE_BYTES;
const EVIL_BLK_PAGES = 16;
const GOOD_BLK_PAGES = 64;
/** Passes allowed to drain one round: far above the budget rule's worst case (256 chains x 4 turns each). */
const MAX_PASSES = 20000;

class FakeOs extends FakeEventfds implements EngineOs {
  files = new Map<number, { bytes: Uint8Array; first: number; ws: number }>();
  mmapShared(fd: number, length: bigint, offset: bigint): OsMapping {
    const f = this.files.get(fd);
    if (!f) throw new Error(`EBADF: fd ${fd}`);
    const b = f.bytes.subarray(Number(offset), Number(offset + length));
    let o = 0;
    return { windows: cut(b, f.first, f.ws).map((bytes) => ({ offset: BigInt((o += bytes.length) - bytes.length), bytes })) };
  }
  munmap(): void {}
  close(): void {}
}

/**
 * Per-VM store limits. A hostile VM is capped at 2,048 pages (tmem-max), a
 * quarter of the capacity, so however many handles it fills the polite
 * guests' PUTs never meet a full store (NOSPACE would be right, but not what
 * this test checks).
 */
const limits = (hostile: boolean) => ({ maxmemBytes: 1n << 30n, shareGroup: null, tmemMaxBytes: hostile ? 2048n * 4096n : null, ramFloorBytes: 0n, frozen: false });
const blkParams = (pages: number, serial: string, hostile: boolean): BlkOpenParams => ({ ...limits(hostile), sizeBytes: pages * 4096, overflowPath: null, serial });

/** What a device was asked and answered (recorded around WorkerDevice.handle). */
interface Seen {
  R: number;
  W: number;
  head: Uint8Array;
  used: number;
  status: number;
}

/**
 * "Not now" answers (HANDLE_LATER, as tmem-blk gives for pages on the disk)
 * the test makes a hostile device give: at most `left` a round, at most
 * twice in a row (a device bounds how long it parks one chain), so the
 * engine's parking runs under hostile rings too.
 */
interface Later {
  rng: Rng;
  left: number;
  streak: number;
  count: number;
}
/** HANDLE_LATER answers a hostile device may give per round. */
const LATER_PER_ROUND = 6;

function record(dev: WorkerDevice, status: () => number, later: Later): Seen[] {
  const seen: Seen[] = [];
  const orig = dev.handle.bind(dev);
  dev.handle = (q, rd, wr) => {
    if (later.left > 0 && later.streak < 2 && later.rng.chance(0.04)) {
      // nothing done, nothing recorded: the engine offers the chain again
      later.left--;
      later.streak++;
      later.count++;
      return HANDLE_LATER;
    }
    later.streak = 0;
    const head = new Uint8Array(Math.min(rd.total, 16 + 16 * (BLK_MAX_DWZ_SEG + 2), 64 * KiB));
    rd.readInto(0, head, 0, head.length);
    const s: Seen = { R: rd.total, W: wr.total, head, used: -1, status: NaN };
    seen.push(s);
    s.used = orig(q, rd, wr);
    s.status = status();
    return s.used;
  };
  return seen;
}

/** The answer the tmem device's rules give a request of this shape: used len and status (null: the store decides). */
function tmemExpect(s: Seen): { used: number | null; status: number | null } {
  if (s.W < 16) return { used: 0, status: null };
  if (s.R < 4) return { used: 16, status: TMEM_S_INVALID };
  const h = new Uint8Array(48);
  h.set(s.head.subarray(0, 48));
  const v = new DataView(h.buffer);
  const op = v.getUint32(0, true);
  const p = OP_PAYLOAD[op];
  if (p === undefined) return { used: 16, status: TMEM_S_UNSUPPORTED };
  if (s.R !== 48 + p[0] || s.W !== 16 + p[1] || (v.getUint32(4, true) & ~requestFlagsAllowed(op)) !== 0) return { used: 16, status: TMEM_S_INVALID };
  // a well-formed request: the store says the status; the data comes back with OK only (GET's page, INFO's record)
  if (!TMEM_STATUSES.includes(s.status)) return { used: null, status: TMEM_S_OK };
  return { used: 16 + (s.status === TMEM_S_OK ? p[1] : 0), status: null };
}
const TMEM_STATUSES = [TMEM_S_OK, TMEM_S_MISS, TMEM_S_INVALID, TMEM_S_NOSPACE, TMEM_S_DENIED, TMEM_S_FROZEN, TMEM_S_UNSUPPORTED];

/** The answer the blk handler's rules give: used len (null: not checked) and status byte. */
function blkExpect(s: Seen, capacitySectors: number): { used: number | null; status: number } {
  if (s.W < 1) return { used: 0, status: -1 };
  const ioerr = { used: 1, status: VIRTIO_BLK_S_IOERR };
  if (s.R < 16) return ioerr;
  const v = new DataView(s.head.buffer, s.head.byteOffset, s.head.byteLength);
  const type = v.getUint32(0, true);
  const hi = v.getUint32(12, true);
  const sector = hi >= 4096 ? Infinity : hi * TWO32 + v.getUint32(8, true);
  const inRange = (sec: number, bytes: number) => bytes % 512 === 0 && sec + bytes / 512 <= capacitySectors;
  switch (type) {
    case VIRTIO_BLK_T_IN:
      if (s.R !== 16 || !inRange(sector, s.W - 1)) return ioerr;
      return { used: s.W, status: VIRTIO_BLK_S_OK };
    case VIRTIO_BLK_T_OUT:
      if (s.W !== 1 || !inRange(sector, s.R - 16)) return ioerr;
      return { used: 1, status: VIRTIO_BLK_S_OK };
    case VIRTIO_BLK_T_FLUSH:
      return s.R !== 16 || s.W !== 1 ? ioerr : { used: 1, status: VIRTIO_BLK_S_OK };
    case VIRTIO_BLK_T_GET_ID:
      return s.R !== 16 ? ioerr : { used: Math.min(20, s.W - 1) + 1, status: VIRTIO_BLK_S_OK };
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
      const len = s.R - 16;
      if (s.W !== 1 || len === 0 || len % 16 !== 0 || len / 16 > BLK_MAX_DWZ_SEG) return ioerr;
      for (let k = 0; k < len / 16; k++) {
        const o = 16 + 16 * k;
        const shi = v.getUint32(o + 4, true);
        const ssec = shi >= 4096 ? Infinity : shi * TWO32 + v.getUint32(o, true);
        const num = v.getUint32(o + 8, true);
        const flags = v.getUint32(o + 12, true);
        if ((flags & ~1) !== 0 || (type === VIRTIO_BLK_T_DISCARD && flags !== 0)) return { used: 1, status: VIRTIO_BLK_S_UNSUPP };
        if (num > BLK_MAX_DWZ_SECTORS || !inRange(ssec, num * 512)) return ioerr;
      }
      return { used: 1, status: VIRTIO_BLK_S_OK };
    }
    default:
      return { used: 1, status: VIRTIO_BLK_S_UNSUPP };
  }
}

/** A hostile guest: two regions (joined or with a hole), odd mapping windows, one queue it fills with anything. */
class Hostile {
  readonly id: number;
  readonly kind: 'tmem' | 'blk';
  readonly ram0 = new Uint8Array(R0_SIZE);
  readonly ram1 = new Uint8Array(R1_SIZE);
  readonly r1gpa: number;
  readonly L: Layout;
  readonly seen: Seen[];
  readonly dev: WorkerDevice;
  /** Data area: where valid buffers go (never the rings or the indirect tables). */
  readonly data: { gpa: number; size: number }[];
  readonly edges: number[];
  readonly later: Later;

  constructor(e: Engine, os: FakeOs, rng: Rng, id: number, kind: 'tmem' | 'blk', dev: WorkerDevice, status: () => number, budget: Budget) {
    this.id = id;
    this.kind = kind;
    this.dev = dev;
    this.later = { rng: new Rng(rng.u32()), left: 0, streak: 0, count: 0 };
    this.r1gpa = rng.chance(0.5) ? R0_SIZE : R0_SIZE + MiB; // joined, or after a hole
    const ws = rng.pick([4096, 5000, 64 * KiB, MiB]);
    const fd0 = 500 + 2 * id;
    const fd1 = fd0 + 1;
    // the rings sit in the first window (a ring is never split); the rest in odd windows
    os.files.set(fd0, { bytes: this.ram0, first: CTRL, ws });
    os.files.set(fd1, { bytes: this.ram1, first: ws, ws });
    this.L = new Layout([
      { gpa: 0, windows: cut(this.ram0, CTRL, ws) },
      { gpa: this.r1gpa, windows: cut(this.ram1, ws, ws) },
    ]);
    this.data = [
      { gpa: CTRL, size: R0_SIZE - CTRL },
      { gpa: this.r1gpa, size: R1_SIZE },
    ];
    this.edges = this.L.wins.filter((w) => w.gpa >= CTRL).flatMap((w) => [w.gpa, w.gpa + w.len]);
    e.setMemTable(id, [
      { fd: fd0, guestPhysAddr: 0n, size: BigInt(R0_SIZE), userspaceAddr: BigInt(UVA), mmapOffset: 0n },
      { fd: fd1, guestPhysAddr: BigInt(this.r1gpa), size: BigInt(R1_SIZE), userspaceAddr: BigInt(UVA + 16 * MiB), mmapOffset: 0n },
    ]);
    this.seen = record(dev, status, this.later);
    // the engine's walker reads this guest's descriptors through these views: a walk that does not end throws (budget per round)
    for (const r of e.instances.get(id)!.mem!.regions) {
      for (const w of r.windows) {
        w.materialize();
        w.view = new CountingView(w.bytes, budget);
      }
    }
  }
}

/** A well-behaved guest: verified requests, a shadow of what it stored. */
interface Polite {
  id: number;
  kind: 'tmem' | 'blk';
  g: FakeGuest;
  ring: DriverRing;
  hdr: number[];
  data: number[];
  resp: number[];
  shadow: Map<number, Uint8Array>;
  disk: Uint8Array;
  pool: number;
}

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

async function engineFuzz(t: Test, poll: boolean): Promise<void> {
  const rng = new Rng(SEED ^ (poll ? 0x22 : 0x33));
  const c = new Checker(t);
  const os = new FakeOs();
  const logs: string[] = [];
  const e = new Engine(os, (l, m) => logs.push(`${l}: ${m}`), poll);
  const host = fakeWorkerHost({ capacityPages: 8192, maxPoolsPerGuest: 8 }, 'poll');
  const tmemKind = createTmemKind(host);
  const blkKind = createBlkKind(host);
  e.addKind(tmemKind);
  e.addKind(blkKind);
  let nextFd = 10000;
  const open = (id: number, vm: string, kind: 'tmem' | 'blk', blkPages = 0): WorkerDevice => {
    const info = { id, vm, kind, numQueues: 1 };
    const hostile = vm.startsWith('hostile');
    const dev = kind === 'tmem' ? tmemKind.open(info, limits(hostile)) : blkKind.open(info, blkParams(blkPages, vm, hostile));
    e.open(info, { maxRamBytes: null, allowUnsealed: false }, dev);
    return dev;
  };
  const startQueue = (id: number, num: number, base: number, desc: number, avail: number, used: number) => {
    e.setVringNum(id, 0, num);
    e.setVringBase(id, 0, base);
    e.setVringAddr(id, 0, { descUser: BigInt(desc), usedUser: BigInt(used), availUser: BigInt(avail) });
    e.setVringFd(id, 0, 'kickFd', nextFd++);
    e.setVringFd(id, 0, 'callFd', nextFd++);
    e.setVringFd(id, 0, 'errFd', nextFd++);
    e.setVringEnable(id, 0, true);
  };
  const kickAll = () => {
    if (poll) return;
    for (const g of e.instances.values()) for (const q of g.queues) if (q.ring) e.kicked(g, q);
  };
  /** Non-zero: the descriptor-read budget is per pass (chaotic rings), not per round. */
  let perPass = 0;
  /** One pass; an exception escaping the engine is a failure. */
  const pass = (): number => {
    if (perPass > 0) {
      budget.reads = 0;
      budget.limit = perPass;
    }
    try {
      return e.pass(poll);
    } catch (err) {
      c.ok(false, `an exception escaped the engine: ${brief(err)}`);
      return 0;
    }
  };

  // ---- the hostile guests
  const budget = new Budget();
  const hostile: Hostile[] = [];
  for (const [id, kind] of [
    [1, 'tmem'],
    [2, 'blk'],
  ] as const) {
    const dev = open(id, `hostile-${kind}`, kind, EVIL_BLK_PAGES);
    const status = kind === 'tmem' ? () => (dev as TmemInstance).lastStatus : () => (dev as BlkInstance).disk.handler.lastStatus;
    hostile.push(new Hostile(e, os, rng, id, kind, dev, status, budget));
  }

  // ---- the well-behaved guests
  const polite: Polite[] = [];
  for (const [id, kind] of [
    [3, 'tmem'],
    [4, 'blk'],
  ] as const) {
    open(id, `polite-${kind}`, kind, GOOD_BLK_PAGES);
    const g = new FakeGuest(MiB);
    const fd = nextFd++;
    os.files.set(fd, { bytes: g.ram, first: 1 << 30, ws: 1 << 30 });
    e.setFeatures(id, VERSION_1 | EVENT_IDX);
    e.setMemTable(id, [{ fd, guestPhysAddr: 0n, size: BigInt(g.ram.length), userspaceAddr: BigInt(UVA), mmapOffset: 0n }]);
    const ring = new DriverRing(g, 16);
    startQueue(id, 16, 0, UVA + ring.desc, UVA + ring.avail, UVA + ring.used);
    const p: Polite = {
      id,
      kind,
      g,
      ring,
      hdr: [0, 1, 2, 3].map(() => g.alloc(64)),
      data: [0, 1, 2, 3].map(() => g.alloc(16 * KiB, 4096)),
      resp: [0, 1, 2, 3].map(() => g.alloc(16)),
      shadow: new Map(),
      disk: new Uint8Array(GOOD_BLK_PAGES * 4096),
      pool: -1,
    };
    polite.push(p);
  }
  // the polite tmem guest's persistent pool
  {
    const p = polite[0]!;
    p.g.write(p.hdr[0]!, reqHeader({ op: TMEM_OP_NEW_POOL }));
    p.g.write(p.data[0]!, newPoolPayload(TMEM_POOL_PERSIST));
    p.ring.publish(p.ring.chain([{ addr: p.hdr[0]!, len: 48 }, { addr: p.data[0]!, len: 24 }, { addr: p.resp[0]!, len: 16, flags: F_WRITE }]));
    kickAll();
    pass();
    p.ring.takeUsed();
    const r = readResp(p.g, p.resp[0]!);
    if (r.status !== TMEM_S_OK) throw new Error(`NEW_POOL: status ${r.status}`);
    p.pool = Number(r.value);
  }


  const stats = { rounds: 0, chains: 0, completed: 0, seen: 0, broken: 0, jumps: 0, statusChecked: 0, chaos: 0, chaosSeen: 0, restarts: 0 };
  const laterBefore = hostile.reduce((n, h) => n + h.later.count, 0);
  for (let round = 0; round < ITERS; round++) {
    c.where = `${poll ? 'poll' : 'notify'} round ${round}`;
    stats.rounds++;
    const plans: RoundPlan[] = [];
    for (const h of hostile) plans.push(prepareRound(e, rng, h, startQueue));
    // each chain made available is walked once (a blk queue may try one more), each walk reads at most the queue size + 1
    // descriptors; with chaotic rings (completions may add work) a pass serves at most TURN_UNITS + 1 chains a queue
    const chaos = plans.some((pl) => pl.chaos);
    budget.reads = 0;
    // (a chain the device answered HANDLE_LATER is walked again)
    budget.limit = plans.reduce((n, pl) => n + 2 * (pl.num + 1) * (pl.made + 1 + LATER_PER_ROUND), 0);
    for (const h of hostile) {
      h.later.left = LATER_PER_ROUND;
      h.later.streak = 0;
    }
    const chaosLimit = plans.reduce((n, pl) => n + 2 * (pl.num + 1) * (TURN_UNITS + 2), 0);
    perPass = chaos ? chaosLimit : 0;
    const politeChecks = polite.map((p) => politeBatch(c, rng, p));
    kickAll();
    pass();
    for (const ch of politeChecks) ch();
    // more verified I/O while the hostile rings are still being drained
    const politeChecks2 = polite.map((p) => politeBatch(c, rng, p));
    kickAll();
    pass();
    for (const ch of politeChecks2) ch();
    let passes = 2;
    // chaotic rings may feed themselves (completions rewriting avail entries): those rounds are cut short
    const maxPasses = chaos ? 400 : MAX_PASSES;
    while (passes < maxPasses) {
      if (passes === 2) {
        // the front-end stops and restarts a hostile ring mid-drain (GET_VRING_BASE, then the start sequence from
        // the base it got): nothing is lost, done twice or reordered, a parked chain included
        for (const pl of plans) {
          const q = e.instances.get(pl.h.id)!.queues[0]!;
          if (pl.chaos || q.ring === null || q.broken !== null || !rng.chance(0.2)) continue;
          e.setVringEnable(pl.h.id, 0, false);
          const b = e.getVringBase(pl.h.id, 0);
          startQueue(pl.h.id, pl.num, b, UVA + DESC_AT, UVA + AVAIL_AT, UVA + USED_AT);
          stats.restarts++;
        }
      }
      const n = pass();
      passes++;
      // a parked queue (HANDLE_LATER) is offered its chain again next pass
      if (n === 0 && !e.deferred && !e.parked) break;
      // the guest moves its event fields while the device works (its own writes: not the device's doing)
      for (const pl of plans) {
        if (pl.chaos || !rng.chance(0.1)) continue;
        for (const o of [AVAIL_AT, AVAIL_AT + 1, AVAIL_AT + 4 + 2 * pl.num, AVAIL_AT + 5 + 2 * pl.num]) pl.before0[o] = pl.h.ram0[o] = rng.int(256);
      }
    }
    c.ok(chaos || passes < MAX_PASSES, `the engine did not settle within ${MAX_PASSES} passes`);
    for (const pl of plans) {
      const r = checkRound(c, e, pl);
      stats.chains += pl.made;
      stats.completed += r.completed;
      stats.seen += r.seen;
      stats.statusChecked += r.statusChecked;
      if (r.broken) stats.broken++;
      if (pl.jump) stats.jumps++;
      if (pl.chaos) {
        stats.chaos++;
        stats.chaosSeen += r.seen;
      }
    }
    // the engine turns an exception while serving a queue into a broken queue: none may happen
    const internal = logs.find((l) => /internal error/.test(l));
    c.ok(internal === undefined, () => `an exception was caught inside the engine: ${internal!.split('\n').slice(0, 4).join(' ')}`);
    logs.length = 0;
    for (let i = 0; i < 100000 && e.idle(); i++);
  }
  t.equal(
    c.fails,
    0,
    `${c.checks} checks in ${stats.rounds} rounds: ${stats.chains} hostile chains made available, ${stats.completed} completed, ${stats.seen} reached a device (${stats.statusChecked} answers checked against the rules), ${stats.broken} queues broken (${stats.jumps} by idx jumps), ${stats.chaos} rings placed anywhere (${stats.chaosSeen} of their chains reached a device), ${hostile.reduce((n, h) => n + h.later.count, 0) - laterBefore} chains parked (HANDLE_LATER), ${stats.restarts} rings restarted mid-drain`,
  );
  t.ok(stats.seen > stats.chains / 10 && stats.completed < stats.chains, `the generator reaches the devices and the refusals (${stats.seen} seen, ${stats.completed} of ${stats.chains} completed)`);
  e.closeAll();
}

/** Posts up to 4 verified requests for a polite guest; returns the check to run once they are answered. */
function politeBatch(c: Checker, rng: Rng, p: Polite): () => void {
  const n = rng.range(1, 4);
  const checks: (() => void)[] = [];
  const allowed: Piece[] = [{ gpa: p.ring.used, len: 6 + 8 * p.ring.num }];
  const heads: number[] = [];
  for (let k = 0; k < n; k++) {
    const h = p.hdr[k]!;
    const d = p.data[k]!;
    const r = p.resp[k]!;
    let descs: Desc[];
    if (p.kind === 'tmem') {
      const index = rng.int(32);
      const oid: [bigint, bigint, bigint] = [7n, BigInt(index % 3), 0n];
      const key = index;
      const op = rng.pick([TMEM_OP_PUT_PAGE, TMEM_OP_PUT_PAGE, TMEM_OP_GET_PAGE, TMEM_OP_GET_PAGE, TMEM_OP_FLUSH_PAGE]);
      p.g.write(h, reqHeader({ op, pool: p.pool, index, oid }));
      if (op === TMEM_OP_PUT_PAGE) {
        const page = new Uint8Array(4096);
        rng.fill(page);
        p.g.write(d, page);
        descs = [{ addr: h, len: 48 }, { addr: d, len: 4096 }, { addr: r, len: 16, flags: F_WRITE }];
        p.shadow.set(key, page);
        checks.push(() => c.ok(readResp(p.g, r).status === TMEM_S_OK, `polite tmem PUT ${index}: status ${readResp(p.g, r).status}`));
      } else if (op === TMEM_OP_GET_PAGE) {
        const want = p.shadow.get(key);
        p.g.ram.fill(0xaa, d, d + 4096);
        descs = [{ addr: h, len: 48 }, { addr: d, len: 4096, flags: F_WRITE }, { addr: r, len: 16, flags: F_WRITE }];
        allowed.push({ gpa: d, len: 4096 });
        checks.push(() => {
          const st = readResp(p.g, r).status;
          if (want === undefined) c.ok(st === TMEM_S_MISS, `polite tmem GET ${index} of nothing: status ${st}`);
          else c.ok(st === TMEM_S_OK && Buffer.from(p.g.read(d, 4096)).equals(want), `polite tmem GET ${index}: status ${st}, data ${st === TMEM_S_OK ? 'differs' : 'absent'}`);
        });
      } else {
        descs = [{ addr: h, len: 48 }, { addr: r, len: 16, flags: F_WRITE }];
        p.shadow.delete(key);
        checks.push(() => c.ok(readResp(p.g, r).status === TMEM_S_OK || readResp(p.g, r).status === TMEM_S_MISS, `polite tmem FLUSH ${index}: status ${readResp(p.g, r).status}`));
      }
      allowed.push({ gpa: r, len: 16 });
    } else {
      const sectors = rng.range(1, 24);
      const sector = rng.int(GOOD_BLK_PAGES * 8 - sectors + 1);
      const write = rng.chance(0.5);
      const hb = new Uint8Array(16);
      dv(hb).setUint32(0, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, true);
      dv(hb).setBigUint64(8, BigInt(sector), true);
      p.g.write(h, hb);
      p.g.ram[r] = 0xee;
      const len = sectors * 512;
      // the data split at a random point: sub-page, unaligned I/O
      const cutAt = rng.int(len + 1);
      const parts = [
        { addr: d, len: cutAt },
        { addr: d + cutAt, len: len - cutAt },
      ].filter((x) => x.len > 0);
      if (write) {
        const data = new Uint8Array(len);
        rng.fill(data);
        p.g.write(d, data);
        p.disk.set(data, sector * 512);
        descs = [{ addr: h, len: 16 }, ...parts, { addr: r, len: 1, flags: F_WRITE }];
        checks.push(() => c.ok(p.g.ram[r] === VIRTIO_BLK_S_OK, `polite blk OUT ${sector}+${sectors}: status ${p.g.ram[r]}`));
      } else {
        const want = p.disk.slice(sector * 512, sector * 512 + len);
        p.g.ram.fill(0xaa, d, d + len);
        descs = [{ addr: h, len: 16 }, ...parts.map((x) => ({ ...x, flags: F_WRITE })), { addr: r, len: 1, flags: F_WRITE }];
        allowed.push({ gpa: d, len });
        checks.push(() => c.ok(p.g.ram[r] === VIRTIO_BLK_S_OK && Buffer.from(p.g.read(d, len)).equals(want), `polite blk IN ${sector}+${sectors}: status ${p.g.ram[r]}, data ${Buffer.from(p.g.read(d, len)).equals(want) ? 'right' : 'wrong'}`));
      }
      allowed.push({ gpa: r, len: 1 });
    }
    const head = p.ring.chain(descs);
    heads.push(head);
    p.ring.publish(head);
  }
  // what the guest wrote itself is not the engine's doing
  const before = p.g.ram.slice();
  return () => {
    const used = p.ring.takeUsed();
    c.ok(used.length === n && used.every((u, i) => u.id === heads[i]), () => `polite ${p.kind} guest: ${used.length} of ${n} requests answered in the pass they were posted in`);
    for (const ch of checks) ch();
    compareRam(c, `polite ${p.kind} guest`, [{ gpa: 0, now: p.g.ram, was: before }], allowed);
  };
}

interface RoundPlan {
  h: Hostile;
  /** Rings placed anywhere (misaligned, split, overlapping, outside RAM): only the engine's safety is checked. */
  chaos: boolean;
  num: number;
  base: number;
  /** Chains made available (0 when the idx jumped past the queue size). */
  made: number;
  jump: boolean;
  heads: number[];
  models: ModelWalk[];
  before0: Uint8Array;
  before1: Uint8Array;
}

/** Bytes of a guest's RAM that changed outside `allowed` are a failure. */
function compareRam(c: Checker, who: string, rams: { gpa: number; now: Uint8Array; was: Uint8Array }[], allowed: Piece[]): void {
  for (const r of rams) {
    const mask = new Uint8Array(r.now.length);
    for (const p of allowed) {
      const a = Math.max(p.gpa, r.gpa);
      const b = Math.min(p.gpa + p.len, r.gpa + r.now.length);
      if (a < b) mask.fill(1, a - r.gpa, b - r.gpa);
    }
    const chunk = 4096;
    for (let o = 0; o < r.now.length; o += chunk) {
      const end = Math.min(o + chunk, r.now.length);
      if (Buffer.compare(r.now.subarray(o, end), r.was.subarray(o, end)) === 0) continue;
      for (let i = o; i < end; i++) {
        if (r.now[i] === r.was[i] || mask[i] === 1) continue;
        c.ok(false, `${who}: byte at guest address 0x${(r.gpa + i).toString(16)} changed (0x${r.was[i]!.toString(16)} -> 0x${r.now[i]!.toString(16)}) outside the used ring and the writable segments of completed chains`);
        return;
      }
    }
  }
}

/**
 * Restarts a hostile guest's queue (random size, base, features, event
 * fields) and fills its rings: chains of mutated tmem or blk requests, direct
 * or through indirect tables, heads duplicated or out of range, and the avail
 * idx moved by up to the queue size or jumped past it.
 */
function prepareRound(e: Engine, rng: Rng, h: Hostile, startQueue: (id: number, num: number, base: number, desc: number, avail: number, used: number) => void): RoundPlan {
  const q = e.instances.get(h.id)!.queues[0]!;
  if (q.ring !== null || q.enabled) {
    e.setVringEnable(h.id, 0, false);
    e.getVringBase(h.id, 0);
  }
  const indirect = rng.chance(0.7);
  e.setFeatures(h.id, VERSION_1 | (rng.chance(0.5) ? EVENT_IDX : 0n) | (indirect ? INDIRECT_DESC : 0n));
  const num = rng.pick([1, 2, 4, 8, 16, 32, 64, 128, 256]);
  const base = rng.chance(0.3) ? 0xffff - rng.int(4) : rng.int(0x10000);
  const ram = h.ram0;
  const v = dv(ram);
  // the guest's RAM: random bytes everywhere (the poison), rings zeroed
  new Rng(rng.u32()).fill(ram);
  new Rng(rng.u32()).fill(h.ram1);
  ram.fill(0, 0, TABLES_AT);
  // avail: flags, idx, ring, used_event; used: flags, idx, ring, avail_event
  v.setUint16(AVAIL_AT, rng.chance(0.7) ? 0 : rng.int(0x10000), true);
  v.setUint16(AVAIL_AT + 4 + 2 * num, rng.int(0x10000), true);
  v.setUint16(USED_AT, rng.chance(0.7) ? 0 : rng.int(0x10000), true);
  v.setUint16(USED_AT + 2, base, true);
  v.setUint16(USED_AT + 4 + 8 * num, rng.int(0x10000), true);
  v.setUint16(AVAIL_AT + 2, base, true);
  if (rng.chance(CHAOS)) return chaosRound(rng, h, num, base, startQueue);
  startQueue(h.id, num, base, UVA + DESC_AT, UVA + AVAIL_AT, UVA + USED_AT);

  // random descriptors everywhere first (slots no chain uses are garbage a head may name)
  const tablesAddr = Array.from({ length: NTABLES }, (_, i) => TABLES_AT + i * TABLE_BYTES);
  const safe = new SafeDesc(rng, h);
  for (let i = 0; i < num; i++) safe.random(ram, DESC_AT + 16 * i, num, tablesAddr);
  const heads: number[] = [];
  let slot = 0;
  let table = 0;
  const want = rng.chance(0.1) ? 0 : rng.range(1, num);
  for (let k = 0; k < want; k++) {
    const bufs = h.kind === 'tmem' ? tmemRequest(rng, h) : blkRequest(rng, h);
    const descs = splitBufs(rng, h, bufs);
    // a tmem-blk queue stops at the first chain it cannot answer: fewer broken chains there, so more reach the handler
    safe.corrupt(descs, tablesAddr, h.kind === 'blk' ? 0.08 : 0.25);
    const useTable = indirect && table < NTABLES && descs.length <= TABLE_BYTES / 16 && rng.chance(0.3);
    if (useTable) {
      if (slot >= num) break;
      // a table need not be aligned (it stays inside its 4 KiB of the control area)
      const ta = tablesAddr[table++]! + (16 * descs.length + 15 <= TABLE_BYTES && rng.chance(0.15) ? rng.range(1, 15) : 0);
      layChain(ram, ta, descs, Array.from({ length: descs.length }, (_, i) => i));
      const n = descs.length;
      const len = rng.chance(0.9) ? 16 * n : rng.pick([0, 8, 16 * (n + 1), 16 * (num + 1), 16 * n + 8]);
      putDesc(ram, DESC_AT + 16 * slot, ta, len, F_IND, 0);
      heads.push(slot++);
    } else {
      if (slot + descs.length > num) break;
      const slots = Array.from({ length: descs.length }, (_, i) => slot + i);
      if (rng.chance(0.3)) slots.reverse();
      layChain(ram, DESC_AT, descs, slots);
      heads.push(slots[0]!);
      slot += descs.length;
    }
  }
  // the avail ring: the heads, some duplicated or out of range
  const garbage = h.kind === 'blk' ? 0.05 : 0.2;
  let made = rng.chance(garbage / 2) ? rng.int(num + 1) : Math.min(num, heads.length + (rng.chance(garbage) ? rng.int(num) : 0));
  const jump = rng.chance(0.06);
  const availHeads: number[] = [];
  for (let k = 0; k < made; k++) {
    let hd: number;
    if (heads.length > 0 && k < heads.length && rng.chance(1 - garbage / 2)) hd = heads[k]!;
    else if (heads.length > 0 && rng.chance(0.6)) hd = rng.pick(heads);
    else hd = rng.chance(0.5) ? rng.int(num) : rng.pick([num, num + 1, 0xffff, rng.int(0x10000)]);
    availHeads.push(hd);
    v.setUint16(AVAIL_AT + 4 + 2 * ((base + k) & (num - 1)), hd, true);
  }
  if (jump) {
    v.setUint16(AVAIL_AT + 2, (base + num + 1 + rng.int(0x10000 - num - 1)) & 0xffff, true);
    made = 0;
  } else v.setUint16(AVAIL_AT + 2, (base + made) & 0xffff, true);
  // the heads the engine will read: the ring wraps, so a later entry may overwrite an earlier one
  const ringHeads: number[] = [];
  for (let k = 0; k < made; k++) ringHeads.push(v.getUint16(AVAIL_AT + 4 + 2 * ((base + k) & (num - 1)), true));
  const models = ringHeads.map((hd) => modelWalk(h.L, ram, DESC_AT, num, hd, indirect, 1024));
  return { h, chaos: false, num, base, made, jump, heads: ringHeads, models, before0: ram.slice(), before1: h.ram1.slice() };
}

/** Share of rounds whose rings a hostile guest places anywhere. */
const CHAOS = 0.08;

/**
 * Rings where the guest likes: misaligned, across the first window's edge, in
 * the second region (across its windows), on top of each other (the used
 * ring then rewrites descriptors and avail entries as the device completes),
 * outside RAM or beyond 2^53. The engine refuses the placement or serves
 * whatever the rings say; either way nothing escapes it and the polite
 * guests are served.
 */
function chaosRound(rng: Rng, h: Hostile, num: number, base: number, startQueue: (id: number, num: number, base: number, desc: number, avail: number, used: number) => void): RoundPlan {
  const uvaOf = (gpa: number) => (gpa < R0_SIZE ? UVA + gpa : UVA + 16 * MiB + (gpa - h.r1gpa));
  const at = (align: number, size: number): number => {
    switch (rng.int(7)) {
      case 0:
        return UVA + align * rng.int(Math.floor((CTRL - size) / align));
      case 1:
        return UVA + align * rng.int(Math.floor((CTRL - size) / align)) + rng.range(1, align - 1);
      case 2:
        return UVA + CTRL - rng.range(1, size);
      case 3:
        return uvaOf(h.r1gpa + align * rng.int(Math.floor((R1_SIZE - size) / align)));
      case 4:
        return rng.pick([UVA + 64 * MiB, 0x1000, UVA + R0_SIZE - 2, 2 ** 60]);
      default:
        return UVA + align * rng.int(8);
    }
  };
  const desc = at(16, 16 * num);
  const avail = at(2, 6 + 2 * num);
  const used = at(4, 6 + 8 * num);
  const v = dv(h.ram0);
  const r0 = (uva: number, n: number) => (uva >= UVA && uva - UVA + n <= R0_SIZE ? uva - UVA : -1);
  const safe = new SafeDesc(rng, h);
  // requests in the table where it is in region 0 (perhaps under the other rings), garbage around them
  const d = r0(desc, 16 * num);
  const heads: number[] = [];
  if (d >= 0) {
    for (let i = 0; i < num; i++) safe.random(h.ram0, d + 16 * i, num, [TABLES_AT]);
    let slot = 0;
    for (;;) {
      const descs = splitBufs(rng, h, h.kind === 'tmem' ? tmemRequest(rng, h) : blkRequest(rng, h));
      if (descs.length === 0 || slot + descs.length > num) break;
      layChain(h.ram0, d, descs, Array.from({ length: descs.length }, (_, i) => slot + i));
      heads.push(slot);
      slot += descs.length;
    }
  }
  const u = r0(used, 6 + 8 * num);
  if (u >= 0) v.setUint16(u + 2, base, true);
  const a = r0(avail, 6 + 2 * num);
  if (a >= 0) {
    for (let i = 0; i < num; i++) v.setUint16(a + 4 + 2 * ((base + i) & (num - 1)), heads.length > 0 && rng.chance(0.9) ? heads[i % heads.length]! : rng.int(num + 1), true);
    v.setUint16(a + 2, (base + rng.int(num + 1)) & 0xffff, true);
  }
  startQueue(h.id, num, base, desc, avail, used);
  return { h, chaos: true, num, base, made: 0, jump: false, heads: [], models: [], before0: h.ram0, before1: h.ram1 };
}

function checkRound(c: Checker, e: Engine, pl: RoundPlan): { completed: number; seen: number; broken: boolean; statusChecked: number } {
  const { h, num, base } = pl;
  const g = e.instances.get(h.id)!;
  const q = g.queues[0]!;
  const v = dv(h.ram0);
  const usedIdx = v.getUint16(USED_AT + 2, true);
  const delta = (usedIdx - base) & 0xffff;
  if (pl.chaos) {
    // nothing to compare: that nothing escaped the engine and the polite guests were served is checked by the round
    const n = h.seen.length;
    h.seen.length = 0;
    return { completed: 0, seen: n, broken: q.broken !== null, statusChecked: 0 };
  }
  const who = `hostile ${h.kind} guest (queue ${num}, base ${base}, ${pl.made} made available${pl.jump ? ', idx jumped' : ''})`;
  let statusChecked = 0;
  c.ok(delta <= pl.made, () => `${who}: used idx moved by ${delta}`);
  if (pl.jump) c.ok(q.broken !== null && /more than the queue size/.test(q.broken), () => `${who}: an avail idx jump past the queue size left the queue ${(q.broken ?? 'running').split('\n')[0]}`);
  else if (h.kind === 'tmem') c.ok(delta === pl.made && q.broken === null, () => `${who}: ${delta} completed, queue ${(q.broken ?? 'running').split('\n')[0]}`);
  else if (delta < pl.made) {
    // tmem-blk never completes a chain it cannot answer: the queue stops at it
    const m = pl.models[delta]!;
    c.ok(q.broken !== null && (!m.ok || m.wrTotal === 0), () => `${who}: stopped after ${delta} chains (queue ${(q.broken ?? 'running').split('\n')[0]}), the next one is ${m.ok ? `answerable (${m.wrTotal} writable bytes)` : 'refused'}`);
  } else c.ok(q.broken === null, () => `${who}: all completed, yet the queue broke: ${q.broken}`);
  // used elements, and what the device was handed, in ring order
  const allowed: Piece[] = [{ gpa: USED_AT, len: 6 + 8 * num }];
  let si = 0;
  const seen = h.seen;
  const capSectors = EVIL_BLK_PAGES * 8;
  for (let k = 0; k <= delta && k < pl.made; k++) {
    const m = pl.models[k]!;
    const completed = k < delta;
    if (!completed && (h.kind !== 'blk' || !m.ok)) break;
    let len = -1;
    if (completed) {
      const o = USED_AT + 4 + 8 * ((base + k) & (num - 1));
      const id = v.getUint32(o, true);
      len = v.getUint32(o + 4, true);
      c.ok(id === pl.heads[k], () => `${who}: used element ${k} names head ${id}, the avail ring said ${pl.heads[k]}`);
    }
    if (!m.ok) {
      c.ok(len === 0, () => `${who}: chain ${k} (head ${pl.heads[k]}) breaks the chain rules, yet used len ${len}`);
      continue;
    }
    allowed.push(...m.wr);
    const s = seen[si++];
    if (!c.ok(s !== undefined, () => `${who}: chain ${k} (head ${pl.heads[k]}) is well formed but never reached the device`)) break;
    c.ok(s!.R === m.rdTotal && s!.W === m.wrTotal, () => `${who}: chain ${k}: the device got ${s!.R}/${s!.W} bytes, the chain holds ${m.rdTotal}/${m.wrTotal}`);
    if (completed) c.ok(len === s!.used && len <= m.wrTotal, () => `${who}: chain ${k}: used len ${len}, the device said ${s!.used}, ${m.wrTotal} writable bytes`);
    if (h.kind === 'tmem') {
      const x = tmemExpect(s!);
      if (x.used !== null) c.ok(s!.used === x.used, () => `${who}: chain ${k}: used len ${s!.used}, the tmem rules say ${x.used}`);
      if (x.status !== null) {
        statusChecked++;
        c.ok(s!.status === x.status, () => `${who}: chain ${k}: status ${s!.status}, the tmem rules say ${x.status}`);
      }
    } else {
      const x = blkExpect(s!, capSectors);
      if (x.used !== null) c.ok(s!.used === x.used, () => `${who}: chain ${k}: used len ${s!.used}, the blk rules say ${x.used} (R ${s!.R}, W ${s!.W}, type ${dv(s!.head).getUint32(0, true)})`);
      if (x.status >= 0) {
        statusChecked++;
        c.ok(s!.status === x.status, () => `${who}: chain ${k}: status ${s!.status}, the blk rules say ${x.status} (R ${s!.R}, W ${s!.W}, type ${s!.R >= 4 ? dv(s!.head).getUint32(0, true) : '-'})`);
      }
    }
  }
  c.ok(si === seen.length, () => `${who}: the device saw ${seen.length} chains, ${si} expected`);
  const nSeen = seen.length;
  seen.length = 0;
  compareRam(
    c,
    who,
    [
      { gpa: 0, now: h.ram0, was: pl.before0 },
      { gpa: h.r1gpa, now: h.ram1, was: pl.before1 },
    ],
    allowed,
  );
  return { completed: delta, seen: nSeen, broken: q.broken !== null, statusChecked };
}

// ------------------------------------------------------------------ hostile requests

/** One buffer of a request: bytes placed at addr (null: a length only, nothing written). */
interface Buf {
  addr: number | bigint;
  len: number;
  write: boolean;
  bytes?: Uint8Array;
}

/** Places `len` bytes in the data area: anywhere, or across a window or region edge. */
function place(rng: Rng, h: Hostile, len: number): number {
  if (rng.chance(0.25)) {
    const e = rng.pick(h.edges);
    const a = e - rng.int(Math.max(1, Math.min(len, 4096)));
    if (a >= CTRL) return a;
  }
  const r = rng.pick(h.data);
  return r.gpa + rng.int(Math.max(1, r.size - len));
}

function lenNear(rng: Rng, want: number): number {
  if (rng.chance(0.8)) return want;
  return Math.max(0, rng.pick([0, 1, want - 1, want + 1, want - 16, want + 16, rng.int(2 * want + 64), 4096, 4112]));
}

function tmemRequest(rng: Rng, h: Hostile): Buf[] {
  const op = rng.pick([TMEM_OP_NEW_POOL, TMEM_OP_DESTROY_POOL, TMEM_OP_PUT_PAGE, TMEM_OP_PUT_PAGE, TMEM_OP_GET_PAGE, TMEM_OP_GET_PAGE, TMEM_OP_FLUSH_PAGE, TMEM_OP_FLUSH_OBJECT, TMEM_OP_INFO, 0, 9, rng.u32()]);
  const hdr = reqHeader({
    op: rng.chance(0.02) ? TMEM_OP_RESET : op,
    flags: rng.chance(0.85) ? 0 : rng.pick([1, 2, rng.u32()]),
    pool: rng.chance(0.85) ? rng.int(4) : rng.u32(),
    index: rng.chance(0.8) ? rng.int(16) : rng.u32(),
    oid: [BigInt(rng.int(3)), rng.chance(0.9) ? 0n : BigInt(rng.u32()), 0n],
  });
  const p = OP_PAYLOAD[op] ?? [rng.pick([0, 24, 4096]), rng.pick([0, 64, 4096])];
  const bufs: Buf[] = [];
  const hlen = lenNear(rng, 48);
  const hb = new Uint8Array(Math.max(hlen, 0));
  hb.set(hdr.subarray(0, Math.min(48, hlen)));
  bufs.push({ addr: place(rng, h, hlen), len: hlen, write: false, bytes: hb });
  const rlen = lenNear(rng, p[0]);
  if (rlen > 0) {
    const b = new Uint8Array(rlen);
    if (op === TMEM_OP_NEW_POOL && rlen >= 24) b.set(newPoolPayload(rng.chance(0.8) ? rng.int(2) : rng.u32(), rng.chance(0.9) ? 4096 : rng.u32()));
    else rng.fill(b);
    bufs.push({ addr: place(rng, h, rlen), len: rlen, write: false, bytes: b });
  }
  const wlen = lenNear(rng, p[1]);
  if (wlen > 0) bufs.push({ addr: place(rng, h, wlen), len: wlen, write: true });
  const slen = lenNear(rng, 16);
  if (slen > 0) bufs.push({ addr: place(rng, h, slen), len: slen, write: true });
  return bufs;
}

/** A sector number near the disk's end, past it, or far beyond (le64). */
function sectorNear(rng: Rng, cap: number): bigint {
  switch (rng.int(6)) {
    case 0:
    case 1:
      return BigInt(rng.int(cap));
    case 2:
      return BigInt(Math.max(0, cap - rng.range(0, 16)));
    case 3:
      return BigInt(cap + rng.int(16));
    case 4:
      return rng.pick([1n << 32n, (1n << 44n) - 1n, 1n << 44n, (1n << 63n) + 5n, 0xffff_ffff_ffff_ffffn, (1n << 32n) - 1n]);
    default:
      return BigInt(rng.u32()) * BigInt(rng.u32());
  }
}

function blkRequest(rng: Rng, h: Hostile): Buf[] {
  const cap = EVIL_BLK_PAGES * 8;
  const type = rng.pick([VIRTIO_BLK_T_IN, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, 10, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_WRITE_ZEROES, 14, rng.u32()]);
  const hdr = new Uint8Array(16);
  dv(hdr).setUint32(0, type, true);
  dv(hdr).setUint32(4, rng.chance(0.9) ? 0 : rng.u32(), true);
  dv(hdr).setBigUint64(8, sectorNear(rng, cap), true);
  const bufs: Buf[] = [];
  const hlen = rng.chance(0.9) ? 16 : rng.int(24);
  const hb = new Uint8Array(hlen);
  hb.set(hdr.subarray(0, Math.min(16, hlen)));
  if (hlen > 0) bufs.push({ addr: place(rng, h, hlen), len: hlen, write: false, bytes: hb });
  const dataLen = () => (rng.chance(0.8) ? 512 * rng.range(0, 24) : rng.pick([1, 511, 513, 4095, 4097, rng.int(20000)]));
  if (type === VIRTIO_BLK_T_OUT && rng.chance(0.9)) {
    const n = dataLen();
    const b = new Uint8Array(n);
    rng.fill(b);
    if (n > 0) bufs.push({ addr: place(rng, h, n), len: n, write: false, bytes: b });
  } else if ((type === VIRTIO_BLK_T_DISCARD || type === VIRTIO_BLK_T_WRITE_ZEROES) && rng.chance(0.9)) {
    const k = rng.chance(0.9) ? rng.range(1, 4) : rng.pick([0, BLK_MAX_DWZ_SEG, BLK_MAX_DWZ_SEG + 1]);
    const b = new Uint8Array(16 * k + (rng.chance(0.05) ? rng.range(1, 15) : 0));
    for (let s = 0; s < k; s++) {
      const sv = new DataView(b.buffer, 16 * s, 16);
      sv.setBigUint64(0, sectorNear(rng, cap), true);
      sv.setUint32(8, rng.chance(0.8) ? rng.int(40) : rng.pick([BLK_MAX_DWZ_SECTORS, BLK_MAX_DWZ_SECTORS + 1, rng.u32()]), true);
      sv.setUint32(12, rng.chance(0.8) ? 0 : rng.pick([1, 2, rng.u32()]), true);
    }
    if (b.length > 0) bufs.push({ addr: place(rng, h, b.length), len: b.length, write: false, bytes: b });
  } else if (rng.chance(0.15)) {
    const n = rng.int(600);
    if (n > 0) bufs.push({ addr: place(rng, h, n), len: n, write: false, bytes: new Uint8Array(n) });
  }
  if (type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_GET_ID || rng.chance(0.1)) {
    const n = type === VIRTIO_BLK_T_GET_ID ? rng.pick([20, 0, 8, 64]) : dataLen();
    if (n > 0) bufs.push({ addr: place(rng, h, n), len: n, write: true });
  }
  const sl = rng.chance(0.92) ? 1 : rng.pick([0, 2, 16]);
  if (sl > 0) bufs.push({ addr: place(rng, h, sl), len: sl, write: true });
  return bufs;
}

/** A descriptor before it is laid in a table. */
interface PDesc {
  addr: number | bigint;
  len: number;
  flags: number;
  /** Set by corrupt(): a next index to use instead of the chain's own. */
  next?: number;
}

/** Writes each buffer's bytes into guest RAM (where it is RAM) and cuts buffers into 1-3 descriptors. */
function splitBufs(rng: Rng, h: Hostile, bufs: Buf[]): PDesc[] {
  const out: PDesc[] = [];
  for (const b of bufs) {
    if (b.bytes !== undefined && typeof b.addr === 'number' && h.L.pieces(b.addr, b.bytes.length) !== null) writeGuest(h.L, b.addr, b.bytes);
    const pieces = b.len > 1 && rng.chance(0.2) ? rng.range(2, 3) : 1;
    let at = 0;
    for (let k = 0; k < pieces; k++) {
      const n = k === pieces - 1 ? b.len - at : rng.int(b.len - at + 1);
      out.push({ addr: typeof b.addr === 'number' ? b.addr + at : b.addr, len: n, flags: b.write ? F_WR : 0 });
      at += n;
    }
  }
  return out;
}

/**
 * Random and corrupted descriptors that keep one promise: a writable
 * descriptor never names the rings or the indirect tables (the model of
 * which chains are well formed must not change under the device's writes).
 * Readable ones may name anything.
 */
class SafeDesc {
  private readonly rng: Rng;
  private readonly h: Hostile;
  constructor(rng: Rng, h: Hostile) {
    this.rng = rng;
    this.h = h;
  }

  private badAddr(len: number, write: boolean, tables: readonly number[]): number | bigint {
    const rng = this.rng;
    const h = this.h;
    const end = h.r1gpa + R1_SIZE;
    switch (rng.int(7)) {
      case 0:
        return end - rng.int(Math.max(1, Math.min(len, 8192))); // runs past the end of RAM
      case 1:
        return h.r1gpa === R0_SIZE ? end + rng.int(MiB) : R0_SIZE - rng.int(Math.max(1, Math.min(len, 8192))); // past the end, or into the hole
      case 2:
        // far out, or a QEMU virtual address of this RAM (descriptors carry guest-physical ones)
        return rng.pick([0xffff_ffff_ffff_fff0n, 1n << 53n, (1n << 53n) - 8n, 0x8000_0000_0000_0000n, BigInt(rng.u32()) << 32n, UVA + CTRL + rng.int(R0_SIZE - CTRL)]);
      case 3:
        return write ? place(rng, h, len) : rng.pick(tables.length > 0 ? [...tables, DESC_AT, AVAIL_AT, USED_AT] : [DESC_AT]);
      case 4:
        return R0_SIZE + rng.int(MiB) + (h.r1gpa === R0_SIZE ? R1_SIZE : 0);
      default:
        return place(rng, h, Math.min(len, 64 * KiB));
    }
  }

  random(b: Uint8Array, off: number, tn: number, tables: readonly number[]): void {
    const rng = this.rng;
    const len = rng.chance(0.5) ? rng.pick([0, 1, 16, 48, 4096, 4112]) : randLen(rng);
    let flags = randFlags(rng);
    if (flags & F_IND && rng.chance(0.5)) {
      putDesc(b, off, rng.pick(tables), 16 * rng.range(1, tn + 1), flags, randNext(rng, tn));
      return;
    }
    if (flags & F_IND) flags &= ~F_IND;
    const write = (flags & F_WR) !== 0;
    putDesc(b, off, rng.chance(0.5) ? this.badAddr(len, write, tables) : place(rng, this.h, Math.min(len, 64 * KiB)), len, flags, randNext(rng, tn));
  }

  /** Perhaps corrupts a request's descriptors: an address, a length, the order, a loop, a flag. */
  corrupt(descs: PDesc[], tables: readonly number[], p: number): void {
    const rng = this.rng;
    if (descs.length === 0) {
      descs.push({ addr: place(rng, this.h, 16), len: 16, flags: F_WR });
      return;
    }
    if (!rng.chance(p)) return;
    const d = rng.pick(descs);
    const write = (d.flags & F_WR) !== 0;
    switch (rng.int(7)) {
      case 0:
        d.addr = this.badAddr(d.len, write, tables);
        break;
      case 1:
        // from the data area a writable buffer can only grow into more data area or out of RAM
        d.len = randLen(rng);
        break;
      case 2: {
        // a readable descriptor after a writable one
        const i = rng.int(descs.length);
        const j = rng.int(descs.length);
        [descs[i], descs[j]] = [descs[j]!, descs[i]!];
        break;
      }
      case 3: {
        // a loop back to the chain's first slot (from a readable descriptor: only the ttl ends it), or out of the table
        const rds = descs.filter((x) => !(x.flags & F_WR));
        (rds.length > 0 && rng.chance(0.7) ? rng.pick(rds) : d).next = rng.chance(0.8) ? 0 : 0xffff;
        break;
      }
      case 4:
        d.flags ^= rng.pick([F_WR, F_IND, 0x10, 0x8000]);
        if (d.flags & F_IND) d.addr = rng.pick(tables);
        if ((d.flags & F_WR) && !(d.flags & F_IND) && (typeof d.addr !== 'number' || d.addr < CTRL)) d.addr = this.badAddr(d.len, true, tables);
        break;
      case 5:
        descs.push(...Array.from({ length: rng.range(1, 40) }, () => ({ addr: place(rng, this.h, 64), len: rng.int(64), flags: F_WR })));
        break;
      default:
        d.len = 0;
    }
  }
}

/** Lays descriptors in the table at `table`, entry slots[k], linked with NEXT; writes the buffers' bytes. */
function layChain(ram: Uint8Array, table: number, descs: PDesc[], slots: number[]): void {
  for (let k = 0; k < descs.length; k++) {
    const d = descs[k]!;
    const last = k === descs.length - 1;
    const next = d.next !== undefined ? (d.next === 0 ? slots[0]! : d.next) : last ? 0 : slots[k + 1]!;
    putDesc(ram, table + 16 * slots[k]!, d.addr, d.len, d.flags | (last && d.next === undefined ? 0 : F_NEXT), next);
  }
}

for (const poll of [true, false]) {
  t.test(`the engine with hostile rings and requests beside well-behaved guests, ${poll ? 'poll' : 'notify'} mode (seed ${SEED})`, async (t) => {
    await engineFuzz(t, poll);
  });
}
