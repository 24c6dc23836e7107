// End-to-end 3: pools and guests go away. With pages in both backends, the
// guest unmounts the data disk (cleancache invalidate_fs -> DESTROY_POOL) and
// turns swap off (frontswap invalidate_area -> DESTROY_POOL); the daemon's
// pool list for the guest (tmemctl stats --json) loses exactly that pool each
// time. Then the guest shuts down, and after QEMU quit nothing of it is left
// in the daemon (tmemctl guests: not connected; no pages). A second boot
// against the same daemon fills tmem again and QEMU is killed with SIGKILL:
// again nothing of the guest is left.
import t from 'tap';
import {
  atGate, bootVm, e2eEnv, guestEntry, kernelTrouble, poolLines, startTmemd, tail, tmemctl, waitDaemon, waitReady, type DaemonHandle, type Json,
} from './e2e/harness.js';

const RAM = '192M';

const poolKey = (p: Json) => `${p.id}:${p.persistent ? 'persistent' : 'ephemeral'}`;
const describe = (pools: Json[]) => pools.map((p) => `${p.id}(${p.persistent ? 'P' : 'E'}, ${p.persistent ? p.persistentPages : p.ephemeralPages} pages)`).join(' ');

async function guestPools(d: DaemonHandle): Promise<{ g: Json; host: Json }> {
  const s = await tmemctl(d, 'stats');
  return { g: guestEntry(s, d.name), host: s.host };
}

/** The daemon has forgotten the guest: not connected, no store entry, no pages anywhere. */
async function guestGone(d: DaemonHandle, what: string): Promise<Json> {
  const s = await waitDaemon(d, (s) => {
    const g = guestEntry(s, d.name);
    const st = s.host.store;
    return !g.connected && g.store === null && st.persistentPages === 0 && st.ephemeralPages === 0 && st.reclaimPendingPages === 0;
  }, 30000, `nothing left of the guest after ${what}`);
  return s;
}

t.test('umount and swapoff destroy their pools; shutdown and SIGKILL leave nothing in the daemon', async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '1G' });

  // ---- boot 1: umount, swapoff, shutdown
  const vm = await bootVm(env, { daemon: d, ram: RAM, swapSize: '512M', dataSize: '256M', run: '/opt/tmem/workloads/e2e-pools.sh' });
  await waitReady(vm, true);
  let go = await atGate(vm, 'before', 600000);
  const s0 = await guestPools(d);
  go();
  go = await atGate(vm, 'after-umount');
  const s1 = await guestPools(d);
  go();
  go = await atGate(vm, 'after-swapoff');
  const s2 = await guestPools(d);
  go();
  const r = await vm.waitForResult(300000);
  await vm.waitForShutdown(120000);
  const beforeQuit = await tmemctl(d, 'guests');
  await vm.quit();
  const gone1 = await guestGone(d, 'shutdown and QEMU quit');
  const guests1 = await tmemctl(d, 'guests');

  const p0: Json[] = s0.g.store?.pools ?? [];
  const p1: Json[] = s1.g.store?.pools ?? [];
  const p2: Json[] = s2.g.store?.pools ?? [];
  const k1 = new Set(p1.map(poolKey));
  const k2 = new Set(p2.map(poolKey));
  const removed1 = p0.filter((p) => !k1.has(poolKey(p)));
  const removed2 = p1.filter((p) => !k2.has(poolKey(p)));
  t.comment(`driver pools before: ${poolLines(vm.markers(), 'before').join(' | ')}`);
  t.comment(`tmemd pools before:        ${describe(p0)}; guest persistent ${s0.g.store?.persistentPages}, ephemeral ${s0.g.store?.ephemeralPages}; destroy_pool ops ${s0.host.counters.tmem.opDestroyPool}`);
  t.comment(`tmemd pools after umount:  ${describe(p1)}; removed ${describe(removed1)}; destroy_pool ops ${s1.host.counters.tmem.opDestroyPool}`);
  t.comment(`tmemd pools after swapoff: ${describe(p2)}; removed ${describe(removed2)}; guest persistent ${s2.g.store?.persistentPages}; destroy_pool ops ${s2.host.counters.tmem.opDestroyPool}`);
  t.comment(`after shutdown + QEMU quit: connected ${guestEntry({ guests: guests1 }, d.name).connected}, host pages persistent ${gone1.host.store.persistentPages}, ephemeral ${gone1.host.store.ephemeralPages}, pending ${gone1.host.store.reclaimPendingPages}`);

  const ccPools = (tag: string) => poolLines(vm.markers(), tag).filter((l) => /^cleancache/.test(l) && !/ - /.test(l)).length;
  t.comment(`driver cleancache pools: ${ccPools('pre-remount')} before the data disk's ro/rw remount, ${ccPools('post-remount')} after`);
  t.equal(ccPools('post-remount'), ccPools('pre-remount') + 1, 'an ext4 rw remount (init_fs of the same superblock again) got a new cleancache pool, without trouble');
  t.equal(r.rc, 0, 'the guest script ran');
  t.notMatch(vm.markers(), /@@E2E-FAIL/, 'every guest step succeeded (remount, filereader with checksums, tmpfs, swapstress, umount, swapoff)');
  t.ok(p0.length >= 2, `the guest had pools (${p0.length})`);
  t.ok(p0.some((p) => p.persistent && p.persistentPages > 1000), 'a persistent pool held pages before swapoff');
  t.ok(p0.some((p) => !p.persistent && p.ephemeralPages > 0), 'an ephemeral pool held pages before umount');
  t.equal(p1.length, p0.length - 1, 'umount: one pool fewer in the daemon');
  t.ok(removed1.length === 1 && !removed1[0].persistent, `umount destroyed an ephemeral pool (${describe(removed1)})`);
  t.ok(removed1[0]?.ephemeralPages > 0, 'the destroyed cleancache pool held pages');
  t.equal(s1.host.counters.tmem.opDestroyPool - s0.host.counters.tmem.opDestroyPool, 1, 'one DESTROY_POOL for the umount');
  t.equal(p2.length, p1.length - 1, 'swapoff: one pool fewer in the daemon');
  t.ok(removed2.length === 1 && removed2[0].persistent, `swapoff destroyed the persistent pool (${describe(removed2)})`);
  t.equal(s2.host.counters.tmem.opDestroyPool - s1.host.counters.tmem.opDestroyPool, 1, 'one DESTROY_POOL for the swapoff');
  t.equal(s2.g.store?.persistentPages, 0, 'no persistent pages left after swapoff');
  t.equal(poolLines(vm.markers(), 'after-swapoff').filter((l) => /frontswap/.test(l) && !/ - /.test(l)).length, 0, 'the driver holds no frontswap pool on the device after swapoff');
  t.ok(guestEntry({ guests: beforeQuit }, d.name).connected, 'the guest was still connected while QEMU was up');
  const ge1 = guestEntry({ guests: guests1 }, d.name);
  t.equal(ge1.connected, false, 'tmemctl guests: not connected after shutdown');
  t.equal(ge1.guestId, null, 'tmemctl guests: no guest id after shutdown');
  t.equal(guestEntry(gone1, d.name).store, null, 'no store entry for the VM after shutdown');
  t.equal(gone1.host.store.persistentPages + gone1.host.store.ephemeralPages, 0, 'daemon pages back to 0 after shutdown');
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING/lockup on the console');
  if (t.passing() === false) t.comment(tail(vm.output()));

  // ---- boot 2: fill tmem, then SIGKILL QEMU
  const vm2 = await bootVm(env, { daemon: d, ram: RAM, swapSize: '512M', dataSize: '256M', run: '/opt/tmem/workloads/e2e-hold.sh' });
  await waitReady(vm2, true);
  await atGate(vm2, 'hold', 600000); // never answered
  const h = await guestPools(d);
  t.comment(`second boot, holding: tmemd pools ${describe(h.g.store?.pools ?? [])}; guest persistent ${h.g.store?.persistentPages}, ephemeral ${h.g.store?.ephemeralPages}`);
  t.ok(h.g.connected && h.g.store, 'second boot connected to the same daemon');
  t.ok(h.g.store?.persistentPages > 1000 && h.g.store?.ephemeralPages > 0, 'the second guest has pages of both kinds in the daemon');
  const ex = await vm2.kill('SIGKILL');
  t.equal(ex.signal, 'SIGKILL', 'QEMU killed with SIGKILL');
  const gone2 = await guestGone(d, 'SIGKILL of QEMU');
  const guests2 = await tmemctl(d, 'guests');
  const ge2 = guestEntry({ guests: guests2 }, d.name);
  t.comment(`after SIGKILL: connected ${ge2.connected}, host pages persistent ${gone2.host.store.persistentPages}, ephemeral ${gone2.host.store.ephemeralPages}, objects ${gone2.host.store.objects}`);
  t.equal(ge2.connected, false, 'tmemctl guests: not connected after SIGKILL');
  t.equal(guestEntry(gone2, d.name).store, null, 'no store entry for the VM after SIGKILL');
  t.equal(gone2.host.store.persistentPages + gone2.host.store.ephemeralPages, 0, 'daemon pages back to 0 after SIGKILL');
  t.equal(gone2.host.store.objects, 0, 'no objects left in the daemon');
  t.equal(d.daemon.proc.exitCode, null, 'the daemon is still running');
  const stop = await d.daemon.stop();
  t.equal(stop.code, 0, 'the daemon stops cleanly (SIGTERM, exit 0)');
  t.notMatch(d.daemon.output(), /uncaught|TypeError|RangeError|assert/i, 'no exception in the daemon log');
  if (t.passing() === false) t.comment(tail(d.daemon.output()));
});
