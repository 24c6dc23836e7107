// kernbench report: summary (medians, spreads, savings vs no tmem), the terminal table,
// reports/kernbench-<ts>/{report.md, raw.json, io-by-config.png, tmem-hits-over-time.png}.
import fs from 'node:fs';
import path from 'node:path';
import { Canvas, PALETTE, barPanel, linePanel } from './png.mjs';

export const LABEL = { notmem: 'no tmem', tmem: 'tmem', zswap: 'zswap' };

export function median(a) {
  const v = a.filter(Number.isFinite).sort((x, y) => x - y);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
const spread = (a) => { const v = a.filter(Number.isFinite); return v.length ? [Math.min(...v), Math.max(...v)] : [null, null]; };
const pct = (base, x) => (Number.isFinite(base) && Number.isFinite(x) && base > 0 ? +(((base - x) / base) * 100).toFixed(1) : null);
const r1 = (x) => (Number.isFinite(x) ? +x.toFixed(1) : null);

/** The metrics of one run as flat numbers. */
export function runMetrics(r) {
  const v = r.vmstat || {};
  const m = {
    wallS: r.wallS, readOps: r.io?.readOps, writeOps: r.io?.writeOps, readMiB: r.io ? r.io.readBytes / 2 ** 20 : null, writeMiB: r.io ? r.io.writeBytes / 2 ** 20 : null,
    pswpin: v.pswpin, pswpout: v.pswpout, pgmajfault: v.pgmajfault, pgpginMiB: Number.isFinite(v.pgpgin) ? v.pgpgin / 1024 : null,
    guestIo: r.ioCount,
    tmemdCpuS: r.tmemdCpuS ?? null,
    tmemdCpuWorkloadS: r.tmemdCpuWorkloadS ?? null,
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
  };
  const extra = {
    wallZswapS: r1(z.wallS),
    readSavingsPctZswap: pct(n.readOps, z.readOps), writeSavingsPctZswap: pct(n.writeOps, z.writeOps),
    guestIoNoTmem: n.guestIo ?? null, guestIoTmem: t.guestIo ?? null, guestIoZswap: z.guestIo ?? null,
    guestIoSavingsPctTmem: pct(n.guestIo, t.guestIo), guestIoSavingsPctZswap: pct(n.guestIo, z.guestIo),
    wallSavingsPctTmem: pct(n.wallS, t.wallS), wallSavingsPctZswap: pct(n.wallS, z.wallS),
    savedDiskOps: savedOps, tmemdCpuS: t.tmemdCpuS ?? null,
    tmemdCpuWorkloadS: t.tmemdCpuWorkloadS ?? null,
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
  ['I/O (swp+maj)', 'guestIo', 0], ['tmemd CPU s', 'tmemdCpuS', 2],
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

function plots(outDir, by, configs, runs) {
  const files = [];
  // I/O by configuration: disk ops (QMP), guest I/O (vmstat), wall time
  const cv = new Canvas(1500, 420);
  const groups = (ks) => configs.filter((c) => by[c]?.ok).map((c) => ({ label: LABEL[c], values: ks.map((k) => by[c].median[k]) }));
  barPanel(cv, { x: 0, y: 0, w: 560, h: 420, title: 'Disk ops (QMP, all disks)', groups: groups(['readOps', 'writeOps']), series: ['read ops', 'write ops'] });
  barPanel(cv, { x: 560, y: 0, w: 620, h: 420, title: 'Guest I/O (/proc/vmstat)', groups: groups(['pswpin', 'pswpout', 'pgmajfault']), series: ['pswpin', 'pswpout', 'pgmajfault'] });
  barPanel(cv, { x: 1180, y: 0, w: 320, h: 420, title: 'Wall time s', groups: groups(['wallS']), series: ['wall s'] });
  fs.writeFileSync(path.join(outDir, 'io-by-config.png'), cv.png());
  files.push('io-by-config.png');
  const tr = runs.filter((r) => r.config === 'tmem' && r.samples?.length);
  if (tr.length) {
    // one colour per counter, one dash pattern per run
    const metrics = [
      ['cleancache hits', PALETTE[0], (s) => s.cc?.hits ?? 0],
      ['frontswap hits', PALETTE[1], (s) => s.fs?.hits ?? 0],
      ['puts', PALETTE[2], (s) => s.puts],
      ['gets', PALETTE[3], (s) => s.gets],
    ];
    const dashes = [null, [8, 5], [2, 4], [12, 4], [4, 8]];
    const lines = [];
    tr.forEach((r, i) => {
      for (const [name, color, value] of metrics) lines.push({ name, color, dash: dashes[i % dashes.length], points: r.samples.map((s) => [s.t, value(s)]) });
    });
    const legend = [
      ...metrics.map(([name, color]) => ({ name, color, dash: null })),
      ...(tr.length > 1 ? tr.map((_, i) => ({ name: `run ${i + 1}`, color: [85, 87, 83], dash: dashes[i % dashes.length] })) : []),
    ];
    const c2 = new Canvas(1000, 440);
    linePanel(c2, { x: 0, y: 0, w: 1000, h: 440, title: 'tmem over time (cumulative, tmem runs)', xLabel: 'seconds since boot start', lines, legend });
    fs.writeFileSync(path.join(outDir, 'tmem-hits-over-time.png'), c2.png());
    files.push('tmem-hits-over-time.png');
  }
  return files;
}

export function writeReport({ outDir, options, machine, data, built, runs, started, argv }) {
  fs.mkdirSync(outDir, { recursive: true });
  const configs = options.configs;
  const { summary, extra, by } = summarize(runs, configs);
  const rows = table(by, configs);
  const txt = textTable(rows);
  fs.writeFileSync(path.join(outDir, 'raw.json'), JSON.stringify({ started, argv, options, machine, data, built, summary, extra, byConfig: by, runs }, null, 1));
  let pngs = [];
  try { pngs = plots(outDir, by, configs, runs); } catch (e) { pngs = []; process.stderr.write(`kernbench: plots failed: ${e.message}\n`); }
  const t = by.tmem?.median || {};
  const tmemRun = runs.find((r) => r.config === 'tmem' && r.ok);
  const kinds = tmemRun?.tmemAtEnd?.kinds;
  const md = [];
  md.push(`# kernbench ${started.toISOString()}`, '');
  md.push(`Command: \`npm run kernbench -- ${argv.join(' ')}\``, '');
  md.push(`Machine: ${machine.host}, ${machine.cpus} × ${machine.cpuModel}, ${machine.memGiB} GiB, accel **${machine.accel}**, load average at start ${machine.loadavgAtStart.join(' ')}, Linux ${machine.kernel}, Node ${machine.node}.`, '');
  md.push(`Workload: \`make -j${options.jobs}\` of ${data.objects.length} Linux 5.10 objects (${data.dirs.join(', ')}; the kernel's own gcc commands; ${data.files} source/header files, ${(data.srcBytes / 2 ** 20).toFixed(1)} MiB) on an ext4 data disk opened snapshot=on, in a guest with ${options.ram} RAM, ${options.cpus} vCPUs, ${options.swap} swap disk; fresh boot per run, ${options.runs} run(s) per configuration, configurations interleaved.`, '');
  md.push('Configurations: **no tmem** (no device, no module, zswap off); **tmem** (tmemd --queues-mode ' + (options.queuesMode ?? 'poll') + (options.pollSpinMs !== undefined ? ' --poll-spin-ms ' + options.pollSpinMs : '') + ' + virtio_tmem cleancache=1 frontswap=1, maxmem ' + options.maxmem + ', zswap off); **zswap** (no tmem, `zswap.enabled=1`, kernel defaults: lzo/zbud, max_pool_percent 20).', '');
  md.push('## Results (median [min-max])', '', mdTable(rows), '');
  md.push('Disk ops are QEMU `query-blockstats` summed over all disks (root, swap, project files, data) after the workload; guest I/O is pswpin + pswpout + pgmajfault over the workload (the measure of the zswap and zcache figures).', '');
  md.push('### Per disk (median ops)', '');
  const disks = [...new Set(runs.flatMap((r) => Object.keys(r.io?.disks || {})))];
  md.push(mdTable([['config', ...disks.flatMap((d) => [`${d} read`, `${d} write`])],
    ...configs.map((c) => [LABEL[c], ...disks.flatMap((d) => [cell(by, c, `readOps.${d}`), cell(by, c, `writeOps.${d}`)])])]), '');
  md.push('## Summary (`--json`)', '', '```json', JSON.stringify(summary, null, 1), '```', '', '```json', JSON.stringify(extra, null, 1), '```', '');
  if (tmemRun) {
    md.push('## tmem', '');
    md.push(`tmemd CPU ${fmt(t.tmemdCpuS, 2)} s over the run (daemon start to QEMU quit: boot, workload, power-off), ${fmt(t.tmemdCpuWorkloadS, 2)} s during the make alone (${extra.tmemdCpuPctOfOneCore ?? '-'} % of one core over its wall time; ${extra.tmemdCpuWorkloadPerSavedIoUs ?? '-'} µs per saved disk op). Whole run: `+
      `${summary.tmemdCpuPerSavedIoUs ?? '-'} µs per saved disk op, ${extra.tmemdCpuPerSavedGuestIoUs ?? '-'} µs per saved guest I/O (pswpin+pswpout+pgmajfault). tmemd peak RSS ${fmt(t.tmemdRssMiB, 1)} MiB, of which (sampled peaks) ${fmt(t.tmemdAnonPeakMiB, 1)} MiB its own memory (heap and tmem frames) and ${fmt(t.tmemdShmemPeakMiB, 1)} MiB guest RAM it touched through its mapping; tmem pages held at peak ${fmt(t.tmemHostMiB, 1)} MiB (persistent + ephemeral peaks).`, '');
    if (kinds) md.push(mdTable([['pool kind', 'pools', 'puts', 'gets', 'hits', 'hit ratio'],
      ...Object.entries(kinds).map(([k, v]) => [k, v.pools, v.puts, v.gets, v.hits, v.gets ? `${((v.hits / v.gets) * 100).toFixed(1)} %` : '-'])]), '');
    md.push(`(first tmem run, at the end of the workload; totals: puts ${tmemRun.tmemAtEnd.puts}, gets ${tmemRun.tmemAtEnd.gets}, hits ${tmemRun.tmemAtEnd.hits}, refused for space ${tmemRun.tmemAtEnd.putsNoSpace}, evictions ${tmemRun.tmemAtEnd.evictions})`, '');
  }
  for (const p of pngs) md.push(`![${p}](${p})`, '');
  const failed = runs.filter((r) => !r.ok);
  if (failed.length) md.push('## Failed runs', '', ...failed.map((r) => `- ${r.config} #${r.index}: ${String(r.error).split('\n')[0]}`), '');
  md.push('## Caveats', '', `- Accelerator ${machine.accel}${machine.accel === 'tcg' ? ': QEMU emulates the CPU, so gcc runs 10-30× slower than native and the host is shared with other jobs; wall times and tmemd CPU per op are not comparable with KVM or Xen figures, I/O counts are.' : '.'}`,
    '- The disks are host files (cache=writeback/unsafe): a "disk op" costs a host page-cache access, not a seek; savings are counted in operations and bytes, not in time on a real disk.', '');
  fs.writeFileSync(path.join(outDir, 'report.md'), md.join('\n'));
  return { summary, extra, by, table: txt };
}
