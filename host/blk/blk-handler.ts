// The virtio-blk request handler (VIRTIO 1.2 §5.2.6): one walked descriptor
// chain in (its device-readable bytes `rd`, writable bytes `wr`), the disk
// read or written through the block store, the status byte written as the
// last writable byte, the used length out (bytes written into the guest's
// buffers, the status byte included; 0 = unanswerable: not even a status
// byte to write).
//
// Request shapes (docs/tmem-blk.md, "Requests"):
//   IN            rd = header (16)            wr = data (n * 512) + status
//   OUT           rd = header + data (n * 512) wr = status
//   FLUSH         rd = header                  wr = status
//   GET_ID        rd = header                  wr = serial (up to 20) + status
//   DISCARD, WRITE_ZEROES
//                 rd = header + k segments of 16 bytes   wr = status
// Any other length is VIRTIO_BLK_S_IOERR, as is a sector range outside the
// disk, a length that is not whole sectors, more than BLK_MAX_DWZ_SEG
// segments or more than BLK_MAX_DWZ_SECTORS sectors in one, and a store or
// overflow file failure. Unknown types, unknown segment flags and UNMAP on
// a discard are VIRTIO_BLK_S_UNSUPP (§5.2.6.2, as QEMU and SPDK answer).
//
// Any sector and any whole number of sectors is served: a page touched in
// part is read, merged and written back whole (read-modify-write). A whole
// page that sits in one guest segment is copied straight between guest RAM
// and the store; anything else goes through one preallocated scratch page.
// No allocation per request.
import {
  BLK_DWZ_OFF_FLAGS,
  BLK_DWZ_OFF_NUM_SECTORS,
  BLK_DWZ_OFF_SECTOR,
  BLK_DWZ_SIZE,
  BLK_HDR_OFF_SECTOR,
  BLK_HDR_OFF_TYPE,
  BLK_HDR_SIZE,
  SECTOR_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './virtio-blk.js';
import { BLK_MAX_DWZ_SECTORS, BLK_MAX_DWZ_SEG } from './blk-config.js';
import type { BlockStore } from './block-store.js';
import { BC } from './counters.js';
import type { SegmentList } from '../virtio/guest-memory.js';

const PAGE = 4096;
const SECTORS_PER_PAGE = PAGE / SECTOR_SIZE;
const TWO32 = 0x1_0000_0000;
/** Sector numbers at or above 2^44 (2^53 bytes) are outside any disk. */
const SECTOR_HI_LIMIT = 1 << 12;

export class BlkHandler {
  /** Why the last request failed or was unanswerable (one line). */
  error = '';
  /** The last answered request's status. */
  lastStatus = 0;
  /**
   * The last chain was refused: unanswerable, or a bad request (UNSUPP, or
   * IOERR for its lengths, range or sizes; not for a store failure). The
   * worker's fairness budget charges such chains more.
   */
  refused = false;
  readonly capacitySectors: number;
  private readonly store: BlockStore;
  private readonly serial = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  private readonly hdr = new Uint8Array(BLK_HDR_SIZE);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly seg = new Uint8Array(BLK_DWZ_SIZE);
  private readonly segView = new DataView(this.seg.buffer);
  private readonly page = new Uint8Array(PAGE);
  /** Data bytes the current request wrote into the guest's buffers. */
  private written = 0;
  /** The header readHeader read last: request type and first sector (Infinity past 2^44). */
  private hdrType = 0;
  private hdrSector = 0;

  /** serial: GET_ID's answer (ASCII, cut to 20 bytes; NUL-padded when shorter, as QEMU does). */
  constructor(store: BlockStore, serial: string) {
    this.store = store;
    this.capacitySectors = store.pages * SECTORS_PER_PAGE;
    const s = Buffer.from(serial, 'latin1');
    this.serial.set(s.subarray(0, VIRTIO_BLK_ID_BYTES));
  }

  /** The connected instance's counters (BLK_COUNTERS layout), shared with the block store. */
  get counters(): Float64Array {
    return this.store.counters;
  }

  handle(rd: SegmentList, wr: SegmentList): number {
    const c = this.store.counters;
    c[BC.requests]++;
    this.refused = false;
    const R = rd.total;
    const W = wr.total;
    if (W < 1) {
      c[BC.unanswerable]++;
      this.refused = true;
      this.error = 'no writable byte for the status';
      return 0;
    }
    this.written = 0;
    let status: number;
    if (R < BLK_HDR_SIZE) {
      status = this.fail(`header of ${R} bytes, want ${BLK_HDR_SIZE}`);
    } else {
      this.readHeader(rd);
      const type = this.hdrType;
      const sector = this.hdrSector;
      switch (type) {
        case VIRTIO_BLK_T_IN:
          c[BC.reads]++;
          status = R !== BLK_HDR_SIZE ? this.fail(`IN with ${R - BLK_HDR_SIZE} readable data bytes`) : this.read(sector, wr, W - 1);
          break;
        case VIRTIO_BLK_T_OUT:
          c[BC.writes]++;
          status = W !== 1 ? this.fail(`OUT with ${W} writable bytes, want 1`) : this.write(sector, rd, BLK_HDR_SIZE, R - BLK_HDR_SIZE);
          break;
        case VIRTIO_BLK_T_FLUSH:
          c[BC.flushes]++;
          // every completed write is already where reads find it (RAM or the overflow file's page cache); the disk does not outlive the daemon
          status = R !== BLK_HDR_SIZE || W !== 1 ? this.fail(`FLUSH with ${R} readable and ${W} writable bytes`) : VIRTIO_BLK_S_OK;
          break;
        case VIRTIO_BLK_T_GET_ID: {
          c[BC.getIds]++;
          if (R !== BLK_HDR_SIZE) {
            status = this.fail(`GET_ID with ${R - BLK_HDR_SIZE} readable data bytes`);
            break;
          }
          const n = Math.min(VIRTIO_BLK_ID_BYTES, W - 1);
          wr.writeFrom(0, this.serial, 0, n);
          this.written = n;
          status = VIRTIO_BLK_S_OK;
          break;
        }
        case VIRTIO_BLK_T_DISCARD:
        case VIRTIO_BLK_T_WRITE_ZEROES:
          if (type === VIRTIO_BLK_T_DISCARD) c[BC.discards]++;
          else c[BC.writeZeroes]++;
          status = W !== 1 ? this.fail(`discard/write zeroes with ${W} writable bytes, want 1`) : this.discardOrZero(type === VIRTIO_BLK_T_WRITE_ZEROES, rd, R - BLK_HDR_SIZE);
          break;
        default:
          c[BC.statusUnsupp]++;
          this.refused = true;
          this.error = `request type ${type}`;
          status = VIRTIO_BLK_S_UNSUPP;
      }
    }
    if (status === VIRTIO_BLK_S_OK) c[BC.statusOk]++;
    this.lastStatus = status;
    // one byte always sits in one segment
    wr.locate(W - 1, 1);
    wr.bufs[wr.locIndex]![wr.locOffset] = status;
    return this.written + 1;
  }

  /**
   * Whether serving this chain now would wait for the disk: it reads pages
   * that live in the overflow file and are not in the page cache (an IN, or
   * the partly written first or last page of an OUT, which is merged). The
   * kernel has then been asked to read them in (BlockStore.readyToRead).
   * Nothing is counted or changed; a chain the handler would refuse never
   * waits. Discard and write-zeroes merges are rare and not checked.
   */
  waitsForDisk(rd: SegmentList, wr: SegmentList): boolean {
    const R = rd.total;
    const W = wr.total;
    if (W < 1 || R < BLK_HDR_SIZE || this.store.filePages === 0) return false;
    this.readHeader(rd);
    const start = this.hdrSector * SECTOR_SIZE;
    if (this.hdrType === VIRTIO_BLK_T_IN) {
      const len = W - 1;
      if (R !== BLK_HDR_SIZE || len === 0 || this.rangeError(this.hdrSector, len) !== null) return false;
      return !this.store.readyToRead(Math.floor(start / PAGE), Math.floor((start + len - 1) / PAGE));
    }
    if (this.hdrType === VIRTIO_BLK_T_OUT) {
      const len = R - BLK_HDR_SIZE;
      if (W !== 1 || len === 0 || this.rangeError(this.hdrSector, len) !== null) return false;
      const first = Math.floor(start / PAGE);
      const last = Math.floor((start + len - 1) / PAGE);
      let ready = true;
      // only pages written in part are read (merged); both are asked for at once
      if (start % PAGE !== 0 || (first === last && len < PAGE)) ready = this.store.readyToRead(first, first);
      if (last !== first && (start + len) % PAGE !== 0 && !this.store.readyToRead(last, last)) ready = false;
      return !ready;
    }
    return false;
  }

  /** Reads the request header (its first 16 readable bytes, R >= 16) into hdrType and hdrSector. */
  private readHeader(rd: SegmentList): void {
    let hv: DataView;
    let ho: number;
    if (rd.locate(0, BLK_HDR_SIZE)) {
      hv = rd.views[rd.locIndex]!;
      ho = rd.locOffset;
    } else {
      rd.readInto(0, this.hdr, 0, BLK_HDR_SIZE);
      hv = this.hdrView;
      ho = 0;
    }
    this.hdrType = hv.getUint32(ho + BLK_HDR_OFF_TYPE, true);
    const lo = hv.getUint32(ho + BLK_HDR_OFF_SECTOR, true);
    const hi = hv.getUint32(ho + BLK_HDR_OFF_SECTOR + 4, true);
    // a sector beyond 2^44 is out of range for any disk; Infinity keeps the range checks simple
    this.hdrSector = hi >= SECTOR_HI_LIMIT ? Infinity : hi * TWO32 + lo;
  }

  /** A request the spec calls wrong (length, range, sizes): IOERR, and the chain counts as refused. */
  private fail(why: string): number {
    this.refused = true;
    return this.storeFail(why);
  }

  /** A well-formed request whose data could not be kept or read (store, overflow file): IOERR. */
  private storeFail(why: string): number {
    this.store.counters[BC.statusIoErr]++;
    this.error = why;
    return VIRTIO_BLK_S_IOERR;
  }

  /** A byte range of the disk from a request: whole sectors, inside the disk. */
  private rangeError(sector: number, bytes: number): string | null {
    if (bytes % SECTOR_SIZE !== 0) return `${bytes} bytes is not a whole number of sectors`;
    if (!(sector + bytes / SECTOR_SIZE <= this.capacitySectors)) return `sectors ${sector}+${bytes / SECTOR_SIZE} beyond the disk's ${this.capacitySectors}`;
    return null;
  }

  private read(sector: number, wr: SegmentList, len: number): number {
    const bad = this.rangeError(sector, len);
    if (bad !== null) return this.fail(`IN: ${bad}`);
    const st = this.store;
    let pos = sector * SECTOR_SIZE;
    let d = 0;
    while (d < len) {
      const p = Math.floor(pos / PAGE);
      const o = pos - p * PAGE;
      const n = Math.min(PAGE - o, len - d);
      if (n === PAGE && wr.locate(d, PAGE)) {
        if (!st.read(p, wr.bufs[wr.locIndex]!, wr.locOffset)) return this.storeFail(`IN: ${st.error}`);
      } else {
        if (!st.read(p, this.page, 0)) return this.storeFail(`IN: ${st.error}`);
        wr.writeFrom(d, this.page, o, n);
      }
      d += n;
      pos += n;
      this.written = d;
    }
    this.store.counters[BC.bytesRead] += len;
    return VIRTIO_BLK_S_OK;
  }

  private write(sector: number, rd: SegmentList, start: number, len: number): number {
    const bad = this.rangeError(sector, len);
    if (bad !== null) return this.fail(`OUT: ${bad}`);
    const st = this.store;
    let pos = sector * SECTOR_SIZE;
    let d = 0;
    while (d < len) {
      const p = Math.floor(pos / PAGE);
      const o = pos - p * PAGE;
      const n = Math.min(PAGE - o, len - d);
      if (n === PAGE && rd.locate(start + d, PAGE)) {
        if (!st.write(p, rd.bufs[rd.locIndex]!, rd.locOffset)) return this.storeFail(`OUT: ${st.error}`);
      } else {
        if (n < PAGE) {
          // read-modify-write: the page's other sectors keep their data
          if (!st.read(p, this.page, 0)) return this.storeFail(`OUT: ${st.error}`);
          this.store.counters[BC.rmwPages]++;
        }
        rd.readInto(start + d, this.page, o, n);
        if (!st.write(p, this.page, 0)) return this.storeFail(`OUT: ${st.error}`);
      }
      d += n;
      pos += n;
    }
    this.store.counters[BC.bytesWritten] += len;
    return VIRTIO_BLK_S_OK;
  }

  private discardOrZero(zero: boolean, rd: SegmentList, len: number): number {
    const what = zero ? 'WRITE_ZEROES' : 'DISCARD';
    if (len === 0 || len % BLK_DWZ_SIZE !== 0) return this.fail(`${what}: ${len} segment bytes, want a multiple of ${BLK_DWZ_SIZE}`);
    const nseg = len / BLK_DWZ_SIZE;
    if (nseg > BLK_MAX_DWZ_SEG) return this.fail(`${what}: ${nseg} segments, at most ${BLK_MAX_DWZ_SEG}`);
    // every segment is checked before any is carried out: a refused request changes nothing
    for (let k = 0; k < nseg; k++) {
      const r = this.checkSegment(zero, what, rd, k);
      if (r !== VIRTIO_BLK_S_OK) return r;
    }
    for (let k = 0; k < nseg; k++) {
      this.loadSegment(rd, k);
      const v = this.segView;
      const sector = v.getUint32(BLK_DWZ_OFF_SECTOR + 4, true) * TWO32 + v.getUint32(BLK_DWZ_OFF_SECTOR, true);
      const num = v.getUint32(BLK_DWZ_OFF_NUM_SECTORS, true);
      if (num === 0) continue;
      const r = this.freeRange(zero, sector * SECTOR_SIZE, num * SECTOR_SIZE);
      if (r !== VIRTIO_BLK_S_OK) return r;
    }
    return VIRTIO_BLK_S_OK;
  }

  private loadSegment(rd: SegmentList, k: number): void {
    rd.readInto(BLK_HDR_SIZE + k * BLK_DWZ_SIZE, this.seg, 0, BLK_DWZ_SIZE);
  }

  private checkSegment(zero: boolean, what: string, rd: SegmentList, k: number): number {
    this.loadSegment(rd, k);
    const v = this.segView;
    const hi = v.getUint32(BLK_DWZ_OFF_SECTOR + 4, true);
    const sector = hi >= SECTOR_HI_LIMIT ? Infinity : hi * TWO32 + v.getUint32(BLK_DWZ_OFF_SECTOR, true);
    const num = v.getUint32(BLK_DWZ_OFF_NUM_SECTORS, true);
    const flags = v.getUint32(BLK_DWZ_OFF_FLAGS, true);
    // flags first, then the range, as QEMU's virtio_blk_handle_discard_write_zeroes
    if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 || (!zero && flags !== 0)) {
      this.store.counters[BC.statusUnsupp]++;
      this.refused = true;
      this.error = `${what}: segment ${k} flags ${flags}`;
      return VIRTIO_BLK_S_UNSUPP;
    }
    if (num > BLK_MAX_DWZ_SECTORS) return this.fail(`${what}: segment ${k} of ${num} sectors, at most ${BLK_MAX_DWZ_SECTORS}`);
    const bad = this.rangeError(sector, num * SECTOR_SIZE);
    if (bad !== null) return this.fail(`${what}: segment ${k}: ${bad}`);
    return VIRTIO_BLK_S_OK;
  }

  /**
   * Discard: whole pages are freed, the sectors of partly covered pages keep
   * their data (discard only says the guest no longer needs them). Write
   * zeroes: whole pages are freed (a freed page reads as zeros), partly
   * covered pages are zeroed by read-modify-write.
   */
  private freeRange(zero: boolean, pos: number, len: number): number {
    const st = this.store;
    const end = pos + len;
    const firstWhole = Math.ceil(pos / PAGE);
    const endWhole = Math.floor(end / PAGE);
    if (zero) {
      const headPage = Math.floor(pos / PAGE);
      if (pos % PAGE !== 0) {
        const r = this.zeroPart(headPage, pos - headPage * PAGE, Math.min(end, (headPage + 1) * PAGE) - pos);
        if (r !== VIRTIO_BLK_S_OK) return r;
      }
      const tailPage = Math.floor(end / PAGE);
      if (end % PAGE !== 0 && (tailPage !== headPage || pos % PAGE === 0)) {
        const from = Math.max(pos, tailPage * PAGE);
        const r = this.zeroPart(tailPage, from - tailPage * PAGE, end - from);
        if (r !== VIRTIO_BLK_S_OK) return r;
      }
    }
    if (endWhole > firstWhole) st.free(firstWhole, endWhole - firstWhole);
    return VIRTIO_BLK_S_OK;
  }

  private zeroPart(p: number, off: number, n: number): number {
    const st = this.store;
    if (!st.read(p, this.page, 0)) return this.storeFail(`WRITE_ZEROES: ${st.error}`);
    this.page.fill(0, off, off + n);
    this.store.counters[BC.rmwPages]++;
    if (!st.write(p, this.page, 0)) return this.storeFail(`WRITE_ZEROES: ${st.error}`);
    return VIRTIO_BLK_S_OK;
  }
}
