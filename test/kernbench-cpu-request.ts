// kernbench's tmemd CPU per request (issue 10): the requests come from the daemon's own
// counters in the control `stats` reply, the CPU from /proc/PID/stat; report.mjs divides them
// per run and reports the median of the tmem runs in the table, the summary and --json.
// Checked against the fixture raw.json (test/fixtures/kernbench-raw.json) with request counts
// added to its tmem runs; the expected numbers are computed here, not by the report's code.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url)).replace(/\/dist\/$/, '/');
const report = (await import(pathToFileURL(path.join(root, 'vm-images/kernbench/report.mjs')).href)) as {
  tmemdRequestsOf(st: unknown): number | null;
  cpuPerRequestUs(cpuS: unknown, requests: unknown): number | null;
  summarize(runs: unknown[], configs: string[]): { summary: Record<string, unknown>; extra: Record<string, unknown>; by: Record<string, { median: Record<string, number> }> };
  table(by: unknown, configs: string[]): string[][];
};

t.test('requests from a stats reply: the flat and the per-layer counter layouts; null otherwise', async (t) => {
  t.equal(report.tmemdRequestsOf({ host: { counters: { requests: 40123 } } }), 40123);
  t.equal(report.tmemdRequestsOf({ host: { counters: { vring: { requests: 7 }, tmem: { opPutPage: 3 } } } }), 7);
  t.equal(report.tmemdRequestsOf({ host: {} }), null);
  t.equal(report.tmemdRequestsOf(null), null);
  t.equal(report.tmemdRequestsOf({ host: { counters: { requests: 'many' } } }), null);
});

t.test('CPU per request in µs; null without requests', async (t) => {
  t.equal(report.cpuPerRequestUs(2.2, 40000), 55);
  t.equal(report.cpuPerRequestUs(1.24, 0), null);
  t.equal(report.cpuPerRequestUs(undefined, 100), null);
  t.equal(report.cpuPerRequestUs(1, null), null);
});

t.test('the report: per run, the median of the tmem runs in the table and the summary', async (t) => {
  const raw = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/kernbench-raw.json'), 'utf8')) as {
    options: { configs: string[] };
    runs: { config: string; ok: boolean; tmemdCpuWorkloadS?: number; tmemdCpuS?: number; tmemdRequestsWorkload?: number; tmemdRequests?: number }[];
  };
  const requests = [41000, 39000, 40000];
  let k = 0;
  const perRun: number[] = [];
  for (const r of raw.runs) {
    if (r.config !== 'tmem') continue;
    r.tmemdRequestsWorkload = requests[k]!;
    r.tmemdRequests = requests[k]! + 5000;
    perRun.push((r.tmemdCpuWorkloadS! * 1e6) / requests[k]!);
    k++;
  }
  t.equal(perRun.length, 3, 'three tmem runs in the fixture');
  const expected = [...perRun].sort((a, b) => a - b)[1]!;
  const { summary, extra, by } = report.summarize(raw.runs, raw.options.configs);
  t.ok(Math.abs((summary.tmemdCpuPerRequestUs as number) - expected) < 0.01, `summary: ${summary.tmemdCpuPerRequestUs} µs (expected ${expected.toFixed(2)})`);
  t.equal(by.tmem!.median.tmemdRequests, 40000);
  t.ok(Number.isFinite(extra.tmemdCpuPerRequestRunUs), `whole run: ${extra.tmemdCpuPerRequestRunUs} µs`);
  const rows = report.table(by, raw.options.configs);
  const col = rows[0]!.indexOf('tmemd µs/request');
  t.ok(col > 0, 'the table has the column');
  const tmemRow = rows.find((r) => r[0] === 'tmem')!;
  t.match(tmemRow[col]!, new RegExp(`^${expected.toFixed(1)} \\[`), `tmem: ${tmemRow[col]}`);
  t.equal(rows.find((r) => r[0] === 'no tmem')![col], '-', 'no tmem: none');
});

t.test('runs recorded before requests were counted: no figure, no failure', async (t) => {
  const raw = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/kernbench-raw.json'), 'utf8')) as { options: { configs: string[] }; runs: unknown[] };
  const { summary, by } = report.summarize(raw.runs, raw.options.configs);
  t.equal(summary.tmemdCpuPerRequestUs, null);
  const rows = report.table(by, raw.options.configs);
  t.equal(rows.find((r) => r[0] === 'tmem')![rows[0]!.indexOf('tmemd µs/request')], '-');
});
