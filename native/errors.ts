// errno → SysError. Every native/ wrapper throws this on failure, so callers
// can test `e.code === 'EAGAIN'` the way they would a Node fs error.
import koffi from 'koffi';

const names = new Map<number, string>();
for (const [name, value] of Object.entries(koffi.os.errno)) {
  // Aliases (EWOULDBLOCK = EAGAIN, EDEADLOCK = EDEADLK): keep the first, usual name.
  if (!names.has(value)) names.set(value, name);
}
// koffi lists EAGAIN after EWOULDBLOCK on some builds; prefer the name code checks use.
names.set(koffi.os.errno.EAGAIN!, 'EAGAIN');

/** Numeric errno values callers compare against. */
export const ERRNO = koffi.os.errno as Readonly<Record<string, number>>;
export const EAGAIN = ERRNO.EAGAIN!;
export const EINTR = ERRNO.EINTR!;

export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}

export class SysError extends Error {
  readonly errno: number;
  /** The errno's symbolic name, e.g. 'EAGAIN'. */
  readonly code: string;
  readonly syscall: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` (${detail})` : ''}: ${code}: ${describe(errno)}`);
    this.name = 'SysError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

// strerror() text for the usual codes, without another FFI call (strerror is not
// thread-safe anyway). Unknown codes fall back to the name.
const TEXT: Record<string, string> = {
  EPERM: 'operation not permitted',
  ENOENT: 'no such file or directory',
  EINTR: 'interrupted system call',
  EIO: 'input/output error',
  EBADF: 'bad file descriptor',
  EAGAIN: 'resource temporarily unavailable',
  ENOMEM: 'cannot allocate memory',
  EACCES: 'permission denied',
  EFAULT: 'bad address',
  EEXIST: 'file exists',
  ENOTDIR: 'not a directory',
  EINVAL: 'invalid argument',
  ENFILE: 'too many open files in system',
  EMFILE: 'too many open files',
  ENOSPC: 'no space left on device',
  EPIPE: 'broken pipe',
  ENAMETOOLONG: 'file name too long',
  ENOTSOCK: 'socket operation on non-socket',
  EMSGSIZE: 'message too long',
  EPROTOTYPE: 'protocol wrong type for socket',
  EOPNOTSUPP: 'operation not supported',
  EADDRINUSE: 'address already in use',
  ECONNABORTED: 'software caused connection abort',
  ECONNRESET: 'connection reset by peer',
  ENOBUFS: 'no buffer space available',
  ENOTCONN: 'transport endpoint is not connected',
  ECONNREFUSED: 'connection refused',
  ENODEV: 'no such device',
  EOVERFLOW: 'value too large for defined data type',
};

function describe(errno: number): string {
  return TEXT[errnoName(errno)] ?? 'system error';
}

/** Throws SysError(errno) when a call returned -1 (or any negative). Returns the result otherwise. */
export function check(syscall: string, ret: number, errno: () => number, detail?: string): number {
  if (ret < 0) throw new SysError(syscall, errno(), detail);
  return ret;
}
