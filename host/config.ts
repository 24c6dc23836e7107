// tmemd's command line and config file. Every bad flag or value becomes a
// ConfigError with a one-line message; tmemd prints it and exits with 2.
import { closeSync, fstatSync, openSync, readFileSync, readSync, constants as fsConstants } from 'node:fs';
import { totalmem } from 'node:os';
import { isLogLevel, type LogLevel } from './log.js';
import { MAX_CAPACITY_PAGES } from './tmem/store/store.js';

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
const U64_MAX = (1n << 64n) - 1n;

/** The operator socket unless --control says otherwise. */
export function defaultControlPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.TMEMD_CONTROL || '/run/tmemd.sock';
}

const UNITS: Readonly<Record<string, bigint>> = { '': 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n, P: 1n << 50n };

/** Bytes in the largest binary unit that leaves a number >= 1 (at most 2 decimals): 1G, 23.47G, 8T. */
export function formatSize(v: bigint): string {
  const units = ['P', 'T', 'G', 'M', 'K'];
  for (const u of units) {
    const d = UNITS[u]!;
    if (v >= d) return `${Number((v * 100n) / d) / 100}${u}`;
  }
  return `${v}`;
}

/** "512M", "2G", "1T", "2GiB", "4096" (bytes). Binary units. */
export function parseSize(s: string, what: string): bigint {
  const m = /^\s*(\d+)\s*([kKmMgGtTpP]?)(?:i?[bB])?\s*$/.exec(s);
  if (!m) throw new ConfigError(`${what}: '${s}' is not a size (use bytes or a number with K, M, G, T, e.g. 512M or 2G)`);
  const v = BigInt(m[1]!) * UNITS[m[2]!.toUpperCase()]!;
  if (v > U64_MAX) throw new ConfigError(`${what}: '${s}' is too large`);
  return v;
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
    if (typeof r.socket !== 'string' || r.socket === '') throw new ConfigError(`${w}: socket must be a non-empty path`);
    if (Buffer.byteLength(r.socket) > 107) throw new ConfigError(`${w}: socket path '${r.socket}' is longer than a Unix socket address allows (107 bytes)`);
    if (r.socket.includes('\0')) throw new ConfigError(`${w}: socket path contains a NUL byte`);
    socket = r.socket;
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
  return { name, socket, fd, maxmemBytes, shareGroup, limits, socketAccess };
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
      default:
        throw new ConfigError(`${what}: unknown key '${k}' (name, socket, fd, maxmem, share-group, max-ram, allow-unsealed, tmem-max, ram, socket-mode, socket-owner, socket-group)`);
    }
  }
  return vmFromRaw(r, '--vm');
}

/** Flags that take a value, and the one-word flags. */
const VALUE_FLAGS = new Set(['--vm', '--config', '--capacity', '--max-pools', '--queues-mode', '--poll-spin-ms', '--queues', '--control', '--log-level', '--socket-path', '--fd', '--name', '--maxmem', '--share-group', '--socket-mode', '--socket-owner', '--socket-group']);
const BOOL_FLAGS = new Set(['--help', '-h', '--print-capabilities', '--verbose', '-v', '--quiet', '-q']);

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
    if (!k) throw new ConfigError(`${what(k0)}: unknown key (vms, capacity, maxPools, queuesMode, pollSpinMs, queues, control, logLevel, socketMode, socketOwner, socketGroup)`);
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
              if (LIMIT_KEYS[key] === undefined && !['name', 'socket', 'path', 'fd', 'maxmem', 'shareGroup', 'share-group', 'socketMode', 'socket-mode', 'socketOwner', 'socket-owner', 'socketGroup', 'socket-group'].includes(key)) {
                throw new ConfigError(`${what(`vms[${i}]`)}: unknown key '${key}' (name, socket, fd, maxmem, shareGroup, maxRam, allowUnsealed, tmemMax, ram, socketMode, socketOwner, socketGroup)`);
              }
            }
            out.vms.push(
              vmFromRaw(
                { limits: rawLimitsOf(o), name: o.name, socket: o.socket ?? o.path, fd: o.fd, maxmem: o.maxmem, shareGroup: o.shareGroup ?? o['share-group'], socketMode: o.socketMode ?? o['socket-mode'], socketOwner: o.socketOwner ?? o['socket-owner'], socketGroup: o.socketGroup ?? o['socket-group'] },
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
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]!;
    let val: string | undefined;
    if (a.startsWith('--') && a.includes('=')) {
      val = a.slice(a.indexOf('=') + 1);
      a = a.slice(0, a.indexOf('='));
    }
    if (BOOL_FLAGS.has(a)) {
      if (val !== undefined) throw new ConfigError(`${a} takes no value`);
      if (a === '--verbose' || a === '-v') flags.logLevel = 'debug';
      if (a === '--quiet' || a === '-q') flags.logLevel = 'warn';
      continue;
    }
    if (!VALUE_FLAGS.has(a)) {
      if (a.startsWith('-')) throw new ConfigError(`unknown option ${a}`);
      throw new ConfigError(`unexpected argument '${a}' (VMs are given with --vm name=NAME,socket=PATH,maxmem=SIZE)`);
    }
    if (val === undefined) {
      if (i + 1 >= argv.length) throw new ConfigError(`${a} needs a value`);
      val = argv[++i]!;
    }
    switch (a) {
      case '--vm':
        flags.vms.push(parseVmSpec(val));
        break;
      case '--config':
        if (configPath !== null) throw new ConfigError('--config given twice');
        configPath = val;
        break;
      case '--capacity':
        flags.capacityBytes = parseCapacity(val, '--capacity');
        flags.capacityFrom = ['--capacity', val];
        break;
      case '--max-pools':
        flags.maxPools = parseIntIn(val, '--max-pools', 1, MAX_POOLS_LIMIT);
        break;
      case '--queues-mode':
        flags.queuesMode = parseQueuesMode(val, '--queues-mode');
        break;
      case '--poll-spin-ms':
        flags.pollSpinMs = parsePollSpinMs(val, '--poll-spin-ms');
        break;
      case '--queues':
        flags.queues = parseIntIn(val, '--queues', 1, MAX_QUEUES);
        break;
      case '--control':
        if (val === '') throw new ConfigError('--control needs a path (or "none")');
        flags.control = val === 'none' ? null : val;
        break;
      case '--log-level':
        flags.logLevel = parseLogLevel(val, '--log-level');
        break;
      case '--socket-mode':
        flags.socketMode = parseSocketMode(val, '--socket-mode');
        break;
      case '--socket-owner':
        flags.socketOwner = parseIdName(val, '--socket-owner');
        break;
      case '--socket-group':
        flags.socketGroup = parseIdName(val, '--socket-group');
        break;
      case '--socket-path':
        single = { ...single, socket: val };
        break;
      case '--fd':
        single = { ...single, fd: val };
        break;
      case '--name':
        single = { ...single, name: val };
        break;
      case '--maxmem':
        single = { ...single, maxmem: val };
        break;
      case '--share-group':
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
  --socket-path PATH, --fd N
                        QEMU's backend program conventions: one VM, named by
                        --name (default vm0), with --maxmem (default 0: no
                        persistent pages) and --share-group.
  --config FILE         JSON: {"vms": [{"name", "socket"|"fd", "maxmem",
                        "shareGroup", "socketMode", "socketOwner",
                        "socketGroup", "maxRam", "ram", "tmemMax",
                        "allowUnsealed"}], "capacity", "maxPools",
                        "queuesMode", "queues", "control", "logLevel",
                        "socketMode", "socketOwner", "socketGroup"}; flags
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
  --log-level LEVEL     error, warn, info or debug (default info);
                        -v = debug, -q = warn
  --print-capabilities  print the backend capabilities as JSON and exit
  -h, --help            this text

Sizes are bytes or a number with K, M, G, T (binary units): 512M, 2G, 1T.

QEMU side (10.2 or newer):
  -object memory-backend-memfd,id=mem,size=RAM,share=on
  -machine q35,memory-backend=mem
  -chardev socket,id=tmem0,path=PATH
  -device vhost-user-test-device-pci,chardev=tmem0,virtio-id=39,num_vqs=N,vq_size=256

Exit status: 0 after SIGTERM/SIGINT/SIGHUP, 1 on a startup failure, 2 on a
bad option.
`;
