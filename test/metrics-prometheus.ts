// A real Prometheus (Debian's prometheus package) scrapes the built tmemd
// every second while the load generator (a C vhost-user front-end, as QEMU
// and the guest driver) stores and loads pages. The test asks Prometheus'
// HTTP API: rate() of puts is above zero, and with the load paused (the
// front-end stopped with SIGSTOP, still connected, its pages held) the pages
// gauges equal what `tmemctl stats` says. promtool check metrics passes on a
// live scrape taken under load. Nothing is skipped: without prometheus or
// promtool the test fails and says what to install.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildLoadgen, LOADGEN, ROOT, TMEMD, UNTRACED } from './loadgen/harness.js';

const TMEMCTL = join(ROOT, 'dist/host/tmemctl.js');

function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** A free TCP port on loopback (bound and released: Prometheus binds it a moment later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A child process with its output collected. */
class Proc {
  readonly p: ChildProcess;
  out = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  constructor(cmd: string, args: string[]) {
    this.p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.p.stdout!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.p.stderr!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.exited = new Promise((r) => this.p.once('exit', (code, signal) => r({ code, signal })));
  }
  get alive(): boolean {
    return this.p.exitCode === null && this.p.signalCode === null;
  }
  async waitFor(re: RegExp, ms: number, what: string): Promise<RegExpExecArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.out);
      if (m) return m;
      if (!this.alive) throw new Error(`${what} exited (${this.p.exitCode ?? this.p.signalCode}) before ${re}:\n${this.out.slice(-3000)}`);
      if (Date.now() > end) throw new Error(`${what}: no ${re} within ${ms} ms:\n${this.out.slice(-3000)}`);
      await sleep(50);
    }
  }
  async stop(): Promise<void> {
    if (this.alive) {
      this.p.kill('SIGCONT');
      this.p.kill('SIGTERM');
    }
    const timer = setTimeout(() => this.p.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

type Vector = { metric: Record<string, string>; value: [number, string] }[];

/** An instant query of Prometheus' HTTP API. */
async function query(base: string, q: string): Promise<Vector> {
  const r = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`);
  const j = (await r.json()) as { status: string; data?: { resultType: string; result: Vector }; error?: string };
  if (j.status !== 'success' || !j.data) throw new Error(`query ${q}: ${j.error ?? r.status}`);
  return j.data.result;
}

/** The one value of a query with one series (NaN when none). */
async function value(base: string, q: string): Promise<number> {
  const v = await query(base, q);
  return v.length === 1 ? Number(v[0]!.value[1]) : NaN;
}

function tmemctlStats(control: string): { host: { store: Record<string, number> }; guests: { name: string; connected: boolean; store: Record<string, number> | null }[] } {
  const r = spawnSync(process.execPath, [TMEMCTL, '--control', control, '--json', 'stats'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`tmemctl stats: exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

t.test('Prometheus scrapes tmemd under load: rate of puts > 0, pages gauges = tmemctl stats, promtool passes', async (t) => {
  const prometheus = which('prometheus');
  const promtool = which('promtool');
  t.ok(prometheus && promtool, `prometheus and promtool are installed (Debian package prometheus; npm run setup installs it): ${prometheus}, ${promtool}`);
  if (!prometheus || !promtool) return;
  t.ok(existsSync(TMEMD), `${TMEMD} is built`);
  buildLoadgen();

  const dir = mkdtempSync(join(tmpdir(), 'tmem-metrics-'));
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const sock = join(dir, 'vm.sock');
  const control = join(dir, 'ctl.sock');
  const d = new Proc(UNTRACED[0]!, [...UNTRACED.slice(1), process.execPath, TMEMD, '--vm', `name=lg,socket=${sock},maxmem=1G`, '--capacity', '256M', '--queues-mode', 'notify', '--queues', '2', '--control', control, '--metrics-listen', '127.0.0.1:0']);
  procs.push(d);
  const url = (await d.waitFor(/metrics on (http:\/\/127\.0\.0\.1:(\d+)\/metrics)/, 30_000, 'tmemd'))[1]!;
  await d.waitFor(/ready:/, 30_000, 'tmemd');
  const target = new URL(url).host;

  // the load: 2 queues of mixed PUT/GET/FLUSH on a persistent and an ephemeral pool, every GET verified
  const lg = new Proc(LOADGEN, ['verify', '--socket', sock, '--queues', '2', '--depth', '8', '--ops', '200000000', '--timeout-ms', '60000']);
  procs.push(lg);
  await lg.waitFor(/verify: \d+ queue/, 30_000, 'loadgen');

  const promPort = await freePort();
  const base = `http://127.0.0.1:${promPort}`;
  writeFileSync(
    join(dir, 'prometheus.yml'),
    ['global:', '  scrape_interval: 1s', '  scrape_timeout: 900ms', '  evaluation_interval: 1s', 'scrape_configs:', '  - job_name: tmemd', '    static_configs:', `      - targets: ['${target}']`, ''].join('\n'),
  );
  const prom = new Proc(prometheus, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn']);
  procs.push(prom);
  const readyBy = Date.now() + 60_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/-/ready`)).ok) break;
    } catch {
      /* not listening yet */
    }
    if (!prom.alive) throw new Error(`prometheus exited: ${prom.out.slice(-2000)}`);
    if (Date.now() > readyBy) throw new Error(`prometheus not ready within 60 s: ${prom.out.slice(-2000)}`);
    await sleep(200);
  }

  // a live scrape under load, through promtool
  const body = await (await fetch(url)).text();
  const pt = spawnSync(promtool, ['check', 'metrics'], { input: body, encoding: 'utf8' });
  t.equal(pt.status, 0, `promtool check metrics on a live scrape: ${(pt.stdout + pt.stderr).trim() || 'clean'}`);
  t.match(body, /^tmem_store_puts_total\{vm="lg"\} \d+$/m, 'the puts counter is in the scrape');

  // a few scrape intervals under load, then rate() over them
  let rate = NaN;
  let samples = 0;
  const rateBy = Date.now() + 60_000;
  while (!(rate > 0 && samples >= 5) && Date.now() < rateBy) {
    await sleep(1000);
    rate = await value(base, 'rate(tmem_store_puts_total{job="tmemd",vm="lg"}[5s])');
    samples = await value(base, 'count_over_time(tmem_store_puts_total{job="tmemd",vm="lg"}[1m])');
  }
  t.ok(samples >= 5, `${samples} scrapes of the puts counter under load`);
  t.ok(rate > 0, `rate(tmem_store_puts_total[5s]) = ${rate.toFixed(0)} puts/s`);
  t.equal(await value(base, 'min_over_time(up{job="tmemd"}[1m])'), 1, 'the target was up at every scrape');
  t.equal(await value(base, 'min_over_time(tmem_stats_up{job="tmemd"}[1m])'), 1, 'the data plane answered every scrape');
  t.equal(await value(base, 'tmem_vm_connected{job="tmemd",vm="lg"}'), 1, 'the guest is connected');
  t.ok(lg.alive, 'the load still runs');

  // pause the load (the front-end keeps its connection and the store its pages), let two scrapes land
  lg.p.kill('SIGSTOP');
  await sleep(2500);
  const st = tmemctlStats(control);
  const guest = st.guests.find((g) => g.name === 'lg');
  t.ok(guest?.connected && guest.store, 'tmemctl stats: the guest, connected, with store numbers');
  const gs = guest!.store!;
  t.ok(gs.persistentPages! > 0 && gs.ephemeralPages! > 0, `pages held: ${gs.persistentPages} persistent, ${gs.ephemeralPages} ephemeral`);
  t.equal(await value(base, 'tmem_store_persistent_pages{job="tmemd",vm="lg"}'), gs.persistentPages, 'persistent pages: Prometheus = tmemctl stats');
  t.equal(await value(base, 'tmem_store_ephemeral_pages{job="tmemd",vm="lg"}'), gs.ephemeralPages, 'ephemeral pages: Prometheus = tmemctl stats');
  t.equal(await value(base, 'tmem_store_puts_total{job="tmemd",vm="lg"}'), gs.puts, 'puts: Prometheus = tmemctl stats');
  t.equal(await value(base, 'tmem_store_host_pages{job="tmemd",kind="persistent"}'), st.host.store.persistentPages, 'host persistent pages');
  t.equal(await value(base, 'tmem_store_free_pages{job="tmemd"}'), st.host.store.freePages, 'host free pages');
  t.equal(await value(base, 'tmem_store_capacity_pages{job="tmemd"}'), 65536, 'capacity 256M = 65536 pages');
  t.equal(await value(base, 'tmem_store_persistent_limit_pages{job="tmemd",vm="lg"}'), gs.persistentLimitPages, 'persistent limit');
  t.equal(await value(base, 'rate(tmem_store_puts_total{job="tmemd",vm="lg"}[2s])'), 0, 'paused: no puts in the last 2 s');

  // the load goes on and finishes its verification (every GET returned what was PUT)
  lg.p.kill('SIGCONT');
  await sleep(1500);
  t.ok(lg.alive, 'the load runs again after the pause');
  t.ok(d.alive, 'tmemd still runs');
  t.notMatch(lg.out, /BAD|mismatch/i, 'the load generator found no wrong page');
});
