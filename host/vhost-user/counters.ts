// The vring core's counters (host/counters.ts has the table shape). Per
// connection (instance) and, for the worker's loop, per daemon.
import { type CounterBlock, counterIndex } from '../counters.js';

export const VRING_COUNTERS = [
  { name: 'requests', help: 'descriptor chains completed (answered or not)', kind: 'counter', unit: 'chains' },
  { name: 'unanswerable', help: 'chains completed with used length 0 (refused by the walker or the device)', kind: 'counter', unit: 'chains' },
  { name: 'chainsRefused', help: 'chains the chain walker refused (bad descriptors, loops, out of guest RAM)', kind: 'counter', unit: 'chains' },
  { name: 'kicks', help: 'kick eventfd wake-ups consumed', kind: 'counter', unit: 'events' },
  { name: 'calls', help: 'call eventfd signals sent to the guest', kind: 'counter', unit: 'events' },
  { name: 'callsSuppressed', help: 'completions where the guest asked for no interrupt', kind: 'counter', unit: 'events' },
  { name: 'brokenQueues', help: 'queues stopped as broken (malformed ring or internal error)', kind: 'counter', unit: 'queues' },
  { name: 'workUnits', help: 'fairness budget: work units spent (descriptors walked + 256-byte units moved)', kind: 'counter', unit: 'units' },
  { name: 'penalizedChains', help: 'fairness budget: chains charged the penalty (refused or answered an error)', kind: 'counter', unit: 'chains' },
  { name: 'turnsCut', help: 'fairness budget: turns that ended with work left, or were sat out repaying debt', kind: 'counter', unit: 'turns' },
  { name: 'parkedChains', help: 'chains the device could not serve without waiting (its data on a disk): given back and offered again later, their queue waiting meanwhile', kind: 'counter', unit: 'chains' },
] as const;
export const VC = counterIndex(VRING_COUNTERS);

export const VRING_COUNTER_BLOCK: CounterBlock = { subsystem: 'vring', scope: 'instance', counters: VRING_COUNTERS };

/** The worker's own loop (one set per daemon). */
export const WORKER_COUNTERS = [
  { name: 'loopIterations', help: 'worker loop turns', kind: 'counter', unit: 'iterations' },
  { name: 'pollSleeps', help: 'poll mode: times the worker fell back to a blocking poll(2)', kind: 'counter', unit: 'events' },
  { name: 'idleSteps', help: 'idle hook calls (reclaim, prefault, write-back) while no ring had work', kind: 'counter', unit: 'steps' },
  { name: 'commands', help: 'commands from the main thread executed', kind: 'counter', unit: 'commands' },
] as const;
export const WC = counterIndex(WORKER_COUNTERS);

export const WORKER_COUNTER_BLOCK: CounterBlock = { subsystem: 'worker', scope: 'host', counters: WORKER_COUNTERS };
