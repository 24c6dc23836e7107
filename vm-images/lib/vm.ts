// One test VM: the QEMU command line, the QEMU process, its serial console,
// the harness port (virtio-serial: the guest's markers and results) and QMP.
//
//   const b = await buildAll({ kernel: 'debian' });
//   const vm = await Vm.start({ ...b, ram: '512M', run: '/opt/tmem/workloads/swapstress.sh', tmemSocket: null });
//   const r = await vm.waitForResult(600_000);   // parsed @@TMEM-RESULT JSON
//   await vm.waitForShutdown(60_000);            // guest powered off; QEMU still up (-no-shutdown)
//   const stats = await vm.blockstats();
//   await vm.quit();                             // then stop the daemon, never before (Session does both)
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { BootKernel } from './build.js';
import type { Exit } from './daemon.js';
import { makeRunDir, mib, parseSize, sleep, type Sink } from './paths.js';
import { QmpClient, type BlockStats, type QmpValue } from './qmp.js';

export type Accel = 'kvm' | 'tcg';

/** 'kvm' only if /dev/kvm is usable AND the CPU advertises vmx/svm (nested guests hang otherwise). */
export function detectAccel(): Accel {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    const cpu = fs.readFileSync('/proc/cpuinfo', 'utf8');
    if (/^flags\s*:.*\b(vmx|svm)\b/m.test(cpu)) return 'kvm';
  } catch { /* no kvm */ }
  return 'tcg';
}

export interface VmOptions {
  /** from buildAll() */
  qemu: string;
  kernel: BootKernel;
  rootfs: string;
  tmemfiles?: string | null | undefined;
  name?: string | undefined;
  /** guest RAM (default 512M) */
  ram?: string | number | undefined;
  /** vCPUs (default 2) */
  cpus?: number | undefined;
  /** num_vqs of the tmem device (default cpus) */
  queues?: number | undefined;
  /** swap disk /dev/vdb (default 1G; 0: none) */
  swapSize?: string | number | undefined;
  /** fresh ext4 data disk at /mnt/data (default 2G; 0: none) */
  dataSize?: string | number | undefined;
  /** the daemon's vhost-user socket; null/undefined: no tmem device */
  tmemSocket?: string | null | undefined;
  /**
   * a vhost-user-blk socket (tmemd's blk-socket, or qemu-storage-daemon's
   * vhost-user-blk export): the guest gets QEMU's stock vhost-user-blk-pci at
   * PCI 00:10.0 (guest/workloads/e2e-blk.sh finds it there: the serial comes
   * from the backend). null/undefined: none
   */
  blkSocket?: string | null | undefined;
  /** num-queues of that disk (default cpus) */
  blkQueues?: number | undefined;
  /** a guest command (passed by fw_cfg; the guest powers off after it) */
  run?: string | undefined;
  /** virtio_tmem module parameters ("a=1 b=2") */
  modparams?: string | undefined;
  /** boot with tmem.module=0 */
  noModule?: boolean | undefined;
  /** more kernel command line */
  extraAppend?: string | undefined;
  accel?: Accel | undefined;
  /** a guest reboot resets the VM in the same QEMU (default: -no-reboot, QEMU exits) */
  allowReboot?: boolean | undefined;
  /** console on this terminal (-nographic, stdio inherited); else piped */
  interactive?: boolean | undefined;
  /** QEMU stays up after the guest powers off, for QMP; default: !interactive */
  noShutdown?: boolean | undefined;
  /** where the images and sockets go (default a new dir in $CACHE/run, removed by cleanup()) */
  runDir?: string | undefined;
  /** gets the console output (e.g. process.stdout) */
  echo?: Sink | null | undefined;
  /** the virtio-serial harness port (default true unless interactive); false: markers off the console */
  harnessPort?: boolean | undefined;
  /** more QEMU arguments */
  qemuExtra?: string[] | undefined;
}

/** What qemuArgs() needs: the options plus the paths start() decided. */
export interface QemuArgsInput extends VmOptions {
  append: string;
  qmpPath: string;
  cpus: number;
  queues: number;
  swapImg?: string | undefined;
  dataImg?: string | undefined;
  harnessSocket?: string | undefined;
}

/** The guest kernel command line: the same for every kernel (init.sh does the rest). */
export function bootAppend(o: { noModule?: boolean | undefined; extraAppend?: string | undefined }): string {
  return ['root=/dev/vda rw console=ttyS0 init=/sbin/tmem-init panic=-1 zswap.enabled=0',
    o.noModule ? 'tmem.module=0' : '', o.extraAppend ?? ''].filter(Boolean).join(' ');
}

const qemuStr = (s: string): string => s.replace(/,/g, ',,'); // QEMU option value escaping

/**
 * The QEMU command line (without the binary).
 * Drives: vda rootfs (snapshot=on: never modified), vdb swap, vdc tmemfiles (read-only), vdd data;
 * with blkSocket a vhost-user-blk-pci disk at PCI 00:10.0 (its vd letter depends on probe order).
 */
export function qemuArgs(o: QemuArgsInput): string[] {
  const ram = `${mib(o.ram ?? '512M')}M`;
  const accel = o.accel ?? detectAccel();
  const a = [
    '-name', o.name ?? 'tmem-guest',
    '-machine', 'q35,memory-backend=mem', '-accel', accel,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', ram, '-smp', String(o.cpus),
    '-object', `memory-backend-memfd,id=mem,size=${ram},share=on`,
    '-kernel', o.kernel.image,
    ...(o.kernel.initrd ? ['-initrd', o.kernel.initrd] : []),
    '-append', o.append,
    // a guest reboot ends QEMU unless the caller wants to see one (allowReboot)
    ...(o.allowReboot ? [] : ['-no-reboot']),
    '-nodefaults', '-vga', 'none',
    '-qmp', `unix:${o.qmpPath},server=on,wait=off`,
  ];
  if (o.interactive) a.push('-nographic', '-serial', 'mon:stdio');
  else a.push('-display', 'none', '-serial', 'stdio', '-monitor', 'none');
  if (o.noShutdown) a.push('-no-shutdown');
  const drive = (id: string, file: string, extra: string, serial: string): void => {
    a.push('-drive', `file=${qemuStr(file)},if=none,id=${id},format=raw,${extra}`,
      '-device', `virtio-blk-pci,drive=${id},serial=${serial},id=${serial}`);
  };
  drive('root', o.rootfs, 'snapshot=on', 'tmemroot');
  if (o.swapImg) drive('swap', o.swapImg, 'cache=unsafe', 'tmemswap');
  if (o.tmemfiles) drive('files', o.tmemfiles, 'readonly=on', 'tmemfiles');
  if (o.dataImg) drive('data', o.dataImg, 'cache=writeback', 'tmemdata');
  if (o.tmemSocket) {
    a.push('-chardev', `socket,id=tmem0,path=${qemuStr(o.tmemSocket)}`,
      '-device', `vhost-user-test-device-pci,chardev=tmem0,virtio-id=39,num_vqs=${o.queues},vq_size=256,id=tmem0dev`);
  }
  if (o.blkSocket) {
    // QEMU's own front-end, as a user would configure it (the guest RAM is the
    // shared memfd above, which vhost-user needs)
    a.push('-chardev', `socket,id=blk0,path=${qemuStr(o.blkSocket)}`,
      '-device', `vhost-user-blk-pci,chardev=blk0,num-queues=${o.blkQueues ?? o.cpus},bus=pcie.0,addr=0x10,id=tmemblk`);
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
  a.push(...(o.qemuExtra ?? []));
  return a;
}

function makeDisk(file: string, size: string | number, kind: 'swap' | 'ext4'): void {
  fs.rmSync(file, { force: true });
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, parseSize(size));
  if (kind === 'swap') execFileSync('mkswap', ['-L', 'tmemswap', file], { stdio: 'ignore' });
  else execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'tmemdata', file], { stdio: 'ignore' });
}

/** A function fed text chunks that calls onLine once per complete line (without "\n" or "\r\n"). */
function lineFeeder(onLine: (line: string) => void): (chunk: string) => void {
  let partial = '';
  return (chunk) => {
    partial += chunk;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) { onLine(partial.slice(0, i).replace(/\r$/, '')); partial = partial.slice(i + 1); }
  };
}

interface HarnessListener { path: string; close(): void }

/**
 * A Unix socket that QEMU's harness chardev connects to (as a client, at
 * startup, so it must listen before QEMU starts). One connection is taken;
 * onData gets its text.
 */
async function listenHarness(sockPath: string, onData: (s: string) => void): Promise<HarnessListener> {
  fs.rmSync(sockPath, { force: true });
  let conn: net.Socket | null = null;
  const server = net.createServer((c) => {
    if (conn) { c.destroy(); return; } // one VM, one port
    conn = c;
    c.setEncoding('utf8'); // a character split over two reads is decoded whole
    c.on('data', (d: string) => onData(d));
    c.on('error', () => {}); // QEMU going away ends the stream; the Vm reports the exit
  });
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(sockPath, resolve); });
  return {
    path: sockPath,
    close() { (conn as net.Socket | null)?.destroy(); server.close(); fs.rmSync(sockPath, { force: true }); },
  };
}

/* eslint-disable @typescript-eslint/no-explicit-any */
/** A parsed @@TMEM-RESULT line (the workload's JSON; { parseError, raw } if it was not JSON). */
export type VmResult = any;

/**
 * A running VM. Events on `events`: 'line' (each console line), 'marker' (each
 * line of the stream markers are read from: the harness port, or the console
 * without one), 'result' (parsed), 'exit' (Exit), 'shutdown'.
 */
export class Vm {
  /** Make the disks, listen on the harness port, start QEMU. */
  static async start(opts: VmOptions): Promise<Vm> {
    for (const k of ['qemu', 'kernel', 'rootfs'] as const) if (!opts[k]) throw new Error(`startVm: ${k} is required (use buildAll())`);
    const cpus = opts.cpus ?? 2;
    const interactive = !!opts.interactive;
    const runDir = opts.runDir ?? makeRunDir(opts.name ?? 'vm');
    fs.mkdirSync(runDir, { recursive: true });
    const o: QemuArgsInput = {
      ram: '512M', swapSize: '1G', dataSize: '2G', ...opts,
      cpus, queues: opts.queues ?? cpus, interactive, noShutdown: opts.noShutdown ?? !interactive,
      runDir, qmpPath: path.join(runDir, 'qmp.sock'), append: bootAppend(opts),
    };
    if (o.swapSize && parseSize(o.swapSize) > 0) { o.swapImg = path.join(runDir, 'swap.img'); makeDisk(o.swapImg, o.swapSize, 'swap'); }
    if (o.dataSize && parseSize(o.dataSize) > 0) { o.dataImg = path.join(runDir, 'data.img'); makeDisk(o.dataImg, o.dataSize, 'ext4'); }
    return new Vm(o, !opts.runDir).#spawn(!interactive && opts.harnessPort !== false);
  }

  readonly events = new EventEmitter();
  /** every @@TMEM-RESULT so far, parsed */
  readonly results: VmResult[] = [];
  readonly runDir: string;
  proc!: ChildProcess;
  args: string[] = [];
  cmdline: string[] = [];
  #text = ''; // the console
  #marks = ''; // the harness port
  #harness: HarnessListener | null = null;
  #consumed = 0;
  #exited: Exit | null = null;
  #exitP!: Promise<Exit>;
  #shutdown = false;
  #qmpP: Promise<QmpClient> | null = null;

  private constructor(readonly options: QemuArgsInput, private readonly ownRunDir: boolean) {
    this.runDir = options.runDir!;
  }

  /** Which kernel this VM boots. */
  get kernel(): BootKernel { return this.options.kernel; }

  async #spawn(useHarness: boolean): Promise<this> {
    const o = this.options;
    // Markers and results come over a virtio-serial port when the console is
    // piped: kernel messages go straight to the UART and land inside lines
    // there; the port carries only what the guest's scripts mark. An
    // interactive console is left as it is.
    const feedConsole = lineFeeder((line) => {
      this.events.emit('line', line);
      if (!useHarness) this.#onMarker(line);
    });
    const feedHarness = lineFeeder((line) => this.#onMarker(line));
    if (useHarness) {
      this.#harness = await listenHarness(path.join(this.runDir, 'harness.sock'), (d) => { this.#marks += d; feedHarness(d); });
      o.harnessSocket = this.#harness.path;
    }
    this.args = qemuArgs(o);
    this.cmdline = [o.qemu, ...this.args];
    try {
      this.proc = spawn(o.qemu, this.args, {
        stdio: o.interactive ? 'inherit' : ['pipe', 'pipe', 'pipe'],
        detached: !o.interactive, // a terminal Ctrl-C goes to us; we stop QEMU, then the daemon
        env: { ...process.env, TMPDIR: this.runDir }, // the snapshot=on overlay lives in runDir
      });
    } catch (e) {
      this.#harness?.close();
      throw e;
    }
    const onData = (b: Buffer): void => {
      const d = String(b);
      this.#text += d;
      o.echo?.write(d);
      feedConsole(d);
    };
    if (!o.interactive) { this.proc.stdout!.on('data', onData); this.proc.stderr!.on('data', onData); }
    this.#exitP = new Promise((r) => {
      const done = (e: Exit): void => { if (this.#exited) return; this.#exited = e; this.events.emit('exit', e); r(e); };
      this.proc.on('exit', (code, signal) => done({ code, signal }));
      this.proc.on('error', (e) => { this.#text += `\n[QEMU failed to start: ${e.message}]\n`; done({ code: -1, signal: null, error: e.message }); });
    });
    // connect QMP early so that SHUTDOWN events are seen
    this.qmpClient().then((c) => c.on('SHUTDOWN', () => { this.#shutdown = true; this.events.emit('shutdown'); }), () => {});
    void this.#exitP.then(() => { this.#harness?.close(); return this.#qmpP?.then((c) => c.close()).catch(() => {}); });
    return this;
  }

  /** A marker line from the stream markers are read from: results are taken here, from one stream only. */
  #onMarker(line: string): void {
    const at = line.indexOf('@@TMEM-RESULT ');
    if (at >= 0) {
      const raw = line.slice(at + '@@TMEM-RESULT '.length);
      let r: VmResult;
      try { r = JSON.parse(raw); } catch (e) {
        r = { parseError: (e as Error).message, raw };
        process.stderr.write(`vm: a @@TMEM-RESULT line is not JSON (${(e as Error).message}); ${raw.length} chars:\n${JSON.stringify(raw)}\n`);
      }
      this.results.push(r);
      this.events.emit('result', r);
    }
    this.events.emit('marker', line); // after the result is in: waiters re-check on it
  }

  /** All console output so far. */
  output(): string { return this.#text; }
  /** The guest's marker lines (@@...) so far: from the harness port, or the console without one. */
  markers(): string { return this.#harness ? this.#marks : this.#text; }
  /** Send text to the guest console (piped mode). */
  write(s: string): void { this.proc.stdin?.write(s); }

  /** The QMP connection (made once; retried after a failure). */
  qmpClient(): Promise<QmpClient> {
    if (!this.#qmpP) {
      const p = QmpClient.connect(this.options.qmpPath, { timeoutMs: 20000 });
      p.catch(() => { if (this.#qmpP === p) this.#qmpP = null; }); // allow a later retry
      this.#qmpP = p;
    }
    return this.#qmpP;
  }
  /** Run a QMP command ('query-blockstats', ...) and get its return value. */
  async qmp(cmd: string, args?: unknown): Promise<QmpValue> { return (await this.qmpClient()).execute(cmd, args); }
  async blockstats(): Promise<BlockStats> { return (await this.qmpClient()).blockstats(); }

  #until<T>(pred: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const ev = this.events;
      let t: NodeJS.Timeout | null = null;
      const cleanup = (): void => { if (t) clearTimeout(t); ev.off('line', check); ev.off('marker', check); ev.off('exit', onExit); };
      const check = (): boolean => { const v = pred(); if (v !== undefined) { cleanup(); resolve(v); return true; } return false; };
      const onExit = (): void => { if (!check()) { cleanup(); reject(new Error(`QEMU exited (${JSON.stringify(this.#exited)}) while waiting for ${what}\n--- console tail ---\n${this.#text.slice(-3000)}`)); } };
      if (check()) return;
      if (this.#exited) { onExit(); return; }
      if (timeoutMs) t = setTimeout(() => { cleanup(); reject(new Error(`timeout after ${timeoutMs} ms waiting for ${what}\n--- console tail ---\n${this.#text.slice(-3000)}`)); }, timeoutMs);
      ev.on('line', check); ev.on('marker', check); ev.on('exit', onExit);
    });
  }

  /** Wait for text matching `re` on the harness port or the console; resolves with the match. */
  waitFor(re: RegExp, timeoutMs = 120000): Promise<RegExpMatchArray> {
    const find = (): RegExpMatchArray | undefined => (this.#harness ? this.#marks.match(re) : null) ?? this.#text.match(re) ?? undefined;
    return this.#until(find, timeoutMs, String(re));
  }

  /** The next @@TMEM-RESULT (parsed JSON) not yet returned by this function. */
  waitForResult(timeoutMs = 600000): Promise<VmResult> {
    return this.#until(() => (this.#consumed < this.results.length ? this.results[this.#consumed++] : undefined), timeoutMs, '@@TMEM-RESULT');
  }

  /** Resolves when the guest powered off (QMP SHUTDOWN event or QEMU exit). */
  waitForShutdown(timeoutMs = 600000): Promise<Exit | { shutdown: true }> {
    return new Promise((resolve, reject) => {
      if (this.#shutdown || this.#exited) { resolve(this.#exited ?? { shutdown: true }); return; }
      const t = timeoutMs ? setTimeout(() => reject(new Error(`guest did not power off within ${timeoutMs} ms`)), timeoutMs) : null;
      const done = (): void => { if (t) clearTimeout(t); resolve(this.#exited ?? { shutdown: true }); };
      this.events.once('shutdown', done); this.events.once('exit', done);
    });
  }

  /** Resolves when QEMU has exited. */
  wait(): Promise<Exit> { return this.#exitP; }
  exited(): Exit | null { return this.#exited; }

  /** Ask QEMU to quit (QMP quit, SIGTERM after graceMs/2, SIGKILL after graceMs). */
  async quit(graceMs = 10000): Promise<Exit> {
    if (this.#exited) return this.#exited;
    try {
      const c = await Promise.race([this.qmpClient(), sleep(2000).then(() => null)]);
      if (c && !c.closed) await Promise.race([c.execute('quit').catch(() => {}), sleep(2000)]);
    } catch { /* fall through to signals */ }
    const t1 = setTimeout(() => { if (!this.#exited) this.proc.kill('SIGTERM'); }, graceMs / 2);
    const t2 = setTimeout(() => { if (!this.#exited) this.proc.kill('SIGKILL'); }, graceMs);
    const r = await this.#exitP;
    clearTimeout(t1); clearTimeout(t2);
    return r;
  }

  /** Kill QEMU at once. */
  kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<Exit> { if (!this.#exited) this.proc.kill(sig); return this.#exitP; }

  /** SIGKILL at once, without waiting (process exit paths). */
  killSync(): void {
    if (!this.#exited && this.proc.pid) try { process.kill(this.proc.pid, 'SIGKILL'); } catch { /* gone */ }
  }

  /** Remove the run directory (swap/data images) if this VM made it. */
  cleanup(): void { if (this.ownRunDir) fs.rmSync(this.runDir, { recursive: true, force: true }); }
}

/** Vm.start, under the name existing callers use. */
export const startVm = (o: VmOptions): Promise<Vm> => Vm.start(o);
