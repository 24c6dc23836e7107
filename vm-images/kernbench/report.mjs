#!/usr/bin/env node
// kernbench report: summary (medians, spreads, savings vs no tmem), the terminal table,
// reports/kernbench-<ts>/{report.md, index.html, raw.json, figures as .svg, .png and .vl.json}.
// Run directly, it re-renders a report from a saved raw.json without running the benchmark:
//   node vm-images/kernbench/report.mjs --from reports/kernbench-X/raw.json [--out DIR] [--json]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

export const LABEL = { notmem: 'no tmem', tmem: 'tmem', zswap: 'zswap', 'tmem-blk': 'tmem-blk' };

export function median(a) {
  const v = a.filter(Number.isFinite).sort((x, y) => x - y);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
const spread = (a) => { const v = a.filter(Number.isFinite); return v.length ? [Math.min(...v), Math.max(...v)] : [null, null]; };
const pct = (base, x) => (Number.isFinite(base) && Number.isFinite(x) && base > 0 ? +(((base - x) / base) * 100).toFixed(1) : null);
const r1 = (x) => (Number.isFinite(x) ? +x.toFixed(1) : null);

/**
 * Requests (descriptor chains) tmemd's vring worker completed so far, from a control `stats`
 * reply: host.counters.requests (or host.counters.vring.requests, the per-layer layout); null if
 * the reply has neither.
 */
export function tmemdRequestsOf(st) {
  const c = st?.host?.counters;
  const v = c?.requests ?? c?.vring?.requests;
  return Number.isFinite(v) ? v : null;
}

/** CPU seconds over requests, in µs per request; null unless both are known and requests > 0. */
export function cpuPerRequestUs(cpuS, requests) {
  return Number.isFinite(cpuS) && Number.isFinite(requests) && requests > 0 ? +((cpuS * 1e6) / requests).toFixed(2) : null;
}

/** The metrics of one run as flat numbers. */
export function runMetrics(r) {
  const v = r.vmstat || {};
  const m = {
    wallS: r.wallS, readOps: r.io?.readOps, writeOps: r.io?.writeOps, readMiB: r.io ? r.io.readBytes / 2 ** 20 : null, writeMiB: r.io ? r.io.writeBytes / 2 ** 20 : null,
    pswpin: v.pswpin, pswpout: v.pswpout, pgmajfault: v.pgmajfault, pgpginMiB: Number.isFinite(v.pgpgin) ? v.pgpgin / 1024 : null,
    guestIo: r.ioCount,
    tmemdCpuS: r.tmemdCpuS ?? null,
    tmemdCpuWorkloadS: r.tmemdCpuWorkloadS ?? null,
    // CPU per request during the make (the requests served between the workload's start and its result)
    tmemdRequests: r.tmemdRequestsWorkload ?? null,
    tmemdCpuPerRequestUs: cpuPerRequestUs(r.tmemdCpuWorkloadS, r.tmemdRequestsWorkload),
    // and over the whole run (daemon start to QEMU quit)
    tmemdCpuPerRequestRunUs: cpuPerRequestUs(r.tmemdCpuS, r.tmemdRequests),
    tmemHits: r.tmemAtEnd?.hits ?? null,
    tmemHostMiB: r.tmemAtEnd ? (r.tmemAtEnd.persistentPeak + r.tmemAtEnd.ephemeralPeak) * 4096 / 2 ** 20 : null,
    tmemdRssMiB: r.tmemdMem ? r.tmemdMem.hwmKb / 1024 : null,
    tmemdAnonPeakMiB: Number.isFinite(r.tmemdAnonPeakKb) ? r.tmemdAnonPeakKb / 1024 : null,
    tmemdShmemPeakMiB: Number.isFinite(r.tmemdShmemPeakKb) ? r.tmemdShmemPeakKb / 1024 : null,
  };
  for (const [id, d] of Object.entries(r.io?.disks || {})) { m[`readOps.${id}`] = d.readOps; m[`writeOps.${id}`] = d.writeOps; }
  return m;
}

export function summarize(runs, configs) {
  const by = {};
  for (const c of configs) {
    const ok = runs.filter((r) => r.config === c && r.ok);
    const ms = ok.map(runMetrics);
    const keys = [...new Set(ms.flatMap((m) => Object.keys(m)))];
    const med = {}, spr = {};
    for (const k of keys) { med[k] = median(ms.map((m) => m[k])); spr[k] = spread(ms.map((m) => m[k])); }
    by[c] = { runs: runs.filter((r) => r.config === c).length, ok: ok.length, median: med, spread: spr };
  }
  const n = by.notmem?.median || {}, t = by.tmem?.median || {}, z = by.zswap?.median || {};
  const savedOps = Number.isFinite(n.readOps) && Number.isFinite(t.readOps) ? (n.readOps + n.writeOps) - (t.readOps + t.writeOps) : null;
  const cpuUs = Number.isFinite(t.tmemdCpuS) ? t.tmemdCpuS * 1e6 : null;
  const summary = {
    readOpsNoTmem: n.readOps ?? null, readOpsTmem: t.readOps ?? null, readOpsZswap: z.readOps ?? null,
    writeOpsNoTmem: n.writeOps ?? null, writeOpsTmem: t.writeOps ?? null, writeOpsZswap: z.writeOps ?? null,
    readSavingsPct: pct(n.readOps, t.readOps), writeSavingsPct: pct(n.writeOps, t.writeOps),
    wallNoTmemS: r1(n.wallS), wallTmemS: r1(t.wallS),
    tmemdCpuPerSavedIoUs: cpuUs !== null && savedOps > 0 ? +(cpuUs / savedOps).toFixed(1) : null,
    tmemdCpuPerRequestUs: t.tmemdCpuPerRequestUs ?? null,
  };
  const extra = {
    wallZswapS: r1(z.wallS),
    readSavingsPctZswap: pct(n.readOps, z.readOps), writeSavingsPctZswap: pct(n.writeOps, z.writeOps),
    guestIoNoTmem: n.guestIo ?? null, guestIoTmem: t.guestIo ?? null, guestIoZswap: z.guestIo ?? null,
    guestIoSavingsPctTmem: pct(n.guestIo, t.guestIo), guestIoSavingsPctZswap: pct(n.guestIo, z.guestIo),
    wallSavingsPctTmem: pct(n.wallS, t.wallS), wallSavingsPctZswap: pct(n.wallS, z.wallS),
    savedDiskOps: savedOps, tmemdCpuS: t.tmemdCpuS ?? null,
    tmemdCpuWorkloadS: t.tmemdCpuWorkloadS ?? null,
    tmemdRequests: t.tmemdRequests ?? null,
    tmemdCpuPerRequestRunUs: t.tmemdCpuPerRequestRunUs ?? null,
    tmemdCpuPctOfOneCore: Number.isFinite(t.tmemdCpuWorkloadS) && t.wallS > 0 ? +((t.tmemdCpuWorkloadS / t.wallS) * 100).toFixed(2) : null,
    tmemdCpuWorkloadPerSavedIoUs: Number.isFinite(t.tmemdCpuWorkloadS) && savedOps > 0 ? +((t.tmemdCpuWorkloadS * 1e6) / savedOps).toFixed(1) : null,
    tmemdCpuPerSavedGuestIoUs: cpuUs !== null && n.guestIo - t.guestIo > 0 ? +(cpuUs / (n.guestIo - t.guestIo)).toFixed(1) : null,
  };
  return { summary, extra, by };
}

function fmt(v, d = 0) { return Number.isFinite(v) ? v.toFixed(d) : '-'; }
function cell(by, c, k, d = 0) {
  const b = by[c];
  if (!b || !b.ok) return '-';
  const m = b.median[k], [lo, hi] = b.spread[k] || [];
  if (!Number.isFinite(m)) return '-';
  return b.ok > 1 && lo !== hi ? `${fmt(m, d)} [${fmt(lo, d)}-${fmt(hi, d)}]` : fmt(m, d);
}

const COLS = [
  ['wall s', 'wallS', 1], ['read ops', 'readOps', 0], ['read MiB', 'readMiB', 1], ['write ops', 'writeOps', 0], ['write MiB', 'writeMiB', 1],
  ['pswpin', 'pswpin', 0], ['pswpout', 'pswpout', 0], ['pgmajfault', 'pgmajfault', 0], ['pgpgin MiB', 'pgpginMiB', 1],
  ['I/O (swp+maj)', 'guestIo', 0], ['tmemd CPU s', 'tmemdCpuS', 2], ['tmemd µs/request', 'tmemdCpuPerRequestUs', 1],
];

export function table(by, configs) {
  const head = ['config', 'runs', ...COLS.map((c) => c[0]), 'read/write/I/O/wall savings vs no tmem'];
  const rows = configs.map((c) => {
    const b = by[c], n = by.notmem?.median || {}, m = b.median;
    const sv = c === 'notmem' || !b.ok || !by.notmem?.ok ? '-' :
      [pct(n.readOps, m.readOps), pct(n.writeOps, m.writeOps), pct(n.guestIo, m.guestIo), pct(n.wallS, m.wallS)].map((x) => (x === null ? '-' : `${x}%`)).join(' / ');
    return [LABEL[c], `${b.ok}/${b.runs}`, ...COLS.map(([, k, d]) => cell(by, c, k, d)), sv];
  });
  return [head, ...rows];
}

function textTable(rows) {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  const line = (r) => r.map((x, i) => String(x).padStart(w[i])).join('  ');
  return [line(rows[0]), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)].join('\n');
}
function mdTable(rows) {
  return [`| ${rows[0].join(' | ')} |`, `|${rows[0].map(() => '---').join('|')}|`, ...rows.slice(1).map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

// The report as blocks, rendered once as Markdown (report.md) and once as HTML (index.html),
// so both say the same. Paragraph text uses two bits of Markdown: **bold** and `code`.
const esc = (x) => String(x).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const inlineHtml = (text) => esc(text).replace(/`([^`]+)`/g, '<code>$1</code>').replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>');

function blocksToMd(blocks) {
  const md = [];
  for (const b of blocks) {
    if (b.h) md.push(`${'#'.repeat(b.h)} ${b.text}`);
    else if (b.p) md.push(b.p);
    else if (b.table) md.push(mdTable(b.table));
    else if (b.code) md.push('```' + b.lang, b.code, '```');
    else if (b.list) md.push(...b.list.map((x) => `- ${x}`));
    else if (b.figure) md.push(`![${b.figure}.png](${b.figure}.png)`);
    md.push('');
  }
  return md.join('\n');
}

function htmlTable(rows) {
  const tr = (r, tag) => `<tr>${r.map((x) => `<${tag}>${esc(x)}</${tag}>`).join('')}</tr>`;
  return `<table>\n<thead>${tr(rows[0], 'th')}</thead>\n<tbody>\n${rows.slice(1).map((r) => tr(r, 'td')).join('\n')}\n</tbody>\n</table>`;
}

function blocksToHtml(blocks, title, figures) {
  const body = [];
  for (const b of blocks) {
    if (b.h) body.push(`<h${b.h}>${inlineHtml(b.text)}</h${b.h}>`);
    else if (b.p) body.push(`<p>${inlineHtml(b.p)}</p>`);
    else if (b.table) body.push(htmlTable(b.table));
    else if (b.code) body.push(`<pre><code>${esc(b.code)}</code></pre>`);
    else if (b.list) body.push(`<ul>\n${b.list.map((x) => `<li>${inlineHtml(x)}</li>`).join('\n')}\n</ul>`);
    else if (b.figure) {
      const f = figures.find((x) => x.name === b.figure);
      // the SVG inline (the page stands alone), the files beside it for papers and slides
      body.push(`<figure id="${esc(f.name)}">\n${f.svg}\n<figcaption>${esc(f.title)}: <a href="${esc(f.name)}.png">PNG</a>, <a href="${esc(f.name)}.svg">SVG</a>, <a href="${esc(f.name)}.vl.json">Vega-Lite spec</a></figcaption>\n</figure>`);
    }
  }
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<style>
body { font-family: "DejaVu Sans", sans-serif; max-width: 1300px; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; }
figure { margin: 1em 0; overflow-x: auto; }
figure svg { max-width: 100%; height: auto; }
</style>
</head>
<body>
${body.join('\n')}
</body>
</html>
`;
}

/**
 * Write raw.json, the figures, report.md and index.html into outDir. Figures that fail
 * (a missing font, say) are left out with a line on stderr, so the runs' numbers are never
 * lost to a plotting problem; the caller sees it as plotError.
 */
/** The guest kernel and, when run, the tmem-blk configuration (kept apart from the rest of the report). */
function guestKernelNote(options, built) {
  const out = [];
  const k = built?.kernel;
  if (k) out.push({ p: `Guest kernel: ${k.name} (${k.version})${String(k.name).startsWith('bookworm') ? ": Debian 12's own, unmodified; no frontswap, so no tmem configuration" : ''}.` });
  if ((options.configs || []).includes('tmem-blk')) {
    out.push({ p: `**tmem-blk**: no swap disk; the guest swaps (\`swapon --discard\`) on QEMU's vhost-user-blk-pci served by tmemd's tmem-blk (blk-size ${options.swap}, maxmem ${options.maxmem}, overflow file in the run directory), no tmem device, no module, zswap off. Its swap I/O goes to tmemd, not to a QEMU disk: it is not in the disk ops below (pswpin/pswpout count it); tmemd CPU s is the daemon's CPU time for it.` });
  }
  return out;
}

export async function writeReport({ outDir, options, machine, data, built, runs, started, argv }) {
  fs.mkdirSync(outDir, { recursive: true });
  const configs = options.configs;
  const { summary, extra, by } = summarize(runs, configs);
  const rows = table(by, configs);
  const txt = textTable(rows);
  fs.writeFileSync(path.join(outDir, 'raw.json'), JSON.stringify({ started, argv, options, machine, data, built, summary, extra, byConfig: by, runs }, null, 1));
  let figures = [], plotError = null;
  // loaded here, not at the top: vega takes seconds to load, which a bad flag should not wait for
  try { const { writePlots } = await import('./plots.mjs'); figures = await writePlots(outDir, by, configs, runs, LABEL); } catch (e) { plotError = e.message; process.stderr.write(`kernbench: plots failed: ${e.message}\n`); }
  const t = by.tmem?.median || {};
  const tmemRun = runs.find((r) => r.config === 'tmem' && r.ok);
  const kinds = tmemRun?.tmemAtEnd?.kinds;
  const title = `kernbench ${started.toISOString()}`;
  const doc = [];
  doc.push({ h: 1, text: title });
  doc.push({ p: `Command: \`npm run kernbench -- ${argv.join(' ')}\`` });
  doc.push({ p: `Machine: ${machine.host}, ${machine.cpus} × ${machine.cpuModel}, ${machine.memGiB} GiB, accel **${machine.accel}**, load average at start ${machine.loadavgAtStart.join(' ')}, Linux ${machine.kernel}, Node ${machine.node}.` });
  doc.push({ p: `Workload: \`make -j${options.jobs}\` of ${data.objects.length} Linux 5.10 objects (${data.dirs.join(', ')}; the kernel's own gcc commands; ${data.files} source/header files, ${(data.srcBytes / 2 ** 20).toFixed(1)} MiB) on an ext4 data disk opened snapshot=on, in a guest with ${options.ram} RAM, ${options.cpus} vCPUs, ${options.swap} swap disk; fresh boot per run, ${options.runs} run(s) per configuration, configurations interleaved.` });
  doc.push({ p: 'Configurations: **no tmem** (no device, no module, zswap off); **tmem** (tmemd --queues-mode ' + (options.queuesMode ?? 'poll') + (options.pollSpinMs !== undefined ? ' --poll-spin-ms ' + options.pollSpinMs : '') + ' + virtio_tmem cleancache=1 frontswap=1, maxmem ' + options.maxmem + ', zswap off); **zswap** (no tmem, `zswap.enabled=1`, kernel defaults: lzo/zbud, max_pool_percent 20).' });
  doc.push(...guestKernelNote(options, built));
  doc.push({ h: 2, text: 'Results (median [min-max])' }, { table: rows });
  doc.push({ p: 'Disk ops are QEMU `query-blockstats` summed over all disks (root, swap, project files, data) after the workload; guest I/O is pswpin + pswpout + pgmajfault over the workload (the measure of the zswap and zcache figures).' });
  doc.push({ h: 3, text: 'Per disk (median ops)' });
  const disks = [...new Set(runs.flatMap((r) => Object.keys(r.io?.disks || {})))];
  doc.push({ table: [['config', ...disks.flatMap((d) => [`${d} read`, `${d} write`])],
    ...configs.map((c) => [LABEL[c], ...disks.flatMap((d) => [cell(by, c, `readOps.${d}`), cell(by, c, `writeOps.${d}`)])])] });
  doc.push({ h: 2, text: 'Summary (`--json`)' }, { code: JSON.stringify(summary, null, 1), lang: 'json' }, { code: JSON.stringify(extra, null, 1), lang: 'json' });
  if (tmemRun) {
    doc.push({ h: 2, text: 'tmem' });
    doc.push({ p: `tmemd CPU ${fmt(t.tmemdCpuS, 2)} s over the run (daemon start to QEMU quit: boot, workload, power-off), ${fmt(t.tmemdCpuWorkloadS, 2)} s during the make alone (${extra.tmemdCpuPctOfOneCore ?? '-'} % of one core over its wall time; ${extra.tmemdCpuWorkloadPerSavedIoUs ?? '-'} µs per saved disk op; ${fmt(t.tmemdRequests, 0)} requests, **${fmt(t.tmemdCpuPerRequestUs, 1)} µs of tmemd CPU per request**, ${fmt(t.tmemdCpuPerRequestRunUs, 1)} µs over the whole run). Whole run: `+
      `${summary.tmemdCpuPerSavedIoUs ?? '-'} µs per saved disk op, ${extra.tmemdCpuPerSavedGuestIoUs ?? '-'} µs per saved guest I/O (pswpin+pswpout+pgmajfault). tmemd peak RSS ${fmt(t.tmemdRssMiB, 1)} MiB, of which (sampled peaks) ${fmt(t.tmemdAnonPeakMiB, 1)} MiB its own memory (heap and tmem frames) and ${fmt(t.tmemdShmemPeakMiB, 1)} MiB guest RAM it touched through its mapping; tmem pages held at peak ${fmt(t.tmemHostMiB, 1)} MiB (persistent + ephemeral peaks).` });
    if (kinds) doc.push({ table: [['pool kind', 'pools', 'puts', 'gets', 'hits', 'hit ratio'],
      ...Object.entries(kinds).map(([k, v]) => [k, v.pools, v.puts, v.gets, v.hits, v.gets ? `${((v.hits / v.gets) * 100).toFixed(1)} %` : '-'])] });
    doc.push({ p: `(first tmem run, at the end of the workload; totals: puts ${tmemRun.tmemAtEnd.puts}, gets ${tmemRun.tmemAtEnd.gets}, hits ${tmemRun.tmemAtEnd.hits}, refused for space ${tmemRun.tmemAtEnd.putsNoSpace}, evictions ${tmemRun.tmemAtEnd.evictions})` });
  }
  for (const f of figures) doc.push({ figure: f.name });
  const failed = runs.filter((r) => !r.ok);
  if (failed.length) doc.push({ h: 2, text: 'Failed runs' }, { list: failed.map((r) => `${r.config} #${r.index}: ${String(r.error).split('\n')[0]}`) });
  doc.push({ h: 2, text: 'Caveats' }, { list: [`Accelerator ${machine.accel}${machine.accel === 'tcg' ? ': QEMU emulates the CPU, so gcc runs 10-30× slower than native and the host is shared with other jobs; wall times and tmemd CPU per op are not comparable with KVM or Xen figures, I/O counts are.' : '.'}`,
    'The disks are host files (cache=writeback/unsafe): a "disk op" costs a host page-cache access, not a seek; savings are counted in operations and bytes, not in time on a real disk.'] });
  fs.writeFileSync(path.join(outDir, 'report.md'), blocksToMd(doc));
  const htmlDoc = plotError ? [...doc, { h: 2, text: 'Figures' }, { p: `Not drawn: ${plotError}` }] : doc;
  fs.writeFileSync(path.join(outDir, 'index.html'), blocksToHtml(htmlDoc, title, figures));
  return { summary, extra, by, table: txt, plotError };
}

/** Re-render a report from a raw.json that writeReport saved (no VM runs). outDir defaults to the raw.json's directory. */
export async function reportFromRaw(rawPath, outDir) {
  let raw;
  try {
    raw = JSON.parse(fs.readFileSync(rawPath, 'utf8'));
  } catch (e) {
    throw new Error(`${rawPath}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
  if (!raw || !Array.isArray(raw.runs) || !raw.options || !Array.isArray(raw.options.configs)) throw new Error(`${rawPath}: not a kernbench raw.json (needs "runs" and "options.configs")`);
  for (const c of raw.options.configs) if (!LABEL[c]) throw new Error(`${rawPath}: unknown configuration '${c}' (${Object.keys(LABEL).join(', ')})`);
  raw.runs.forEach((r, i) => { if (!r || !LABEL[r.config]) throw new Error(`${rawPath}: run ${i + 1} has no known configuration`); });
  const started = new Date(raw.started ?? NaN);
  if (Number.isNaN(started.getTime())) throw new Error(`${rawPath}: "started" is not a date`);
  return writeReport({
    outDir: outDir || path.dirname(path.resolve(rawPath)), options: raw.options, runs: raw.runs, started, argv: raw.argv || [], built: raw.built ?? null,
    // older files may lack these; what the report says of them then is "unknown", not this machine
    machine: raw.machine || { host: 'unknown', cpus: '?', cpuModel: 'unknown', memGiB: '?', accel: 'unknown', loadavgAtStart: [], kernel: 'unknown', node: 'unknown' },
    data: raw.data || { objects: [], dirs: [], files: 0, srcBytes: 0 },
  });
}

const HELP = `Usage: node vm-images/kernbench/report.mjs --from RAW.json [--out DIR] [--json]

Re-renders a kernbench report (report.md, index.html, raw.json, figures) from a saved
raw.json, without running the benchmark.

  --from FILE   the raw.json of an earlier run (reports/kernbench-<time>/raw.json)
  --out DIR     where to write the report (default: the raw.json's directory)
  --json        print the summary as one JSON object last
`;

async function main() {
  let o;
  try {
    ({ values: o } = parseArgs({ options: { from: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
    if (o.help) { process.stdout.write(HELP); return; }
    if (!o.from) throw new Error('--from RAW.json is required (see --help)');
  } catch (e) {
    process.stderr.write(`kernbench report: ${e.message}\n`);
    process.exit(2);
  }
  const r = await reportFromRaw(o.from, o.out);
  process.stdout.write(r.table + '\n');
  if (o.json) process.stdout.write(JSON.stringify(r.summary) + '\n');
  if (r.plotError) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((e) => { process.stderr.write(`kernbench report: ${e.message}\n`); process.exit(1); });
}
