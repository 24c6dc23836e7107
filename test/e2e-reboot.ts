// End-to-end: a guest reboot. With pages in both backends the guest reboots
// (busybox reboot -f: no umount, no swapoff) in the same QEMU, so its
// vhost-user connection stays and QEMU only stops and restarts the rings
// (DESIGN.md), which must not touch the store (ABI.md: a pause looks the
// same). The second boot's driver sends INFO then RESET at probe (ABI.md,
// "Guest lifetime"), so nothing of the first boot counts against the guest
// any more: its pools and pages are gone, and the new boot's pools are the
// only ones the daemon holds for it.
import t from 'tap';
import {
  atGate, bootVm, e2eEnv, finish, guestEntry, kernelTrouble, poolLines, startTmemd, tmemctl, waitReady, type Json,
} from './e2e/harness.js';

const describe = (pools: Json[]) => pools.map((p) => `${p.id}(${p.persistent ? 'P' : 'E'}, ${p.persistent ? p.persistentPages : p.ephemeralPages} pages)`).join(' ');
const livePools = (lines: string[]) => lines.filter((l) => !/ - /.test(l));

t.test('a guest reboot on the same connection: RESET at probe drops every pool of the first boot', async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '1G' });
  const vm = await bootVm(env, { daemon: d, ram: '192M', swapSize: '512M', dataSize: '256M', run: '/opt/tmem/workloads/e2e-reboot.sh', allowReboot: true });
  await waitReady(vm, true);
  const go1 = await atGate(vm, 'first', 600000);
  const s1 = await tmemctl(d, 'stats');
  const g1 = guestEntry(s1, d.name);
  go1();
  await vm.waitFor(/@@E2E-REBOOT/, 60000);
  const go2 = await atGate(vm, 'second', 300000);
  const s2 = await tmemctl(d, 'stats');
  const g2 = guestEntry(s2, d.name);
  go2();
  const r = await vm.waitForResult(300000);
  await vm.waitForShutdown(120000);

  const p1: Json[] = g1.store?.pools ?? [];
  const p2: Json[] = g2.store?.pools ?? [];
  const drv2 = livePools(poolLines(vm.markers(), 'second'));
  t.comment(`first boot: tmemd pools ${describe(p1)}; persistent ${g1.store?.persistentPages}, ephemeral ${g1.store?.ephemeralPages}; RESETs so far ${s1.host.counters.tmem.opReset}`);
  t.comment(`after the reboot: tmemd pools ${describe(p2)}; persistent ${g2.store?.persistentPages}, ephemeral ${g2.store?.ephemeralPages}; RESETs ${s2.host.counters.tmem.opReset}; driver pools: ${drv2.join(' | ')}`);

  t.equal((vm.markers().match(/@@TMEM-READY/g) ?? []).length, 2, 'the guest booted twice in one QEMU');
  t.ok(g1.connected && g2.connected, 'connected during both boots');
  t.equal(g2.guestId, g1.guestId, 'the same guest (one vhost-user connection across the reboot)');
  t.notMatch(d.daemon.output(), /guest left/, 'the daemon never saw the guest leave');
  t.ok(g1.store?.persistentPages > 1000 && g1.store?.ephemeralPages > 0, 'the first boot left pages of both kinds in the daemon');
  t.equal(s2.host.counters.tmem.opReset - s1.host.counters.tmem.opReset, 1, 'the second boot sent one RESET');
  t.equal(g2.store?.persistentPages, 0, 'no persistent page of the first boot is left (the idle second boot swapped nothing)');
  t.ok(g2.store?.ephemeralPages < g1.store?.ephemeralPages, `ephemeral pages of the first boot are gone (${g1.store?.ephemeralPages} -> ${g2.store?.ephemeralPages})`);
  t.equal(p2.length, drv2.length, `the daemon holds exactly the second boot's pools (${p2.length} = the driver's ${drv2.length})`);
  t.equal(r.rc, 0, 'the second boot ran its script');
  t.notMatch(vm.markers(), /@@E2E-FAIL/, 'every guest step succeeded');
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING/lockup in either boot');
  await finish(t, vm, d.daemon);
});
