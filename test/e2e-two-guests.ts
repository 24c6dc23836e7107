// End-to-end: two guests on one tmemd at the same time. Each VM has its own
// socket (--vm twice) and its own maxmem; both swap more anonymous memory
// than their RAM through frontswap, each with its own pattern (seed), and
// verify every page. A guest never sees the other's pages (same pool ids and
// handles on both sides: each guest's pool 0 holds swap offsets from 0 up),
// and one guest's persistent limit (maxmem - RAM) binds only that guest: the
// small one is refused beyond it, the other is not.
import t from 'tap';
import { join } from 'node:path';
import {
  atGate, bootVm, e2eEnv, finish, guestEntry, kernelTrouble, kv, startTmemd, tmemctl, waitReady, type Json,
} from './e2e/harness.js';

const RAM_MIB = 192;
const SWAP_MIB = 288;
// guest a: maxmem = RAM + 96 MiB, so at most 24576 persistent pages; guest b: 1G
const SMALL_LIMIT_PAGES = (96 << 20) / 4096;

t.test('two guests on one daemon: each gets back exactly its own pages, each within its own limit', async (t) => {
  const env = await e2eEnv(t);
  const runDir = env.lib.makeRunDir('e2e2');
  const sockB = join(runDir, 'tmem-b.sock');
  const d2 = await startTmemd(env, {
    name: 'a', maxmem: `${RAM_MIB + 96}M`, capacity: '1G', queuesMode: 'notify', runDir,
    args: ['--vm', `name=b,socket=${sockB},maxmem=1G`],
  });
  const run = (seed: number) => `/opt/tmem/workloads/e2e-run.sh /opt/tmem/workloads/swapstress.sh --mib ${SWAP_MIB} --passes 1 --seed ${seed}`;
  const vmA = await bootVm(env, { daemon: d2, ram: `${RAM_MIB}M`, swapSize: '512M', dataSize: '64M', modparams: 'writethrough=0', run: run(11), runDir: env.lib.makeRunDir('e2e-a') });
  const vmB = await bootVm(env, { daemon: d2, socket: sockB, ram: `${RAM_MIB}M`, swapSize: '512M', dataSize: '64M', modparams: 'writethrough=0', run: run(22), runDir: env.lib.makeRunDir('e2e-b') });
  await Promise.all([waitReady(vmA, true), waitReady(vmB, true)]);
  const both = await tmemctl(d2, 'guests');
  const connected = (both as Json[]).filter((g) => g.connected).map((g) => g.name).sort();
  t.same(connected, ['a', 'b'], 'both VMs are connected to the one daemon, each on its own socket');

  // the guest scripts wait at their gates: let both run at once
  const starts = await Promise.all([atGate(vmA, 'start', 120000), atGate(vmB, 'start', 120000)]);
  starts.forEach((go) => go());
  const [rA, rB] = await Promise.all([vmA.waitForResult(600000), vmB.waitForResult(600000)]);
  const ends = await Promise.all([atGate(vmA, 'end', 120000), atGate(vmB, 'end', 120000)]);
  const stats = await tmemctl(d2, 'stats');
  ends.forEach((go) => go());
  const ga = guestEntry(stats, 'a');
  const gb = guestEntry(stats, 'b');
  const fa = kv(rA.tmem_debugfs?.stats);
  const fb = kv(rB.tmem_debugfs?.stats);
  for (const [n, r, g, f] of [['a', rA, ga, fa], ['b', rB, gb, fb]] as const) {
    t.comment(`guest ${n}: ${r.result?.pages_checked} pages checked, ${r.result?.mismatches} mismatches; frontswap stores ok ${f.frontswap_stores_ok} refused ${f.frontswap_stores_refused}, loads hit ${f.frontswap_loads_hit} miss ${f.frontswap_loads_miss}; tmemd: persistent peak ${g.store?.persistentPeak} of limit ${g.store?.persistentLimitPages}, puts ${g.store?.puts}, refused for space ${g.store?.putsNoSpace}, hits ${g.store?.hits}`);
  }

  for (const [n, r, f] of [['a', rA, fa], ['b', rB, fb]] as const) {
    t.equal(r.rc, 0, `guest ${n}: swapstress exit status 0`);
    t.equal(r.result?.ok, true, `guest ${n}: swapstress verified`);
    t.equal(r.result?.mismatches, 0, `guest ${n}: no page came back different (its own seed's pattern)`);
    t.equal(r.result?.pages_checked, r.result?.pages, `guest ${n}: every page checked`);
    t.equal(f.frontswap_loads_miss, 0, `guest ${n}: every frontswap load hit`);
    t.equal(f.timeouts, 0, `guest ${n}: no request timed out`);
  }
  t.equal(ga.store?.persistentLimitPages, SMALL_LIMIT_PAGES, 'guest a: limit = maxmem - RAM');
  t.ok(ga.store?.persistentPeak <= SMALL_LIMIT_PAGES, `guest a stayed within its limit (peak ${ga.store?.persistentPeak} <= ${SMALL_LIMIT_PAGES})`);
  t.ok(ga.store?.putsNoSpace > 0 && fa.frontswap_stores_refused > 0, 'guest a was refused beyond its limit (those pages went to its swap disk)');
  t.ok(gb.store?.persistentPeak > SMALL_LIMIT_PAGES, `guest b was not held to a's limit (peak ${gb.store?.persistentPeak})`);
  t.equal(gb.store?.putsNoSpace, 0, 'guest b: no put refused');
  t.same(kernelTrouble(vmA.output()), [], 'guest a: no kernel BUG/WARNING/lockup');
  t.same(kernelTrouble(vmB.output()), [], 'guest b: no kernel BUG/WARNING/lockup');

  await Promise.all([vmA.waitForShutdown(120000), vmB.waitForShutdown(120000)]);
  await finish(t, [vmA, vmB], d2.daemon, 'tmemd stops cleanly after both guests left');
});
