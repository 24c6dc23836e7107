// End-to-end tmem-blk: Debian 12's own cloud kernel (linux-image-6.1.0-N-cloud-amd64,
// unmodified, no module of ours: 6.1 has no frontswap) swaps on tmemd's tmem-blk
// through QEMU's stock vhost-user-blk-pci (guest RAM a shared memfd).
// The guest (vm-images/guest/workloads/e2e-blk.sh) runs mkswap and
// swapon --discard on the disk, fills 384 MiB of anonymous memory in a 256 MiB
// guest (swapstress --hold) and verifies every page twice. The VM's limit
// (maxmem - RAM = 64 MiB) is far below what it swaps, so most blocks go to the
// overflow file (--blk-overflow-dir) and are read back from it. tmemd is
// SIGSTOPped for 6 s twice: while the guest writes (the fill) and while it
// reads (the verification), and resumed. After swapoff and blkdiscard the VM
// holds no pages in tmemd (tmemctl stats). The guest's dmesg and console are
// checked for kernel trouble and I/O errors.
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  atGate, counters, diff, dmesgLines, e2eEnv, finish, guestEntry, kernelTrouble, tmemctl, TMEMD_CMD, waitReady, type DaemonHandle, type Json,
} from './e2e/harness.js';

const RAM = '256M';
const LIMIT_MIB = 64; // maxmem - RAM: what the VM may keep in tmemd's RAM
const MIB = 384;
const PASSES = 2;
const STOP_MS = 6000;
/** Kernel lines that are trouble (case matters: "BUG:" and "WARNING:" are the kernel's own prefixes). */
const TROUBLE = /BUG:|WARNING:|Oops|soft lockup|hard LOCKUP|self-detected stall|detected stalls|rcu_\w+ .*stall|hung task|blocked for more than|Call Trace|Kernel panic|cut here|I\/O error|Read-error on swap|Write-error on swap|critical medium error|blk_update_request/;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The VM's tmem-blk disk in tmemctl stats (docs/tmem-blk.md, "Counters"):
 * guests[i].blk is the disk (ramPages, overflowPages, lostPages, ...), and the
 * connection's counters are devices[k].counters.blk (reads, writes,
 * overflowWrites, overflowReads, ramReads, statusIoErr, discards, freedPages, ...).
 */
function blkOf(g: Json): Json {
  if (!g.blk) throw new Error(`tmemctl stats has no blk disk for the VM: ${JSON.stringify(g).slice(0, 1500)}`);
  const dev = (g.devices as Json[] | undefined)?.find((x) => x?.counters?.blk);
  if (!dev) throw new Error(`tmemctl stats has no blk connection counters for the VM: ${JSON.stringify(g).slice(0, 1500)}`);
  return { ...g.blk, ...dev.counters.blk };
}

t.test('tmem-blk: Debian bookworm cloud kernel swaps on vhost-user-blk-pci served by tmemd; overflow file, SIGSTOP, swapoff leave nothing lost or held', async (t) => {
  const env = await e2eEnv(t, { kernel: 'bookworm' });
  const runDir = env.cleanup.addDir(env.lib.makeRunDir('e2e-blk'));
  const overflowDir = join(runDir, 'overflow');
  mkdirSync(overflowDir);
  const control = join(runDir, 'ctl.sock');
  const blkSocket = join(runDir, 'blk.sock');
  const daemon = env.cleanup.add(await env.lib.startDaemon({
    cmd: TMEMD_CMD, socket: join(runDir, 'tmem.sock'), name: 'blk', maxmem: `${256 + LIMIT_MIB}M`, capacity: '1G', queues: 2,
    control, blkSocket, blkSize: '1G', blkOverflowDir: overflowDir, log: null,
  }));
  const d: DaemonHandle = { daemon, control, name: 'blk', runDir };
  const vm = env.cleanup.add(await env.lib.startVm({
    ...env.built, accel: env.accel, ram: RAM, cpus: 2, swapSize: 0, dataSize: 0, blkSocket, blkQueues: 2,
    run: `/opt/tmem/workloads/e2e-blk.sh ${MIB} ${PASSES}`, runDir, name: 'tmem-e2e-blk',
  }));
  const pid = daemon.proc.pid!;
  const ready = await waitReady(vm, false);
  t.comment(ready);
  const blkLine = (await vm.waitFor(/@@E2E-BLK [^\n]*|@@E2E-FAIL[^\n]*/, 120000))[0];
  const swapon = (await vm.waitFor(/@@E2E-SWAPON[^\n]*|@@E2E-FAIL[^\n]*/, 120000))[0];
  t.comment(blkLine);
  t.comment(swapon);

  // stall 1: tmemd stopped while the guest fills (swap writes wait in the guest's queues)
  await sleep(2000);
  const w0 = blkOf(guestEntry(await tmemctl(d, 'stats'), d.name));
  process.kill(pid, 'SIGSTOP');
  await sleep(STOP_MS);
  process.kill(pid, 'SIGCONT');
  const w1 = blkOf(guestEntry(await tmemctl(d, 'stats'), d.name));
  t.comment(`stall 1 (fill): tmemd stopped ${STOP_MS} ms; blk writes before ${w0.writes}, after ${w1.writes}`);

  const goHeld = await atGate(vm, 'held', 900000);
  const held = guestEntry(await tmemctl(d, 'stats'), d.name);
  const hb = blkOf(held);
  t.comment(`held: tmemd blk ${JSON.stringify(hb)}; store persistent ${held.store?.persistentPages} of limit ${held.store?.persistentLimitPages}`);
  // stall 2: tmemd stopped as the guest starts reading its pages back
  process.kill(pid, 'SIGSTOP');
  goHeld();
  await sleep(STOP_MS);
  process.kill(pid, 'SIGCONT');
  const r = await vm.waitForResult(1200000);
  const goOff = await atGate(vm, 'swapoff', 600000);
  const afterSwapoff = blkOf(guestEntry(await tmemctl(d, 'stats'), d.name));
  goOff();
  const goDisc = await atGate(vm, 'discarded', 120000);
  const afterDiscard = guestEntry(await tmemctl(d, 'stats'), d.name);
  const ad = blkOf(afterDiscard);
  goDisc();
  const powered = await vm.waitForShutdown(180000).then(() => true, () => false);
  const overflowFile = join(overflowDir, `${d.name}.overflow`);
  let overflowAllocated = -1;
  try { overflowAllocated = statSync(overflowFile).blocks * 512; } catch { /* below */ }

  const mk = vm.markers();
  const res = r.result ?? {};
  const c = diff(counters(mk, 'before'), counters(mk, 'after'));
  const dmesg = dmesgLines(mk);
  const trouble = [...dmesg.filter((l) => TROUBLE.test(l)), ...kernelTrouble(vm.output()), ...vm.output().split('\n').filter((l) => /I\/O error|Read-error on swap|Write-error on swap/.test(l))];
  t.comment(`swapstress: ${res.pages_checked} pages of ${res.pages} checked ${res.passes} times, ${res.mismatches} mismatches; fill ${res.fill_s} s, verify ${JSON.stringify(res.verify_pass_s)} s (TCG)`);
  t.comment(`vmstat: pswpout ${c.vmstat_pswpout}, pswpin ${c.vmstat_pswpin}`);
  t.comment(`after swapoff: tmemd blk ${JSON.stringify(afterSwapoff)}`);
  // Linux (6.1) frees the slots at swapoff with the device already closed for writing and sends no discard
  // for them: what swapoff leaves is whatever was last written, until blkdiscard (or the next swapon --discard)
  t.comment(`after swapoff, before blkdiscard, the disk still held ${afterSwapoff.ramPages} pages in RAM and ${afterSwapoff.overflowPages} in the overflow file (no discard at swapoff)`);
  t.comment(`after blkdiscard: tmemd blk ${JSON.stringify(ad)}; store persistent ${afterDiscard.store?.persistentPages}; overflow file ${overflowAllocated} bytes allocated`);
  for (const l of trouble) t.comment(`trouble: ${l}`);

  t.match(ready, /kernel=6\.1\.0-\d+-cloud-amd64 /, "the guest runs Debian bookworm's cloud kernel (6.1.0-N-cloud-amd64)");
  t.match(ready, /module=none/, 'no module of ours in the guest');
  t.notMatch(mk, /@@E2E-FAIL/, 'every guest step succeeded (disk found, mkswap, swapon --discard, swapoff, blkdiscard)');
  t.match(blkLine, /lbs=4096 /, 'the disk has 4 KiB logical blocks');
  t.match(blkLine, /discard_max=[1-9]/, 'the disk offers discard');
  t.match(swapon, /size_kb=\d+/, 'swap on the tmem-blk disk');
  t.equal(r.rc, 0, 'swapstress exit status 0');
  t.equal(res.ok, true, 'swapstress verified');
  t.equal(res.mismatches, 0, 'no page came back different');
  t.equal(res.pages_checked, res.pages * res.passes, `every page checked ${res.passes} times`);
  t.ok(res.memtotal_kb * 1024 < res.pages * 4096, `more anonymous memory (${res.mib} MiB) than guest RAM (${Math.round(res.memtotal_kb / 1024)} MiB)`);
  t.ok(c.vmstat_pswpout > 20000, `the guest swapped out (pswpout ${c.vmstat_pswpout})`);
  t.ok(c.vmstat_pswpin > 20000, `the guest swapped in (pswpin ${c.vmstat_pswpin})`);
  t.ok(held.store.persistentPages <= held.store.persistentLimitPages, `tmemd kept the VM within its limit in RAM (${held.store.persistentPages} <= ${held.store.persistentLimitPages} pages)`);
  t.ok(hb.overflowWrites > 16384, `most swapped blocks went to the overflow file (${hb.overflowWrites} pages written there by the gate)`);
  t.ok(hb.overflowPages > 16384, `and were there at the gate (${hb.overflowPages} pages)`);
  t.ok(afterSwapoff.overflowReads > 16384, `blocks were read back from the overflow file (${afterSwapoff.overflowReads} pages)`);
  t.ok(afterSwapoff.ramReads > 0, `and from tmemd's RAM (${afterSwapoff.ramReads} pages)`);
  t.ok(w1.writes > w0.writes, `the guest was writing around the first stall (${w0.writes} -> ${w1.writes})`);
  t.equal(afterSwapoff.statusIoErr, 0, 'tmemd answered no request with an I/O error');
  t.equal(afterSwapoff.writeErrors + afterSwapoff.readErrors, 0, 'no page write or read failed in tmemd');
  t.ok(ad.discards > 0 && ad.freedPages > 0, `discards freed pages (${ad.discards} discards, ${ad.freedPages} pages)`);
  t.equal(ad.ramPages, 0, 'after swapoff and blkdiscard the disk holds no pages in tmemd\'s RAM');
  t.equal(ad.overflowPages, 0, 'and none in the overflow file');
  t.equal(afterDiscard.store?.persistentPages ?? 0, 0, 'the VM holds no pages in tmemd');
  t.same(trouble, [], 'no I/O error, hung task, lockup, RCU stall, BUG or WARNING in the guest');
  t.ok(powered, 'the guest reached power-off');
  await finish(t, vm, daemon);
});
