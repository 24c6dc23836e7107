// tmem-blk's counters, per connection (host/counters.ts: name, help, kind,
// unit; slot i of an instance's Float64Array is spec i; listed in
// host/counter-table.ts).
// The request handler counts requests and statuses, the block store counts
// where pages went; both write into the same array.
import { type CounterBlock, counterIndex, countersObject } from '../counters.js';

export const BLK_COUNTERS = [
  { name: 'requests', help: 'chains handed to the blk device', kind: 'counter', unit: 'requests' },
  { name: 'unanswerable', help: 'chains with no writable byte for the status (used length 0)', kind: 'counter', unit: 'requests' },
  { name: 'reads', help: 'VIRTIO_BLK_T_IN requests', kind: 'counter', unit: 'requests' },
  { name: 'writes', help: 'VIRTIO_BLK_T_OUT requests', kind: 'counter', unit: 'requests' },
  { name: 'flushes', help: 'VIRTIO_BLK_T_FLUSH requests', kind: 'counter', unit: 'requests' },
  { name: 'getIds', help: 'VIRTIO_BLK_T_GET_ID requests', kind: 'counter', unit: 'requests' },
  { name: 'discards', help: 'VIRTIO_BLK_T_DISCARD requests', kind: 'counter', unit: 'requests' },
  { name: 'writeZeroes', help: 'VIRTIO_BLK_T_WRITE_ZEROES requests', kind: 'counter', unit: 'requests' },
  { name: 'statusOk', help: 'requests answered VIRTIO_BLK_S_OK', kind: 'counter', unit: 'requests' },
  { name: 'statusIoErr', help: 'requests answered VIRTIO_BLK_S_IOERR (bad request, or the data could not be kept or read)', kind: 'counter', unit: 'requests' },
  { name: 'statusUnsupp', help: 'requests answered VIRTIO_BLK_S_UNSUPP (unknown type or segment flags)', kind: 'counter', unit: 'requests' },
  { name: 'bytesRead', help: 'bytes the guest read', kind: 'counter', unit: 'bytes' },
  { name: 'bytesWritten', help: 'bytes the guest wrote', kind: 'counter', unit: 'bytes' },
  { name: 'rmwPages', help: 'pages read-modify-written (sub-page or unaligned writes, partial write zeroes)', kind: 'counter', unit: 'pages' },
  { name: 'ramWrites', help: 'pages written to the store (RAM)', kind: 'counter', unit: 'pages' },
  { name: 'overflowWrites', help: 'pages written to the overflow file (the store had no room)', kind: 'counter', unit: 'pages' },
  { name: 'ramReads', help: 'pages read from the store', kind: 'counter', unit: 'pages' },
  { name: 'overflowReads', help: 'pages read from the overflow file', kind: 'counter', unit: 'pages' },
  { name: 'zeroReads', help: 'pages read that were never written or were freed (zeros)', kind: 'counter', unit: 'pages' },
  { name: 'promoted', help: 'overflow pages moved back to RAM when the store had room again', kind: 'counter', unit: 'pages' },
  { name: 'freedPages', help: 'pages freed by discard and write zeroes', kind: 'counter', unit: 'pages' },
  { name: 'writeErrors', help: 'page writes that could be kept nowhere (no room and no or a failing overflow file)', kind: 'counter', unit: 'pages' },
  { name: 'readErrors', help: 'page reads that failed (overflow file error, or a page lost by an earlier failed write)', kind: 'counter', unit: 'pages' },
  { name: 'ramPages', help: "the disk's pages in the store (RAM) now", kind: 'gauge', unit: 'pages' },
  { name: 'overflowPages', help: "the disk's pages in the overflow file now", kind: 'gauge', unit: 'pages' },
  { name: 'diskWaits', help: 'requests that waited for overflow pages to reach the page cache (answered later, their reads started)', kind: 'counter', unit: 'requests' },
  { name: 'parkTimeouts', help: 'requests served by reads that waited for the disk after waiting MAX_PARK_MS for the page cache', kind: 'counter', unit: 'requests' },
  { name: 'punchErrors', help: 'hole punches of the overflow file that failed (blocks stay allocated; no data affected)', kind: 'counter', unit: 'events' },
] as const;

export const BLK_COUNTER_BLOCK: CounterBlock = { subsystem: 'blk', scope: 'instance', counters: BLK_COUNTERS };

type Names = (typeof BLK_COUNTERS)[number]['name'];

/** Slot of each counter by name. */
export const BC = counterIndex(BLK_COUNTERS);

export function newBlkCounters(): Float64Array {
  return new Float64Array(BLK_COUNTERS.length);
}

/** The counters by name (control path, tests). */
export function blkCountersObject(c: Float64Array): Record<Names, number> {
  return countersObject(BLK_COUNTERS, c) as Record<Names, number>;
}
