// The virtio block device's wire constants (VIRTIO 1.2 §5.2,
// include/uapi/linux/virtio_blk.h). Values only; docs/tmem-blk.md says what
// tmem-blk does with each.

/** Virtio device id of a block device (the front-end's vhost-user-blk-pci). */
export const VIRTIO_ID_BLOCK = 2;

/** Sector size of every sector number on the wire, whatever blk_size says. */
export const SECTOR_SIZE = 512;
export const SECTOR_SHIFT = 9;

// Request types (struct virtio_blk_outhdr.type).
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

// Status byte (the last writable byte of every request).
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** struct virtio_blk_outhdr: le32 type, le32 reserved (ioprio), le64 sector. */
export const BLK_HDR_SIZE = 16;
export const BLK_HDR_OFF_TYPE = 0;
export const BLK_HDR_OFF_SECTOR = 8;

/** GET_ID answers with at most this many bytes of serial (VIRTIO_BLK_ID_BYTES). */
export const VIRTIO_BLK_ID_BYTES = 20;

/** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags. */
export const BLK_DWZ_SIZE = 16;
export const BLK_DWZ_OFF_SECTOR = 0;
export const BLK_DWZ_OFF_NUM_SECTORS = 8;
export const BLK_DWZ_OFF_FLAGS = 12;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

// Feature bits.
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;

// struct virtio_blk_config (little endian), byte offsets.
export const CFG_CAPACITY = 0; // le64, in 512-byte sectors
export const CFG_SIZE_MAX = 8; // le32
export const CFG_SEG_MAX = 12; // le32
export const CFG_GEOMETRY = 16; // le16 cylinders, u8 heads, u8 sectors
export const CFG_BLK_SIZE = 20; // le32
export const CFG_PHYSICAL_BLOCK_EXP = 24; // u8
export const CFG_ALIGNMENT_OFFSET = 25; // u8
export const CFG_MIN_IO_SIZE = 26; // le16, in blk_size units
export const CFG_OPT_IO_SIZE = 28; // le32, in blk_size units
export const CFG_WRITEBACK = 32; // u8
export const CFG_NUM_QUEUES = 34; // le16
export const CFG_MAX_DISCARD_SECTORS = 36; // le32
export const CFG_MAX_DISCARD_SEG = 40; // le32
export const CFG_DISCARD_SECTOR_ALIGNMENT = 44; // le32
export const CFG_MAX_WRITE_ZEROES_SECTORS = 48; // le32
export const CFG_MAX_WRITE_ZEROES_SEG = 52; // le32
export const CFG_WRITE_ZEROES_MAY_UNMAP = 56; // u8
/** The config space tmem-blk serves: up to write_zeroes_may_unmap and its padding (secure erase and zoned are not offered). */
export const BLK_CONFIG_SIZE = 60;
