// End-to-end: unbind and bind the driver through sysfs while frontswap holds
// pages, with the module's default parameters (writethrough=0: those pages
// exist only in tmemd). A 192 MiB guest fills 208 MiB of anonymous memory with
// a known pattern (swapstress) and holds it; then
// `echo virtioN > /sys/bus/virtio/drivers/virtio_tmem/unbind` and `.../bind`.
// guest-driver/README.md ("Guarantees"): before the device goes, the driver
// refuses new stores and brings every frontswap page back into the guest
// (frontswap_shrink), so after the unbind tmemd holds none of the guest's
// pages; the bind starts with RESET and pools for the active swap device.
// Freed swap slots are the one exception: 5.10's free_swap_slot() parks a
// freed slot in a per-CPU return cache (SWAP_SLOTS_CACHE_SIZE = SWAP_BATCH =
// 64 per CPU, mm/swap_slots.c), and its frontswap copy is invalidated only
// when that cache is flushed (swapcache_free_entries -> swap_range_free ->
// frontswap_invalidate_page). Such a slot holds no data anyone can load, but
// try_to_unuse() cannot unuse it and frontswap_curr_pages() still counts it,
// so up to 64 x vCPUs pages of dead slots stay in tmemd (the driver gives up
// on them after its 60 s no-progress bound). That they are dead, not lost,
// is shown by the verify after the bind: every page of the workload reads
// back right although the removed device can no longer serve any of them.
// Shown: tmemd holds at most the dead slots' pages after the unbind, the
// kernel loaded them back, every page verifies, no frontswap load missed,
// and tmem is used again after the bind (a second swapstress: stores ok and
// loads hit in the driver, puts and hits in tmemd).
import t from 'tap';
import {
  atGate, bootVm, counters, daemonStats, diff, dmesgLines, e2eEnv, finish, guestEntry, kernelTrouble, poolLines, startTmemd, statsAtGate, swapOk, usedAgain, waitReady,
} from './e2e/harness.js';

const RAM = '192M';
const MIB = 208;

t.test('unbind and bind virtio_tmem with pages in frontswap: every page brought back and verified, tmem used again', async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '1G' });
  const vm = await bootVm(env, { daemon: d, ram: RAM, swapSize: '512M', dataSize: '64M', run: `/opt/tmem/workloads/e2e-unbind.sh ${MIB}` });
  t.comment(await waitReady(vm, true));
  const dev = (await vm.waitFor(/@@E2E-DEV (\S*)/, 60000))[1];

  const { stats: s0, guest: g0 } = await statsAtGate(vm, d, 'unbind', 600000);
  const t0 = Date.now();
  // (bringing the pages back is one swap-in each: minutes under TCG)
  const goUnbound = await atGate(vm, 'unbound', 1500000);
  const unbindMs = Date.now() - t0;
  const s1 = await daemonStats(d);
  const g1 = guestEntry(s1, d.name);
  goUnbound();
  const { stats: s2, guest: g2 } = await statsAtGate(vm, d, 'rebound', 300000);
  const r1 = await vm.waitForResult(600000);
  const { guest: g3 } = await statsAtGate(vm, d, 'again', 300000);
  const r2 = await vm.waitForResult(600000);
  const { guest: g4 } = await statsAtGate(vm, d, 'end', 300000);
  const powered = await vm.waitForShutdown(180000).then(() => true, () => false);

  const mk = vm.markers();
  const cH = counters(mk, 'held');
  const cU = counters(mk, 'unbound');
  const cB = counters(mk, 'rebound');
  const cV = counters(mk, 'verified');
  const cA = counters(mk, 'again');
  const unbind = diff(cH, cU);
  const verify = diff(cB, cV);
  const after = diff(cV, cA);
  const poolsB = poolLines(mk, 'rebound');
  const dm = dmesgLines(mk).filter((l) => /virtio_tmem|virtio-tmem/.test(l) && !/loading out-of-tree|taint/.test(l));
  t.comment(`device ${dev}; unbind took ${unbindMs} ms (gate to gate)`);
  t.comment(`tmemd: before unbind persistent ${g0.store?.persistentPages}; after unbind ${g1.store?.persistentPages}; after bind ${g2.store?.persistentPages}, RESETs ${s0.host.counters.tmem.opReset} -> ${s1.host.counters.tmem.opReset} -> ${s2.host.counters.tmem.opReset}`);
  t.comment(`during the unbind: driver pages brought back ${unbind.drv_frontswap_pages_brought_back}, stores blocked ${unbind.drv_frontswap_stores_blocked}; kernel frontswap loads ${unbind.frontswap_loads}, invalidates ${unbind.frontswap_invalidates}; driver loads hit ${unbind.drv_frontswap_loads_hit} miss ${unbind.drv_frontswap_loads_miss}, stores ok ${unbind.drv_frontswap_stores_ok} refused ${unbind.drv_frontswap_stores_refused}; pswpout ${unbind.vmstat_pswpout}`);
  t.comment(`driver state: held bound ${cH.drv_bound}, unbound bound ${cU.drv_bound}, rebound bound ${cB.drv_bound}; pools after bind: ${poolsB.join(' | ')}`);
  t.comment(`while verifying: driver loads hit ${verify.drv_frontswap_loads_hit} miss ${verify.drv_frontswap_loads_miss}; kernel frontswap loads ${verify.frontswap_loads}, pswpin ${verify.vmstat_pswpin}`);
  t.comment(`after: driver stores ok ${after.drv_frontswap_stores_ok} refused ${after.drv_frontswap_stores_refused}, loads hit ${after.drv_frontswap_loads_hit} miss ${after.drv_frontswap_loads_miss}; tmemd puts ${g4.store?.puts - g3.store?.puts}, hits ${g4.store?.hits - g3.store?.hits}`);
  for (const l of dm) t.comment(`dmesg: ${l}`);

  t.match(dev, /^virtio\d+$/, 'the guest found the device bound to virtio_tmem');
  t.notMatch(mk, /@@E2E-FAIL/, 'every guest step succeeded (unbind, bind)');
  t.ok(g0.store?.persistentPages > 5000, `tmemd held pages of the guest before the unbind (${g0.store?.persistentPages})`);
  t.equal(cU.drv_bound, 0, 'unbound');
  // SWAP_SLOTS_CACHE_SIZE per vCPU (bootVm's default of 2 vCPUs): see the header
  const deadSlotBound = 64 * 2;
  t.ok((g1.store?.persistentPages ?? 0) <= deadSlotBound, `after the unbind tmemd holds at most the freed slots of the kernel's swap-slot return caches (${g1.store?.persistentPages ?? 0} <= ${deadSlotBound})`);
  t.ok(unbind.frontswap_loads >= g0.store?.persistentPages * 0.9, `the unbind brought the pages back into the guest (kernel frontswap loads ${unbind.frontswap_loads} for ${g0.store?.persistentPages} held)`);
  t.ok(unbind.drv_frontswap_pages_brought_back >= g0.store?.persistentPages * 0.9, `the driver counted them brought back (${unbind.drv_frontswap_pages_brought_back})`);
  t.equal(unbind.drv_frontswap_loads_miss ?? 0, 0, 'no load missed while the pages were brought back');
  t.equal(unbind.drv_frontswap_loads_lost ?? 0, 0, 'no load lost while the pages were brought back');
  t.equal(cB.drv_bound, 1, 'bound again');
  t.type(s0.host.counters.tmem.opReset, 'number', 'tmemd counts RESETs (stats host.counters.tmem.opReset)');
  t.equal(s2.host.counters.tmem.opReset - s1.host.counters.tmem.opReset, 1, 'the bind sent one RESET');
  t.ok(poolsB.some((l) => /^frontswap\s+\d+\s+\d+/.test(l)), 'the bind created a frontswap pool on the device for the active swap');
  swapOk(t, 'swapstress across the unbind/bind', r1);
  t.equal(r1.module?.params?.writethrough, 'N', 'module loaded with its default writethrough=0');
  t.equal(verify.drv_frontswap_loads_miss, 0, 'no frontswap load missed after the bind');
  swapOk(t, 'swapstress after the bind', r2);
  usedAgain(t, 'after the bind', after, g3, g4);
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING/lockup on the console');
  t.ok(powered, 'the guest reached power-off');
  await finish(t, vm, d.daemon);
});
