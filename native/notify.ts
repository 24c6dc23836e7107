// AF_UNIX datagram sockets for systemd's notification protocol (sd_notify(3)):
// Node's dgram module speaks only UDP. tmemd sends READY=1/STATUS=/STOPPING=1
// to $NOTIFY_SOCKET with sendDatagram; tests receive them with
// bindDatagram/recvDatagram, which also tell the sender's pid (SCM_CREDENTIALS,
// as systemd checks it against the unit's main pid). Plus getsockname(2) of a
// Unix socket, to tell which path an inherited listening socket is bound to.
import { AF_UNIX, c, CMSGHDR_SIZE, errno, IOVEC_SIZE, lib, MSG_NOSIGNAL, MSGHDR_SIZE, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOCKADDR_UN_SIZE, SOL_SOCKET, SUN_PATH_MAX, UCRED_SIZE } from './libc.js';
import { check, EAGAIN, EINTR, ERRNO, SysError } from './errors.js';
import { closeQuietly } from './fd.js';
import { scratch } from './scratch.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
const sendto = lib.func('intptr_t sendto(int fd, void *buf, size_t len, int flags, void *addr, uint32_t addrlen)') as (...a: any[]) => number;
const setsockopt = lib.func('int setsockopt(int fd, int level, int optname, void *optval, uint32_t optlen)') as (...a: any[]) => number;
const getsockname = lib.func('int getsockname(int fd, void *addr, void *addrlen)') as (...a: any[]) => number;

const SO_PASSCRED = 16;
const SCM_CREDENTIALS = 2;

/**
 * A sockaddr_un's bytes for an address as $NOTIFY_SOCKET writes it: an
 * absolute path, or '@name' for the abstract namespace (sun_path[0] = NUL,
 * no trailing NUL: the length is part of the name). Throws EINVAL for
 * anything else (relative paths, systemd's newer "vsock:" addresses).
 */
export function unixAddress(addr: string): Buffer {
  const abstract = addr.startsWith('@');
  if (!abstract && !addr.startsWith('/')) throw new SysError('sendto', ERRNO.EINVAL!, `'${addr}' is neither an absolute path nor an abstract '@' address`);
  const name = Buffer.from(abstract ? addr.slice(1) : addr, 'utf8');
  // The path form needs its NUL inside sun_path; the abstract form has the leading NUL instead.
  if (name.length + 1 > SUN_PATH_MAX || (!abstract && name.includes(0))) throw new SysError('sendto', ERRNO.EINVAL!, `'${addr}' does not fit a Unix socket address`);
  const out = Buffer.alloc(2 + 1 + name.length);
  out.writeUInt16LE(AF_UNIX, 0);
  if (abstract) {
    out[2] = 0;
    name.copy(out, 3);
    return out;
  }
  name.copy(out, 2);
  return out.subarray(0, 2 + name.length + 1); // path + NUL
}

/** An unbound AF_UNIX datagram socket (CLOEXEC, blocking: a notification is a few bytes and pid 1 reads at once). */
export function datagramSocket(): number {
  return check('socket', c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), errno);
}

/** sendto(2) of one datagram to `addr` (from unixAddress). MSG_NOSIGNAL; errors throw SysError. */
export function sendDatagram(fd: number, addr: Buffer, data: Uint8Array): void {
  if (addr.length > SOCKADDR_UN_SIZE) throw new RangeError('address too long');
  const s = scratch(SOCKADDR_UN_SIZE + data.length);
  s.u8.set(addr, 0);
  s.u8.set(data, SOCKADDR_UN_SIZE);
  for (;;) {
    const n = sendto(fd, s.ptr + BigInt(SOCKADDR_UN_SIZE), data.length, MSG_NOSIGNAL, s.ptr, addr.length);
    if (n >= 0) return;
    const e = errno();
    if (e !== EINTR) throw new SysError('sendto', e, `fd ${fd}`);
  }
}

/**
 * A datagram socket bound to `addr` (path or '@abstract'), NONBLOCK|CLOEXEC,
 * with SO_PASSCRED so each datagram says who sent it (tests: plays systemd's
 * notification socket).
 */
export function bindDatagram(addr: string): number {
  const a = unixAddress(addr);
  const fd = check('socket', c.socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), errno);
  try {
    const s = scratch(SOCKADDR_UN_SIZE);
    s.u8.set(a, 0);
    check('bind', c.bind(fd, s.ptr, a.length), errno, addr);
    s.dv.setInt32(0, 1, true);
    check('setsockopt', setsockopt(fd, SOL_SOCKET, SO_PASSCRED, s.ptr, 4), errno, 'SO_PASSCRED');
  } catch (e) {
    closeQuietly([fd]);
    throw e;
  }
  return fd;
}

/** One datagram from a bindDatagram socket and its sender's pid (-1 if the kernel sent none), or null (EAGAIN). */
export function recvDatagram(fd: number, maxBytes = 4096): { data: Buffer; pid: number } | null {
  const ctlLen = CMSGHDR_SIZE + 16; // CMSG_SPACE(sizeof(struct ucred))
  const iovOff = MSGHDR_SIZE;
  const ctlOff = iovOff + IOVEC_SIZE;
  const dataOff = ctlOff + ctlLen;
  const s = scratch(dataOff + maxBytes);
  const { dv, ptr } = s;
  s.u8.fill(0, 0, dataOff);
  dv.setBigUint64(16, ptr + BigInt(iovOff), true);
  dv.setBigUint64(24, 1n, true);
  dv.setBigUint64(32, ptr + BigInt(ctlOff), true);
  dv.setBigUint64(40, BigInt(ctlLen), true);
  dv.setBigUint64(iovOff, ptr + BigInt(dataOff), true);
  dv.setBigUint64(iovOff + 8, BigInt(maxBytes), true);
  let n: number;
  for (;;) {
    n = c.recvmsg(fd, ptr, 0) as number;
    if (n >= 0) break;
    const e = errno();
    if (e === EAGAIN) return null;
    if (e !== EINTR) throw new SysError('recvmsg', e, `fd ${fd}`);
  }
  let pid = -1;
  const controllen = Number(dv.getBigUint64(40, true));
  if (controllen >= CMSGHDR_SIZE + UCRED_SIZE && dv.getInt32(ctlOff + 8, true) === SOL_SOCKET && dv.getInt32(ctlOff + 12, true) === SCM_CREDENTIALS) {
    pid = dv.getInt32(ctlOff + CMSGHDR_SIZE, true);
  }
  return { data: Buffer.from(s.u8.subarray(dataOff, dataOff + n)), pid };
}

/**
 * The address an AF_UNIX socket is bound to: its path, '@name' for an
 * abstract one, or null when it is unbound (getsockname(2)).
 */
export function boundUnixAddress(fd: number): string | null {
  const s = scratch(SOCKADDR_UN_SIZE + 4);
  s.u8.fill(0, 0, SOCKADDR_UN_SIZE);
  s.dv.setUint32(SOCKADDR_UN_SIZE, SOCKADDR_UN_SIZE, true);
  check('getsockname', getsockname(fd, s.ptr, s.ptr + BigInt(SOCKADDR_UN_SIZE)), errno, `fd ${fd}`);
  const len = Math.min(s.dv.getUint32(SOCKADDR_UN_SIZE, true), SOCKADDR_UN_SIZE);
  if (s.dv.getUint16(0, true) !== AF_UNIX) throw new SysError('getsockname', ERRNO.EINVAL!, `fd ${fd} is not an AF_UNIX socket`);
  if (len <= 2) return null;
  const path = s.u8.subarray(2, len);
  if (path[0] === 0) return '@' + Buffer.from(path.subarray(1)).toString('utf8');
  const nul = path.indexOf(0);
  return Buffer.from(nul < 0 ? path : path.subarray(0, nul)).toString('utf8');
}
