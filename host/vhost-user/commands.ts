// What travels between the main thread (client.ts) and the vring worker
// (worker.ts): one Command per validated vhost-user message or control call,
// as a plain object through a MessagePort (structured clone: bigints and
// nested records travel as they are, no hand-written codec), and one Reply
// per command, matched by `seq`.
//
// Why a MessagePort and not the former SharedArrayBuffer record ring: the
// main thread must never wait on the worker (it serves every VM's socket and
// the control socket), so replies arrive as messages on its event loop; and
// the worker, whose loops are synchronous, takes commands with
// receiveMessageOnPort without returning to its event loop. A counter in a
// small SharedArrayBuffer tells the worker's hot loop that commands wait (one
// Atomics.load per spin), and the wake eventfd interrupts its poll(2).
import type { MessagePort } from 'node:worker_threads';
import type { MemoryPolicy, MemoryRegion, VringAddr } from './device.js';

/** One command per vhost-user message effect, control op or worker service. */
export type Command =
  | { readonly op: 'ping' }
  | { readonly op: 'stop' }
  | {
      readonly op: 'open';
      readonly id: number;
      readonly vm: string;
      readonly kind: string;
      readonly numQueues: number;
      readonly policy: MemoryPolicy;
      readonly params: unknown;
    }
  | { readonly op: 'close'; readonly id: number }
  | { readonly op: 'setFeatures'; readonly id: number; readonly features: bigint }
  | { readonly op: 'setMemTable'; readonly id: number; readonly regions: readonly MemoryRegion[] }
  | { readonly op: 'setVringNum'; readonly id: number; readonly queue: number; readonly num: number }
  | { readonly op: 'setVringAddr'; readonly id: number; readonly queue: number; readonly addr: VringAddr }
  | { readonly op: 'setVringBase'; readonly id: number; readonly queue: number; readonly base: number }
  | { readonly op: 'getVringBase'; readonly id: number; readonly queue: number }
  | { readonly op: 'setVringKick' | 'setVringCall' | 'setVringErr'; readonly id: number; readonly queue: number; readonly fd: number }
  | { readonly op: 'setVringEnable'; readonly id: number; readonly queue: number; readonly enable: boolean }
  | { readonly op: 'reset'; readonly id: number }
  | { readonly op: 'control'; readonly id: number; readonly name: string; readonly args: unknown }
  | { readonly op: 'kindControl'; readonly kind: string; readonly name: string; readonly args: unknown }
  | { readonly op: 'stats' }
  /** Tests only (TMEMD_TEST_HOOKS=1 in the worker's environment, else refused): the worker stalls for `ms`. */
  | { readonly op: 'debugStall'; readonly ms: number };

export type CommandOp = Command['op'];

/** A command as posted: with its sequence number. */
export type Envelope = Command & { readonly seq: number };

export type Reply = { readonly seq: number; readonly ok: true; readonly value: unknown } | { readonly seq: number; readonly ok: false; readonly error: string };

/** Messages the worker posts on its parentPort: log lines, and 'ready' once its device modules are loaded. */
export type WorkerEvent = { readonly type: 'log'; readonly level: 'error' | 'warn' | 'info' | 'debug'; readonly msg: string } | { readonly type: 'ready' } | { readonly type: 'failed'; readonly msg: string };

// ---- the control block (Int32 words of a small SharedArrayBuffer) ----
/** Commands posted by the main thread (it increments after each postMessage). */
export const CTL_POSTED = 0;
/** WorkerState. */
export const CTL_STATE = 1;
export const CTL_WORDS = 8;
export const CTL_BYTES = CTL_WORDS * 4;

export const WorkerState = { Starting: 0, Running: 1, Stopped: 2, Crashed: 3 } as const;

/** A device kind the worker loads: its name and the URL of its DeviceWorkerModule. */
export interface DeviceModuleSpec {
  readonly kind: string;
  readonly module: string;
}

/** Options the worker receives as workerData. */
export interface WorkerConfig {
  readonly ctl: SharedArrayBuffer;
  readonly port: MessagePort;
  readonly mode: 'poll' | 'notify';
  readonly wakeFd: number;
  /** Poll mode: how long the worker spins on idle rings before it blocks in poll(2) (ms; Infinity = never). */
  readonly pollSpinMs: number;
  readonly devices: readonly DeviceModuleSpec[];
  /** Given to every device module (WorkerHost.config). */
  readonly deviceConfig: Readonly<Record<string, unknown>>;
}

/**
 * Test hooks of the worker, from this environment variable (tmemd refuses
 * it unless NODE_ENV=test): a comma list of `debug` (debugStall allowed) and
 * `stall:VM:OP:MS` (the worker stalls MS ms before each command OP of VM's
 * instances: a late worker, as seen by that VM's connection and everyone else).
 */
export const TEST_HOOKS_ENV = 'TMEMD_TEST_HOOKS';

export interface TestHooks {
  readonly debug: boolean;
  readonly stalls: readonly { readonly vm: string; readonly op: string; readonly ms: number }[];
}

/** Parses TEST_HOOKS_ENV; throws a one-line error on a malformed value. */
export function parseTestHooks(v: string | undefined): TestHooks {
  const out = { debug: false, stalls: [] as { vm: string; op: string; ms: number }[] };
  if (v === undefined || v === '') return out;
  for (const item of v.split(',')) {
    if (item === 'debug') out.debug = true;
    else {
      const m = /^stall:([^:]+):([A-Za-z]+):(\d{1,6})$/.exec(item);
      if (!m) throw new Error(`${TEST_HOOKS_ENV}: '${item}' is neither 'debug' nor 'stall:VM:OP:MS'`);
      out.stalls.push({ vm: m[1]!, op: m[2]!, ms: Number(m[3]) });
    }
  }
  return out;
}
