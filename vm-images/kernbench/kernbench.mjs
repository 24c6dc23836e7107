#!/usr/bin/env node
// kernbench: how much disk I/O does tmem save, at what CPU cost, against no tmem and zswap.
//
// A parallel `make -jN` of Linux 5.10 objects (vm-images/kernbench/build-data.mjs) inside a
// guest with little RAM, fresh boot per run, the same data disk (snapshot=on) every run, in
// three configurations:
//   notmem  no tmem device, no module (zswap off)
//   tmem    tmemd + virtio_tmem with cleancache=1 frontswap=1 (zswap off)
//   zswap   no tmem device, no module, zswap.enabled=1 in the guest
//   tmem-blk  swap on tmemd's tmem-blk (QEMU's vhost-user-blk-pci, swapon --discard) instead
//           of the swap disk; no tmem device, no module (zswap off). For a 6.1 guest:
//           --kernel bookworm-generic --configs notmem,zswap,tmem-blk (Debian 12's own
//           linux-image-6.1.0-N-amd64; its cloud flavour has no zswap)
// Per run: QMP query-blockstats per disk (after the workload, before quit), the guest's
// /proc/vmstat deltas over the workload, the workload's wall time (in the guest), tmemd CPU
// time (/proc/PID/stat utime+stime before/after) and per request (over the requests its
// counters say it served during the make, and over the whole run), tmem puts/gets/hits per pool kind and the
// host memory held by tmem (control socket `stats`, i.e. `tmemctl stats --json`, sampled
// every few seconds). Output: a progress line, a table, reports/kernbench-<timestamp>/
// (report.md, index.html, raw.json, SVG+PNG figures); --json prints one JSON object last.
//
//   npm run kernbench -- [--runs 3] [--ram 224M] [--cpus 2] [--jobs 4] [--size 8] [--queues-mode notify]
//                        [--configs notmem,tmem,zswap,tmem-blk] [--kernel tmem|bookworm-generic|...] [--json] [--help]
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { buildAll, startDaemon, startVm, makeRunDir, detectAccel, Session, REPO_DIR, VM_IMAGES_DIR, CACHE, KERNELS } from '../lib/vm.mjs';
import { buildDataDisk, DEFAULT_DIRS } from './build-data.mjs';
import { writeReport, reportFromRaw, tmemdRequestsOf, cpuPerRequestUs } from './report.mjs';

const CONFIGS = ['notmem', 'tmem', 'zswap', 'tmem-blk'];
// the run in progress: its Session stops QEMU first, then the daemon (both
// run in their own process groups), then removes the run directory
let live = null;
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\nkernbench: ${sig}: stopping QEMU, then tmemd\n`);
    await live?.stop().catch(() => {});
    process.exit(130);
  });
}
const HELP = `Usage: npm run kernbench -- [options]

  --runs N          runs per configuration (default 3); configurations interleave
  --configs LIST    of notmem,tmem,zswap,tmem-blk (default notmem,tmem,zswap; with a 6.1
                    --kernel: notmem,zswap,tmem-blk)
  --kernel NAME     the guest kernel: tmem (default: the project's 5.10), debian (bullseye
                    5.10), bookworm (Debian 12's 6.1 cloud kernel: no zswap, no frontswap)
                    or bookworm-generic (Debian 12's 6.1 generic kernel: zswap, no module)
  --ram SIZE        guest RAM (default 224M)
  --cpus N          guest vCPUs (default 2)
  --jobs N          make -jN in the guest (default 4)
  --size N          compile units (Linux 5.10 objects; default 8)
  --dirs LIST       kernel directories to take them from (default ${DEFAULT_DIRS.join(',')})
  --swap SIZE       swap disk (default 1G)
  --maxmem SIZE     tmemd maxmem for the guest (default 1G); --capacity SIZE (default 1G)
  --queues-mode M   tmemd's --queues-mode: notify (default: the worker sleeps until a
                    guest kicks, so its CPU time is the work done) or poll (a worker
                    thread spins on the rings: no VM exits, one host core taken)
  --poll-spin-ms MS tmemd's --poll-spin-ms in poll mode (default: tmemd's, 50)
  --sample S        tmem stats sampling period in seconds (default 5)
  --timeout MIN     per-run limit (default 25)
  --out DIR         report directory (default reports/kernbench-<timestamp>)
  --json            print one JSON object last (the summary keys)
  --quiet           no progress line
  --report-from RAW re-make the table and report from a raw.json (no VM runs)
`;

function parseArgs(argv) {
  const o = { runs: 3, queuesMode: 'notify', configs: null, kernel: 'tmem', ram: '224M', cpus: 2, jobs: 4, size: 8, dirs: DEFAULT_DIRS, swap: '1G', maxmem: '1G', capacity: '1G', sample: 5, timeout: 25, out: null, json: false, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
    switch (a) {
      case '--runs': o.runs = Number(v()); break;
      case '--configs': o.configs = v().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--kernel': o.kernel = v(); break;
      case '--ram': o.ram = v(); break;
      case '--cpus': o.cpus = Number(v()); break;
      case '--jobs': o.jobs = Number(v()); break;
      case '--size': o.size = Number(v()); break;
      case '--dirs': o.dirs = v().split(','); break;
      case '--swap': o.swap = v(); break;
      case '--maxmem': o.maxmem = v(); break;
      case '--capacity': o.capacity = v(); break;
      case '--queues-mode': o.queuesMode = v(); break;
      case '--poll-spin-ms': o.pollSpinMs = v(); break;
      case '--sample': o.sample = Number(v()); break;
      case '--timeout': o.timeout = Number(v()); break;
      case '--out': o.out = v(); break;
      case '--json': o.json = true; break;
      case '--quiet': o.quiet = true; break;
      case '--report-from': o.reportFrom = v(); break;
      case '-h': case '--help': process.stdout.write(HELP); process.exit(0); break;
      default: throw new Error(`unknown option ${a} (see --help)`);
    }
  }
  if (!['notify', 'poll'].includes(o.queuesMode)) throw new Error(`--queues-mode must be notify or poll, not '${o.queuesMode}'`);
  checkKernelConfigs(o);
  for (const k of ['runs', 'cpus', 'jobs', 'size', 'sample', 'timeout']) if (!(o[k] > 0)) throw new Error(`--${k} must be a positive number`);
  return o;
}

/** --kernel and --configs together: what each kernel can run (the 6.1 kernels have no frontswap; the cloud one no zswap). */
function checkKernelConfigs(o) {
  if (!KERNELS.includes(o.kernel)) throw new Error(`unknown --kernel '${o.kernel}' (${KERNELS.join(', ')})`);
  const six = o.kernel.startsWith('bookworm');
  o.configs ??= six ? ['notmem', 'zswap', 'tmem-blk'].filter((c) => c !== 'zswap' || o.kernel !== 'bookworm') : ['notmem', 'tmem', 'zswap'];
  for (const c of o.configs) if (!CONFIGS.includes(c)) throw new Error(`unknown configuration '${c}' (${CONFIGS.join(', ')})`);
  if (six && o.configs.includes('tmem')) throw new Error(`configuration tmem needs frontswap: --kernel ${o.kernel} (6.1) has none (use tmem-blk)`);
  if (o.kernel === 'bookworm' && o.configs.includes('zswap')) throw new Error('configuration zswap: the bookworm cloud kernel has no zswap (# CONFIG_ZSWAP is not set): use --kernel bookworm-generic');
}

/** tmem-blk: tmemd serving only the VM's vhost-user-blk swap disk (blk-size = --swap). */
async function startBlkDaemon(o, runDir, ctl, log) {
  const overflow = path.join(runDir, 'overflow');
  fs.mkdirSync(overflow, { recursive: true });
  return startDaemon({
    socket: path.join(runDir, 'tmem.sock'), name: 'vm0', maxmem: o.maxmem, capacity: o.capacity, queues: o.cpus, control: ctl,
    blkSocket: path.join(runDir, 'blk.sock'), blkSize: o.swap, blkOverflowDir: overflow,
    args: ['--queues-mode', o.queuesMode, ...(o.pollSpinMs !== undefined ? ['--poll-spin-ms', o.pollSpinMs] : [])], log,
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const CLK_TCK = (() => { try { return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100; } catch { return 100; } })();

/** utime+stime of a process (all its threads), in seconds. */
function procCpuS(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14, 15
}
function procMemKb(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const g = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s) || [])[1] || 0);
  // RssAnon: the daemon's heap and its tmem frames; RssShmem: guest RAM it touched through its mapping of the memfd
  return { rssKb: g('VmRSS'), hwmKb: g('VmHWM'), anonKb: g('RssAnon'), shmemKb: g('RssShmem') };
}

/** One request on tmemd's control socket (what `tmemctl --json stats` prints). */
function control(sock, cmd, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(sock);
    let buf = '';
    const t = setTimeout(() => { c.destroy(); reject(new Error('control: timeout')); }, timeoutMs);
    c.on('connect', () => c.write(JSON.stringify({ cmd }) + '\n'));
    c.on('data', (d) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i < 0) return;
      clearTimeout(t); c.end();
      try {
        const r = JSON.parse(buf.slice(0, i));
        if (r.ok) resolve(r.result); else reject(new Error(r.error));
      } catch (e) { reject(e); }
    });
    c.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

/** Flatten a `stats` reply: totals and per pool kind (persistent = frontswap, ephemeral = cleancache). */
export function tmemSummary(st) {
  const g = st?.guests?.[0]?.store || null;
  const host = st?.host?.store || {};
  const kinds = { cleancache: { puts: 0, gets: 0, hits: 0, pools: 0 }, frontswap: { puts: 0, gets: 0, hits: 0, pools: 0 } };
  for (const p of g?.pools || []) {
    const k = p.persistent ? kinds.frontswap : kinds.cleancache;
    k.puts += p.puts || 0; k.gets += p.gets || 0; k.hits += p.hits || 0; k.pools++;
  }
  return {
    puts: g?.puts ?? 0, gets: g?.gets ?? 0, hits: g?.hits ?? 0,
    putsNoSpace: g?.putsNoSpace ?? 0, evictions: g?.evictions ?? 0,
    persistentPages: g?.persistentPages ?? 0, ephemeralPages: g?.ephemeralPages ?? 0,
    persistentPeak: g?.persistentPeak ?? 0, ephemeralPeak: g?.ephemeralPeak ?? 0,
    hostPages: (host.ephemeralPages ?? 0) + (host.persistentPages ?? 0),
    frameBytes: host.frameBytes ?? null, metaBytes: host.metaBytes ?? null,
    kinds,
  };
}

function blockTotals(bs) {
  const disks = {};
  let readOps = 0, writeOps = 0, readBytes = 0, writeBytes = 0;
  for (const [id, s] of Object.entries(bs || {})) {
    disks[id] = { readOps: s.rd_operations, writeOps: s.wr_operations, readBytes: s.rd_bytes, writeBytes: s.wr_bytes };
    readOps += s.rd_operations; writeOps += s.wr_operations; readBytes += s.rd_bytes; writeBytes += s.wr_bytes;
  }
  return { disks, readOps, writeOps, readBytes, writeBytes };
}

async function oneRun({ o, built, data, config, index, total, progress }) {
  const session = new Session();
  live = session;
  const runDir = session.addDir(makeRunDir(`kernbench-${config}`));
  const t0 = Date.now();
  const rec = { config, index, startedAt: new Date(t0).toISOString() };
  let daemon = null, vm = null;
  const samples = [];
  let sampler = null;
  const ctl = path.join(runDir, 'tmemd-control.sock');
  try {
    if (config === 'tmem' || config === 'tmem-blk') {
      let dlog = '';
      const dlogSink = { write: (d) => { dlog += d; if (dlog.length > 1e6) dlog = dlog.slice(-5e5); } };
      daemon = config === 'tmem-blk' ? await startBlkDaemon(o, runDir, ctl, dlogSink) : await startDaemon({
        socket: path.join(runDir, 'tmem.sock'), name: 'vm0', maxmem: o.maxmem, capacity: o.capacity,
        queues: o.cpus, control: ctl, args: ['--queues-mode', o.queuesMode, ...(o.pollSpinMs !== undefined ? ['--poll-spin-ms', o.pollSpinMs] : [])], log: dlogSink,
      });
      session.add(daemon);
      rec.daemonCmd = daemon.cmdline;
      rec.tmemdPid = daemon.proc.pid;
      rec.tmemdCpu0S = procCpuS(daemon.proc.pid);
      rec.daemonLogTail = () => dlog.slice(-4000);
    }
    const qemuExtra = ['-drive', `file=${data.img},if=none,id=kbdata,format=raw,snapshot=on,cache=writeback`,
      '-device', 'virtio-blk-pci,drive=kbdata,serial=tmemdata,id=tmemdata'];
    vm = await startVm({
      ...built, name: `kernbench-${config}`, ram: o.ram, cpus: o.cpus, swapSize: config === 'tmem-blk' ? 0 : o.swap, dataSize: 0, runDir,
      qemuExtra, run: `/opt/tmem/extra/kernbench.sh --jobs ${o.jobs}${config === 'tmem-blk' ? ' --swap-blk' : ''}`,
      tmemSocket: daemon && config === 'tmem' ? daemon.socket : null,
      blkSocket: config === 'tmem-blk' ? path.join(runDir, 'blk.sock') : null, blkQueues: o.cpus,
      modparams: config === 'tmem' ? 'cleancache=1 frontswap=1' : undefined,
      noModule: config !== 'tmem',
      extraAppend: config === 'zswap' ? 'zswap.enabled=1' : '',
    });
    session.add(vm);
    const started = new Set();
    vm.events.on('line', (l) => { const m = /^\s*CC (\S+)/.exec(l); if (m) started.add(m[1]); });
    vm.events.on('marker', (l) => {
      if (daemon && l.includes('@@TMEM-RUN-BEGIN')) {
        try { rec.tmemdCpuRunBeginS = procCpuS(daemon.proc.pid); } catch { /* */ }
        // the requests served so far, for CPU per request over the make (milliseconds after the CPU sample)
        control(ctl, 'stats').then((st) => { rec.tmemdRequestsRunBegin = tmemdRequestsOf(st); }).catch(() => {});
      }
    });
    const ready = vm.waitFor(/@@TMEM-READY[^\n]*/, 180e3).then((m) => { rec.ready = m[0].trim(); rec.bootS = (Date.now() - t0) / 1000; }).catch(() => {});
    // sampler + progress
    let last = null;
    const tick = async () => {
      if (daemon) {
        try {
          const st = await control(ctl, 'stats');
          last = st;
          const s = tmemSummary(st);
          samples.push({ t: (Date.now() - t0) / 1000, ...s, kinds: undefined, cc: s.kinds.cleancache, fs: s.kinds.frontswap });
        } catch { /* daemon busy or guest not connected yet */ }
        try {
          const m = procMemKb(daemon.proc.pid);
          rec.tmemdAnonPeakKb = Math.max(rec.tmemdAnonPeakKb ?? 0, m.anonKb);
          rec.tmemdShmemPeakKb = Math.max(rec.tmemdShmemPeakKb ?? 0, m.shmemKb);
        } catch { /* gone */ }
      }
      if (progress) {
        const s = samples.at(-1);
        progress(`[kernbench] run ${index}/${total} ${config}: ${((Date.now() - t0) / 1000).toFixed(0)} s, compiling: ${started.size}/${data.objects.length} started` +
          (s ? `, tmem puts ${s.puts} gets ${s.gets} hits ${s.hits}` : ''));
      }
    };
    sampler = setInterval(tick, o.sample * 1000);
    const result = await vm.waitForResult(o.timeout * 60e3);
    rec.wallHostS = (Date.now() - t0) / 1000;
    if (daemon) {
      try { rec.tmemdCpuResultS = procCpuS(daemon.proc.pid); } catch { /* */ }
      if (rec.tmemdCpuRunBeginS !== undefined) rec.tmemdCpuWorkloadS = rec.tmemdCpuResultS - rec.tmemdCpuRunBeginS; // before the guest's swapoff/umount destroy the pools
      try { last = await control(ctl, 'stats'); } catch { /* keep the last sample */ }
      rec.tmemAtEnd = tmemSummary(last);
      const reqEnd = tmemdRequestsOf(last);
      if (reqEnd !== null && Number.isFinite(rec.tmemdRequestsRunBegin)) rec.tmemdRequestsWorkload = reqEnd - rec.tmemdRequestsRunBegin;
      rec.tmemdCpuPerRequestUs = cpuPerRequestUs(rec.tmemdCpuWorkloadS, rec.tmemdRequestsWorkload);
      rec.tmemStatsRaw = last;
    }
    await ready;
    await vm.waitForShutdown(120e3);
    clearInterval(sampler); sampler = null;
    const bs = await vm.blockstats();
    rec.blockstats = bs;
    rec.io = blockTotals(bs);
    if (daemon) {
      try {
        const st = await control(ctl, 'stats');
        rec.tmemAfterShutdown = tmemSummary(st);
        rec.tmemdRequests = tmemdRequestsOf(st) ?? undefined; // the whole run's: the daemon started with the run
      } catch { /* */ }
    }
    await vm.quit();
    if (daemon) {
      rec.tmemdCpu1S = procCpuS(daemon.proc.pid);
      rec.tmemdCpuS = rec.tmemdCpu1S - rec.tmemdCpu0S;
      rec.tmemdCpuPerRequestRunUs = cpuPerRequestUs(rec.tmemdCpuS, rec.tmemdRequests);
      Object.assign(rec, { tmemdMem: procMemKb(daemon.proc.pid) });
    }
    rec.result = result;
    rec.wallS = result.wall_s;
    rec.vmstat = result.vmstat_delta;
    const v = result.vmstat_delta || {};
    rec.ioCount = (v.pswpin || 0) + (v.pswpout || 0) + (v.pgmajfault || 0);
    rec.ok = result.rc === 0 && result.result && result.result.built === result.result.objects;
    if (!rec.ok) rec.error = `workload rc=${result.rc}, built ${result.result?.built}/${result.result?.objects}`;
    rec.samples = samples;
    rec.objectsStarted = started.size;
  } catch (e) {
    rec.ok = false;
    rec.error = e.message.slice(0, 4000);
  } finally {
    if (sampler) clearInterval(sampler);
    await session.stop();
    if (typeof rec.daemonLogTail === 'function') { if (!rec.ok) rec.daemonLog = rec.daemonLogTail(); delete rec.daemonLogTail; }
    if (vm && !rec.ok) rec.consoleTail = vm.output().slice(-6000);
    live = null;
  }
  rec.seconds = (Date.now() - t0) / 1000;
  return rec;
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`kernbench: ${e.message}\n`);
    process.exit(2); // a bad flag, as tmemd and QEMU report it
  }
  if (o.reportFrom) {
    const { summary, table, plotError } = await reportFromRaw(o.reportFrom, o.out);
    process.stdout.write(table + '\n');
    if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
    if (plotError) process.exitCode = 1;
    return;
  }
  const log = o.json ? process.stderr : process.stdout;
  const tty = log.isTTY && !o.quiet;
  const progress = o.quiet ? null : (s) => { if (tty) log.write(`\r\x1b[K${s}`); else log.write(`${s}\n`); };
  const endProgress = () => { if (tty) log.write('\n'); };
  if (!fs.existsSync(path.join(REPO_DIR, 'dist/host/tmemd.js')) && (o.configs.includes('tmem') || o.configs.includes('tmem-blk'))) throw new Error('dist/host/tmemd.js missing: npm run build first');
  const extra = path.join(VM_IMAGES_DIR, 'kernbench/guest');
  const built = await buildAll({ kernel: o.kernel, extra, log: process.stderr });
  // the objects compiled are Linux 5.10's whatever the guest runs: the project's kernel tree (setup builds it)
  const data = buildDataDisk({ kernelDir: o.kernel === 'tmem' ? built.kernelDir : path.join(CACHE, 'kernel'), size: o.size, dirs: o.dirs, log: process.stderr });
  const started = new Date();
  const machine = {
    host: os.hostname(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    accel: detectAccel(), loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)), kernel: os.release(), node: process.version,
  };
  const order = [];
  for (let r = 0; r < o.runs; r++) for (const c of o.configs) order.push(c);
  const runs = [];
  for (let i = 0; i < order.length; i++) {
    const rec = await oneRun({ o, built, data, config: order[i], index: i + 1, total: order.length, progress });
    endProgress();
    runs.push(rec);
    log.write(`[kernbench] run ${i + 1}/${order.length} ${rec.config}: ${rec.ok ? `wall ${rec.wallS} s, read ${rec.io.readOps} ops / ${(rec.io.readBytes / 2 ** 20).toFixed(1)} MiB, write ${rec.io.writeOps} ops / ${(rec.io.writeBytes / 2 ** 20).toFixed(1)} MiB, swap+majflt ${rec.ioCount}${rec.tmemdCpuS !== undefined ? `, tmemd ${rec.tmemdCpuS.toFixed(1)} s CPU` : ''}${Number.isFinite(rec.tmemdCpuPerRequestUs) ? ` (make: ${rec.tmemdRequestsWorkload} requests, ${rec.tmemdCpuPerRequestUs} us CPU per request)` : ''}` : `FAILED: ${rec.error.split('\n')[0]}`}\n`);
  }
  const outDir = o.out || path.join(REPO_DIR, 'reports', `kernbench-${started.toISOString().replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z')}`);
  const { summary, table } = await writeReport({ outDir, options: o, machine, data, built, runs, started, argv: process.argv.slice(2) });
  log.write(table + '\n');
  log.write(`[kernbench] report: ${outDir}/report.md, ${outDir}/index.html\n`);
  if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
  if (runs.some((r) => !r.ok)) process.exitCode = 1;
}

main().catch((e) => { process.stderr.write(`kernbench: ${e.stack || e.message}\n`); process.exit(1); });
