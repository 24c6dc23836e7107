// The vhost-user wire format (QEMU docs/interop/vhost-user.rst): request
// numbers, header layout, feature bits and payload codecs. Names follow the
// spec's message names. Nothing here knows about a device or a socket.
import type { MemoryRegion, VringAddr } from './device.js';

/** Front-end requests (the subset this engine knows by name; others are logged by number). */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;
export type VhostUserRequestCode = (typeof VhostUserRequest)[keyof typeof VhostUserRequest];

const REQUEST_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(VhostUserRequest).map(([k, v]) => [v, k]));

/** "SET_MEM_TABLE (5)" or "request 99" for numbers the spec does not name. */
export function requestName(req: number): string {
  const n = REQUEST_NAMES[req];
  return n ? `${n} (${req})` : `request ${req}`;
}

// ---- header ----
/** Bytes of the header: request u32, flags u32, size u32 (little-endian). */
export const VHOST_USER_HDR_SIZE = 12;
/** Header flags: bits 0-1 the version (1), bit 2 REPLY, bit 3 NEED_REPLY. */
export const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_VERSION = 0x1;
export const VHOST_USER_REPLY_MASK = 0x4;
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** Flags of every reply the back-end sends: version 1 | REPLY (QEMU checks for exactly 0x5). */
export const VHOST_USER_REPLY_FLAGS = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
/** Largest payload this engine accepts: SET_MEM_TABLE with 8 regions is 8 + 8 * 32 = 264 bytes; GET/SET_CONFIG may carry up to 256 + 12. */
export const VHOST_USER_MAX_PAYLOAD = 4096;
/** Most fds one message may carry (SET_MEM_TABLE: one per region). */
export const VHOST_USER_MAX_FDS = 8;

// ---- virtio / vhost-user feature bits (bit numbers) ----
/** Transport features every device may offer (virtio 1.x 6). */
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;

// ---- protocol feature bits (bit numbers) ----
export const VhostUserProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** 1 << bit as a bigint. */
export const bit = (n: number): bigint => 1n << BigInt(n);

// ---- payloads ----
/** Regions of a SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const VHOST_MEMORY_BASELINE_NREGIONS = 8;
/** struct VhostUserMemoryRegion: guest_phys_addr, memory_size, userspace_addr, mmap_offset (u64 each). */
export const VHOST_USER_MEM_REGION_SIZE = 32;
/** struct VhostUserMemory: nregions u32, padding u32, regions[]. */
export const VHOST_USER_MEMORY_HDR_SIZE = 8;
/** struct VhostUserConfig header: offset u32, size u32, flags u32; then the bytes (at most 256). */
export const VHOST_USER_CONFIG_HDR_SIZE = 12;
export const VHOST_USER_MAX_CONFIG_SIZE = 256;
/** struct vhost_vring_state: index u32, num u32. */
export const VHOST_USER_VRING_STATE_SIZE = 8;
/** struct vhost_vring_addr: index u32, flags u32, desc, used, avail, log (u64 each). */
export const VHOST_USER_VRING_ADDR_SIZE = 40;
export const VHOST_USER_U64_SIZE = 8;
/** SET_VRING_KICK/CALL/ERR u64: bits 0-7 the queue index, bit 8 "no fd" (polling / no notification). */
export const VHOST_USER_VRING_IDX_MASK = 0xffn;
export const VHOST_USER_VRING_NOFD_MASK = 0x100n;

export interface VhostUserHeader {
  readonly request: number;
  readonly flags: number;
  readonly size: number;
}

/** A whole message as received: header, payload bytes, and the fds that came with it. */
export interface VhostUserMsg extends VhostUserHeader {
  readonly payload: Buffer;
  readonly fds: number[];
}

/** A region as the wire carries it: the record of device.ts without its fd (which travels as SCM_RIGHTS). */
export type MemoryRegionDesc = Omit<MemoryRegion, 'fd'>;

export interface VringState {
  readonly index: number;
  readonly num: number;
}

/** struct vhost_vring_addr: the VringAddr record of device.ts plus the queue index, flags and log address. */
export interface VringAddrMsg extends VringAddr {
  readonly index: number;
  readonly flags: number;
  readonly logGuest: bigint;
}

/** struct VhostUserConfig (GET_CONFIG/SET_CONFIG). */
export interface ConfigMsg {
  readonly offset: number;
  readonly size: number;
  readonly flags: number;
  readonly data: Buffer;
}

export interface VringFile {
  readonly index: number;
  /** true when bit 8 is set: no fd accompanies the message */
  readonly noFd: boolean;
}

export function decodeHeader(b: Buffer): VhostUserHeader {
  return { request: b.readUInt32LE(0), flags: b.readUInt32LE(4), size: b.readUInt32LE(8) };
}

export function encodeHeader(h: VhostUserHeader): Buffer {
  const b = Buffer.alloc(VHOST_USER_HDR_SIZE);
  b.writeUInt32LE(h.request >>> 0, 0);
  b.writeUInt32LE(h.flags >>> 0, 4);
  b.writeUInt32LE(h.size >>> 0, 8);
  return b;
}

/** A whole message (header + payload) ready for sendmsg. */
export function encodeMsg(request: number, flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeHeader({ request, flags, size: payload.length }), payload]);
}

export function encodeU64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
}

export function decodeU64(p: Buffer): bigint {
  return p.readBigUInt64LE(0);
}

export function encodeVringState(s: VringState): Buffer {
  const b = Buffer.alloc(VHOST_USER_VRING_STATE_SIZE);
  b.writeUInt32LE(s.index >>> 0, 0);
  b.writeUInt32LE(s.num >>> 0, 4);
  return b;
}

export function decodeVringState(p: Buffer): VringState {
  return { index: p.readUInt32LE(0), num: p.readUInt32LE(4) };
}

export function encodeVringAddr(a: VringAddrMsg): Buffer {
  const b = Buffer.alloc(VHOST_USER_VRING_ADDR_SIZE);
  b.writeUInt32LE(a.index >>> 0, 0);
  b.writeUInt32LE(a.flags >>> 0, 4);
  b.writeBigUInt64LE(a.descUser, 8);
  b.writeBigUInt64LE(a.usedUser, 16);
  b.writeBigUInt64LE(a.availUser, 24);
  b.writeBigUInt64LE(a.logGuest, 32);
  return b;
}

export function decodeVringAddr(p: Buffer): VringAddrMsg {
  return {
    index: p.readUInt32LE(0),
    flags: p.readUInt32LE(4),
    descUser: p.readBigUInt64LE(8),
    usedUser: p.readBigUInt64LE(16),
    availUser: p.readBigUInt64LE(24),
    logGuest: p.readBigUInt64LE(32),
  };
}

export function encodeVringFile(index: number, noFd: boolean): Buffer {
  return encodeU64(BigInt(index & 0xff) | (noFd ? VHOST_USER_VRING_NOFD_MASK : 0n));
}

export function decodeVringFile(p: Buffer): VringFile {
  const v = decodeU64(p);
  return { index: Number(v & VHOST_USER_VRING_IDX_MASK), noFd: (v & VHOST_USER_VRING_NOFD_MASK) !== 0n };
}

/** The payload size a SET_MEM_TABLE of n regions must have. */
export function memTableSize(nregions: number): number {
  return VHOST_USER_MEMORY_HDR_SIZE + nregions * VHOST_USER_MEM_REGION_SIZE;
}

export function encodeMemTable(regions: readonly MemoryRegionDesc[]): Buffer {
  const b = Buffer.alloc(memTableSize(regions.length));
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => {
    const o = VHOST_USER_MEMORY_HDR_SIZE + i * VHOST_USER_MEM_REGION_SIZE;
    b.writeBigUInt64LE(r.guestPhysAddr, o);
    b.writeBigUInt64LE(r.size, o + 8);
    b.writeBigUInt64LE(r.userspaceAddr, o + 16);
    b.writeBigUInt64LE(r.mmapOffset, o + 24);
  });
  return b;
}

/** nregions from the first word (the caller checks it against the payload size). */
export function memTableRegionCount(p: Buffer): number {
  return p.readUInt32LE(0);
}

export function decodeMemTable(p: Buffer): MemoryRegionDesc[] {
  const n = memTableRegionCount(p);
  const out: MemoryRegionDesc[] = [];
  for (let i = 0; i < n; i++) {
    const o = VHOST_USER_MEMORY_HDR_SIZE + i * VHOST_USER_MEM_REGION_SIZE;
    out.push({
      guestPhysAddr: p.readBigUInt64LE(o),
      size: p.readBigUInt64LE(o + 8),
      userspaceAddr: p.readBigUInt64LE(o + 16),
      mmapOffset: p.readBigUInt64LE(o + 24),
    });
  }
  return out;
}

/** Human-readable list of the set bits of a feature word, for debug logs. */
export function bitsOf(v: bigint): number[] {
  const out: number[] = [];
  for (let i = 0; i < 64; i++) if ((v >> BigInt(i)) & 1n) out.push(i);
  return out;
}

/** GET_CONFIG/SET_CONFIG payload: the 12-byte header, then `size` bytes (the caller checks the sizes). */
export function decodeConfig(p: Buffer): ConfigMsg {
  const size = p.readUInt32LE(4);
  return { offset: p.readUInt32LE(0), size, flags: p.readUInt32LE(8), data: p.subarray(VHOST_USER_CONFIG_HDR_SIZE, VHOST_USER_CONFIG_HDR_SIZE + size) };
}

export function encodeConfig(offset: number, flags: number, data: Uint8Array): Buffer {
  const b = Buffer.alloc(VHOST_USER_CONFIG_HDR_SIZE + data.length);
  b.writeUInt32LE(offset >>> 0, 0);
  b.writeUInt32LE(data.length >>> 0, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.set(data, VHOST_USER_CONFIG_HDR_SIZE);
  return b;
}
