// The record layout shared by the main thread (client.ts, the producer) and
// the data-plane worker (worker.ts, the consumer).
//
// One SharedArrayBuffer holds:
//   - a control block (Int32): the command ring's head and tail, the reply
//     sequence number, the worker's state;
//   - a single-producer/single-consumer ring of CMD_SLOTS fixed-size command
//     records;
//   - one reply slot (the client waits for one reply at a time);
//   - the statistics counters (Float64, written by the worker only).
//
// The producer writes a record, then publishes it by storing head+1 with a
// seq-cst Atomics.store (the worker's Atomics.load of head then sees the
// whole record). The worker consumes it, writes the reply, stores the reply's
// sequence number last and Atomics.notify()s the client, which sleeps in
// Atomics.wait on that word.

/** Command opcodes: one per DataPlane method that reaches the worker. */
// (plain constants, not a const enum: tap's transpile-only loader cannot inline those)
export const Cmd = {
  AddGuest: 1,
  RemoveGuest: 2,
  SetFeatures: 3,
  SetMemTable: 4,
  SetVringNum: 5,
  SetVringAddr: 6,
  SetVringBase: 7,
  GetVringBase: 8,
  SetVringKick: 9,
  SetVringCall: 10,
  SetVringErr: 11,
  SetVringEnable: 12,
  SetFrozen: 13,
  FlushGuest: 14,
  SetShareGroup: 15,
  Stats: 16,
  Stop: 17,
  Ping: 18,
  /** Tests only: the worker stalls for args[0] ms (a hung worker, seen from the client). */
  DebugStall: 19,
} as const;
export type CmdCode = (typeof Cmd)[keyof typeof Cmd];
export const CMD_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(Cmd).map(([k, v]) => [v, k]));

// ---- control block (Int32 words) ----
export const CTL_CMD_HEAD = 0; // records published by the client
export const CTL_CMD_TAIL = 1; // records consumed by the worker
export const CTL_REPLY_SEQ = 2; // sequence number of the last reply written
export const CTL_STATE = 3; // WorkerState
export const CTL_WORDS = 16;

export const WorkerState = { Starting: 0, Running: 1, Stopped: 2, Crashed: 3 } as const;

// ---- command records ----
export const CMD_SLOTS = 4;
/** Bytes of one record: 256 header bytes, then a byte payload (JSON or raw). */
export const CMD_RECORD_BYTES = 64 * 1024;
export const REC_OFF_SEQ = 0; // Int32
export const REC_OFF_CMD = 4; // Int32
export const REC_OFF_GUEST = 8; // Int32
export const REC_OFF_QUEUE = 12; // Int32
export const REC_OFF_PAYLOAD_LEN = 16; // Int32
export const REC_OFF_ARGS = 32; // Float64[REC_MAX_ARGS]
export const REC_MAX_ARGS = 16;
export const REC_OFF_PAYLOAD = 256;
export const REC_MAX_PAYLOAD = CMD_RECORD_BYTES - REC_OFF_PAYLOAD;

// ---- reply slot ----
export const REPLY_BYTES = 256 * 1024;
export const REPLY_OFF_SEQ = 0; // Int32 (mirrors CTL_REPLY_SEQ for checking)
export const REPLY_OFF_ERROR = 4; // Int32: 0 ok, 1 error (payload = message)
export const REPLY_OFF_PAYLOAD_LEN = 8; // Int32
export const REPLY_OFF_VALUE = 16; // Float64
export const REPLY_OFF_PAYLOAD = 64;
export const REPLY_MAX_PAYLOAD = REPLY_BYTES - REPLY_OFF_PAYLOAD;

// ---- statistics counters (Float64, worker writes, anyone reads) ----
/** Names of the global counters, in slot order. */
export const COUNTER_NAMES = [
  'requests', // chains completed (answered or not)
  'unanswerable', // completed with used len 0
  'opNewPool',
  'opDestroyPool',
  'opPutPage',
  'opGetPage',
  'opFlushPage',
  'opFlushObject',
  'opInfo',
  'opReset',
  'opUnknown',
  'statusOk',
  'statusMiss',
  'statusInvalid',
  'statusNoSpace',
  'statusDenied',
  'statusFrozen',
  'statusUnsupported',
  'putsGathered', // PUTs whose data spanned several descriptors
  'getsScattered', // GETs whose data area spanned several descriptors
  'kicks', // kick eventfd wakeups consumed
  'calls', // call eventfd signals sent
  'callsSuppressed', // completions where the guest asked for no interrupt
  'brokenQueues', // queues marked broken (malformed ring)
  'loopIterations', // worker loop turns
  'pollSleeps', // poll mode: times the worker fell back to blocking poll(2)
  'reclaimSteps',
  'commands',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export const COUNTER_INDEX: Readonly<Record<CounterName, number>> = Object.fromEntries(
  COUNTER_NAMES.map((n, i) => [n, i]),
) as Record<CounterName, number>;
export const COUNTERS_BYTES = 64 * 8;

// ---- the whole buffer ----
export const OFF_CTL = 0;
export const OFF_CMDS = 256;
export const OFF_REPLY = OFF_CMDS + CMD_SLOTS * CMD_RECORD_BYTES;
export const OFF_COUNTERS = OFF_REPLY + REPLY_BYTES;
export const SHARED_BYTES = OFF_COUNTERS + COUNTERS_BYTES;

/** Views of the shared buffer, built the same way on both sides. */
export interface SharedViews {
  readonly sab: SharedArrayBuffer;
  readonly ctl: Int32Array;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  readonly counters: Float64Array;
}

export function sharedViews(sab: SharedArrayBuffer): SharedViews {
  if (sab.byteLength !== SHARED_BYTES) throw new Error(`data-plane shared buffer has ${sab.byteLength} bytes, want ${SHARED_BYTES}`);
  return {
    sab,
    ctl: new Int32Array(sab, OFF_CTL, CTL_WORDS),
    bytes: new Uint8Array(sab),
    dv: new DataView(sab),
    counters: new Float64Array(sab, OFF_COUNTERS, COUNTERS_BYTES / 8),
  };
}

export function recordOffset(slot: number): number {
  return OFF_CMDS + slot * CMD_RECORD_BYTES;
}

/** Options the worker receives as workerData. */
export interface WorkerConfig {
  readonly sab: SharedArrayBuffer;
  readonly mode: 'poll' | 'notify';
  readonly capacityPages: number;
  readonly maxPoolsPerGuest: number;
  readonly wakeFd: number;
  /** Poll mode: how long the worker spins on idle rings before it blocks in poll(2) (ms; Infinity = never). */
  readonly pollSpinMs: number;
  /** Pages freed per reclaimStep while idle. */
  readonly reclaimBudget: number;
}

/** Messages the worker posts to the main thread (log lines only; everything else goes through the buffer). */
export interface WorkerLogMessage {
  readonly type: 'log';
  readonly level: 'error' | 'warn' | 'info' | 'debug';
  readonly msg: string;
}

/** Encodes a value for a JSON payload (bigints as decimal strings). */
export function jsonEncode(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));
}
