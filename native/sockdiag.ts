// Is a process listening on this AF_UNIX socket path? Asked of the kernel
// without connecting (a connect would be accepted by the listener: for tmemd
// that is a guest connection, and a QEMU arriving at that moment is refused
// as a second guest). NETLINK_SOCK_DIAG (what `ss -xl` uses) dumps the
// listening AF_UNIX sockets with the device and inode of the file each is
// bound to (UNIX_DIAG_VFS); the path's lstat identity is compared with them,
// so a path bound under another name (relative, or renamed since) is found
// too. Sockets are seen in this process's network namespace only, as with
// /proc/net/unix: a listener in another namespace sharing the file system
// is not seen.
import { lstatSync } from 'node:fs';
import {
  AF_NETLINK,
  AF_UNIX,
  c,
  errno,
  NETLINK_SOCK_DIAG,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSGHDR_SIZE,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_DIAG_BY_FAMILY,
  TCP_LISTEN,
  UDIAG_SHOW_VFS,
  UNIX_DIAG_MSG_SIZE,
  UNIX_DIAG_REQ_SIZE,
  UNIX_DIAG_VFS,
} from './libc.js';
import { check, EINTR, SysError } from './errors.js';
import { closeQuietly } from './fd.js';
import { scratch } from './scratch.js';

const RECV_BYTES = 32 * 1024;

/** The kernel's dev_t (MAJOR << 20 | MINOR) in the encoding stat(2) returns (new_encode_dev). */
export function kernelDevToUser(kdev: number): number {
  const major = kdev >>> 20;
  const minor = kdev & 0xfffff;
  return (minor & 0xff) | (major << 8) | ((minor & ~0xff) * 0x1000);
}

/** dev/ino (ino truncated to 32 bits, as unix_diag_vfs has it) of every listening AF_UNIX socket bound to a file. */
export function listeningUnixFiles(): { dev: number; ino: number }[] {
  const fd = check('socket', c.socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG), errno, 'NETLINK_SOCK_DIAG');
  try {
    const s = scratch(NLMSGHDR_SIZE + UNIX_DIAG_REQ_SIZE + RECV_BYTES);
    const { dv, ptr } = s;
    const reqLen = NLMSGHDR_SIZE + UNIX_DIAG_REQ_SIZE;
    s.u8.fill(0, 0, reqLen);
    dv.setUint32(0, reqLen, true);
    dv.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
    dv.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
    dv.setUint32(8, 1, true); // seq
    dv.setUint8(NLMSGHDR_SIZE, AF_UNIX);
    dv.setUint32(NLMSGHDR_SIZE + 4, 1 << TCP_LISTEN, true); // udiag_states
    dv.setUint32(NLMSGHDR_SIZE + 12, UDIAG_SHOW_VFS, true); // udiag_show
    for (;;) {
      const n = c.send(fd, ptr, reqLen, 0) as number;
      if (n >= 0) break;
      const e = errno();
      if (e !== EINTR) throw new SysError('send', e, 'NETLINK_SOCK_DIAG request');
    }
    const out: { dev: number; ino: number }[] = [];
    const buf = ptr + BigInt(reqLen);
    const base = reqLen;
    for (;;) {
      const n = c.recv(fd, buf, RECV_BYTES, 0) as number;
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        throw new SysError('recv', e, 'NETLINK_SOCK_DIAG reply');
      }
      if (n === 0) throw new SysError('recv', 0, 'NETLINK_SOCK_DIAG: the dump ended without NLMSG_DONE');
      let off = 0;
      while (off + NLMSGHDR_SIZE <= n) {
        const len = dv.getUint32(base + off, true);
        const type = dv.getUint16(base + off + 4, true);
        if (len < NLMSGHDR_SIZE || off + len > n) throw new SysError('recv', 0, 'NETLINK_SOCK_DIAG: malformed reply');
        if (type === NLMSG_DONE) return out;
        if (type === NLMSG_ERROR) {
          const err = -dv.getInt32(base + off + NLMSGHDR_SIZE, true);
          throw new SysError('sock_diag', err, 'AF_UNIX socket dump (is unix_diag available?)');
        }
        if (type === SOCK_DIAG_BY_FAMILY && len >= NLMSGHDR_SIZE + UNIX_DIAG_MSG_SIZE) {
          let a = off + NLMSGHDR_SIZE + UNIX_DIAG_MSG_SIZE;
          while (a + 4 <= off + len) {
            const alen = dv.getUint16(base + a, true);
            const atype = dv.getUint16(base + a + 2, true);
            if (alen < 4 || a + alen > off + len) break;
            if (atype === UNIX_DIAG_VFS && alen >= 12) {
              const ino = dv.getUint32(base + a + 4, true);
              const kdev = dv.getUint32(base + a + 8, true);
              out.push({ dev: kernelDevToUser(kdev), ino });
            }
            a += (alen + 3) & ~3;
          }
        }
        off += (len + 3) & ~3;
      }
    }
  } finally {
    closeQuietly([fd]);
  }
}

/**
 * Whether some process in this network namespace listens on the socket file
 * at `path` (false if the path is missing or not a socket). Never connects.
 * Throws SysError if the kernel cannot be asked.
 */
export function unixPathHasListener(path: string): boolean {
  let st;
  try {
    st = lstatSync(path, { bigint: true });
  } catch {
    return false;
  }
  if (!st.isSocket()) return false;
  const ino = Number(st.ino & 0xffffffffn);
  const dev = Number(st.dev);
  return listeningUnixFiles().some((l) => l.ino === ino && l.dev === dev);
}
