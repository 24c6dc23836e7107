// Helpers of the tests that run the built daemon (dist/host/tmemd.js) as a
// child process and talk to it over real sockets (test/vhost-daemon.ts,
// vhost-hostile-memory.ts, vhost-late-worker.ts, blk-socket.ts,
// listener-probe.ts, daemon-signals.ts): tmemd with its output collected, and
// a blocking vhost-user front-end socket that waits for replies with poll(2)
// (the daemon is another process, so a missing reply is a timeout, never a
// hung test). What each test sends stays in the test.
import { spawn, type ChildProcess } from 'node:child_process';
import * as native from '../../native/index.js';
import { decodeHeader, encodeMsg, VHOST_USER_HDR_SIZE, VHOST_USER_NEED_REPLY_MASK } from '../../host/vhost-user/messages.js';
import { TMEMD, UNTRACED } from '../loadgen/harness.js';

export { TMEMD };

/** Header flags of a front-end message: version 1. */
export const V1 = 0x1;
/** Version 1 with NEED_REPLY (REPLY_ACK). */
export const ACK = V1 | VHOST_USER_NEED_REPLY_MASK;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonOpts {
  /** the whole environment (default: this process's); tmemd runs without tap's tracing (UNTRACED) unless it sets NODE_OPTIONS */
  env?: NodeJS.ProcessEnv;
  /** node's own flags, before the script */
  nodeArgs?: string[];
  /** a command that execs node with the rest as its arguments (e.g. sh -c 'umask 000; exec "$@"' sh): the process is tmemd still */
  exec?: string[];
  /** stdio of the child; stdout and stderr are collected when piped (default: stdin ignored, both piped) */
  stdio?: (number | 'pipe' | 'ignore')[];
  /** waitFor's default time limit (default 20 s) */
  waitMs?: number;
  /** stop() sends SIGKILL after this long (default 10 s) */
  killAfterMs?: number;
}

/** A running tmemd; stderr (where it logs) and stdout collected as text. */
export class Daemon {
  readonly proc: ChildProcess;
  stderr = '';
  stdout = '';
  readonly exited: Promise<Exit>;
  private readonly waitMs: number;
  private readonly killAfterMs: number;

  constructor(args: string[], o: DaemonOpts = {}) {
    this.waitMs = o.waitMs ?? 20000;
    this.killAfterMs = o.killAfterMs ?? 10000;
    const untraced = o.env?.NODE_OPTIONS === undefined ? UNTRACED : [];
    const argv = [...(o.exec ?? []), ...untraced, process.execPath, ...(o.nodeArgs ?? []), TMEMD, ...args];
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: o.stdio ?? ['ignore', 'pipe', 'pipe'], env: o.env ?? process.env });
    this.proc.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.proc.stdout?.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.exited = new Promise((res) => this.proc.once('exit', (code, signal) => res({ code, signal })));
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Waits until stderr matches re; throws with stderr if the daemon exits or time runs out first. */
  async waitFor(re: RegExp, ms = this.waitMs): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.stderr)) {
      if (!this.alive) throw new Error(`tmemd exited (${this.proc.exitCode ?? this.proc.signalCode}) before ${re}:\n${this.stderr}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; stderr so far:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Sends sig (unless it has exited), SIGKILL if it is still there after killAfterMs; resolves with how it ended. */
  async stop(sig: NodeJS.Signals = 'SIGTERM'): Promise<Exit> {
    if (this.alive) this.proc.kill(sig);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), this.killAfterMs);
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }
}

/** Polls cond every 50 ms until it holds (true) or ms have passed (false). */
export async function until(cond: () => Promise<boolean> | boolean, ms = 10000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** One message from the daemon. */
export interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

/**
 * A front-end's connection to a vhost-user socket, blocking, a message at a
 * time: every read first polls for at most the timeout. Fds the daemon sends
 * with a reply are closed.
 */
export class VhostSocket {
  readonly fd: number;
  /** the default reply timeout of read() and what builds on it */
  readonly timeoutMs: number;

  constructor(path: string, timeoutMs = 5000) {
    this.fd = native.connectUnix(path);
    this.timeoutMs = timeoutMs;
  }

  send(req: number, payload?: Buffer, fds: number[] = [], flags = V1): void {
    const b = encodeMsg(req, flags, payload);
    let off = native.sendMsg(this.fd, b, fds);
    while (off < b.length) off += native.sendMsg(this.fd, b.subarray(off));
  }

  /** Whether a byte (or EOF) is there to read now, without waiting. */
  readable(): boolean {
    return native.pollFds(Int32Array.of(this.fd), 1, new Int16Array(1), 0) > 0;
  }

  /** Exactly n bytes, or 'eof' when the daemon closed before any byte; throws on a timeout or an EOF part-way. */
  read(n: number, timeoutMs = this.timeoutMs): Buffer | 'eof' {
    const out = Buffer.alloc(n);
    let have = 0;
    const end = Date.now() + timeoutMs;
    const fds: number[] = [];
    try {
      while (have < n) {
        const left = end - Date.now();
        if (left <= 0 || native.pollFds(Int32Array.of(this.fd), 1, new Int16Array(1), left) === 0) throw new Error(`no reply within ${timeoutMs} ms`);
        let r: number | null;
        try {
          r = native.recvMsg(this.fd, out.subarray(have), fds);
        } catch (e) {
          // The daemon closed with our bytes unread: the kernel resets instead of a clean EOF.
          if ((e as { code?: string }).code === 'ECONNRESET' && have === 0) return 'eof';
          throw e;
        }
        if (r === 0) {
          if (have === 0) return 'eof';
          throw new Error('EOF in the middle of a reply');
        }
        if (r !== null) have += r;
      }
      return out;
    } finally {
      for (const fd of fds) native.close(fd);
    }
  }

  /** The next message, whatever it answers, or 'eof' if the daemon closed the connection before it. */
  next(timeoutMs = this.timeoutMs): Reply | 'eof' {
    const h = this.read(VHOST_USER_HDR_SIZE, timeoutMs);
    if (h === 'eof') return 'eof';
    const hd = decodeHeader(h);
    const p = hd.size ? this.read(hd.size, timeoutMs) : Buffer.alloc(0);
    if (p === 'eof') throw new Error('EOF before the payload');
    return { request: hd.request, flags: hd.flags, payload: p };
  }

  /** The reply to req; throws if the daemon closed the connection instead or answered something else. */
  reply(req: number, timeoutMs = this.timeoutMs): Reply {
    const r = this.next(timeoutMs);
    if (r === 'eof') throw new Error(`the daemon closed the connection instead of answering request ${req}`);
    if (r.request !== req) throw new Error(`reply to ${r.request}, expected ${req}`);
    return r;
  }

  /** True once the daemon has closed the connection (false if a byte comes instead, or nothing within 5 s). */
  closedByPeer(): boolean {
    try {
      return this.read(1, 5000) === 'eof';
    } catch {
      return false;
    }
  }

  close(): void {
    native.close(this.fd);
  }
}
