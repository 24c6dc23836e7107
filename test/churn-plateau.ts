// Connection churn must not leak (issue 13 item 6): 12,000 QEMU-like
// connections (handshake, a sealed 1 MiB memfd mapped, a ring with two
// eventfds, leave) against the built daemon, through the churn soak
// (test/bench/churn-soak.mjs). The daemon runs with V8's heap capped
// (--max-old-space-size=16 --max-semi-space-size=1) so that what is measured
// is memory no garbage collection can give back: uncapped, V8 grows its heap
// under churn at its own pace (see README, Measured), which says nothing
// about leaks. Count-based and generous: fds exactly flat; mappings (VmSize)
// and RSS over the second half within bounds far below what a leak of one
// mapping, one fd or one koffi buffer per connection would cost.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const N = 12000;
/** Bytes per connection over the second half: measured 250 or less (README); a sawtooth of V8 pages adds ~4 MiB of noise. */
const RSS_BOUND_PER_CONNECTION = 1536;
const VMSIZE_BOUND_KIB = 8 * 1024;

t.test(`${N} connections: fds flat, no mapping kept, RSS plateaus`, (t) => {
  const r = spawnSync(process.execPath, [join(root, 'test/bench/churn-soak.mjs'), '--connections', String(N), '--kind', 'full', '--samples', '12', '--json', '--node-args', '--max-old-space-size=16 --max-semi-space-size=1'], {
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
    samples: { connections: number; vmSizeKiB: number; fds: number }[];
  };
  t.equal(j.connections, N);
  t.equal(j.fdsEnd, j.fdsStart, `fds ${j.fdsStart} -> ${j.fdsEnd}`);
  t.ok(
    j.samples.every((s) => s.fds === j.fdsStart),
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
