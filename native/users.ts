// User and group names to numeric ids, through the C library's NSS
// (getpwnam/getgrnam), so that names from LDAP or systemd-userdbd resolve as
// `ls -l` would show them. Startup only, main thread only: the results live
// in static storage of libc, read before the next call.
import koffi from 'koffi';
import { c, GROUP_GID_OFFSET, PASSWD_UID_OFFSET } from './libc.js';

const ID_RE = /^\d+$/;
const MAX_ID = 0xfffffffe; // (uid_t)-1 means "unchanged" to chown(2)

function numeric(s: string): number | null {
  if (!ID_RE.test(s)) return null;
  const v = Number(s);
  return Number.isSafeInteger(v) && v <= MAX_ID ? v : null;
}

/** A user name or numeric uid; null if no such user. */
export function lookupUid(nameOrId: string): number | null {
  const n = numeric(nameOrId);
  if (n !== null) return n;
  const p = c.getpwnam(nameOrId) as bigint | null;
  if (!p) return null;
  return koffi.decode(p, PASSWD_UID_OFFSET, 'uint32') as number;
}

/** A group name or numeric gid; null if no such group. */
export function lookupGid(nameOrId: string): number | null {
  const n = numeric(nameOrId);
  if (n !== null) return n;
  const p = c.getgrnam(nameOrId) as bigint | null;
  if (!p) return null;
  return koffi.decode(p, GROUP_GID_OFFSET, 'uint32') as number;
}
