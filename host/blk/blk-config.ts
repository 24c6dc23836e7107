// What tmem-blk tells the front-end about the disk: the virtio feature bits
// it offers and struct virtio_blk_config, as QEMU's vhost-user-blk front-end
// reads it with GET_CONFIG (it keeps its own num-queues in num_queues and
// passes the rest to the guest). The limits here are the ones the request
// handler (blk-handler.ts) enforces, so both read them from one place.
import {
  BLK_CONFIG_SIZE,
  CFG_BLK_SIZE,
  CFG_CAPACITY,
  CFG_DISCARD_SECTOR_ALIGNMENT,
  CFG_MAX_DISCARD_SECTORS,
  CFG_MAX_DISCARD_SEG,
  CFG_MAX_WRITE_ZEROES_SECTORS,
  CFG_MAX_WRITE_ZEROES_SEG,
  CFG_MIN_IO_SIZE,
  CFG_NUM_QUEUES,
  CFG_OPT_IO_SIZE,
  CFG_PHYSICAL_BLOCK_EXP,
  CFG_SEG_MAX,
  CFG_WRITE_ZEROES_MAY_UNMAP,
  SECTOR_SIZE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from './virtio-blk.js';

/** The block size tmem-blk advertises: one store page. */
export const BLK_BLOCK_SIZE = 4096;
export const SECTORS_PER_BLOCK = BLK_BLOCK_SIZE / SECTOR_SIZE;

/**
 * Data segments per request (seg_max): QEMU's queue size - 2 for
 * vhost-user-blk's default queue of 128. Linux puts a whole request (data,
 * header, status: seg_max + 2 buffers) in one indirect table when
 * INDIRECT_DESC is negotiated; the core's walker counts a chain's buffers,
 * not the descriptor naming the table, so a table of 128 fits a queue of
 * 128, as in QEMU and libvhost-user. A chain the walker still refuses stops
 * the queue (WorkerDevice.unanswerableBreaksQueue): virtio_blk would take a
 * completion without a status byte as done.
 */
export const BLK_SEG_MAX = 126;
/** Sectors per discard / write-zeroes segment: 16 MiB, 4096 pages, so one segment's work is bounded (the worker serves every guest). */
export const BLK_MAX_DWZ_SECTORS = 32768;
/** Segments per discard / write-zeroes request (Linux merges adjacent discards up to this). */
export const BLK_MAX_DWZ_SEG = 16;
/** The smallest disk: one block. The largest: 1 TiB (the four page bitmaps cost 4 bits per 4 KiB page: 128 MiB at 1 TiB, 1 MiB at 8 GiB). */
export const BLK_MIN_SIZE = BLK_BLOCK_SIZE;
export const BLK_MAX_SIZE = 2 ** 40;
/** Default capacity (the lead's `blk-size` default). */
export const BLK_DEFAULT_SIZE = 8 * 2 ** 30;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** Every feature tmem-blk offers (the front-end acks a subset). No RO, no CONFIG_WCE (no writeback toggle), no SIZE_MAX (any segment length is served). */
export const BLK_FEATURES =
  bit(VIRTIO_F_VERSION_1) |
  bit(VIRTIO_RING_F_EVENT_IDX) |
  bit(VIRTIO_RING_F_INDIRECT_DESC) |
  bit(VHOST_USER_F_PROTOCOL_FEATURES) |
  bit(VIRTIO_BLK_F_SEG_MAX) |
  bit(VIRTIO_BLK_F_BLK_SIZE) |
  bit(VIRTIO_BLK_F_FLUSH) |
  bit(VIRTIO_BLK_F_TOPOLOGY) |
  bit(VIRTIO_BLK_F_MQ) |
  bit(VIRTIO_BLK_F_DISCARD) |
  bit(VIRTIO_BLK_F_WRITE_ZEROES);

/** Checks a disk size from the operator: a whole number of blocks within the limits. Returns an error line or null. */
export function checkBlkSize(bytes: number): string | null {
  if (!Number.isSafeInteger(bytes) || bytes < BLK_MIN_SIZE || bytes > BLK_MAX_SIZE) {
    return `blk-size ${bytes} is outside ${BLK_MIN_SIZE}..${BLK_MAX_SIZE} bytes`;
  }
  if (bytes % BLK_BLOCK_SIZE !== 0) return `blk-size ${bytes} is not a multiple of ${BLK_BLOCK_SIZE} bytes`;
  return null;
}

/**
 * struct virtio_blk_config of a disk of `capacityBytes` with `numQueues`
 * queues. blk_size 4096 with physical_block_exp 0 (one page is the logical
 * and the physical block), min_io_size one block, opt_io_size 0 (none);
 * discard granularity one block; write zeroes may unmap (freed pages read
 * as zeros).
 */
export function blkConfigSpace(capacityBytes: number, numQueues: number): Uint8Array {
  const b = new Uint8Array(BLK_CONFIG_SIZE);
  const v = new DataView(b.buffer);
  const sectors = capacityBytes / SECTOR_SIZE;
  v.setUint32(CFG_CAPACITY, sectors % 2 ** 32, true);
  v.setUint32(CFG_CAPACITY + 4, Math.floor(sectors / 2 ** 32), true);
  v.setUint32(CFG_SEG_MAX, BLK_SEG_MAX, true);
  v.setUint32(CFG_BLK_SIZE, BLK_BLOCK_SIZE, true);
  v.setUint8(CFG_PHYSICAL_BLOCK_EXP, 0);
  v.setUint16(CFG_MIN_IO_SIZE, 1, true);
  v.setUint32(CFG_OPT_IO_SIZE, 0, true);
  v.setUint16(CFG_NUM_QUEUES, numQueues, true);
  v.setUint32(CFG_MAX_DISCARD_SECTORS, BLK_MAX_DWZ_SECTORS, true);
  v.setUint32(CFG_MAX_DISCARD_SEG, BLK_MAX_DWZ_SEG, true);
  v.setUint32(CFG_DISCARD_SECTOR_ALIGNMENT, SECTORS_PER_BLOCK, true);
  v.setUint32(CFG_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_DWZ_SECTORS, true);
  v.setUint32(CFG_MAX_WRITE_ZEROES_SEG, BLK_MAX_DWZ_SEG, true);
  v.setUint8(CFG_WRITE_ZEROES_MAY_UNMAP, 1);
  return b;
}
