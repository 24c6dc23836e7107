// The counters' one table shape. Each counter is declared once, next to what
// it counts (zswap style), as one CounterSpec in its module's block:
//
//   host/vhost-user/counters.ts  VRING_COUNTERS   (per connection: requests, kicks, calls, ...)
//   host/tmem/counters.ts        TMEM_COUNTERS    (per connection: ops and statuses of the tmem device)
//   host/tmem/store/accounting.ts STORE_COUNTERS  (per VM and per pool: puts, gets, pages, ...)
//   host/blk/counters.ts         BLK_COUNTERS     (per connection: tmem-blk's requests, statuses, where pages went)
//
// A block is an array: slot i of a Float64Array of counters holds the value
// of spec i. The worker keeps one array per block per instance, `tmemctl
// stats` prints them by name, and metrics (host/metrics/) export them from
// the same specs: nothing is copied by hand between three lists.
//
// host/counter-table.ts: COUNTER_TABLE, every block in one list, for those readers.

/** counter: only grows (a Prometheus counter, `_total`); gauge: goes up and down (pages held now). */
export type CounterKind = 'counter' | 'gauge';

export interface CounterSpec {
  /** camelCase, unique within its block; the key in `tmemctl stats` JSON. */
  readonly name: string;
  /** One line: what is counted and when. */
  readonly help: string;
  readonly kind: CounterKind;
  /** What one unit is: requests, pages, bytes, events, chains, ms ... (plural noun). */
  readonly unit: string;
}

export interface CounterBlock {
  /** Prefix for metrics and the JSON key that holds the block: 'vring', 'tmem', 'store', 'blk'. */
  readonly subsystem: string;
  /**
   * 'instance': one set per connection (VM, device kind), summed host-wide;
   * 'vm': per VM (the store: also per pool), with host totals;
   * 'host': one set for the daemon (the worker's loop).
   */
  readonly scope: 'instance' | 'vm' | 'host';
  readonly counters: readonly CounterSpec[];
}

/** Slot index of each counter of a block by name, for the code that counts. */
export function counterIndex<const T extends readonly CounterSpec[]>(specs: T): { readonly [K in T[number]['name']]: number } {
  const out: Record<string, number> = {};
  specs.forEach((s, i) => {
    if (s.name in out) throw new Error(`counter ${s.name} declared twice`);
    out[s.name] = i;
  });
  return out as { readonly [K in T[number]['name']]: number };
}

/** A block's values as a plain object (control path only). */
export function countersObject(specs: readonly CounterSpec[], values: Float64Array): Record<string, number> {
  const o: Record<string, number> = {};
  for (let i = 0; i < specs.length; i++) o[specs[i]!.name] = values[i] ?? 0;
  return o;
}

/**
 * Adds `values` into `into` (host-wide sums of per-instance blocks). Gauges
 * are summed too: the host-wide gauge is the sum over live instances.
 */
export function addCounters(into: Float64Array, values: Float64Array): void {
  for (let i = 0; i < into.length && i < values.length; i++) into[i] += values[i]!;
}
