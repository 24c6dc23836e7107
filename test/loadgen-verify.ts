// The load generator (a C vhost-user front-end, test/loadgen/) against the
// built daemon: every GET returns exactly what was PUT, over at least one
// million operations across several queues, in poll and in notify mode.
import t from 'tap';
import { buildLoadgen, Daemon, explain, runLoadgen } from './loadgen/harness.js';

buildLoadgen();

const num = (j: Record<string, unknown> | null, k: string): number => (j && typeof j[k] === 'number' ? (j[k] as number) : NaN);

for (const mode of ['poll', 'notify'] as const) {
  t.test(`verify, ${mode} mode`, async (t) => {
    const d = new Daemon({ mode, queues: 4, maxmem: '1G', capacity: '512M' });
    t.teardown(() => d.stop());
    await d.ready();

    // poll: one million operations over 4 queues, 16 in flight each
    // notify: the other ring options (EVENT_IDX, indirect, two memory regions)
    const args = mode === 'poll' ? ['--queues', '4', '--depth', '16', '--ops', '1000000'] : ['--queues', '4', '--depth', '16', '--ops', '300000', '--event-idx', '--indirect', '--two-regions'];
    const r = await runLoadgen('verify', d.socket, args, 600000);
    t.equal(r.code, 0, `verify exits 0`, { output: explain(r, d) });
    t.equal(r.json?.ok, true, 'JSON ok');
    const ops = num(r.json, 'ops');
    t.ok(ops >= (mode === 'poll' ? 1000000 : 300000), `ops ${ops}`);
    t.ok(num(r.json, 'verifiedPages') > ops / 20, `pages verified: ${num(r.json, 'verifiedPages')}`);
    t.ok(num(r.json, 'getMiss') > 0 && num(r.json, 'flushPage') > 0 && num(r.json, 'flushObject') > 0, 'mixed ops');
    t.equal(num(r.json, 'putNospace'), 0, 'no PUT refused with a large maxmem');
    t.ok(d.alive, 'tmemd still runs');

    // a second guest on the same socket, one thread driving three queues
    const r2 = await runLoadgen('verify', d.socket, ['--queues', '3', '--one-thread', '--depth', '8', '--ops', '60000', '--seed', '7'], 300000);
    t.equal(r2.code, 0, `verify --one-thread exits 0`, { output: explain(r2, d) });
    t.ok(num(r2.json, 'ops') >= 60000, `ops ${num(r2.json, 'ops')}`);
    t.ok(d.alive, 'tmemd still runs');
  });
}
