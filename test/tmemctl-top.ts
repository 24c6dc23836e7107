// tmemctl top (host/control/top.ts): rates over one interval from two
// `stats` replies, a reconnected guest counted from zero, idle guests shown,
// waiting VMs left out.
import t from 'tap';
import { sampleFromStats, TOP_HEADER, topLines, topRates } from '../host/control/top.js';

const stats = (guests: Record<string, unknown>[], freePages = 1000) => ({ host: { store: { freePages } }, guests });
const guest = (name: string, connected: boolean, store: Record<string, number> | null) => ({ name, connected, store });
const counts = (puts: number, gets: number, hits: number, extra: Record<string, number> = {}) => ({
  puts, gets, hits, putsNoSpace: 0, evictions: 0, persistentPages: 10, persistentLimitPages: 100, ephemeralPages: 5, ...extra,
});

t.test('rates are the counters\' differences over the interval; levels are as they are now', async (t) => {
  const a = sampleFromStats(stats([guest('vm0', true, counts(100, 50, 20))]), 10_000);
  const b = sampleFromStats(stats([guest('vm0', true, counts(300, 150, 95, { putsNoSpace: 4, evictions: 6, persistentPages: 40 }))], 900), 12_000);
  const [r] = topRates(a, b);
  t.same(r, {
    name: 'vm0', putsPerS: 100, getsPerS: 50, hitsPerS: 37.5, hitPct: 75, noSpacePerS: 2, evictionsPerS: 3,
    persistentPages: 40, persistentLimitPages: 100, ephemeralPages: 5,
  });
  const [line] = topLines(a, b, '12:00:02');
  t.match(line, /^12:00:02\s+vm0\s+100\s+50\s+38\s+75\s+2\s+3\s+40\/100\s+5\s+900$/);
  t.equal(line!.length, TOP_HEADER.length, 'the line lines up with the header');
});

t.test('a guest that reconnected (counters lower than before) or just connected counts from zero', async (t) => {
  const a = sampleFromStats(stats([guest('vm0', true, counts(1000, 500, 100)), guest('vm1', false, null)]), 0);
  const b = sampleFromStats(stats([guest('vm0', true, counts(10, 4, 2)), guest('vm1', true, counts(30, 0, 0))]), 1000);
  const r = topRates(a, b);
  t.same(r.map((g) => [g.name, g.putsPerS, g.getsPerS, g.hitPct]), [['vm0', 10, 4, 50], ['vm1', 30, 0, null]]);
});

t.test('waiting VMs are left out; with none connected one line says so', async (t) => {
  const a = sampleFromStats(stats([guest('vm0', false, null)]), 0);
  const b = sampleFromStats(stats([guest('vm0', false, null)], 77), 1000);
  t.same(topRates(a, b), []);
  t.same(topLines(a, b, '00:00:01'), ['00:00:01 (no guest connected; host free 77 pages)']);
});

t.test('a malformed reply gives zeros, not a throw', async (t) => {
  const a = sampleFromStats(null, 0);
  const b = sampleFromStats({ guests: [{ name: 'x', connected: true, store: { puts: 'many' } }, { connected: true }] }, 1000);
  t.same(topRates(a, b).map((g) => [g.name, g.putsPerS]), [['x', 0]]);
});
