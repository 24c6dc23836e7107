// Guest memory: the one abstraction every guest address goes through
// (rust-vmm vm-memory: regions, checked offsets, slices).
//
// A guest's RAM is a set of regions, each known by its guest-physical address
// (descriptor addresses) and by the address it has in QEMU's process
// (vring addresses are QEMU virtual addresses). A region's bytes are reached
// through windows of at most 1 GiB (Node 20 caps one typed array at 4 GiB,
// native/ maps in windows). A guest range is translated into a bounded list
// of (window, offset, length) segments; a range that is not entirely inside
// guest RAM, wraps, or needs more segments than the list holds is a failure,
// never a partial answer. Nobody else adds offsets to guest addresses.
//
// Windows of mapped RAM are lazy: their Uint8Array (an external ArrayBuffer,
// which V8 pays for with a full GC per ~64 MiB) is made when a guest address
// in them is first translated, so a huge mostly untouched RAM costs nothing
// at SET_MEM_TABLE (native/memory.ts).

/** Where a lazy window's bytes come from: a mapping window (its `bytes` getter makes the view). */
export interface WindowSource {
  readonly bytes: Uint8Array;
}

const NO_BYTES = new Uint8Array(0);
const NO_VIEW = new DataView(NO_BYTES.buffer);

/** One window of a region: bytes [offset, offset + length) of the region. */
export class MemWindow {
  readonly offset: number;
  readonly length: number;
  /** Valid once ready (materialize()). */
  bytes: Uint8Array = NO_BYTES;
  view: DataView = NO_VIEW;
  ready = false;
  private readonly source: WindowSource | null;
  private readonly skip: number;

  constructor(offset: number, length: number, source: WindowSource | null, skip: number, bytes?: Uint8Array) {
    this.offset = offset;
    this.length = length;
    this.source = source;
    this.skip = skip;
    if (bytes) this.set(bytes);
  }

  private set(b: Uint8Array): void {
    this.bytes = b;
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.ready = true;
  }

  /** Makes the view (first use). False when the source is gone (unmapped): the address is then not guest RAM any more. */
  materialize(): boolean {
    if (this.ready) return true;
    try {
      const b = this.source!.bytes;
      this.set(this.skip === 0 && b.length === this.length ? b : b.subarray(this.skip, this.skip + this.length));
      return true;
    } catch {
      return false;
    }
  }
}

export interface GuestRegion {
  readonly guestPhysAddr: number;
  readonly userspaceAddr: number;
  readonly size: number;
  /** Sorted by offset, contiguous, covering [0, size). */
  readonly windows: readonly MemWindow[];
}

/** A window as a caller hands it over: plain bytes, or lazy (`length` known, bytes[skip, skip + length) of `source` on first use). */
export type WindowSpec =
  | { readonly offset: number | bigint; readonly bytes: Uint8Array }
  | { readonly offset: number | bigint; readonly length: number; readonly source: WindowSource; readonly skip: number };

/** What a caller hands over to build a region. */
export interface RegionSource {
  readonly guestPhysAddr: number | bigint;
  readonly userspaceAddr?: number | bigint;
  readonly windows: readonly WindowSpec[];
}

/**
 * The region windows of a mapping whose first `skip` bytes are not guest RAM
 * (mmap wants a page-aligned offset, so an unaligned region is mapped from
 * the page below). Lazy: no window's bytes are touched here.
 */
export function mappedWindows(windows: readonly { readonly offset: bigint; readonly length?: number; readonly bytes: Uint8Array }[], skip: bigint): WindowSpec[] {
  const out: WindowSpec[] = [];
  for (const w of windows) {
    const len = BigInt(w.length ?? w.bytes.length);
    const start = w.offset - skip;
    const end = start + len;
    if (end <= 0n) continue;
    if (start >= 0n) out.push({ offset: start, length: Number(len), source: w, skip: 0 });
    else out.push({ offset: 0n, length: Number(end), source: w, skip: Number(-start) });
  }
  return out;
}

const MAX_ADDR = Number.MAX_SAFE_INTEGER;

/**
 * A bounded list of guest byte segments, preallocated so that walking a chain
 * allocates nothing. Offsets are into `bufs[i]` (a window's byte array).
 */
export class SegmentList {
  readonly capacity: number;
  count = 0;
  /** Sum of the segments' lengths. */
  total = 0;
  readonly bufs: Uint8Array[];
  readonly views: DataView[];
  readonly offs: Float64Array;
  readonly lens: Float64Array;
  /** Set by locate(): the segment index and the offset inside its buffer. */
  locIndex = -1;
  locOffset = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.bufs = new Array<Uint8Array>(capacity);
    this.views = new Array<DataView>(capacity);
    this.offs = new Float64Array(capacity);
    this.lens = new Float64Array(capacity);
  }

  clear(): void {
    this.count = 0;
    this.total = 0;
  }

  push(bytes: Uint8Array, view: DataView, off: number, len: number): boolean {
    const i = this.count;
    if (i >= this.capacity) return false;
    this.bufs[i] = bytes;
    this.views[i] = view;
    this.offs[i] = off;
    this.lens[i] = len;
    this.count = i + 1;
    this.total += len;
    return true;
  }

  /**
   * Finds the segment holding the whole range [start, start + len) of the
   * list's byte stream. True when one segment holds it all (then locIndex and
   * locOffset say where); false when the range is split or out of bounds.
   */
  locate(start: number, len: number): boolean {
    let pos = 0;
    for (let i = 0; i < this.count; i++) {
      const l = this.lens[i]!;
      if (start < pos + l) {
        if (start + len > pos + l) return false;
        this.locIndex = i;
        this.locOffset = this.offs[i]! + (start - pos);
        return true;
      }
      pos += l;
    }
    return false;
  }

  /** Copies [start, start + len) of the byte stream into dst at dstOff. False if out of bounds. */
  readInto(start: number, dst: Uint8Array, dstOff: number, len: number): boolean {
    return this.copy(start, dst, dstOff, len, false);
  }

  /** Copies src[srcOff, srcOff + len) into [start, start + len) of the byte stream. False if out of bounds. */
  writeFrom(start: number, src: Uint8Array, srcOff: number, len: number): boolean {
    return this.copy(start, src, srcOff, len, true);
  }

  /** The walk readInto and writeFrom share: `toList` says which way the bytes go. */
  private copy(start: number, arr: Uint8Array, arrOff: number, len: number, toList: boolean): boolean {
    if (start < 0 || len < 0 || start + len > this.total) return false;
    let pos = 0;
    for (let i = 0; i < this.count && len > 0; i++) {
      const l = this.lens[i]!;
      if (start < pos + l) {
        const skip = start - pos;
        const n = Math.min(l - skip, len);
        if (toList) copyBytes(arr, arrOff, this.bufs[i]!, this.offs[i]! + skip, n);
        else copyBytes(this.bufs[i]!, this.offs[i]! + skip, arr, arrOff, n);
        arrOff += n;
        start += n;
        len -= n;
      }
      pos += l;
    }
    return len === 0;
  }
}

/** Byte copy between arrays: a loop for small runs (no view allocated), set() for large ones. */
export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, n: number): void {
  if (n <= 64) {
    for (let k = 0; k < n; k++) dst[dstOff + k] = src[srcOff + k]!;
  } else {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff);
  }
}

function num(v: number | bigint, what: string): number {
  const n = typeof v === 'bigint' ? (v > BigInt(MAX_ADDR) ? Infinity : Number(v)) : v;
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} ${String(v)} is not a usable address`);
  return n;
}

export class GuestMemory {
  readonly regions: readonly GuestRegion[];
  /** Bytes of guest RAM: the sum of the regions' sizes. */
  readonly ramBytes: number;
  private lastGpa = 0;
  private lastUva = 0;

  constructor(sources: readonly RegionSource[]) {
    const regions: GuestRegion[] = [];
    let ram = 0;
    for (const s of sources) {
      const gpa = num(s.guestPhysAddr, 'guest physical address');
      const uva = num(s.userspaceAddr ?? s.guestPhysAddr, 'userspace address');
      const wins = [...s.windows]
        .map((w) =>
          'bytes' in w && !('source' in w)
            ? new MemWindow(num(w.offset, 'window offset'), w.bytes.length, null, 0, w.bytes)
            : new MemWindow(num(w.offset, 'window offset'), (w as { length: number }).length, (w as { source: WindowSource }).source, (w as { skip: number }).skip),
        )
        .sort((a, b) => a.offset - b.offset);
      let size = 0;
      for (const w of wins) {
        if (w.offset !== size) throw new RangeError(`region at ${hex(gpa)}: windows not contiguous at offset ${hex(w.offset)}`);
        if (!(w.length > 0)) throw new RangeError(`region at ${hex(gpa)}: empty window`);
        size += w.length;
      }
      if (size === 0) throw new RangeError(`region at ${hex(gpa)} is empty`);
      if (gpa + size > MAX_ADDR || uva + size > MAX_ADDR) throw new RangeError(`region at ${hex(gpa)} ends beyond 2^53`);
      for (const r of regions) {
        if (gpa < r.guestPhysAddr + r.size && r.guestPhysAddr < gpa + size) throw new RangeError(`regions at ${hex(gpa)} and ${hex(r.guestPhysAddr)} overlap`);
        if (uva < r.userspaceAddr + r.size && r.userspaceAddr < uva + size) throw new RangeError(`regions at userspace ${hex(uva)} and ${hex(r.userspaceAddr)} overlap`);
      }
      regions.push({ guestPhysAddr: gpa, userspaceAddr: uva, size, windows: wins });
      ram += size;
    }
    this.regions = regions;
    this.ramBytes = ram;
  }

  /** Test and tool helper: regions over plain byte arrays, cut into windows of windowSize bytes. */
  static fromBuffers(
    regions: readonly { guestPhysAddr: number; userspaceAddr?: number; bytes: Uint8Array; windowSize?: number }[],
  ): GuestMemory {
    return new GuestMemory(
      regions.map((r) => {
        const ws = r.windowSize ?? 1 << 30;
        const windows: { offset: number; bytes: Uint8Array }[] = [];
        for (let o = 0; o < r.bytes.length; o += ws) windows.push({ offset: o, bytes: r.bytes.subarray(o, Math.min(o + ws, r.bytes.length)) });
        return { guestPhysAddr: r.guestPhysAddr, userspaceAddr: r.userspaceAddr ?? r.guestPhysAddr, windows };
      }),
    );
  }

  private findRegion(addr: number, user: boolean): GuestRegion | null {
    const rs = this.regions;
    const last = user ? this.lastUva : this.lastGpa;
    const c = rs[last];
    if (c) {
      const base = user ? c.userspaceAddr : c.guestPhysAddr;
      if (addr >= base && addr < base + c.size) return c;
    }
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i]!;
      const base = user ? r.userspaceAddr : r.guestPhysAddr;
      if (addr >= base && addr < base + r.size) {
        if (user) this.lastUva = i;
        else this.lastGpa = i;
        return r;
      }
    }
    return null;
  }

  /**
   * Appends the segments of guest range [addr, addr + len) to out. False when
   * any byte is outside guest RAM, the range wraps or leaves 2^53, or out is
   * full. A zero-length range appends nothing and succeeds.
   */
  translate(addr: number, len: number, out: SegmentList, user = false): boolean {
    if (!(addr >= 0 && addr <= MAX_ADDR) || !(len >= 0)) return false;
    if (len === 0) return true;
    if (addr + len > MAX_ADDR) return false;
    let cur = addr;
    let left = len;
    while (left > 0) {
      const r = this.findRegion(cur, user);
      if (r === null) return false;
      let off = cur - (user ? r.userspaceAddr : r.guestPhysAddr);
      let n = Math.min(left, r.size - off);
      left -= n;
      cur += n;
      const ws = r.windows;
      let wi = ws.length === 1 ? 0 : windowIndex(ws, off);
      while (n > 0) {
        const w = ws[wi]!;
        if (!w.ready && !w.materialize()) return false;
        const m = Math.min(n, w.offset + w.length - off);
        if (!out.push(w.bytes, w.view, off - w.offset, m)) return false;
        off += m;
        n -= m;
        wi++;
      }
    }
    return true;
  }

  /** The window holding all of [addr, addr + len) in one piece, or null. */
  slice(addr: number, len: number, user: boolean): { bytes: Uint8Array; view: DataView; offset: number } | null {
    if (!(addr >= 0 && addr <= MAX_ADDR) || !(len > 0) || addr + len > MAX_ADDR) return null;
    const r = this.findRegion(addr, user);
    if (r === null) return null;
    const off = addr - (user ? r.userspaceAddr : r.guestPhysAddr);
    if (off + len > r.size) return null;
    const w = r.windows[windowIndex(r.windows, off)]!;
    if (off + len > w.offset + w.length) return null;
    if (!w.ready && !w.materialize()) return null;
    return { bytes: w.bytes, view: w.view, offset: off - w.offset };
  }
}

function windowIndex(ws: readonly MemWindow[], off: number): number {
  let lo = 0;
  let hi = ws.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ws[mid]!.offset <= off) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export function hex(n: number): string {
  return '0x' + n.toString(16);
}
