// The counters table the metrics are generated from: the daemon's one table
// (host/counter-table.ts, issue 10) once it is in main. Until then no
// counter metrics are generated; the daemon's facts of registry.ts are.
import type { MetricBlock } from './registry.js';

export const METRICS_TABLE: readonly MetricBlock[] = [];
