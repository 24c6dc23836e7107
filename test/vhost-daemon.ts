// The built daemon (dist/host/tmemd.js) against a TypeScript client that
// plays QEMU 11.1's vhost-user-test-device-pci (the sequence of DESIGN.md):
// native sockets with SCM_RIGHTS, memfd guest RAM, eventfds. Checks replies
// (flags 0x5, features), that tmemctl shows the guest while it is connected
// and not after, that a second connection is refused while the first lives,
// an inherited listening fd, and that SIGTERM removes the sockets.
// The data path is the load generator's test; this one is the control path.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as native from '../native/index.js';
import { requestDaemon } from '../host/control/client.js';
import {
  bit,
  encodeMemTable,
  encodeMsg,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_NEED_REPLY_MASK,
  VhostUserProtocolFeature,
  VhostUserRequest as R,
} from '../host/vhost-user/messages.js';
import { ACK, Daemon, TMEMD, until, V1, VhostSocket as VhostClient } from './vhost/harness.js';

const TMEMCTL = join(dirname(TMEMD), 'tmemctl.js');

function tmemctl(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [TMEMCTL, ...args], { encoding: 'utf8', timeout: 20000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface GuestJson {
  name: string;
  connected: boolean;
  ramBytes: string;
  maxmemBytes: string;
  frozen: boolean;
  shareGroup: string | null;
}

/** `guests` over the control socket, in-process (tmemctl itself is spawned where its output matters). */
async function guests(ctl: string): Promise<GuestJson[]> {
  const r = await requestDaemon(ctl, { cmd: 'guests' }, 10000);
  if (!r.ok) throw new Error(`guests failed: ${r.error}`);
  return r.result as GuestJson[];
}

const RAM = 4n << 20n; // 4 MiB of memfd guest RAM in two regions
const UVA = 0x7f1200000000n; // where "QEMU" has the RAM mapped (never dereferenced by the client)

/** QEMU's realize + driver start for nq queues; returns the fds the client must close later. */
function handshake(t: Pick<typeof import('tap').default, 'equal' | 'ok' | 'notOk'>, c: VhostClient, nq: number, realize = true): { fds: number[]; features: bigint } {
  const fds: number[] = [];
  const ev = () => {
    const fd = native.eventfd(0);
    fds.push(fd);
    return fd;
  };
  if (!realize) {
    // a guest reboot: the driver start sequence again on the same connection
    c.send(R.GET_FEATURES);
    return driverStart(t, c, nq, c.reply(R.GET_FEATURES).payload.readBigUInt64LE(0), fds, ev);
  }
  // realize
  c.send(R.GET_FEATURES);
  const gf = c.reply(R.GET_FEATURES);
  t.equal(gf.flags, 0x5, 'GET_FEATURES reply flags 0x5');
  const features = gf.payload.readBigUInt64LE(0);
  t.ok(features & bit(32), 'VIRTIO_F_VERSION_1 offered');
  t.ok(features & bit(VHOST_USER_F_PROTOCOL_FEATURES), 'VHOST_USER_F_PROTOCOL_FEATURES offered');
  t.ok(features & bit(29), 'EVENT_IDX offered');
  t.ok(features & bit(28), 'INDIRECT_DESC offered');
  t.ok(features & bit(0), 'TMEM_F_SHARED offered');
  t.notOk(features & bit(34), 'RING_PACKED not offered');
  c.send(R.GET_PROTOCOL_FEATURES);
  const gp = c.reply(R.GET_PROTOCOL_FEATURES);
  t.equal(gp.flags, 0x5, 'GET_PROTOCOL_FEATURES reply flags 0x5');
  const pf = gp.payload.readBigUInt64LE(0);
  t.ok(pf & bit(VhostUserProtocolFeature.REPLY_ACK), 'REPLY_ACK offered');
  t.ok(pf & bit(VhostUserProtocolFeature.MQ), 'MQ offered');
  c.send(R.SET_PROTOCOL_FEATURES, encodeU64(pf & (bit(VhostUserProtocolFeature.REPLY_ACK) | bit(VhostUserProtocolFeature.MQ))));
  c.send(R.GET_QUEUE_NUM);
  const gq = c.reply(R.GET_QUEUE_NUM);
  t.equal(gq.flags, 0x5);
  t.ok(gq.payload.readBigUInt64LE(0) >= BigInt(nq), `at least ${nq} queues`);
  c.send(R.SET_OWNER, undefined, [], ACK);
  const so = c.reply(R.SET_OWNER);
  t.equal(so.flags, 0x5, 'REPLY_ACK flags 0x5');
  t.equal(so.payload.readBigUInt64LE(0), 0n, 'SET_OWNER acked with 0');
  c.send(R.GET_FEATURES);
  c.reply(R.GET_FEATURES);
  for (let q = 0; q < nq; q++) {
    c.send(R.SET_VRING_CALL, encodeVringFile(q, false), [ev()]);
    c.send(R.SET_VRING_ERR, encodeVringFile(q, false), [ev()]);
  }
  return driverStart(t, c, nq, features, fds, ev);
}

/** DRIVER_OK: SET_FEATURES, SET_MEM_TABLE, per queue NUM, BASE, ADDR, KICK, CALL, CALL without fd; ENABLE 1 per queue; the final CALL fds. */
function driverStart(t: Pick<typeof import('tap').default, 'equal' | 'ok' | 'notOk'>, c: VhostClient, nq: number, features: bigint, fds: number[], ev: () => number): { fds: number[]; features: bigint } {
  const acked = bit(32) | bit(29) | bit(28) | bit(0) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
  c.send(R.SET_FEATURES, encodeU64(acked & features));
  const half = RAM / 2n;
  const m0 = native.memfdCreate('tmem-test-ram0', half);
  const m1 = native.memfdCreate('tmem-test-ram1', half);
  fds.push(m0, m1);
  c.send(
    R.SET_MEM_TABLE,
    encodeMemTable([
      { guestPhysAddr: 0n, size: half, userspaceAddr: UVA, mmapOffset: 0n },
      { guestPhysAddr: 1n << 32n, size: half, userspaceAddr: UVA + half, mmapOffset: 0n },
    ]),
    [m0, m1],
    ACK,
  );
  const mt = c.reply(R.SET_MEM_TABLE);
  t.equal(mt.flags, 0x5);
  t.equal(mt.payload.readBigUInt64LE(0), 0n, 'SET_MEM_TABLE acked with 0');
  for (let q = 0; q < nq; q++) {
    const base = UVA + BigInt(q) * 0x10000n;
    c.send(R.SET_VRING_NUM, encodeVringState({ index: q, num: 256 }));
    c.send(R.SET_VRING_BASE, encodeVringState({ index: q, num: 0 }));
    c.send(R.SET_VRING_ADDR, encodeVringAddr({ index: q, flags: 0, descUser: base, availUser: base + 0x1000n, usedUser: base + 0x2000n, logGuest: 0n }));
    c.send(R.SET_VRING_KICK, encodeVringFile(q, false), [ev()]);
    c.send(R.SET_VRING_CALL, encodeVringFile(q, false), [ev()]);
    c.send(R.SET_VRING_CALL, encodeVringFile(q, true));
  }
  for (let q = 0; q < nq; q++) {
    c.send(R.SET_VRING_ENABLE, encodeVringState({ index: q, num: 1 }), [], ACK);
    const r = c.reply(R.SET_VRING_ENABLE);
    t.equal(r.payload.readBigUInt64LE(0), 0n, `queue ${q} enabled`);
  }
  for (let q = 0; q < nq; q++) c.send(R.SET_VRING_CALL, encodeVringFile(q, false), [ev()]);
  // a round trip, so that everything above has been handled
  c.send(R.GET_FEATURES);
  c.reply(R.GET_FEATURES);
  return { fds, features };
}

/** QEMU's stop: SET_VRING_ENABLE 0 and GET_VRING_BASE per queue. */
function stopRings(t: Pick<typeof import('tap').default, 'equal'>, c: VhostClient, nq: number): void {
  for (let q = 0; q < nq; q++) {
    c.send(R.SET_VRING_ENABLE, encodeVringState({ index: q, num: 0 }));
    c.send(R.GET_VRING_BASE, encodeVringState({ index: q, num: 0 }));
    const r = c.reply(R.GET_VRING_BASE);
    t.equal(r.flags, 0x5);
    t.equal(r.payload.readUInt32LE(0), q, 'vring state index');
    t.equal(r.payload.readUInt32LE(4), 0, 'nothing was processed: next avail 0');
  }
}

function run(): void {
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  t.test('--help, --print-capabilities, bad flags (exit 2, one line)', (t) => {
    const h = spawnSync(process.execPath, [TMEMD, '--help'], { encoding: 'utf8' });
    t.equal(h.status, 0);
    t.match(h.stdout, /Usage: tmemd/);
    t.match(h.stdout, /--vm name=NAME,socket=PATH,maxmem=SIZE/);
    t.match(h.stdout, /--queues-mode/);
    const c = spawnSync(process.execPath, [TMEMD, '--print-capabilities', '--ignored-flag'], { encoding: 'utf8' });
    t.equal(c.status, 0);
    const caps = JSON.parse(c.stdout) as { type: string; features: unknown[] };
    t.equal(typeof caps.type, 'string');
    t.ok(Array.isArray(caps.features), 'features is a list');
    for (const [args, re] of [
      [['--frob'], /unknown option --frob/],
      [['--vm', 'name=a,socket=/tmp/x.sock'], /maxmem= is missing/],
      [['--vm', 'name=a,socket=/tmp/x.sock,maxmem=1G', '--capacity', 'huge'], /--capacity: 'huge' is not a size/],
      [[], /no VM configured/],
    ] as [string[], RegExp][]) {
      const r = spawnSync(process.execPath, [TMEMD, ...args], { encoding: 'utf8' });
      t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
      t.match(r.stderr, re);
      t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    t.end();
  });

  t.test('tmemctl usage errors and an absent daemon', (t) => {
    const u = tmemctl(['frobnicate']);
    t.equal(u.status, 2);
    t.match(u.stderr, /unknown command 'frobnicate'/);
    t.equal(tmemctl(['freeze']).status, 2, 'freeze needs a name');
    t.equal(tmemctl(['--help']).status, 0);
    const a = tmemctl(['--control', join(dir, 'nobody.sock'), 'guests']);
    t.equal(a.status, 1);
    t.match(a.stderr, /cannot reach tmemd on .*nobody.sock: no such socket/);
    t.end();
  });

  t.test('startup failures: a clear message and exit 1', async (t) => {
    const notSock = join(dir, 'regular-file');
    writeFileSync(notSock, 'x');
    const d = new Daemon(['--vm', `name=a,socket=${notSock},maxmem=1G`, '--control', 'none', '--capacity', '16M']);
    const r = await d.exited;
    t.equal(r.code, 1);
    t.match(d.stderr, /exists and is not a socket; refusing to replace it/);
    t.ok(existsSync(notSock), 'the file is left alone');
    const e = new Daemon(['--vm', 'name=a,fd=1,maxmem=1G', '--control', 'none', '--capacity', '16M']);
    const re = await e.exited;
    t.equal(re.code, 1);
    t.match(e.stderr, /fd 1 is not a listening Unix stream socket/);
    t.end();
  });

  t.test("QEMU's sequence against the daemon; tmemctl sees the guest come and go; one connection at a time", async (t) => {
    const sock = join(dir, 'vm1.sock');
    const ctl = join(dir, 'ctl.sock');
    // a stale socket file from a previous run is replaced
    const stale = native.listenUnix(sock);
    native.close(stale);
    t.ok(statSync(sock).isSocket(), 'stale socket present');
    const d = new Daemon(['--vm', `name=vm1,socket=${sock},maxmem=64M,share-group=g1`, '--control', ctl, '--queues', '2', '--capacity', '32M', '--queues-mode', 'notify']);
    t.teardown(() => d.stop());
    await d.waitFor(/ready:/);
    t.match(d.stderr, new RegExp(`vm vm1: listening on ${sock.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(maxmem 64 MiB, share group g1\\)`), 'prints where it listens');

    let g = await guests(ctl);
    t.equal(g.length, 1);
    t.equal(g[0]!.connected, false, 'no guest before the connection');

    const c = new VhostClient(sock);
    const { fds } = handshake(t, c, 2);
    await d.waitFor(/vm vm1: guest connected/);
    await d.waitFor(/vm vm1: guest memory: 2 region\(s\), RAM 4 MiB/);
    g = await guests(ctl);
    t.equal(g[0]!.connected, true, 'tmemctl guests shows the guest');
    t.equal(g[0]!.ramBytes, String(RAM), 'with its RAM');
    t.equal(g[0]!.maxmemBytes, String(64n << 20n), 'and maxmem');
    const human = tmemctl(['--control', ctl, 'guests']);
    t.equal(human.status, 0);
    t.match(human.stdout, /NAME\s+STATE\s+RAM\s+MAXMEM/);
    t.match(human.stdout, /vm1\s+connected\s+4 MiB\s+64 MiB\s+g1/);
    const st = tmemctl(['--control', ctl, 'stats', '--json']);
    t.equal(st.status, 0, 'tmemctl stats');
    const stats = JSON.parse(st.stdout) as { host: Record<string, unknown>; guests: { name: string; dataplane: { queues: unknown[] } | null }[] };
    t.equal(stats.host.mode, 'notify', 'data-plane mode in the host stats');
    t.equal(stats.guests[0]!.name, 'vm1');
    t.ok(stats.guests[0]!.dataplane, 'per-guest data-plane state');
    t.equal(tmemctl(['--control', ctl, 'stats']).status, 0, 'human stats');
    const top = tmemctl(['--control', ctl, 'top', '0.2', '2']);
    t.equal(top.status, 0, 'tmemctl top 0.2 2 exits 0');
    t.match(top.stdout, /^TIME\s+NAME\s+PUT\/s/, 'top prints its header');
    t.equal((top.stdout.match(/^\S+\s+vm1\s/gm) ?? []).length, 2, 'and one line per interval for the connected guest');
    const topJson = tmemctl(['--control', ctl, '--json', 'top', '0.2', '1']);
    t.match(JSON.parse(topJson.stdout), { guests: [{ name: 'vm1' }] }, 'top --json: one object per interval');
    t.equal(tmemctl(['--control', ctl, 'top', '0']).status, 2, 'top with a zero interval is a usage error');

    // operator commands
    const f = tmemctl(['--control', ctl, 'freeze', 'vm1']);
    t.equal(f.status, 0);
    t.match(f.stdout, /vm1: frozen/);
    t.equal((await guests(ctl))[0]!.frozen, true);
    t.match(tmemctl(['--control', ctl, 'thaw', 'vm1']).stdout, /vm1: thawed/);
    t.equal(tmemctl(['--control', ctl, 'flush', 'vm1']).status, 0, 'flush');
    t.equal(tmemctl(['--control', ctl, 'share-group', 'vm1', 'g2']).status, 0);
    t.equal((await guests(ctl))[0]!.shareGroup, 'g2');
    const nf = tmemctl(['--control', ctl, 'freeze', 'nosuch']);
    t.equal(nf.status, 1);
    t.match(nf.stderr, /no VM named 'nosuch'/);

    // a second connection while the first lives: accepted and closed at once
    const c2 = new VhostClient(sock);
    t.equal(c2.read(1, 5000), 'eof', 'the second connection is closed by the daemon');
    c2.close();
    await d.waitFor(/refused a second connection/);
    c.send(R.GET_QUEUE_NUM);
    t.equal(c.reply(R.GET_QUEUE_NUM).payload.readBigUInt64LE(0), 2n, 'the first connection still works');

    // a guest reboot: the rings stop, the whole start sequence comes again on the same connection
    stopRings(t, c, 2);
    const reboot = handshake(t, c, 2, false);
    fds.push(...reboot.fds);
    t.equal((await guests(ctl))[0]!.ramBytes, String(RAM), 'same guest, same RAM after the restart');

    // QEMU stops the rings, then goes away
    stopRings(t, c, 2);
    c.close();
    for (const fd of fds) native.close(fd);
    await d.waitFor(/vm vm1: guest left \(RAM 4 MiB, maxmem 64 MiB/);
    t.ok(await until(async () => !(await guests(ctl))[0]!.connected), 'gone from the guests after the disconnect');
    t.match(tmemctl(['--control', ctl, 'guests']).stdout, /vm1\s+waiting\s+-\s+64 MiB/, 'tmemctl guests: waiting, no RAM');

    // a reconnect is a new guest
    const c3 = new VhostClient(sock);
    const h3 = handshake(t, c3, 1);
    t.ok(await until(async () => (await guests(ctl))[0]!.connected), 'a new connection is a new guest');
    c3.close();
    for (const fd of h3.fds) native.close(fd);
    t.ok(await until(async () => !(await guests(ctl))[0]!.connected));

    // a malformed message closes that connection only; the daemon keeps serving
    const bad = new VhostClient(sock);
    bad.send(R.SET_VRING_NUM, Buffer.alloc(3));
    t.equal(bad.read(1), 'eof', 'malformed message: connection closed');
    bad.close();
    await d.waitFor(/malformed SET_VRING_NUM \(8\): payload of 3 bytes, expected 8/);
    const again = new VhostClient(sock);
    again.send(R.GET_FEATURES);
    t.equal(again.reply(R.GET_FEATURES).flags, 0x5, 'the next connection is served');
    again.close();

    // a second daemon never takes over a live socket
    const d2 = new Daemon(['--vm', `name=vm1,socket=${sock},maxmem=64M`, '--control', 'none', '--capacity', '16M']);
    t.equal((await d2.exited).code, 1, 'same VM socket: exit 1');
    t.match(d2.stderr, /is in use: another process listens on it/);
    const d3 = new Daemon(['--vm', `name=vm9,socket=${join(dir, 'vm9.sock')},maxmem=64M`, '--control', ctl, '--capacity', '16M']);
    t.equal((await d3.exited).code, 1, 'same control socket: exit 1');
    t.match(d3.stderr, /control socket .* is in use/);
    t.ok(existsSync(sock) && existsSync(ctl), 'the first daemon keeps its sockets');
    t.equal((await guests(ctl)).length, 1, 'and still answers');

    const r = await d.stop();
    t.equal(r.code, 0, 'SIGTERM: exit 0');
    t.notOk(existsSync(sock), 'SIGTERM removed the VM socket');
    t.notOk(existsSync(ctl), 'and the control socket');
    t.match(d.stderr, /SIGTERM: stopping/);
    t.notMatch(d.stderr, /BUG:/, 'no uncaught exception');
    t.end();
  });

  t.test('wire edge cases over a real socket; every fd the daemon received is closed when the guest leaves', async (t) => {
    const sock = join(dir, 'edge.sock');
    const d = new Daemon(['--vm', `name=edge,socket=${sock},maxmem=1G`, '--control', 'none', '--capacity', '16M', '--queues', '1', '--queues-mode', 'notify']);
    t.teardown(() => d.stop());
    await d.waitFor(/ready:/);
    const pid = d.proc.pid!;
    const fdCount = () => readdirSync(`/proc/${pid}/fd`).length;
    await new Promise((r) => setTimeout(r, 200));
    const baseline = fdCount();

    // a message in two pieces, 100 ms apart, its fd with the first piece
    const c = new VhostClient(sock);
    const m = encodeMsg(R.SET_VRING_CALL, V1 | VHOST_USER_NEED_REPLY_MASK, encodeVringFile(0, false));
    const ev = native.eventfd(0);
    native.sendMsg(c.fd, m.subarray(0, 5), [ev]);
    native.close(ev);
    await new Promise((r) => setTimeout(r, 100));
    native.sendMsg(c.fd, m.subarray(5));
    const ack = c.reply(R.SET_VRING_CALL);
    t.equal(ack.payload.readBigUInt64LE(0), 0n, 'a message in pieces is acked');
    // fds on a message that takes none: closed by the daemon, the connection lives
    const stray = [native.eventfd(0), native.eventfd(0)];
    c.send(R.GET_FEATURES, undefined, stray);
    for (const fd of stray) native.close(fd);
    t.equal(c.reply(R.GET_FEATURES).flags, 0x5, 'served despite the stray fds');
    await d.waitFor(/GET_FEATURES \(1\) carried 2 fd\(s\) it does not take; closed them/);
    c.close();
    await d.waitFor(/vm edge: guest left/);
    t.ok(await until(async () => fdCount() === baseline, 5000), `daemon fds back to ${baseline} after the guest left (now ${fdCount()})`);

    // too many fds with one message: the connection is closed, the fds too
    const c2 = new VhostClient(sock);
    const many = Array.from({ length: 12 }, () => native.eventfd(0));
    c2.send(R.SET_MEM_TABLE, encodeMemTable([{ guestPhysAddr: 0n, size: 4096n, userspaceAddr: UVA, mmapOffset: 0n }]), many);
    for (const fd of many) native.close(fd);
    t.equal(c2.read(1), 'eof', 'too many fds: connection closed');
    c2.close();
    await d.waitFor(/guest left[\s\S]*guest left/);
    t.ok(await until(async () => fdCount() === baseline, 5000), `and every fd closed (${fdCount()} vs ${baseline})`);

    // an oversized size field: closed without reading a payload
    const c3 = new VhostClient(sock);
    native.sendMsg(c3.fd, Buffer.from([R.SET_FEATURES, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]));
    t.equal(c3.read(1), 'eof', 'oversized size field: connection closed');
    c3.close();
    await d.waitFor(/payload size 2147483647 exceeds the maximum/);
    // the daemon still serves
    const c4 = new VhostClient(sock);
    const h = handshake(t, c4, 1);
    c4.close();
    for (const fd of h.fds) native.close(fd);
    await d.waitFor(/(guest left[\s\S]*){4}/);
    t.ok(await until(async () => fdCount() === baseline, 5000), `after a full handshake and disconnect: fds back to ${baseline} (now ${fdCount()})`);

    // a region larger than its memfd: mmap would accept it and the first touch
    // past the end of the file would be SIGBUS in the daemon; it is refused
    const c5 = new VhostClient(sock);
    c5.send(R.SET_OWNER, undefined, [], ACK);
    t.equal(c5.reply(R.SET_OWNER).payload.readBigUInt64LE(0), 0n, 'owner set');
    const short = native.memfdCreate('short-ram', 64n << 10n);
    c5.send(R.SET_MEM_TABLE, encodeMemTable([{ guestPhysAddr: 0n, size: 1n << 20n, userspaceAddr: UVA, mmapOffset: 0n }]), [short], ACK);
    native.close(short);
    t.equal(c5.reply(R.SET_MEM_TABLE).payload.readBigUInt64LE(0), 1n, 'SET_MEM_TABLE past the end of the memfd: failure acked');
    t.equal(c5.read(1), 'eof', 'then the connection is closed');
    c5.close();
    await d.waitFor(/past the end of the file \(65536 bytes\)/);
    // a kick fd that is a socket, not an eventfd: refused before the data plane sees it
    const c6 = new VhostClient(sock);
    c6.send(R.SET_OWNER, undefined, [], ACK);
    c6.reply(R.SET_OWNER);
    const [pa, pb] = native.socketPair();
    c6.send(R.SET_VRING_KICK, encodeVringFile(0, false), [pa], ACK);
    native.close(pa);
    native.close(pb);
    t.equal(c6.reply(R.SET_VRING_KICK).payload.readBigUInt64LE(0), 1n, 'SET_VRING_KICK with a socket: failure acked');
    t.equal(c6.read(1), 'eof', 'then the connection is closed');
    c6.close();
    await d.waitFor(/socket:\[\d+\], not an eventfd/);
    t.equal(d.proc.exitCode, null, 'the daemon is still running');
    const c7 = new VhostClient(sock);
    const h7 = handshake(t, c7, 1);
    c7.close();
    for (const fd of h7.fds) native.close(fd);
    await d.waitFor(/(guest left[\s\S]*){7}/);
    t.ok(await until(async () => fdCount() === baseline, 5000), `and serves the next guest; fds back to ${baseline} (now ${fdCount()})`);
    t.notMatch(d.stderr, /BUG:/);
    t.end();
  });

  t.test('SIGINT with a guest connected exits quickly and removes the socket', async (t) => {
    const sock = join(dir, 'vm2.sock');
    const d = new Daemon(['--socket-path', sock, '--control', 'none', '--capacity', '16M', '--queues', '1']);
    await d.waitFor(/ready:/);
    const c = new VhostClient(sock);
    const h = handshake(t, c, 1);
    await d.waitFor(/guest memory/);
    const t0 = Date.now();
    const r = await d.stop('SIGINT');
    t.equal(r.code, 0);
    t.ok(Date.now() - t0 < 5000, `stopped in ${Date.now() - t0} ms`);
    t.notOk(existsSync(sock), 'socket removed');
    t.equal(c.read(1), 'eof', 'the guest connection was closed');
    c.close();
    for (const fd of h.fds) native.close(fd);
    t.end();
  });

  t.test('an inherited listening fd (libvirt style)', async (t) => {
    const sock = join(dir, 'inherited.sock');
    const lfd = native.listenUnix(sock);
    const d = new Daemon(['--vm', 'name=lv,fd=3,maxmem=1G', '--control', 'none', '--capacity', '16M', '--queues', '1'], { stdio: ['ignore', 'pipe', 'pipe', lfd] });
    native.close(lfd);
    await d.waitFor(/vm lv: listening on fd=3/);
    await d.waitFor(/ready:/);
    const c = new VhostClient(sock);
    const h = handshake(t, c, 1);
    await d.waitFor(/vm lv: guest connected on fd=3/);
    c.close();
    for (const fd of h.fds) native.close(fd);
    await d.waitFor(/vm lv: guest left/);
    const r = await d.stop();
    t.equal(r.code, 0);
    t.ok(existsSync(sock), 'a socket the daemon did not create is not removed');
    rmSync(sock);
    t.end();
  });
}

if (!existsSync(TMEMD) || !existsSync(TMEMCTL)) {
  t.fail(`${TMEMD} is missing: run npm run build first (npm test does)`);
  t.end();
} else {
  run();
}
