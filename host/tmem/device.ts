// The tmem device's request handling (worker half; host/tmem/worker.ts gives
// it a lifecycle as a WorkerDevice): one walked descriptor chain in, one store
// operation, the response (and data) written back into guest memory, the used
// length out. ABI.md is the contract; the order of checks below is its "which
// status wins" list. The store's rules (request flags, put-put-get emptying)
// are the store's: this file checks the chain's shape and calls them.
//
// Hot path: no allocation per request. The header is read in place when it
// sits in one segment (it normally does); the oid goes into a preallocated
// Uint32Array; a page that sits in one segment (the normal case: one
// descriptor pointing at the guest's page frame) is copied by the store
// straight from or to guest RAM; only a data area split over several
// descriptors goes through the preallocated scratch page.
import {
  OP_PAYLOAD,
  TMEM_ABI_VERSION,
  TMEM_INFO_OFF_ABI_VERSION,
  TMEM_INFO_OFF_CAPACITY_PAGES,
  TMEM_INFO_OFF_EPHEMERAL_PAGES,
  TMEM_INFO_OFF_MAX_POOLS,
  TMEM_INFO_OFF_NUM_QUEUES,
  TMEM_INFO_OFF_PAGE_SIZE,
  TMEM_INFO_OFF_PERSISTENT_LIMIT_PAGES,
  TMEM_INFO_OFF_PERSISTENT_PAGES,
  TMEM_INFO_SIZE,
  TMEM_NEW_POOL_OFF_FLAGS,
  TMEM_NEW_POOL_OFF_PAGE_SIZE,
  TMEM_NEW_POOL_OFF_UUID,
  TMEM_NEW_POOL_SIZE,
  TMEM_OP_DESTROY_POOL,
  TMEM_OP_FLUSH_OBJECT,
  TMEM_OP_FLUSH_PAGE,
  TMEM_OP_GET_PAGE,
  TMEM_OP_INFO,
  TMEM_OP_NEW_POOL,
  TMEM_OP_PUT_PAGE,
  TMEM_OP_RESET,
  TMEM_PAGE_SIZE,
  TMEM_REQ_OFF_FLAGS,
  TMEM_REQ_OFF_INDEX,
  TMEM_REQ_OFF_OID,
  TMEM_REQ_OFF_OP,
  TMEM_REQ_OFF_POOL_ID,
  TMEM_REQ_SIZE,
  TMEM_RESP_OFF_RESERVED,
  TMEM_RESP_OFF_STATUS,
  TMEM_RESP_OFF_VALUE,
  TMEM_RESP_SIZE,
  TMEM_S_DENIED,
  TMEM_S_FROZEN,
  TMEM_S_INVALID,
  TMEM_S_MISS,
  TMEM_S_NOSPACE,
  TMEM_S_OK,
  TMEM_S_UNSUPPORTED,
} from '../../shared/abi.js';
import type { SegmentList } from '../virtio/guest-memory.js';
import { TC, TMEM_COUNTERS } from './counters.js';
import { requestFlagsAllowed } from './store/store.js';

/**
 * The part of TmemStore (host/tmem/store/store.ts, host/ARCHITECTURE.md) the device
 * calls. Every method returns a TMEM_S_* status or a non-negative value.
 */
export interface DeviceStore {
  newPool(g: number, flags: number, pageSize: number, uuid: Uint8Array, uuidOffset: number, sharedNegotiated: boolean): number;
  destroyPool(g: number, poolId: number): number;
  reset(g: number): number;
  putPage(g: number, poolId: number, oid: Uint32Array, index: number, src: Uint8Array, srcOffset: number): number;
  putRefused(g: number, poolId: number, oid: Uint32Array, index: number): number;
  getPage(g: number, poolId: number, oid: Uint32Array, index: number, reqFlags: number, dst: Uint8Array, dstOffset: number): number;
  flushPage(g: number, poolId: number, oid: Uint32Array, index: number): number;
  flushObject(g: number, poolId: number, oid: Uint32Array): number;
  info(g: number, out: Float64Array): void;
}

/** How the device reads store.info()'s output (indices into the Float64Array). */
export interface InfoLayout {
  readonly length: number;
  readonly maxPools: number;
  readonly capacityPages: number;
  readonly persistentLimitPages: number;
  readonly persistentPages: number;
  readonly ephemeralPages: number;
}

/** The guest as the device sees it. */
export interface DeviceGuest {
  /** The guest's id in the store. */
  readonly storeGuest: number;
  /** TMEM_F_SHARED negotiated. */
  sharedNegotiated: boolean;
  /** INFO num_queues: the queues the front-end set up (its num_vqs). */
  numQueues: number;
}

const TWO32 = 0x1_0000_0000;

/** The TMEM_COUNTERS slot that counts an answer's status. */
function statusSlot(status: number): number {
  switch (status) {
    case TMEM_S_OK:
      return TC.statusOk;
    case TMEM_S_MISS:
      return TC.statusMiss;
    case TMEM_S_INVALID:
      return TC.statusInvalid;
    case TMEM_S_NOSPACE:
      return TC.statusNoSpace;
    case TMEM_S_DENIED:
      return TC.statusDenied;
    case TMEM_S_FROZEN:
      return TC.statusFrozen;
    default:
      return TC.statusUnsupported;
  }
}
/** Op -> its counter slot (0 = unknown). */
const OP_SLOT = [TC.opUnknown, TC.opNewPool, TC.opDestroyPool, TC.opPutPage, TC.opGetPage, TC.opFlushPage, TC.opFlushObject, TC.opInfo, TC.opReset];

export class TmemDevice {
  /** TMEM_COUNTERS of this connection. */
  readonly counters = new Float64Array(TMEM_COUNTERS.length);
  /** Why the last handle() returned 0 (unanswerable). */
  error = '';
  /** The last answered request's status (for tests and tracing). */
  lastStatus = 0;
  /** The last request was refused as malformed or unsupported (the fairness penalty). */
  refused = false;
  readonly guest: DeviceGuest;
  protected readonly store: DeviceStore;
  private readonly infoLayout: InfoLayout;
  private readonly oid = new Uint32Array(6);
  private readonly hdr = new Uint8Array(TMEM_REQ_SIZE);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly resp = new Uint8Array(TMEM_RESP_SIZE);
  private readonly respView = new DataView(this.resp.buffer);
  private readonly newPoolBuf = new Uint8Array(TMEM_NEW_POOL_SIZE);
  private readonly newPoolView = new DataView(this.newPoolBuf.buffer);
  private readonly infoBuf = new Uint8Array(TMEM_INFO_SIZE);
  private readonly infoView = new DataView(this.infoBuf.buffer);
  private readonly infoOut: Float64Array;
  private readonly page = new Uint8Array(TMEM_PAGE_SIZE);

  constructor(store: DeviceStore, infoLayout: InfoLayout, guest: DeviceGuest) {
    this.store = store;
    this.guest = guest;
    this.infoLayout = infoLayout;
    this.infoOut = new Float64Array(infoLayout.length);
  }

  /**
   * Answers one request whose device-readable bytes are `rd` and writable
   * bytes `wr`. Returns the used length: 0 when the chain is unanswerable
   * (nothing written; `error` says why), else the bytes written.
   */
  handle(_queue: number, rd: SegmentList, wr: SegmentList): number {
    const c = this.counters;
    const guest = this.guest;
    const R = rd.total;
    const W = wr.total;
    if (W < TMEM_RESP_SIZE) {
      this.refused = true;
      this.error = `${W} writable bytes, no room for the 16-byte response`;
      return 0;
    }
    let value = 0;
    let status: number;
    let dataLen = 0;
    // Header: in place when it sits in one segment, else gathered.
    let hv: DataView;
    let ho: number;
    if (R >= TMEM_REQ_SIZE && rd.locate(0, TMEM_REQ_SIZE)) {
      hv = rd.views[rd.locIndex]!;
      ho = rd.locOffset;
    } else {
      this.hdr.fill(0);
      rd.readInto(0, this.hdr, 0, Math.min(R, TMEM_REQ_SIZE));
      hv = this.hdrView;
      ho = 0;
    }
    const op = R >= 4 ? hv.getUint32(ho + TMEM_REQ_OFF_OP, true) : 0;
    const payload = OP_PAYLOAD[op];
    if (R < 4) {
      status = TMEM_S_INVALID;
      c[TC.opUnknown]!++;
    } else if (payload === undefined) {
      status = TMEM_S_UNSUPPORTED;
      c[TC.opUnknown]!++;
    } else {
      c[OP_SLOT[op]!]!++;
      const g = guest.storeGuest;
      const flags = hv.getUint32(ho + TMEM_REQ_OFF_FLAGS, true);
      const pool = hv.getUint32(ho + TMEM_REQ_OFF_POOL_ID, true);
      const index = hv.getUint32(ho + TMEM_REQ_OFF_INDEX, true);
      const oid = this.oid;
      for (let k = 0; k < 6; k++) oid[k] = hv.getUint32(ho + TMEM_REQ_OFF_OID + 4 * k, true);
      if (R !== TMEM_REQ_SIZE + payload[0] || W !== payload[1] + TMEM_RESP_SIZE || (flags & ~requestFlagsAllowed(op)) !== 0) {
        status = TMEM_S_INVALID;
        // The store empties the handle a malformed PUT names (put-put-get), if the header names one.
        if (op === TMEM_OP_PUT_PAGE && R >= TMEM_REQ_SIZE) this.store.putRefused(g, pool, oid, index);
      } else {
        switch (op) {
          case TMEM_OP_NEW_POOL: {
            let pv: DataView;
            let po: number;
            let pb: Uint8Array;
            if (rd.locate(TMEM_REQ_SIZE, TMEM_NEW_POOL_SIZE)) {
              pv = rd.views[rd.locIndex]!;
              pb = rd.bufs[rd.locIndex]!;
              po = rd.locOffset;
            } else {
              rd.readInto(TMEM_REQ_SIZE, this.newPoolBuf, 0, TMEM_NEW_POOL_SIZE);
              pv = this.newPoolView;
              pb = this.newPoolBuf;
              po = 0;
            }
            const r = this.store.newPool(
              g,
              pv.getUint32(po + TMEM_NEW_POOL_OFF_FLAGS, true),
              pv.getUint32(po + TMEM_NEW_POOL_OFF_PAGE_SIZE, true),
              pb,
              po + TMEM_NEW_POOL_OFF_UUID,
              guest.sharedNegotiated,
            );
            if (r >= 0) {
              status = TMEM_S_OK;
              value = r;
            } else status = r;
            break;
          }
          case TMEM_OP_DESTROY_POOL:
            status = this.store.destroyPool(g, pool);
            break;
          case TMEM_OP_PUT_PAGE:
            if (rd.locate(TMEM_REQ_SIZE, TMEM_PAGE_SIZE)) {
              status = this.store.putPage(g, pool, oid, index, rd.bufs[rd.locIndex]!, rd.locOffset);
            } else {
              c[TC.putsGathered]!++;
              rd.readInto(TMEM_REQ_SIZE, this.page, 0, TMEM_PAGE_SIZE);
              status = this.store.putPage(g, pool, oid, index, this.page, 0);
            }
            break;
          case TMEM_OP_GET_PAGE:
            if (wr.locate(0, TMEM_PAGE_SIZE)) {
              status = this.store.getPage(g, pool, oid, index, flags, wr.bufs[wr.locIndex]!, wr.locOffset);
            } else {
              c[TC.getsScattered]!++;
              status = this.store.getPage(g, pool, oid, index, flags, this.page, 0);
              if (status === TMEM_S_OK) wr.writeFrom(0, this.page, 0, TMEM_PAGE_SIZE);
            }
            if (status === TMEM_S_OK) dataLen = TMEM_PAGE_SIZE;
            break;
          case TMEM_OP_FLUSH_PAGE:
            status = this.store.flushPage(g, pool, oid, index);
            break;
          case TMEM_OP_FLUSH_OBJECT: {
            const r = this.store.flushObject(g, pool, oid);
            if (r >= 0) {
              status = TMEM_S_OK;
              value = r;
            } else status = r;
            break;
          }
          case TMEM_OP_INFO:
            this.writeInfo();
            wr.writeFrom(0, this.infoBuf, 0, TMEM_INFO_SIZE);
            status = TMEM_S_OK;
            dataLen = TMEM_INFO_SIZE;
            break;
          case TMEM_OP_RESET: {
            const r = this.store.reset(g);
            if (r >= 0) {
              status = TMEM_S_OK;
              value = r;
            } else status = r;
            break;
          }
          default:
            status = TMEM_S_UNSUPPORTED;
        }
      }
    }
    c[statusSlot(status)]!++;
    this.lastStatus = status;
    this.refused = status === TMEM_S_INVALID || status === TMEM_S_UNSUPPORTED;
    this.writeResponse(wr, W - TMEM_RESP_SIZE, status, value);
    return dataLen + TMEM_RESP_SIZE;
  }

  private writeResponse(wr: SegmentList, at: number, status: number, value: number): void {
    let v: DataView;
    let o: number;
    const inPlace = wr.locate(at, TMEM_RESP_SIZE);
    if (inPlace) {
      v = wr.views[wr.locIndex]!;
      o = wr.locOffset;
    } else {
      v = this.respView;
      o = 0;
    }
    v.setInt32(o + TMEM_RESP_OFF_STATUS, status, true);
    v.setUint32(o + TMEM_RESP_OFF_RESERVED, 0, true);
    v.setUint32(o + TMEM_RESP_OFF_VALUE, value % TWO32, true);
    v.setUint32(o + TMEM_RESP_OFF_VALUE + 4, Math.floor(value / TWO32), true);
    if (!inPlace) wr.writeFrom(at, this.resp, 0, TMEM_RESP_SIZE);
  }

  private writeInfo(): void {
    const guest = this.guest;
    const out = this.infoOut;
    const L = this.infoLayout;
    out.fill(0);
    this.store.info(guest.storeGuest, out);
    const v = this.infoView;
    this.infoBuf.fill(0);
    const u64 = (off: number, x: number) => {
      const n = x > 0 ? Math.floor(x) : 0;
      v.setUint32(off, n % TWO32, true);
      v.setUint32(off + 4, Math.floor(n / TWO32), true);
    };
    v.setUint32(TMEM_INFO_OFF_ABI_VERSION, TMEM_ABI_VERSION, true);
    v.setUint32(TMEM_INFO_OFF_PAGE_SIZE, TMEM_PAGE_SIZE, true);
    v.setUint32(TMEM_INFO_OFF_MAX_POOLS, out[L.maxPools]!, true);
    v.setUint32(TMEM_INFO_OFF_NUM_QUEUES, guest.numQueues, true);
    u64(TMEM_INFO_OFF_CAPACITY_PAGES, out[L.capacityPages]!);
    u64(TMEM_INFO_OFF_PERSISTENT_LIMIT_PAGES, out[L.persistentLimitPages]!);
    u64(TMEM_INFO_OFF_PERSISTENT_PAGES, out[L.persistentPages]!);
    u64(TMEM_INFO_OFF_EPHEMERAL_PAGES, out[L.ephemeralPages]!);
  }
}
