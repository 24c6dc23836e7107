// The load generator against the built daemon: each rule of ABI.md seen
// through the wire (one PASS/FAIL line per rule), in poll and notify mode,
// with plain and indirect/EVENT_IDX/two-region rings, and a VM with a share group.
import t from 'tap';
import { buildLoadgen, Daemon, explain, runLoadgen } from './loadgen/harness.js';

buildLoadgen();

// guest RAM 64 MiB, maxmem 65 MiB: 256 persistent pages
const RAM = ['--ram', '64M'];
const LIMIT = ['--maxmem-pages', '256'];

for (const mode of ['poll', 'notify'] as const) {
  t.test(`rules, ${mode} mode`, async (t) => {
    const d = new Daemon({ mode, queues: 4, maxmem: '65M' });
    t.teardown(() => d.stop());
    await d.ready();
    for (const extra of [[], ['--indirect', '--event-idx', '--two-regions', '--queues', '2']]) {
      const r = await runLoadgen('rules', d.socket, [...RAM, ...LIMIT, '--queues', '4', ...extra], 120000);
      t.equal(r.code, 0, `rules ${extra.join(' ')} exit 0`, { output: explain(r, d) });
      t.equal(r.json?.ok, true, 'JSON ok');
      t.equal(r.json?.fail, 0, 'no FAIL');
      t.equal(r.json?.skip, 0, 'no SKIP');
      t.ok((r.json?.pass as number) >= 24, `rules passed: ${r.json?.pass}`);
      for (const l of r.lines) t.match(l, /^PASS /, l);
      t.ok(d.alive, 'tmemd still runs');
    }
  });
}

t.test('rules, shared pools of a VM in a share group', async (t) => {
  const d = new Daemon({ mode: 'notify', queues: 2, maxmem: '65M', shareGroup: 'g1' });
  t.teardown(() => d.stop());
  await d.ready();
  const r = await runLoadgen('rules', d.socket, [...RAM, ...LIMIT, '--queues', '2', '--shared-expect', 'allowed'], 120000);
  t.equal(r.code, 0, `rules exit 0`, { output: explain(r, d) });
  t.ok(r.lines.some((l) => /^PASS shared-pool/.test(l)), 'shared-pool rule passed');
  t.equal(r.json?.fail, 0, 'no FAIL');
});
