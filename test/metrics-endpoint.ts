// tmemd's Prometheus endpoint in process (host/metrics/): metrics generated
// from a counters table, the text format checked by Debian's promtool on a
// live scrape over HTTP, a stats request that never answers (a late worker)
// gives a prompt scrape with tmem_stats_up 0 while other requests are served,
// and listen failures (port in use, an address not on this host) are one line.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { silentLogger } from '../host/log.js';
import { metricName, snake, TmemMetrics, type MetricBlock } from '../host/metrics/registry.js';
import { MetricsListenError, MetricsServer } from '../host/metrics/server.js';

const TABLE: MetricBlock[] = [
  {
    subsystem: 'store',
    scope: 'vm',
    counters: [
      { name: 'puts', help: 'PUT_PAGE requests', kind: 'counter', unit: 'requests' },
      { name: 'putsNoSpace', help: 'PUTs refused for lack of room', kind: 'counter', unit: 'requests' },
      { name: 'persistentPages', help: 'persistent pages held now', kind: 'gauge', unit: 'pages' },
      { name: 'waitMs', help: 'time waited', kind: 'counter', unit: 'ms' },
    ],
  },
  { subsystem: 'vring', scope: 'instance', counters: [{ name: 'requests', help: 'chains completed', kind: 'counter', unit: 'chains' }] },
  { subsystem: 'tmem', scope: 'instance', counters: [{ name: 'opPutPage', help: 'PUT_PAGE requests', kind: 'counter', unit: 'requests' }] },
  {
    subsystem: 'worker',
    scope: 'host',
    counters: [
      { name: 'loopIterations', help: 'worker loop turns', kind: 'counter', unit: 'iterations' },
      { name: 'bytesMoved', help: 'bytes copied', kind: 'counter', unit: 'bytes' },
    ],
  },
];

const SNAP = {
  host: {
    store: { capacityPages: 1000, freePages: 880, ephemeralPages: 60, persistentPages: 40, reclaimPendingPages: 20 },
    // the worker's own loop sits at host.worker (instance sums at host.counters)
    worker: { loopIterations: 5, bytesMoved: 8192 },
    counters: { vring: { requests: 99 } },
  },
  guests: [
    {
      name: 'vm0', connected: true, frozen: false, maxmemBytes: '2147483648',
      store: { puts: 10, putsNoSpace: 2, persistentPages: 40, waitMs: 1500, persistentLimitPages: 100 },
      // dataplane is the tmem connection, also one of devices: its queues are counted once
      dataplane: { kind: 'tmem', queues: [{ running: true, broken: null }, { running: false, broken: 'used ring out of guest RAM' }, { running: false, broken: null }] },
      devices: [
        { kind: 'tmem', counters: { vring: { requests: 12 }, tmem: { opPutPage: 7 } }, queues: [{ running: true, broken: null }, { running: false, broken: 'used ring out of guest RAM' }, { running: false, broken: null }] },
        { kind: 'blk', counters: { vring: { requests: 3 } }, queues: [{ running: true, broken: null }] },
      ],
    },
    { name: 'vm-b', connected: false, frozen: true, maxmemBytes: '1073741824', store: null, dataplane: null },
  ],
};

/** Sample lines of a metric: `name{labels} value` -> value by the label text. */
function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) out.set(m[2] ?? '', Number(m[3]));
  }
  return out;
}

function promtool(text: string): { status: number | null; out: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (r.error) throw new Error(`promtool cannot run (${r.error.message}): install Debian's prometheus package (npm run setup does)`);
  return { status: r.status, out: r.stdout + r.stderr };
}

async function scrape(url: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; body: string; ms: number }> {
  const t0 = performance.now();
  const r = await fetch(url, { headers });
  const body = await r.text();
  return { status: r.status, type: r.headers.get('content-type') ?? '', body, ms: performance.now() - t0 };
}

t.test('names: generated from the table with Prometheus conventions', async (t) => {
  t.equal(snake('putsNoSpace'), 'puts_no_space');
  t.equal(snake('loopIterations'), 'loop_iterations');
  t.same(metricName(TABLE[0]!, TABLE[0]!.counters[0]!), { name: 'tmem_store_puts_total', scale: 1 }, 'a counter ends in _total');
  t.same(metricName(TABLE[0]!, TABLE[0]!.counters[2]!), { name: 'tmem_store_persistent_pages', scale: 1 }, 'a gauge does not');
  t.same(metricName(TABLE[0]!, TABLE[0]!.counters[3]!), { name: 'tmem_store_wait_seconds_total', scale: 1e-3 }, 'ms become seconds');
  t.same(metricName(TABLE[3]!, TABLE[3]!.counters[1]!), { name: 'tmem_worker_moved_bytes_total', scale: 1 }, 'bytes end in _bytes');
  const m = new TmemMetrics(TABLE, { processMetrics: false });
  t.same(m.generated, ['tmem_store_puts_total', 'tmem_store_puts_no_space_total', 'tmem_store_persistent_pages', 'tmem_store_wait_seconds_total', 'tmem_vring_requests_total', 'tmem_op_put_page_total', 'tmem_worker_loop_iterations_total', 'tmem_worker_moved_bytes_total'], 'one metric per table entry, in table order; the tmem device\'s block is not tmem_tmem_');
  t.throws(() => new TmemMetrics([...TABLE, { subsystem: 'store', scope: 'vm', counters: [{ name: 'puts', help: 'again', kind: 'counter', unit: 'requests' }] }], { processMetrics: false }), /metric tmem_store_puts_total defined twice/);
  t.throws(() => new TmemMetrics([{ subsystem: 'vm', scope: 'host', counters: [{ name: 'connected', help: 'clash', kind: 'gauge', unit: 'guests' }] }], { processMetrics: false }), /tmem_vm_connected defined twice/, 'a table entry cannot shadow a hand-named metric');
});

t.test('a live scrape: values from the snapshot, promtool check metrics passes', async (t) => {
  const metrics = new TmemMetrics(TABLE);
  let calls = 0;
  const srv = new MetricsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics, stats: async () => (calls++, SNAP), local: () => ({ workerAlive: true, commandsInFlight: 0 }), log: silentLogger });
  const a = await srv.start();
  t.teardown(() => srv.stop());
  t.match(a.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  const r = await scrape(a.url);
  t.equal(r.status, 200);
  t.match(r.type, /^text\/plain; version=0\.0\.4; charset=utf-8$/);
  const pt = promtool(r.body);
  t.equal(pt.status, 0, `promtool check metrics: ${pt.out || 'clean'}`);
  t.same([...samples(r.body, 'tmem_store_puts_total')], [['{vm="vm0"}', 10]]);
  t.same([...samples(r.body, 'tmem_store_puts_no_space_total')], [['{vm="vm0"}', 2]]);
  t.same([...samples(r.body, 'tmem_store_persistent_pages')], [['{vm="vm0"}', 40]]);
  t.same([...samples(r.body, 'tmem_store_wait_seconds_total')], [['{vm="vm0"}', 1.5]]);
  t.same(Object.fromEntries(samples(r.body, 'tmem_vring_requests_total')), { '{vm="vm0",device="tmem"}': 12, '{vm="vm0",device="blk"}': 3 }, 'per VM and device; not the host sums');
  t.same([...samples(r.body, 'tmem_worker_loop_iterations_total')], [['', 5]]);
  t.same([...samples(r.body, 'tmem_worker_moved_bytes_total')], [['', 8192]]);
  t.same([...samples(r.body, 'tmem_op_put_page_total')], [['{vm="vm0",device="tmem"}', 7]]);
  t.same([...samples(r.body, 'tmem_worker_up')], [['', 1]]);
  t.same([...samples(r.body, 'tmem_worker_commands_in_flight')], [['', 0]]);
  t.same([...samples(r.body, 'tmem_store_capacity_pages')], [['', 1000]]);
  t.same([...samples(r.body, 'tmem_store_free_pages')], [['', 880]]);
  t.same([...samples(r.body, 'tmem_store_freeable_pages')], [['', 80]], 'freeable = ephemeral + pending reclaim');
  t.same(Object.fromEntries(samples(r.body, 'tmem_store_host_pages')), { '{kind="ephemeral"}': 60, '{kind="persistent"}': 40, '{kind="pending"}': 20 });
  t.same([...samples(r.body, 'tmem_store_persistent_limit_pages')], [['{vm="vm0"}', 100]]);
  t.same(Object.fromEntries(samples(r.body, 'tmem_vm_maxmem_bytes')), { '{vm="vm0"}': 2147483648, '{vm="vm-b"}': 1073741824 });
  t.same(Object.fromEntries(samples(r.body, 'tmem_vm_connected')), { '{vm="vm0"}': 1, '{vm="vm-b"}': 0 });
  t.same(Object.fromEntries(samples(r.body, 'tmem_vm_frozen')), { '{vm="vm0"}': 0, '{vm="vm-b"}': 1 });
  t.same(Object.fromEntries(samples(r.body, 'tmem_vm_queues')), { '{vm="vm0",state="running"}': 2, '{vm="vm0",state="stopped"}': 1, '{vm="vm0",state="broken"}': 1 }, 'queues of both devices, each once');
  t.same([...samples(r.body, 'tmem_guests_connected')], [['', 1]]);
  t.same([...samples(r.body, 'tmem_stats_up')], [['', 1]]);
  t.ok(samples(r.body, 'process_cpu_seconds_total').size === 1 && samples(r.body, 'process_resident_memory_bytes').size === 1, 'process metrics');
  t.ok(samples(r.body, 'nodejs_eventloop_lag_seconds').size === 1, 'event loop lag');
  t.equal(samples(r.body, 'nodejs_active_handles_total').size, 0, "prom-client's gauges named _total are left out (promtool refuses them)");
  // the snapshot changes: the next scrape shows it (computed at scrape time, nothing cached)
  SNAP.guests[0]!.store!.puts = 25;
  const r2 = await scrape(a.url);
  t.same([...samples(r2.body, 'tmem_store_puts_total')], [['{vm="vm0"}', 25]]);
  t.equal(calls, 2, 'one stats request per scrape');
  t.equal((await scrape(a.url.replace('/metrics', '/nope'))).status, 404);
  t.equal((await fetch(a.url, { method: 'POST' })).status, 405);
  t.match((await scrape(a.url.replace('/metrics', '/'))).body, /href="\/metrics"/);
  const head = await fetch(a.url, { method: 'HEAD' });
  t.equal(head.status, 200);
});

t.test('a late data plane: the scrape answers in time with tmem_stats_up 0; other requests are served meanwhile', async (t) => {
  const metrics = new TmemMetrics(TABLE);
  let calls = 0;
  let release: (v: unknown) => void = () => {};
  const never = new Promise((r) => (release = r));
  const lines: string[] = [];
  const log = { ...silentLogger, warn: (m: string) => void lines.push(m) };
  let inFlight = 1;
  const srv = new MetricsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics, stats: () => (calls++, never), local: () => ({ workerAlive: inFlight === 0, commandsInFlight: inFlight }), log, statsTimeoutMs: 400 });
  const a = await srv.start();
  t.teardown(async () => {
    release(SNAP);
    await srv.stop();
  });
  const first = scrape(a.url);
  const second = scrape(a.url);
  // while both wait for the stats, the server (the event loop) answers at once
  const idx = await scrape(a.url.replace('/metrics', '/'));
  t.equal(idx.status, 200);
  t.ok(idx.ms < 300, `another request answered while the scrapes wait (${idx.ms.toFixed(1)} ms)`);
  const [r1, r2] = await Promise.all([first, second]);
  for (const r of [r1, r2]) {
    t.equal(r.status, 200);
    t.same([...samples(r.body, 'tmem_stats_up')], [['', 0]], 'tmem_stats_up 0');
    t.equal(samples(r.body, 'tmem_store_puts_total').size, 0, 'no tmem numbers from a snapshot that did not come');
    t.equal(samples(r.body, 'process_cpu_seconds_total').size, 1, 'process metrics still');
    t.same([...samples(r.body, 'tmem_worker_up')], [['', 0]], "the main thread's facts still: the worker is late");
    t.same([...samples(r.body, 'tmem_worker_commands_in_flight')], [['', 1]]);
    t.equal(promtool(r.body).status, 0, 'promtool passes on it too');
    t.ok(r.ms < 2000, `answered after ${r.ms.toFixed(0)} ms (stats timeout 400 ms)`);
  }
  t.equal(calls, 1, 'the two scrapes shared one stats request');
  t.equal(lines.length, 1, 'one log line, not one per scrape');
  t.match(lines[0], /metrics: scrape served without tmem metrics \(tmem_stats_up 0\): the data plane did not answer within 400 ms/);
  // Prometheus' own timeout header shortens the wait
  const h = await scrape(a.url, { 'X-Prometheus-Scrape-Timeout-Seconds': '0.5' });
  t.ok(h.ms < 450, `within Prometheus' scrape timeout (${h.ms.toFixed(0)} ms)`);
  // once the data plane answers, scrapes have numbers again
  release(SNAP);
  inFlight = 0;
  await new Promise((r) => setTimeout(r, 10));
  const ok = await scrape(a.url);
  t.same([...samples(ok.body, 'tmem_stats_up')], [['', 1]]);
  t.same([...samples(ok.body, 'tmem_worker_up')], [['', 1]]);
  // a stats call that throws is the same as a late one
  const srv2 = new MetricsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics, stats: () => Promise.reject(new Error('worker gone')), log: silentLogger });
  const b = await srv2.start();
  t.teardown(() => srv2.stop());
  t.same([...samples((await scrape(b.url)).body, 'tmem_stats_up')], [['', 0]]);
});

t.test('listen failures: one line each', async (t) => {
  const metrics = new TmemMetrics(TABLE, { processMetrics: false });
  const busy = createServer();
  await new Promise<void>((r) => busy.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  t.teardown(() => busy.close());
  const port = (busy.address() as { port: number }).port;
  const fail = async (host: string, p: number, re: RegExp) => {
    const srv = new MetricsServer({ listen: { host, port: p }, metrics, stats: () => SNAP, log: silentLogger });
    try {
      await srv.start();
      await srv.stop();
      t.fail(`${host}:${p}: listened`);
    } catch (e) {
      t.ok(e instanceof MetricsListenError, `${host}:${p}: a MetricsListenError`);
      t.match((e as Error).message, re);
      t.notOk((e as Error).message.includes('\n'), 'one line');
    }
  };
  await fail('127.0.0.1', port, new RegExp(`^cannot serve metrics on 127\\.0\\.0\\.1:${port} is in use \\(another process listens on it\\)`));
  await fail('192.0.2.1', 9850, /^cannot serve metrics on 192\.0\.2\.1:9850: the address is not one of this host's \(EADDRNOTAVAIL\)/);
});

// ---- the built daemon: a guest's worker command is late (test hook), the endpoint answers meanwhile

t.test('live tmemd: while the worker is stalled on a guest command, /metrics answers in time (tmem_stats_up 0, tmem_worker_up 0)', async (t) => {
  const { spawn } = await import('node:child_process');
  const { existsSync, mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { buildLoadgen, LOADGEN, TMEMD, UNTRACED } = await import('./loadgen/harness.js');
  t.ok(existsSync(TMEMD), `${TMEMD} is built`);
  buildLoadgen();
  const dir = mkdtempSync(join(tmpdir(), 'tmem-metrics-stall-'));
  const sock = join(dir, 'vm.sock');
  let log = '';
  // the worker stalls 9 s when it maps this guest's memory table (longer than the 5 s command timeout)
  const d = spawn(UNTRACED[0]!, [...UNTRACED.slice(1), process.execPath, TMEMD, '--vm', `name=lg,socket=${sock},maxmem=1G`, '--capacity', '64M', '--queues-mode', 'notify', '--control', join(dir, 'ctl.sock'), '--metrics-listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_ENV: 'test', TMEMD_TEST_HOOKS: 'stall:lg:setMemTable:9000' },
  });
  d.stdout.setEncoding('utf8').on('data', (s: string) => (log += s));
  d.stderr.setEncoding('utf8').on('data', (s: string) => (log += s));
  const dExit = new Promise((r) => d.once('exit', r));
  const lg = spawn(LOADGEN, ['verify', '--socket', sock, '--queues', '1', '--ops', '1000', '--timeout-ms', '30000'], { stdio: 'ignore' });
  const lgExit = new Promise((r) => lg.once('exit', r));
  t.teardown(async () => {
    lg.kill('SIGKILL');
    d.kill('SIGTERM');
    await Promise.all([dExit, lgExit]);
    rmSync(dir, { recursive: true, force: true });
  });
  const until = async (re: RegExp, ms: number) => {
    const end = Date.now() + ms;
    while (!re.test(log)) {
      if (d.exitCode !== null) throw new Error(`tmemd exited: ${log}`);
      if (Date.now() > end) throw new Error(`no ${re}: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await until(/metrics on http:\/\/\S+\/metrics/, 30_000);
  const url = /metrics on (http:\/\/\S+\/metrics)/.exec(log)![1]!;
  await until(/vm lg: guest memory|SET_MEM_TABLE/, 30_000).catch(() => undefined);
  // the worker is now stalled (or about to be): scrapes keep answering within the stats timeout
  const seen = { statsDown: false, workerDown: false };
  const end = Date.now() + 8000;
  let slowest = 0;
  while (Date.now() < end && !(seen.statsDown && seen.workerDown)) {
    const r = await scrape(url);
    slowest = Math.max(slowest, r.ms);
    t.equal(r.status, 200, 'answered');
    if (samples(r.body, 'tmem_stats_up').get('') === 0) seen.statsDown = true;
    if (samples(r.body, 'tmem_worker_up').get('') === 0) seen.workerDown = true;
    await new Promise((r) => setTimeout(r, 300));
  }
  t.ok(seen.statsDown, 'a scrape during the stall: tmem_stats_up 0 (no stale numbers)');
  t.ok(seen.workerDown, 'once the command is overdue: tmem_worker_up 0');
  t.ok(slowest < 3000, `every scrape answered within ${slowest.toFixed(0)} ms (stats timeout 2 s)`);
  // after the stall the worker answers again
  const back = Date.now() + 20_000;
  let up = 0;
  while (Date.now() < back && up !== 1) {
    await new Promise((r) => setTimeout(r, 500));
    up = samples((await scrape(url)).body, 'tmem_stats_up').get('') ?? 0;
  }
  t.equal(up, 1, 'after the stall: tmem_stats_up 1 again');
});

t.test('tmemd: a metrics port in use, an address not on this host, a malformed address: one line, non-zero exit, sockets removed', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const { existsSync, mkdtempSync, readdirSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { TMEMD } = await import('./loadgen/harness.js');
  const dir = mkdtempSync(join(tmpdir(), 'tmem-metrics-bad-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const busy = createServer();
  await new Promise<void>((r) => busy.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  t.teardown(() => busy.close());
  const port = (busy.address() as { port: number }).port;
  const run = (listen: string) =>
    spawnSync(process.execPath, [TMEMD, '--vm', `name=a,socket=${join(dir, 'a.sock')},maxmem=1G`, '--capacity', '16M', '--control', join(dir, 'c.sock'), '--metrics-listen', listen], { encoding: 'utf8', timeout: 60_000 });
  t.ok(existsSync(TMEMD), 'tmemd is built');
  for (const [listen, code, re] of [
    [`127.0.0.1:${port}`, 1, new RegExp(`^tmemd: cannot serve metrics on 127\\.0\\.0\\.1:${port} is in use \\(another process listens on it\\): give another port with --metrics-listen$`, 'm')],
    ['192.0.2.1:9850', 1, /^tmemd: cannot serve metrics on 192\.0\.2\.1:9850: the address is not one of this host's \(EADDRNOTAVAIL\)/m],
    ['localhost', 2, /^tmemd: --metrics-listen: 'localhost' is not HOST:PORT \(e\.g\. 127\.0\.0\.1:9850 or \[::1\]:9850\) \(see tmemd --help\)\n$/],
  ] as [string, number, RegExp][]) {
    const r = run(listen);
    t.equal(r.status, code, `--metrics-listen ${listen}: exit ${code}`);
    t.match(r.stderr, re, 'the line says why');
    t.equal(r.stderr.split('\n').filter((l) => /^tmemd: /.test(l)).length, 1, 'one error line');
    t.notMatch(r.stderr, /at .*\.js:\d+|Error:/, 'no stack trace');
    t.same(readdirSync(dir), [], 'no socket left behind');
  }
});
