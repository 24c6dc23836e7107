// Shared mappings of guest RAM (memfds from QEMU), exposed as zero-copy
// Uint8Array windows. Node 20 caps one typed array at 4 GiB; windows of at
// most 1 GiB, consecutive and non-overlapping, keep every view well inside
// that and let callers index a window with plain numbers.
import koffi from 'koffi';
import { c, errno, MAP_FAILED, MAP_SHARED, MFD_CLOEXEC, PROT_READ, PROT_WRITE } from './libc.js';
import { check, ERRNO, SysError } from './errors.js';
import { closeQuietly, fstat, S_IFMT, S_IFREG } from './fd.js';

export const WINDOW_BYTES = 1n << 30n;

export interface MappingWindow {
  /** Offset of bytes[0] from the start of the mapping. */
  readonly offset: bigint;
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

/**
 * mmap(MAP_SHARED, PROT_READ|PROT_WRITE) of `length` bytes of `fd` from `offset` (page aligned).
 * A range past the end of a regular file (a memfd, a file in /dev/shm or
 * hugetlbfs) is refused: mmap itself accepts it, but the first touch of the
 * part beyond EOF raises SIGBUS, which kills the process (JS cannot catch it).
 */
export function mmapShared(fd: number, length: bigint, offset: bigint): Mapping {
  if (length <= 0n) throw new SysError('mmap', ERRNO.EINVAL!, `length must be positive, not ${length}`);
  if (offset < 0n) throw new SysError('mmap', ERRNO.EINVAL!, `offset must not be negative, not ${offset}`);
  let st: ReturnType<typeof fstat>;
  try {
    st = fstat(fd);
  } catch (e) {
    throw new SysError('mmap', (e as SysError).errno, `fd ${fd}: fstat before mapping`);
  }
  if ((st.mode & S_IFMT) === S_IFREG && offset + length > st.size) {
    throw new SysError('mmap', ERRNO.EINVAL!, `fd ${fd}: ${length} bytes at offset ${offset} go past the end of the file (${st.size} bytes)`);
  }
  const addr = c.mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset) as bigint;
  if (addr === MAP_FAILED) throw new SysError('mmap', errno(), `fd ${fd}, ${length} bytes at offset ${offset}`);
  const windows: MappingWindow[] = [];
  for (let off = 0n; off < length; off += WINDOW_BYTES) {
    const len = length - off < WINDOW_BYTES ? length - off : WINDOW_BYTES;
    windows.push({ offset: off, bytes: new Uint8Array(koffi.view(addr + off, Number(len))) });
  }
  const m: Mapping = { addr, length, windows };
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

/** An anonymous memory file of `size` bytes (CLOEXEC; sparse): guest RAM stand-in for tests. */
export function memfdCreate(name: string, size: bigint): number {
  const fd = check('memfd_create', c.memfd_create(name, MFD_CLOEXEC), errno, name);
  if (c.ftruncate(fd, size) < 0) {
    const e = errno();
    closeQuietly([fd]);
    throw new SysError('ftruncate', e, `memfd ${name} to ${size} bytes`);
  }
  return fd;
}
