// The disk of one VM: 4 KiB pages, each in one of three places, said by two
// bitmaps (no JS object per page):
//
//   inRam   the store holds it (store-pages.ts: the VM's persistent pool)
//   inFile  the overflow file holds it (overflow-file.ts), at page * 4096
//   neither never written or freed (discard, write zeroes): reads as zeros
//
// A write goes to RAM first; when the store refuses (the VM's limit or the
// host capacity), to the overflow file: a block device cannot refuse a
// write. With no overflow file, or when the file write fails, the write
// fails (the handler answers VIRTIO_BLK_S_IOERR) and nothing already written
// is lost: an overwrite the store would refuse is not tried (the old copy
// stays until the new one is in the file), and the file only ever gets
// whole merged pages.
//
// Two more bitmaps: `hot` marks file pages the guest read (idleStep brings
// them back to RAM when the store has room), `bad` marks a page whose data
// the daemon no longer has (only if the store lost a page behind our back,
// or refused an overwrite and dropped the old copy while the file write
// failed): reading it is an I/O error, never zeros, until it is written
// whole or freed.
import { performance } from 'node:perf_hooks';
import { TMEM_S_OK } from '../../shared/abi.js';
import type { OverflowFile } from './overflow-file.js';
import { PageBitmap } from './page-bitmap.js';
import type { BlockPages } from './store-pages.js';
import { BC, newBlkCounters } from './counters.js';

const PAGE = 4096;
/** After the store refused a promotion, idle steps wait this long before trying again. */
const PROMOTE_BACKOFF_MS = 100;

/** FNV-1a over 4096 bytes, 4 at a time (debug verification only). */
function pageHash(b: Uint8Array, off: number): number {
  let h = 0x811c9dc5;
  for (let i = off; i < off + PAGE; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return h >>> 0;
}
const ZERO_HASH = pageHash(new Uint8Array(PAGE), 0);

export class BlockStore {
  readonly pages: number;
  readonly inRam: PageBitmap;
  readonly inFile: PageBitmap;
  readonly hot: PageBitmap;
  readonly bad: PageBitmap;
  /** Where this disk counts (BLK_COUNTERS layout): the connected instance's array, swapped in at each connection. */
  counters: Float64Array = newBlkCounters();
  /** Why the last failed read or write failed (one line). */
  error = '';
  private readonly ram: BlockPages;
  private readonly file: OverflowFile | null;
  private readonly scratch = new Uint8Array(PAGE);
  /**
   * Debug (TMEMD_BLK_VERIFY=1 in tmemd's environment): a 32-bit hash of each
   * page as written, checked at every read; mismatches are kept in
   * `verifyLog` (first 50) and counted. Costs a hash per page moved.
   */
  verify: Uint32Array | null = null;
  verifyFailures = 0;
  readonly verifyLog: string[] = [];
  private cursor = 0;
  private backoffUntil = 0;
  private closed = false;

  constructor(ram: BlockPages, pages: number, file: OverflowFile | null) {
    this.ram = ram;
    this.pages = pages;
    this.file = file;
    this.inRam = new PageBitmap(pages);
    this.inFile = new PageBitmap(pages);
    this.hot = new PageBitmap(pages);
    this.bad = new PageBitmap(pages);
  }

  /** Copies page p into dst[off, off + 4096). False (error says why) when its data cannot be given. */
  read(p: number, dst: Uint8Array, off: number): boolean {
    const c = this.counters;
    if (this.bad.has(p)) return this.readFailed(`page ${p} was lost (an earlier write failed half way)`);
    if (this.inRam.has(p)) {
      if (this.ram.get(p, dst, off) !== TMEM_S_OK) {
        // the store lost it: never answer with zeros or stale file data
        this.inRam.clear(p);
        this.bad.set(p);
        return this.readFailed(`page ${p} is missing from the store`);
      }
      c[BC.ramReads]++;
      if (this.verify !== null) this.check(p, dst, off, 'ram');
      return true;
    }
    if (this.inFile.has(p)) {
      if (!this.file!.readPage(p, dst, off)) return this.readFailed(this.file!.error);
      this.hot.set(p);
      c[BC.overflowReads]++;
      if (this.verify !== null) this.check(p, dst, off, 'file');
      return true;
    }
    dst.fill(0, off, off + PAGE);
    c[BC.zeroReads]++;
    if (this.verify !== null) this.check(p, dst, off, 'zero');
    return true;
  }

  /**
   * Whether pages [first, last] can be read without waiting for the disk:
   * none of them is in the overflow file, or those that are sit in the page
   * cache. Every file page not cached is asked for (OverflowFile.readyToRead
   * starts its read), so one wait covers the whole range.
   */
  readyToRead(first: number, last: number): boolean {
    const file = this.file;
    if (file === null || this.inFile.count === 0) return true;
    let ready = true;
    for (let p = first; p <= last; p++) {
      if (this.inFile.has(p) && !this.inRam.has(p) && !this.bad.has(p) && !file.readyToRead(p)) ready = false;
    }
    return ready;
  }

  /** Stores src[off, off + 4096) as page p. False (error says why) when it could be kept nowhere. */
  write(p: number, src: Uint8Array, off: number): boolean {
    const c = this.counters;
    const wasInRam = this.inRam.has(p);
    const st = this.ram.put(p, src, off, wasInRam);
    if (st === TMEM_S_OK) {
      this.inRam.set(p);
      this.bad.clear(p);
      this.hot.clear(p);
      if (this.inFile.has(p)) {
        this.inFile.clear(p);
        this.punch(p, 1);
      }
      c[BC.ramWrites]++;
      if (this.verify !== null) this.verify[p] = pageHash(src, off);
      return true;
    }
    const keptOld = this.ram.keptOld;
    if (wasInRam && !keptOld) this.inRam.clear(p);
    const file = this.file;
    if (file === null || !file.open) {
      if (wasInRam && !keptOld) this.bad.set(p);
      return this.writeFailed(`page ${p}: the store has no room (status ${st}) and there is no overflow file`);
    }
    if (!file.writePage(p, src, off)) {
      // a failed file write leaves the old file copy or a mix of whole old and new sectors
      if (wasInRam && !keptOld) this.bad.set(p);
      return this.writeFailed(file.error);
    }
    if (wasInRam && keptOld) {
      this.ram.flush(p);
      this.inRam.clear(p);
    }
    this.inFile.set(p);
    this.bad.clear(p);
    c[BC.overflowWrites]++;
    if (this.verify !== null) this.verify[p] = pageHash(src, off);
    return true;
  }

  /** Frees pages [first, first + count): they read as zeros; RAM goes back to the store, file blocks are punched. */
  free(first: number, count: number): void {
    let runStart = -1;
    const end = first + count;
    for (let p = first; p < end; p++) {
      if (this.inRam.has(p)) {
        this.ram.flush(p);
        this.inRam.clear(p);
      }
      this.bad.clear(p);
      this.hot.clear(p);
      if (this.verify !== null) this.verify[p] = ZERO_HASH;
      if (this.inFile.has(p)) {
        this.inFile.clear(p);
        if (runStart < 0) runStart = p;
      } else if (runStart >= 0) {
        this.punch(runStart, p - runStart);
        runStart = -1;
      }
    }
    if (runStart >= 0) this.punch(runStart, end - runStart);
    this.counters[BC.freedPages] += count;
  }

  /**
   * Idle work: brings up to `budget` hot file pages (read by the guest while
   * in the file) back to RAM while the store takes them. Returns the hot
   * pages left (0 = nothing to do). After a refusal it waits
   * PROMOTE_BACKOFF_MS before trying again, so a full store costs one page
   * read per interval.
   */
  idleStep(budget: number): number {
    const file = this.file;
    if (file === null || this.hot.count === 0 || this.closed) return 0;
    if (this.backoffUntil !== 0 && performance.now() < this.backoffUntil) return this.hot.count;
    this.backoffUntil = 0;
    let wrapped = false;
    while (budget > 0 && this.hot.count > 0) {
      const p = this.hot.next(this.cursor, this.pages);
      if (p < 0) {
        if (wrapped) break;
        wrapped = true;
        this.cursor = 0;
        continue;
      }
      this.cursor = p + 1;
      this.hot.clear(p);
      if (!this.inFile.has(p)) continue;
      budget--;
      if (!file.readyToRead(p)) {
        // on the disk, not in the page cache: its read has been started; promote it on a later step instead of waiting here
        this.hot.set(p);
        continue;
      }
      if (!file.readPage(p, this.scratch, 0)) {
        this.counters[BC.readErrors]++;
        this.error = file.error;
        continue;
      }
      if (this.ram.put(p, this.scratch, 0, false) !== TMEM_S_OK) {
        this.hot.set(p);
        this.backoffUntil = performance.now() + PROMOTE_BACKOFF_MS;
        break;
      }
      this.inRam.set(p);
      this.inFile.clear(p);
      this.punch(p, 1);
      this.counters[BC.promoted]++;
    }
    return this.hot.count;
  }

  /** Turns on the debug verification (all pages read as zeros so far). */
  enableVerify(): void {
    this.verify = new Uint32Array(this.pages).fill(ZERO_HASH);
  }

  private check(p: number, b: Uint8Array, off: number, where: string): void {
    const h = pageHash(b, off);
    if (h === this.verify![p]) return;
    this.verifyFailures++;
    if (this.verifyLog.length < 50) this.verifyLog.push(`page ${p} from ${where}: hash ${h.toString(16)}, written ${this.verify![p]!.toString(16)}${h === ZERO_HASH ? ' (zeros)' : ''}; inRam ${this.inRam.has(p)} inFile ${this.inFile.has(p)}`);
  }

  /** idleStep has work it can do now: hot file pages, and no backoff running (a full store is not polled). */
  promotionPending(): boolean {
    if (this.file === null || this.hot.count === 0 || this.closed) return false;
    return this.backoffUntil === 0 || performance.now() >= this.backoffUntil;
  }

  /** The disk goes away: every RAM page back to the store (reclaimed in its steps), the file closed and removed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ram.destroy();
    this.inRam.words.fill(0);
    this.inRam.count = 0;
    this.file?.close();
  }

  /** Writes the ramPages and overflowPages gauges into the counters in use (after each request and idle step). */
  publishGauges(): void {
    const c = this.counters;
    c[BC.ramPages] = this.inRam.count;
    c[BC.overflowPages] = this.inFile.count;
  }

  /** Pages the overflow file holds now. */
  get filePages(): number {
    return this.inFile.count;
  }

  /** Pages the store holds now. */
  get ramPages(): number {
    return this.inRam.count;
  }

  private punch(first: number, count: number): void {
    if (!this.file!.punch(first, count)) this.counters[BC.punchErrors]++;
  }

  private readFailed(why: string): false {
    this.counters[BC.readErrors]++;
    this.error = why;
    return false;
  }

  private writeFailed(why: string): false {
    this.counters[BC.writeErrors]++;
    this.error = why;
    return false;
  }
}
