// Live limits: `tmemctl set capacity=SIZE` and `tmemctl set VM maxmem=SIZE`.
// The store's rules first (shrinking evicts ephemeral pages oldest first,
// persistent pages above a lowered limit are kept and new pages refused, as
// Xen's tmem did), then the command line, then a live tmemd under a load.
import t from 'tap';
import { TMEM_POOL_PERSIST as PERSIST, TMEM_S_MISS, TMEM_S_NOSPACE, TMEM_S_OK } from '../shared/abi.js';
import { INFO_CAPACITY_PAGES, INFO_LENGTH, INFO_PERSISTENT_LIMIT_PAGES, TmemStore } from '../host/tmem/store/store.js';

const NO_UUID = new Uint8Array(16);
const oid = (a: number) => new Uint32Array([a, 0, 0, 0, 0, 0]);
const page = (fill: number) => new Uint8Array(4096).fill(fill);
const dst = new Uint8Array(4096);

function store(capacity: number) {
  const s = new TmemStore({ capacityPages: capacity, maxPoolsPerGuest: 4 });
  const g = s.addGuest({ name: 'vm1', maxmemPages: 10_000, ramPages: 100, shareGroup: null });
  const eph = s.newPool(g, 0, 4096, NO_UUID, 0, false);
  const per = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  return { s, g, eph, per };
}
const host = (s: TmemStore) => s.stats() as { capacityPages: number; capacityMaxPages: number; freePages: number; ephemeralPages: number; persistentPages: number };

t.test('store: shrinking evicts ephemeral pages, oldest first; growing gives room at once', async (t) => {
  const { s, g, eph, per } = store(64);
  for (let i = 0; i < 20; i++) t.equal(s.putPage(g, per, oid(1), i, page(i), 0), TMEM_S_OK);
  for (let i = 0; i < 40; i++) t.equal(s.putPage(g, eph, oid(2), i, page(100 + i), 0), TMEM_S_OK);
  t.same([host(s).freePages, host(s).ephemeralPages, host(s).persistentPages], [4, 40, 20]);
  const r = s.setCapacity(30);
  t.same(r, { evicted: 30, reclaimed: 0, overPages: 0 }, '60 held, capacity 30: 30 ephemeral pages evicted');
  t.same([host(s).capacityPages, host(s).capacityMaxPages, host(s).freePages, host(s).ephemeralPages, host(s).persistentPages], [30, 64, 0, 10, 20]);
  t.equal(s.getPage(g, eph, oid(2), 29, 0, dst, 0), TMEM_S_MISS, 'the oldest ephemeral pages went (a MISS)');
  t.equal(s.getPage(g, eph, oid(2), 30, 0, dst, 0), TMEM_S_OK, 'the newest stayed');
  t.equal(dst[0], 130, 'with their data');
  for (let i = 0; i < 20; i++) t.equal(s.getPage(g, per, oid(1), i, 0, dst, 0) === TMEM_S_OK && dst[0] === i, true, `persistent page ${i} kept`);
  const info = new Float64Array(INFO_LENGTH);
  s.info(g, info);
  t.equal(info[INFO_CAPACITY_PAGES], 30, 'INFO tells the guest the capacity in force');
  // the GET took its page (private ephemeral pools are exclusive): 29 held, room for one
  t.equal(s.putPage(g, per, oid(1), 100, page(1), 0), TMEM_S_OK);
  t.equal(host(s).ephemeralPages, 9, 'a free page: nothing evicted');
  // at the capacity: a persistent put evicts an ephemeral page, as at full capacity
  t.equal(s.putPage(g, per, oid(1), 101, page(1), 0), TMEM_S_OK);
  t.same([host(s).ephemeralPages, host(s).persistentPages, host(s).freePages], [8, 22, 0], 'one ephemeral page made room');
  t.same(s.setCapacity(64), { evicted: 0, reclaimed: 0, overPages: 0 });
  t.equal(host(s).freePages, 64 - 8 - 22);
  for (let i = 0; i < 30; i++) t.equal(s.putPage(g, eph, oid(3), i, page(1), 0), TMEM_S_OK, `room again after growing (${i})`);
  t.equal(s.setCapacity(65), null, 'above what the store was sized for: refused, nothing changed');
  t.equal(s.setCapacity(-1), null);
  t.equal(s.setCapacity(1.5), null);
  t.equal(host(s).capacityPages, 64);
});

t.test('store: persistent pages above a lowered capacity are kept; new pages refused until they drop below', async (t) => {
  const { s, g, eph, per } = store(64);
  for (let i = 0; i < 40; i++) s.putPage(g, per, oid(1), i, page(i), 0);
  for (let i = 0; i < 10; i++) s.putPage(g, eph, oid(2), i, page(i), 0);
  t.same(s.setCapacity(32), { evicted: 10, reclaimed: 0, overPages: 8 }, 'every ephemeral page evicted, 8 persistent pages above the capacity');
  t.same([host(s).persistentPages, host(s).ephemeralPages, host(s).freePages], [40, 0, 0]);
  t.equal(s.putPage(g, per, oid(1), 1000, page(1), 0), TMEM_S_NOSPACE, 'a new persistent page: NOSPACE');
  t.equal(s.putPage(g, eph, oid(2), 1000, page(1), 0), TMEM_S_NOSPACE, 'a new ephemeral page: NOSPACE');
  t.equal(s.putPage(g, per, oid(1), 5, page(55), 0), TMEM_S_OK, 'an overwrite in place takes no page: allowed');
  for (let i = 0; i < 40; i++) t.equal(s.getPage(g, per, oid(1), i, 0, dst, 0) === TMEM_S_OK && dst[0] === (i === 5 ? 55 : i), true, `page ${i} intact`);
  for (let i = 0; i < 9; i++) s.flushPage(g, per, oid(1), i);
  t.equal(host(s).persistentPages, 31);
  t.equal(s.putPage(g, per, oid(1), 1000, page(1), 0), TMEM_S_OK, 'below the capacity again: puts accepted');
  t.equal(s.putPage(g, per, oid(1), 1001, page(1), 0), TMEM_S_NOSPACE, 'and refused again at it (no ephemeral page left to evict)');
});

t.test('store: destroyed pools are reclaimed before any live page is evicted', async (t) => {
  const { s, g, eph, per } = store(64);
  for (let i = 0; i < 30; i++) s.putPage(g, per, oid(1), i, page(i), 0);
  for (let i = 0; i < 20; i++) s.putPage(g, eph, oid(2), i, page(i), 0);
  s.destroyPool(g, per); // 30 pages pending reclaim
  t.same(s.setCapacity(25), { evicted: 0, reclaimed: 25, overPages: 0 }, '50 held: 25 pages of the destroyed pool freed, just enough');
  t.equal(host(s).ephemeralPages, 20, 'no ephemeral page evicted');
  t.same(s.setCapacity(15), { evicted: 5, reclaimed: 5, overPages: 0 }, 'then the rest of the pending pages, then the oldest ephemeral pages');
});

t.test('store: a lowered maxmem keeps the persistent pages above it and refuses new ones', async (t) => {
  const { s, g, per } = store(256);
  s.setMaxmem(g, 100 + 50);
  for (let i = 0; i < 50; i++) t.equal(s.putPage(g, per, oid(1), i, page(i), 0), TMEM_S_OK);
  t.equal(s.putPage(g, per, oid(1), 50, page(1), 0), TMEM_S_NOSPACE, 'at the limit');
  s.setMaxmem(g, 100 + 20);
  const info = new Float64Array(INFO_LENGTH);
  s.info(g, info);
  t.equal(info[INFO_PERSISTENT_LIMIT_PAGES], 20);
  for (let i = 0; i < 50; i++) t.equal(s.getPage(g, per, oid(1), i, 0, dst, 0) === TMEM_S_OK && dst[0] === i, true, `page ${i} kept above the lowered limit`);
  t.equal(s.putPage(g, per, oid(1), 60, page(1), 0), TMEM_S_NOSPACE, 'new pages refused');
  s.setMaxmem(g, 100 + 80);
  t.equal(s.putPage(g, per, oid(1), 60, page(1), 0), TMEM_S_OK, 'raised: accepted again');
});

// ---- the command line: every bad input is one line and exit 2, before anything is sent

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const TMEMCTL = join(ROOT, 'dist/host/tmemctl.js');

t.test('tmemctl set: bad input is one line and exit 2, nothing sent', async (t) => {
  t.ok(existsSync(TMEMCTL), `${TMEMCTL} is built (npm run build)`);
  // a control path where nothing listens: a request that got through would fail with exit 1 instead
  const ctl = '/nonexistent-folder/tmemd.sock';
  const cases: [string[], RegExp][] = [
    [['set'], /^tmemctl: set takes capacity=SIZE, or a VM name and maxmem=SIZE \(see tmemctl --help\)\n$/],
    [['set', 'vm0'], /^tmemctl: set vm0: nothing to set \(maxmem=SIZE\)/],
    [['set', 'vm0', 'maxmem=lots'], /^tmemctl: set: maxmem: 'lots' is not a size \(use bytes or a number with K, M, G, T, e\.g\. 512M or 2G\)/],
    [['set', 'vm0', 'maxmem=1.5G'], /^tmemctl: set: maxmem: '1\.5G' is not a size/],
    [['set', 'vm0', 'maxmem='], /^tmemctl: set: maxmem: '' is not a size/],
    [['set', 'capacity=-1G'], /^tmemctl: set: capacity: '-1G' is not a size/],
    [['set', 'vm0', 'colour=red'], /^tmemctl: set vm0: unknown key 'colour' \(a VM: maxmem\)/],
    [['set', 'colour=red'], /^tmemctl: set: unknown key 'colour' \(the host: capacity\)/],
    [['set', 'vm0', 'capacity=1G'], /^tmemctl: set vm0: capacity is the host's, not a VM's: tmemctl set capacity=SIZE/],
    [['set', 'maxmem=1G'], /^tmemctl: set: maxmem is a VM's: tmemctl set NAME maxmem=SIZE/],
    [['set', 'vm0', 'maxmem=1G', 'maxmem=2G'], /^tmemctl: set: maxmem given twice/],
    [['set', 'vm0', 'maxmem'], /^tmemctl: set: 'maxmem' is not key=value/],
    [['set', 'capacity=1G', 'maxmem=1G'], /^tmemctl: set: maxmem is a VM's/],
    [['sett', 'capacity=1G'], /^tmemctl: unknown command 'sett' \(guests, stats, top, freeze, thaw, flush, share-group, set\)/],
    [['--frob', 'set', 'capacity=1G'], /^tmemctl: unknown option --frob/],
    [['--json=yes', 'stats'], /^tmemctl: --json takes no value/],
    [['--control'], /^tmemctl: --control needs a value/],
    [['constructor'], /^tmemctl: unknown command 'constructor'/],
  ];
  for (const [args, re] of cases) {
    const r = spawnSync(process.execPath, [TMEMCTL, '--control', ctl, ...args], { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, re, args.join(' '));
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
    t.equal(r.stdout, '', 'nothing on stdout');
  }
  const ok = spawnSync(process.execPath, [TMEMCTL, '--control', ctl, 'set', 'vm0', 'maxmem=2G'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(ok.status, 1, 'a good request goes to the daemon (none here: exit 1)');
  t.match(ok.stderr, /cannot reach tmemd on \/nonexistent-folder\/tmemd\.sock/);
});

// ---- a live tmemd under a load: set capacity= and set VM maxmem=, logged, in stats and in metrics

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { buildLoadgen, LOADGEN, TMEMD, UNTRACED } from './loadgen/harness.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function ctl(control: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [TMEMCTL, '--control', control, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Stats {
  host: { store: Record<string, number> };
  guests: { name: string; connected: boolean; maxmemBytes: string; store: Record<string, number> | null }[];
}
function stats(control: string): Stats {
  const r = ctl(control, '--json', 'stats');
  if (r.status !== 0) throw new Error(`tmemctl stats: ${r.stderr}`);
  return JSON.parse(r.stdout) as Stats;
}

async function metric(url: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(url)).text();
  const m = new RegExp(`^${name}${labels.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

t.test('live: tmemctl set capacity= and set VM maxmem= under a load; bad requests change nothing', async (t) => {
  t.ok(existsSync(TMEMD), `${TMEMD} is built`);
  buildLoadgen();
  const dir = mkdtempSync(join(tmpdir(), 'tmemctl-set-'));
  const sock = join(dir, 'vm.sock');
  const control = join(dir, 'ctl.sock');
  let log = '';
  const d = spawn(UNTRACED[0]!, [...UNTRACED.slice(1), process.execPath, TMEMD, '--vm', `name=lg,socket=${sock},maxmem=1G`, '--capacity', '64M', '--queues-mode', 'notify', '--queues', '2', '--control', control, '--metrics-listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  d.stdout.setEncoding('utf8').on('data', (s: string) => (log += s));
  d.stderr.setEncoding('utf8').on('data', (s: string) => (log += s));
  const dExit = new Promise((r) => d.once('exit', r));
  let lgOut = '';
  let lg: ReturnType<typeof spawn> | null = null;
  t.teardown(async () => {
    lg?.kill('SIGKILL');
    d.kill('SIGTERM');
    await dExit;
    rmSync(dir, { recursive: true, force: true });
  });
  const waitLog = async (re: RegExp, ms = 30_000) => {
    const end = Date.now() + ms;
    while (!re.test(log)) {
      if (d.exitCode !== null) throw new Error(`tmemd exited: ${log}`);
      if (Date.now() > end) throw new Error(`no ${re} in the log: ${log}`);
      await sleep(50);
    }
  };
  await waitLog(/ready:/);
  const url = /metrics on (http:\/\/\S+\/metrics)/.exec(log)![1]!;

  // bad requests: one line, exit 1 (the daemon refused) or 2 (usage), nothing changed
  const bad: [string[], number, RegExp][] = [
    [['set', 'nosuch', 'maxmem=1G'], 1, /^tmemctl: set: no VM named 'nosuch' \(known: lg\)\n$/],
    [['set', 'capacity=1G'], 1, /^tmemctl: set: capacity 1 GiB is more than tmemd was started with \(--capacity 64 MiB\): .*\n$/],
    [['set', 'capacity=100'], 1, /^tmemctl: set: capacity 100 B is less than one 4 KiB page\n$/],
    [['set', 'capacity=4097'], 1, /^tmemctl: set: capacity 4\.00 KiB \(4097 bytes\) is not a multiple of 4 KiB\n$/],
    [['set', 'lg', 'maxmem=12Q'], 2, /^tmemctl: set: maxmem: '12Q' is not a size/],
  ];
  for (const [args, code, re] of bad) {
    const r = ctl(control, ...args);
    t.equal(r.status, code, `${args.join(' ')}: exit ${code}`);
    t.match(r.stderr, re, args.join(' '));
  }
  const sBad = stats(control);
  t.equal(sBad.host.store.capacityPages, 16384, 'capacity unchanged after the bad requests');
  t.equal(sBad.guests[0]!.maxmemBytes, String(1n << 30n), 'maxmem unchanged');
  // a raw request with a key tmemctl would not send: refused whole
  const { requestDaemon } = await import('../host/control/client.js');
  const mixed = await requestDaemon(control, { cmd: 'set', name: 'lg', maxmem: String(512n << 20n), colour: 'red' }, 10_000);
  t.equal(mixed.ok, false, 'a set with an unknown key is refused');
  t.match(mixed.error, /unknown key 'colour'/);
  const mixed2 = await requestDaemon(control, { cmd: 'set', capacity: '32M', name: 'lg' }, 10_000);
  t.equal(mixed2.ok, false, 'capacity with a VM name is refused');
  t.equal(stats(control).guests[0]!.maxmemBytes, String(1n << 30n), 'nothing half-applied');
  t.equal(stats(control).host.store.capacityPages, 16384);

  // the load: mixed PUT/GET/FLUSH on a persistent and an ephemeral pool, every GET checked, a final
  // sweep that every persistent page PUT successfully and not flushed is still there
  lg = spawn(LOADGEN, ['verify', '--socket', sock, '--queues', '2', '--depth', '8', '--ops', '4000000', '--objects', '64', '--indexes', '64', '--timeout-ms', '60000', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  lg.stdout!.setEncoding('utf8').on('data', (s: string) => (lgOut += s));
  lg.stderr!.setEncoding('utf8').on('data', (s: string) => (lgOut += s));
  const lgExit = new Promise<number | null>((r) => lg!.once('exit', (c) => r(c)));
  // wait until it holds pages of both kinds
  let s0: Stats;
  for (let i = 0; ; i++) {
    s0 = stats(control);
    const g = s0.guests[0]!.store;
    if (g && g.persistentPages! > 1000 && g.ephemeralPages! > 1000) break;
    if (i > 600) throw new Error(`no pages after a minute: ${JSON.stringify(s0.guests[0])}`);
    await sleep(100);
  }
  t.equal(s0.host.store.capacityPages, 16384, '64M = 16384 pages');
  t.equal(await metric(url, 'tmem_store_capacity_pages'), 16384, 'metrics: the capacity at start');

  // shrink the capacity below what is held: ephemeral pages go, persistent stay
  const before = stats(control);
  const held = before.host.store.ephemeralPages! + before.host.store.persistentPages! + before.host.store.reclaimPendingPages!;
  const target = Math.max(1, before.host.store.persistentPages! + 10) * 4096;
  const shrink = ctl(control, 'set', `capacity=${target}`);
  t.equal(shrink.status, 0, `set capacity=${target}: ${shrink.stderr}`);
  t.match(shrink.stdout, /^capacity \S+ \S+ \(was 64 MiB; at most 64 MiB\): \d+ ephemeral pages evicted, \d+ pages of destroyed pools freed/);
  await waitLog(/control: capacity 64 MiB -> \S+ \S+ \(\d+ pages\): \d+ ephemeral pages evicted/);
  const after = stats(control);
  t.equal(after.host.store.capacityPages, target / 4096, 'stats: the new capacity');
  t.ok(after.host.store.persistentPages! >= before.host.store.persistentPages! - 2000, 'persistent pages kept (the load flushes some meanwhile)');
  t.ok(held > target / 4096, `it held ${held} pages, more than the new capacity ${target / 4096}`);
  t.equal(await metric(url, 'tmem_store_capacity_pages'), target / 4096, 'metrics: the new capacity');
  t.match(ctl(control, 'stats').stdout, new RegExp(`capacity\\s+${target / 4096} \\(.*\\), at most 16384`), 'tmemctl stats: the claims block shows it');

  // lower the VM's maxmem below what it holds: pages kept, new persistent puts refused
  const pBefore = stats(control).guests[0]!.store!.persistentPages!;
  const lower = ctl(control, 'set', 'lg', 'maxmem=65M'); // RAM is 64M: a limit of 256 pages
  t.equal(lower.status, 0, `set lg maxmem=65M: ${lower.stderr}`);
  const atSet = /^lg: maxmem 65 MiB \(was 1 GiB\); persistent limit 256 pages, (\d+) held(: the pages above it are kept, new persistent pages refused until below it)?\n$/.exec(lower.stdout);
  t.ok(atSet, `the reply: ${lower.stdout.trim()}`);
  t.ok(pBefore > 256, `it held ${pBefore} persistent pages before`);
  t.ok(Number(atSet?.[1]) > 256 && atSet?.[2] !== undefined, 'at the change it still held them all: none dropped, the reply says they are kept');
  await waitLog(/control: vm lg maxmem 1 GiB -> 65 MiB/);
  const low = stats(control).guests[0]!;
  t.equal(low.maxmemBytes, String(65n << 20n));
  t.equal(low.store!.persistentLimitPages, 256, 'stats: the limit follows');
  t.equal(await metric(url, 'tmem_vm_maxmem_bytes', '{vm="lg"}'), 65 * 2 ** 20, 'metrics: maxmem');
  t.equal(await metric(url, 'tmem_store_persistent_limit_pages', '{vm="lg"}'), 256, 'metrics: the persistent limit');
  const refusedBefore = low.store!.putsNoSpace!;
  await sleep(1000);
  t.ok(stats(control).guests[0]!.store!.putsNoSpace! > refusedBefore, 'new persistent puts are refused (NOSPACE)');
  // raise both again
  t.equal(ctl(control, 'set', 'lg', 'maxmem=1G').status, 0);
  t.equal(ctl(control, 'set', 'capacity=64M').status, 0);
  t.equal(stats(control).host.store.capacityPages, 16384);

  // the load finishes and its final sweep finds every persistent page it was told was stored
  const code = await lgExit;
  t.equal(code, 0, `the load generator verified every page (exit ${code}): ${lgOut.split('\n').filter((l) => /PASS|BAD|error/i.test(l)).join(' | ')}`);
  const j = JSON.parse(lgOut.trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{}') as Record<string, number>;
  t.ok(j.putNospace! > 0, `puts refused while the limits were low: ${j.putNospace}`);
  t.ok(d.exitCode === null, 'tmemd still runs');
});
