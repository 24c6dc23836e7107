// The counters table the metrics are generated from: the daemon's one table
// (host/counter-table.ts), every block of every subsystem. A counter added
// there becomes a metric without an edit here.
export { COUNTER_TABLE as METRICS_TABLE } from '../counter-table.js';
