// Guest RAM as tmemd maps it (issue 13 items 1 and 2): which fds may be
// mapped (inspectGuestRamFd), and lazy windows: mmapShared makes no view,
// GuestMemory makes a window's view when a guest address in it is first
// translated, and a window of an unmapped mapping is refused, never touched.
import t from 'tap';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../native/index.js';
import { GuestMemory, mappedWindows, SegmentList } from '../host/virtio/guest-memory.js';

const GiB = 1n << 30n;

t.test('inspectGuestRamFd: sealed memfd, unsealed memfd, /dev/shm file, disk file, pipe', async (t) => {
  const sealed = native.memfdCreate('sealed', 1n << 20n);
  const unsealed = native.memfdCreate('unsealed', 1n << 20n, { seal: false });
  t.teardown(() => native.closeQuietly([sealed, unsealed]));
  t.same(native.inspectGuestRamFd(sealed), { fs: 'tmpfs', seals: 0x7, noShrink: true, size: 1n << 20n }, 'GROW|SHRINK|SEAL, as QEMU seals');
  t.same(native.inspectGuestRamFd(unsealed), { fs: 'tmpfs', seals: 0x1, noShrink: false, size: 1n << 20n }, 'a memfd without MFD_ALLOW_SEALING: F_SEAL_SEAL only');
  const shm = `/dev/shm/tmem-lazy-${process.pid}`;
  const sfd = openSync(shm, 'w+');
  t.teardown(() => {
    closeSync(sfd);
    unlinkSync(shm);
  });
  ftruncateSync(sfd, 8192);
  const s = native.inspectGuestRamFd(sfd);
  t.equal(s.fs, 'tmpfs');
  t.equal(s.noShrink, false, 'a tmpfs file cannot be sealed');
  const dir = mkdtempSync(join(tmpdir(), 'tmem-lazy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const dfd = openSync(join(dir, 'f'), 'w+');
  t.teardown(() => closeSync(dfd));
  ftruncateSync(dfd, 8192);
  const onDisk = (() => {
    try {
      native.inspectGuestRamFd(dfd);
      return null;
    } catch (e) {
      return e as native.SysError;
    }
  })();
  // tmpdir() may itself be a tmpfs on some machines: then there is no disk file to refuse here
  if (onDisk === null) t.fail(`${dir} is on tmpfs: this test needs a disk file system for its disk file`);
  else {
    t.equal(onDisk.code, 'EINVAL');
    t.match(onDisk.message, /is a file on a file system of type 0x[0-9a-f]+, not a memfd or a file on tmpfs or hugetlbfs/);
  }
  t.throws(() => native.mmapShared(dfd, 4096n, 0n), { code: 'EINVAL', syscall: 'mmap' }, 'mmapShared refuses it too');
  const [a, b] = native.socketPair();
  t.teardown(() => native.closeQuietly([a!, b!]));
  t.throws(() => native.inspectGuestRamFd(a!), { code: 'EINVAL', message: /not a regular file/ }, 'a socket');
  t.throws(() => native.inspectGuestRamFd(-1), { code: 'EBADF' });
});

t.test('mmapShared makes no view; GuestMemory makes one per window on first use', async (t) => {
  const size = 4n * GiB;
  const fd = native.memfdCreate('lazy', size);
  t.teardown(() => native.close(fd));
  const delta = 512n; // an unaligned region: mapped from the page below, 512 bytes skipped
  const m = native.mmapShared(fd, size, 0n);
  t.equal(m.windows.length, 4);
  t.same(
    m.windows.map((w) => w.length),
    [1, 1, 1, 1].map(() => Number(GiB)),
    'lengths known without views',
  );
  const mem = new GuestMemory([{ guestPhysAddr: 0x100000n, userspaceAddr: 0x7f0000000000n, windows: mappedWindows(m.windows, delta) }]);
  const r = mem.regions[0]!;
  t.equal(r.size, Number(size - delta), 'the region is the mapping minus the skipped bytes');
  t.same(
    r.windows.map((w) => w.ready),
    [false, false, false, false],
    'no window has a view yet',
  );
  const seg = new SegmentList(8);
  // a range across the boundary of windows 1 and 2
  const at = 0x100000 + Number(2n * GiB - delta) - 8;
  t.ok(mem.translate(at, 16, seg), 'translated');
  t.same(
    r.windows.map((w) => w.ready),
    [false, true, true, false],
    'only the windows touched got a view',
  );
  t.ok(seg.writeFrom(0, Uint8Array.from({ length: 16 }, (_, i) => i + 1), 0, 16));
  const check = native.mmapShared(fd, 4096n, 2n * GiB - 4096n);
  t.same([...check.windows[0]!.bytes.subarray(4088, 4096)], [1, 2, 3, 4, 5, 6, 7, 8], 'the bytes landed at file offset 2 GiB - 8 (region offset + 512 skipped)');
  native.munmap(check);
  native.munmap(m);
  seg.clear();
  t.notOk(mem.translate(0x100000, 16, seg), 'a window never used before the unmap is refused, not made');
  t.equal(r.windows[0]!.ready, false);
});
