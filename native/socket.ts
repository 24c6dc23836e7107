// AF_UNIX stream sockets with SCM_RIGHTS, which Node's net module cannot do:
// vhost-user passes guest RAM memfds and ring eventfds this way.
//
// msghdr/iovec/cmsghdr are built by hand in the per-thread scratch region
// (x86_64 layouts in libc.ts). Payload bytes are copied between the caller's
// buffer and scratch: vhost-user messages are at most a few KiB, so the copy
// costs less than pinning JS memory would take to reason about.
import {
  AF_UNIX,
  c,
  CMSGHDR_SIZE,
  errno,
  IOVEC_SIZE,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_NOSIGNAL,
  MSGHDR_SIZE,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SO_ACCEPTCONN,
  SO_DOMAIN,
  SO_TYPE,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SO_PEERCRED,
  SOCKADDR_UN_SIZE,
  SOL_SOCKET,
  SUN_PATH_MAX,
  UCRED_SIZE,
} from './libc.js';
import { chmodSync, lchownSync, unlinkSync } from 'node:fs';
import { check, EAGAIN, EINTR, ERRNO, SysError } from './errors.js';
import { closeQuietly, setNonblockCloexec } from './fd.js';
import { scratch, type Scratch } from './scratch.js';

const align8 = (n: number): number => (n + 7) & ~7;
/** CMSG_SPACE(n * sizeof(int)). */
const cmsgSpace = (nfds: number): number => CMSGHDR_SIZE + align8(nfds * 4);
const ECONNABORTED = ERRNO.ECONNABORTED!;

/** Writes a sockaddr_un for `path` at offset 0 of scratch; returns its length. */
function sockaddrUn(s: Scratch, path: string, syscall: string): number {
  const bytes = Buffer.from(path, 'utf8');
  // The kernel accepts exactly 108 bytes without a NUL, but other tools do not; require the NUL.
  if (bytes.length === 0 || bytes.length >= SUN_PATH_MAX || bytes.includes(0)) {
    throw new SysError(syscall, ERRNO.ENAMETOOLONG!, `socket path must be 1..${SUN_PATH_MAX - 1} bytes without NUL: ${JSON.stringify(path)}`);
  }
  s.u8.fill(0, 0, SOCKADDR_UN_SIZE);
  s.dv.setUint16(0, AF_UNIX, true);
  s.u8.set(bytes, 2);
  return 2 + bytes.length + 1;
}

/** Who may connect to a socket path listenUnix creates. */
export interface SocketAccess {
  /** Permission bits (e.g. 0o600, 0o660); undefined: what the umask leaves of 0777 (the old behaviour). */
  readonly mode?: number;
  /** Owner and group (numeric; -1 or undefined: the daemon's). */
  readonly uid?: number;
  readonly gid?: number;
}

/**
 * A listening AF_UNIX stream socket bound to `path` (NONBLOCK, CLOEXEC). Does
 * not unlink an existing path.
 *
 * With `access`, the path never exists with more permission than asked, and
 * nobody can connect before owner and mode are final:
 * - Before bind, fchmod(2) on the socket: Linux's unix_bind creates the file
 *   with the socket inode's mode minus the umask (net/unix/af_unix.c), so
 *   the file appears with at most `mode` whatever the umask is. This is per
 *   socket, so unlike umask(2) (process-wide, racing the worker thread and
 *   libuv's threadpool) it is thread-safe, and unlike binding in a private
 *   directory and renaming, `ss -xl` and /proc/net/unix show the real path.
 * - After bind and before listen (until listen, connect is refused):
 *   lchown to uid/gid, then chmod to `mode` exactly (giving back bits the
 *   umask took; chmod after chown, which may clear set-id bits).
 * The path's folder must be writable only by the daemon's user (as /run is):
 * whoever can write there could replace the socket anyway.
 */
export function listenUnix(path: string, backlog = 128, access?: SocketAccess): number {
  const mode = access?.mode;
  if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode > 0o777)) throw new RangeError(`socket mode must be 0..0o777, not ${mode}`);
  const fd = check('socket', c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), errno);
  let bound = false;
  try {
    if (mode !== undefined) check('fchmod', c.fchmod(fd, mode), errno, `socket for ${path}`);
    const s = scratch(SOCKADDR_UN_SIZE);
    const len = sockaddrUn(s, path, 'bind');
    check('bind', c.bind(fd, s.ptr, len), errno, path);
    bound = true;
    const uid = access?.uid ?? -1;
    const gid = access?.gid ?? -1;
    if (uid !== -1 || gid !== -1) lchownSync(path, uid, gid);
    if (mode !== undefined) chmodSync(path, mode);
    check('listen', c.listen(fd, backlog), errno, path);
  } catch (e) {
    closeQuietly([fd]);
    if (bound) {
      try {
        unlinkSync(path);
      } catch {
        /* gone already */
      }
    }
    throw e;
  }
  return fd;
}

/** The credentials of a connected AF_UNIX socket's peer (SO_PEERCRED: as of its connect). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const s = scratch(UCRED_SIZE + 4);
  s.u8.fill(0, 0, UCRED_SIZE);
  s.dv.setUint32(UCRED_SIZE, UCRED_SIZE, true);
  check('getsockopt', c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, s.ptr, s.ptr + BigInt(UCRED_SIZE)), errno, `SO_PEERCRED on fd ${fd}`);
  return { pid: s.dv.getInt32(0, true), uid: s.dv.getUint32(4, true), gid: s.dv.getUint32(8, true) };
}

/** A connected AF_UNIX stream socket (blocking, CLOEXEC): the client side, for tests. */
export function connectUnix(path: string): number {
  const fd = check('socket', c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), errno);
  try {
    const s = scratch(SOCKADDR_UN_SIZE);
    const len = sockaddrUn(s, path, 'connect');
    check('connect', c.connect(fd, s.ptr, len), errno, path);
  } catch (e) {
    closeQuietly([fd]);
    throw e;
  }
  return fd;
}

/** A connected pair of AF_UNIX stream sockets (CLOEXEC; NONBLOCK when asked), for tests and in-process links. */
export function socketPair(nonblocking = false): [number, number] {
  const s = scratch(8);
  const type = SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  check('socketpair', c.socketpair(AF_UNIX, type, 0, s.ptr), errno);
  return [s.dv.getInt32(0, true), s.dv.getInt32(4, true)];
}

/**
 * One pending connection (NONBLOCK, CLOEXEC), or null when none is waiting.
 * A connection that was aborted before we took it (ECONNABORTED) is skipped.
 */
export function acceptConnection(listenFd: number): number | null {
  for (;;) {
    const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
    if (fd >= 0) return fd;
    const e = errno();
    if (e === EAGAIN) return null;
    if (e === EINTR || e === ECONNABORTED) continue;
    throw new SysError('accept4', e, `listening fd ${listenFd}`);
  }
}

function getsockoptInt(fd: number, opt: number, name: string): number {
  const s = scratch(8);
  s.dv.setInt32(0, 0, true);
  s.dv.setUint32(4, 4, true);
  check('getsockopt', c.getsockopt(fd, SOL_SOCKET, opt, s.ptr, s.ptr + 4n), errno, `${name} on fd ${fd}`);
  return s.dv.getInt32(0, true);
}

/**
 * For a listening socket handed to us (inherited fd): throws unless it is a
 * listening AF_UNIX stream socket, then makes it NONBLOCK and CLOEXEC, which
 * acceptConnection and the fd watcher rely on.
 */
export function checkListeningUnixSocket(fd: number): void {
  const domain = getsockoptInt(fd, SO_DOMAIN, 'SO_DOMAIN');
  if (domain !== AF_UNIX) throw new SysError('getsockopt', ERRNO.EINVAL!, `fd ${fd} is not an AF_UNIX socket (domain ${domain})`);
  const type = getsockoptInt(fd, SO_TYPE, 'SO_TYPE');
  if (type !== SOCK_STREAM) throw new SysError('getsockopt', ERRNO.EINVAL!, `fd ${fd} is not a stream socket (type ${type})`);
  if (getsockoptInt(fd, SO_ACCEPTCONN, 'SO_ACCEPTCONN') !== 1) throw new SysError('getsockopt', ERRNO.EINVAL!, `fd ${fd} is not listening`);
  setNonblockCloexec(fd);
}

/** Where the control bytes start in msgScratch's layout: msghdr, one iovec, control, data. */
const CTL_OFF = MSGHDR_SIZE + IOVEC_SIZE;

/**
 * A zeroed msghdr at offset 0 of scratch for recvmsg/sendmsg: one iovec
 * naming `dataLen` bytes at CTL_OFF + ctlLen, and `ctlLen` control bytes at
 * CTL_OFF (none when 0).
 */
function msgScratch(ctlLen: number, dataLen: number): Scratch {
  const dataOff = CTL_OFF + ctlLen;
  const s = scratch(dataOff + dataLen);
  const { dv, ptr } = s;
  s.u8.fill(0, 0, dataOff);
  dv.setBigUint64(16, ptr + BigInt(MSGHDR_SIZE), true); // msg_iov
  dv.setBigUint64(24, 1n, true); // msg_iovlen
  if (ctlLen > 0) {
    dv.setBigUint64(32, ptr + BigInt(CTL_OFF), true); // msg_control
    dv.setBigUint64(40, BigInt(ctlLen), true); // msg_controllen
  }
  dv.setBigUint64(MSGHDR_SIZE, ptr + BigInt(dataOff), true); // iov_base
  dv.setBigUint64(MSGHDR_SIZE + 8, BigInt(dataLen), true); // iov_len
  return s;
}

/**
 * recvmsg(2) into `buf`: the byte count (0 = EOF), or null when nothing is
 * available (EAGAIN; only on a non-blocking socket). Fds that arrive with the
 * bytes (SCM_RIGHTS, any number of cmsgs) are CLOEXEC and appended to
 * `fdsOut`; the caller owns them. If the sender passed more than `maxFds`
 * (MSG_CTRUNC) the fds that did arrive are closed and a SysError EMSGSIZE is
 * thrown: the stream can no longer be trusted.
 */
export function recvMsg(fd: number, buf: Uint8Array, fdsOut: number[], maxFds = 32): number | null {
  if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > SCM_MAX_FD) throw new RangeError(`maxFds must be 0..${SCM_MAX_FD}, not ${maxFds}`);
  const ctlLen = maxFds > 0 ? cmsgSpace(maxFds) : 0;
  const dataOff = CTL_OFF + ctlLen;
  const s = msgScratch(ctlLen, buf.length);
  const { dv, ptr } = s;

  let n: number;
  for (;;) {
    n = c.recvmsg(fd, ptr, MSG_CMSG_CLOEXEC) as number;
    if (n >= 0) break;
    const e = errno();
    if (e === EAGAIN) return null;
    if (e !== EINTR) throw new SysError('recvmsg', e, `fd ${fd}`);
  }

  // Collect every SCM_RIGHTS fd first, so none is lost whatever happens next.
  const got: number[] = [];
  const controllen = Number(dv.getBigUint64(40, true));
  let off = 0;
  while (off + CMSGHDR_SIZE <= controllen) {
    const len = Number(dv.getBigUint64(CTL_OFF + off, true));
    if (len < CMSGHDR_SIZE || off + len > controllen) break;
    const level = dv.getInt32(CTL_OFF + off + 8, true);
    const type = dv.getInt32(CTL_OFF + off + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let i = CMSGHDR_SIZE; i + 4 <= len; i += 4) got.push(dv.getInt32(CTL_OFF + off + i, true));
    }
    off += align8(len);
  }
  const flags = dv.getInt32(48, true);
  if (flags & MSG_CTRUNC) {
    closeQuietly(got);
    throw new SysError('recvmsg', ERRNO.EMSGSIZE!, `fd ${fd}: ancillary data truncated (MSG_CTRUNC): the peer sent more than ${maxFds} fds; closed the ${got.length} that arrived`);
  }
  buf.set(s.u8.subarray(dataOff, dataOff + n));
  for (const f of got) fdsOut.push(f);
  return n;
}

/**
 * sendmsg(2) of `buf` with `fds` attached (SCM_RIGHTS; they stay open and
 * owned by the caller). Returns the bytes sent, which on a stream socket may
 * be fewer than buf.length; the fds go with the first byte. MSG_NOSIGNAL: a
 * vanished peer is an EPIPE SysError, never a SIGPIPE that kills the daemon.
 * EAGAIN (non-blocking socket, buffer full) is thrown like any error.
 */
export function sendMsg(fd: number, buf: Uint8Array, fds?: readonly number[]): number {
  const nfds = fds?.length ?? 0;
  if (nfds > SCM_MAX_FD) throw new RangeError(`at most ${SCM_MAX_FD} fds per message, not ${nfds}`);
  if (nfds > 0 && buf.length === 0) throw new RangeError('fds need at least one byte to travel with');
  const ctlLen = nfds > 0 ? cmsgSpace(nfds) : 0;
  const dataOff = CTL_OFF + ctlLen;
  const s = msgScratch(ctlLen, buf.length);
  const { dv, ptr } = s;
  if (nfds > 0) {
    dv.setBigUint64(CTL_OFF, BigInt(CMSGHDR_SIZE + nfds * 4), true); // CMSG_LEN
    dv.setInt32(CTL_OFF + 8, SOL_SOCKET, true);
    dv.setInt32(CTL_OFF + 12, SCM_RIGHTS, true);
    for (let i = 0; i < nfds; i++) dv.setInt32(CTL_OFF + CMSGHDR_SIZE + 4 * i, fds![i]!, true);
  }
  s.u8.set(buf, dataOff);
  for (;;) {
    const n = c.sendmsg(fd, ptr, MSG_NOSIGNAL) as number;
    if (n >= 0) return n;
    const e = errno();
    if (e !== EINTR) throw new SysError('sendmsg', e, `fd ${fd}`);
  }
}
