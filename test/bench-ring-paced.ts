// ring-bench's paced run (issue 10, CPU per request): the C load generator
// sends requests at a fixed rate to a notify-mode tmemd and reads the
// daemon's CPU from /proc. Figures are the benchmark's business; this checks
// that the run works end to end and that its JSON carries the fields, as
// numbers, that the README and the lead read (no bound on their values).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { buildLoadgen, LOADGEN, ROOT } from './loadgen/harness.js';

buildLoadgen();
const BENCH = join(ROOT, 'test/bench/ring-bench.mjs');

t.test('bench:ring --paced-only --json: notifyCpuPerRequestUs is a positive number, with the same-run context', (t) => {
  const r = spawnSync(process.execPath, [BENCH, '--paced-only', '--paced-ops', '20000', '--paced-rate', '20000', '--paced-runs', '1', '--json'], {
    encoding: 'utf8',
    timeout: 180000,
  });
  t.equal(r.status, 0, 'ring-bench exits 0', { stderr: r.stderr.slice(-3000) });
  const last = r.stdout.trimEnd().split('\n').pop() ?? '';
  const j = JSON.parse(last) as Record<string, unknown> & { paced: Record<string, unknown> };
  const positive = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x > 0;
  t.ok(positive(j.notifyCpuPerRequestUs), `notifyCpuPerRequestUs = ${j.notifyCpuPerRequestUs}`);
  t.ok(positive(j.notifyCpuPerRequestUsMin), `notifyCpuPerRequestUsMin = ${j.notifyCpuPerRequestUsMin}`);
  for (const k of ['probeCpuPerWakeUs', 'loadgenCpuPerRequestUs', 'achievedRate', 'p50us']) {
    const v = j.paced[k] as unknown[];
    t.ok(Array.isArray(v) && v.length === 1 && positive(v[0]), `paced.${k} = ${JSON.stringify(v)}`);
  }
  t.match(r.stderr, /tmemd CPU per request [\d.]+ us/, 'the figure is printed');
  t.match(r.stderr, /costs [\d., ]+ us per wake-up/, 'beside the C probe of the same run');
  t.end();
});

t.test('the load generator refuses a paced run without the daemon to measure, in one line', (t) => {
  const r = spawnSync(LOADGEN, ['paced', '--socket', '/nonexistent/vm.sock'], { encoding: 'utf8', timeout: 20000 });
  t.equal(r.status, 2, 'exit 2 (usage)');
  t.match(r.stderr, /^loadgen: error: paced: --cpu-pid PID \(the daemon's process\) is required\n$/);
  t.end();
});

t.test('the load generator refuses a daemon pid it cannot read, in one line', (t) => {
  const r = spawnSync(LOADGEN, ['paced', '--socket', '/nonexistent/vm.sock', '--cpu-pid', '999999999'], { encoding: 'utf8', timeout: 60000 });
  t.equal(r.status, 2, 'exit 2');
  t.match(r.stderr, /loadgen: error: /, r.stderr);
  t.end();
});
