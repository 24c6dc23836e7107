// The kernbench report re-rendered from a saved raw.json (test/fixtures/kernbench-raw.json:
// 3 configurations, 3 runs each, one zswap run failed) by `report.mjs --from ... --out ...`:
// the figures are checked against numbers the test computes from the fixture itself: bars
// per configuration, round tick labels, error bars from the runs' min to max, lines per run
// and counter; the PNG decodes to the SVG's size at 2x with each configuration's colour in
// it; index.html carries the figures and the tables of report.md.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url)).replace(/\/dist\/$/, '/');
const REPORT = path.join(root, 'vm-images/kernbench/report.mjs');
const FIXTURE = path.join(root, 'test/fixtures/kernbench-raw.json');

type Run = {
  config: string; ok: boolean; wallS?: number;
  io?: { disks: Record<string, { readOps: number; writeOps: number }> };
  vmstat?: Record<string, number>;
  samples?: { t: number; puts: number; gets: number; cc: { hits: number }; fs: { hits: number } }[];
};
const raw = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as { options: { configs: string[] }; runs: Run[] };
const LABEL: Record<string, string> = { notmem: 'no tmem', tmem: 'tmem', zswap: 'zswap' };
const COLOUR: Record<string, string> = { 'no tmem': '#4c78a8', tmem: '#f58518', zswap: '#54a24b' };

// the numbers straight from the fixture's runs, not through the report's code
const sumDisks = (r: Run, k: 'readOps' | 'writeOps') => Object.values(r.io!.disks).reduce((a, d) => a + d[k], 0);
const METRICS: Record<string, [string, (r: Run) => number][]> = {
  diskops: [['read ops', (r) => sumDisks(r, 'readOps')], ['write ops', (r) => sumDisks(r, 'writeOps')]],
  guestio: [['pswpin', (r) => r.vmstat!.pswpin!], ['pswpout', (r) => r.vmstat!.pswpout!], ['pgmajfault', (r) => r.vmstat!.pgmajfault!]],
  wall: [['wall s', (r) => r.wallS!]],
};
function stats(config: string, f: (r: Run) => number) {
  const v = raw.runs.filter((r) => r.config === config && r.ok).map(f).sort((a, b) => a - b);
  const m = v.length >> 1;
  return { min: v[0]!, max: v.at(-1)!, median: v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2 };
}

const num = (s: string) => Number(s);
const label = (s: string) => Object.fromEntries(s.split('; ').map((kv) => kv.split(': ') as [string, string]));
/** The part of `s` from `start` up to the next `end`. */
function segment(s: string, start: string, end: string): string {
  const i = s.indexOf(start);
  if (i < 0) throw new Error(`'${start}' not in the SVG`);
  const j = s.indexOf(end, i);
  return s.slice(i, j < 0 ? undefined : j);
}

/** An axis's ticks: pixel position and the number its label shows. */
function axisTicks(svg: string, which: 'X' | 'Y') {
  const axis = segment(svg, `aria-label="${which}-axis`, 'role-axis-domain');
  const px = [...axis.matchAll(which === 'Y' ? /<line transform="translate\(0,([-\d.e]+)\)" x2="-5"/g : /<line transform="translate\(([-\d.e]+),0\)" x2="0" y2="5"/g)].map((m) => num(m[1]!));
  const labels = [...segment(axis, 'role-axis-label', '</g>').matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!);
  return { px, labels, values: labels.map((l) => Number(l.replace(/,/g, ''))) };
}
/** Pixel → value through the first and last tick; tol is 1.5 px in value units (ticks sit on whole pixels). */
function scaleOf(ticks: { px: number[]; values: number[] }) {
  const [p0, p1, v0, v1] = [ticks.px[0]!, ticks.px.at(-1)!, ticks.values[0]!, ticks.values.at(-1)!];
  const k = (v1 - v0) / (p1 - p0);
  return { value: (px: number) => v0 + (px - p0) * k, tol: Math.abs(k) * 1.5 };
}

/** Round ticks from 0, and a "nice" scale: the axis ends on a tick at pixel `endPx`. */
function checkRoundTicks(t: Test, ticks: { labels: string[]; values: number[]; px: number[] }, what: string, endPx: number) {
  t.ok(ticks.values.length >= 3, `${what}: at least 3 ticks (${ticks.labels.join(' ')})`);
  t.ok(Math.abs(ticks.px.at(-1)! - endPx) <= 1, `${what}: the axis ends on its last tick ${ticks.labels.at(-1)} (nice scale)`);
  t.equal(ticks.px.length, ticks.values.length, `${what}: a label per tick`);
  t.ok(ticks.values.every(Number.isFinite), `${what}: labels are numbers (${ticks.labels.join(' ')})`);
  t.equal(ticks.values[0], 0, `${what}: the axis starts at 0`);
  const step = ticks.values[1]! - ticks.values[0]!;
  const mant = step / 10 ** Math.floor(Math.log10(step));
  t.ok([1, 2, 5].some((m) => Math.abs(mant - m) < 1e-9), `${what}: step ${step} is 1, 2 or 5 times a power of ten`);
  for (const [i, v] of ticks.values.entries()) {
    t.ok(Math.abs(v / step - Math.round(v / step)) < 1e-9 && Math.abs(v - i * step) < 1e-9, `${what}: tick ${ticks.labels[i]} is ${i} steps of ${step}`);
  }
}

/** A PNG's chunks (CRC-checked), its IHDR and its pixels (filters undone), RGBA 8-bit. */
const CRC = Array.from({ length: 256 }, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
const crc32 = (b: Buffer) => { let c = 0xffffffff; for (const x of b) c = CRC[(c ^ x) & 0xff]! ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
function decodePng(buf: Buffer) {
  if (!buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) throw new Error('no PNG signature');
  const chunks: { type: string; data: Buffer }[] = [];
  for (let o = 8; o < buf.length;) {
    const len = buf.readUInt32BE(o), type = buf.toString('latin1', o + 4, o + 8), data = buf.subarray(o + 8, o + 8 + len);
    if (crc32(buf.subarray(o + 4, o + 8 + len)) !== buf.readUInt32BE(o + 8 + len)) throw new Error(`bad CRC in ${type}`);
    chunks.push({ type, data });
    o += 12 + len;
  }
  const ihdr = chunks[0]!;
  if (ihdr.type !== 'IHDR') throw new Error('first chunk is not IHDR');
  const [width, height, depth, colourType] = [ihdr.data.readUInt32BE(0), ihdr.data.readUInt32BE(4), ihdr.data[8]!, ihdr.data[9]!];
  if (depth !== 8 || colourType !== 6) throw new Error(`not 8-bit RGBA (depth ${depth}, colour type ${colourType})`);
  const z = zlib.inflateSync(Buffer.concat(chunks.filter((c) => c.type === 'IDAT').map((c) => c.data)));
  const stride = width * 4;
  if (z.length !== height * (stride + 1)) throw new Error(`IDAT holds ${z.length} bytes, not ${height} rows of ${stride + 1}`);
  const px = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const f = z[y * (stride + 1)]!;
    for (let x = 0; x < stride; x++) {
      const raw = z[y * (stride + 1) + 1 + x]!;
      const a = x >= 4 ? px[y * stride + x - 4]! : 0, b = y > 0 ? px[(y - 1) * stride + x]! : 0, c = x >= 4 && y > 0 ? px[(y - 1) * stride + x - 4]! : 0;
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const pred = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][f];
      if (pred === undefined) throw new Error(`row ${y}: filter type ${f}`);
      px[y * stride + x] = (raw + pred) & 0xff;
    }
  }
  return { width, height, chunks: chunks.map((c) => c.type), px };
}
const countColour = (px: Buffer, hex: string) => {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  let n = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i] === r && px[i + 1] === g && px[i + 2] === b && px[i + 3] === 255) n++;
  return n;
};

const out = fs.mkdtempSync(path.join(os.tmpdir(), 'kernbench-report-'));
t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
const run = spawnSync(process.execPath, [REPORT, '--from', FIXTURE, '--out', out, '--json'], { encoding: 'utf8' });

t.test('report.mjs --from re-renders the report from the fixture', async (t) => {
  t.equal(run.status, 0, `exit status 0 (stderr: ${run.stderr})`);
  t.equal(run.stderr, '', 'nothing on stderr');
  for (const f of ['report.md', 'index.html', 'raw.json', 'io-by-config.svg', 'io-by-config.png', 'io-by-config.vl.json', 'tmem-hits-over-time.svg', 'tmem-hits-over-time.png', 'tmem-hits-over-time.vl.json']) {
    t.ok(fs.existsSync(path.join(out, f)), `${f} written`);
  }
  const summary = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
  t.equal(summary.readOpsNoTmem, stats('notmem', (r) => sumDisks(r, 'readOps')).median, '--json: the median read ops of no tmem');
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  t.match(md, '![io-by-config.png](io-by-config.png)', 'report.md shows the PNGs as before');
  t.equal(JSON.parse(fs.readFileSync(path.join(out, 'raw.json'), 'utf8')).runs.length, raw.runs.length, 'raw.json keeps every run');
});

t.test('io-by-config.svg: bars, round ticks and min-max error bars per configuration', async (t) => {
  const svg = fs.readFileSync(path.join(out, 'io-by-config.svg'), 'utf8');
  const panels = svg.split(/class="mark-group role-scope concat_\d+_group"/).slice(1);
  t.equal(panels.length, 3, 'three panels: disk ops, guest I/O, wall time');
  const fills = new Map<string, Set<string>>();
  for (const [i, name] of ['diskops', 'guestio', 'wall'].entries()) {
    const p = panels[i]!;
    const metrics = METRICS[name]!;
    const ticks = axisTicks(p, 'Y');
    checkRoundTicks(t, ticks, `${name} y axis`, 0);
    const y = scaleOf(ticks);
    const bars = [...segment(p, `${name}_bars_marks`, '</g>').matchAll(/<path aria-label="([^"]*)"[^>]*d="M([-\d.e]+),([-\d.e]+)h[^"]*" fill="([^"]+)"/g)]
      .map((m) => ({ l: label(m[1]!), top: num(m[3]!), fill: m[4]! }));
    const rules = [...segment(p, `${name}_spread_marks`, '</g>').matchAll(/<line aria-label="([^"]*)"[^>]*transform="translate\(([-\d.e]+),([-\d.e]+)\)" x2="0" y2="([-\d.e]+)"/g)]
      .map((m) => ({ l: label(m[1]!), y: num(m[3]!), dy: num(m[4]!) }));
    for (const c of raw.options.configs) {
      const lc = LABEL[c]!;
      const mine = bars.filter((b) => b.l.config === lc);
      t.equal(mine.length, metrics.length, `${name}: ${metrics.length} bar(s) for ${lc}`);
      t.equal(rules.filter((r) => r.l.config === lc).length, metrics.length, `${name}: ${metrics.length} error bar(s) for ${lc}`);
      for (const b of mine) (fills.get(lc) ?? fills.set(lc, new Set()).get(lc)!).add(b.fill);
      for (const [metric, f] of metrics) {
        const s = stats(c, f);
        const bar = mine.find((b) => b.l.metric === metric);
        const rule = rules.find((r) => r.l.config === lc && r.l.metric === metric);
        if (!bar || !rule) { t.fail(`${name}: ${lc} ${metric} drawn`); continue; }
        t.ok(Math.abs(y.value(bar.top) - s.median) <= y.tol, `${name}: ${lc} ${metric} bar top at the median ${s.median} (reads ${y.value(bar.top).toFixed(1)})`);
        const [lo, hi] = [y.value(Math.max(rule.y, rule.y + rule.dy)), y.value(Math.min(rule.y, rule.y + rule.dy))];
        t.ok(Math.abs(lo - s.min) <= y.tol && Math.abs(hi - s.max) <= y.tol, `${name}: ${lc} ${metric} error bar from ${s.min} to ${s.max} (reads ${lo.toFixed(1)}-${hi.toFixed(1)}, ±${y.tol.toFixed(2)})`);
        t.same([num(rule.l.min!), num(rule.l.max!)], [s.min, s.max], `${name}: ${lc} ${metric} error bar labelled with min and max`);
      }
    }
  }
  t.same([...fills.entries()].map(([c, f]) => [c, [...f]]), raw.options.configs.map((c) => [LABEL[c], [COLOUR[LABEL[c]!]]]), 'one colour per configuration, the same in every panel');
});

t.test('tmem-hits-over-time.svg: a line per run and counter through the samples, round ticks', async (t) => {
  const svg = fs.readFileSync(path.join(out, 'tmem-hits-over-time.svg'), 'utf8');
  const xt = axisTicks(svg, 'X'), yt = axisTicks(svg, 'Y');
  checkRoundTicks(t, xt, 'x axis (seconds)', 640);
  checkRoundTicks(t, yt, 'y axis (count)', 0);
  const x = scaleOf(xt), y = scaleOf(yt);
  const lines = [...svg.matchAll(/<path aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="line mark" d="M([^"]+)" stroke="([^"]+)"[^>]*stroke-dasharray="([^"]+)"/g)]
    .map((m) => ({ l: label(m[1]!), pts: m[2]!.split('L').map((p) => p.split(',').map(num) as [number, number]), stroke: m[3]!, dash: m[4]! }));
  const tmemRuns = raw.runs.filter((r) => r.config === 'tmem' && r.samples?.length);
  t.equal(lines.length, 4 * tmemRuns.length, '4 counters x tmem runs lines');
  t.equal(new Set(lines.map((l) => l.stroke)).size, 4, 'one colour per counter');
  t.equal(new Set(lines.map((l) => l.dash)).size, tmemRuns.length, 'one dash pattern per run');
  const value: Record<string, (s: NonNullable<Run['samples']>[number]) => number> = {
    'cleancache hits': (s) => s.cc.hits, 'frontswap hits': (s) => s.fs.hits, puts: (s) => s.puts, gets: (s) => s.gets,
  };
  for (const l of lines) {
    const samples = tmemRuns[Number(l.l.run!.replace('run ', '')) - 1]!.samples!;
    const f = value[l.l.counter!]!;
    t.equal(l.pts.length, samples.length, `${l.l.run} ${l.l.counter}: a point per sample`);
    const bad = l.pts.filter(([px, py], i) => Math.abs(x.value(px) - samples[i]!.t) > x.tol || Math.abs(y.value(py) - f(samples[i]!)) > y.tol);
    t.same(bad, [], `${l.l.run} ${l.l.counter}: the points are the samples`);
  }
});

t.test('the PNGs decode to the SVG size at 2x, with the configurations\' colours', async (t) => {
  for (const name of ['io-by-config', 'tmem-hits-over-time']) {
    const svg = fs.readFileSync(path.join(out, `${name}.svg`), 'utf8');
    const m = /^<svg[^>]* width="(\d+)" height="(\d+)"/.exec(svg);
    if (!m) { t.fail(`${name}.svg has width and height`); continue; }
    const png = decodePng(fs.readFileSync(path.join(out, `${name}.png`)));
    t.same([png.width, png.height], [2 * num(m[1]!), 2 * num(m[2]!)], `${name}.png: IHDR ${png.width}x${png.height} is the SVG's ${m[1]}x${m[2]} at 2x`);
    t.equal(png.chunks.at(-1), 'IEND', `${name}.png ends with IEND`);
    if (name === 'io-by-config') {
      for (const c of raw.options.configs) t.ok(countColour(png.px, COLOUR[LABEL[c]!]!) > 1000, `${name}.png: ${LABEL[c]} bars drawn in ${COLOUR[LABEL[c]!]}`);
      // text was drawn: black pixels, from the axis labels and titles (resvg with the DejaVu font)
      t.ok(countColour(png.px, '#000000') > 500, `${name}.png: black text drawn`);
    }
  }
});

t.test('index.html: the figures and the tables of report.md', async (t) => {
  const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  for (const name of ['io-by-config', 'tmem-hits-over-time']) {
    t.match(html, `<a href="${name}.png">`, `links ${name}.png`);
    t.match(html, `<a href="${name}.svg">`, `links ${name}.svg`);
  }
  t.equal(html.match(/<svg /g)?.length, 2, 'both figures inline');
  // every row of every table in report.md is a row of index.html
  const mdRows = md.split('\n').filter((l) => l.startsWith('| ')).map((l) => l.slice(2, -2).split(' | '));
  t.equal(mdRows.length, 11, 'report.md has its three tables: results, per disk, pool kinds');
  for (const r of mdRows) {
    const tag = r[0] === 'config' || r[0] === 'pool kind' ? 'th' : 'td';
    t.match(html, `<tr>${r.map((x) => `<${tag}>${x.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}</${tag}>`).join('')}</tr>`, `row '${r[0]}' (${r.length} cells) in index.html`);
  }
  const ro = stats('notmem', (r) => sumDisks(r, 'readOps')), wall = stats('tmem', (r) => r.wallS!);
  t.match(html, `<td>${ro.median} [${ro.min}-${ro.max}]</td>`, 'no tmem read ops median [min-max] from the fixture');
  t.match(html, `<td>${wall.median.toFixed(1)} [${wall.min.toFixed(1)}-${wall.max.toFixed(1)}]</td>`, 'tmem wall time median [min-max] from the fixture');
  t.match(html, '<li>zswap #6: workload rc=2, built 7/8</li>', 'the failed run listed');
});

t.test('bad input: one line and a non-zero exit', async (t) => {
  const bad = path.join(out, 'bad.json');
  fs.writeFileSync(bad, JSON.stringify({ runs: 'x' }));
  const cases: [string[], number, RegExp][] = [
    [['--from', path.join(out, 'missing.json'), '--out', out], 1, /missing\.json: no such file/],
    [['--from', bad, '--out', out], 1, /not a kernbench raw\.json/],
    [['--out', out], 2, /--from RAW\.json is required/],
    [['--from', FIXTURE, '--bogus'], 2, /Unknown option '--bogus'/],
  ];
  for (const [args, status, msg] of cases) {
    const r = spawnSync(process.execPath, [REPORT, ...args], { encoding: 'utf8' });
    t.equal(r.status, status, `${args.join(' ')}: exit ${status}`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line (${r.stderr.trim()})`);
    t.match(r.stderr, msg);
  }
});
