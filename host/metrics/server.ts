// The Prometheus endpoint: GET /metrics on --metrics-listen HOST:PORT (node:http
// on the main event loop). A scrape asks for one stats snapshot (the one
// `tmemctl stats` prints) and renders it; it never blocks the event loop,
// and a data plane that does not answer within the stats timeout gives a
// scrape with tmem_stats_up 0 and the process metrics instead of a hang, so
// Prometheus sees a late worker rather than a dead target. One stats request
// is in flight at a time: scrapes arriving meanwhile share it.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MetricsListen } from '../config.js';
import type { Logger } from '../log.js';
import type { LocalFacts, TmemMetrics } from './registry.js';

/** How long a scrape waits for the stats snapshot by default. */
export const DEFAULT_STATS_TIMEOUT_MS = 2000;

export interface MetricsServerOptions {
  readonly listen: MetricsListen;
  readonly metrics: TmemMetrics;
  /** One stats snapshot (the `tmemctl stats` reply's result). */
  readonly stats: () => Promise<unknown> | unknown;
  /** The main thread's facts (no worker round trip), read at each scrape after the snapshot. */
  readonly local?: () => LocalFacts;
  readonly log: Logger;
  readonly statsTimeoutMs?: number;
}

/** A failure to listen, in one line. */
export class MetricsListenError extends Error {}

/** "127.0.0.1:9850", "[::1]:9850". */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Why listen(2) failed, in words. */
function listenProblem(e: NodeJS.ErrnoException, where: string): string {
  switch (e.code) {
    case 'EADDRINUSE':
      return `${where} is in use (another process listens on it): give another port with --metrics-listen`;
    case 'EADDRNOTAVAIL':
      return `${where}: the address is not one of this host's (EADDRNOTAVAIL): give one of its addresses, e.g. 127.0.0.1`;
    case 'EACCES':
      return `${where}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `${where}: the host name does not resolve`;
    case 'EAFNOSUPPORT':
      return `${where}: this host has no ${where.startsWith('[') ? 'IPv6' : 'IPv4'} (EAFNOSUPPORT)`;
    default:
      return `${where}: ${e.code ?? ''} ${e.message}`.trim();
  }
}

export class MetricsServer {
  private server: Server | null = null;
  private inflight: Promise<unknown> | null = null;
  /** Scrapes answered, and those whose stats were late or failed (tests, logs). */
  scrapes = 0;
  statsLate = 0;
  private lastLateLog = 0;

  constructor(private readonly o: MetricsServerOptions) {}

  /** Listens; resolves with the address (the real port for port 0). Throws MetricsListenError in one line. */
  async start(): Promise<{ host: string; port: number; url: string }> {
    const { host, port } = this.o.listen;
    const where = formatHostPort(host, port);
    const server = createServer((req, res) => void this.onRequest(req, res));
    // a scraper that stalls must not hold a socket for ever; Prometheus scrapes well within these
    server.requestTimeout = 30_000;
    server.headersTimeout = 10_000;
    server.keepAliveTimeout = 65_000;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      server.close();
      throw new MetricsListenError(`cannot serve metrics on ${listenProblem(e as NodeJS.ErrnoException, where)}`);
    }
    server.on('error', (e) => this.o.log.error(`metrics ${where}: ${e.message}`));
    this.server = server;
    const a = server.address() as AddressInfo;
    return { host: a.address, port: a.port, url: `http://${formatHostPort(a.address, a.port)}/metrics` };
  }

  /** The stats snapshot, or null when it is not there within the timeout (or failed). */
  private async snapshot(timeoutMs: number): Promise<unknown> {
    if (this.inflight === null) {
      const p = (async () => this.o.stats())();
      this.inflight = p;
      const clear = () => {
        if (this.inflight === p) this.inflight = null;
      };
      p.then(clear, clear);
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => {
      timer = setTimeout(() => r('late'), timeoutMs);
    });
    try {
      const r = await Promise.race([this.inflight, late]);
      if (r === 'late') return this.late(`the data plane did not answer within ${timeoutMs} ms`);
      return r;
    } catch (e) {
      return this.late(`stats failed: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  private late(why: string): null {
    this.statsLate++;
    const now = Date.now();
    // a stalled worker is scraped every interval: one line a minute is enough
    if (now - this.lastLateLog > 60_000) {
      this.lastLateLog = now;
      this.o.log.warn(`metrics: scrape served without tmem metrics (tmem_stats_up 0): ${why}`);
    }
    return null;
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('only GET /metrics\n');
        return;
      }
      if (path === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end('<html><head><title>tmemd</title></head><body><h1>tmemd</h1><p><a href="/metrics">Metrics</a></p></body></html>\n');
        return;
      }
      if (path !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found: tmemd serves /metrics\n');
        return;
      }
      // stay inside Prometheus' own scrape timeout when it says one
      const hdr = Number(req.headers['x-prometheus-scrape-timeout-seconds']);
      const budget = Number.isFinite(hdr) && hdr > 0 ? Math.max(100, Math.min(this.o.statsTimeoutMs ?? DEFAULT_STATS_TIMEOUT_MS, hdr * 1000 - 250)) : (this.o.statsTimeoutMs ?? DEFAULT_STATS_TIMEOUT_MS);
      const snap = await this.snapshot(budget);
      const body = await this.o.metrics.render(snap, this.o.local?.() ?? null);
      this.scrapes++;
      res.writeHead(200, { 'Content-Type': this.o.metrics.contentType });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      this.o.log.error(`metrics: ${(e as Error).message}`);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`error: ${(e as Error).message}\n`);
    }
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
