#!/usr/bin/env node
// Ring benchmark: the C load generator (test/loadgen/) against the built
// daemon in poll mode, then in notify mode. Prints a table; with --json one
// JSON object as the last line.
//
//   npm run bench:ring [-- --json] [-- --queues N --depth D --pages N --lat-ops N --indirect --event-idx]
//
// Per mode the load generator measures, in one run: per-request latency at
// depth 1 on queue 0 (PUT then GET, p50/p99), PUT then GET throughput of each
// queue alone and of all queues together at depth D, and the memcpy baseline
// of 4 KiB pages between two buffers as large as the store's working set.
// pollOpsPerSec / notifyOpsPerSec are one queue's PUT+GET ops/s (the figure
// ratioPollToMemcpy compares with memcpy); the all-queue figures are beside them.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const LOADGEN = join(root, 'test/loadgen/build/tmem-loadgen');
const TMEMD = join(root, 'dist/host/tmemd.js');

const argv = process.argv.slice(2);
const opt = { json: false, queues: 2, depth: 32, pages: 16384, latOps: 20000, indirect: false, eventIdx: false, modes: ['poll', 'notify'] };
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => {
    if (i + 1 >= argv.length) fail(`${a} needs a value`);
    return argv[++i];
  };
  const int = (v) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) fail(`${a}: '${v}' is not a positive whole number`);
    return Number(v);
  };
  if (a === '--json') opt.json = true;
  else if (a === '--queues') opt.queues = int(val());
  else if (a === '--depth') opt.depth = int(val());
  else if (a === '--pages') opt.pages = int(val());
  else if (a === '--lat-ops') opt.latOps = int(val());
  else if (a === '--indirect') opt.indirect = true;
  else if (a === '--event-idx') opt.eventIdx = true;
  else if (a === '--mode') opt.modes = [val()];
  else if (a === '--help' || a === '-h') {
    console.log('usage: npm run bench:ring [-- --json] [-- --queues N --depth D --pages N --lat-ops N --indirect --event-idx --mode poll|notify]');
    process.exit(0);
  } else fail(`unknown option ${a} (see --help)`);
}

function fail(msg) {
  console.error(`ring-bench: ${msg}`);
  process.exit(2);
}
const say = (s) => (opt.json ? process.stderr : process.stdout).write(s + '\n');

// the load generator: built here, so nobody has to build it first
const mk = spawnSync('make', ['-s', '-C', join(root, 'test/loadgen'), 'all'], { encoding: 'utf8' });
if (mk.error) fail(`cannot run make: ${mk.error.message} (install gcc and make)`);
if (mk.status !== 0) fail(`building the load generator failed:\n${mk.stdout}${mk.stderr}`);
if (!existsSync(TMEMD)) fail(`${TMEMD} is missing: run 'npm run build' first`);

// Fair use of the CPUs: the poll worker spins on one CPU and each load
// generator thread spins on one more. With fewer CPUs than queues + 1 the
// spinners would take turns by time slice (milliseconds per batch) and the
// all-queue figures would measure the scheduler, so one load generator
// thread then drives every queue. The single-queue figures (the targets)
// use one thread either way.
const cpus = availableParallelism();
const oneThread = opt.queues > 1 && cpus < opt.queues + 1;
const loadgenThreads = oneThread ? 1 : opt.queues;

const children = new Set();
const cleanup = () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
};
process.on('exit', cleanup);
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));

function run(cmd, args, { timeoutMs = 0 } = {}) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(p);
  let out = '';
  let err = '';
  p.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  p.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const timer = timeoutMs ? setTimeout(() => p.kill('SIGKILL'), timeoutMs) : null;
  const done = new Promise((res) =>
    p.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      children.delete(p);
      res({ code, signal });
    }),
  );
  return { p, done, out: () => out, err: () => err };
}

async function benchMode(mode) {
  const dir = mkdtempSync(join(tmpdir(), 'tmem-ring-bench-'));
  const sock = join(dir, 'vm.sock');
  // RAM 64M; maxmem leaves room for every page the bench keeps at once
  const d = run(process.execPath, [TMEMD, '--vm', `name=bench,socket=${sock},maxmem=2G`, '--capacity', '2G', '--queues-mode', mode, '--queues', String(opt.queues), '--control', 'none', '--log-level', 'warn']);
  try {
    const end = Date.now() + 20000;
    while (!existsSync(sock)) {
      if (d.p.exitCode !== null) throw new Error(`tmemd (${mode}) exited at startup:\n${d.err()}`);
      if (Date.now() > end) throw new Error(`tmemd (${mode}) did not listen within 20 s:\n${d.err()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const args = ['bench', '--socket', sock, '--json', '--ram', '64M', '--queues', String(opt.queues), '--depth', String(opt.depth), '--bench-pages', String(opt.pages), '--lat-ops', String(opt.latOps)];
    if (oneThread) args.push('--one-thread');
    if (opt.indirect) args.push('--indirect');
    if (opt.eventIdx) args.push('--event-idx');
    const lg = run(LOADGEN, args, { timeoutMs: 600000 });
    const r = await lg.done;
    const last = lg.out().trimEnd().split('\n').pop() ?? '';
    if (r.code !== 0) throw new Error(`loadgen bench (${mode}) failed (exit ${r.code ?? r.signal}):\n${lg.err()}\n${last}\n--- tmemd:\n${d.err()}`);
    const j = JSON.parse(last);
    if (d.p.exitCode !== null) throw new Error(`tmemd (${mode}) died during the benchmark:\n${d.err()}`);
    return j;
  } finally {
    if (d.p.exitCode === null) d.p.kill('SIGTERM');
    const t = setTimeout(() => d.p.kill('SIGKILL'), 10000);
    await d.done;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  }
}

const res = {};
try {
  for (const m of opt.modes) {
    say(`ring-bench: ${m} mode, ${opt.queues} queue(s), depth ${opt.depth}, ${opt.pages} pages, ${opt.latOps} timed requests, ${loadgenThreads} load generator thread(s) on ${cpus} CPUs...`);
    res[m] = await benchMode(m);
  }
} catch (e) {
  fail(e instanceof Error ? e.message : String(e));
}

const f0 = (x) => (x === undefined ? '-' : Math.round(x).toLocaleString('en-US'));
const f2 = (x) => (x === undefined ? '-' : x.toFixed(2));
const rows = [['', ...opt.modes]];
const row = (name, fn) => rows.push([name, ...opt.modes.map((m) => fn(res[m]))]);
row('memcpy 4 KiB pages/s (same run)', (j) => f0(j.memcpyPagesPerSec));
row('1 queue PUT+GET ops/s', (j) => f0(j.oneQueueOpsPerSec));
row('1 queue PUT ops/s', (j) => f0(j.oneQueuePutOpsPerSec));
row('1 queue GET ops/s', (j) => f0(j.oneQueueGetOpsPerSec));
row(`all ${opt.queues} queues PUT+GET ops/s`, (j) => f0(j.allQueuesOpsPerSec));
row(`all ${opt.queues} queues PUT ops/s`, (j) => f0(j.allQueuesPutOpsPerSec));
row(`all ${opt.queues} queues GET ops/s`, (j) => f0(j.allQueuesGetOpsPerSec));
for (let q = 0; q < opt.queues; q++) row(`queue ${q} alone ops/s`, (j) => f0(j.perQueue[q]?.opsPerSec));
row('latency p50 us (depth 1)', (j) => f2(j.latency.p50us));
row('latency p99 us (depth 1)', (j) => f2(j.latency.p99us));
row('PUT p50 / p99 us', (j) => `${f2(j.latency.putP50us)} / ${f2(j.latency.putP99us)}`);
row('GET p50 / p99 us', (j) => `${f2(j.latency.getP50us)} / ${f2(j.latency.getP99us)}`);
row('ratio 1 queue / memcpy', (j) => (j.oneQueueOpsPerSec / j.memcpyPagesPerSec).toFixed(3));
row('kicks', (j) => f0(j.kicks));
const w = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
for (const r of rows) say(r.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  '));

const P = res.poll;
const N = res.notify;
const out = {
  pollOpsPerSec: P?.oneQueueOpsPerSec,
  notifyOpsPerSec: N?.oneQueueOpsPerSec,
  pollP50us: P?.latency.p50us,
  pollP99us: P?.latency.p99us,
  notifyP50us: N?.latency.p50us,
  notifyP99us: N?.latency.p99us,
  memcpyPerSec: (P ?? N)?.memcpyPagesPerSec,
  ratioPollToMemcpy: P ? P.oneQueueOpsPerSec / P.memcpyPagesPerSec : undefined,
  pollAllQueuesOpsPerSec: P?.allQueuesOpsPerSec,
  notifyAllQueuesOpsPerSec: N?.allQueuesOpsPerSec,
  pollPutOpsPerSec: P?.oneQueuePutOpsPerSec,
  pollGetOpsPerSec: P?.oneQueueGetOpsPerSec,
  notifyPutOpsPerSec: N?.oneQueuePutOpsPerSec,
  notifyGetOpsPerSec: N?.oneQueueGetOpsPerSec,
  notifyMemcpyPerSec: N?.memcpyPagesPerSec,
  pollPerQueue: P?.perQueue,
  notifyPerQueue: N?.perQueue,
  pollLatency: P?.latency,
  notifyLatency: N?.latency,
  queues: opt.queues,
  loadgenThreads,
  cpus,
  depth: opt.depth,
  pages: opt.pages,
  targets: { ratioPollToMemcpyAtLeast: 0.5, pollP50usAtMost: 5, pollP99usAtMost: 20 },
};
if (opt.json) console.log(JSON.stringify(out));
