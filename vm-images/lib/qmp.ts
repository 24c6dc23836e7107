// A QMP client: one Unix socket to QEMU, commands with ids, events.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { sleep } from './paths.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
/** A QMP return value or event: QEMU's JSON, shaped per command. */
export type QmpValue = any;

export interface QmpEvent { event: string; data?: QmpValue; timestamp?: { seconds: number; microseconds: number } }

/** Per-drive block statistics (QMP query-blockstats "stats"). */
export type BlockStats = Record<string, Record<string, number>>;

interface Pending { resolve(v: QmpValue): void; reject(e: Error): void; cmd: string }

export class QmpClient extends EventEmitter {
  /** Connect (retrying while QEMU creates the socket) and negotiate capabilities. */
  static async connect(sockPath: string, { timeoutMs = 15000 } = {}): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const c = new QmpClient();
        await c.#open(sockPath);
        await c.execute('qmp_capabilities');
        return c;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`QMP ${sockPath}: ${(e as Error).message}`);
        await sleep(100);
      }
    }
  }

  #sock: net.Socket | null = null;
  #buf = '';
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #greeted: (() => void) | null = null;
  readonly events: QmpEvent[] = [];
  closed = false;

  #open(sockPath: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(sockPath);
      let greeted = false;
      this.#greeted = () => { greeted = true; resolve(); };
      s.once('error', (e) => { if (!greeted) reject(e); });
      s.on('data', (d) => this.#onData(d));
      s.on('close', () => {
        this.closed = true;
        if (!greeted) reject(new Error('closed before greeting'));
        for (const p of this.#pending.values()) p.reject(new Error('QMP connection closed'));
        this.#pending.clear();
        this.emit('close');
      });
      s.on('error', () => {});
      this.#sock = s;
    });
  }

  #onData(d: Buffer): void {
    this.#buf += d;
    let i;
    while ((i = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, i).trim();
      this.#buf = this.#buf.slice(i + 1);
      if (!line) continue;
      let m: QmpValue;
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
  execute(cmd: string, args?: unknown): Promise<QmpValue> {
    if (this.closed || !this.#sock) return Promise.reject(new Error('QMP connection closed'));
    const id = this.#nextId++;
    const msg: Record<string, unknown> = { execute: cmd, id };
    if (args !== undefined) msg.arguments = args;
    const sock = this.#sock;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, cmd });
      sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** The blockstats of every drive, as { [qdev id or node]: stats }. */
  async blockstats(): Promise<BlockStats> {
    const r = (await this.execute('query-blockstats')) as QmpValue[];
    const o: BlockStats = {};
    for (const d of r) {
      const m = /^\/machine\/peripheral\/([^/]+)/.exec(d.qdev || '');
      o[m ? m[1]! : (d.device || d.qdev || d['node-name'])] = d.stats;
    }
    return o;
  }

  close(): void { this.#sock?.destroy(); this.closed = true; }
}
