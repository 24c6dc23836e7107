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
//
// CPU per request: with notify mode in the run, tmemd (notify, one queue) then
// serves requests paced at a guest-like rate (--paced-rate, 20,000/s; PUT and
// GET alternately, depth 1; test/loadgen/paced.c), and tmemd's CPU over the
// paced requests (utime + stime of /proc/PID/stat, every thread) divided by
// their number is notifyCpuPerRequestUs: the median of --paced-runs runs (3),
// the min and each run beside it. Printed with the same run's context: what
// a minimal C backend pays per eventfd wake-up on this machine (a thread in
// poll(2) + read(2)), tmemd's CPU per second while idle, and the load
// generator's own CPU per request. --paced-only runs this part alone.
//
//   npm run bench:ring -- --noisy [--json] [--lat-ops N --rounds N --noise long,split,valid,blk-overflow --mode poll|notify]
//                                 [--noise ...,blk-ram,blk-overflow-cold --blk-overflow-dir DIR]
//
// Fairness instead: one tmemd serves two VMs. The quiet one (one queue)
// times PUT and GET round trips at depth 1 (p50/p99/max): alone, then beside
// a noisy neighbour that keeps 4 queues of 1024 entries full of one chain
// (test/loadgen/noisy.c): 'long' = 1024 readable descriptors the daemon
// cannot answer, 'split' = a valid PUT split over 1023 descriptors, 'valid'
// = plain 3-descriptor PUTs, 'blk-overflow' below (these four by default:
// about 20 s on the 2-core machine; 'blk-ram' and 'blk-overflow-cold' when
// --noise names them: all six about 60-75 s); --rounds times (3), each
// figure the median of the rounds (max: the largest); then alone again (the
// machine's drift). The bound (BOUND below) is checked and printed per row;
// it is a figure, not a test. The daemon's rule that makes it hold is in
// host/dataplane/engine.ts.
//
// 'blk-overflow' (README "Known limits": the overflow file is read and
// written on the one vring worker): the noisy guest is instead a third VM of
// the same tmemd with a tmem-blk disk of 256 MiB and maxmem 32M, driven by
// blk-loadgen (test/loadgen/blk.c: 2 queues x depth 16, every block of the
// 256 MiB span written once, then 50 % random reads, 50 % writes), so about
// 7/8 of its pages live in DIR/blk.overflow. The quiet guest is timed once
// the mixed phase runs; tmemd's blk counters (control socket) before and
// after give the noisy guest's requests/s and the overflow pages it read and
// wrote meanwhile. The file is on the filesystem of --blk-overflow-dir (a
// fresh folder in the temp folder by default, which must not be tmpfs for
// the cold kind); its pages there are in the host's page cache (fincore
// shows how many), so 'blk-overflow' measures pread/pwrite of cached pages.
// 'blk-overflow-cold' is the same with the file written back and its cached
// pages dropped (dd oflag=nocache conv=notrunc,fdatasync count=0: this file
// only, not the machine's whole cache) before the quiet guest is timed and
// every 100 ms meanwhile, so most of its reads go to the disk: a host that
// overflows is short of memory, and its page cache is too. 'blk-ram' is the
// control: the same disk and load on another VM with maxmem 1G, every page
// in RAM, no overflow file I/O (what any busy blk guest costs the quiet one).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, statfsSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const LOADGEN = join(root, 'test/loadgen/build/tmem-loadgen');
const BLK_LOADGEN = join(root, 'test/loadgen/build/blk-loadgen');
const TMEMD = join(root, 'dist/host/tmemd.js');

const argv = process.argv.slice(2);
/** Issue 10's targets: tmemd CPU per paced request, and the poll-mode latency at depth 1. */
const CPU_TARGET_US = 5;
const POLL_P50_TARGET_US = 2;
const POLL_P99_TARGET_US = 5;

const opt = { json: false, queues: 2, depth: 32, pages: 16384, latOps: 0, indirect: false, eventIdx: false, modes: ['poll', 'notify'], noisy: false, noise: ['long', 'split', 'valid', 'blk-overflow'], rounds: 3, pacedRate: 20000, pacedOps: 100000, pacedRuns: 3, pacedOnly: false, blkOverflowDir: null };
/** The noise kinds: noisy.c's chains, then a tmem-blk guest whose pages stay in RAM, or go to its overflow file (warm, then with the file's cache dropped). */
const BLK_KINDS = ['blk-ram', 'blk-overflow', 'blk-overflow-cold'];
const NOISE_KINDS = ['long', 'split', 'valid', ...BLK_KINDS];
/** statfs(2)'s f_type of tmpfs. */
const TMPFS_MAGIC = 0x01021994;
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
  else if (a === '--mode') {
    const m = val();
    if (m !== 'poll' && m !== 'notify') fail(`--mode: poll or notify, not '${m}'`);
    opt.modes = [m];
  } else if (a === '--noisy') opt.noisy = true;
  else if (a === '--rounds') opt.rounds = int(val());
  else if (a === '--paced-rate') opt.pacedRate = int(val());
  else if (a === '--paced-ops') opt.pacedOps = int(val());
  else if (a === '--paced-runs') opt.pacedRuns = int(val());
  else if (a === '--paced-only') opt.pacedOnly = true;
  else if (a === '--noise') {
    opt.noise = val().split(',');
    for (const k of opt.noise) if (!NOISE_KINDS.includes(k)) fail(`--noise: '${k}' is not one of ${NOISE_KINDS.join(', ')}`);
    if (new Set(opt.noise).size !== opt.noise.length) fail(`--noise: a kind is named twice in '${opt.noise.join(',')}'`);
  } else if (a === '--blk-overflow-dir') opt.blkOverflowDir = val();
  else if (a === '--help' || a === '-h') {
    console.log('usage: npm run bench:ring [-- --json] [-- --queues N --depth D --pages N --lat-ops N --indirect --event-idx --mode poll|notify]');
    console.log('                          [-- --paced-rate N --paced-ops N --paced-runs N --paced-only]');
    console.log('       npm run bench:ring -- --noisy [--json] [--lat-ops N --rounds N --noise long,split,valid,blk-overflow --mode poll|notify]');
    console.log(`                          [-- --noise ...,${BLK_KINDS.join(',')} --blk-overflow-dir DIR (an existing folder, not tmpfs for the cold kind)]`);
    process.exit(0);
  } else fail(`unknown option ${a} (see --help)`);
}

if (opt.latOps === 0) opt.latOps = opt.noisy ? 3000 : 20000;
const blkNoise = opt.noisy && opt.noise.some((k) => BLK_KINDS.includes(k));
if (opt.blkOverflowDir !== null) {
  if (!blkNoise) fail(`--blk-overflow-dir: only with --noisy and a noise kind of ${BLK_KINDS.join(', ')}`);
  let st;
  try {
    st = statSync(opt.blkOverflowDir);
  } catch (e) {
    fail(`--blk-overflow-dir ${opt.blkOverflowDir}: ${e.code ?? e.message}`);
  }
  if (!st.isDirectory()) fail(`--blk-overflow-dir ${opt.blkOverflowDir}: not a folder`);
  opt.blkOverflowDir = resolve(opt.blkOverflowDir);
}
if (opt.noise.includes('blk-overflow-cold') && opt.noisy) {
  // dropping a file's cached pages means nothing where the file is the cache
  const where = opt.blkOverflowDir ?? tmpdir();
  if (statfsSync(where).type === TMPFS_MAGIC) fail(`blk-overflow-cold: ${where} is tmpfs, where the overflow file lives in memory whatever is dropped: give --blk-overflow-dir a folder on a disk`);
  const fc = spawnSync('fincore', ['--version'], { encoding: 'utf8' });
  if (fc.error || fc.status !== 0) fail('blk-overflow-cold needs fincore (util-linux) to show the overflow file\'s cached pages');
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
if (blkNoise) {
  const mb = spawnSync('make', ['-s', '-C', join(root, 'test/loadgen'), 'blk'], { encoding: 'utf8' });
  if (mb.status !== 0) fail(`building blk-loadgen failed:\n${mb.stdout}${mb.stderr}`);
}
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


// ------------------------------------------------------------------ --noisy

/**
 * The bound this benchmark checks: the quiet guest's p99 beside a noisy
 * neighbour is at most 10x its p99 alone, or at most 250 us, whichever is
 * larger. Why 250 us: the daemon can serve no request of the quiet guest
 * while it walks one of the neighbour's chains, which cannot be cut short (a
 * 1024-descriptor chain is 1024 descriptor reads, about 110 us on this
 * machine, see noisyDescriptorsPerSec); its budget rule (engine.ts) bounds
 * the wait to one such chain plus one turn of 1024 units: about 2 chain
 * walks. So p99 <= 10x alone can only hold where alone is not far below a
 * chain walk; 250 us is that floor. Before the rule: 35-67 ms.
 */
const BOUND = { ratioP99: 10, floorUs: 250 };

async function waitFor(what, cond, d, ms = 20000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (d.p.exitCode !== null) throw new Error(`tmemd exited while waiting for ${what}:\n${d.err()}`);
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s\n--- tmemd:\n${d.err()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function loadgenJson(args, what, d) {
  const lg = run(LOADGEN, args, { timeoutMs: 600000 });
  const r = await lg.done;
  const last = lg.out().trimEnd().split('\n').pop() ?? '';
  if (r.code !== 0) throw new Error(`loadgen ${what} failed (exit ${r.code ?? r.signal}):\n${lg.err()}\n${last}\n--- tmemd:\n${d.err()}`);
  return JSON.parse(last);
}

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

/** Rounds of one scenario: the median of each percentile, the largest max, and each round's p99. */
function latencyOf(runs) {
  return {
    p50us: median(runs.map((r) => r.p50us)),
    p90us: median(runs.map((r) => r.p90us)),
    p99us: median(runs.map((r) => r.p99us)),
    maxUs: Math.max(...runs.map((r) => r.maxUs)),
    roundsP99us: runs.map((r) => r.p99us),
  };
}

function noisyOf(runs) {
  return {
    chainsPerSec: median(runs.map((r) => r.chainsPerSec)),
    descriptorsPerSec: median(runs.map((r) => r.descriptorsPerSec)),
    chainDescriptors: runs[0].chainDescriptors,
    unanswered: runs.reduce((n, r) => n + r.unanswered, 0),
  };
}

// The blk kinds' noisy guest: a VM with a tmem-blk disk and a small limit,
// so most of its pages go to the overflow file (see the header).

/** Its disk, its VM limit (maxmem; the disk's pages count against it) and blk-loadgen's load. */
const BLK_NOISE = { diskMib: 256, maxmem: '32M', spanMib: 256, queues: 2, depth: 16, readPct: 50 };
/** blk-ram's VM: the same disk and load, with room for every page in RAM (no overflow). */
const BLK_RAM_MAXMEM = '1G';
/** The VM (by name) each blk kind's blk-loadgen connects to: one disk per VM, kept while tmemd runs. */
const blkVmOf = (kind) => (kind === 'blk-ram' ? 'blkram' : 'blk');

/** tmemd's blk counters (every connection's of every VM, summed: one blk guest runs at a time) and VM's disk record, by the control socket. */
async function blkSnapshot(ctl, vm) {
  const r = await ctl.request({ cmd: 'stats' });
  if (!r.ok) throw new Error(`tmemctl stats: ${r.error}`);
  const c = r.result.host.counters.blk;
  if (c === undefined) throw new Error('tmemd has no blk counters: is tmem-blk in this build?');
  const disk = r.result.guests.find((g) => g.name === vm)?.blk ?? null;
  return { at: performance.now(), c, disk };
}

/** The filesystem a folder is on, by name (df's), for the output. */
function fsType(dir) {
  const r = spawnSync('df', ['--output=fstype', dir], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split('\n').pop().trim() : `statfs type 0x${statfsSync(dir).type.toString(16)}`;
}

/** blk-overflow-cold: how long the overflow file's cache may refill between two drops during the measurement. */
const DROP_EVERY_MS = 100;

/** Writes FILE's dirty pages back and drops its cached pages (this file only); resolves to the milliseconds it took. */
function dropCache(file) {
  const t = performance.now();
  return new Promise((res, rej) => {
    const dd = spawn('dd', [`of=${file}`, 'oflag=nocache', 'conv=notrunc,fdatasync', 'count=0', 'status=none'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    dd.stderr.setEncoding('utf8').on('data', (x) => (err += x));
    dd.once('error', (e) => rej(new Error(`dd (dropping ${file}'s cached pages): ${e.message}`)));
    dd.once('close', (code) => (code === 0 ? res(performance.now() - t) : rej(new Error(`dd (dropping ${file}'s cached pages) failed: ${err.trim() || `exit ${code}`}`))));
  });
}

/** Bytes of FILE in the page cache (fincore), or null when fincore cannot tell. */
function cachedBytes(file) {
  const r = spawnSync('fincore', ['-J', '-b', '-o', 'RES', file], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  try {
    return Number(JSON.parse(r.stdout).fincore[0].res);
  } catch {
    return null;
  }
}

/**
 * One blk round: blk-loadgen fills the disk, and once its mixed phase runs
 * (reads counted) the quiet guest is timed; the counters around that are
 * the noisy guest's share (the window also holds the quiet load
 * generator's start: milliseconds). Cold: the overflow file is written back
 * and its cached pages dropped first, and again every DROP_EVERY_MS while
 * the quiet guest is timed (what the blk guest reads or writes meanwhile is
 * cached again: without the drops the file is warm again within a second).
 * blk-loadgen is stopped after (it would run --seconds 3600): it prints each
 * read it finds wrong and each bad status at once, so an empty stderr means
 * none so far; tmemd's error counters are checked too.
 */
async function blkRound(kind, quiet, d, ctl, blkSock) {
  const vm = blkVmOf(kind);
  const start = await blkSnapshot(ctl, vm);
  const n = spawn(BLK_LOADGEN, ['--socket', blkSock, '--queues', String(BLK_NOISE.queues), '--depth', String(BLK_NOISE.depth), '--seconds', '3600',
    '--read-pct', String(BLK_NOISE.readPct), '--span-mib', String(BLK_NOISE.spanMib), '--json'], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(n);
  let err = '';
  n.stderr.setEncoding('utf8').on('data', (x) => (err += x));
  const done = new Promise((res) => n.once('close', (code, signal) => { children.delete(n); res({ code, signal }); }));
  const gone = () => n.exitCode !== null || n.signalCode !== null;
  try {
    // the prefill writes only: the first read counted is the mixed phase
    const end = Date.now() + 120000;
    let s;
    for (;;) {
      if (gone()) throw new Error(`blk-loadgen exited before its mixed phase (exit ${n.exitCode ?? n.signalCode}):\n${err}\n--- tmemd:\n${d.err()}`);
      if (d.p.exitCode !== null) throw new Error(`tmemd exited during blk-loadgen's prefill:\n${d.err()}`);
      if (Date.now() > end) throw new Error(`blk-loadgen's prefill took over 120 s\n${err}`);
      s = await blkSnapshot(ctl, vm);
      if (s.c.reads > start.c.reads) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const ovfFile = s.disk?.overflowFile;
    if (typeof ovfFile !== 'string') throw new Error(`tmemd's stats name no overflow file for VM ${vm}: ${JSON.stringify(s.disk)}`);
    // cold: written back and dropped once before, then again and again while the quiet guest is timed (pages read or written come back to the cache)
    const cold = kind === 'blk-overflow-cold';
    const cache = { atStartBytes: null, atEndBytes: null, beforeFirstDropBytes: null, drops: 0, dropMs: [], beforeDropsBytes: [] };
    if (cold) {
      cache.beforeFirstDropBytes = cachedBytes(ovfFile);
      await dropCache(ovfFile);
    }
    cache.atStartBytes = cachedBytes(ovfFile);
    let measuring = true;
    let dropErr = null;
    const dropper = cold
      ? (async () => {
          while (measuring) {
            await new Promise((r) => setTimeout(r, DROP_EVERY_MS));
            if (!measuring) break;
            cache.beforeDropsBytes.push(cachedBytes(ovfFile));
            cache.dropMs.push(await dropCache(ovfFile));
            cache.drops++;
          }
        })().catch((e) => {
          dropErr = e;
        })
      : Promise.resolve();
    let q, before, after;
    try {
      before = await blkSnapshot(ctl, vm);
      q = await quiet();
      after = await blkSnapshot(ctl, vm);
      cache.atEndBytes = cachedBytes(ovfFile);
    } finally {
      measuring = false;
      await dropper;
    }
    if (dropErr !== null) throw dropErr;
    if (gone()) throw new Error(`blk-loadgen exited during the measurement (exit ${n.exitCode ?? n.signalCode}):\n${err}`);
    if (err.trim() !== '') throw new Error(`blk-loadgen reported trouble:\n${err}`);
    const delta = (k) => after.c[k] - before.c[k];
    const seconds = (after.at - before.at) / 1000;
    const errors = delta('statusIoErr') + delta('statusUnsupp') + delta('readErrors') + delta('writeErrors');
    if (errors !== 0) throw new Error(`tmemd answered the blk guest with ${errors} error(s) during the measurement:\n${d.err()}`);
    return {
      quiet: q,
      noisy: {
        seconds,
        requests: delta('requests'),
        requestsPerSec: delta('requests') / seconds,
        overflowReads: delta('overflowReads'),
        overflowWrites: delta('overflowWrites'),
        ramReads: delta('ramReads'),
        ramWrites: delta('ramWrites'),
        overflowPages: after.disk?.overflowPages ?? null,
        ramPages: after.disk?.ramPages ?? null,
        overflowFileBytes: after.disk?.overflowFileBytes ?? null,
        cache,
      },
    };
  } finally {
    if (!gone()) n.kill('SIGTERM');
    await done;
  }
}

function blkNoisyOf(runs) {
  const sum = (k) => runs.reduce((a, r) => a + r[k], 0);
  const cache = (k) => runs.map((r) => r.cache[k]);
  const cold = runs[0].cache.beforeFirstDropBytes !== null;
  return {
    requestsPerSec: median(runs.map((r) => r.requestsPerSec)),
    roundsRequestsPerSec: runs.map((r) => r.requestsPerSec),
    requests: sum('requests'),
    overflowReads: sum('overflowReads'),
    overflowWrites: sum('overflowWrites'),
    ramReads: sum('ramReads'),
    ramWrites: sum('ramWrites'),
    seconds: sum('seconds'),
    overflowPages: runs[runs.length - 1].overflowPages,
    ramPages: runs[runs.length - 1].ramPages,
    overflowFileBytes: runs[runs.length - 1].overflowFileBytes,
    cachedBytesAtStart: cache('atStartBytes'),
    cachedBytesAtEnd: cache('atEndBytes'),
    // cold only: the first drop's start, then per round the drops while timed, their median time and the most the cache refilled to between two
    ...(cold
      ? {
          cachedBytesBeforeFirstDrop: cache('beforeFirstDropBytes'),
          drops: cache('drops'),
          dropMsMedian: runs.map((r) => (r.cache.dropMs.length ? median(r.cache.dropMs) : null)),
          cachedBytesBeforeDropsMax: runs.map((r) => (r.cache.beforeDropsBytes.length ? Math.max(...r.cache.beforeDropsBytes) : null)),
        }
      : {}),
  };
}

async function noisyBench(mode) {
  const dir = mkdtempSync(join(tmpdir(), 'tmem-ring-noisy-'));
  const qsock = join(dir, 'quiet.sock');
  const nsock = join(dir, 'noisy.sock');
  // the blk kinds' VM, its overflow folder and the control socket (their counters) only when asked: the other kinds' daemon is as before
  const blk = blkNoise ? { ovfDir: mkdtempSync(join(opt.blkOverflowDir ?? tmpdir(), 'tmem-ring-blk-')), ctlSock: join(dir, 'ctl.sock'), vms: [...new Set(opt.noise.filter((k) => BLK_KINDS.includes(k)).map(blkVmOf))] } : null;
  const blkSock = (vm) => join(dir, `${vm}-blk.sock`);
  const blkVmArgs = (vm) => ['--vm', `name=${vm},socket=${join(dir, `${vm}-tmem.sock`)},maxmem=${vm === 'blkram' ? BLK_RAM_MAXMEM : BLK_NOISE.maxmem},blk-socket=${blkSock(vm)},blk-size=${BLK_NOISE.diskMib}M`];
  const d = run(process.execPath, [
    TMEMD,
    '--vm', `name=quiet,socket=${qsock},maxmem=1G`,
    '--vm', `name=noisy,socket=${nsock},maxmem=1G`,
    ...(blk ? [...blk.vms.flatMap(blkVmArgs), '--blk-overflow-dir', blk.ovfDir] : []),
    '--capacity', '1G', '--queues-mode', mode, '--queues', '4', '--control', blk ? blk.ctlSock : 'none', '--log-level', 'error',
  ]);
  const alone = [];
  const noise = Object.fromEntries(opt.noise.map((k) => [k, { quiet: [], noisy: [] }]));
  try {
    await waitFor(`tmemd (${mode}) listening`, () => existsSync(qsock) && existsSync(nsock) && (!blk || (blk.vms.every((vm) => existsSync(blkSock(vm))) && existsSync(blk.ctlSock))), d);
    const quiet = () => loadgenJson(['latency', '--socket', qsock, '--json', '--ram', '16M', '--queues', '1', '--lat-ops', String(opt.latOps)], `latency (${mode})`, d);
    let ctl = null;
    if (blk) {
      const { requestDaemon } = await import(pathToFileURL(join(root, 'dist/host/control/client.js')).href);
      ctl = { request: (req) => requestDaemon(blk.ctlSock, req, 30000) };
    }
    for (let round = 0; round < opt.rounds; round++) {
      alone.push(await quiet());
      for (const kind of opt.noise) {
        if (BLK_KINDS.includes(kind)) {
          const r = await blkRound(kind, quiet, d, ctl, blkSock(blkVmOf(kind)));
          noise[kind].quiet.push(r.quiet);
          noise[kind].noisy.push(r.noisy);
          await new Promise((res) => setTimeout(res, 300));
          continue;
        }
        const n = run(LOADGEN, ['noisy', '--socket', nsock, '--json', '--ram', '16M', '--queues', '4', '--qsize', '1024', '--noise', kind, '--timeout-ms', '20000']);
        await waitFor(`the noisy guest (${kind}) flooding`, () => n.err().includes('noisy: flooding') || n.p.exitCode !== null, d);
        if (n.p.exitCode !== null) throw new Error(`loadgen noisy (${kind}) exited at start (exit ${n.p.exitCode}):\n${n.err()}\n--- tmemd:\n${d.err()}`);
        const q = await quiet();
        n.p.kill('SIGTERM');
        const r = await n.done;
        const last = n.out().trimEnd().split('\n').pop() ?? '';
        if (r.code !== 0) throw new Error(`loadgen noisy (${kind}) failed (exit ${r.code ?? r.signal}):\n${n.err()}\n${last}\n--- tmemd:\n${d.err()}`);
        noise[kind].quiet.push(q);
        noise[kind].noisy.push(JSON.parse(last));
        // the daemon frees the socket's slot once it has removed the guest
        await new Promise((res) => setTimeout(res, 300));
      }
    }
    const out = { alone: latencyOf(alone), noise: {}, aloneAfter: null };
    for (const kind of opt.noise) out.noise[kind] = { quiet: latencyOf(noise[kind].quiet), noisy: (BLK_KINDS.includes(kind) ? blkNoisyOf : noisyOf)(noise[kind].noisy) };
    out.aloneAfter = latencyOf([await quiet()]);
    if (d.p.exitCode !== null) throw new Error(`tmemd (${mode}) died during the benchmark:\n${d.err()}`);
    return out;
  } finally {
    if (d.p.exitCode === null) d.p.kill('SIGTERM');
    const t = setTimeout(() => d.p.kill('SIGKILL'), 10000);
    await d.done;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
    if (blk) rmSync(blk.ovfDir, { recursive: true, force: true });
  }
}

if (opt.noisy) {
  const res = {};
  try {
    for (const m of opt.modes) {
      say(`ring-bench --noisy: ${m} mode, ${opt.rounds} round(s), quiet guest ${opt.latOps} PUTs + ${opt.latOps} GETs at depth 1; noise: ${opt.noise.join(', ')} on 4 queues of 1024; ${cpus} CPUs...`);
      res[m] = await noisyBench(m);
    }
  } catch (e) {
    fail(e instanceof Error ? e.message : String(e));
  }
  const f2 = (x) => (x === undefined || x === null ? '-' : x.toFixed(2));
  const f0 = (x) => (x === undefined ? '-' : Math.round(x).toLocaleString('en-US'));
  const rows = [['mode', 'quiet guest', 'p50 us', 'p90 us', 'p99 us', 'max us', 'p99 / baseline', 'noisy chains/s', 'noisy descs/s', `bound (<= ${BOUND.ratioP99}x or ${BOUND.floorUs} us)`]];
  const summary = {};
  let allMet = true;
  /** Per blk row: what the noisy blk guest did while the quiet one was timed (printed under the table). */
  const blkLines = [];
  const mib = (b) => (b === null || b === undefined ? '-' : (b / 2 ** 20).toFixed(1));
  const blkLine = (m, kind, n) => {
    const filePct = (100 * (n.overflowReads + n.overflowWrites)) / Math.max(1, n.overflowReads + n.overflowWrites + n.ramReads + n.ramWrites);
    const ms = (x) => (x === null ? '-' : String(Math.round(x)));
    const cache = kind === 'blk-ram'
      ? 'the control: the same load with every page in RAM'
      : kind === 'blk-overflow-cold'
      ? `the file's pages in the page cache: ${n.cachedBytesBeforeFirstDrop.map(mib).join(', ')} MiB, dropped to ${n.cachedBytesAtStart.map(mib).join(', ')} MiB at the start, then dropped ${n.drops.join(', ')} times while timed (every ${DROP_EVERY_MS} ms + the drop's ${n.dropMsMedian.map(ms).join(', ')} ms), refilled to at most ${n.cachedBytesBeforeDropsMax.map(mib).join(', ')} MiB between drops, ${n.cachedBytesAtEnd.map(mib).join(', ')} MiB at the end`
      : `the file's pages in the page cache: ${n.cachedBytesAtStart.map(mib).join(', ')} MiB at the start, ${n.cachedBytesAtEnd.map(mib).join(', ')} MiB at the end (cached: its reads and writes are memory copies)`;
    return `${m}, ${kind}: the blk guest did ${f0(n.requestsPerSec)} requests/s (rounds ${n.roundsRequestsPerSec.map(f0).join(', ')}) while the quiet one was timed (${n.seconds.toFixed(1)} s in all): overflow file ${f0(n.overflowReads)} pages read, ${f0(n.overflowWrites)} written (${filePct.toFixed(0)} % of its pages), RAM ${f0(n.ramReads)} read, ${f0(n.ramWrites)} written; now ${f0(n.overflowPages)} pages in the file (${mib(n.overflowFileBytes)} MiB allocated), ${f0(n.ramPages)} in RAM; ${cache}`;
  };
  for (const m of opt.modes) {
    const r = res[m];
    // The baseline is the lower p99 of the two runs alone (before and after
    // the noise): the stricter bound, and the one less moved by the machine's
    // other load.
    const base = Math.min(r.alone.p99us, r.aloneAfter.p99us);
    const limit = Math.max(BOUND.ratioP99 * base, BOUND.floorUs);
    rows.push([m, 'alone', f2(r.alone.p50us), f2(r.alone.p90us), f2(r.alone.p99us), f2(r.alone.maxUs), (r.alone.p99us / base).toFixed(1), '', '', '']);
    const s = { aloneP50us: r.alone.p50us, aloneP90us: r.alone.p90us, aloneP99us: r.alone.p99us, aloneMaxUs: r.alone.maxUs, baselineP99us: base, p99LimitUs: limit, noise: {} };
    for (const kind of opt.noise) {
      const { quiet: q, noisy: n } = r.noise[kind];
      const met = q.p99us <= limit;
      allMet &&= met;
      if (BLK_KINDS.includes(kind)) {
        // a blk request is one chain (header, data, status); its descriptors are not counted
        rows.push([m, `beside ${kind}`, f2(q.p50us), f2(q.p90us), f2(q.p99us), f2(q.maxUs), (q.p99us / base).toFixed(1), f0(n.requestsPerSec), '-', met ? 'met' : 'NOT met']);
        s.noise[kind] = { p50us: q.p50us, p90us: q.p90us, p99us: q.p99us, maxUs: q.maxUs, p99Ratio: q.p99us / base, boundMet: met, noisyRequestsPerSec: n.requestsPerSec, noisyRoundsRequestsPerSec: n.roundsRequestsPerSec, noisyRequests: n.requests, noisySeconds: n.seconds, noisyOverflowReads: n.overflowReads, noisyOverflowWrites: n.overflowWrites, noisyRamReads: n.ramReads, noisyRamWrites: n.ramWrites, noisyOverflowPages: n.overflowPages, noisyRamPages: n.ramPages, noisyOverflowFileBytes: n.overflowFileBytes, overflowFileCachedBytesAtStart: n.cachedBytesAtStart, overflowFileCachedBytesAtEnd: n.cachedBytesAtEnd, quietRoundsP99us: q.roundsP99us };
        if (kind === 'blk-overflow-cold') Object.assign(s.noise[kind], { overflowFileCachedBytesBeforeFirstDrop: n.cachedBytesBeforeFirstDrop, overflowFileDrops: n.drops, overflowFileDropMsMedian: n.dropMsMedian, overflowFileCachedBytesBeforeDropsMax: n.cachedBytesBeforeDropsMax });
        blkLines.push(blkLine(m, kind, n));
        continue;
      }
      rows.push([m, `beside ${kind}`, f2(q.p50us), f2(q.p90us), f2(q.p99us), f2(q.maxUs), (q.p99us / base).toFixed(1), f0(n.chainsPerSec), f0(n.descriptorsPerSec), met ? 'met' : 'NOT met']);
      s.noise[kind] = { p50us: q.p50us, p90us: q.p90us, p99us: q.p99us, maxUs: q.maxUs, p99Ratio: q.p99us / base, boundMet: met, noisyChainsPerSec: n.chainsPerSec, noisyDescriptorsPerSec: n.descriptorsPerSec, noisyChainDescriptors: n.chainDescriptors, noisyUnanswered: n.unanswered };
    }
    rows.push([m, 'alone, after', f2(r.aloneAfter.p50us), f2(r.aloneAfter.p90us), f2(r.aloneAfter.p99us), f2(r.aloneAfter.maxUs), (r.aloneAfter.p99us / base).toFixed(1), '', '', '']);
    s.aloneAfterP50us = r.aloneAfter.p50us;
    s.aloneAfterP90us = r.aloneAfter.p90us;
    s.aloneAfterP99us = r.aloneAfter.p99us;
    s.aloneAfterMaxUs = r.aloneAfter.maxUs;
    summary[m] = s;
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  for (const r of rows) say(r.map((c, i) => (i < 2 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  '));
  say(`bound: the quiet guest's p99 beside the noisy one <= max(${BOUND.ratioP99} x its p99 alone (the lower of the two runs alone), ${BOUND.floorUs} us): ${allMet ? 'met in every row' : 'NOT met in every row'}`);
  for (const l of blkLines) say(l);
  if (blkLines.length) say(`blk rows: the noisy guest is another VM of the same tmemd with a ${BLK_NOISE.diskMib} MiB tmem-blk disk and maxmem ${BLK_NOISE.maxmem} (blk-ram: ${BLK_RAM_MAXMEM}), blk-loadgen ${BLK_NOISE.queues} queues x depth ${BLK_NOISE.depth}, ${BLK_NOISE.readPct} % reads over ${BLK_NOISE.spanMib} MiB; 'noisy chains/s' is its requests/s; overflow folder ${opt.blkOverflowDir ?? tmpdir()} (${fsType(opt.blkOverflowDir ?? tmpdir())})`);
  if (opt.noise.includes('blk-overflow-cold')) say(`blk-overflow-cold rows: README's known limit (the overflow file's disk reads on the one vring worker); the bound was set for ring chains (BOUND), not for a worker waiting on a disk`);
  const blkJson = blkLines.length ? { blkNoise: { ...BLK_NOISE, overflowDir: opt.blkOverflowDir ?? tmpdir(), overflowDirFs: fsType(opt.blkOverflowDir ?? tmpdir()) } } : {};
  if (opt.json) console.log(JSON.stringify({ noisy: summary, bound: { ...BOUND, met: allMet }, latOps: opt.latOps, rounds: opt.rounds, cpus, ...blkJson }));
  process.exit(0);
}

// ------------------------------------------------------------------ paced (CPU per request)

/** One tmemd in notify mode with one queue; the load generator's paced mode measures its CPU (test/loadgen/paced.c). */
async function pacedRun() {
  const dir = mkdtempSync(join(tmpdir(), 'tmem-ring-paced-'));
  const sock = join(dir, 'vm.sock');
  const d = run(process.execPath, [TMEMD, '--vm', `name=paced,socket=${sock},maxmem=1G`, '--capacity', '1G', '--queues-mode', 'notify', '--queues', '1', '--control', 'none', '--log-level', 'warn']);
  try {
    await waitFor('tmemd (notify) listening', () => existsSync(sock), d);
    const args = ['paced', '--socket', sock, '--json', '--ram', '16M', '--queues', '1', '--rate', String(opt.pacedRate), '--ops', String(opt.pacedOps), '--bench-pages', '4096', '--cpu-pid', String(d.p.pid)];
    if (opt.indirect) args.push('--indirect');
    if (opt.eventIdx) args.push('--event-idx');
    const j = await loadgenJson(args, 'paced (notify)', d);
    if (d.p.exitCode !== null) throw new Error(`tmemd (notify) died during the paced run:\n${d.err()}`);
    return j;
  } finally {
    if (d.p.exitCode === null) d.p.kill('SIGTERM');
    const t = setTimeout(() => d.p.kill('SIGKILL'), 10000);
    await d.done;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function pacedBench() {
  const runs = [];
  for (let i = 0; i < opt.pacedRuns; i++) {
    say(`ring-bench: notify mode, paced: ${opt.pacedOps} requests at ${opt.pacedRate}/s, depth 1, one queue (run ${i + 1} of ${opt.pacedRuns})...`);
    runs.push(await pacedRun());
  }
  const pick = (f) => runs.map(f);
  const cpu = pick((r) => r.daemonCpuPerRequestUs);
  // What one sleep and wake-up costs here, times how many tmemd took per
  // request: the part of its CPU that any eventfd-woken backend would pay
  // on this machine in that run (the probe's), and what is left, tmemd's
  // own. An estimate: the probe's wake-up is not tmemd's, only alike.
  const floor = pick((r) => r.probeCpuPerWakeUs * r.daemonSwitchInsPerRequest);
  const above = runs.map((r, i) => r.daemonSchedCpuPerRequestUs - floor[i]);
  const notifyCpuPerRequestUs = median(cpu);
  return {
    notifyCpuPerRequestUs,
    notifyCpuPerRequestUsMin: Math.min(...cpu),
    notifyCpuTargetUs: CPU_TARGET_US,
    notifyCpuTargetMet: notifyCpuPerRequestUs <= CPU_TARGET_US,
    notifyWakeFloorPerRequestUs: median(floor),
    notifyCpuAboveWakeFloorUs: median(above),
    paced: {
      rate: opt.pacedRate,
      ops: opt.pacedOps,
      runs: runs.length,
      cpuPerRequestUs: cpu,
      userCpuPerRequestUs: pick((r) => r.daemonUserCpuPerRequestUs),
      schedCpuPerRequestUs: pick((r) => r.daemonSchedCpuPerRequestUs),
      switchInsPerRequest: pick((r) => r.daemonSwitchInsPerRequest),
      // the busiest thread: the vring worker (the rest is the main thread and V8's helpers: GC, compiling)
      workerCpuPerRequestUs: pick((r) => Math.max(0, ...r.daemonThreads.map((t) => t.cpuPerRequestUs))),
      probeCpuPerWakeUs: pick((r) => r.probeCpuPerWakeUs),
      wakeFloorPerRequestUs: floor,
      cpuAboveWakeFloorUs: above,
      late: pick((r) => r.late),
      idleCpuUsPerSec: pick((r) => r.daemonIdleCpuUsPerSec),
      loadgenCpuPerRequestUs: pick((r) => r.loadgenCpuPerRequestUs),
      achievedRate: pick((r) => r.achievedRate),
      p50us: pick((r) => r.latency.p50us),
      p99us: pick((r) => r.latency.p99us),
      threads: runs.map((r) => r.daemonThreads),
    },
  };
}

function sayPaced(p) {
  const list = (xs) => xs.map((x) => x.toFixed(2)).join(', ');
  const q = p.paced;
  say(`notify, paced at ${q.rate.toLocaleString('en-US')} requests/s (depth 1, one queue): tmemd CPU per request ${p.notifyCpuPerRequestUs.toFixed(2)} us (median of ${q.runs}; min ${p.notifyCpuPerRequestUsMin.toFixed(2)}; runs ${list(q.cpuPerRequestUs)}; user ${list(q.userCpuPerRequestUs)}; the worker thread ${list(q.workerCpuPerRequestUs)})`);
  say(`  same runs: a C thread woken through an eventfd (poll + read) costs ${list(q.probeCpuPerWakeUs)} us per wake-up; tmemd switch-ins per request ${list(q.switchInsPerRequest)}; tmemd idle ${q.idleCpuUsPerSec.map((x) => Math.round(x)).join(', ')} us/s; load generator ${list(q.loadgenCpuPerRequestUs)} us per request (late for ${q.late.map((x) => Math.round((100 * x) / q.ops)).join(', ')} % of requests); latency p50 ${list(q.p50us)} us, p99 ${list(q.p99us)} us`);
  say(`  the wake-up floor (the probe's cost per wake-up x tmemd's switch-ins per request) ${list(q.wakeFloorPerRequestUs)} us; tmemd above it (an estimate) ${list(q.cpuAboveWakeFloorUs)} us, median ${p.notifyCpuAboveWakeFloorUs.toFixed(2)}`);
  say(`  target: tmemd CPU per request <= ${p.notifyCpuTargetUs} us: ${p.notifyCpuTargetMet ? 'met' : 'NOT met'} (median ${p.notifyCpuPerRequestUs.toFixed(2)} us)${p.notifyWakeFloorPerRequestUs > p.notifyCpuTargetUs ? `; the wake-up floor alone is ${p.notifyWakeFloorPerRequestUs.toFixed(2)} us here, above the target` : ''}`);
}

if (opt.pacedOnly) {
  let p;
  try {
    p = await pacedBench();
  } catch (e) {
    fail(e instanceof Error ? e.message : String(e));
  }
  sayPaced(p);
  if (opt.json) console.log(JSON.stringify({ ...p, cpus }));
  process.exit(0);
}

const res = {};
try {
  for (const m of opt.modes) {
    say(`ring-bench: ${m} mode, ${opt.queues} queue(s), depth ${opt.depth}, ${opt.pages} pages, ${opt.latOps} timed requests, ${loadgenThreads} load generator thread(s) on ${cpus} CPUs...`);
    res[m] = await benchMode(m);
  }
  if (opt.modes.includes('notify')) res.paced = await pacedBench();
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
const pollLatencyMet = res.poll ? res.poll.latency.p50us <= POLL_P50_TARGET_US && res.poll.latency.p99us <= POLL_P99_TARGET_US : undefined;
if (res.poll) {
  const l = res.poll.latency;
  say(`target: poll mode at depth 1, p50 <= ${POLL_P50_TARGET_US} us and p99 <= ${POLL_P99_TARGET_US} us: ${pollLatencyMet ? 'met' : 'NOT met'} (p50 ${f2(l.p50us)}, p99 ${f2(l.p99us)})`);
}
if (res.paced) sayPaced(res.paced);

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
  notifyCpuPerRequestUs: res.paced?.notifyCpuPerRequestUs,
  notifyCpuPerRequestUsMin: res.paced?.notifyCpuPerRequestUsMin,
  paced: res.paced?.paced,
  queues: opt.queues,
  loadgenThreads,
  cpus,
  depth: opt.depth,
  pages: opt.pages,
  // the first round's targets, then issue 10's (met: this run's verdict)
  targets: {
    ratioPollToMemcpyAtLeast: 0.5,
    pollP50usAtMost: 5,
    pollP99usAtMost: 20,
    issue10: {
      pollP50usAtMost: POLL_P50_TARGET_US,
      pollP99usAtMost: POLL_P99_TARGET_US,
      notifyCpuPerRequestUsAtMost: CPU_TARGET_US,
      pollLatencyMet,
      notifyCpuMet: res.paced?.notifyCpuTargetMet,
    },
  },
  notifyCpuAboveWakeFloorUs: res.paced?.notifyCpuAboveWakeFloorUs,
  notifyWakeFloorPerRequestUs: res.paced?.notifyWakeFloorPerRequestUs,
};
if (opt.json) console.log(JSON.stringify(out));
