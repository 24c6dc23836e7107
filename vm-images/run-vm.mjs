#!/usr/bin/env node
// npm run vm -- [options]: build what is missing, start tmemd, boot the test guest
// on the project's 5.10 kernel or one of Debian's (--kernel). See vm-images/README.md.
// Plain Node ESM over the compiled VM library (vm-images/lib/*.ts, npm run build).
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { launch, buildAll, qemuArgs, bootAppend, detectAccel, kernelName, REPO_DIR } from './lib/vm.mjs';

const USAGE = `Usage: node vm-images/run-vm.mjs [options]      (npm run vm -- [options])

Boots the tmem test guest (Linux 5.10) under QEMU >= 10.2 with the tmem device
served by tmemd. Builds and caches QEMU, the kernel, the root image and the
project-files disk first when they are missing.

  --kernel NAME        the guest kernel (default tmem):
                       tmem    the project's 5.10 build: cleancache + frontswap, THP off
                       debian  Debian bullseye's own linux-image-5.10.0-N-amd64, unmodified:
                               frontswap only, THP always, lockup detectors on; booted with
                               our initramfs; the module built against Debian's headers
                       bookworm          Debian 12's own 6.1 cloud kernel, unmodified: no
                               frontswap, no zswap, no module (use --blk and swap on it)
                       bookworm-generic  Debian 12's 6.1 generic kernel (zswap built in)
  --blk SIZE           a tmem-blk disk of SIZE served by tmemd (QEMU's vhost-user-blk-pci at
                       PCI 00:10.0; overflow file in the run directory); in the guest e.g.
                       d=/sys/bus/pci/devices/0000:00:10.0/virtio*/block/*; mkswap /dev/\${d##*/}
  --ram SIZE           guest RAM (default 512M)
  --cpus N             vCPUs (default 2)
  --queues N           tmem request queues, QEMU num_vqs and tmemd --queues (default = cpus)
  --maxmem SIZE        the VM's maxmem in tmemd: its persistent (frontswap) pages are
                       limited to maxmem - RAM, as in Xen (default 2 x RAM)
  --capacity SIZE      tmemd --capacity, host memory for all tmem pages (default 1G)
  --swap-size SIZE     swap disk /dev/vdb (default 1G; 0 = none)
  --data-size SIZE     fresh ext4 data disk at /mnt/data (default 2G; 0 = none)
  --no-tmem            no daemon, no vhost-user device
  --tmemd CMD          daemon command (default "node dist/host/tmemd.js"; --vm/--capacity/
                       --queues/--control are appended)
  --daemon-arg ARG     one more daemon argument (repeatable)
  --module PATH        virtio_tmem.ko to put in the guest (default: the kernel's own: tmem:
                       the newest under guest-driver/; debian: built from guest-driver/
                       against Debian's headers, cached)
  --no-module          do not load (or ship) the module
  --modparams "a=1 b=2"  module parameters
  --run CMD            run CMD in the guest non-interactively and exit when it powers off,
                       e.g. --run /opt/tmem/workloads/swapstress.sh or
                            --run "/opt/tmem/workloads/filereader.sh --mib 256"
  --timeout SEC        for --run: give up after SEC seconds (default 3600)
  --json FILE          for --run: write {results, blockstats, rc} to FILE
  --extra-append STR   more kernel command line
  --accel kvm|tcg      default: kvm only if /dev/kvm and vmx/svm exist, else tcg
  --keep               keep the run directory (swap/data images, sockets)
  --print-cmdline      build, print the QEMU command line, do not boot
  --build-only         build/check everything and exit
  -h, --help           this text

Exit status with --run: the guest command's exit status (@@TMEM-RUN-END rc=N),
or 124 on timeout, 125 if the guest never reported.`;

let a;
try {
  a = parseArgs({
    options: {
      kernel: { type: 'string', default: 'tmem' },
      ram: { type: 'string', default: '512M' },
      cpus: { type: 'string', default: '2' },
      queues: { type: 'string' },
      maxmem: { type: 'string' },
      capacity: { type: 'string', default: '1G' },
      'swap-size': { type: 'string', default: '1G' },
      'data-size': { type: 'string', default: '2G' },
      'no-tmem': { type: 'boolean', default: false },
      tmemd: { type: 'string' },
      'daemon-arg': { type: 'string', multiple: true, default: [] },
      module: { type: 'string' },
      'no-module': { type: 'boolean', default: false },
      modparams: { type: 'string' },
      run: { type: 'string' },
      timeout: { type: 'string', default: '3600' },
      json: { type: 'string' },
      'extra-append': { type: 'string', default: '' },
      accel: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'print-cmdline': { type: 'boolean', default: false },
      'build-only': { type: 'boolean', default: false },
      name: { type: 'string', default: 'vm0' },
      blk: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: false,
  }).values;
} catch (e) {
  console.error(`run-vm: ${e.message}\n\n${USAGE}`);
  process.exit(2);
}
if (a.help) { console.log(USAGE); process.exit(0); }
let kernel;
try { kernel = kernelName(a.kernel); } catch (e) { console.error(`run-vm: ${e.message}`); process.exit(2); }

const say = (s) => process.stderr.write(`[run-vm] ${s}\n`);
const cpus = Number(a.cpus);
const queues = a.queues ? Number(a.queues) : cpus;

if (a['build-only'] || a['print-cmdline']) {
  const b = await buildAll({ kernel, module: a['no-module'] ? 'none' : a.module });
  if (a['print-cmdline']) {
    const o = {
      ...b, ram: a.ram, cpus, queues, accel: a.accel || detectAccel(), qmpPath: 'RUNDIR/qmp.sock',
      swapImg: 'RUNDIR/swap.img', dataImg: 'RUNDIR/data.img', tmemSocket: a['no-tmem'] ? null : 'RUNDIR/tmem.sock',
      blkSocket: a.blk ? 'RUNDIR/blk.sock' : null,
      run: a.run, modparams: a.modparams, noShutdown: !!a.run,
      append: bootAppend({ noModule: a['no-module'], extraAppend: a['extra-append'] }),
    };
    const q = (s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
    const args = qemuArgs({ ...o, interactive: !a.run });
    const lines = [q(b.qemu)];
    for (let i = 0; i < args.length; i++) {
      if (args[i].startsWith('-') && i + 1 < args.length && !args[i + 1].startsWith('-')) { lines.push(`${args[i]} ${q(args[i + 1])}`); i++; } else lines.push(q(args[i]));
    }
    console.log(lines.join(' \\\n  '));
  } else {
    console.log(JSON.stringify(b, null, 2));
  }
  process.exit(0);
}

const interactive = !a.run && process.stdin.isTTY;
if (!a['no-tmem'] && !a.tmemd && !process.env.TMEMD && !fs.existsSync(path.join(REPO_DIR, 'dist/host/tmemd.js'))) {
  say('dist/host/tmemd.js does not exist: run `npm run build`, give --tmemd CMD, or use --no-tmem');
  process.exit(2);
}

const t0 = Date.now();
const session = await launch({
  kernel, name: a.name, ram: a.ram, cpus, queues, maxmem: a.maxmem, capacity: a.capacity,
  swapSize: a['swap-size'], dataSize: a['data-size'], tmem: !a['no-tmem'], tmemd: a.tmemd,
  daemonArgs: a['daemon-arg'], module: a.module, noModule: a['no-module'], modparams: a.modparams,
  run: a.run, extraAppend: a['extra-append'], accel: a.accel, keepRunDir: a.keep, blkSize: a.blk,
  interactive, echo: interactive ? null : process.stdout,
});
const { vm, daemon, runDir } = session;
const tQemu = Date.now();
say(`QEMU started (kernel ${vm.kernel.name} ${vm.kernel.version}, accel ${vm.options.accel || detectAccel()}, ram ${a.ram}, cpus ${cpus}, ${daemon ? `tmem device, ${queues} queues, daemon pid ${daemon.proc.pid}` : 'no tmem device'}; run dir ${runDir})`);
if (interactive) say('console on this terminal: Ctrl-A X quits QEMU, "poweroff" in the guest too');
else vm.waitFor(/@@TMEM-READY/, 0).then(() => say(`guest ready (@@TMEM-READY) ${((Date.now() - t0) / 1000).toFixed(1)} s after the start, ${((Date.now() - tQemu) / 1000).toFixed(1)} s after QEMU's`), () => {});

// QEMU first, then the daemon (Session); once, whoever asks first
let stopping = false;
const stopAll = () => { stopping = true; return session.stop(); };
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, async () => {
    say(`${sig}: stopping QEMU, then the daemon`);
    await stopAll();
    process.exit(130);
  });
}
// the daemon must not die before QEMU; if it does, say so (QEMU will abort or hang)
daemon?.wait().then((r) => { if (!stopping) say(`WARNING: tmemd exited (${JSON.stringify(r)}) while QEMU runs`); });

if (!a.run) {
  if (!interactive) process.stdin.pipe(vm.proc.stdin);
  const r = await vm.waitForShutdown(0);
  await stopAll();
  say(`guest stopped (${JSON.stringify(r)}) after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  process.exit(0);
}

// --run: wait for the guest to power off (QEMU stays up: -no-shutdown), read blockstats, quit
let rc = 125;
try {
  await vm.waitForShutdown(Number(a.timeout) * 1000);
} catch (e) {
  say(e.message);
  rc = 124;
}
let blockstats = null;
try { blockstats = await vm.blockstats(); } catch (e) { say(`query-blockstats failed: ${e.message}`); }
await stopAll();
const m = vm.markers().match(/@@TMEM-RUN-END rc=(\d+)/);
if (m && rc !== 124) rc = Number(m[1]);
const secs = (Date.now() - t0) / 1000;

say(`---- ${vm.results.length} result(s), guest rc ${rc}, ${secs.toFixed(1)} s ----`);
for (const r of vm.results) {
  const res = r.result || {};
  const brief = { workload: r.workload, rc: r.rc, wall_s: r.wall_s, ok: res.ok, vmstat_delta: r.vmstat_delta };
  if (r.workload === 'swapstress') Object.assign(brief, { mib: res.mib, pages_checked: res.pages_checked, mismatches: res.mismatches });
  if (r.workload === 'filereader') brief.passes = (res.passes || []).map((p) => ({ s: p.seconds, pgpgin_kb: p.pgpgin_kb, ok: p.ok }));
  say(`result ${JSON.stringify(brief)}`);
}
if (blockstats) {
  for (const [dev, s] of Object.entries(blockstats)) {
    say(`blockstats ${dev}: rd_ops ${s.rd_operations} rd_bytes ${s.rd_bytes} wr_ops ${s.wr_operations} wr_bytes ${s.wr_bytes}`);
  }
}
if (a.json) {
  fs.writeFileSync(a.json, JSON.stringify({ rc, seconds: secs, results: vm.results, blockstats, cmdline: vm.cmdline }, null, 2));
  say(`wrote ${a.json}`);
}
process.exit(rc);
