// Connection churn must not leak (issue 13 item 6): 8,000 QEMU-like
// connections (handshake, a sealed 1 MiB memfd mapped, a ring with two
// eventfds, leave) against the built daemon, through the churn soak
// (test/bench/churn-soak.mjs). The daemon runs with V8's heap capped
// (--max-old-space-size=16 --max-semi-space-size=1) so that what is measured
// is memory no garbage collection can give back: uncapped, V8 grows its heap
// under churn at its own pace (see README, Measured), which says nothing
// about leaks. Count-based and generous: fds exactly flat; mappings (VmSize)
// and RSS over the second half within bounds far below what a leak of one
// mapping, one fd or one koffi buffer per connection would cost.
// Then, in one process with the data plane and a forced GC, malloc'd bytes
// per guest lifecycle (memory table mapped, ring enabled, guest removed):
// ~210 bytes each stayed until the worker yielded to its event loop, which
// frees the native side of koffi.view buffers (host/vhost-user/worker.ts).
import t from 'tap';
import { UNTRACED } from './loadgen/harness.js';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const N = 8000;
/** Bytes per connection over the second half: measured 250 or less (README); a sawtooth of V8 pages adds ~4 MiB of noise. */
const RSS_BOUND_PER_CONNECTION = 2048;
const VMSIZE_BOUND_KIB = 8 * 1024;

// The soak and the daemon it starts run untraced (UNTRACED): with tap's
// process tracing inherited, its loader thread in tmemd opened an eventfd of
// its own after the first sample and the count went 36 -> 37 (CI, 2026-12-03).
t.test(`${N} connections: fds flat, no mapping kept, RSS plateaus`, (t) => {
  const r = spawnSync(UNTRACED[0]!, [...UNTRACED.slice(1), process.execPath, join(root, 'test/bench/churn-soak.mjs'), '--connections', String(N), '--kind', 'full', '--samples', '12', '--json', '--node-args', '--max-old-space-size=16 --max-semi-space-size=1'], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  if (r.status !== 0) throw new Error(`churn soak failed (${r.status}): ${r.stderr}${r.error ?? ''}`);
  const j = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
    connections: number;
    fdsStart: number;
    fdsEnd: number;
    rssHalfKiB: number;
    rssEndKiB: number;
    secondHalfRssBytesPerConnection: number;
    samples: { connections: number; vmSizeKiB: number; fds: number; fdsBeyondStart?: string[] }[];
  };
  t.equal(j.connections, N);
  t.equal(j.fdsEnd, j.fdsStart, `fds ${j.fdsStart} -> ${j.fdsEnd}`);
  const off = j.samples.filter((s) => s.fds !== j.fdsStart);
  t.same(
    off.map((s) => `${s.connections} connections: ${s.fds} fds, beyond the start: ${(s.fdsBeyondStart ?? []).join(', ')}`),
    [],
    'fds the same at every sample',
  );
  const half = j.samples.filter((s) => s.connections >= N / 2);
  const vmGrowth = half.at(-1)!.vmSizeKiB - half[0]!.vmSizeKiB;
  t.ok(vmGrowth < VMSIZE_BOUND_KIB, `VmSize grew ${vmGrowth} KiB over the last ${N / 2} connections (a kept 1 MiB mapping each would be ${N / 2} MiB)`);
  t.ok(
    j.secondHalfRssBytesPerConnection < RSS_BOUND_PER_CONNECTION,
    `RSS ${j.rssHalfKiB} -> ${j.rssEndKiB} KiB: ${j.secondHalfRssBytesPerConnection} B per connection over the second half (bound ${RSS_BOUND_PER_CONNECTION})`,
  );
  t.end();
});

t.test('the data plane keeps no malloc memory per guest lifecycle', (t) => {
  const script = `
    import koffi from 'koffi';
    const { DataPlane } = await import(${JSON.stringify(join(root, 'dist/host/vhost-user/client.js'))});
    const n = await import(${JSON.stringify(join(root, 'dist/native/index.js'))});
    const lib = koffi.load('libc.so.6');
    koffi.struct('mallinfo2_t', { arena: 'size_t', ordblks: 'size_t', smblks: 'size_t', hblks: 'size_t', hblkhd: 'size_t', usmblks: 'size_t', fsmblks: 'size_t', uordblks: 'size_t', fordblks: 'size_t', keepcost: 'size_t' });
    const mallinfo2 = lib.func('mallinfo2_t mallinfo2(void)');
    const used = async () => { await new Promise((r) => setTimeout(r, 200)); global.gc(); return Number(mallinfo2().uordblks); };
    const log = { error: (m) => console.error(m), warn: (m) => console.error(m), info() {}, debug() {} };
    const devices = [{ kind: 'tmem', module: ${JSON.stringify(pathToFileURL(join(root, 'dist/host/tmem/worker.js')).href)} }];
    const dp = await DataPlane.start({ mode: 'notify', pollSpinMs: 50, devices, deviceConfig: { capacityPages: 4096, maxPoolsPerGuest: 16 }, log });
    const UVA = 0x7f1200000000n;
    const params = { maxmemBytes: 1n << 30n, shareGroup: null, tmemMaxBytes: null, ramFloorBytes: 0n, frozen: false };
    const cycle = async () => {
      const g = dp.newInstanceId();
      await dp.open(g, { vm: 'x', kind: 'tmem', numQueues: 1, policy: { maxRamBytes: null, allowUnsealed: false }, params });
      await dp.setFeatures(g, (1n << 32n) | (1n << 29n) | (1n << 28n));
      await dp.setMemTable(g, [{ fd: n.memfdCreate('ram', 1n << 20n), guestPhysAddr: 0n, size: 1n << 20n, userspaceAddr: UVA, mmapOffset: 0n }]);
      await dp.setVringNum(g, 0, 256);
      await dp.setVringBase(g, 0, 0);
      await dp.setVringAddr(g, 0, { descUser: UVA, availUser: UVA + 0x1000n, usedUser: UVA + 0x2000n });
      await dp.setVringFd(g, 'setVringKick', 0, n.eventfd(0));
      await dp.setVringFd(g, 'setVringCall', 0, n.eventfd(0));
      await dp.setVringEnable(g, 0, true);
      await dp.close(g);
    };
    const WARM = 1500, N = 6000;
    for (let i = 0; i < WARM; i++) await cycle();
    const before = await used();
    for (let i = 0; i < N; i++) await cycle();
    const after = await used();
    await dp.stop();
    process.stdout.write(JSON.stringify({ before, after, perCycle: (after - before) / N }) + '\\n');
  `;
  const dir = mkdtempSync(join(tmpdir(), 'tmem-dp-churn-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A file next to node_modules' resolution root is not needed: koffi is imported by absolute path.
  const file = join(dir, 'dp-churn.mjs');
  writeFileSync(file, script.replace("import koffi from 'koffi';", `import koffi from ${JSON.stringify(join(root, 'node_modules/koffi/index.js'))};`));
  const r = spawnSync(process.execPath, ['--expose-gc', file], { encoding: 'utf8', timeout: 600_000, cwd: root });
  if (r.status !== 0) throw new Error(`data-plane churn failed (${r.status}): ${r.stderr}${r.error ?? ''}`);
  const j = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { before: number; after: number; perCycle: number };
  t.ok(j.perCycle < 64, `malloc in use ${j.before} -> ${j.after} bytes over 6,000 guest lifecycles: ${j.perCycle.toFixed(1)} B each (bound 64; it was ~210)`);
  t.end();
});
