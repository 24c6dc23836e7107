// native/memory.ts: shared mappings are zero-copy and split into 1 GiB windows.
import t from 'tap';
import * as native from '../native/index.js';

const GiB = 1n << 30n;

t.test('mmap of a memfd shows writes made through another mapping (zero copy)', async (t) => {
  const fd = native.memfdCreate('zc', 1n << 20n);
  t.teardown(() => native.close(fd));
  const a = native.mmapShared(fd, 1n << 20n, 0n);
  const b = native.mmapShared(fd, 1n << 20n, 0n);
  t.teardown(() => [a, b].forEach(native.munmap));
  t.not(a.addr, b.addr, 'two distinct mappings');
  t.equal(a.windows.length, 1);
  t.equal(a.windows[0]!.bytes.length, 1 << 20);
  a.windows[0]!.bytes.set([1, 2, 3], 4096);
  t.same([...b.windows[0]!.bytes.subarray(4096, 4099)], [1, 2, 3], 'seen through b');
  b.windows[0]!.bytes[(1 << 20) - 1] = 0xaa;
  t.equal(a.windows[0]!.bytes[(1 << 20) - 1], 0xaa, 'and back through a');
});

t.test('mmap at an offset sees the file from that offset', async (t) => {
  const fd = native.memfdCreate('off', 3n * 4096n);
  t.teardown(() => native.close(fd));
  const whole = native.mmapShared(fd, 3n * 4096n, 0n);
  const tail = native.mmapShared(fd, 4096n, 8192n);
  t.teardown(() => [whole, tail].forEach(native.munmap));
  whole.windows[0]!.bytes[8192 + 5] = 77;
  t.equal(tail.windows[0]!.bytes[5], 77);
});

t.test('a 2.5 GiB mapping is split into 1 GiB, 1 GiB and 0.5 GiB windows over the same memory', async (t) => {
  const size = 2n * GiB + GiB / 2n;
  const fd = native.memfdCreate('big', size); // sparse: only touched pages cost memory
  t.teardown(() => native.close(fd));
  const m = native.mmapShared(fd, size, 0n);
  t.teardown(() => native.munmap(m));
  t.equal(m.length, size);
  t.same(
    m.windows.map((w) => [w.offset, w.bytes.length]),
    [
      [0n, Number(GiB)],
      [GiB, Number(GiB)],
      [2n * GiB, Number(GiB / 2n)],
    ],
  );
  // Consecutive windows are consecutive memory: the byte after window 0 is byte 0 of window 1.
  const check = native.mmapShared(fd, 8192n, GiB - 4096n);
  t.teardown(() => native.munmap(check));
  m.windows[0]!.bytes[Number(GiB) - 1] = 11;
  m.windows[1]!.bytes[0] = 22;
  t.same([...check.windows[0]!.bytes.subarray(4095, 4097)], [11, 22]);
  m.windows[2]!.bytes[Number(GiB / 2n) - 1] = 33;
  const last = native.mmapShared(fd, 4096n, size - 4096n);
  t.teardown(() => native.munmap(last));
  t.equal(last.windows[0]!.bytes[4095], 33, 'last byte of the last window is the last byte of the file');
});

t.test('mmap errors: bad fd, bad offset; munmap twice refused', async (t) => {
  t.throws(() => native.mmapShared(-1, 4096n, 0n), { name: 'SysError', code: 'EBADF', syscall: 'mmap' });
  const fd = native.memfdCreate('err', 8192n);
  t.teardown(() => native.close(fd));
  t.throws(() => native.mmapShared(fd, 4096n, 100n), { code: 'EINVAL', syscall: 'mmap' });
  t.throws(() => native.mmapShared(fd, 0n, 0n), { code: 'EINVAL' });
  const m = native.mmapShared(fd, 4096n, 0n);
  native.munmap(m);
  t.throws(() => native.munmap(m), { code: 'EINVAL', syscall: 'munmap' });
});

t.test('mmap past the end of a memfd is refused (touching it would be SIGBUS)', async (t) => {
  const fd = native.memfdCreate('short', 8192n);
  t.teardown(() => native.close(fd));
  t.throws(() => native.mmapShared(fd, 3n * 4096n, 0n), { name: 'SysError', code: 'EINVAL', message: /past the end of the file \(8192 bytes\)/ });
  t.throws(() => native.mmapShared(fd, 4096n, 8192n), { name: 'SysError', code: 'EINVAL', message: /past the end/ });
  const m = native.mmapShared(fd, 4096n, 4096n);
  t.equal(m.windows[0]!.bytes.length, 4096, 'the last page of the file maps');
  native.munmap(m);
});
