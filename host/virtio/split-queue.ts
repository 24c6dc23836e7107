// A split virtqueue (virtio 1.x 2.7) read and written in place in guest RAM.
//
//   descriptor table: num x 16 bytes, 16-aligned
//   avail ring: le16 flags, le16 idx, le16 ring[num], le16 used_event
//   used ring:  le16 flags, le16 idx, {le32 id, le32 len} ring[num], le16 avail_event
//
// The guest writes avail and reads used from another CPU. Index fields are
// read and written with Atomics on typed-array views of guest memory (Atomics
// work on non-shared ArrayBuffers and compile to the same locked/fenced
// instructions): the avail idx load orders the ring reads after it, the used
// idx store publishes the used elements written before it, and the seq-cst
// store followed by a seq-cst load is the store-load fence that virtio needs
// before deciding whether to notify (used idx -> used_event) and before
// re-checking avail idx after re-enabling kicks (avail_event -> avail idx).
import { GuestMemory, hex } from './guest-memory.js';

export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const VRING_USED_F_NO_NOTIFY = 1;
export const MAX_QUEUE_SIZE = 32768;

export interface RingAddrs {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
}

/** True if the guest, having moved its index from old to now, must be notified at event (virtio's vring_need_event). */
export function needEvent(event: number, now: number, old: number): boolean {
  return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
}

export class SplitQueue {
  readonly num: number;
  readonly mask: number;
  readonly eventIdx: boolean;
  /** The descriptor table, as (view, byte offset of entry 0). */
  readonly descView: DataView;
  readonly descOff: number;
  /** avail: [flags, idx, ring[num], used_event] */
  private readonly avail: Uint16Array;
  /** used as u16: [flags, idx, ..., avail_event at 2 + 4 num] */
  private readonly used16: Uint16Array;
  /** used as u32: element i = [1 + 2i] id, [2 + 2i] len */
  private readonly used32: Uint32Array;
  /** Next avail index to process (mod 2^16). */
  lastAvail: number;
  /** Next used index to fill (mod 2^16). */
  usedIdx: number;
  private signalledUsed = 0;
  private signalledValid = false;
  /** Whether kicks are currently suppressed (poll mode). */
  kicksSuppressed = false;

  private constructor(num: number, eventIdx: boolean, descView: DataView, descOff: number, avail: Uint16Array, used16: Uint16Array, used32: Uint32Array, base: number) {
    this.num = num;
    this.mask = num - 1;
    this.eventIdx = eventIdx;
    this.descView = descView;
    this.descOff = descOff;
    this.avail = avail;
    this.used16 = used16;
    this.used32 = used32;
    this.lastAvail = base & 0xffff;
    this.usedIdx = Atomics.load(used16, 1);
  }

  /**
   * Places a queue of `num` entries at the given addresses (QEMU virtual
   * addresses when user is true, guest-physical otherwise). Returns the queue
   * or a message saying why it cannot be placed: size not a power of 2 up to
   * 32768, misaligned, or a ring not inside one piece of guest memory.
   */
  static create(mem: GuestMemory, num: number, addrs: RingAddrs, base: number, eventIdx: boolean, user = true): SplitQueue | string {
    if (!Number.isInteger(num) || num < 1 || num > MAX_QUEUE_SIZE || (num & (num - 1)) !== 0) return `queue size ${num} is not a power of 2 up to ${MAX_QUEUE_SIZE}`;
    if (addrs.desc % 16 !== 0) return `descriptor table at ${hex(addrs.desc)} is not 16-aligned`;
    if (addrs.avail % 2 !== 0) return `avail ring at ${hex(addrs.avail)} is not 2-aligned`;
    if (addrs.used % 4 !== 0) return `used ring at ${hex(addrs.used)} is not 4-aligned`;
    const d = mem.slice(addrs.desc, 16 * num, user);
    if (d === null) return `descriptor table at ${hex(addrs.desc)} (+${16 * num}) is not inside guest memory`;
    const a = mem.slice(addrs.avail, 6 + 2 * num, user);
    if (a === null) return `avail ring at ${hex(addrs.avail)} is not inside guest memory`;
    const u = mem.slice(addrs.used, 6 + 8 * num, user);
    if (u === null) return `used ring at ${hex(addrs.used)} is not inside guest memory`;
    const ao = a.bytes.byteOffset + a.offset;
    const uo = u.bytes.byteOffset + u.offset;
    if (ao % 2 !== 0 || uo % 4 !== 0) return 'ring not aligned in its mapping';
    const avail = new Uint16Array(a.bytes.buffer, ao, 3 + num);
    const used16 = new Uint16Array(u.bytes.buffer, uo, 3 + 4 * num);
    const used32 = new Uint32Array(u.bytes.buffer, uo, 1 + 2 * num);
    return new SplitQueue(num, eventIdx, d.view, d.offset, avail, used16, used32, base);
  }

  /** The guest's avail idx (an acquire: ring entries read after it are at least this new). */
  availIdx(): number {
    return Atomics.load(this.avail, 1);
  }

  /** Entries available to process, or -1 when the guest moved avail idx more than num ahead (a broken ring). */
  pending(): number {
    const n = (Atomics.load(this.avail, 1) - this.lastAvail) & 0xffff;
    return n > this.num ? -1 : n;
  }

  /** Takes the next head from the avail ring (call only when pending() > 0). */
  popHead(): number {
    const head = this.avail[2 + (this.lastAvail & this.mask)]!;
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (this.kicksSuppressed && this.eventIdx) this.avail16Event((this.lastAvail + 0x8000) & 0xffff);
    return head;
  }

  /** Completes a chain: writes the used element, then publishes the used idx. */
  pushUsed(id: number, len: number): void {
    this.addUsed(id, len);
    this.publishUsed();
  }

  /**
   * Writes the used element of a completed chain without publishing it: the
   * guest sees it at the next publishUsed(). Lets the device publish a run of
   * completions with one fenced store (and one cache-line transfer to the
   * guest's CPU) instead of one per request.
   */
  addUsed(id: number, len: number): void {
    const i = this.usedIdx & this.mask;
    this.used32[1 + 2 * i] = id;
    this.used32[2 + 2 * i] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  /** Publishes the used idx (a release: the elements written before it are visible first). */
  publishUsed(): void {
    Atomics.store(this.used16, 1, this.usedIdx);
  }

  /**
   * Whether the guest wants an interrupt for what was completed since the
   * last call: used_event with EVENT_IDX, else the avail NO_INTERRUPT flag.
   * The Atomics.store of used idx before it and the Atomics.load here are the
   * store-load fence.
   */
  needsNotify(): boolean {
    if (this.eventIdx) {
      const ev = Atomics.load(this.avail, 2 + this.num);
      const old = this.signalledUsed;
      const valid = this.signalledValid;
      this.signalledUsed = this.usedIdx;
      this.signalledValid = true;
      if (!valid) return true;
      return needEvent(ev, this.usedIdx, old);
    }
    return (Atomics.load(this.avail, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  private avail16Event(v: number): void {
    this.used16[2 + 4 * this.num] = v;
  }

  /**
   * Poll mode: asks the guest not to kick. With EVENT_IDX avail_event is
   * kept half the index space ahead of lastAvail (popHead moves it along), so
   * the guest's vring_need_event never fires; without it, VRING_USED_F_NO_NOTIFY.
   */
  suppressKicks(): void {
    this.kicksSuppressed = true;
    if (this.eventIdx) this.avail16Event((this.lastAvail + 0x8000) & 0xffff);
    else Atomics.store(this.used16, 0, Atomics.load(this.used16, 0) | VRING_USED_F_NO_NOTIFY);
  }

  /**
   * Asks the guest to kick for the next request, then re-reads avail idx
   * after a full fence. Returns true when work arrived in between (the
   * caller must process it rather than sleep).
   */
  enableKicks(): boolean {
    this.kicksSuppressed = false;
    if (this.eventIdx) Atomics.store(this.used16, 2 + 4 * this.num, this.lastAvail);
    else Atomics.store(this.used16, 0, Atomics.load(this.used16, 0) & ~VRING_USED_F_NO_NOTIFY);
    return Atomics.load(this.avail, 1) !== this.lastAvail;
  }

  /** Test helper: the avail_event the device last wrote. */
  availEvent(): number {
    return Atomics.load(this.used16, 2 + 4 * this.num);
  }

  /** Test helper: the used ring's flags. */
  usedFlags(): number {
    return Atomics.load(this.used16, 0);
  }
}
