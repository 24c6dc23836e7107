#!/usr/bin/env node
// Smoke check of vm-images through lib/vm.mjs: build (cached), boot the guest,
// run swapstress and filereader, parse their @@TMEM-RESULT lines on the host,
// read query-blockstats over QMP after the guest powered off, stop QEMU, then
// the daemon. Exit status 0 iff both workloads verified their data.
//
//   node vm-images/check.mjs [--tmem] [--kernel tmem|debian] [--ram 256M] [--swap-mib 384] [--file-mib 128]
//     --tmem   with the vhost-user device, tmemd (dist/host/tmemd.js) and the module
import { parseArgs } from 'node:util';
import { buildAll, Daemon, Vm, Session, makeRunDir, kernelName } from './lib/vm.mjs';

const a = parseArgs({
  options: {
    tmem: { type: 'boolean', default: false },
    kernel: { type: 'string', default: 'tmem' },
    ram: { type: 'string', default: '256M' },
    'swap-mib': { type: 'string', default: '384' },
    'file-mib': { type: 'string', default: '128' },
    quiet: { type: 'boolean', default: false },
  },
}).values;
const say = (s) => process.stderr.write(`[check] ${s}\n`);
const t0 = Date.now();
const b = await buildAll({ kernel: kernelName(a.kernel), module: a.tmem ? undefined : 'none' });
say(`built/cached in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${JSON.stringify(b)}`);

// stops QEMU, then the daemon, then removes the run directory
const session = new Session().guardProcess();
const runDir = session.addDir(makeRunDir('check'));
const daemon = a.tmem ? session.add(await Daemon.start({ socket: `${runDir}/tmem.sock`, control: `${runDir}/ctl.sock`, queues: 2, maxmem: '1G', capacity: '1G', log: null })) : null;
const t1 = Date.now();
const vm = session.add(await Vm.start({
  ...b, runDir, ram: a.ram, cpus: 2, swapSize: '1G', dataSize: '1G', tmemSocket: daemon?.socket, noModule: !a.tmem,
  run: `/opt/tmem/workloads/swapstress.sh --mib ${a['swap-mib']}; /opt/tmem/workloads/filereader.sh --mib ${a['file-mib']}`,
  echo: a.quiet ? null : process.stderr,
}));
let ok = true;
try {
  const ready = await vm.waitFor(/@@TMEM-READY.*/, 120000);
  say(`guest ready after ${((Date.now() - t1) / 1000).toFixed(1)} s: ${ready[0]}`);
  for (const want of ['swapstress', 'filereader']) {
    const r = await vm.waitForResult(900000);
    const res = r.result || {};
    ok &&= r.workload === want && r.rc === 0 && res.ok === true;
    say(`${r.workload}: rc ${r.rc} ok ${res.ok} ${want === 'swapstress'
      ? `pages_checked ${res.pages_checked} mismatches ${res.mismatches} pswpout ${r.vmstat_delta.pswpout} pswpin ${r.vmstat_delta.pswpin}`
      : `passes ${JSON.stringify((res.passes || []).map((p) => ({ s: p.seconds, pgpgin_kb: p.pgpgin_kb, ok: p.ok })))}`} debugfs files: ${Object.keys(r.tmem_debugfs || {}).join(',') || 'none'}`);
  }
  await vm.waitForShutdown(120000);
  const bs = await vm.blockstats();
  for (const [d, s] of Object.entries(bs)) say(`blockstats ${d}: rd_operations ${s.rd_operations} rd_bytes ${s.rd_bytes} wr_operations ${s.wr_operations} wr_bytes ${s.wr_bytes}`);
} catch (e) {
  ok = false;
  say(`FAILED: ${e.message}`);
} finally {
  await session.stop();
}
say(`${ok ? 'OK' : 'FAILED'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(ok ? 0 : 1);
