#!/usr/bin/env node
// Connection churn soak (issue 13 item 6): the built tmemd, one VM, and a
// front-end that connects, does QEMU's handshake (features, owner, a sealed
// memfd memory table, one ring with kick/call eventfds, enable) and leaves,
// N times, while the daemon's RSS is sampled from /proc/PID/status. The
// daemon must plateau: whatever a connection allocates is freed when it goes.
//
//   npm run bench:churn -- [--connections N] [--kind full|bare] [--mode notify|poll]
//                          [--samples K] [--idle-seconds S] [--json] [--attach SOCKET --pid PID]
//                          [--node-args "--max-old-space-size=16 --max-semi-space-size=1"]
//
// N to choose: 1,440 = a VM restarting every minute for 24 hours (the
// 24-hour equivalent for one VM); 100,000 = a hostile front-end reconnecting
// in a loop for as long as it likes. --kind bare only connects and closes
// (the listener, the connection object, the watcher); full adds a data-plane
// guest, a mapping and eventfds each time. Prints one line per sample and,
// with --json, a JSON object last: samples, and the growth per connection
// over the second half (the first half is warm-up: V8's heap, code caches,
// malloc arenas find their size). --attach/--pid: churn a tmemd already
// running (e.g. under a wrapper that prints process.memoryUsage()).
// --node-args: V8/node flags for the daemon (a capped heap shows whether
// growth is V8 sizing its heap or memory no collector can give back).
// --idle-seconds S: one more sample after S idle seconds (V8 shrinks a heap
// that grew under load once allocation stops: its "memory reducer").
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const native = await import(join(root, 'dist/native/index.js'));
const M = await import(join(root, 'dist/host/vhost-user/messages.js'));
const R = M.VhostUserRequest;

function parse(argv) {
  const o = { connections: 1440, kind: 'full', mode: 'notify', samples: 20, json: false, attach: null, pid: null, idleSeconds: 0, nodeArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--connections') o.connections = Number(v());
    else if (a === '--kind') o.kind = v();
    else if (a === '--mode') o.mode = v();
    else if (a === '--samples') o.samples = Number(v());
    else if (a === '--json') o.json = true;
    else if (a === '--attach') o.attach = v();
    else if (a === '--pid') o.pid = Number(v());
    else if (a === '--idle-seconds') o.idleSeconds = Number(v());
    else if (a === '--node-args') o.nodeArgs = v().split(/\s+/).filter(Boolean);
    else throw new Error(`unknown option ${a} (--connections N, --kind full|bare, --mode notify|poll, --samples K, --json)`);
  }
  if (!Number.isSafeInteger(o.connections) || o.connections < 10) throw new Error('--connections must be a whole number >= 10');
  if (!Number.isSafeInteger(o.samples) || o.samples < 4) throw new Error('--samples must be >= 4');
  if (o.kind !== 'full' && o.kind !== 'bare') throw new Error('--kind is full or bare');
  if (o.mode !== 'notify' && o.mode !== 'poll') throw new Error('--mode is notify or poll');
  if ((o.attach === null) !== (o.pid === null)) throw new Error('--attach SOCKET and --pid PID go together (a running tmemd)');
  return o;
}

// A sealed memfd, as QEMU's memory-backend-memfd makes (tmemd may refuse unsealed guest RAM).
const libc = koffi.load('libc.so.6');
const memfd_create = libc.func('int memfd_create(const char *name, unsigned int flags)');
const ftruncate = libc.func('int ftruncate(int fd, int64_t length)');
const fcntl = libc.func('int fcntl(int fd, int cmd, int arg)');
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const F_ADD_SEALS = 1033;
const F_SEAL_SHRINK = 2;
const F_SEAL_GROW = 4;
const F_SEAL_SEAL = 1;
function sealedMemfd(size) {
  const fd = memfd_create('churn-ram', MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw new Error(`memfd_create failed: errno ${koffi.errno()}`);
  if (ftruncate(fd, size) < 0) throw new Error(`ftruncate failed: errno ${koffi.errno()}`);
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) throw new Error(`F_ADD_SEALS failed: errno ${koffi.errno()}`);
  return fd;
}

const V1 = 0x1;
const ACK = V1 | M.VHOST_USER_NEED_REPLY_MASK;
const RAM = 1n << 20n;
const UVA = 0x7f1200000000n;

class Client {
  constructor(path) {
    this.fd = native.connectUnix(path);
  }
  send(req, payload, fds = [], flags = V1) {
    const b = M.encodeMsg(req, flags, payload);
    let off = native.sendMsg(this.fd, b, fds);
    while (off < b.length) off += native.sendMsg(this.fd, b.subarray(off));
  }
  /** n bytes, or null if the daemon closed the connection (a refused connection). */
  read(n) {
    const out = Buffer.alloc(n);
    let have = 0;
    const fds = [];
    while (have < n) {
      if (native.pollFds(Int32Array.of(this.fd), 1, new Int16Array(1), 10000) === 0) throw new Error('no reply within 10 s');
      let r;
      try {
        r = native.recvMsg(this.fd, out.subarray(have), fds);
      } catch (e) {
        if (e.code === 'ECONNRESET' && have === 0) return null;
        throw e;
      }
      if (r === 0) {
        if (have === 0) return null;
        throw new Error('EOF in the middle of a reply');
      }
      if (r !== null) have += r;
    }
    for (const f of fds) native.close(f);
    return out;
  }
  reply(req) {
    const h = this.read(M.VHOST_USER_HDR_SIZE);
    if (h === null) return null;
    const hd = M.decodeHeader(h);
    if (hd.request !== req) throw new Error(`reply to ${hd.request}, expected ${req}`);
    return hd.size ? this.read(hd.size) : Buffer.alloc(0);
  }
  close() {
    native.close(this.fd);
  }
}

/** One connection's life; false if the daemon refused it (the previous one was not yet gone). */
function cycle(path, kind) {
  const c = new Client(path);
  const fds = [];
  try {
    c.send(R.GET_FEATURES);
    const gf = c.reply(R.GET_FEATURES);
    if (gf === null) return false;
    if (kind === 'bare') return true;
    const features = gf.readBigUInt64LE(0);
    c.send(R.GET_PROTOCOL_FEATURES);
    const pf = c.reply(R.GET_PROTOCOL_FEATURES).readBigUInt64LE(0);
    const want = (1n << BigInt(M.VhostUserProtocolFeature.REPLY_ACK)) | (1n << BigInt(M.VhostUserProtocolFeature.MQ));
    c.send(R.SET_PROTOCOL_FEATURES, M.encodeU64(pf & want));
    c.send(R.SET_OWNER, undefined, [], ACK);
    c.reply(R.SET_OWNER);
    const acked = (1n << 32n) | (1n << 29n) | (1n << 28n) | (1n << 0n) | (1n << BigInt(M.VHOST_USER_F_PROTOCOL_FEATURES));
    c.send(R.SET_FEATURES, M.encodeU64(acked & features));
    const mem = sealedMemfd(RAM);
    fds.push(mem);
    c.send(R.SET_MEM_TABLE, M.encodeMemTable([{ guestPhysAddr: 0n, size: RAM, userspaceAddr: UVA, mmapOffset: 0n }]), [mem], ACK);
    const mt = c.reply(R.SET_MEM_TABLE);
    if (mt.readBigUInt64LE(0) !== 0n) throw new Error('SET_MEM_TABLE failed (see the daemon log)');
    c.send(R.SET_VRING_NUM, M.encodeVringState({ index: 0, num: 256 }));
    c.send(R.SET_VRING_BASE, M.encodeVringState({ index: 0, num: 0 }));
    c.send(R.SET_VRING_ADDR, M.encodeVringAddr({ index: 0, flags: 0, descUser: UVA, availUser: UVA + 0x1000n, usedUser: UVA + 0x2000n, logGuest: 0n }));
    const kick = native.eventfd(0);
    const call = native.eventfd(0);
    fds.push(kick, call);
    c.send(R.SET_VRING_KICK, M.encodeVringFile(0, false), [kick]);
    c.send(R.SET_VRING_CALL, M.encodeVringFile(0, false), [call]);
    c.send(R.SET_VRING_ENABLE, M.encodeVringState({ index: 0, num: 1 }), [], ACK);
    if (c.reply(R.SET_VRING_ENABLE).readBigUInt64LE(0) !== 0n) throw new Error('SET_VRING_ENABLE failed');
    return true;
  } finally {
    c.close();
    for (const f of fds) native.close(f);
  }
}

function status(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { rssKiB: kib('VmRSS'), rssAnonKiB: kib('RssAnon'), vmSizeKiB: kib('VmSize'), threads: Number(/^Threads:\s+(\d+)/m.exec(s)?.[1] ?? NaN) };
}

const fdCount = (pid) => readdirSync(`/proc/${pid}/fd`).length;
/** What each of the daemon's fds is ("12 -> anon_inode:[eventfd]"), to name the ones a sample has beyond the first. */
const fdTargets = (pid) =>
  readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return `${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`;
    } catch {
      return `${fd} -> (closed meanwhile)`;
    }
  });

/** A stand-in for the spawned daemon: a running tmemd's pid. */
function attached(pid) {
  return {
    pid,
    get exitCode() {
      try {
        process.kill(pid, 0);
        return null;
      } catch {
        return 1;
      }
    },
    stderr: { setEncoding: () => ({ on: () => {} }) },
    once: () => {},
    kill: () => {},
  };
}

async function main() {
  const o = parse(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'tmem-churn-'));
  const sock = o.attach ?? join(dir, 'vm.sock');
  const d = o.attach !== null ? attached(o.pid) : spawn(process.execPath, [...o.nodeArgs, join(root, 'dist/host/tmemd.js'), '--vm', `name=churn,socket=${sock},maxmem=1G`, '--control', 'none', '--capacity', '64M', '--queues', '1', '--queues-mode', o.mode], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  let logBytes = 0;
  d.stderr.setEncoding('utf8').on('data', (s) => {
    logBytes += Buffer.byteLength(s);
    log = (log + s).slice(-20000);
  });
  const exited = o.attach !== null ? Promise.resolve() : new Promise((res) => d.once('exit', (code, signal) => res({ code, signal })));
  if (o.attach !== null) log = 'ready:';
  try {
    const end = Date.now() + 30000;
    while (!/ready:/.test(log)) {
      if (d.exitCode !== null) throw new Error(`tmemd exited: ${log}`);
      if (Date.now() > end) throw new Error(`tmemd not ready: ${log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const every = Math.max(1, Math.floor(o.connections / o.samples));
    const samples = [];
    let refused = 0;
    const t0 = Date.now();
    let startTargets = null;
    const sample = (n) => {
      const s = { connections: n, ...status(d.pid), fds: fdCount(d.pid), logBytes, seconds: (Date.now() - t0) / 1000 };
      if (startTargets === null) startTargets = fdTargets(d.pid);
      else if (s.fds !== samples[0].fds) s.fdsBeyondStart = fdTargets(d.pid).filter((f) => !startTargets.includes(f));
      samples.push(s);
      if (!o.json) process.stdout.write(`${String(n).padStart(8)} connections  RSS ${String(s.rssKiB).padStart(7)} KiB  anon ${String(s.rssAnonKiB).padStart(7)} KiB  VmSize ${String(s.vmSizeKiB).padStart(9)} KiB  fds ${s.fds}  log ${logBytes} B  ${s.seconds.toFixed(1)} s\n`);
    };
    sample(0);
    for (let n = 1; n <= o.connections; ) {
      if (cycle(sock, o.kind)) {
        if (n % every === 0 || n === o.connections) {
          // Let the daemon finish the goodbye (the last guest's removal) before measuring: at
          // least 50 ms, and up to 2 s more while its fd count is not back where it started (a
          // loaded machine may take longer; a leaked fd never comes back and the sample shows it).
          await new Promise((r) => setTimeout(r, 50));
          for (const end = Date.now() + 2000; samples.length > 0 && fdCount(d.pid) !== samples[0].fds && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
          sample(n);
        }
        n++;
      } else {
        refused++;
        // The previous connection's close was not yet handled (a race of two readiness events): yield and retry.
        await new Promise((r) => setImmediate(r));
      }
      if (d.exitCode !== null) throw new Error(`tmemd exited during the soak: ${log}`);
    }
    let idle = null;
    if (o.idleSeconds > 0) {
      await new Promise((r) => setTimeout(r, o.idleSeconds * 1000));
      idle = { afterIdleSeconds: o.idleSeconds, ...status(d.pid), fds: fdCount(d.pid) };
      if (!o.json) process.stdout.write(`after ${o.idleSeconds} s idle: RSS ${idle.rssKiB} KiB  anon ${idle.rssAnonKiB} KiB  VmSize ${idle.vmSizeKiB} KiB  fds ${idle.fds}\n`);
    }
    const half = samples.filter((s) => s.connections >= o.connections / 2);
    const first = half[0];
    const last = samples[samples.length - 1];
    const perConn = (k) => ((last[k] - first[k]) * 1024) / (last.connections - first.connections);
    const result = {
      connections: o.connections,
      kind: o.kind,
      mode: o.mode,
      refusedRetries: refused,
      seconds: (Date.now() - t0) / 1000,
      rssStartKiB: samples[0].rssKiB,
      rssHalfKiB: first.rssKiB,
      rssEndKiB: last.rssKiB,
      secondHalfRssBytesPerConnection: Math.round(perConn('rssKiB')),
      secondHalfAnonBytesPerConnection: Math.round(perConn('rssAnonKiB')),
      vmSizeStartKiB: samples[0].vmSizeKiB,
      vmSizeEndKiB: last.vmSizeKiB,
      fdsStart: samples[0].fds,
      fdsEnd: last.fds,
      logBytes,
      idle,
      samples,
    };
    if (o.json) process.stdout.write(JSON.stringify(result) + '\n');
    else
      process.stdout.write(
        `second half: RSS ${result.secondHalfRssBytesPerConnection} B/connection (anon ${result.secondHalfAnonBytesPerConnection} B); RSS ${result.rssStartKiB} -> ${result.rssHalfKiB} -> ${result.rssEndKiB} KiB; fds ${result.fdsStart} -> ${result.fdsEnd}; log ${logBytes} bytes; ${refused} refused retries; ${result.seconds.toFixed(1)} s\n`,
      );
  } finally {
    if (o.attach === null && d.exitCode === null) d.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`churn-soak: ${e.message}\n`);
  process.exit(1);
});
