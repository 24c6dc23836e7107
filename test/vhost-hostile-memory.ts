// Issue 13 items 1 and 2, over real sockets against the built daemon: a
// front-end that hands over guest RAM tmemd could lose under its mapping
// (an unsealed memfd it then truncates: SIGBUS for the whole daemon; a file
// on a disk file system) is refused with a clear line naming the VM, RAM
// beyond the VM's max-ram is refused before anything is mapped, a huge
// sparse RAM within bounds is mapped without a stall and leaves nothing
// behind (store and address space: VmSize), and meanwhile another guest
// (the C load generator) is served throughout. The last test drives the
// data plane in-process: a guest removal the stalled worker could not
// confirm is retried until it does.
import t from 'tap';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../native/index.js';
import { requestDaemon } from '../host/control/client.js';
import { DataPlane } from '../host/vhost-user/client.js';
import { tmemWorkerModule } from '../host/tmem/vm.js';
import type { Logger } from '../host/log.js';
import { encodeMemTable, encodeU64, VhostUserProtocolFeature, VhostUserRequest as R } from '../host/vhost-user/messages.js';
import { buildLoadgen, explain, runLoadgen } from './loadgen/harness.js';
import { ACK, Daemon, until, VhostSocket } from './vhost/harness.js';

buildLoadgen();

const GiB = 1n << 30n;

/** VmSize of a process in bytes (/proc/PID/status). */
function vmSize(pid: number | 'self'): bigint {
  const m = /^VmSize:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmSize in /proc/${pid}/status`);
  return BigInt(m[1]!) * 1024n;
}

/** Just enough of QEMU to reach SET_MEM_TABLE. */
class Front extends VhostSocket {
  constructor(path: string) {
    super(path, 20000);
  }
  /** The u64 of a reply to req, or 'eof' if the daemon closed the connection instead. */
  u64(req: number): bigint | 'eof' {
    const r = this.next();
    if (r === 'eof') return 'eof';
    if (r.request !== req) throw new Error(`reply to ${r.request}, expected ${req}`);
    return r.payload.readBigUInt64LE(0);
  }
  /** QEMU's realize up to SET_FEATURES, with REPLY_ACK. */
  start(): void {
    this.send(R.GET_FEATURES);
    const f = this.u64(R.GET_FEATURES);
    if (f === 'eof') throw new Error('closed at GET_FEATURES');
    this.send(R.GET_PROTOCOL_FEATURES);
    const pf = this.u64(R.GET_PROTOCOL_FEATURES);
    if (pf === 'eof') throw new Error('closed at GET_PROTOCOL_FEATURES');
    this.send(R.SET_PROTOCOL_FEATURES, encodeU64(pf & (1n << BigInt(VhostUserProtocolFeature.REPLY_ACK))));
    this.send(R.SET_OWNER, undefined, [], ACK);
    if (this.u64(R.SET_OWNER) !== 0n) throw new Error('SET_OWNER refused');
    this.send(R.SET_FEATURES, encodeU64(f & ((1n << 32n) | (1n << 30n))));
  }
  /** SET_MEM_TABLE of one region of `size` bytes on `fd`, with REPLY_ACK: 0n accepted, else refused (NACK or closed). */
  memTable(fd: number, size: bigint): bigint | 'eof' {
    this.send(R.SET_MEM_TABLE, encodeMemTable([{ guestPhysAddr: 0n, size, userspaceAddr: 0x7f0000000000n, mmapOffset: 0n }]), [fd], ACK);
    return this.u64(R.SET_MEM_TABLE);
  }
}

interface Stats {
  host: { store: { ephemeralPages: number; persistentPages: number; reclaimPendingPages: number } };
  guests: { name: string; connected: boolean }[];
}

const dir = mkdtempSync(join(tmpdir(), 'tmemd-hostile-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const sock = (n: string) => join(dir, `${n}.sock`);
const ctl = join(dir, 'ctl.sock');

t.test('hostile guest RAM against the daemon, another guest served throughout', async (t) => {
  // a: defaults (sealed RAM only, max-ram = the host's RAM); u: allows unsealed files and 1T of RAM; b: the load generator
  const d = new Daemon([
    '--vm', `name=a,socket=${sock('a')},maxmem=1G`,
    '--vm', `name=u,socket=${sock('u')},maxmem=2T,max-ram=1T,allow-unsealed=on`,
    '--vm', `name=b,socket=${sock('b')},maxmem=1G`,
    '--capacity', '128M', '--queues', '2', '--control', ctl,
  ]);
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  const pid = d.proc.pid!;
  const stats = async () => {
    const r = await requestDaemon(ctl, { cmd: 'stats' }, 10000);
    if (!r.ok) throw new Error(r.error);
    return r.result as Stats;
  };
  const base = vmSize(pid);

  // the other guest: verified PUT/GET traffic for the whole test
  const other = runLoadgen('verify', sock('b'), ['--queues', '2', '--depth', '8', '--ops', '400000', '--seed', '3'], 600000);

  await t.test('an unsealed memfd is refused (NACK, connection closed, one line naming the VM); truncating it then harms nobody', async (t) => {
    const fd = native.memfdCreate('evil-ram', 4n << 20n, { seal: false });
    const f = new Front(sock('a'));
    f.start();
    const r = f.memTable(fd, 4n << 20n);
    t.not(r, 0n, `SET_MEM_TABLE refused (${String(r)})`);
    t.ok(f.closedByPeer(), 'the daemon closed the connection');
    await d.waitFor(/vm a[^\n]*SET_MEM_TABLE \(5\) failed: region 0: the guest RAM file \(on tmpfs\) is not sealed against shrinking[^\n]*memory-backend-memfd \(seal=on is its default\), or accept the risk with allow-unsealed=on for VM a/);
    ftruncateSync(fd, 0); // what killed the daemon with SIGBUS before
    native.close(fd);
    f.close();
    t.ok(d.alive, 'tmemd still runs');
  });

  await t.test('a sealed memfd cannot shrink and is accepted', async (t) => {
    const fd = native.memfdCreate('good-ram', 4n << 20n);
    t.throws(() => ftruncateSync(fd, 0), { code: 'EPERM' }, 'F_SEAL_SHRINK: truncate refused by the kernel');
    const f = new Front(sock('a'));
    f.start();
    t.equal(f.memTable(fd, 4n << 20n), 0n, 'SET_MEM_TABLE acked with 0');
    native.close(fd);
    f.close();
    t.ok(await until(async () => !(await stats()).guests.find((g) => g.name === 'a')!.connected, 20000), 'a left');
  });

  await t.test('a file on /dev/shm (tmpfs, cannot be sealed): refused by default, accepted with allow-unsealed=on', async (t) => {
    const p = `/dev/shm/tmemd-hostile-${process.pid}`;
    const fd = openSync(p, 'w+');
    t.teardown(() => unlinkSync(p));
    ftruncateSync(fd, 4 << 20);
    const f = new Front(sock('a'));
    f.start();
    t.not(f.memTable(fd, 4n << 20n), 0n, 'refused for VM a');
    t.ok(f.closedByPeer(), 'connection closed');
    f.close();
    await d.waitFor(/vm a[^\n]*region 0: the guest RAM file \(on tmpfs\) is not sealed[^\n]*\n[^]*vm a[^\n]*region 0: the guest RAM file \(on tmpfs\) is not sealed/);
    const g = new Front(sock('u'));
    g.start();
    t.equal(g.memTable(fd, 4n << 20n), 0n, 'accepted for VM u (allow-unsealed=on)');
    g.close();
    closeSync(fd);
    t.ok(d.alive);
  });

  await t.test('a file on a disk file system is refused even with allow-unsealed=on', async (t) => {
    const p = join(dir, 'ram-on-disk');
    const fd = openSync(p, 'w+');
    ftruncateSync(fd, 4 << 20);
    const f = new Front(sock('u'));
    f.start();
    t.not(f.memTable(fd, 4n << 20n), 0n, 'refused');
    t.ok(f.closedByPeer(), 'connection closed');
    f.close();
    closeSync(fd);
    await d.waitFor(/vm u[^\n]*SET_MEM_TABLE \(5\) failed: region 0: fd \d+ is a file on a file system of type 0x[0-9a-f]+, not a memfd or a file on tmpfs or hugetlbfs; give guest RAM as memory-backend-memfd \(share=on\); closing the connection/);
    t.ok(d.alive);
  });

  await t.test('256 GiB of sparse RAM beyond max-ram (the host RAM by default): refused before anything is mapped', async (t) => {
    const fd = native.memfdCreate('huge-ram', 256n * GiB);
    const f = new Front(sock('a'));
    f.start();
    const t0 = performance.now();
    t.not(f.memTable(fd, 256n * GiB), 0n, 'refused');
    t.comment(`refusal took ${(performance.now() - t0).toFixed(1)} ms`);
    t.ok(f.closedByPeer(), 'connection closed');
    f.close();
    native.close(fd);
    await d.waitFor(/vm a[^\n]*guest RAM of 274877906944 bytes \(1 region\(s\)\) is more than max-ram \(\d+ bytes\) for VM a; raise max-ram=/);
    t.ok(vmSize(pid) < base + GiB, 'nothing was mapped');
  });

  await t.test('256 GiB of sparse RAM within max-ram: mapped at once (views made on use), gone from the address space after the guest left', async (t) => {
    const fd = native.memfdCreate('huge-ram', 256n * GiB);
    const f = new Front(sock('u'));
    f.start();
    const t0 = performance.now();
    t.equal(f.memTable(fd, 256n * GiB), 0n, 'accepted');
    t.comment(`SET_MEM_TABLE of 256 GiB acked after ${(performance.now() - t0).toFixed(1)} ms`);
    t.ok(vmSize(pid) >= base + 255n * GiB, 'the 256 GiB are mapped');
    const s0 = performance.now();
    await stats();
    t.comment(`a control round trip meanwhile: ${(performance.now() - s0).toFixed(1)} ms`);
    f.close();
    native.close(fd);
    t.ok(await until(() => vmSize(pid) < base + GiB, 20000), `unmapped after the guest left (VmSize ${vmSize(pid)} against ${base} before)`);
  });

  await t.test('the load generator with 256 GiB of RAM stores pages; after it left nothing of it stays in the store or the address space', async (t) => {
    let peak = 0n;
    const sampler = setInterval(() => {
      try {
        const v = vmSize(pid);
        if (v > peak) peak = v;
      } catch {
        /* gone */
      }
    }, 20);
    const r = await runLoadgen('verify', sock('u'), ['--ram', '256G', '--queues', '2', '--depth', '8', '--ops', '40000', '--seed', '9'], 300000);
    clearInterval(sampler);
    t.equal(r.code, 0, 'verify exits 0', { output: explain(r) });
    t.ok(Number(r.json?.putOk) > 0, `pages stored: ${String(r.json?.putOk)} PUTs ok`);
    t.ok(peak >= base + 255n * GiB, 'its RAM was mapped while it ran');
    t.ok(await until(async () => !(await stats()).guests.find((g) => g.name === 'u')!.connected, 20000), 'u left');
    t.ok(await until(() => vmSize(pid) < base + GiB, 20000), 'its mapping is gone');
  });

  const ro = await other;
  t.equal(ro.code, 0, 'the other guest verified every page throughout', { output: explain(ro) });
  t.ok(Number(ro.json?.ops) >= 400000, `other guest: ${String(ro.json?.ops)} ops`);
  t.ok(d.alive, 'tmemd still runs');
  t.ok(
    await until(async () => {
      const s = (await stats()).host.store;
      return s.ephemeralPages + s.persistentPages + s.reclaimPendingPages === 0;
    }, 20000),
    'every guest left: no page of any stays in the store',
  );
  const s = await d.stop();
  t.equal(s.code, 0, 'clean exit');
});

t.test('a close the stalled worker could not confirm stays pending until it runs (in-process data plane)', async (t) => {
  const lines: string[] = [];
  const log: Logger = { error: (m) => lines.push(`error ${m}`), warn: (m) => lines.push(`warn ${m}`), info: (m) => lines.push(`info ${m}`), debug: (m) => lines.push(`debug ${m}`) } as Logger;
  process.env.TMEMD_TEST_HOOKS = 'debug';
  const dp = await DataPlane.start({ mode: 'notify', devices: [{ kind: 'tmem', module: tmemWorkerModule() }], deviceConfig: { capacityPages: 4096, maxPoolsPerGuest: 4 }, log, replyTimeoutMs: 300 });
  delete process.env.TMEMD_TEST_HOOKS;
  t.teardown(() => dp.stop());
  const base = vmSize('self');
  const g = dp.newInstanceId();
  await dp.open(g, { vm: 'h', kind: 'tmem', numQueues: 1, policy: { maxRamBytes: null, allowUnsealed: false }, params: { maxmemBytes: GiB, shareGroup: null, tmemMaxBytes: null, ramFloorBytes: 0n, frozen: false } });
  const fd = native.memfdCreate('stall-ram', 64n * GiB);
  await dp.setMemTable(g, [{ fd, guestPhysAddr: 0n, size: 64n * GiB, userspaceAddr: 0x7f0000000000n, mmapOffset: 0n }]);
  t.ok(vmSize('self') >= base + 63n * GiB, '64 GiB mapped');
  const stall = dp.debugStall(1500).then(
    () => null,
    (e: Error) => e,
  );
  t.equal(await dp.close(g), false, 'the close is queued behind the stall, not lost');
  t.match(await stall, { message: /did not answer debugStall/ }, 'the worker stalls past the reply timeout');
  t.equal(dp.pendingRemovals, 1);
  t.match(lines.join('\n'), /instance \d+: the vring worker has not confirmed its removal; it is queued/);
  t.ok(vmSize('self') >= base + 63n * GiB, 'still mapped while the worker is stalled');
  t.ok(await until(() => dp.pendingRemovals === 0, 10000), 'the removal completed once the worker got to it');
  t.ok(vmSize('self') < base + GiB, 'the mapping is gone');
  const st = await dp.stats();
  t.same((st.kinds.tmem as { store: { guests: unknown[] } }).store.guests, [], 'no guest left in the store');
  t.same(st.instances, [], 'none in the worker');
  t.match(lines.join('\n'), /vring worker confirmed every queued removal/);
});
