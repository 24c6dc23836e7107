// End-to-end 2: cleancache. A file set larger than guest RAM on the data disk
// (ext4) is created and read (pass 1), then read again (pass 2), the page
// cache dropped before each pass and every pass's checksum verified. Twice:
// with tmemd and virtio_tmem, and a second boot without the module. The
// host-side truth is QEMU's block statistics of the data disk, read between
// the passes while the guest waits: with tmem, pass 2 hits in tmem and reads
// much less from the disk than the same pass without the driver.
import t from 'tap';
import {
  atGate, bootVm, bsDelta, e2eEnv, guestEntry, kernelTrouble, kv, mibs, startTmemd, tail, tmemctl, waitReady, type Env, type Json,
} from './e2e/harness.js';

const RAM = '192M';
const MIB = 256;

interface Run {
  pass1: Json;
  pass2: Json;
  disk1: Record<string, number>;
  disk2: Record<string, number>;
  daemonGuest: Json;
  console: string;
}

async function runOnce(env: Env, withTmem: boolean): Promise<Run> {
  const d = withTmem ? await startTmemd(env, { maxmem: '1G', capacity: '1G' }) : null;
  const vm = await bootVm(env, {
    daemon: d, ram: RAM, swapSize: '256M', dataSize: '1G', noModule: !withTmem,
    run: `/opt/tmem/workloads/e2e-cleancache.sh ${MIB}`,
  });
  await waitReady(vm, withTmem);
  let go = await atGate(vm, 'start');
  const b0 = await vm.blockstats();
  go();
  const pass1 = await vm.waitForResult(600000);
  go = await atGate(vm, 'pass1');
  const b1 = await vm.blockstats();
  go();
  const pass2 = await vm.waitForResult(600000);
  go = await atGate(vm, 'pass2');
  const b2 = await vm.blockstats();
  const daemonGuest = d ? guestEntry(await tmemctl(d, 'stats'), d.name) : null;
  go();
  await vm.waitForShutdown(120000);
  await vm.quit(); // QEMU first, then the daemon
  if (d) await d.daemon.stop();
  return { pass1, pass2, disk1: bsDelta(b0, b1, 'tmemdata'), disk2: bsDelta(b1, b2, 'tmemdata'), daemonGuest, console: vm.output() };
}

function checkPass(t: { equal(a: unknown, b: unknown, m: string): unknown }, r: Json, what: string): void {
  const res = r.result ?? {};
  const p = res.passes?.[0] ?? {};
  t.equal(r.rc, 0, `${what}: filereader exit status 0`);
  t.equal(res.ok, true, `${what}: filereader ok`);
  t.equal(p.checksum, res.expected, `${what}: checksum ${p.checksum} is the expected ${res.expected}`);
  t.equal(res.mib, MIB, `${what}: ${res.mib} MiB read`);
}

t.test('cleancache: a file set larger than RAM read twice, the second pass from tmem', async (t) => {
  const env = await e2eEnv(t);
  const w = await runOnce(env, true);
  const wo = await runOnce(env, false);

  const fs = kv(w.pass2.tmem_debugfs?.stats);
  const g = w.daemonGuest ?? {};
  const p = (r: Json) => r.result?.passes?.[0] ?? {};
  t.comment(`file set: ${MIB} MiB in 8 files on ext4 (/mnt/data), guest RAM ${RAM}`);
  t.comment(`data disk reads (QMP rd_bytes), with tmem:    pass 1 (create + read) ${mibs(w.disk1.rd_bytes!)} MiB, pass 2 ${mibs(w.disk2.rd_bytes!)} MiB (${w.disk2.rd_operations} requests)`);
  t.comment(`data disk reads (QMP rd_bytes), without tmem: pass 1 (create + read) ${mibs(wo.disk1.rd_bytes!)} MiB, pass 2 ${mibs(wo.disk2.rd_bytes!)} MiB (${wo.disk2.rd_operations} requests)`);
  t.comment(`guest pgpgin during pass 2: with ${p(w.pass2).pgpgin_kb} KiB, without ${p(wo.pass2).pgpgin_kb} KiB; pass 2 time (TCG) with ${p(w.pass2).seconds} s, without ${p(wo.pass2).seconds} s`);
  t.comment(`driver: cleancache puts ok ${fs.cleancache_puts_ok}, refused ${fs.cleancache_puts_refused}, gets hit ${fs.cleancache_gets_hit}, miss ${fs.cleancache_gets_miss}, timeouts ${fs.timeouts}`);
  t.comment(`tmemd: ephemeral pages ${g.store?.ephemeralPages} (peak ${g.store?.ephemeralPeak}), puts ${g.store?.puts}, gets ${g.store?.gets}, hits ${g.store?.hits}, evictions ${g.store?.evictions}`);

  checkPass(t, w.pass1, 'with tmem, pass 1');
  checkPass(t, w.pass2, 'with tmem, pass 2');
  checkPass(t, wo.pass1, 'without tmem, pass 1');
  checkPass(t, wo.pass2, 'without tmem, pass 2');
  t.equal(w.pass2.module?.loaded, true, 'with tmem: module loaded');
  t.equal(wo.pass2.module?.loaded, false, 'without tmem: module not loaded');
  t.ok(fs.cleancache_gets_hit > (MIB * 256) / 2, `pass 2 hit in tmem (${fs.cleancache_gets_hit} hits, file set ${MIB * 256} pages)`);
  t.ok(g.store?.hits > (MIB * 256) / 2, `tmemd counted the hits (${g.store?.hits})`);
  t.ok(wo.disk2.rd_bytes! > MIB * 2 ** 20 * 0.8, `without tmem pass 2 read the file set from disk (${mibs(wo.disk2.rd_bytes!)} MiB)`);
  t.ok(w.disk2.rd_bytes! < wo.disk2.rd_bytes! * 0.5, `with tmem pass 2 read much less from disk: ${mibs(w.disk2.rd_bytes!)} MiB < half of ${mibs(wo.disk2.rd_bytes!)} MiB`);
  t.equal(fs.timeouts, 0, 'no request timed out');
  t.equal(fs.errors_protocol, 0, 'no protocol error');
  t.same(kernelTrouble(w.console), [], 'with tmem: no kernel BUG/WARNING/lockup on the console');
  t.same(kernelTrouble(wo.console), [], 'without tmem: no kernel BUG/WARNING/lockup on the console');
  if (t.passing() === false) t.comment(tail(w.console));
});
