// Shared mappings of guest RAM (memfds from QEMU), exposed as zero-copy
// Uint8Array windows. Node 20 caps one typed array at 4 GiB; windows of at
// most 1 GiB, consecutive and non-overlapping, keep every view well inside
// that and let callers index a window with plain numbers.
//
// A window's Uint8Array is made on first use, not at mmap time: V8 counts
// every byte of an external ArrayBuffer as external memory and runs a full
// GC for each ~64 MiB of it ("external memory pressure"), measured at 5 ms
// per 1 GiB window: 1.3 s for 256 GiB of sparse guest RAM, in the worker
// every guest shares. mmap(2) itself takes microseconds for any size.
//
// Only files that cannot vanish under the mapping may be mapped: a range past
// EOF, or a file someone truncates later, raises SIGBUS on touch, which
// kills the process. mmapShared refuses anything but tmpfs/shmem (memfd) and
// hugetlbfs files and ranges past EOF; inspectGuestRamFd tells the caller
// whether the file is sealed against shrinking (F_SEAL_SHRINK, what QEMU's
// memory-backend-memfd sets), which is the caller's policy to require.
import koffi from 'koffi';
import {
  c,
  errno,
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  HUGETLBFS_MAGIC,
  MAP_FAILED,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  PROT_READ,
  PROT_WRITE,
  STATFS_SIZE,
  TMPFS_MAGIC,
} from './libc.js';
import { check, ERRNO, SysError } from './errors.js';
import { closeQuietly, fstat, S_IFMT, S_IFREG } from './fd.js';
import { scratch } from './scratch.js';

export const WINDOW_BYTES = 1n << 30n;

export interface MappingWindow {
  /** Offset of bytes[0] from the start of the mapping. */
  readonly offset: bigint;
  /** bytes.length, known without making the view. */
  readonly length: number;
  /** The zero-copy view, made on first access (throws EINVAL once the mapping is unmapped). */
  readonly bytes: Uint8Array;
}

export interface Mapping {
  readonly addr: bigint;
  readonly length: bigint;
  /** Consecutive windows covering [0, length), each at most WINDOW_BYTES. */
  readonly windows: readonly MappingWindow[];
}

// Mappings not yet unmapped: munmap of the same range twice could remove a
// later, unrelated mapping that the kernel placed at the same address.
const live = new WeakSet<Mapping>();

/** What the file behind a guest RAM fd is (inspectGuestRamFd). */
export interface GuestRamFile {
  /** tmpfs covers shmem, so memfds; hugetlbfs covers memfds made with MFD_HUGETLB. */
  readonly fs: 'tmpfs' | 'hugetlbfs';
  /** F_GET_SEALS (0 when the file system has no seals). */
  readonly seals: number;
  /** Sealed against shrinking: nobody can truncate it under a mapping. */
  readonly noShrink: boolean;
  readonly size: bigint;
}

/**
 * The file system, seals and size of an fd a front-end handed over as guest
 * RAM. Throws SysError EINVAL when it is not a regular file on tmpfs (memfd,
 * /dev/shm) or hugetlbfs: a file on a disk file system can be truncated
 * under us too, and its pages are written back to disk.
 */
export function inspectGuestRamFd(fd: number): GuestRamFile {
  let st: ReturnType<typeof fstat>;
  try {
    st = fstat(fd);
  } catch (e) {
    throw new SysError('fstat', (e as SysError).errno, `guest RAM fd ${fd}`);
  }
  if ((st.mode & S_IFMT) !== S_IFREG) throw new SysError('mmap', ERRNO.EINVAL!, `fd ${fd} is not a regular file (a memfd, or a file on tmpfs or hugetlbfs)`);
  const s = scratch(STATFS_SIZE);
  check('fstatfs', c.fstatfs(fd, s.ptr), errno, `fd ${fd}`);
  const magic = Number(s.dv.getBigUint64(0, true) & 0xffffffffn);
  const fs = magic === TMPFS_MAGIC ? 'tmpfs' : magic === HUGETLBFS_MAGIC ? 'hugetlbfs' : null;
  if (fs === null) {
    throw new SysError('mmap', ERRNO.EINVAL!, `fd ${fd} is a file on a file system of type 0x${magic.toString(16)}, not a memfd or a file on tmpfs or hugetlbfs`);
  }
  const r = c.fcntl(fd, F_GET_SEALS, 0) as number;
  const seals = r < 0 ? 0 : r;
  return { fs, seals, noShrink: (seals & F_SEAL_SHRINK) !== 0, size: st.size };
}

/** One window: its Uint8Array is made on first use (see the top of this file). */
class LazyWindow implements MappingWindow {
  private view: Uint8Array | null = null;
  constructor(
    private readonly m: Mapping,
    readonly offset: bigint,
    readonly length: number,
  ) {}

  get bytes(): Uint8Array {
    if (this.view === null) {
      if (!live.has(this.m)) throw new SysError('mmap', ERRNO.EINVAL!, `window at 0x${this.offset.toString(16)} of an unmapped mapping`);
      this.view = new Uint8Array(koffi.view(this.m.addr + this.offset, this.length));
    }
    return this.view;
  }
}

/**
 * mmap(MAP_SHARED, PROT_READ|PROT_WRITE) of `length` bytes of `fd` from `offset` (page aligned).
 * Only a regular file on tmpfs (memfd, /dev/shm) or hugetlbfs is mapped, and
 * a range past its end is refused: mmap itself accepts it, but the first
 * touch of the part beyond EOF raises SIGBUS, which kills the process (JS
 * cannot catch it). Takes microseconds whatever the length: no page is
 * touched and the windows' views are made on first use.
 */
export function mmapShared(fd: number, length: bigint, offset: bigint): Mapping {
  if (length <= 0n) throw new SysError('mmap', ERRNO.EINVAL!, `length must be positive, not ${length}`);
  if (offset < 0n) throw new SysError('mmap', ERRNO.EINVAL!, `offset must not be negative, not ${offset}`);
  let f: GuestRamFile;
  try {
    f = inspectGuestRamFd(fd);
  } catch (e) {
    const se = e as SysError;
    if (se.syscall === 'mmap') throw se;
    throw new SysError('mmap', se.errno, `fd ${fd}: ${se.syscall} before mapping`);
  }
  if (offset + length > f.size) {
    throw new SysError('mmap', ERRNO.EINVAL!, `fd ${fd}: ${length} bytes at offset ${offset} go past the end of the file (${f.size} bytes)`);
  }
  const addr = c.mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset) as bigint;
  if (addr === MAP_FAILED) throw new SysError('mmap', errno(), `fd ${fd}, ${length} bytes at offset ${offset}`);
  const windows: MappingWindow[] = [];
  const m: Mapping = { addr, length, windows };
  for (let off = 0n; off < length; off += WINDOW_BYTES) {
    const len = length - off < WINDOW_BYTES ? length - off : WINDOW_BYTES;
    windows.push(new LazyWindow(m, off, Number(len)));
  }
  live.add(m);
  return m;
}

/**
 * munmap(2). Every view of the mapping must be dropped first: touching one
 * afterwards is a segfault, which JS cannot catch.
 */
export function munmap(m: Mapping): void {
  if (!live.has(m)) throw new SysError('munmap', ERRNO.EINVAL!, `mapping at 0x${m.addr.toString(16)} is not mapped (unmapped twice?)`);
  check('munmap', c.munmap(m.addr, m.length), errno, `0x${m.addr.toString(16)}, ${m.length} bytes`);
  live.delete(m);
}

/**
 * An anonymous memory file of `size` bytes (CLOEXEC; sparse): guest RAM
 * stand-in for tests. Sealed as QEMU's memory-backend-memfd seals it
 * (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) unless `seal` is false.
 */
export function memfdCreate(name: string, size: bigint, o: { seal?: boolean } = {}): number {
  const seal = o.seal ?? true;
  const fd = check('memfd_create', c.memfd_create(name, MFD_CLOEXEC | (seal ? MFD_ALLOW_SEALING : 0)), errno, name);
  if (c.ftruncate(fd, size) < 0) {
    const e = errno();
    closeQuietly([fd]);
    throw new SysError('ftruncate', e, `memfd ${name} to ${size} bytes`);
  }
  if (seal && c.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
    const e = errno();
    closeQuietly([fd]);
    throw new SysError('fcntl', e, `F_ADD_SEALS on memfd ${name}`);
  }
  return fd;
}
