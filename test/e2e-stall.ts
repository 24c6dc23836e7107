// End-to-end 4: a device that stops answering. virtio_tmem with writethrough=1
// (every page frontswap takes is also written to the swap disk) and
// timeout_ms=2000, a guest verifying 256 MiB of anonymous memory through swap
// and then a file set read twice with checksums, while tmemd
//   (a) is stopped with SIGSTOP for longer than the driver's bound, then SIGCONT;
//   (b) is killed with SIGKILL while the driver is bound.
// guest-driver/README.md ("Failure model"): a request not answered within
// timeout_ms marks the device broken (dmesg says so once, stats "broken 1"),
// every later put is refused and every later get misses; it stays broken
// until unbind/bind. The guest must neither crash nor hang and no page may
// come back corrupted. After (b) the guest must not restart the driver
// (QEMU would abort, DESIGN.md): the guest powers off and QEMU is killed.
import t from 'tap';
import {
  bootVm, dmesgLines, e2eEnv, guestEntry, kernelTrouble, kv, startTmemd, tail, waitDaemon, type Env, type Json,
} from './e2e/harness.js';

const RAM = '192M';
const SWAP_MIB = 256;
const FILE_MIB = 64;
const TIMEOUT_MS = 2000;
const STOP_MS = 4 * TIMEOUT_MS;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function stalled(t: Tap, env: Env, mode: 'SIGSTOP' | 'SIGKILL'): Promise<void> {
  const d = await startTmemd(env, { maxmem: '1G', capacity: '1G' });
  const vm = await bootVm(env, {
    daemon: d, ram: RAM, swapSize: '512M', dataSize: '256M', modparams: `writethrough=1 timeout_ms=${TIMEOUT_MS}`,
    run: `/opt/tmem/workloads/e2e-verify.sh ${SWAP_MIB} ${FILE_MIB}`,
  });
  // while the guest swaps: wait until tmemd holds pages of it, then stall it
  const s0 = await waitDaemon(d, (s) => (guestEntry(s, d.name).store?.persistentPages ?? 0) > 3000, 600000, 'the guest storing persistent pages');
  const g0 = guestEntry(s0, d.name);
  const pid = d.daemon.proc.pid!;
  const t0 = Date.now();
  if (mode === 'SIGSTOP') {
    process.kill(pid, 'SIGSTOP');
    await sleep(STOP_MS);
    process.kill(pid, 'SIGCONT');
  } else {
    process.kill(pid, 'SIGKILL');
    await d.daemon.wait();
  }
  t.comment(`${mode} at ${g0.store.persistentPages} persistent pages held (guest puts so far ${g0.store.puts})${mode === 'SIGSTOP' ? `, continued after ${Date.now() - t0} ms` : ''}`);
  const swap = await vm.waitForResult(600000);
  const files = await vm.waitForResult(600000);
  const qemuUp = vm.exited() === null;
  await vm.waitFor(/@@E2E-DMESG|@@TMEM-RUN-END/, 60000).catch(() => null);
  const powered = await vm.waitFor(/@@TMEM-POWEROFF/, 120000).then(() => true, () => false);
  let after: Json = null;
  if (mode === 'SIGSTOP') after = guestEntry(await waitDaemon(d, () => true, 10000, 'stats after SIGCONT'), d.name);

  const fs = kv(files.tmem_debugfs?.stats);
  const sr = swap.result ?? {};
  const fr = files.result ?? {};
  const dm = dmesgLines(vm.markers()).filter((l) => /virtio_tmem|virtio-tmem/.test(l) && !/loading out-of-tree|enabled|registered|tmem device:/.test(l));
  t.comment(`guest swapstress: ${sr.pages_checked} page checks, ${sr.mismatches} mismatches, ok ${sr.ok}; filereader: ${fr.passes?.length} passes, checksums ${fr.passes?.map((p: Json) => p.checksum).join(', ')} (expected ${fr.expected}), ok ${fr.ok}`);
  t.comment(`driver: broken ${fs.broken}, timeouts ${fs.timeouts}, no_device ${fs.no_device}, protocol errors ${fs.errors_protocol}; frontswap stores ok ${fs.frontswap_stores_ok} refused ${fs.frontswap_stores_refused}, loads hit ${fs.frontswap_loads_hit} miss ${fs.frontswap_loads_miss}; cleancache gets hit ${fs.cleancache_gets_hit} miss ${fs.cleancache_gets_miss}`);
  for (const l of dm) t.comment(`dmesg: ${l}`);
  if (after) t.comment(`tmemd after SIGCONT: connected ${after.connected}, guest puts ${after.store?.puts}, persistent pages ${after.store?.persistentPages}, queues ${JSON.stringify(after.dataplane?.queues ?? after.dataplane)?.slice(0, 200)}`);
  t.comment(`QEMU running when the workload ended: ${qemuUp}; guest reached power-off: ${powered}; QEMU state now: ${JSON.stringify(vm.exited())}`);

  t.equal(swap.rc, 0, 'swapstress exit status 0');
  t.equal(sr.ok, true, 'swapstress verified');
  t.equal(sr.mismatches, 0, 'no corrupted anonymous page');
  t.equal(sr.pages_checked, sr.pages * sr.passes, 'every page checked');
  t.equal(files.rc, 0, 'filereader exit status 0');
  t.equal(fr.ok, true, 'filereader verified');
  t.ok(fr.passes?.length === 2 && fr.passes.every((p: Json) => p.checksum === fr.expected), 'every file pass has the expected checksum');
  t.equal(files.module?.params?.writethrough, 'Y', 'module loaded with writethrough=1');
  t.ok(fs.timeouts >= 1, `the driver's bound caught the stall (timeouts ${fs.timeouts})`);
  t.equal(fs.broken, 1, 'the device is marked broken (README: it stays so until unbind/bind)');
  t.ok(dm.some((l) => /timed out.*device marked broken/.test(l)), 'dmesg says the device was marked broken');
  t.ok(fs.frontswap_loads_miss + fs.frontswap_stores_refused + fs.no_device > 0, 'later operations were refused or missed without the device');
  t.same(kernelTrouble(vm.output()), [], 'no kernel BUG/WARNING/lockup/panic on the console');
  t.ok(qemuUp, 'QEMU kept the VM running');
  t.ok(powered, 'the guest did not hang: it reached power-off');
  if (mode === 'SIGSTOP') {
    t.ok(after && after.connected, 'tmemd answers again after SIGCONT, guest still connected');
    await vm.quit();
    const st = await d.daemon.stop();
    t.equal(st.code, 0, 'tmemd stops cleanly after the stall');
  } else {
    t.equal(d.daemon.proc.signalCode, 'SIGKILL', 'tmemd was killed');
    // never let the guest restart the driver: kill QEMU (the daemon is gone)
    await vm.kill('SIGKILL');
  }
  if (t.passing() === false) t.comment(tail(vm.output()));
}

type Tap = import('tap').Test;

t.test('daemon stopped (SIGSTOP) longer than the driver timeout, then SIGCONT', async (t) => {
  const env = await e2eEnv(t);
  await stalled(t, env, 'SIGSTOP');
});

t.test('daemon killed (SIGKILL) while the driver is bound', async (t) => {
  const env = await e2eEnv(t);
  await stalled(t, env, 'SIGKILL');
});
