// End-to-end 1: frontswap integrity. A 192 MiB guest with virtio_tmem
// (writethrough=0) dirties 288 MiB of anonymous memory with a known pattern
// (swapstress: each page from its index and a seed), reads every page back
// and verifies it (small sizes: TCG on a busy 2-core machine). Host-side truth: the daemon held persistent pages
// for this guest (its statistics over the control socket and tmemctl), and
// QEMU's block statistics show that the swap disk was written far less than
// the guest swapped out (/proc/vmstat pswpout).
import t from 'tap';
import {
  atGate, bootVm, bsDelta, counters, diff, e2eEnv, guestEntry, kernelTrouble, kv, mibs, pages, startTmemd, StatsPoller, tail, tmemctl, waitReady,
} from './e2e/harness.js';

const RAM = '192M';
const SWAP_MIB = 288;
const PASSES = 1;

// Both data-plane modes: poll (the worker spins on the rings; the guest never
// kicks) and notify (the guest kicks, the worker sleeps on the eventfds).
for (const queuesMode of ['poll', 'notify'] as const) t.test(`frontswap (tmemd --queues-mode ${queuesMode}): more anonymous memory than RAM, every page verified, pages held by tmemd`, async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '1G', queuesMode });
  const vm = await bootVm(env, {
    daemon: d, ram: RAM, swapSize: '512M', dataSize: '128M', modparams: 'writethrough=0',
    run: `/opt/tmem/workloads/e2e-run.sh /opt/tmem/workloads/swapstress.sh --mib ${SWAP_MIB} --passes ${PASSES}`,
  });
  const ready = await waitReady(vm, true);
  t.comment(ready);
  const poll = new StatsPoller(d, 2000);
  // the guest script waits for us before the workload: the swap disk's counters start here
  const go = await atGate(vm, 'start', 120000);
  const bs0 = await vm.blockstats();
  go();
  const r = await vm.waitForResult(600000);
  const goEnd = await atGate(vm, 'end', 120000);
  const bs1 = await vm.blockstats();
  goEnd();
  await poll.stop();
  const stats = await tmemctl(d, 'stats');
  const g = guestEntry(stats, d.name);
  t.equal(stats.host.mode, queuesMode, `tmemd served the guest in ${queuesMode} mode`);

  const res = r.result ?? {};
  // the kernel's own counters around the workload: in 5.10 pswpout counts only
  // pages written to the swap device; pages frontswap took count as succ_stores
  const kc = diff(counters(vm.markers(), 'before'), counters(vm.markers(), 'after'));
  const swappedOut = (kc.vmstat_pswpout ?? 0) + (kc.frontswap_succ_stores ?? 0);
  const fs = kv(r.tmem_debugfs?.stats);
  const swap = bsDelta(bs0, bs1, 'tmemswap');
  const swapPagesWritten = pages(swap.wr_bytes!);
  t.comment(`guest: ${res.pages_checked} pages of ${res.pages} checked ${res.passes} times, ${res.mismatches} mismatches; fill ${res.fill_s} s, verify ${JSON.stringify(res.verify_pass_s)} s (TCG)`);
  t.comment(`guest: pages swapped out ${swappedOut} = frontswap succ_stores ${kc.frontswap_succ_stores} + pswpout ${kc.vmstat_pswpout} (written to disk); frontswap failed_stores ${kc.frontswap_failed_stores}, loads ${kc.frontswap_loads}; pswpin ${kc.vmstat_pswpin}`);
  t.comment(`driver: frontswap stores ok ${fs.frontswap_stores_ok}, refused ${fs.frontswap_stores_refused}, loads hit ${fs.frontswap_loads_hit}, miss ${fs.frontswap_loads_miss}, timeouts ${fs.timeouts}, protocol errors ${fs.errors_protocol}`);
  t.comment(`tmemd: persistent pages now ${g.store?.persistentPages}, peak ${g.store?.persistentPeak} (polled peak ${poll.peakPersistent} over ${poll.samples} samples), limit ${g.store?.persistentLimitPages}; puts ${g.store?.puts}, gets ${g.store?.gets}, hits ${g.store?.hits}`);
  t.comment(`swap disk (QMP): ${swap.wr_operations} write requests, ${swapPagesWritten} pages (${mibs(swap.wr_bytes!)} MiB) written; ${swap.rd_operations} read requests, ${pages(swap.rd_bytes!)} pages read -- against ${swappedOut} pages swapped out`);

  t.equal(r.rc, 0, 'swapstress exit status 0');
  t.equal(res.ok, true, 'swapstress verified');
  t.equal(res.mismatches, 0, 'no page came back different');
  t.equal(res.pages_checked, res.pages * res.passes, `every page was checked ${res.passes} times`);
  t.ok(res.memtotal_kb * 1024 < res.pages * 4096, `more anonymous memory (${res.mib} MiB) than guest RAM (${Math.round(res.memtotal_kb / 1024)} MiB)`);
  t.ok(swappedOut > 10000, `the guest swapped out (${swappedOut} pages)`);
  t.equal(r.module?.params?.writethrough, 'N', 'module loaded with writethrough=0');
  t.ok(kc.frontswap_succ_stores! > swappedOut * 0.9, `frontswap took almost every swapped-out page (${kc.frontswap_succ_stores} of ${swappedOut})`);
  t.ok(fs.frontswap_stores_ok >= kc.frontswap_succ_stores!, `the driver counted them (stores ok ${fs.frontswap_stores_ok})`);
  t.ok(fs.frontswap_loads_hit > 0, 'frontswap loads hit');
  t.equal(fs.timeouts, 0, 'no request timed out');
  t.equal(fs.errors_protocol, 0, 'no protocol error');
  t.equal(fs.broken, 0, 'device not broken');
  t.ok(g.store && g.store.persistentPeak > 10000, `tmemd held persistent pages for the guest (peak ${g.store?.persistentPeak})`);
  t.ok(poll.peakPersistent > 0, `tmemd showed persistent pages while the guest ran (polled peak ${poll.peakPersistent})`);
  t.ok(swap.wr_operations! < swappedOut, `swap disk write requests (${swap.wr_operations}) < pages swapped out (${swappedOut})`);
  // stronger: only the pages frontswap did not take reach the disk (pswpout), a little slack
  t.ok(swapPagesWritten <= (kc.vmstat_pswpout ?? 0) + 64 && swapPagesWritten < swappedOut * 0.1, `pages written to the swap disk (${swapPagesWritten}) <= pages not taken by frontswap (pswpout ${kc.vmstat_pswpout}) + 64, < 10% of ${swappedOut}`);
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING/lockup on the console');

  await vm.waitForShutdown(120000);
  t.ok(true, 'guest powered off');
  if (t.passing() === false) t.comment(tail(vm.output()));
});
