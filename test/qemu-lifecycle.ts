// tmemd serves a real QEMU (issue 4, "Real QEMU"): QEMU >= 10.2 with memfd
// RAM and `-device vhost-user-test-device-pci,virtio-id=39` connects to the
// built daemon; the guest's driver completes the handshake and stores pages;
// when QEMU quits, the guest is gone from the daemon with everything it held:
// its fds (memfd regions, kick/call eventfds, the socket), its mappings of
// guest RAM, and its pages in the store. A SIGKILLed QEMU must leave nothing
// behind either. The daemon's own /proc entries are the host-side truth.
import t, { type Test } from 'tap';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { atGate, bootVm, daemonStats, e2eEnv, kernelTrouble, startTmemd, tail, tmemctl, waitDaemon, waitReady, type DaemonHandle, type Env, type Json } from './e2e/harness.js';

const RAM_MIB = 256;

interface ProcView { fds: number; fdTargets: string[]; guestRamMappings: number; guestRamBytes: number }

/** What the daemon process holds now: open fds, and mappings of memfd guest RAM. */
function procView(pid: number): ProcView {
  const fdTargets: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try { fdTargets.push(`${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`); } catch { /* closed meanwhile */ }
  }
  const fds = fdTargets.length;
  // QEMU's memory-backend-memfd regions show up as "/memfd:<name> (deleted)".
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/memfd:'));
  let bytes = 0;
  for (const l of maps) {
    const [lo, hi] = l.split(' ')[0]!.split('-').map((x) => parseInt(x, 16));
    bytes += hi! - lo!;
  }
  return { fds, fdTargets, guestRamMappings: maps.length, guestRamBytes: bytes };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The daemon's resting state before any guest: after one control round trip
 * (the control server's own fds come and go) and once the fd count has held
 * still for a second, so that start-up work is not mistaken for a guest's.
 */
async function settledView(d: DaemonHandle, pid: number): Promise<ProcView> {
  await tmemctl(d, 'guests');
  let view = procView(pid);
  for (let still = 0; still < 10; ) {
    await sleep(100);
    const next = procView(pid);
    still = next.fds === view.fds ? still + 1 : 0;
    view = next;
  }
  return view;
}

const vmStatus = async (d: DaemonHandle): Promise<Json> => {
  const list = await tmemctl(d, 'guests');
  return (list as Json[]).find((v) => v.name === d.name);
};

/** Boots the guest with the driver, lets it store clean page-cache pages, and checks it is served. */
async function bootAndStore(t: Test, env: Env, d: DaemonHandle, pid: number, before: ProcView) {
  const vm = await bootVm(env, {
    daemon: d, ram: `${RAM_MIB}M`, swapSize: '256M', dataSize: '512M',
    // read a file set larger than RAM: the page cache overflows into cleancache
    run: '/opt/tmem/workloads/e2e-run.sh /opt/tmem/workloads/filereader.sh --mib 320 --passes 1',
  });
  t.comment(await waitReady(vm, true));
  const go = await atGate(vm, 'start', 120000);
  const status = await vmStatus(d);
  t.equal(status.connected, true, 'the VM shows as connected in tmemctl guests');
  t.equal(Number(status.ramBytes), RAM_MIB * 2 ** 20, `guest RAM seen by the daemon = the VM's ${RAM_MIB} MiB memfd`);
  const during = procView(pid);
  t.comment(`daemon while serving: ${during.fds} fds (${before.fds} before), ${during.guestRamMappings} guest RAM mappings, ${(during.guestRamBytes / 2 ** 20).toFixed(0)} MiB mapped`);
  t.ok(during.guestRamMappings > 0 && during.guestRamBytes >= RAM_MIB * 2 ** 20, 'guest RAM is mapped into the daemon');
  t.ok(during.fds > before.fds, 'the connection holds fds (socket, kick/call eventfds)');
  go();
  const r = await vm.waitForResult(600000);
  t.equal(r.rc, 0, 'the workload ran');
  const end = await atGate(vm, 'end', 120000);
  const stats = await daemonStats(d);
  const held = stats.host.store.ephemeralPages;
  t.comment(`daemon store while the guest lives: ${JSON.stringify(stats.host.store)}`);
  t.ok(Number(held) > 0, `the guest's clean pages are held by tmemd (${held} ephemeral pages)`);
  end();
  return vm;
}

/** Waits until the VM is gone from the daemon and checks that nothing of it is left. */
async function checkNothingLeft(t: Test, d: DaemonHandle, pid: number, before: ProcView) {
  const s = await waitDaemon(d, (x) => {
    const h = x.host.store;
    return Number(h.ephemeralPages) === 0 && Number(h.persistentPages) === 0 && Number(h.reclaimPendingPages) === 0;
  }, 30000, 'all pages freed');
  const status = await vmStatus(d);
  t.equal(status.connected, false, 'the VM shows as not connected');
  t.equal(Number(status.ramBytes), 0, 'no guest RAM accounted');
  const h = s.host.store;
  t.equal(Number(h.ephemeralPages) + Number(h.persistentPages), 0, 'no pages left in the store');
  // fds and mappings are released when the worker processes the removal: allow it a moment
  let after = procView(pid);
  for (let i = 0; i < 50 && (after.fds !== before.fds || after.guestRamMappings !== 0); i++) {
    await sleep(100);
    after = procView(pid);
  }
  t.comment(`daemon after the guest left: ${after.fds} fds (${before.fds} before), ${after.guestRamMappings} guest RAM mappings`);
  t.equal(after.guestRamMappings, 0, 'guest RAM unmapped');
  const added = after.fdTargets.filter((x) => !before.fdTargets.includes(x));
  const gone = before.fdTargets.filter((x) => !after.fdTargets.includes(x));
  t.equal(after.fds, before.fds, 'every fd of the guest closed', { added, gone });
}

t.test('real QEMU: handshake, guest served, QEMU quits, nothing of the guest left in the daemon', async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '512M' });
  const pid = d.daemon.proc.pid!;
  const before = await settledView(d, pid);
  const vm = await bootAndStore(t, env, d, pid, before);
  await vm.waitForShutdown(120000);
  await vm.quit(10000);
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING on the console');
  await checkNothingLeft(t, d, pid, before);
  if (!t.passing()) t.comment(tail(vm.output()));
});

t.test('real QEMU killed with SIGKILL: nothing of the guest left in the daemon, which keeps serving', async (t) => {
  const env = await e2eEnv(t);
  const d = await startTmemd(env, { maxmem: '1G', capacity: '512M' });
  const pid = d.daemon.proc.pid!;
  const before = await settledView(d, pid);
  const vm = await bootAndStore(t, env, d, pid, before);
  await vm.kill('SIGKILL');
  await checkNothingLeft(t, d, pid, before);
  t.equal(d.daemon.proc.exitCode, null, 'the daemon is still running');
  const again = await vmStatus(d);
  t.equal(again.connections, 1, 'one connection served in all');
});
