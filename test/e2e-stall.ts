// End-to-end: a host that stops answering, with the module's DEFAULT
// parameters (writethrough=0: a page frontswap takes exists only in tmemd).
//
// (a) SIGSTOP, then SIGCONT. A 192 MiB guest fills 224 MiB of anonymous memory
//     with a known pattern (swapstress). While it fills, tmemd is stopped for
//     longer than the driver's request bound (timeout_ms, read from the guest)
//     and continued: stores meet a host that does not answer. With the memory
//     filled and held, tmemd is stopped again and the guest verifies every
//     page: the loads of pages tmemd holds meet a host that does not answer.
//     guest-driver/README.md ("Guarantees"): a slow host does not take the
//     device down; a store that is not answered in time is refused (the
//     kernel writes that page to the swap disk); a load of a page frontswap
//     accepted waits for the host, because the page exists nowhere else.
//     Shown: every page verified, no frontswap load missed, no
//     "may be lost" line, the device still bound and not broken, and tmem
//     used again afterwards: a second swapstress is served by frontswap
//     (driver: stores ok and loads hit grow; tmemd: puts and hits grow).
//
// (b) SIGKILL while the driver is bound. QEMU has no reconnect (DESIGN.md):
//     the device never answers again, so what tmemd held is gone. With
//     writethrough=0 nothing in the guest has those pages any more: no test
//     can ask to get them back, and the Linux 5.10 frontswap_load interface
//     has no error return (a failed load makes the kernel read the swap
//     slot, which was never written), so the only data-safe configuration
//     for a host that may die is writethrough=1 (guest-driver/README.md).
//     This case runs with writethrough=1 and shows what that promises: the
//     guest neither hangs nor crashes, every page verifies (from the swap
//     disk), and it reaches power-off. QEMU is then killed: a guest driver
//     restart after the backend died would abort QEMU (DESIGN.md).
import t from 'tap';
import {
  atGate, bootVm, counters, daemonStats, diff, dmesgLines, e2eEnv, finish, guestEntry, kernelTrouble, startTmemd, statsAtGate, swapComment, swapOk, tail, usedAgain, waitDaemon, waitReady, type DaemonHandle, type Vm,
} from './e2e/harness.js';

const RAM = '192M';
const MIB = 224;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The driver's lines that say a swapped-out page may be gone. */
const lossLines = (vm: Vm) => dmesgLines(vm.markers()).filter((l) => /may be lost|not returned|lost/i.test(l));
/** The driver's own lines, without the load-time chatter. */
const driverLines = (vm: Vm) => dmesgLines(vm.markers()).filter((l) => /virtio_tmem|virtio-tmem/.test(l) && !/loading out-of-tree|enabled|registered|tmem device:|taint/.test(l));

/** The guest's request bound, from its "@@E2E-KV start param_timeout_ms N" line. */
async function guestTimeoutMs(vm: Vm): Promise<number> {
  const m = await vm.waitFor(/@@E2E-KV start param_timeout_ms (\d+)/, 180000);
  return Number(m[1]);
}

/** SIGSTOP the daemon, run then() (e.g. let the guest past a gate), SIGCONT after ms. */
async function stopFor(d: DaemonHandle, ms: number, then?: () => void): Promise<void> {
  const pid = d.daemon.proc.pid!;
  process.kill(pid, 'SIGSTOP');
  try {
    then?.();
    await sleep(ms);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

t.test('daemon stopped (SIGSTOP) longer than the request bound, twice, with the default parameters: nothing lost, tmem used again', async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '1G' });
  // no modparams: the module's defaults, as a user loads it
  const vm = await bootVm(env, { daemon: d, ram: RAM, swapSize: '512M', dataSize: '64M', run: `/opt/tmem/workloads/e2e-stall.sh ${MIB}` });
  t.comment(await waitReady(vm, true));
  const timeoutMs = await guestTimeoutMs(vm);
  const stopMs = Math.max(3 * timeoutMs, 8000);

  // stall 1, while the guest fills (stores): once tmemd holds some of its pages
  const s0 = guestEntry(await waitDaemon(d, (s) => (guestEntry(s, d.name).store?.persistentPages ?? 0) > 3000, 600000, 'the guest storing persistent pages'), d.name);
  const filledBefore1 = /@@E2E-HELD/.test(vm.markers());
  await stopFor(d, stopMs);
  t.comment(`stall 1: SIGSTOP for ${stopMs} ms (timeout_ms ${timeoutMs}) at ${s0.store.persistentPages} persistent pages held, guest puts so far ${s0.store.puts}`);

  // stall 2, as the guest starts to verify (loads of pages only tmemd holds)
  const goVerify = await atGate(vm, 'verify', 600000);
  const s1 = guestEntry(await daemonStats(d), d.name);
  await stopFor(d, stopMs, goVerify);
  t.comment(`stall 2: SIGSTOP for ${stopMs} ms as the guest began to verify, ${s1.store.persistentPages} persistent pages held`);
  const r1 = await vm.waitForResult(600000);

  // afterwards: tmem in use again
  const { guest: g1 } = await statsAtGate(vm, d, 'again', 300000);
  const r2 = await vm.waitForResult(600000);
  const { guest: g2 } = await statsAtGate(vm, d, 'end', 300000);
  const powered = await vm.waitForShutdown(180000).then(() => true, () => false);

  const mk = vm.markers();
  const start = counters(mk, 'start');
  const verified = counters(mk, 'verified');
  const again = counters(mk, 'again');
  const during = diff(start, verified);
  const after = diff(verified, again);
  swapComment(t, 'swapstress (stalls)', r1);
  swapComment(t, 'swapstress after the stalls', r2);
  t.comment(`driver through the stalls: timeouts ${during.drv_timeouts}, slow_waits ${during.drv_slow_waits}, ordered_refused ${during.drv_ordered_refused}, no_queue ${during.drv_no_queue}, orphans_reaped ${during.drv_orphans_reaped}, frontswap stores ok ${during.drv_frontswap_stores_ok} refused ${during.drv_frontswap_stores_refused}, loads hit ${during.drv_frontswap_loads_hit} miss ${during.drv_frontswap_loads_miss} lost ${during.drv_frontswap_loads_lost}; kernel frontswap succ_stores ${during.frontswap_succ_stores} failed_stores ${during.frontswap_failed_stores} loads ${during.frontswap_loads}; pswpout ${during.vmstat_pswpout} pswpin ${during.vmstat_pswpin}`);
  t.comment(`driver after the stalls: frontswap stores ok ${after.drv_frontswap_stores_ok} refused ${after.drv_frontswap_stores_refused}, loads hit ${after.drv_frontswap_loads_hit} miss ${after.drv_frontswap_loads_miss}, timeouts ${after.drv_timeouts}; state: bound ${again.drv_bound}, broken ${again.drv_broken}`);
  t.comment(`tmemd: after the stalls puts ${g1.store?.puts} hits ${g1.store?.hits} persistent ${g1.store?.persistentPages}; at the end puts ${g2.store?.puts} hits ${g2.store?.hits} persistent ${g2.store?.persistentPages}`);
  for (const l of driverLines(vm)) t.comment(`dmesg: ${l}`);

  t.notOk(filledBefore1, 'stall 1 came while the guest was still filling (storing)');
  t.ok(stopMs > timeoutMs, `each stall (${stopMs} ms) was longer than the driver's request bound (timeout_ms ${timeoutMs})`);
  swapOk(t, 'swapstress through the stalls', r1, { comment: false });
  t.ok(r1.result?.verify_s * 1000 >= stopMs * 0.8, `the verification waited for the stopped host (verify ${r1.result?.verify_s} s, stall ${stopMs} ms): loads were not failed early`);
  t.equal(r1.module?.params?.writethrough, 'N', 'module loaded with its default writethrough=0');
  t.ok(during.drv_timeouts >= 1, `the driver's bound caught the stalled stores (timeouts ${during.drv_timeouts})`);
  t.ok(during.drv_slow_waits >= 1, `a frontswap load waited past the bound for the stopped host (slow_waits ${during.drv_slow_waits})`);
  t.equal(during.drv_frontswap_loads_lost, 0, 'no frontswap load reported lost');
  t.equal(during.drv_frontswap_loads_miss, 0, 'no frontswap load missed (each would have read a never-written swap slot)');
  t.equal(during.drv_frontswap_loads_hit, during.frontswap_loads, `every load the kernel asked for hit (${during.frontswap_loads})`);
  t.same(lossLines(vm), [], 'no "page may be lost" line in dmesg');
  t.equal(again.drv_bound, 1, 'the device is still bound');
  t.notOk(again.drv_broken, 'the device is not marked broken');
  swapOk(t, 'swapstress after the stalls', r2, { comment: false });
  usedAgain(t, 'after the stalls', after, g1, g2);
  t.ok(g2.connected, 'the guest is still connected to tmemd');
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING/lockup/panic on the console');
  t.ok(powered, 'the guest reached power-off');
  await finish(t, vm, d.daemon, 'tmemd stops cleanly after the stalls');
});

t.test('daemon killed (SIGKILL) while the driver is bound (writethrough=1): the guest runs on, every page verified', async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '1G' });
  const vm = await bootVm(env, { daemon: d, ram: RAM, swapSize: '512M', dataSize: '64M', modparams: 'writethrough=1', run: `/opt/tmem/workloads/e2e-stall.sh ${MIB}` });
  t.comment(await waitReady(vm, true));
  // killed with the memory filled and held, as the guest starts to verify
  const goVerify = await atGate(vm, 'verify', 600000);
  const g0 = guestEntry(await daemonStats(d), d.name);
  d.daemon.proc.kill('SIGKILL');
  await d.daemon.wait();
  goVerify();
  t.comment(`SIGKILL with ${g0.store?.persistentPages} persistent pages held (guest puts so far ${g0.store?.puts})`);
  const r1 = await vm.waitForResult(600000);
  (await atGate(vm, 'again', 300000))();
  const r2 = await vm.waitForResult(600000);
  (await atGate(vm, 'end', 300000))();
  const qemuUp = vm.exited() === null;
  const powered = await vm.waitForShutdown(300000).then(() => true, () => false);

  const mk = vm.markers();
  const during = diff(counters(mk, 'start'), counters(mk, 'verified'));
  const again = counters(mk, 'again');
  swapComment(t, 'swapstress (daemon killed)', r1);
  swapComment(t, 'swapstress after the kill', r2);
  t.comment(`driver: timeouts ${again.drv_timeouts}, no_queue ${again.drv_no_queue}, ordered_refused ${again.drv_ordered_refused}, loads lost ${again.drv_frontswap_loads_lost}, no_device ${again.drv_no_device}, bound ${again.drv_bound}, broken ${again.drv_broken}; frontswap stores ok ${again.drv_frontswap_stores_ok} refused ${again.drv_frontswap_stores_refused}, loads hit ${again.drv_frontswap_loads_hit} miss ${again.drv_frontswap_loads_miss}; kernel frontswap loads while verifying ${during.frontswap_loads}, pswpin ${during.vmstat_pswpin}`);
  for (const l of driverLines(vm)) t.comment(`dmesg: ${l}`);

  t.equal(r1.module?.params?.writethrough, 'Y', 'module loaded with writethrough=1');
  t.ok(g0.store?.persistentPages > 1000, 'tmemd held pages of the guest when it was killed');
  swapOk(t, 'swapstress after the kill', r1, { comment: false });
  swapOk(t, 'a second swapstress with the daemon gone', r2, { comment: false });
  t.ok(qemuUp, 'QEMU kept the VM running');
  t.ok(powered, 'the guest did not hang: it reached power-off');
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING/lockup/panic on the console');
  t.equal(d.daemon.proc.signalCode, 'SIGKILL', 'tmemd was killed');
  // never let the guest restart the driver (QEMU would abort): kill QEMU
  await vm.kill('SIGKILL');
  if (!t.passing()) t.comment(tail(vm.output()));
});
