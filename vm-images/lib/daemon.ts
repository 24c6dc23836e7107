// tmemd for test VMs: started in its own process group, stopped with SIGTERM
// (SIGKILL after a grace period). Stopping it while its QEMU runs is the
// caller's mistake; Session (session.ts) does the two in the right order.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_DIR, sleep, type Sink } from './paths.js';

/** How a child process ended. */
export interface Exit { code: number | null; signal: NodeJS.Signals | null; error?: string }

export interface DaemonOptions {
  /** the daemon command line, run by sh (default $TMEMD or `node dist/host/tmemd.js`) */
  cmd?: string | undefined;
  socket: string;
  name?: string;
  /** the VM's maxmem (Xen's meaning): tmemd allows it maxmem - RAM persistent pages */
  maxmem: string;
  capacity?: string;
  queues?: number | undefined;
  /** operator socket path */
  control?: string | undefined;
  /** tmem-blk: the VM's vhost-user-blk socket (blk-socket=); start() then waits for it too */
  blkSocket?: string | undefined;
  /** tmem-blk: the disk's capacity (blk-size=, default tmemd's) */
  blkSize?: string | undefined;
  /** tmem-blk: --blk-overflow-dir */
  blkOverflowDir?: string | undefined;
  args?: string[];
  log?: Sink | null;
  timeoutMs?: number;
  cwd?: string;
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export class Daemon {
  /** Start tmemd for one VM and wait for its vhost-user socket. */
  static async start(o: DaemonOptions): Promise<Daemon> {
    // run through its interpreter line, which names the inspector address (host/debug-guard.ts INSPECTOR_BLACKHOLE)
    const cmd = o.cmd || process.env.TMEMD || path.join(REPO_DIR, 'dist/host/tmemd.js');
    if (!o.maxmem) throw new Error('startDaemon: maxmem is required (the VM\'s maxmem; persistent limit = maxmem - RAM)');
    const blk = o.blkSocket ? `,blk-socket=${o.blkSocket}${o.blkSize ? `,blk-size=${o.blkSize}` : ''}` : '';
    const full = [`exec ${cmd}`, '--vm', q(`name=${o.name ?? 'vm0'},socket=${o.socket},maxmem=${o.maxmem}${blk}`), '--capacity', q(o.capacity ?? '1G')];
    if (o.blkOverflowDir) full.push('--blk-overflow-dir', q(o.blkOverflowDir));
    if (o.queues) full.push('--queues', String(o.queues));
    if (o.control) full.push('--control', q(o.control));
    full.push(...(o.args ?? []).map(q));
    const sockets = [o.socket, ...(o.blkSocket ? [o.blkSocket] : [])];
    for (const s of sockets) try { fs.unlinkSync(s); } catch { /* none */ }
    const d = new Daemon(full.join(' '), o.socket, o.cwd ?? REPO_DIR, o.log === undefined ? process.stderr : o.log);
    const timeoutMs = o.timeoutMs ?? 20000;
    const deadline = Date.now() + timeoutMs;
    while (!d.#exited) {
      if (sockets.every((s) => { try { return fs.statSync(s).isSocket(); } catch { return false; } })) break;
      if (Date.now() > deadline) { d.proc.kill('SIGKILL'); throw new Error(`tmemd did not create ${sockets.join(' and ')} within ${timeoutMs} ms`); }
      await sleep(50);
    }
    if (d.#exited) throw new Error(`tmemd exited (${JSON.stringify(d.#exited)}) before creating ${sockets.join(' and ')}: ${d.#text.slice(-2000)}`);
    return d;
  }

  readonly proc: ChildProcess;
  #text = '';
  #exited: Exit | null = null;
  readonly #exitP: Promise<Exit>;

  private constructor(readonly cmdline: string, readonly socket: string, cwd: string, log: Sink | null) {
    // own process group: a Ctrl-C on the terminal must not kill the daemon before QEMU
    this.proc = spawn('sh', ['-c', cmdline], { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const onOut = (b: Buffer): void => { const s = String(b); this.#text += s; log?.write(s); };
    this.proc.stdout!.on('data', onOut);
    this.proc.stderr!.on('data', onOut);
    this.#exitP = new Promise((r) => {
      this.proc.on('exit', (code, signal) => { this.#exited = { code, signal }; r(this.#exited); });
      this.proc.on('error', (e) => { if (!this.#exited) { this.#exited = { code: -1, signal: null, error: e.message }; r(this.#exited); } });
    });
  }

  /** Everything it printed so far. */
  output(): string { return this.#text; }
  /** Resolves when it has exited. */
  wait(): Promise<Exit> { return this.#exitP; }
  exited(): Exit | null { return this.#exited; }

  /** SIGTERM, SIGKILL after graceMs. A SIGSTOPped daemon is continued first. Stop QEMU before. */
  async stop(graceMs = 10000): Promise<Exit> {
    if (this.#exited) return this.#exited;
    try { if (this.proc.pid) process.kill(this.proc.pid, 'SIGCONT'); } catch { /* gone */ }
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const r = await this.#exitP;
    clearTimeout(t);
    return r;
  }

  /** SIGKILL at once, without waiting (process exit paths). */
  killSync(): void {
    if (!this.#exited && this.proc.pid) try { process.kill(this.proc.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

/** Daemon.start, under the name existing callers use. */
export const startDaemon = (o: DaemonOptions): Promise<Daemon> => Daemon.start(o);
