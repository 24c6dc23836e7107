// tmem-kvm test VM library: build the images, start tmemd and QEMU, read the
// serial console, talk QMP. Plain Node ESM, no dependencies, no build step.
//
//   import { buildAll, startDaemon, startVm, QmpClient } from './vm-images/lib/vm.mjs';
//   const b = await buildAll();
//   const vm = await startVm({ ...b, ram: '512M', run: '/opt/tmem/workloads/swapstress.sh', tmem: null });
//   const r = await vm.waitForResult(600_000);   // parsed @@TMEM-RESULT JSON
//   await vm.waitForShutdown(60_000);            // guest powered off; QEMU still up (-no-shutdown)
//   const stats = await vm.qmp('query-blockstats');
//   await vm.quit();                             // then stop the daemon, never before
import { spawn, execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const VM_IMAGES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = path.resolve(VM_IMAGES_DIR, '..');
export const CACHE = process.env.TMEM_KVM_CACHE || '/var/cache/tmem-kvm';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** "512M" / "2G" / "1048576" -> bytes (binary units). */
export function parseSize(s) {
  if (typeof s === 'number') return s;
  const m = /^\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$/.exec(String(s));
  if (!m) throw new Error(`not a size: '${s}' (use e.g. 512M or 2G)`);
  const mul = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase()];
  return Number(m[1]) * mul;
}
const mib = (s) => Math.round(parseSize(s) / 2 ** 20);

// ---------------------------------------------------------------- building

/** Run one of our build scripts; its progress goes to `log`, its last stdout line is the result. */
export function runScript(script, args = [], { log = process.stderr, env = process.env } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [path.join(VM_IMAGES_DIR, script), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { if (log) log.write(d); });
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${script} ${args.join(' ')} failed with exit status ${code}`));
      const lines = out.trim().split('\n');
      resolve(lines[lines.length - 1]);
    });
  });
}

/**
 * Build (or find cached) everything the VM needs. Options:
 *   module: path of virtio_tmem.ko | 'none' | undefined (auto: newest under guest-driver/)
 *   extra: a directory to put at /opt/tmem/extra in the guest
 *   log: a writable stream for progress (default stderr; null for silence)
 * Returns { qemu, kernelDir, bzImage, kernelBuildDir, rootfs, tmemfiles }.
 */
export async function buildAll({ module, extra, log = process.stderr } = {}) {
  const qemu = await runScript('qemu.sh', [], { log });
  const kernelDir = await runScript('build-kernel.sh', [], { log });
  const rootfs = await runScript('build-rootfs.sh', [], { log });
  const tmemfiles = await buildTmemfiles({ module, extra, log });
  return { qemu, kernelDir, bzImage: path.join(kernelDir, 'bzImage'), kernelBuildDir: path.join(kernelDir, 'build'), rootfs, tmemfiles };
}

/** Only the small project-files disk (module + workloads), e.g. after rebuilding the module. */
export function buildTmemfiles({ module, extra, log = process.stderr } = {}) {
  const args = [];
  if (module === 'none' || module === false) args.push('--no-module');
  else if (module) args.push('--module', module);
  if (extra) args.push('--extra', extra);
  return runScript('build-tmemfiles.sh', args, { log });
}

// ---------------------------------------------------------------- accel

/** 'kvm' only if /dev/kvm is usable AND the CPU advertises vmx/svm (nested guests hang otherwise). */
export function detectAccel() {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    const cpu = fs.readFileSync('/proc/cpuinfo', 'utf8');
    if (/^flags\s*:.*\b(vmx|svm)\b/m.test(cpu)) return 'kvm';
  } catch { /* no kvm */ }
  return 'tcg';
}

// ---------------------------------------------------------------- QMP

export class QmpClient extends EventEmitter {
  /** Connect (retrying while QEMU creates the socket) and negotiate capabilities. */
  static async connect(sockPath, { timeoutMs = 15000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const c = new QmpClient();
        await c.#open(sockPath);
        await c.execute('qmp_capabilities');
        return c;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`QMP ${sockPath}: ${e.message}`);
        await sleep(100);
      }
    }
  }

  #sock = null;
  #buf = '';
  #nextId = 1;
  #pending = new Map();
  #greeted = null;
  events = [];
  closed = false;

  #open(sockPath) {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(sockPath);
      let greeted = false;
      this.#greeted = () => { greeted = true; resolve(); };
      s.once('error', (e) => { if (!greeted) reject(e); });
      s.on('data', (d) => this.#onData(d));
      s.on('close', () => {
        this.closed = true;
        if (!greeted) reject(new Error('closed before greeting'));
        for (const { reject: rj } of this.#pending.values()) rj(new Error('QMP connection closed'));
        this.#pending.clear();
        this.emit('close');
      });
      s.on('error', () => {});
      this.#sock = s;
    });
  }

  #onData(d) {
    this.#buf += d;
    let i;
    while ((i = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, i).trim();
      this.#buf = this.#buf.slice(i + 1);
      if (!line) continue;
      let m;
      try { m = JSON.parse(line); } catch { continue; }
      if (m.QMP) { this.#greeted?.(); continue; }
      if (m.event) { this.events.push(m); this.emit('event', m); this.emit(m.event, m); continue; }
      const p = this.#pending.get(m.id);
      if (!p) continue;
      this.#pending.delete(m.id);
      if (m.error) p.reject(Object.assign(new Error(`QMP ${p.cmd}: ${m.error.class}: ${m.error.desc}`), { qmpError: m.error }));
      else p.resolve(m.return);
    }
  }

  /** Execute a QMP command; resolves with its `return` value. */
  execute(cmd, args) {
    if (this.closed) return Promise.reject(new Error('QMP connection closed'));
    const id = this.#nextId++;
    const msg = { execute: cmd, id };
    if (args !== undefined) msg.arguments = args;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, cmd });
      this.#sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** The blockstats of every drive, as { [qdev id or node]: stats }. */
  async blockstats() {
    const r = await this.execute('query-blockstats');
    const o = {};
    for (const d of r) {
      const m = /^\/machine\/peripheral\/([^/]+)/.exec(d.qdev || '');
      o[m ? m[1] : (d.device || d.qdev || d['node-name'])] = d.stats;
    }
    return o;
  }

  close() { this.#sock?.destroy(); this.closed = true; }
}

// ---------------------------------------------------------------- daemon

/**
 * Start tmemd for one VM and wait for its vhost-user socket.
 *   cmd: the daemon command line (string, run by sh; default `node dist/host/tmemd.js`)
 *   socket, name, maxmem, capacity, queues, control (operator socket path or 'none'), args (extra)
 * Returns { proc, socket, output(), stop() }. Always stop QEMU before calling stop().
 */
export async function startDaemon({ cmd, socket, name = 'vm0', maxmem, capacity = '1G', queues, control, args = [], log = process.stderr, timeoutMs = 20000, cwd = REPO_DIR } = {}) {
  cmd = cmd || process.env.TMEMD || `node ${path.join(REPO_DIR, 'dist/host/tmemd.js')}`;
  const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
  // maxmem is the VM's maximum memory (Xen's meaning): tmemd allows it
  // maxmem - RAM persistent pages, so a maxmem at or below RAM disables frontswap.
  if (!maxmem) throw new Error('startDaemon: maxmem is required (the VM\'s maxmem; persistent limit = maxmem - RAM)');
  const full = [`exec ${cmd}`, '--vm', q(`name=${name},socket=${socket},maxmem=${maxmem}`), '--capacity', q(capacity)];
  if (queues) full.push('--queues', String(queues));
  if (control) full.push('--control', q(control));
  full.push(...args.map(q));
  try { fs.unlinkSync(socket); } catch { /* none */ }
  // own process group: a Ctrl-C on the terminal must not kill the daemon before QEMU
  const proc = spawn('sh', ['-c', full.join(' ')], { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let text = '';
  const onOut = (d) => { text += d; if (log) log.write(d); };
  proc.stdout.on('data', onOut);
  proc.stderr.on('data', onOut);
  let exited = null;
  const exitP = new Promise((r) => proc.on('exit', (code, sig) => { exited = { code, signal: sig }; r(exited); }));
  const deadline = Date.now() + timeoutMs;
  while (!exited) {
    try { if (fs.statSync(socket).isSocket()) break; } catch { /* not yet */ }
    if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`tmemd did not create ${socket} within ${timeoutMs} ms`); }
    await sleep(50);
  }
  if (exited) throw new Error(`tmemd exited (${JSON.stringify(exited)}) before creating ${socket}: ${text.slice(-2000)}`);
  return {
    proc, socket, cmdline: full.join(' '),
    output: () => text,
    wait: () => exitP,
    async stop(graceMs = 10000) {
      if (exited) return exited;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const r = await exitP;
      clearTimeout(t);
      return r;
    },
  };
}

// ---------------------------------------------------------------- QEMU

function qemuStr(s) { return String(s).replace(/,/g, ',,'); } // QEMU option value escaping

/**
 * The QEMU command line (without the binary). Options: see startVm.
 * Drives: vda rootfs (snapshot=on: never modified), vdb swap, vdc tmemfiles (read-only), vdd data.
 */
export function qemuArgs(o) {
  const ram = `${mib(o.ram)}M`;
  const accel = o.accel || detectAccel();
  const a = [
    '-name', o.name || 'tmem-guest',
    '-machine', 'q35,memory-backend=mem', '-accel', accel,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', ram, '-smp', String(o.cpus),
    '-object', `memory-backend-memfd,id=mem,size=${ram},share=on`,
    '-kernel', o.bzImage,
    '-append', o.append,
    // a guest reboot ends QEMU unless the caller wants to see one (allowReboot)
    ...(o.allowReboot ? [] : ['-no-reboot']),
    '-nodefaults', '-vga', 'none',
    '-qmp', `unix:${o.qmpPath},server=on,wait=off`,
  ];
  if (o.interactive) a.push('-nographic', '-serial', 'mon:stdio');
  else a.push('-display', 'none', '-serial', 'stdio', '-monitor', 'none');
  if (o.noShutdown) a.push('-no-shutdown');
  const drive = (id, file, extra, serial) => a.push(
    '-drive', `file=${qemuStr(file)},if=none,id=${id},format=raw,${extra}`,
    '-device', `virtio-blk-pci,drive=${id},serial=${serial},id=${serial}`);
  drive('root', o.rootfs, 'snapshot=on', 'tmemroot');
  if (o.swapImg) drive('swap', o.swapImg, 'cache=unsafe', 'tmemswap');
  if (o.tmemfiles) drive('files', o.tmemfiles, 'readonly=on', 'tmemfiles');
  if (o.dataImg) drive('data', o.dataImg, 'cache=writeback', 'tmemdata');
  if (o.tmemSocket) {
    a.push('-chardev', `socket,id=tmem0,path=${qemuStr(o.tmemSocket)}`,
      '-device', `vhost-user-test-device-pci,chardev=tmem0,virtio-id=39,num_vqs=${o.queues},vq_size=256,id=tmem0dev`);
  }
  if (o.harnessSocket) {
    // the harness port (guest/init.sh): markers and results over virtio-serial,
    // which kernel messages do not reach and which holds the guest back while
    // the host is not reading
    a.push('-device', 'virtio-serial-pci,id=harnessbus',
      '-chardev', `socket,id=harness,path=${qemuStr(o.harnessSocket)}`,
      '-device', 'virtserialport,bus=harnessbus.0,chardev=harness,name=org.tmem-kvm.harness');
  }
  if (o.run) a.push('-fw_cfg', `name=opt/tmem/run,string=${qemuStr(o.run)}`);
  if (o.modparams) a.push('-fw_cfg', `name=opt/tmem/modparams,string=${qemuStr(o.modparams)}`);
  a.push(...(o.qemuExtra || []));
  return a;
}

function makeDisk(file, size, kind) {
  fs.rmSync(file, { force: true });
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, parseSize(size));
  if (kind === 'swap') execFileSync('mkswap', ['-L', 'tmemswap', file], { stdio: 'ignore' });
  else execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'tmemdata', file], { stdio: 'ignore' });
}

/**
 * Start a VM. Options (defaults):
 *   qemu, bzImage, rootfs, tmemfiles     from buildAll()
 *   ram '512M', cpus 2, swapSize '1G' (0: no swap disk), dataSize '2G' (0: no data disk)
 *   tmemSocket: the daemon's vhost-user socket, or null/undefined for no tmem device
 *   queues (default cpus)  num_vqs of the tmem device
 *   run: a guest command (passed by fw_cfg; the guest powers off after it)
 *   modparams: virtio_tmem module parameters ("a=1 b=2"); noModule: add tmem.module=0
 *   extraAppend: more kernel command line; accel: 'kvm'|'tcg' (default detectAccel())
 *   allowReboot: a guest reboot resets the VM in the same QEMU (default: -no-reboot, QEMU exits)
 *   interactive: console on this terminal (-nographic, stdio inherited); else piped
 *   noShutdown (default true unless interactive): QEMU stays up after the guest powers off,
 *     so QMP (blockstats) can still be read; call quit() afterwards
 *   runDir: where the swap/data images and sockets go (default a new dir in $CACHE/run)
 *   echo: a writable stream that gets the console output (e.g. process.stdout)
 *   harnessPort (default true unless interactive): a virtio-serial port for the guest's
 *     markers and results (see markers(), waitForResult()); false: read them off the console
 * Returns a VM handle (see below).
 */
export async function startVm(opts) {
  const o = {
    ram: '512M', cpus: 2, swapSize: '1G', dataSize: '2G', extraAppend: '', interactive: false, ...opts,
  };
  o.queues = o.queues || o.cpus;
  if (o.noShutdown === undefined) o.noShutdown = !o.interactive;
  for (const k of ['qemu', 'bzImage', 'rootfs']) if (!o[k]) throw new Error(`startVm: ${k} is required (use buildAll())`);
  const runDir = o.runDir || makeRunDir(o.name || 'vm');
  fs.mkdirSync(runDir, { recursive: true });
  o.qmpPath = o.qmpPath || path.join(runDir, 'qmp.sock');
  if (o.swapSize && parseSize(o.swapSize) > 0) { o.swapImg = path.join(runDir, 'swap.img'); makeDisk(o.swapImg, o.swapSize, 'swap'); }
  if (o.dataSize && parseSize(o.dataSize) > 0) { o.dataImg = path.join(runDir, 'data.img'); makeDisk(o.dataImg, o.dataSize, 'ext4'); }
  const ev = new EventEmitter();
  let text = ''; // the console
  let marks = ''; // the harness port
  const results = [];
  let consumed = 0;
  // Markers and results come over a virtio-serial port when the console is
  // piped: kernel messages go straight to the UART and land inside lines
  // there; the port carries only what the guest's scripts mark. An
  // interactive console is left as it is.
  const useHarness = !o.interactive && o.harnessPort !== false;
  // a marker line from the stream markers are read from: results are taken here, from one stream only
  const onMarker = (line) => {
    const at = line.indexOf('@@TMEM-RESULT ');
    if (at >= 0) {
      const raw = line.slice(at + '@@TMEM-RESULT '.length);
      let r;
      try { r = JSON.parse(raw); } catch (e) {
        r = { parseError: e.message, raw };
        process.stderr.write(`vm.mjs: a @@TMEM-RESULT line is not JSON (${e.message}); ${raw.length} chars:\n${JSON.stringify(raw)}\n`);
      }
      results.push(r);
      ev.emit('result', r);
    }
    ev.emit('marker', line); // after the result is in: waiters re-check on it
  };
  const feedConsole = lineFeeder((line) => {
    ev.emit('line', line);
    if (!useHarness) onMarker(line);
  });
  const feedHarness = lineFeeder(onMarker);
  const harness = useHarness
    ? await listenHarness(path.join(runDir, 'harness.sock'), (d) => { marks += d; feedHarness(d); })
    : null;
  o.harnessSocket = harness?.path;
  o.append = ['root=/dev/vda rw console=ttyS0 init=/sbin/tmem-init panic=-1 zswap.enabled=0',
    o.noModule ? 'tmem.module=0' : '', o.extraAppend].filter(Boolean).join(' ');
  const args = qemuArgs(o);
  let proc;
  try {
    proc = spawn(o.qemu, args, {
      stdio: o.interactive ? 'inherit' : ['pipe', 'pipe', 'pipe'],
      detached: !o.interactive, // a terminal Ctrl-C goes to us; we stop QEMU, then the daemon
      env: { ...process.env, TMPDIR: runDir }, // snapshot=on overlay lives in runDir
    });
  } catch (e) {
    harness?.close();
    throw e;
  }
  const onData = (d) => {
    text += d;
    if (o.echo) o.echo.write(d);
    feedConsole(d);
  };
  if (!o.interactive) { proc.stdout.on('data', onData); proc.stderr.on('data', onData); }
  let exited = null;
  const exitP = new Promise((r) => {
    proc.on('exit', (code, signal) => { if (exited) return; exited = { code, signal }; ev.emit('exit', exited); r(exited); });
    proc.on('error', (e) => { if (exited) return; exited = { code: -1, signal: null, error: e.message }; text += `\n[QEMU failed to start: ${e.message}]\n`; ev.emit('exit', exited); r(exited); });
  });

  let qmpP = null;
  const qmpClient = () => {
    if (!qmpP) {
      qmpP = QmpClient.connect(o.qmpPath, { timeoutMs: 20000 });
      qmpP.catch(() => { qmpP = null; }); // allow a later retry
    }
    return qmpP;
  };
  // connect QMP early so that SHUTDOWN events are seen
  const qmpReady = qmpClient().catch(() => null);

  const until = (pred, timeoutMs, what) => new Promise((resolve, reject) => {
    const check = () => { const v = pred(); if (v !== undefined) { cleanup(); resolve(v); return true; } return false; };
    const onExit = () => { if (!check()) { cleanup(); reject(new Error(`QEMU exited (${JSON.stringify(exited)}) while waiting for ${what}\n--- console tail ---\n${text.slice(-3000)}`)); } };
    const t = timeoutMs ? setTimeout(() => { cleanup(); reject(new Error(`timeout after ${timeoutMs} ms waiting for ${what}\n--- console tail ---\n${text.slice(-3000)}`)); }, timeoutMs) : null;
    const cleanup = () => { clearTimeout(t); ev.off('line', check); ev.off('marker', check); ev.off('exit', onExit); };
    if (check()) return;
    if (exited) return onExit();
    ev.on('line', check); ev.on('marker', check); ev.on('exit', onExit);
  });

  let shutdown = false;
  qmpReady.then((c) => { if (c) c.on('SHUTDOWN', () => { shutdown = true; ev.emit('shutdown'); }); });

  const vm = {
    // events: 'line' (each console line), 'marker' (each line of the stream markers
    // are read from: the harness port, or the console without one), 'result', 'exit', 'shutdown'
    proc, runDir, args, cmdline: [o.qemu, ...args], options: o, results, events: ev,
    /** All console output so far. */
    output: () => text,
    /** The guest's marker lines (@@...) so far: from the harness port, or the console without one. */
    markers: () => (harness ? marks : text),
    /** Send text to the guest console (piped mode). */
    write: (s) => proc.stdin?.write(s),
    /** Run a QMP command ('query-blockstats', ...) and get its return value. */
    qmp: async (cmd, a) => (await qmpClient()).execute(cmd, a),
    qmpClient,
    blockstats: async () => (await qmpClient()).blockstats(),
    /** Wait for a line matching `re` on the harness port or the console; resolves with the match. */
    waitFor: (re, timeoutMs = 120000) => {
      const find = () => (harness ? marks.match(re) : null) ?? text.match(re) ?? undefined;
      const m0 = find();
      if (m0) return Promise.resolve(m0);
      return until(find, timeoutMs, String(re));
    },
    /** The next @@TMEM-RESULT (parsed JSON) not yet returned by this function. */
    waitForResult: (timeoutMs = 600000) => until(() => (consumed < results.length ? results[consumed++] : undefined), timeoutMs, '@@TMEM-RESULT'),
    /** Resolves when the guest powered off (QMP SHUTDOWN event or QEMU exit). */
    waitForShutdown: (timeoutMs = 600000) => new Promise((resolve, reject) => {
      if (shutdown || exited) return resolve(exited || { shutdown: true });
      const t = timeoutMs ? setTimeout(() => reject(new Error(`guest did not power off within ${timeoutMs} ms`)), timeoutMs) : null;
      const done = () => { clearTimeout(t); resolve(exited || { shutdown: true }); };
      ev.once('shutdown', done); ev.once('exit', done);
    }),
    /** Resolves with { code, signal } when QEMU has exited. */
    wait: () => exitP,
    exited: () => exited,
    /** Ask QEMU to quit (QMP quit, SIGTERM after graceMs/2, SIGKILL after graceMs). */
    async quit(graceMs = 10000) {
      if (exited) return exited;
      try {
        const c = await Promise.race([qmpClient(), sleep(2000).then(() => null)]);
        if (c && !c.closed) await Promise.race([c.execute('quit').catch(() => {}), sleep(2000)]);
      } catch { /* fall through to signals */ }
      const t1 = setTimeout(() => { if (!exited) proc.kill('SIGTERM'); }, graceMs / 2);
      const t2 = setTimeout(() => { if (!exited) proc.kill('SIGKILL'); }, graceMs);
      const r = await exitP;
      clearTimeout(t1); clearTimeout(t2);
      return r;
    },
    /** Kill QEMU at once. */
    kill(sig = 'SIGKILL') { if (!exited) proc.kill(sig); return exitP; },
    /** Remove the run directory (swap/data images). */
    cleanup() { if (!o.runDir) fs.rmSync(runDir, { recursive: true, force: true }); },
  };
  exitP.then(() => { harness?.close(); return qmpP?.then((c) => c.close()).catch(() => {}); });
  return vm;
}

/** A function fed text chunks that calls onLine once per complete line (without "\n" or "\r\n"). */
function lineFeeder(onLine) {
  let partial = '';
  return (chunk) => {
    partial += chunk;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) { onLine(partial.slice(0, i).replace(/\r$/, '')); partial = partial.slice(i + 1); }
  };
}

/**
 * A Unix socket that QEMU's harness chardev connects to (as a client, at
 * startup, so it must listen before QEMU starts). One connection is taken;
 * onData gets its text.
 */
async function listenHarness(sockPath, onData) {
  fs.rmSync(sockPath, { force: true });
  let conn = null;
  const server = net.createServer((c) => {
    if (conn) { c.destroy(); return; } // one VM, one port
    conn = c;
    c.setEncoding('utf8'); // a character split over two reads is decoded whole
    c.on('data', onData);
    c.on('error', () => {}); // QEMU going away ends the stream; the VM handle reports the exit
  });
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(sockPath, resolve); });
  return {
    path: sockPath,
    close() { conn?.destroy(); server.close(); fs.rmSync(sockPath, { force: true }); },
  };
}

/** Make a fresh run directory under $CACHE/run. */
export function makeRunDir(prefix = 'vm') {
  const base = path.join(CACHE, 'run');
  fs.mkdirSync(base, { recursive: true });
  // prune run directories left behind by killed runs (untouched for 2 days)
  for (const d of fs.readdirSync(base)) {
    try {
      const p = path.join(base, d);
      if (Date.now() - fs.statSync(p).mtimeMs > 2 * 86400e3) fs.rmSync(p, { recursive: true, force: true });
    } catch { /* raced with another process */ }
  }
  return fs.mkdtempSync(path.join(base, `${prefix}-`));
}

/**
 * The whole thing, as `npm run vm` does it: build, start the daemon (unless tmem === false),
 * start the VM, and give back { vm, daemon, stop() } where stop() quits QEMU first, then the daemon.
 * Options: those of startVm plus tmem (default true), tmemd (daemon command), maxmem, capacity,
 * daemonArgs, module, extra, log.
 */
export async function launch(opts = {}) {
  const log = opts.log === undefined ? process.stderr : opts.log;
  const built = await buildAll({ module: opts.noModule ? 'none' : opts.module, extra: opts.extra, log });
  const runDir = opts.runDir || makeRunDir(opts.name || 'vm');
  let daemon = null;
  const cpus = opts.cpus || 2;
  const queues = opts.queues || cpus;
  if (opts.tmem !== false) {
    daemon = await startDaemon({
      cmd: opts.tmemd, socket: path.join(runDir, 'tmem.sock'), name: opts.name || 'vm0',
      maxmem: opts.maxmem || `${2 * mib(opts.ram || '512M')}M`, capacity: opts.capacity || '1G', queues,
      control: path.join(runDir, 'tmemd-control.sock'), args: opts.daemonArgs || [], log: opts.daemonLog === undefined ? log : opts.daemonLog,
    });
  }
  let vm;
  try {
    vm = await startVm({ ...built, ...opts, cpus, queues, runDir, tmemSocket: daemon ? daemon.socket : null });
  } catch (e) {
    if (daemon) await daemon.stop();
    throw e;
  }
  return {
    vm, daemon, built, runDir,
    async stop() {
      const q = await vm.quit();
      const d = daemon ? await daemon.stop() : null;
      if (!opts.keepRunDir && !opts.runDir) fs.rmSync(runDir, { recursive: true, force: true });
      return { qemu: q, daemon: d };
    },
  };
}

export const defaultName = () => `vm-${os.hostname()}-${process.pid}`;
