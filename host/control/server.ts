// The operator's control socket: JSON lines over a Unix stream socket
// (no fds travel here, so Node's net module is fine). One request per line,
// one reply line per request, in order:
//
//   {"id": 1, "cmd": "guests"}                    -> {"id": 1, "ok": true, "result": [VmStatus...]}
//   {"cmd": "stats"}                              -> {"ok": true, "result": {"host": {...}, "guests": [...]}}
//   {"cmd": "freeze", "name": "web1"}             -> {"ok": true, "result": {...VmStatus}}
//   {"cmd": "thaw", "name": "web1"}
//   {"cmd": "flush", "name": "web1"}
//   {"cmd": "share-group", "name": "web1", "group": "g1" | null}
//   {"cmd": "set", "capacity": "4G" | "4294967296"}  -> {"ok": true, "result": {capacityBytes, evictedPages, ...}}
//   {"cmd": "set", "name": "web1", "maxmem": "2G"}    -> {"ok": true, "result": {...VmStatus, previousMaxmemBytes, persistentLimitPages, ...}}
//   anything wrong                                -> {"ok": false, "error": "one line"}
//
// Requests are answered in order per client. Those that need the vring
// worker (stats, freeze, flush, share-group) wait for its reply without
// blocking the event loop: other clients and every VM's socket are served
// meanwhile, and a worker that does not answer in time gives a one-line
// error.
//
// freeze/flush are the operator's: the socket file is 0600 from the moment it
// exists (native listenUnix sets the mode before bind; Node's listen(path)
// would create it with the umask's mode and leave a window before any chmod),
// and a client whose SO_PEERCRED uid is neither root nor the daemon's is
// dropped with a (rate-limited) log line, whatever the file's mode says.
import { lstatSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import * as native from '../../native/index.js';
import { type Logger, rateLimited } from '../log.js';
import { formatSize, parseSize, SizeError } from '../units.js';
import { removeStaleSocket } from '../vhost-user/listener.js';
import type { TmemVm } from '../tmem/vm.js';
import type { WorkerStats } from '../vhost-user/client.js';

/** Longest request line accepted. */
const MAX_LINE = 64 * 1024;

export interface ControlRequest {
  readonly id?: unknown;
  readonly cmd?: unknown;
  readonly name?: unknown;
  readonly group?: unknown;
}

export type ControlReply = { id?: unknown; ok: true; result: unknown } | { id?: unknown; ok: false; error: string };

export interface ControlContext {
  /** Every configured VM, connected or not. */
  readonly vms: readonly TmemVm[];
  /** The vring worker's statistics (counters, instances, the store). */
  readonly stats: () => Promise<WorkerStats>;
  /** Daemon facts for `stats`: capacity, mode, queues, etc. */
  readonly info: () => Record<string, unknown>;
  readonly log: Logger;
  /** A device kind's worker-wide control (set: the tmem kind's setCapacity, setMaxmem). */
  readonly kindControl?: (kind: string, op: string, args: unknown) => Promise<unknown>;
  /** The host capacity: the most set capacity= may give (--capacity at start) and the one in force. */
  readonly capacity?: { readonly maxBytes: bigint; currentBytes: bigint };
}

export class ControlError extends Error {}

/** Handles one request object; never rejects. */
export async function handleControlRequest(ctx: ControlContext, req: ControlRequest): Promise<ControlReply> {
  const id = req.id;
  const withId = (r: ControlReply): ControlReply => (id === undefined ? r : { id, ...r });
  try {
    return withId({ ok: true, result: await run(ctx, req) });
  } catch (e) {
    const msg = e instanceof ControlError ? e.message : `${(e as Error).name === 'DataPlaneError' ? 'data plane: ' : ''}${(e as Error).message}`;
    if (!(e instanceof ControlError)) ctx.log.warn(`control: ${String(req.cmd)} failed: ${msg}`);
    return withId({ ok: false, error: msg });
  }
}

function vmByName(ctx: ControlContext, req: ControlRequest): TmemVm {
  if (typeof req.name !== 'string' || req.name === '') throw new ControlError(`${String(req.cmd)} needs "name" (a VM name)`);
  const vm = ctx.vms.find((v) => v.name === req.name);
  if (!vm) throw new ControlError(`no VM named '${req.name}' (known: ${ctx.vms.map((v) => v.name).join(', ') || 'none'})`);
  return vm;
}

async function run(ctx: ControlContext, req: ControlRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'guests':
      return ctx.vms.map((v) => v.status());
    case 'stats': {
      const w = await ctx.stats();
      // The tmem kind's statistics hold the store; its guests are the VMs (one store guest per VM, by name).
      const store = (w.kinds.tmem?.store ?? null) as Record<string, unknown> | null;
      let storeHost: unknown = store;
      let storeGuests: Record<string, unknown>[] = [];
      if (store !== null) {
        const { guests: sg, ...rest } = store;
        storeHost = rest;
        if (Array.isArray(sg)) storeGuests = sg as Record<string, unknown>[];
      }
      return {
        host: { ...ctx.info(), mode: w.mode, worker: w.worker, counters: w.counters, ...(store === null ? {} : { store: storeHost }) },
        guests: ctx.vms.map((v) => {
          const st = v.status();
          const d = st.guestId === null ? undefined : w.instances.find((i) => i.id === st.guestId);
          // every device instance of this VM (tmem, blk, ...), one record per connection
          const devices = w.instances.filter((i) => i.vm === v.name);
          return { ...st, dataplane: d ?? null, devices, store: storeGuests.find((g) => g.name === v.name) ?? null };
        }),
      };
    }
    case 'freeze':
    case 'thaw': {
      const vm = vmByName(ctx, req);
      await vm.setFrozen(req.cmd === 'freeze');
      ctx.log.info(`control: vm ${vm.name} ${req.cmd === 'freeze' ? 'frozen (puts rejected)' : 'thawed'}`);
      return vm.status();
    }
    case 'flush': {
      const vm = vmByName(ctx, req);
      if (!(await vm.flush())) throw new ControlError(`vm ${vm.name} has no guest connected`);
      ctx.log.info(`control: vm ${vm.name} flushed`);
      return vm.status();
    }
    case 'share-group': {
      const vm = vmByName(ctx, req);
      const g = req.group;
      if (g !== null && (typeof g !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(g))) throw new ControlError('"group" must be a name (letters, digits, ., _, -) or null');
      await vm.setShareGroup(g);
      ctx.log.info(`control: vm ${vm.name} share group ${g ?? 'none'}`);
      return vm.status();
    }
    case 'set':
      return await setLimits(ctx, req as Record<string, unknown>);
    case undefined:
      throw new ControlError('missing "cmd" (guests, stats, freeze, thaw, flush, share-group, set)');
    default:
      throw new ControlError(`unknown command ${JSON.stringify(req.cmd)} (guests, stats, freeze, thaw, flush, share-group, set)`);
  }
}

/** A size in a request: a decimal string of bytes, a size text like "2G", or a whole number. */
function sizeArg(v: unknown, key: string): bigint {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v !== 'string') throw new ControlError(`${key}: must be a size (bytes, or like 2G)`);
  try {
    return parseSize(v);
  } catch (e) {
    if (e instanceof SizeError) throw new ControlError(`${key}: ${e.message}`);
    throw e;
  }
}

const PAGE = 4096n;

/**
 * `set`: the host's capacity or a VM's maxmem, live. Everything in the
 * request is checked before anything changes (one line for the first
 * problem, nothing applied); each change is logged.
 */
async function setLimits(ctx: ControlContext, req: Record<string, unknown>): Promise<unknown> {
  const keys = Object.keys(req).filter((k) => k !== 'id' && k !== 'cmd' && k !== 'name');
  const control = ctx.kindControl;
  if (!control) throw new ControlError('set: this daemon has no live limits');
  if (req.name !== undefined) {
    const vm = vmByName(ctx, req);
    for (const k of keys) if (k !== 'maxmem') throw new ControlError(`unknown key '${k}' for a VM (maxmem)`);
    if (!keys.includes('maxmem')) throw new ControlError(`set ${vm.name}: nothing to set (maxmem)`);
    const bytes = sizeArg(req.maxmem, 'maxmem');
    const prev = vm.maxmemBytes;
    // the worker first: a refusal leaves the VM as it was
    const r = (await control('tmem', 'setMaxmem', { vm: vm.name, bytes })) as { persistentLimitPages: number; persistentPages: number } | null;
    vm.setMaxmem(bytes);
    const held = r ? `persistent limit ${r.persistentLimitPages} pages, ${r.persistentPages} held${r.persistentPages > r.persistentLimitPages ? ': the pages above it are kept, new persistent pages refused until below it' : ''}` : 'no guest now: applies when one connects';
    ctx.log.info(`control: vm ${vm.name} maxmem ${formatSize(prev)} -> ${formatSize(bytes)} (${held})`);
    return { ...vm.status(), previousMaxmemBytes: prev.toString(), persistentLimitPages: r?.persistentLimitPages ?? null, persistentPages: r?.persistentPages ?? null };
  }
  for (const k of keys) if (k !== 'capacity') throw new ControlError(`unknown key '${k}' for the host (capacity; a VM's keys go with "name")`);
  if (!keys.includes('capacity')) throw new ControlError('set needs capacity=SIZE, or a VM name and maxmem=SIZE');
  const cap = ctx.capacity;
  if (!cap) throw new ControlError('set: this daemon has no live capacity');
  const bytes = sizeArg(req.capacity, 'capacity');
  if (bytes < PAGE) throw new ControlError(`capacity ${formatSize(bytes)} is less than one 4 KiB page`);
  if (bytes % PAGE !== 0n) throw new ControlError(`capacity ${formatSize(bytes)} (${bytes} bytes) is not a multiple of 4 KiB`);
  if (bytes > cap.maxBytes) {
    throw new ControlError(`capacity ${formatSize(bytes)} is more than tmemd was started with (--capacity ${formatSize(cap.maxBytes)}): the store's tables are sized at start; restart with a larger --capacity to go beyond it`);
  }
  const prev = cap.currentBytes;
  const r = (await control('tmem', 'setCapacity', { pages: Number(bytes / PAGE) })) as { evicted: number; reclaimed: number; overPages: number } | null;
  if (r === null) throw new ControlError(`capacity ${formatSize(bytes)}: refused by the store`);
  cap.currentBytes = bytes;
  ctx.log.info(
    `control: capacity ${formatSize(prev)} -> ${formatSize(bytes)} (${bytes / PAGE} pages): ${r.evicted} ephemeral pages evicted, ${r.reclaimed} pages of destroyed pools freed` +
      (r.overPages > 0 ? `; ${r.overPages} persistent pages above it are kept, new pages refused until below it` : ''),
  );
  return { capacityBytes: bytes.toString(), previousCapacityBytes: prev.toString(), capacityMaxBytes: cap.maxBytes.toString(), evictedPages: r.evicted, reclaimedPages: r.reclaimed, overPages: r.overPages };
}

/** bigints as decimal strings. */
function encode(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));
}

/** The OS calls of the control socket (native/ in the daemon; tests may replace them). */
export interface ControlSocketOs {
  /** A listening socket at path, mode 0600 from the start. */
  listen(path: string): number;
  /** The connected peer's uid (SO_PEERCRED) and pid. */
  peer(fd: number): { uid: number; pid: number };
  /** The uid besides root whose clients are served: the daemon's. */
  readonly ownUid: number;
}

const nativeOs: ControlSocketOs = {
  listen: (path) => native.listenUnix(path, 128, { mode: 0o600 }),
  peer: (fd) => native.peerCredentials(fd),
  ownUid: process.getuid?.() ?? 0,
};

export class ControlServer {
  private server: Server | null = null;
  private readonly clients = new Set<Socket>();
  private created: { dev: number; ino: number } | null = null;
  private readonly log: Logger;
  /** Clients dropped for their credentials (tests, stats). */
  refused = 0;

  constructor(
    readonly path: string,
    private readonly ctx: ControlContext,
    /** Whether a process listens on the path already (then it is not replaced); must not connect. */
    private readonly inUse?: (path: string) => boolean,
    private readonly os: ControlSocketOs = nativeOs,
  ) {
    this.log = rateLimited(ctx.log, 'control socket');
  }

  /** Listens on the path (a stale socket file is replaced; anything else is an error). */
  async start(): Promise<void> {
    removeStaleSocket(this.path, this.inUse);
    const fd = this.os.listen(this.path);
    try {
      const st = lstatSync(this.path);
      this.created = { dev: st.dev, ino: st.ino };
    } catch {
      /* ignore */
    }
    const server = createServer((s) => this.onClient(s));
    try {
      await new Promise<void>((res, rej) => {
        server.once('error', rej);
        server.listen({ fd }, () => {
          server.off('error', rej);
          res();
        });
      });
    } catch (e) {
      try {
        native.close(fd);
      } catch {
        /* libuv may have taken it */
      }
      this.removeFile();
      throw e;
    }
    server.on('error', (e) => this.ctx.log.error(`control socket ${this.path}: ${e.message}`));
    this.server = server;
  }

  /** Root and the daemon's own user only; anyone else is dropped before a byte is read. */
  private admitted(s: Socket): boolean {
    const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
    let who = 'a client whose credentials cannot be read';
    if (typeof fd === 'number' && fd >= 0) {
      try {
        const p = this.os.peer(fd);
        if (p.uid === 0 || p.uid === this.os.ownUid) return true;
        who = `pid ${p.pid} uid ${p.uid}`;
      } catch (e) {
        who += ` (${(e as Error).message})`;
      }
    }
    this.refused++;
    this.log.warn(`control socket ${this.path}: refused ${who}: only root${this.os.ownUid !== 0 ? ` and uid ${this.os.ownUid}` : ''} may use it`);
    return false;
  }

  private onClient(s: Socket): void {
    if (!this.admitted(s)) {
      s.destroy();
      return;
    }
    this.clients.add(s);
    let buf = '';
    // A client that sends requests and does not read the replies must not
    // make them pile up in the daemon: once the socket's buffer is full, no
    // further line is answered (and no more is read) until it drains.
    let blocked = false;
    // One request at a time per client, in order: a request waiting for the worker holds the next ones back.
    let running = false;
    const pump = async (): Promise<void> => {
      if (running) return;
      running = true;
      try {
        while (!blocked && !s.destroyed) {
          const nl = buf.indexOf('\n');
          if (nl < 0) break;
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === '') continue;
          let reply: ControlReply;
          try {
            const req = JSON.parse(line) as unknown;
            if (typeof req !== 'object' || req === null || Array.isArray(req)) reply = { ok: false, error: 'a request is a JSON object' };
            else reply = await handleControlRequest(this.ctx, req as ControlRequest);
          } catch (e) {
            reply = { ok: false, error: `not JSON: ${(e as Error).message}` };
          }
          if (s.destroyed) break;
          if (!s.write(encode(reply) + '\n')) {
            blocked = true;
            s.pause();
          }
        }
        if (buf.length > MAX_LINE && buf.indexOf('\n') < 0) {
          s.end(encode({ ok: false, error: `request line longer than ${MAX_LINE} bytes` }) + '\n');
          buf = '';
        }
      } finally {
        running = false;
      }
    };
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      buf += chunk;
      void pump();
    });
    s.on('drain', () => {
      blocked = false;
      s.resume();
      void pump();
    });
    s.on('error', () => s.destroy());
    s.on('close', () => this.clients.delete(s));
  }

  /** Stops listening, drops clients and removes the socket file it created. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const c of this.clients) c.destroy();
    this.clients.clear();
    if (server) await new Promise<void>((res) => server.close(() => res()));
    this.removeFile();
  }

  /** Removes the socket file if it is still the one we created. */
  private removeFile(): void {
    if (this.created) {
      try {
        const st = lstatSync(this.path);
        if (st.isSocket() && st.dev === this.created.dev && st.ino === this.created.ino) unlinkSync(this.path);
      } catch {
        /* already gone */
      }
      this.created = null;
    }
  }
}
