// tmemd's Prometheus endpoint, started by the daemon when --metrics-listen is
// given: the registry generated from the counters table, served by
// MetricsServer from the same stats snapshot `tmemctl stats` prints.
import type { MetricsListen } from '../config.js';
import type { Logger } from '../log.js';
import { type LocalFacts, TmemMetrics } from './registry.js';
import { MetricsServer } from './server.js';
import { METRICS_TABLE } from './table.js';

export { MetricsListenError, MetricsServer } from './server.js';
export { TmemMetrics } from './registry.js';

/** Listens on `listen` (throws a one-line MetricsListenError) and logs where. */
export async function startMetrics(listen: MetricsListen, stats: () => Promise<unknown> | unknown, log: Logger, local?: () => LocalFacts): Promise<MetricsServer> {
  const server = new MetricsServer({ listen, metrics: new TmemMetrics(METRICS_TABLE), stats, local, log });
  const a = await server.start();
  log.info(`metrics on ${a.url} (Prometheus text format)`);
  return server;
}
