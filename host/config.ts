// tmemd's command line and config file. Every bad flag or value becomes a
// ConfigError with a one-line message; tmemd prints it and exits with 2.
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync, constants as fsConstants } from 'node:fs';
import { isIP } from 'node:net';
import { totalmem } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { parseArgs as tokenizeArgs } from 'node:util';
import { isLogLevel, type LogLevel } from './log.js';
import { MAX_CAPACITY_PAGES } from './tmem/store/store.js';
import { formatSize, parseSize as parseSizeText, SizeError } from './units.js';

export { formatSize };

export class ConfigError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'ConfigError';
  }
}

export interface VmSpec {
  readonly name: string;
  /** Exactly one of socket and fd. */
  readonly socket: string | null;
  readonly fd: number | null;
  readonly maxmemBytes: bigint;
  readonly shareGroup: string | null;
  /** Guest RAM limits (vmLimitsFromRaw; docs/ABI-host-limits.md). */
  readonly limits: VmLimits;
  /** Who may connect to the socket tmemd creates at `socket` (null: the global default). */
  readonly socketAccess: SocketAccessSpec;
  /** tmem-blk (blk-socket=, blk-size=): the VM's vhost-user-blk device; null: none. */
  readonly blk: BlkSpec | null;
}

/** A VM's tmem-blk block device: its vhost-user-blk socket and capacity. */
export interface BlkSpec {
  /** blk-socket=PATH: the socket tmemd creates for QEMU's vhost-user-blk-pci. */
  readonly socket: string;
  /** blk-size=SIZE: the disk's capacity in bytes, a multiple of 4 KiB (default 8G). */
  readonly sizeBytes: bigint;
}

/** A tmem-blk disk's capacity when blk-size= is not given. */
export const DEFAULT_BLK_SIZE_BYTES = 8n << 30n;

/** --metrics-listen HOST:PORT: where the Prometheus endpoint listens. */
export interface MetricsListen {
  /** An IP address (IPv6 without brackets) or "localhost". */
  readonly host: string;
  /** 0: any free port (logged). */
  readonly port: number;
}

/** socket-mode, socket-owner, socket-group: null where not given. Names are resolved when the daemon starts. */
export interface SocketAccessSpec {
  readonly mode: number | null;
  readonly owner: string | null;
  readonly group: string | null;
}

/** A VM socket's mode when neither the VM nor --socket-mode says: the daemon's user only. */
export const DEFAULT_SOCKET_MODE = 0o600;

export type QueuesMode = 'poll' | 'notify';

export interface DaemonConfig {
  readonly vms: readonly VmSpec[];
  readonly capacityBytes: bigint;
  readonly maxPools: number;
  readonly queuesMode: QueuesMode;
  /** Poll mode: ms of spinning on idle rings before the worker sleeps with kicks enabled (Infinity: never). */
  readonly pollSpinMs: number;
  readonly queues: number;
  /** The operator socket; null: none. */
  readonly control: string | null;
  readonly logLevel: LogLevel;
  /** --socket-mode/--socket-owner/--socket-group: the VM sockets' defaults. */
  readonly socketDefaults: SocketAccessSpec;
  /** Lines tmemd logs as warnings at start (e.g. a capacity above the memory available now). */
  readonly warnings: readonly string[];
  /** --blk-overflow-dir: an existing folder for the tmem-blk disks' overflow files (DIR/<vm>.overflow); null: none. */
  readonly blkOverflowDir: string | null;
  /** --metrics-listen: the Prometheus endpoint; null: off (the default). */
  readonly metricsListen: MetricsListen | null;
}

export type ParsedArgs = { readonly kind: 'help' } | { readonly kind: 'capabilities' } | { readonly kind: 'run'; readonly config: DaemonConfig };

export const DEFAULTS = {
  capacityBytes: 1n << 30n,
  maxPools: 16,
  queuesMode: 'poll' as QueuesMode,
  pollSpinMs: 50,
  queues: 8,
  logLevel: 'info' as LogLevel,
};
/** Queue indices travel in one byte (SET_VRING_KICK/CALL/ERR). */
export const MAX_QUEUES = 256;
export const MAX_POOLS_LIMIT = 65535;
const PAGE = 4096n;

/** The operator socket unless --control says otherwise. */
export function defaultControlPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.TMEMD_CONTROL || '/run/tmemd.sock';
}

/** A size (host/units.ts) given by `what`: "512M", "2G", "2GiB", "4096" (bytes). */
export function parseSize(s: string, what: string): bigint {
  try {
    return parseSizeText(s);
  } catch (e) {
    if (e instanceof SizeError) throw new ConfigError(`${what}: ${e.message}`);
    throw e;
  }
}

/** A non-negative integer in [min, max]. */
export function parseIntIn(s: string, what: string, min: number, max: number): number {
  if (!/^\s*\d+\s*$/.test(s)) throw new ConfigError(`${what}: '${s}' is not a whole number`);
  const v = Number(s);
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new ConfigError(`${what}: ${s} is out of range (${min}..${max})`);
  return v;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function checkName(name: string, what: string): string {
  if (!NAME_RE.test(name)) throw new ConfigError(`${what}: '${name}' is not a valid name (letters, digits, '.', '_', '-'; at most 64; starting with a letter or digit)`);
  return name;
}

/** Splits QEMU-style `k=v,k=v` where `,,` is a literal comma. */
function splitOpts(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === ',') {
      if (s[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** A VM's RAM and tmem limits (max-ram, allow-unsealed, tmem-max, ram). */
export interface VmLimits {
  /** Most guest RAM a front-end may hand over; null in a parsed spec = the host's RAM (filled in by parseArgs). */
  readonly maxRamBytes: bigint | null;
  /** Accept guest RAM files not sealed against shrinking. */
  readonly allowUnsealed: boolean;
  /** Cap on the tmem pages of both kinds the VM may hold; null: none but --capacity. */
  readonly tmemMaxBytes: bigint | null;
  /** Declared RAM: the floor of RAM in the maxmem rule (0: none). */
  readonly ramBytes: bigint;
}

/** The VM keys of VmLimits, as written in --vm (kebab-case) and in the config file (camelCase too). */
const LIMIT_KEYS: Readonly<Record<string, keyof RawLimits>> = {
  'max-ram': 'maxRam',
  maxRam: 'maxRam',
  'allow-unsealed': 'allowUnsealed',
  allowUnsealed: 'allowUnsealed',
  'tmem-max': 'tmemMax',
  tmemMax: 'tmemMax',
  ram: 'ram',
};

interface RawLimits {
  maxRam?: unknown;
  allowUnsealed?: unknown;
  tmemMax?: unknown;
  ram?: unknown;
}

function rawSize(v: unknown, what: string): bigint {
  if (typeof v === 'number') return sizeFromNumber(v, what);
  if (typeof v === 'string') return parseSize(v, what);
  throw new ConfigError(`${what} must be a size`);
}

function rawOnOff(v: unknown, what: string): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'on' || v === 'yes' || v === 'true') return true;
  if (v === 'off' || v === 'no' || v === 'false') return false;
  throw new ConfigError(`${what}: '${String(v)}' is neither on nor off`);
}

/** The limit keys of a config file's VM object. */
function rawLimitsOf(o: Record<string, unknown>): RawLimits {
  const r: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (LIMIT_KEYS[k] !== undefined) r[LIMIT_KEYS[k]!] = v;
  return r as RawLimits;
}

function vmLimitsFromRaw(r: RawLimits, w: string): VmLimits {
  const maxRamBytes = r.maxRam === undefined ? null : rawSize(r.maxRam, `${w}: max-ram`);
  if (maxRamBytes !== null && maxRamBytes < PAGE) throw new ConfigError(`${w}: max-ram is less than one 4K page`);
  const tmemMaxBytes = r.tmemMax === undefined ? null : rawSize(r.tmemMax, `${w}: tmem-max`);
  const ramBytes = r.ram === undefined ? 0n : rawSize(r.ram, `${w}: ram`);
  if (maxRamBytes !== null && ramBytes > maxRamBytes) throw new ConfigError(`${w}: ram= (${ramBytes} bytes) is more than max-ram= (${maxRamBytes} bytes)`);
  return { maxRamBytes, allowUnsealed: r.allowUnsealed === undefined ? false : rawOnOff(r.allowUnsealed, `${w}: allow-unsealed`), tmemMaxBytes, ramBytes };
}

interface RawVm {
  limits?: RawLimits;
  blkSocket?: unknown;
  blkSize?: unknown;
  name?: unknown;
  socket?: unknown;
  fd?: unknown;
  maxmem?: unknown;
  shareGroup?: unknown;
  socketMode?: unknown;
  socketOwner?: unknown;
  socketGroup?: unknown;
}

/** "0660", "660" (octal permission bits, no set-id or sticky bits). */
export function parseSocketMode(v: unknown, what: string): number {
  const str = typeof v === 'number' ? v.toString(8) : v;
  if (typeof str !== 'string' || !/^0?[0-7]{3}$/.test(str)) throw new ConfigError(`${what}: '${String(v)}' is not an octal permission mode like 0660`);
  return parseInt(str, 8);
}

const ID_NAME_RE = /^(?:\d{1,10}|[A-Za-z_][A-Za-z0-9._-]{0,31}\$?)$/;

/** A user or group name, or a numeric id. */
export function parseIdName(v: unknown, what: string): string {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return String(v);
  if (typeof v !== 'string' || !ID_NAME_RE.test(v)) throw new ConfigError(`${what}: '${String(v)}' is not a user/group name or number`);
  return v;
}

function accessFromRaw(r: RawVm, what: string): SocketAccessSpec {
  return {
    mode: r.socketMode === undefined ? null : parseSocketMode(r.socketMode, `${what}: socket-mode`),
    owner: r.socketOwner === undefined ? null : parseIdName(r.socketOwner, `${what}: socket-owner`),
    group: r.socketGroup === undefined ? null : parseIdName(r.socketGroup, `${what}: socket-group`),
  };
}

function vmFromRaw(r: RawVm, what: string): VmSpec {
  if (r.name === undefined || r.name === '') throw new ConfigError(`${what}: name= is missing`);
  if (typeof r.name !== 'string') throw new ConfigError(`${what}: name must be a string`);
  const name = checkName(r.name, `${what}: name`);
  const w = `${what} (${name})`;
  const hasSocket = r.socket !== undefined;
  const hasFd = r.fd !== undefined;
  if (hasSocket === hasFd) throw new ConfigError(`${w}: give exactly one of socket=PATH or fd=N`);
  let socket: string | null = null;
  let fd: number | null = null;
  if (hasSocket) {
    socket = socketPath(r.socket, `${w}: socket`);
  } else {
    fd = typeof r.fd === 'number' ? parseIntIn(String(r.fd), `${w}: fd`, 0, 0x7fffffff) : typeof r.fd === 'string' ? parseIntIn(r.fd, `${w}: fd`, 0, 0x7fffffff) : NaN;
    if (Number.isNaN(fd)) throw new ConfigError(`${w}: fd must be a number`);
  }
  const socketAccess = accessFromRaw(r, w);
  if (fd !== null && (socketAccess.mode !== null || socketAccess.owner !== null || socketAccess.group !== null)) {
    throw new ConfigError(`${w}: socket-mode, socket-owner and socket-group go with socket=PATH (an inherited fd's socket file is not tmemd's)`);
  }
  if (r.maxmem === undefined) throw new ConfigError(`${w}: maxmem= is missing (the VM's RAM plus the persistent pages it may keep in tmem, e.g. maxmem=6G)`);
  const maxmemBytes = typeof r.maxmem === 'number' ? sizeFromNumber(r.maxmem, `${w}: maxmem`) : typeof r.maxmem === 'string' ? parseSize(r.maxmem, `${w}: maxmem`) : bad(`${w}: maxmem must be a size`);
  let shareGroup: string | null = null;
  if (r.shareGroup !== undefined && r.shareGroup !== null) {
    if (typeof r.shareGroup !== 'string') throw new ConfigError(`${w}: share-group must be a string`);
    shareGroup = checkName(r.shareGroup, `${w}: share-group`);
  }
  const limits = vmLimitsFromRaw(r.limits ?? {}, w);
  return { name, socket, fd, maxmemBytes, shareGroup, limits, socketAccess, blk: blkFromRaw(r, w) };
}

/** A Unix socket path tmemd creates: non-empty, fits sun_path, no NUL. */
function socketPath(v: unknown, what: string): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(`${what} must be a non-empty path`);
  if (Buffer.byteLength(v) > 107) throw new ConfigError(`${what} path '${v}' is longer than a Unix socket address allows (107 bytes)`);
  if (v.includes('\0')) throw new ConfigError(`${what} path contains a NUL byte`);
  return v;
}

/** blk-socket= and blk-size=: the VM's tmem-blk disk, or null without blk-socket=. */
function blkFromRaw(r: RawVm, w: string): BlkSpec | null {
  if (r.blkSocket === undefined || r.blkSocket === null) {
    if (r.blkSize !== undefined) throw new ConfigError(`${w}: blk-size= goes with blk-socket=PATH (the VM has no tmem-blk disk without it)`);
    return null;
  }
  const socket = socketPath(r.blkSocket, `${w}: blk-socket`);
  if (r.socket !== undefined && r.socket === socket) throw new ConfigError(`${w}: blk-socket is the VM's socket too; give it a path of its own`);
  const sizeBytes = r.blkSize === undefined ? DEFAULT_BLK_SIZE_BYTES : rawSize(r.blkSize, `${w}: blk-size`);
  if (sizeBytes === 0n) throw new ConfigError(`${w}: blk-size must be more than 0`);
  if (sizeBytes % PAGE !== 0n) throw new ConfigError(`${w}: blk-size ${formatSize(sizeBytes)} (${sizeBytes} bytes) is not a multiple of 4 KiB`);
  return { socket, sizeBytes };
}

function bad(msg: string): never {
  throw new ConfigError(msg);
}

function sizeFromNumber(n: number, what: string): bigint {
  if (!Number.isSafeInteger(n) || n < 0) throw new ConfigError(`${what}: ${n} is not a whole number of bytes`);
  return BigInt(n);
}

/** `name=NAME,socket=PATH|fd=N,maxmem=SIZE[,share-group=G]` */
export function parseVmSpec(s: string): VmSpec {
  const what = `--vm '${s}'`;
  const r: RawVm = {};
  const seen = new Set<string>();
  for (const part of splitOpts(s)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new ConfigError(`${what}: '${part}' is not key=value`);
    const k = part.slice(0, eq);
    const v = part.slice(eq + 1);
    if (seen.has(k)) throw new ConfigError(`${what}: ${k}= given twice`);
    seen.add(k);
    if (LIMIT_KEYS[k] !== undefined) {
      r.limits = { ...r.limits, [LIMIT_KEYS[k]!]: v };
      continue;
    }
    switch (k) {
      case 'name':
        r.name = v;
        break;
      case 'socket':
      case 'path':
        if (seen.has(k === 'socket' ? 'path' : 'socket')) throw new ConfigError(`${what}: socket= given twice`);
        r.socket = v;
        break;
      case 'fd':
        r.fd = v;
        break;
      case 'maxmem':
        r.maxmem = v;
        break;
      case 'share-group':
      case 'shareGroup':
        r.shareGroup = v;
        break;
      case 'socket-mode':
        r.socketMode = v;
        break;
      case 'socket-owner':
        r.socketOwner = v;
        break;
      case 'socket-group':
        r.socketGroup = v;
        break;
      case 'blk-socket':
        r.blkSocket = v;
        break;
      case 'blk-size':
        r.blkSize = v;
        break;
      default:
        throw new ConfigError(`${what}: unknown key '${k}' (name, socket, fd, maxmem, share-group, max-ram, allow-unsealed, tmem-max, ram, socket-mode, socket-owner, socket-group, blk-socket, blk-size)`);
    }
  }
  return vmFromRaw(r, '--vm');
}

/** tmemd's flags for node:util parseArgs: those that take a value are 'string'. */
const FLAG_OPTIONS = {
  vm: { type: 'string' },
  config: { type: 'string' },
  capacity: { type: 'string' },
  'max-pools': { type: 'string' },
  'queues-mode': { type: 'string' },
  'poll-spin-ms': { type: 'string' },
  queues: { type: 'string' },
  control: { type: 'string' },
  'log-level': { type: 'string' },
  'socket-path': { type: 'string' },
  fd: { type: 'string' },
  name: { type: 'string' },
  maxmem: { type: 'string' },
  'share-group': { type: 'string' },
  'socket-mode': { type: 'string' },
  'socket-owner': { type: 'string' },
  'socket-group': { type: 'string' },
  'blk-overflow-dir': { type: 'string' },
  'metrics-listen': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  'print-capabilities': { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  quiet: { type: 'boolean', short: 'q' },
} as const;
type Flag = keyof typeof FLAG_OPTIONS;

/** One option of a command line, as node:util parseArgs found it; every problem is a one-line error of our own. */
export interface ArgToken {
  readonly name: string;
  /** As written: "--vm", "-v". */
  readonly rawName: string;
  /** undefined: none given. */
  readonly value: string | undefined;
}

/**
 * Splits argv with node:util parseArgs (both `--flag value` and
 * `--flag=value`, short flag groups) and checks it against `options`: an
 * unknown option, a value given to a switch, a missing value and a stray
 * argument each throw `fail(message)`. Non-strict tokens so that the
 * messages are ours, in the order the user wrote the flags.
 */
export function argTokens(
  argv: readonly string[],
  options: Readonly<Record<string, { readonly type: 'string' | 'boolean'; readonly short?: string }>>,
  fail: (msg: string) => Error,
  positional?: (arg: string) => void,
): ArgToken[] {
  const { tokens } = tokenizeArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const out: ArgToken[] = [];
  let afterTerminator = false;
  for (const tok of tokens) {
    if (tok.kind === 'option-terminator') {
      afterTerminator = true;
      continue;
    }
    if (tok.kind === 'positional') {
      if (!positional) throw fail(`unexpected argument '${tok.value}'`);
      positional(tok.value);
      continue;
    }
    const opt = Object.hasOwn(options, tok.name) ? options[tok.name] : undefined;
    if (!opt || afterTerminator) throw fail(`unknown option ${tok.rawName}`);
    if (opt.type === 'boolean') {
      if (tok.value !== undefined) throw fail(`${tok.rawName} takes no value`);
    } else if (tok.value === undefined) throw fail(`${tok.rawName} needs a value`);
    out.push({ name: tok.name, rawName: tok.rawName, value: tok.value });
  }
  return out;
}

interface Partial {
  vms: VmSpec[];
  capacityBytes?: bigint;
  /** Where capacityBytes came from and as written ('--capacity', '64G'), for messages. */
  capacityFrom?: readonly [what: string, text: string];
  maxPools?: number;
  queuesMode?: QueuesMode;
  pollSpinMs?: number;
  queues?: number;
  control?: string | null;
  logLevel?: LogLevel;
  socketMode?: number;
  socketOwner?: string;
  socketGroup?: string;
  blkOverflowDir?: string;
  metricsListen?: MetricsListen;
}

/** --blk-overflow-dir: an existing folder (made absolute: the daemon may change directory later, systemd starts it in /). */
function parseOverflowDir(v: string, what: string): string {
  if (v === '') throw new ConfigError(`${what} needs a folder`);
  if (v.includes('\0')) throw new ConfigError(`${what}: the path contains a NUL byte`);
  const abs = resolvePath(v);
  let isDir: boolean;
  try {
    isDir = statSync(abs).isDirectory();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`${what}: ${abs} ${code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'cannot be reached (permission denied)' : code === 'ENOTDIR' ? 'has a part that is not a folder' : `cannot be read (${code ?? (e as Error).message})`}; give an existing folder`);
  }
  if (!isDir) throw new ConfigError(`${what}: ${abs} is not a folder`);
  return abs;
}

/** --metrics-listen HOST:PORT: an IPv4 address, [IPv6] or localhost, and a port (0: any free one). */
export function parseMetricsListen(v: string, what: string): MetricsListen {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
  if (!m) throw new ConfigError(`${what}: '${v}' is not HOST:PORT (e.g. 127.0.0.1:9850 or [::1]:9850)`);
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(`${what}: port ${m[3]} is out of range (0..65535)`);
  if (m[1] !== undefined ? isIP(host) !== 6 : !(isIP(host) === 4 || host === 'localhost')) {
    throw new ConfigError(`${what}: '${host}' is not an IP address (an IPv4 address, [IPv6 address] or localhost; e.g. 127.0.0.1:9850)`);
  }
  return { host, port };
}

function parseQueuesMode(s: string, what: string): QueuesMode {
  if (s !== 'poll' && s !== 'notify') throw new ConfigError(`${what}: '${s}' is neither poll nor notify`);
  return s;
}

/** Poll-mode idle spin: whole milliseconds up to a minute, or "inf" (spin forever). */
function parsePollSpinMs(s: string, what: string): number {
  if (s === 'inf') return Infinity;
  return parseIntIn(s, what, 0, 60_000);
}

function parseLogLevel(s: string, what: string): LogLevel {
  if (!isLogLevel(s)) throw new ConfigError(`${what}: '${s}' is not one of error, warn, info, debug`);
  return s;
}

function parseCapacity(s: string, what: string): bigint {
  const v = parseSize(s, what);
  return checkCapacity(v, what, s);
}

/** The largest capacity the store can hold: MAX_CAPACITY_PAGES 4K pages (just under 8T). */
export const MAX_CAPACITY_BYTES = BigInt(MAX_CAPACITY_PAGES) * PAGE;

function checkCapacity(v: bigint, what: string, s: string): bigint {
  if (v < PAGE) throw new ConfigError(`${what}: ${s} is less than one 4K page`);
  if (v / PAGE > BigInt(MAX_CAPACITY_PAGES)) {
    throw new ConfigError(`${what}: ${s} is too large: the store holds at most ${MAX_CAPACITY_PAGES} pages of 4K (${MAX_CAPACITY_BYTES} bytes, just under 8T)`);
  }
  return v;
}

/** A capacity (given as `s` by `what`) must fit in the host's RAM. */
function checkCapacityRam(v: bigint, what: string, s: string, hostMemBytes: bigint): void {
  if (v > hostMemBytes) {
    throw new ConfigError(`${what}: ${s} is more than this host's total RAM (${formatSize(hostMemBytes)}, ${hostMemBytes} bytes); give a smaller capacity`);
  }
}

/** Config file keys: camelCase or the flags' kebab-case. */
const FILE_KEYS: Readonly<Record<string, string>> = {
  vms: 'vms',
  vm: 'vms',
  capacity: 'capacity',
  maxPools: 'maxPools',
  'max-pools': 'maxPools',
  queuesMode: 'queuesMode',
  'queues-mode': 'queuesMode',
  pollSpinMs: 'pollSpinMs',
  'poll-spin-ms': 'pollSpinMs',
  queues: 'queues',
  control: 'control',
  logLevel: 'logLevel',
  'log-level': 'logLevel',
  socketMode: 'socketMode',
  'socket-mode': 'socketMode',
  socketOwner: 'socketOwner',
  'socket-owner': 'socketOwner',
  socketGroup: 'socketGroup',
  'socket-group': 'socketGroup',
  blkOverflowDir: 'blkOverflowDir',
  'blk-overflow-dir': 'blkOverflowDir',
  metricsListen: 'metricsListen',
  'metrics-listen': 'metricsListen',
};

/** Reads a JSON config file: `{"vms": [{"name", "socket"|"fd", "maxmem", "shareGroup"}|"name=..,socket=.."], "capacity", "maxPools", "queuesMode", "pollSpinMs", "queues", "control", "logLevel"}`. */
/** Largest config file read (a config is a few KiB; this keeps --config /dev/zero or a huge file from exhausting memory). */
export const MAX_CONFIG_BYTES = 1 << 20;

/**
 * A config file's text: a regular file of at most MAX_CONFIG_BYTES (opened
 * non-blocking, so a FIFO cannot hang us; at most that many bytes + 1 are
 * read even if the file grows meanwhile). Throws ConfigError.
 */
export function readConfigText(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (e) {
    throw new ConfigError(`--config ${path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ConfigError(`--config ${path}: not a regular file (${st.isDirectory() ? 'a folder' : st.isCharacterDevice() ? 'a character device' : st.isFIFO() ? 'a pipe' : st.isSocket() ? 'a socket' : 'not a plain file'})`);
    if (st.size > MAX_CONFIG_BYTES) throw new ConfigError(`--config ${path}: ${st.size} bytes, more than a config file may have (${MAX_CONFIG_BYTES})`);
    const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let n = 0;
    for (;;) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
      if (n > MAX_CONFIG_BYTES) throw new ConfigError(`--config ${path}: more than a config file may have (${MAX_CONFIG_BYTES} bytes)`);
    }
    return buf.toString('utf8', 0, n);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(`--config ${path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

/** MemAvailable of /proc/meminfo in bytes, or null where it cannot be read. */
export function memAvailableBytes(readText: (p: string) => string = (p) => readFileSync(p, 'utf8')): bigint | null {
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(readText('/proc/meminfo'));
    return m ? BigInt(m[1]!) * 1024n : null;
  } catch {
    return null;
  }
}

export function parseConfigFile(path: string, read: (p: string) => string = readConfigText): Partial {
  let text: string;
  try {
    text = read(path);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(`--config ${path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`--config ${path}: not valid JSON: ${(e as Error).message}`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new ConfigError(`--config ${path}: the top level must be a JSON object`);
  const out: Partial = { vms: [] };
  const what = (k: string) => `--config ${path}: ${k}`;
  for (const [k0, v] of Object.entries(j as Record<string, unknown>)) {
    const k = FILE_KEYS[k0];
    if (!k) throw new ConfigError(`${what(k0)}: unknown key (vms, capacity, maxPools, queuesMode, pollSpinMs, queues, control, logLevel, socketMode, socketOwner, socketGroup, blkOverflowDir, metricsListen)`);
    const str = (x: unknown): string => {
      if (typeof x === 'string') return x;
      if (typeof x === 'number') return String(x);
      throw new ConfigError(`${what(k0)}: expected a string or number, not ${JSON.stringify(x)}`);
    };
    switch (k) {
      case 'vms': {
        if (!Array.isArray(v)) throw new ConfigError(`${what(k0)}: must be an array`);
        v.forEach((e, i) => {
          if (typeof e === 'string') out.vms.push(parseVmSpec(e));
          else if (typeof e === 'object' && e !== null && !Array.isArray(e)) {
            const o = e as Record<string, unknown>;
            for (const key of Object.keys(o)) {
              if (LIMIT_KEYS[key] === undefined && !['name', 'socket', 'path', 'fd', 'maxmem', 'shareGroup', 'share-group', 'socketMode', 'socket-mode', 'socketOwner', 'socket-owner', 'socketGroup', 'socket-group', 'blkSocket', 'blk-socket', 'blkSize', 'blk-size'].includes(key)) {
                throw new ConfigError(`${what(`vms[${i}]`)}: unknown key '${key}' (name, socket, fd, maxmem, shareGroup, maxRam, allowUnsealed, tmemMax, ram, socketMode, socketOwner, socketGroup, blkSocket, blkSize)`);
              }
            }
            out.vms.push(
              vmFromRaw(
                {
                  limits: rawLimitsOf(o), name: o.name, socket: o.socket ?? o.path, fd: o.fd, maxmem: o.maxmem, shareGroup: o.shareGroup ?? o['share-group'],
                  socketMode: o.socketMode ?? o['socket-mode'], socketOwner: o.socketOwner ?? o['socket-owner'], socketGroup: o.socketGroup ?? o['socket-group'],
                  blkSocket: o.blkSocket ?? o['blk-socket'], blkSize: o.blkSize ?? o['blk-size'],
                },
                what(`vms[${i}]`),
              ),
            );
          } else throw new ConfigError(`${what(`vms[${i}]`)}: must be an object or a 'name=..,socket=..,maxmem=..' string`);
        });
        break;
      }
      case 'capacity':
        out.capacityBytes = typeof v === 'number' ? checkCapacity(sizeFromNumber(v, what(k0)), what(k0), String(v)) : parseCapacity(str(v), what(k0));
        out.capacityFrom = [what(k0), str(v)];
        break;
      case 'maxPools':
        out.maxPools = parseIntIn(str(v), what(k0), 1, MAX_POOLS_LIMIT);
        break;
      case 'queuesMode':
        out.queuesMode = parseQueuesMode(str(v), what(k0));
        break;
      case 'pollSpinMs':
        out.pollSpinMs = parsePollSpinMs(str(v), what(k0));
        break;
      case 'queues':
        out.queues = parseIntIn(str(v), what(k0), 1, MAX_QUEUES);
        break;
      case 'control':
        if (v === null) out.control = null;
        else out.control = str(v);
        break;
      case 'logLevel':
        out.logLevel = parseLogLevel(str(v), what(k0));
        break;
      case 'socketMode':
        out.socketMode = parseSocketMode(v, what(k0));
        break;
      case 'socketOwner':
        out.socketOwner = parseIdName(v, what(k0));
        break;
      case 'socketGroup':
        out.socketGroup = parseIdName(v, what(k0));
        break;
      case 'blkOverflowDir':
        if (typeof v !== 'string') throw new ConfigError(`${what(k0)}: must be a folder's path`);
        out.blkOverflowDir = parseOverflowDir(v, what(k0));
        break;
      case 'metricsListen':
        if (v === null) break;
        out.metricsListen = parseMetricsListen(str(v), what(k0));
        break;
    }
  }
  return out;
}

/**
 * Parses tmemd's arguments (without `node` and the script). A capacity given
 * (flag or file) must not exceed hostMemBytes, the host's total RAM.
 */
export function parseArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  read?: (p: string) => string,
  hostMemBytes: bigint = BigInt(totalmem()),
  hostAvailBytes: bigint | null = memAvailableBytes(),
): ParsedArgs {
  // Backend program conventions: --print-capabilities ignores everything else; --help likewise.
  if (argv.includes('--print-capabilities')) return { kind: 'capabilities' };
  if (argv.includes('--help') || argv.includes('-h')) return { kind: 'help' };

  const flags: Partial = { vms: [] };
  let configPath: string | null = null;
  let single: { socket?: string; fd?: string; name?: string; maxmem?: string; shareGroup?: string } = {};
  const tokens = argTokens(argv, FLAG_OPTIONS, (msg) => new ConfigError(/^unexpected argument/.test(msg) ? `${msg} (VMs are given with --vm name=NAME,socket=PATH,maxmem=SIZE)` : msg));
  for (const { name, value } of tokens) {
    const val = value ?? '';
    const a = `--${name}`;
    switch (name as Flag) {
      case 'help':
      case 'print-capabilities':
        break; // handled above
      case 'verbose':
        flags.logLevel = 'debug';
        break;
      case 'quiet':
        flags.logLevel = 'warn';
        break;
      case 'vm':
        flags.vms.push(parseVmSpec(val));
        break;
      case 'config':
        if (configPath !== null) throw new ConfigError('--config given twice');
        configPath = val;
        break;
      case 'capacity':
        flags.capacityBytes = parseCapacity(val, a);
        flags.capacityFrom = [a, val];
        break;
      case 'max-pools':
        flags.maxPools = parseIntIn(val, a, 1, MAX_POOLS_LIMIT);
        break;
      case 'queues-mode':
        flags.queuesMode = parseQueuesMode(val, a);
        break;
      case 'poll-spin-ms':
        flags.pollSpinMs = parsePollSpinMs(val, a);
        break;
      case 'queues':
        flags.queues = parseIntIn(val, a, 1, MAX_QUEUES);
        break;
      case 'control':
        if (val === '') throw new ConfigError('--control needs a path (or "none")');
        flags.control = val === 'none' ? null : val;
        break;
      case 'log-level':
        flags.logLevel = parseLogLevel(val, a);
        break;
      case 'socket-mode':
        flags.socketMode = parseSocketMode(val, a);
        break;
      case 'socket-owner':
        flags.socketOwner = parseIdName(val, a);
        break;
      case 'socket-group':
        flags.socketGroup = parseIdName(val, a);
        break;
      case 'blk-overflow-dir':
        flags.blkOverflowDir = parseOverflowDir(val, a);
        break;
      case 'metrics-listen':
        flags.metricsListen = parseMetricsListen(val, a);
        break;
      case 'socket-path':
        single = { ...single, socket: val };
        break;
      case 'fd':
        single = { ...single, fd: val };
        break;
      case 'name':
        single = { ...single, name: val };
        break;
      case 'maxmem':
        single = { ...single, maxmem: val };
        break;
      case 'share-group':
        single = { ...single, shareGroup: val };
        break;
    }
  }
  // QEMU's backend program conventions: --socket-path PATH or --fd N, one VM.
  if (single.socket !== undefined || single.fd !== undefined) {
    if (single.socket !== undefined && single.fd !== undefined) throw new ConfigError('--socket-path and --fd are mutually exclusive');
    flags.vms.push(vmFromRaw({ name: single.name ?? 'vm0', socket: single.socket, fd: single.fd, maxmem: single.maxmem ?? '0', shareGroup: single.shareGroup }, single.socket !== undefined ? '--socket-path' : '--fd'));
  } else if (single.name !== undefined || single.maxmem !== undefined || single.shareGroup !== undefined) {
    throw new ConfigError('--name, --maxmem and --share-group go with --socket-path or --fd (for several VMs use --vm)');
  }

  const file = configPath !== null ? parseConfigFile(configPath, read) : { vms: [] as VmSpec[] };
  // A VM's max-ram defaults to the host's RAM: a front-end claiming more is refused (docs/ABI-host-limits.md).
  const vms = [...file.vms, ...flags.vms].map((v) => {
    if (v.limits.maxRamBytes !== null) return v;
    if (v.limits.ramBytes > hostMemBytes) {
      throw new ConfigError(`VM ${v.name}: ram= (${v.limits.ramBytes} bytes) is more than this host's RAM (${formatSize(hostMemBytes)}); give max-ram= too if the VM really has that much`);
    }
    return { ...v, limits: { ...v.limits, maxRamBytes: hostMemBytes } };
  });
  if (vms.length === 0) throw new ConfigError('no VM configured: give --vm name=NAME,socket=PATH,maxmem=SIZE (repeatable), --socket-path PATH, or --config FILE');
  const names = new Set<string>();
  const sockets = new Set<string>();
  const fds = new Set<number>();
  for (const v of vms) {
    if (names.has(v.name)) throw new ConfigError(`VM name '${v.name}' is used twice`);
    names.add(v.name);
    if (v.socket !== null) {
      if (sockets.has(v.socket)) throw new ConfigError(`socket ${v.socket} is given to two VMs`);
      sockets.add(v.socket);
    }
    if (v.fd !== null) {
      if (fds.has(v.fd)) throw new ConfigError(`fd ${v.fd} is given to two VMs`);
      fds.add(v.fd);
    }
  }
  // tmem-blk sockets: one each, none a VM's tmem socket (checked after every tmem socket is known)
  for (const v of vms) {
    if (v.blk !== null) {
      if (sockets.has(v.blk.socket)) throw new ConfigError(`VM ${v.name}: blk-socket ${v.blk.socket} is also another socket of this daemon`);
      sockets.add(v.blk.socket);
    }
  }
  const pick = <K extends keyof Partial>(k: K) => (flags[k] !== undefined ? flags[k] : file[k]);
  const capacityBytes = pick('capacityBytes');
  const capacityFrom = flags.capacityBytes !== undefined ? flags.capacityFrom : file.capacityFrom;
  if (capacityBytes !== undefined && capacityFrom) checkCapacityRam(capacityBytes, capacityFrom[0], capacityFrom[1], hostMemBytes);
  const warnings: string[] = [];
  const cap = capacityBytes ?? DEFAULTS.capacityBytes;
  if (hostAvailBytes !== null && cap > hostAvailBytes) {
    const [what, text] = capacityFrom ?? ['the default capacity', formatSize(cap)];
    warnings.push(
      `${what}: ${text} is more than the memory available now (MemAvailable ${formatSize(hostAvailBytes)} of ${formatSize(hostMemBytes)}): once tmem fills up, the host may run out of memory (OOM killer); give a smaller capacity or free memory`,
    );
  }
  const control = pick('control');
  const config: DaemonConfig = {
    vms,
    capacityBytes: capacityBytes ?? DEFAULTS.capacityBytes,
    maxPools: pick('maxPools') ?? DEFAULTS.maxPools,
    queuesMode: pick('queuesMode') ?? DEFAULTS.queuesMode,
    pollSpinMs: pick('pollSpinMs') ?? DEFAULTS.pollSpinMs,
    queues: pick('queues') ?? DEFAULTS.queues,
    control: control === undefined ? defaultControlPath(env) : control,
    logLevel: pick('logLevel') ?? DEFAULTS.logLevel,
    socketDefaults: { mode: pick('socketMode') ?? null, owner: pick('socketOwner') ?? null, group: pick('socketGroup') ?? null },
    warnings,
    blkOverflowDir: pick('blkOverflowDir') ?? null,
    metricsListen: pick('metricsListen') ?? null,
  };
  if (config.control !== null && sockets.has(config.control)) throw new ConfigError(`--control ${config.control} is also a VM's socket`);
  return { kind: 'run', config };
}

export const HELP = `Usage: tmemd [options] --vm name=NAME,socket=PATH,maxmem=SIZE [--vm ...]
       tmemd [options] --socket-path PATH | --fd N [--name NAME] [--maxmem SIZE]
       tmemd --print-capabilities | --help

tmemd is the host daemon of transcendent memory for QEMU/KVM: a vhost-user
backend that keeps the clean page cache (cleancache) and swapped-out pages
(frontswap) of its guests in host memory. It runs in the foreground, logs to
stderr and stops on SIGTERM, SIGINT or SIGHUP (removing the sockets it
created).

VMs (one vhost-user socket each; one guest connection per socket at a time):
  --vm name=NAME,socket=PATH,maxmem=SIZE[,share-group=GROUP]
  --vm name=NAME,fd=N,maxmem=SIZE[,share-group=GROUP]
                        fd=N: an inherited listening socket (as libvirt passes
                        it). maxmem = the VM's RAM plus the persistent pages it
                        may keep here. share-group: VMs of one group may share
                        ephemeral pools. A ',' in a path is written ',,'.
                        socket-mode=0660,socket-owner=USER,socket-group=GROUP
                        (socket=PATH only): who may connect, as QEMU must
                        (e.g. socket-group=kvm when it runs as libvirt-qemu);
                        default: the --socket-* values below.
                        Limits (docs/ABI-host-limits.md):
                        max-ram=SIZE: most guest RAM the front-end may hand
                        over (default: the host's RAM); ram=SIZE: the VM's
                        declared RAM, the least RAM the maxmem rule assumes
                        (persistent limit = maxmem - max(ram, reported RAM));
                        tmem-max=SIZE: most tmem pages of both kinds the VM
                        may hold (default: no cap but --capacity);
                        allow-unsealed=on: accept guest RAM that is not a
                        sealed memfd (a tmpfs or hugetlbfs file; default off:
                        such a file could be truncated and crash tmemd).
                        tmem-blk: blk-socket=PATH: the VM's vhost-user-blk
                        socket (QEMU's vhost-user-blk-pci; absent: no tmem-blk
                        disk for this VM); blk-size=SIZE: the disk's capacity,
                        a multiple of 4K (default 8G).
  --socket-path PATH, --fd N
                        QEMU's backend program conventions: one VM, named by
                        --name (default vm0), with --maxmem (default 0: no
                        persistent pages) and --share-group.
  --config FILE         JSON: {"vms": [{"name", "socket"|"fd", "maxmem",
                        "shareGroup", "socketMode", "socketOwner",
                        "socketGroup", "maxRam", "ram", "tmemMax",
                        "allowUnsealed", "blk-socket", "blk-size"}],
                        "capacity", "maxPools", "queuesMode", "queues",
                        "control", "logLevel", "socketMode", "socketOwner",
                        "socketGroup", "blk-overflow-dir", "metrics-listen"};
                        keys in camelCase or as the flags spell them. Flags
                        override it. A regular file of at most 1 MiB.

Options:
  --capacity SIZE       host memory for tmem pages, all guests (default 1G;
                        at most the host's RAM, and under 8T; a warning when
                        above the memory available now)
  --max-pools N         pools per guest (default ${DEFAULTS.maxPools})
  --queues N            request queues offered to each guest, 1..${MAX_QUEUES}
                        (default ${DEFAULTS.queues}; QEMU's num_vqs may be at most this)
  --queues-mode MODE    poll: a worker thread busy-polls the rings (guests
                        need no kick); notify: it waits for kicks (default ${DEFAULTS.queuesMode})
  --poll-spin-ms MS     poll mode: after MS ms with no request the worker
                        re-enables kicks and sleeps until one comes (0..60000
                        or inf = spin forever; default ${DEFAULTS.pollSpinMs}). Less spinning
                        costs a kick after each pause, more costs host CPU
  --control PATH        the operator socket for tmemctl (default
                        $TMEMD_CONTROL or /run/tmemd.sock; "none": no socket)
  --socket-mode MODE     VM sockets' permission bits, octal (default 0600:
                        only tmemd's user may connect); never widened by
                        the umask, set before anyone can connect
  --socket-owner USER, --socket-group GROUP
                        VM sockets' owner and group (name or number; default
                        tmemd's). The control socket is always 0600, and
                        only root and tmemd's user are served on it
  --blk-overflow-dir DIR
                        an existing folder where tmem-blk disks keep what does
                        not fit in --capacity: DIR/<vm>.overflow, sparse, 0600
  --metrics-listen HOST:PORT
                        serve Prometheus metrics at http://HOST:PORT/metrics
                        (default: off). HOST is an IP address or localhost;
                        keep it on loopback (127.0.0.1:9850) unless a firewall
                        guards it: the metrics name every VM. Port 0: any free
                        port, logged
  --log-level LEVEL     error, warn, info or debug (default info);
                        -v = debug, -q = warn
  --print-capabilities  print the backend capabilities as JSON and exit
  -h, --help            this text

Sizes are bytes or a whole number with K, M, G, T (binary units, an optional
B or iB): 512M, 2G, 2GiB, 1T.

QEMU side (10.2 or newer):
  -object memory-backend-memfd,id=mem,size=RAM,share=on
  -machine q35,memory-backend=mem
  -chardev socket,id=tmem0,path=PATH
  -device vhost-user-test-device-pci,chardev=tmem0,virtio-id=39,num_vqs=N,vq_size=256

Exit status: 0 after SIGTERM/SIGINT/SIGHUP, 1 on a startup failure, 2 on a
bad option.
`;
