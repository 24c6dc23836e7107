#!/usr/bin/env node
// tmemctl: the operator's CLI for a running tmemd, over its control socket
// (JSON lines, host/control/server.ts). Human tables by default, the raw
// reply with --json.
import { argTokens, defaultControlPath } from './config.js';
import { requestDaemon } from './control/client.js';
import { sampleFromStats, TOP_HEADER, topLines, topRates, type TopSample } from './control/top.js';
import type { VmStatus } from './tmem/vm.js';
import { formatSize, parseSize, SizeError } from './units.js';

export const CTL_HELP = `Usage: tmemctl [--control PATH] [--json] COMMAND

Commands:
  guests                    the configured VMs: socket, connected, RAM, maxmem
  stats                     host and per-guest statistics
  top [INTERVAL [COUNT]]    per-guest rates every INTERVAL seconds (default 1), like
                            vmstat: puts, gets, hits, refusals, evictions, pages held
  freeze NAME               reject the VM's puts (TMEM_S_FROZEN); kept across reconnects
  thaw NAME                 accept its puts again
  flush NAME                drop every page the connected guest holds
  share-group NAME GROUP    which shared pools the VM may join ("none": its own only)
  set capacity=SIZE         host memory for tmem pages, live, up to the --capacity
                            tmemd started with; shrinking evicts ephemeral pages
                            (oldest first); persistent pages above it are kept and
                            new pages refused until below it, as Xen's tmem did
  set NAME maxmem=SIZE      the VM's maxmem, live: its persistent limit becomes
                            maxmem - RAM; pages above a lowered limit are kept,
                            new persistent pages refused until below it

Sizes: bytes or a whole number with K, M, G, T (binary): 512M, 2G.

Options:
  --control PATH            tmemd's control socket (default $TMEMD_CONTROL or /run/tmemd.sock)
  --json                    print the daemon's reply as JSON
  --timeout SECONDS         give up waiting for the daemon (default 10)
  -h, --help                this text

Exit status: 0 done, 1 the daemon refused or could not be reached, 2 bad usage.
`;

class UsageError extends Error {}

interface CtlArgs {
  control: string;
  json: boolean;
  timeoutMs: number;
  request: Record<string, unknown>;
  /** top: seconds between samples and how many lines of samples (Infinity: until interrupted). */
  top?: { intervalS: number; count: number };
}

/** tmemctl's options for node:util parseArgs. */
const CTL_OPTIONS = {
  control: { type: 'string' },
  json: { type: 'boolean' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parseCtlArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): CtlArgs | 'help' {
  let control = defaultControlPath(env);
  let json = false;
  let timeoutMs = 10_000;
  const rest: string[] = [];
  // -h/--help anywhere wins, as in tmemd
  if (argv.includes('-h') || argv.includes('--help')) return 'help';
  for (const { name, value } of argTokens(argv, CTL_OPTIONS, (msg) => new UsageError(msg), (a) => rest.push(a))) {
    if (name === 'json') json = true;
    else if (name === 'control') {
      control = value!;
      if (control === '') throw new UsageError('--control needs a path');
    } else if (name === 'timeout') {
      const s = value!;
      const v = Number(s);
      if (!/^\d+(\.\d+)?$/.test(s) || !(v > 0)) throw new UsageError(`--timeout: '${s}' is not a positive number of seconds`);
      timeoutMs = v * 1000;
    }
  }
  if (rest.length === 0) throw new UsageError('no command (guests, stats, top, freeze, thaw, flush, share-group, set)');
  const [cmd, ...args] = rest;
  if (cmd === 'top') {
    if (args.length > 2) throw new UsageError('top takes at most an interval and a count');
    const intervalS = args[0] === undefined ? 1 : Number(args[0]);
    if (!(/^\d+(\.\d+)?$/.test(args[0] ?? '1') && intervalS >= 0.1 && intervalS <= 3600)) throw new UsageError(`top: interval '${args[0]}' is not a number of seconds from 0.1 to 3600`);
    const count = args[1] === undefined ? Infinity : Number(args[1]);
    if (args[1] !== undefined && !(/^\d+$/.test(args[1]) && count >= 1)) throw new UsageError(`top: count '${args[1]}' is not a positive whole number`);
    return { control, json, timeoutMs, request: { cmd: 'stats' }, top: { intervalS, count } };
  }
  if (cmd === 'set') return { control, json, timeoutMs, request: parseSet(args) };
  const nargs: Record<string, number> = { guests: 0, stats: 0, freeze: 1, thaw: 1, flush: 1, 'share-group': 2 };
  if (!Object.hasOwn(nargs, cmd!)) throw new UsageError(`unknown command '${cmd}' (guests, stats, top, freeze, thaw, flush, share-group, set)`);
  if (args.length !== nargs[cmd!]) {
    const want = nargs[cmd!] === 0 ? 'no arguments' : nargs[cmd!] === 1 ? 'a VM name' : 'a VM name and a group';
    throw new UsageError(`${cmd} takes ${want}`);
  }
  const request: Record<string, unknown> = { cmd };
  if (args.length >= 1) request.name = args[0];
  if (cmd === 'share-group') request.group = args[1] === 'none' ? null : args[1];
  return { control, json, timeoutMs, request };
}

/** Keys of `set` and where they apply. */
const HOST_SET_KEYS = ['capacity'] as const;
const VM_SET_KEYS = ['maxmem'] as const;

/**
 * `set capacity=SIZE` or `set NAME maxmem=SIZE`: the request, sizes as byte
 * counts (decimal strings). Every argument is checked before anything is
 * sent, so a bad one changes nothing.
 */
export function parseSet(args: readonly string[]): Record<string, unknown> {
  const usage = 'set takes capacity=SIZE, or a VM name and maxmem=SIZE';
  if (args.length === 0) throw new UsageError(usage);
  const host = args[0]!.includes('=');
  const name = host ? null : args[0]!;
  const pairs = host ? args : args.slice(1);
  if (pairs.length === 0) throw new UsageError(`set ${name}: nothing to set (maxmem=SIZE)`);
  const request: Record<string, unknown> = { cmd: 'set' };
  if (name !== null) request.name = name;
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new UsageError(`set: '${p}' is not key=value (${usage})`);
    const k = p.slice(0, eq);
    const v = p.slice(eq + 1);
    const known: readonly string[] = host ? HOST_SET_KEYS : VM_SET_KEYS;
    if (!known.includes(k)) {
      if (host && (VM_SET_KEYS as readonly string[]).includes(k)) throw new UsageError(`set: ${k} is a VM's: tmemctl set NAME ${k}=SIZE`);
      if (!host && (HOST_SET_KEYS as readonly string[]).includes(k)) throw new UsageError(`set ${name}: ${k} is the host's, not a VM's: tmemctl set ${k}=SIZE`);
      throw new UsageError(`set${name !== null ? ` ${name}` : ''}: unknown key '${k}' (${host ? 'the host: capacity' : 'a VM: maxmem'})`);
    }
    if (Object.hasOwn(request, k)) throw new UsageError(`set: ${k} given twice`);
    try {
      request[k] = parseSize(v).toString();
    } catch (e) {
      if (e instanceof SizeError) throw new UsageError(`set: ${k}: ${e.message}`);
      throw e;
    }
  }
  return request;
}

// ---------------------------------------------------------------- rendering

/** A plain text table with left-aligned columns. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ');
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

/** A byte count from a reply (a decimal string or a number) for people; '-' when absent. */
export function bytes(s: unknown): string {
  if (s === null || s === undefined) return '-';
  try {
    return formatSize(BigInt(s as string | number));
  } catch {
    return String(s);
  }
}

/** A VM in the replies of guests, stats and the per-VM commands (stats adds its worker instance and store guest). */
interface GuestRow extends VmStatus {
  dataplane?: Record<string, unknown> | null;
  store?: Record<string, unknown> | null;
}

export function renderGuests(gs: GuestRow[]): string {
  if (gs.length === 0) return 'no VMs configured\n';
  return table(
    ['NAME', 'STATE', 'RAM', 'MAXMEM', 'GROUP', 'FROZEN', 'SINCE', 'SOCKET'],
    gs.map((g) => [g.name, g.connected ? 'connected' : 'waiting', g.connected ? bytes(g.ramBytes) : '-', bytes(g.maxmemBytes), g.shareGroup ?? '-', g.frozen ? 'yes' : 'no', g.connectedAt ?? '-', g.socket]),
  );
}

/** Flattens nested objects into dotted keys (arrays of objects are skipped: they get their own tables). */
function flatten(o: unknown, prefix = '', out: [string, string][] = []): [string, string][] {
  if (o === null || typeof o !== 'object') {
    out.push([prefix, String(o)]);
    return out;
  }
  if (Array.isArray(o)) {
    if (o.length > 0 && o.every((x) => x === null || typeof x !== 'object')) out.push([prefix, o.join(',')]);
    return out;
  }
  for (const [k, v] of Object.entries(o as Record<string, unknown>)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

/**
 * Xen's claim accounting of the host's tmem pages: free, freeable (ephemeral
 * pages and those of destroyed pools not yet reclaimed: the store gives them
 * up for a persistent page) and persistent (owned for good).
 */
export function renderClaims(store: unknown): string {
  const st = (store ?? {}) as Record<string, unknown>;
  const n = (k: string) => (typeof st[k] === 'number' ? (st[k] as number) : NaN);
  const cap = n('capacityPages');
  if (!Number.isFinite(cap)) return '';
  const eph = n('ephemeralPages');
  const pend = n('reclaimPendingPages');
  const per = n('persistentPages');
  const max = n('capacityMaxPages');
  const held = eph + pend + per;
  const pages = (x: number) => (Number.isFinite(x) ? `${x} (${formatSize(BigInt(x) * 4096n)})` : '-');
  let s = 'claims (4 KiB pages, as Xen counted them)\n';
  s += `  capacity   ${pages(cap)}${Number.isFinite(max) && max !== cap ? `, at most ${pages(max)} (tmemctl set capacity=)` : ''}\n`;
  s += `  free       ${pages(n('freePages'))}\n`;
  s += `  freeable   ${pages(eph + pend)}: ephemeral ${eph}, pending reclaim ${pend}\n`;
  s += `  persistent ${pages(per)}\n`;
  if (held > cap) s += `  over       ${held - cap} pages above the capacity: new pages are refused until guests release them\n`;
  return s;
}

export function renderStats(r: { host: Record<string, unknown>; guests: GuestRow[] }): string {
  let s = 'host\n';
  const kv = flatten(r.host);
  const kw = Math.max(...kv.map(([k]) => k.length), 4);
  for (const [k, v] of kv) s += `  ${k.padEnd(kw)}  ${/bytes$/i.test(k) ? `${v} (${bytes(v)})` : v}\n`;
  const claims = renderClaims(r.host.store);
  if (claims) s += `\n${claims}`;
  s += '\nguests\n';
  const num = (o: Record<string, unknown> | null | undefined, k: string) => (o && typeof o[k] === 'number' ? String(o[k]) : '-');
  const rows = r.guests.map((g) => {
    const d = g.dataplane ?? null;
    const st = g.store ?? null;
    const queues = d && Array.isArray(d.queues) ? (d.queues as Record<string, unknown>[]) : [];
    const running = queues.filter((q) => q.running).length;
    const completed = queues.reduce((a, q) => a + (typeof q.completed === 'number' ? q.completed : 0), 0);
    const bad = queues.reduce((a, q) => a + (typeof q.unanswerable === 'number' ? q.unanswerable : 0), 0);
    const pools = st && Array.isArray(st.pools) ? String(st.pools.length) : '-';
    return [
      g.name,
      g.connected ? 'connected' : 'waiting',
      g.connected ? bytes(g.ramBytes) : '-',
      bytes(g.maxmemBytes),
      g.frozen ? 'yes' : 'no',
      pools,
      st && typeof st.persistentPages === 'number' && typeof st.ephemeralPages === 'number' ? String(st.persistentPages + st.ephemeralPages) : '-',
      num(st, 'persistentPages'),
      num(st, 'persistentLimitPages'),
      num(st, 'ephemeralPages'),
      num(st, 'puts'),
      num(st, 'gets'),
      num(st, 'hits'),
      d ? `${running}/${queues.length}` : '-',
      d ? String(completed) : '-',
      d ? String(bad) : '-',
    ];
  });
  s += table(['NAME', 'STATE', 'RAM', 'MAXMEM', 'FROZEN', 'POOLS', 'OWNED', 'PERSIST', 'LIMIT', 'EPHEM', 'PUTS', 'GETS', 'HITS', 'QUEUES', 'REQUESTS', 'BAD'], rows)
    .split('\n')
    .map((l) => (l ? `  ${l}` : l))
    .join('\n');
  s += '  (OWNED = PERSIST + EPHEM, the pages of its private pools; in 4K pages; QUEUES running/offered; BAD: unanswerable chains)\n';
  return s;
}

export async function ctlMain(argv: readonly string[]): Promise<number> {
  let a: CtlArgs | 'help';
  try {
    a = parseCtlArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`tmemctl: ${e.message} (see tmemctl --help)\n`);
      return 2;
    }
    throw e;
  }
  if (a === 'help') {
    process.stdout.write(CTL_HELP);
    return 0;
  }
  if (a.top) return top(a, a.top);
  const reply = await ask(a, a.request);
  if (!reply) return 1;
  if (a.json) {
    process.stdout.write(JSON.stringify(reply.result, null, 2) + '\n');
    return 0;
  }
  switch (a.request.cmd) {
    case 'guests':
      process.stdout.write(renderGuests(reply.result as GuestRow[]));
      break;
    case 'stats':
      process.stdout.write(renderStats(reply.result as { host: Record<string, unknown>; guests: GuestRow[] }));
      break;
    case 'set':
      process.stdout.write(renderSet(reply.result as SetResult));
      break;
    default: {
      const g = reply.result as GuestRow;
      const what = a.request.cmd === 'share-group' ? `share group ${g.shareGroup ?? 'none'}` : a.request.cmd === 'flush' ? 'flushed' : g.frozen ? 'frozen' : 'thawed';
      process.stdout.write(`${g.name}: ${what}\n`);
    }
  }
  return 0;
}

/** What `set` answers (host/control/server.ts). */
export interface SetResult {
  /** capacity= */
  capacityBytes?: string;
  previousCapacityBytes?: string;
  capacityMaxBytes?: string;
  evictedPages?: number;
  reclaimedPages?: number;
  overPages?: number;
  /** maxmem= */
  name?: string;
  maxmemBytes?: string;
  previousMaxmemBytes?: string;
  connected?: boolean;
  persistentLimitPages?: number | null;
  persistentPages?: number | null;
}

export function renderSet(r: SetResult): string {
  if (r.capacityBytes !== undefined) {
    let s = `capacity ${bytes(r.capacityBytes)} (was ${bytes(r.previousCapacityBytes)}; at most ${bytes(r.capacityMaxBytes)})`;
    s += `: ${r.evictedPages ?? 0} ephemeral pages evicted, ${r.reclaimedPages ?? 0} pages of destroyed pools freed`;
    if (r.overPages) s += `; ${r.overPages} persistent pages above it are kept: new pages are refused until guests release them`;
    return s + '\n';
  }
  let s = `${r.name}: maxmem ${bytes(r.maxmemBytes)} (was ${bytes(r.previousMaxmemBytes)})`;
  if (!r.connected || typeof r.persistentLimitPages !== 'number') return `${s}; the guest's persistent limit follows when one connects\n`;
  s += `; persistent limit ${r.persistentLimitPages} pages, ${r.persistentPages ?? 0} held`;
  if ((r.persistentPages ?? 0) > r.persistentLimitPages) s += ': the pages above it are kept, new persistent pages refused until below it';
  return s + '\n';
}

/**
 * One request to the daemon. A failure (unreachable, or refused) is printed,
 * with the daemon's reply under --json, and gives null.
 */
async function ask(a: CtlArgs, request: Record<string, unknown>): Promise<{ result: unknown } | null> {
  let reply;
  try {
    reply = await requestDaemon(a.control, request, a.timeoutMs);
  } catch (e) {
    process.stderr.write(`tmemctl: ${(e as Error).message}\n`);
    return null;
  }
  if (!reply.ok) {
    if (a.json) process.stdout.write(JSON.stringify(reply) + '\n');
    process.stderr.write(`tmemctl: ${String(request.cmd)}: ${reply.error ?? 'failed'}\n`);
    return null;
  }
  return { result: reply.result };
}

/**
 * `top`: a `stats` request every interval; the first sample only sets the
 * base, so each printed line covers one whole interval. The header repeats
 * every 20 samples, as vmstat's does.
 */
async function top(a: CtlArgs, o: { intervalS: number; count: number }): Promise<number> {
  let prev: TopSample | null = null;
  for (let printed = 0; printed < o.count; ) {
    const reply = await ask(a, { cmd: 'stats' });
    if (!reply) return 1;
    const cur = sampleFromStats(reply.result, Date.now());
    if (a.json && prev) process.stdout.write(JSON.stringify({ at: new Date(cur.atMs).toISOString(), hostFreePages: cur.freePages, guests: topRates(prev, cur) }) + '\n');
    else if (prev) {
      if (printed % 20 === 0) process.stdout.write(TOP_HEADER + '\n');
      process.stdout.write(topLines(prev, cur, new Date(cur.atMs).toTimeString().slice(0, 8)).join('\n') + '\n');
    }
    if (prev) printed++;
    prev = cur;
    if (printed < o.count) await new Promise((r) => setTimeout(r, o.intervalS * 1000));
  }
  return 0;
}

ctlMain(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`tmemctl: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
