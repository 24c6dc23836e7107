// The load generator against the built daemon: malformed chains are completed
// with used len 0 and nothing written or done, wrong lengths get INVALID, odd
// but valid splits are served, and after each case the daemon still serves.
import t from 'tap';
import { buildLoadgen, Daemon, explain, runLoadgen } from './loadgen/harness.js';

buildLoadgen();

for (const mode of ['poll', 'notify'] as const) {
  t.test(`malformed chains, ${mode} mode`, async (t) => {
    const d = new Daemon({ mode, queues: 4, maxmem: '1G' });
    t.teardown(() => d.stop());
    await d.ready();
    for (const extra of [['--queues', '4'], ['--queues', '2', '--indirect', '--event-idx', '--two-regions']]) {
      const r = await runLoadgen('malformed', d.socket, extra, 120000);
      t.equal(r.code, 0, `malformed ${extra.join(' ')} exit 0`, { output: explain(r, d) });
      t.equal(r.json?.ok, true, 'JSON ok');
      t.equal(r.json?.fail, 0, 'no deviation');
      t.ok((r.json?.cases as number) >= (extra.includes('--indirect') ? 38 : 28), `cases: ${r.json?.cases}`);
      for (const l of r.lines) t.match(l, /^PASS /, l);
      t.ok(d.alive, 'tmemd still runs');
    }
  });
}
