#!/usr/bin/env node
// Block benchmark: the C vhost-user-blk front-end (test/loadgen/blk.c) against
// (a) qemu-storage-daemon's vhost-user-blk export of a file on tmpfs (the peer a
// user would pick instead: Debian 12's QEMU 7.2, vm-images/build-qsd.sh) and
// (b) tmemd's tmem-blk (--vm ...,blk-socket=,blk-size=), in the same run, with
// the same generator and parameters. Prints a table; with --json one JSON
// object as the last line.
//
//   npm run bench:blk [-- --json] [-- --queues N --depth D --seconds S --read-pct P --span-mib M --poll --backends qsd,tmemd]
//
// Per backend two runs of the generator: throughput (N queues x depth D) and
// latency (1 queue, depth 1); each prefills the span (every block written once,
// not timed), then S seconds of 4 KiB random requests (P% reads, the rest
// writes; every read verified against the version written), then reads every
// block back. Reported: requests/s, p50/p99/p99.9 latency (us), against the
// same-run memcpy baseline (4 KiB pages/s between buffers as large as the span).
// A backend that fails (e.g. a tmemd without tmem-blk) is reported as failed
// with its error line; the exit status is then 1.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, closeSync, openSync, ftruncateSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const LOADGEN = join(root, 'test/loadgen/build/blk-loadgen');
const TMEMD = join(root, 'dist/host/tmemd.js');

const BACKENDS = ['qsd', 'tmemd'];
const argv = process.argv.slice(2);
const opt = { json: false, queues: 2, depth: 32, seconds: 3, readPct: 50, spanMib: 256, poll: false, backends: BACKENDS };
function fail(msg) {
  console.error(`blk-bench: ${msg}`);
  process.exit(2);
}
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => (i + 1 < argv.length ? argv[++i] : fail(`${a} needs a value`));
  const int = (v, min = 1, max = 1 << 20) => {
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) fail(`${a}: '${v}' is not a whole number from ${min} to ${max}`);
    return Number(v);
  };
  if (a === '--json') opt.json = true;
  else if (a === '--queues') opt.queues = int(val(), 1, 64);
  else if (a === '--depth') opt.depth = int(val(), 1, 256);
  else if (a === '--seconds') opt.seconds = int(val(), 1, 600);
  else if (a === '--read-pct') opt.readPct = int(val(), 0, 100);
  else if (a === '--span-mib') opt.spanMib = int(val(), 1, 4096);
  else if (a === '--poll') opt.poll = true;
  else if (a === '--backends') {
    opt.backends = val().split(',');
    for (const b of opt.backends) if (!BACKENDS.includes(b)) fail(`--backends: '${b}' is not one of ${BACKENDS.join(', ')}`);
  } else if (a === '--help' || a === '-h') {
    console.log('usage: npm run bench:blk [-- --json] [-- --queues N --depth D --seconds S --read-pct P --span-mib M --poll --backends qsd,tmemd]');
    process.exit(0);
  } else fail(`unknown option ${a} (see --help)`);
}
const say = (s) => (opt.json ? process.stderr : process.stdout).write(s + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// the generator (make does nothing when it is up to date) and the peer (cached)
const mk = spawnSync('make', ['-s', '-C', join(root, 'test/loadgen'), '-f', 'blk.mk'], { stdio: ['ignore', 'inherit', 'inherit'] });
if (mk.status !== 0) fail('building test/loadgen/build/blk-loadgen failed');
if (!existsSync(TMEMD) && opt.backends.includes('tmemd')) fail(`${TMEMD} is missing: run npm run build`);
let QSD = null;
if (opt.backends.includes('qsd')) {
  const q = spawnSync('bash', [join(root, 'vm-images/build-qsd.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (q.status !== 0) fail('vm-images/build-qsd.sh failed');
  QSD = q.stdout.trim().split('\n').pop();
}

const DISK = 1 << 30; // 1 GiB: capacity of both disks (the span is the part used)
if (opt.spanMib * 2 ** 20 > DISK) fail(`--span-mib ${opt.spanMib}: at most ${DISK / 2 ** 20}`);

/** A child process with its output kept (the last lines go into failure messages). */
function child(cmd, args, env) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: env ?? process.env });
  p.out = '';
  p.stdout.on('data', (d) => { p.out += d; });
  p.stderr.on('data', (d) => { p.out += d; });
  p.exit = new Promise((r) => p.on('exit', (code, signal) => r({ code, signal })));
  return p;
}

async function waitSocket(p, sock, what) {
  const deadline = Date.now() + 20000;
  for (;;) {
    if (existsSync(sock)) return;
    if (p.exitCode !== null || p.signalCode !== null) throw new Error(`${what} exited before creating its socket: ${p.out.trim().split('\n').slice(-3).join(' | ')}`);
    if (Date.now() > deadline) throw new Error(`${what} did not create ${sock} within 20 s`);
    await sleep(50);
  }
}

async function stop(p) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  try { process.kill(-p.pid, 'SIGTERM'); } catch { /* gone */ }
  const t = setTimeout(() => { try { process.kill(-p.pid, 'SIGKILL'); } catch { /* gone */ } }, 5000);
  await p.exit;
  clearTimeout(t);
}

/** Start one backend; returns { socket, proc, cleanup, version }. */
async function startBackend(kind, dir) {
  const sock = join(dir, `${kind}.sock`);
  if (kind === 'qsd') {
    // the file on tmpfs: what a user of qemu-storage-daemon would give for a RAM-backed swap disk
    const img = join('/dev/shm', `blk-bench-${process.pid}.img`);
    closeSync(openSync(img, 'w'));
    const fd = openSync(img, 'r+'); ftruncateSync(fd, DISK); closeSync(fd);
    const p = child(QSD, ['--blockdev', `driver=file,node-name=disk0,filename=${img},discard=unmap`,
      '--export', `type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=${sock},writable=on,num-queues=${opt.queues},logical-block-size=4096`]);
    const version = spawnSync(QSD, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
    try { await waitSocket(p, sock, 'qemu-storage-daemon'); } catch (e) { await stop(p); rmSync(img, { force: true }); throw e; }
    return { socket: sock, proc: p, version, cleanup: () => rmSync(img, { force: true }) };
  }
  const over = join(dir, 'overflow');
  spawnSync('mkdir', ['-p', over]);
  // maxmem far above the span: every block stays in RAM (the overflow file is the e2e test's business)
  const p = child(process.execPath, [TMEMD, '--vm', `name=bench,socket=${join(dir, 'tmem.sock')},maxmem=8G,blk-socket=${sock},blk-size=${DISK / 2 ** 20}M`,
    '--capacity', '4G', '--blk-overflow-dir', over, '--queues', String(opt.queues)]);
  const version = `tmemd ${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version} (${spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim()})`;
  try { await waitSocket(p, sock, 'tmemd'); } catch (e) { await stop(p); throw e; }
  return { socket: sock, proc: p, version, cleanup: () => {} };
}

function runLoadgen(sock, queues, depth, memcpy) {
  const args = ['--socket', sock, '--queues', String(queues), '--depth', String(depth), '--seconds', String(opt.seconds),
    '--read-pct', String(opt.readPct), '--span-mib', String(opt.spanMib), '--json', ...(memcpy ? ['--memcpy'] : []), ...(opt.poll ? ['--poll'] : [])];
  return new Promise((resolve) => {
    const p = spawn(LOADGEN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code, signal) => {
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      let j = null;
      try { j = line ? JSON.parse(line) : null; } catch { /* below */ }
      resolve({ code, signal, j, err: err.trim() });
    });
  });
}

const results = {};
let failed = false;
for (const kind of opt.backends) {
  const dir = mkdtempSync(join(tmpdir(), 'blk-bench-'));
  const r = { backend: kind };
  results[kind] = r;
  let b = null;
  try {
    b = await startBackend(kind, dir);
    r.version = b.version;
    say(`${kind}: ${b.version}`);
    for (const [name, q, d] of [['throughput', opt.queues, opt.depth], ['latency', 1, 1]]) {
      const x = await runLoadgen(b.socket, q, d, name === 'throughput');
      if (x.code !== 0 || !x.j) throw new Error(`blk-loadgen (${name}) exit ${x.code ?? x.signal}: ${x.err.split('\n').slice(-3).join(' | ')}`);
      r[name] = x.j;
      say(`  ${name}: ${q} queue(s) x depth ${d}: ${x.j.requestsPerSec} requests/s, p50 ${x.j.p50Us} us, p99 ${x.j.p99Us} us (${x.j.requests} requests verified, final read of ${x.j.spanBlocks} blocks: ${x.j.mismatches} mismatches)`);
    }
    if (b.proc.exitCode !== null || b.proc.signalCode !== null) throw new Error(`${kind} died during the run: ${b.proc.out.trim().split('\n').slice(-3).join(' | ')}`);
  } catch (e) {
    r.error = e.message;
    failed = true;
    say(`  ${kind} FAILED: ${e.message}`);
  } finally {
    if (b) { await stop(b.proc); b.cleanup(); }
    rmSync(dir, { recursive: true, force: true });
  }
}

const Q = results.qsd, T = results.tmemd;
const f0 = (v) => (v === undefined || v === null ? '-' : Math.round(v).toLocaleString('en-US'));
const f1 = (v) => (v === undefined || v === null ? '-' : v.toFixed(1));
const memcpy = (T?.throughput ?? Q?.throughput)?.memcpyPagesPerSec;
const cols = opt.backends;
const rows = [
  [`requests/s (${opt.queues} queues x depth ${opt.depth})`, (r) => f0(r.throughput?.requestsPerSec)],
  ['  p50 latency, us', (r) => f1(r.throughput?.p50Us)],
  ['  p99 latency, us', (r) => f1(r.throughput?.p99Us)],
  ['  p99.9 latency, us', (r) => f1(r.throughput?.p999Us)],
  ['  ratio to memcpy 4 KiB pages/s', (r) => (r.throughput && r.throughput.memcpyPagesPerSec ? (r.throughput.requestsPerSec / r.throughput.memcpyPagesPerSec).toFixed(4) : '-')],
  ['requests/s (1 queue x depth 1)', (r) => f0(r.latency?.requestsPerSec)],
  ['  p50 latency, us', (r) => f1(r.latency?.p50Us)],
  ['  p99 latency, us', (r) => f1(r.latency?.p99Us)],
];
say('');
say(`4 KiB random I/O, ${opt.readPct}% reads, ${opt.spanMib} MiB span, ${opt.seconds} s per run, completions by ${opt.poll ? 'polling' : 'call eventfd'}; memcpy baseline ${f0(memcpy)} pages/s`);
say(`${''.padEnd(40)}${cols.map((c) => c.padStart(16)).join('')}`);
for (const [label, fn] of rows) say(`${label.padEnd(40)}${cols.map((c) => (results[c].error ? 'failed' : fn(results[c])).padStart(16)).join('')}`);
const cmp = Q?.throughput && T?.throughput ? {
  throughputRatio: T.throughput.requestsPerSec / Q.throughput.requestsPerSec,
  p99Ratio: T.throughput.p99Us / Q.throughput.p99Us,
  latencyP99Ratio: T.latency.p99Us / Q.latency.p99Us,
} : null;
if (cmp) {
  const met = cmp.throughputRatio >= 1 && cmp.p99Ratio <= 1;
  say(`tmem-blk / qemu-storage-daemon: throughput x${cmp.throughputRatio.toFixed(2)}, p99 x${cmp.p99Ratio.toFixed(2)} (depth 1 p99 x${cmp.latencyP99Ratio.toFixed(2)}); target (throughput >= 1, p99 <= 1): ${met ? 'met' : 'NOT met'}`);
  cmp.targetMet = met;
}
if (opt.json) {
  process.stdout.write(JSON.stringify({
    bench: 'blk', queues: opt.queues, depth: opt.depth, seconds: opt.seconds, readPct: opt.readPct, spanMib: opt.spanMib, poll: opt.poll,
    memcpyPagesPerSec: memcpy, results, tmemblkVsQsd: cmp,
  }) + '\n');
}
process.exit(failed ? 1 : 0);
