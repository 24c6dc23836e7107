// `tmemctl top`: what the daemon's counters did over the last interval, one
// line per connected guest, in the manner of vmstat(8): rates from the
// difference of two `stats` replies, levels as they are now.

/** What one `stats` reply says about a guest, for rates. */
interface GuestSample {
  readonly connected: boolean;
  readonly puts: number;
  readonly gets: number;
  readonly hits: number;
  readonly putsNoSpace: number;
  readonly evictions: number;
  readonly persistentPages: number;
  readonly persistentLimitPages: number;
  readonly ephemeralPages: number;
}

export interface TopSample {
  readonly atMs: number;
  readonly freePages: number;
  readonly guests: ReadonlyMap<string, GuestSample>;
}

const num = (o: unknown, k: string): number => {
  const v = o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
};

/** The sample in a `stats` reply (the shape host/control/server.ts returns), taken at atMs. */
export function sampleFromStats(stats: unknown, atMs: number): TopSample {
  const r = (stats ?? {}) as { host?: { store?: unknown }; guests?: unknown };
  const guests = new Map<string, GuestSample>();
  for (const g of Array.isArray(r.guests) ? (r.guests as Record<string, unknown>[]) : []) {
    if (typeof g.name !== 'string') continue;
    const st = g.store;
    guests.set(g.name, {
      connected: g.connected === true,
      puts: num(st, 'puts'),
      gets: num(st, 'gets'),
      hits: num(st, 'hits'),
      putsNoSpace: num(st, 'putsNoSpace'),
      evictions: num(st, 'evictions'),
      persistentPages: num(st, 'persistentPages'),
      persistentLimitPages: num(st, 'persistentLimitPages'),
      ephemeralPages: num(st, 'ephemeralPages'),
    });
  }
  return { atMs, freePages: num(r.host?.store, 'freePages'), guests };
}

/** Title and width of each column (the first two left-aligned, the numbers right-aligned). */
const COLUMNS: readonly (readonly [string, number])[] = [
  ['TIME', 8], ['NAME', 12], ['PUT/s', 7], ['GET/s', 8], ['HIT/s', 8], ['HIT%', 5], ['NOSPACE/s', 10], ['EVICT/s', 8], ['PERSIST/LIMIT', 14], ['EPHEM', 10], ['HOST FREE', 11],
];

function row(cells: readonly string[]): string {
  return cells.map((c, i) => (i < 2 ? c.padEnd(COLUMNS[i]![1]) : c.padStart(COLUMNS[i]![1]))).join(' ');
}

export const TOP_HEADER = row(COLUMNS.map(([title]) => title));

/** One connected guest over one interval: rates per second, pages now. */
export interface GuestRates {
  readonly name: string;
  readonly putsPerS: number;
  readonly getsPerS: number;
  readonly hitsPerS: number;
  /** hits / gets over the interval, null when there were no gets */
  readonly hitPct: number | null;
  readonly noSpacePerS: number;
  readonly evictionsPerS: number;
  readonly persistentPages: number;
  readonly persistentLimitPages: number;
  readonly ephemeralPages: number;
}

/**
 * Each connected guest's rates since `prev` (a guest that was not connected
 * then, or reconnected with fewer counts, counts from zero) and its pages now.
 */
export function topRates(prev: TopSample, cur: TopSample): GuestRates[] {
  const dt = Math.max(1e-3, (cur.atMs - prev.atMs) / 1000);
  const out: GuestRates[] = [];
  for (const [name, g] of cur.guests) {
    if (!g.connected) continue;
    const p = prev.guests.get(name);
    // a new connection starts its counters again: rates from zero
    const base = p && p.connected && p.puts <= g.puts && p.gets <= g.gets ? p : null;
    const rate = (k: 'puts' | 'gets' | 'hits' | 'putsNoSpace' | 'evictions') => (g[k] - (base ? base[k] : 0)) / dt;
    const gets = rate('gets');
    const hits = rate('hits');
    out.push({
      name, putsPerS: rate('puts'), getsPerS: gets, hitsPerS: hits, hitPct: gets > 0 ? (hits / gets) * 100 : null,
      noSpacePerS: rate('putsNoSpace'), evictionsPerS: rate('evictions'),
      persistentPages: g.persistentPages, persistentLimitPages: g.persistentLimitPages, ephemeralPages: g.ephemeralPages,
    });
  }
  return out;
}

/** The lines for one interval, under TOP_HEADER; pages are 4 KiB. */
export function topLines(prev: TopSample, cur: TopSample, clock: string): string[] {
  const out = topRates(prev, cur).map((g) => row([
    clock,
    g.name.length > 12 ? `${g.name.slice(0, 11)}~` : g.name,
    g.putsPerS.toFixed(0),
    g.getsPerS.toFixed(0),
    g.hitsPerS.toFixed(0),
    g.hitPct === null ? '-' : g.hitPct.toFixed(0),
    g.noSpacePerS.toFixed(0),
    g.evictionsPerS.toFixed(0),
    `${g.persistentPages}/${g.persistentLimitPages}`,
    String(g.ephemeralPages),
    String(cur.freePages),
  ]));
  if (out.length === 0) out.push(`${clock.padEnd(COLUMNS[0]![1])} (no guest connected; host free ${cur.freePages} pages)`);
  return out;
}
