// tmemd's Prometheus metrics, built at scrape time from the same stats
// snapshot `tmemctl stats` prints. The counter metrics are generated from the
// counters table (host/counter-table.ts: one CounterBlock per subsystem, each
// counter declared once next to what it counts), so a counter added there
// appears here without an edit. Only the daemon's facts that are not counters
// (capacity, free pages, limits, who is connected) are named in this file.
//
// Names follow Prometheus conventions: tmem_<subsystem>_<snake_name>, counters
// end in _total, byte counts in _bytes, times are converted to _seconds.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** One counter as the table declares it (host/counters.ts CounterSpec; structural, so the table is passed in). */
export interface MetricSpec {
  readonly name: string;
  readonly help: string;
  readonly kind: 'counter' | 'gauge';
  /** Plural noun: requests, pages, bytes, chains, ms ... */
  readonly unit: string;
}

/** One block of the table (host/counters.ts CounterBlock). */
export interface MetricBlock {
  readonly subsystem: string;
  /** instance: per connection (labels vm, device); vm: per VM (label vm); host: one set. */
  readonly scope: 'instance' | 'vm' | 'host';
  readonly counters: readonly MetricSpec[];
}

/** The prefix of every tmemd metric. */
export const METRIC_PREFIX = 'tmem_';

/**
 * What the main thread knows without asking the worker, rendered even when
 * the stats snapshot is late: whether the worker answers, and how many
 * commands wait for it.
 */
export interface LocalFacts {
  /** false while a command to the worker is overdue (a stalled worker) or the worker is gone. */
  readonly workerAlive: boolean;
  /** Commands posted to the worker and not answered yet. */
  readonly commandsInFlight?: number;
}

/** camelCase -> snake_case ("putsNoSpace" -> "puts_no_space"). */
export function snake(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2').toLowerCase();
}

/** Time units the table may use and their factor to seconds (Prometheus' base unit). */
const TO_SECONDS: Readonly<Record<string, number>> = { ns: 1e-9, us: 1e-6, ms: 1e-3, seconds: 1, s: 1 };

/** A table entry's metric name and the factor its values are multiplied by. */
export function metricName(block: MetricBlock, spec: MetricSpec): { name: string; scale: number } {
  let words = snake(spec.name).split('_');
  let scale = 1;
  let unit = '';
  const toS = TO_SECONDS[spec.unit];
  if (toS !== undefined) {
    // "waitMs" -> wait_seconds: the unit word moves to the end, in seconds
    words = words.filter((w) => !(w in TO_SECONDS));
    unit = 'seconds';
    scale = toS;
  } else if (spec.unit === 'bytes') {
    // "bytesMoved" -> moved_bytes
    words = words.filter((w) => w !== 'bytes');
    unit = 'bytes';
  }
  // the tmem device's own block: tmem_op_put_page_total, not tmem_tmem_op_...
  const sub = snake(block.subsystem);
  let base = `${METRIC_PREFIX}${`${sub}_` === METRIC_PREFIX ? '' : `${sub}_`}${[...words, ...(unit ? [unit] : [])].join('_')}`;
  if (spec.kind === 'counter') base = base.replace(/_total$/, '') + '_total';
  return { name: base, scale };
}

// ---- the snapshot: what `tmemctl stats --json` returns (host/control/server.ts)

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
/** A finite number from a reply field (numbers and decimal strings, as bigints travel); NaN otherwise. */
function num(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  return NaN;
}
const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v.filter(isObj) as Obj[]) : []);

/** A stats reply's VMs: name, and the objects the blocks read from. */
function vmsOf(snap: Obj): Obj[] {
  return arr(snap.guests).filter((g) => typeof g.name === 'string');
}

/** Values of one block in a VM ('vm' scope): guests[i][subsystem]. */
function vmBlock(vm: Obj, subsystem: string): Obj | null {
  const b = vm[subsystem];
  return isObj(b) ? b : null;
}

/** Values of one block per device of a VM ('instance' scope): guests[i].devices[j].counters[subsystem]. */
function deviceBlocks(vm: Obj, subsystem: string): { device: string; values: Obj }[] {
  const out: { device: string; values: Obj }[] = [];
  for (const d of arr(vm.devices)) {
    const c = isObj(d.counters) ? d.counters[subsystem] : undefined;
    if (isObj(c)) out.push({ device: typeof d.kind === 'string' ? d.kind : 'unknown', values: c });
  }
  return out;
}

/** Values of a host block: host.counters[subsystem], or host[subsystem] (the worker's own loop: host.worker). */
function hostBlock(snap: Obj, subsystem: string): Obj | null {
  const h = snap.host;
  if (!isObj(h)) return null;
  const c = isObj(h.counters) && isObj(h.counters[subsystem]) ? h.counters[subsystem] : h[subsystem];
  return isObj(c) ? c : null;
}

// ---- the registry

export interface TmemMetricsOptions {
  /** Process metrics (CPU, memory, event loop lag, GC) through prom-client's collectDefaultMetrics. */
  readonly processMetrics?: boolean;
}

/**
 * The registry of tmemd's metrics. `render(snapshot)` writes the text
 * exposition of one snapshot (null: the data plane did not answer, only
 * tmem_stats_up 0 and the process metrics). Renders run one at a time: the
 * collect() callbacks read the snapshot of the render in progress.
 */
export class TmemMetrics {
  readonly registry = new Registry();
  private snap: Obj | null = null;
  private local: LocalFacts | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** Names generated from the table (tests: no hand-written duplicate). */
  readonly generated: string[] = [];

  constructor(table: readonly MetricBlock[], opts: TmemMetricsOptions = {}) {
    const registers = [this.registry];
    const seen = new Set<string>();
    const unique = (name: string) => {
      if (seen.has(name)) throw new Error(`metric ${name} defined twice (counter table and host/metrics/registry.ts)`);
      seen.add(name);
      return name;
    };
    const self = this;

    // the counters table: one metric per entry
    for (const block of table) {
      for (const spec of block.counters) {
        const { name, scale } = metricName(block, spec);
        const help = `${spec.help} (${scale !== 1 ? 'seconds' : spec.unit}${block.scope === 'instance' ? '; per connection of the device, live connections' : ''})`;
        const labelNames = block.scope === 'host' ? [] : block.scope === 'vm' ? ['vm'] : ['vm', 'device'];
        const read = (o: Obj | null) => num(o?.[spec.name]) * scale;
        const fill = (set: (labels: Record<string, string>, v: number) => void) => {
          const s = self.snap;
          if (s === null) return;
          if (block.scope === 'host') {
            const v = read(hostBlock(s, block.subsystem));
            if (Number.isFinite(v)) set({}, v);
            return;
          }
          for (const vm of vmsOf(s)) {
            const name = vm.name as string;
            if (block.scope === 'vm') {
              const v = read(vmBlock(vm, block.subsystem));
              if (Number.isFinite(v)) set({ vm: name }, v);
            } else {
              for (const d of deviceBlocks(vm, block.subsystem)) {
                const v = read(d.values);
                if (Number.isFinite(v)) set({ vm: name, device: d.device }, v);
              }
            }
          }
        };
        unique(name);
        this.generated.push(name);
        if (spec.kind === 'counter') {
          new Counter({
            name, help, labelNames, registers,
            collect() {
              this.reset();
              fill((l, v) => this.inc(l, Math.max(0, v)));
            },
          });
        } else {
          new Gauge({
            name, help, labelNames, registers,
            collect() {
              this.reset();
              fill((l, v) => this.set(l, v));
            },
          });
        }
      }
    }

    // the daemon's facts that are not counters
    const gauge = (name: string, help: string, labelNames: string[], fill: (set: (labels: Record<string, string>, v: number) => void, snap: Obj) => void, whenDown?: number) =>
      new Gauge({
        name: unique(`${METRIC_PREFIX}${name}`), help, labelNames, registers,
        collect() {
          this.reset();
          const s = self.snap;
          if (s === null) {
            if (whenDown !== undefined) this.set({}, whenDown);
            return;
          }
          fill((l, v) => {
            if (Number.isFinite(v)) this.set(l, v);
          }, s);
        },
      });
    const hostStore = (s: Obj): Obj | null => (isObj(s.host) && isObj(s.host.store) ? s.host.store : null);
    gauge('stats_up', '1 if the data plane answered the stats request of this scrape, 0 if it was late or failed (then only process metrics follow)', [], (set) => set({}, 1), 0);
    // main-thread facts: there even when the worker does not answer
    const local = (name: string, help: string, pick: (l: LocalFacts) => number | undefined) =>
      new Gauge({
        name: unique(`${METRIC_PREFIX}${name}`), help, registers,
        collect() {
          this.reset();
          const v = self.local === null ? undefined : pick(self.local);
          if (v !== undefined && Number.isFinite(v)) this.set(v);
        },
      });
    local('worker_up', '1 while the vring worker answers its commands in time; 0 while one is overdue (every queue of every VM waits) or the worker is gone', (l) => (l.workerAlive ? 1 : 0));
    local('worker_commands_in_flight', 'commands posted to the vring worker and not answered yet', (l) => l.commandsInFlight);
    gauge('store_capacity_pages', 'host tmem capacity: 4 KiB pages for every guest, both kinds (tmemctl set capacity=)', [], (set, s) => set({}, num(hostStore(s)?.capacityPages)));
    gauge('store_free_pages', 'pages of the capacity not held by any guest nor waiting for reclaim (Xen: free)', [], (set, s) => set({}, num(hostStore(s)?.freePages)));
    gauge('store_freeable_pages', 'pages the store can free for a persistent put: ephemeral pages and pages pending reclaim (Xen: freeable)', [], (set, s) => {
      const st = hostStore(s);
      set({}, num(st?.ephemeralPages) + num(st?.reclaimPendingPages));
    });
    gauge('store_host_pages', 'pages held host-wide by kind (shared ephemeral pools included; pending: of destroyed pools, not yet reclaimed)', ['kind'], (set, s) => {
      const st = hostStore(s);
      set({ kind: 'ephemeral' }, num(st?.ephemeralPages));
      set({ kind: 'persistent' }, num(st?.persistentPages));
      set({ kind: 'pending' }, num(st?.reclaimPendingPages));
      const blk = num(st?.blkPages);
      if (Number.isFinite(blk)) set({ kind: 'blk' }, blk);
    });
    gauge('store_persistent_limit_pages', "a VM's persistent page limit: min(maxmem - max(RAM, ram=), tmem-max=) (absent while no guest is connected)", ['vm'], (set, s) => {
      for (const vm of vmsOf(s)) set({ vm: vm.name as string }, num(vmBlock(vm, 'store')?.persistentLimitPages));
    });
    gauge('vm_maxmem_bytes', "a VM's maxmem: its RAM plus the persistent pages it may keep (tmemctl set VM maxmem=)", ['vm'], (set, s) => {
      for (const vm of vmsOf(s)) set({ vm: vm.name as string }, num(vm.maxmemBytes));
    });
    gauge('vm_connected', '1 while a guest (front-end) is connected to the VM socket', ['vm'], (set, s) => {
      for (const vm of vmsOf(s)) set({ vm: vm.name as string }, vm.connected === true ? 1 : 0);
    });
    gauge('vm_frozen', '1 while the VM is frozen (tmemctl freeze: puts refused)', ['vm'], (set, s) => {
      for (const vm of vmsOf(s)) set({ vm: vm.name as string }, vm.frozen === true ? 1 : 0);
    });
    gauge('vm_queues', "a connected VM's queues by state: running, stopped (not started or not enabled), broken (stopped for a malformed ring)", ['vm', 'state'], (set, s) => {
      for (const vm of vmsOf(s)) {
        if (vm.connected !== true) continue;
        const n = { running: 0, stopped: 0, broken: 0 };
        for (const q of queuesOf(vm)) {
          if (typeof q.broken === 'string' && q.broken !== '') n.broken++;
          else if (q.running === true) n.running++;
          else n.stopped++;
        }
        for (const [state, v] of Object.entries(n)) set({ vm: vm.name as string, state }, v);
      }
    });
    gauge('guests_connected', 'VMs with a guest connected now', [], (set, s) => set({}, vmsOf(s).filter((v) => v.connected === true).length));
    gauge('vms', 'VMs configured', [], (set, s) => set({}, vmsOf(s).length));

    // process_* and nodejs_* as every Node exporter names them (dashboards expect those names)
    if (opts.processMetrics !== false) {
      collectDefaultMetrics({ register: this.registry });
      // prom-client's nodejs_active_{handles,requests,resources}_total are gauges named like
      // counters (promtool check metrics refuses them); the same counts stay by type without _total
      for (const m of this.registry.getMetricsAsArray()) {
        const t = (m as unknown as { type?: string }).type;
        if (m.name.endsWith('_total') && t !== 'counter' && !seen.has(m.name)) this.registry.removeSingleMetric(m.name);
      }
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text exposition of one snapshot (null: stats unavailable) and the main thread's facts. One render at a time. */
  render(snapshot: unknown, local: LocalFacts | null = null): Promise<string> {
    const run = async () => {
      this.snap = isObj(snapshot) ? snapshot : null;
      this.local = local;
      try {
        return await this.registry.metrics();
      } finally {
        this.snap = null;
        this.local = null;
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }
}

/**
 * A VM's queues from its stats: those of every device connection
 * (devices[].queues), or, in a reply without devices, dataplane.queues (the
 * tmem connection, which is also one of the devices).
 */
function queuesOf(vm: Obj): Obj[] {
  if (Array.isArray(vm.devices)) return arr(vm.devices).flatMap((d) => arr(d.queues));
  return arr(isObj(vm.dataplane) ? vm.dataplane.queues : undefined);
}
