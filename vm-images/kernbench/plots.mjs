// kernbench figures: Vega-Lite specs compiled with vega-lite, rendered to SVG by vega's
// headless View, and the SVG to PNG by resvg. Vega picks "nice" scales (round ticks from
// zero); error bars span the min and max of the runs around the median.
import fs from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import { compile } from 'vega-lite';
import { Resvg } from '@resvg/resvg-js';

// resvg draws text only with a font it was given: DejaVu Sans from Debian's fonts-dejavu-core
// (installed by `npm run setup`). Named in the SVG too, so the HTML page shows the same face.
export const FONT_FILE = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf';
const FONT_FAMILY = 'DejaVu Sans';
/** About how many y ticks (300 px high plots); vega rounds the step to 1, 2 or 5 × 10^k. */
const TICKS = 6;
/** PNG pixels per SVG pixel: sharp text on high-density screens and in print. */
export const PNG_SCALE = 2;

// one colour per configuration, the same in every figure (Tableau 10)
const CONFIG_COLOURS = { 'no tmem': '#4c78a8', tmem: '#f58518', zswap: '#54a24b' };
const COUNTER_COLOURS = ['#e45756', '#72b7b2', '#4c78a8', '#b279a2'];

const CONFIG = {
  background: 'white',
  font: FONT_FAMILY,
  padding: 8,
  title: { fontSize: 14, anchor: 'start' },
  axis: { labelFontSize: 12, titleFontSize: 12, grid: true, gridColor: '#e6e6e6' },
  legend: { labelFontSize: 12, titleFontSize: 12 },
  view: { stroke: null },
};

// the panels of the by-configuration figure: metrics of different size get their own y axis
const PANELS = [
  { name: 'diskops', title: 'Disk ops (QMP, all disks)', y: 'operations', metrics: [['readOps', 'read ops'], ['writeOps', 'write ops']] },
  { name: 'guestio', title: 'Guest I/O (/proc/vmstat)', y: 'events', metrics: [['pswpin', 'pswpin'], ['pswpout', 'pswpout'], ['pgmajfault', 'pgmajfault']] },
  { name: 'wall', title: 'Wall time of the make', y: 'seconds', metrics: [['wallS', 'wall s']] },
];

/**
 * Medians with the min and max of the runs, one row per configuration and metric.
 * `by` is summarize()'s byConfig, `label` maps a configuration to its name.
 */
export function configRows(by, configs, label) {
  const rows = [];
  for (const p of PANELS) {
    for (const [key, metric] of p.metrics) {
      for (const c of configs) {
        const b = by[c];
        if (!b?.ok || !Number.isFinite(b.median[key])) continue;
        const [min, max] = b.spread[key];
        rows.push({ panel: p.name, metric, config: label[c], median: b.median[key], min, max, runs: b.ok });
      }
    }
  }
  return rows;
}

/** Grouped bars (median) with min-max error bars, one panel per metric family. */
export function configSpec(rows, configLabels) {
  const colour = {
    field: 'config', type: 'nominal', title: 'configuration',
    scale: { domain: configLabels, range: configLabels.map((c) => CONFIG_COLOURS[c] ?? '#888888') },
  };
  const panel = (p) => {
    const x = { field: 'metric', type: 'nominal', title: null, sort: p.metrics.map((m) => m[1]), axis: { labelAngle: 0 } };
    const xOffset = { field: 'config', type: 'nominal', sort: configLabels };
    // nice and tickCount the same: the axis ends on a labelled round tick
    const y = { type: 'quantitative', title: p.y, scale: { zero: true, nice: TICKS }, axis: { tickCount: TICKS } };
    const tooltip = [{ field: 'config' }, { field: 'metric' }, { field: 'median' }, { field: 'min' }, { field: 'max' }, { field: 'runs' }];
    return {
      title: p.title,
      width: { step: 30 },
      height: 300,
      data: { values: rows.filter((r) => r.panel === p.name) },
      layer: [
        { name: `${p.name}_bars`, mark: { type: 'bar' }, encoding: { x, xOffset, y: { ...y, field: 'median' }, color: colour, tooltip } },
        // the run spread: a rule from min to max with caps at both ends
        { name: `${p.name}_spread`, mark: { type: 'rule', color: 'black', strokeWidth: 1.5 }, encoding: { x, xOffset, y: { ...y, field: 'min' }, y2: { field: 'max' }, tooltip } },
        { name: `${p.name}_min`, mark: { type: 'tick', color: 'black', opacity: 1, thickness: 1.5, size: 12, orient: 'horizontal' }, encoding: { x, xOffset, y: { ...y, field: 'min' } } },
        { name: `${p.name}_max`, mark: { type: 'tick', color: 'black', opacity: 1, thickness: 1.5, size: 12, orient: 'horizontal' }, encoding: { x, xOffset, y: { ...y, field: 'max' } } },
      ],
    };
  };
  const present = PANELS.filter((p) => rows.some((r) => r.panel === p.name));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'kernbench by configuration', subtitle: 'bars: median of the runs; error bars: min to max', offset: 12 },
    config: CONFIG,
    hconcat: present.map(panel),
    resolve: { scale: { y: 'independent' } },
  };
}

/** The tmem runs' sampled counters over time: one point per sample and counter. */
export function hitsRows(runs) {
  const counters = [
    ['cleancache hits', (s) => s.cc?.hits], ['frontswap hits', (s) => s.fs?.hits],
    ['puts', (s) => s.puts], ['gets', (s) => s.gets],
  ];
  const rows = [];
  runs.filter((r) => r.config === 'tmem' && r.samples?.length).forEach((r, i) => {
    for (const s of r.samples) {
      for (const [counter, value] of counters) {
        const v = value(s);
        if (Number.isFinite(s.t) && Number.isFinite(v)) rows.push({ run: `run ${i + 1}`, counter, t: s.t, value: v });
      }
    }
  });
  return rows;
}

/** Cumulative tmem counters of the tmem runs: one colour per counter, one dash per run. */
export function hitsSpec(rows) {
  const counters = ['cleancache hits', 'frontswap hits', 'puts', 'gets'];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'tmem over time (cumulative, tmem runs)', subtitle: 'tmemd control socket stats, sampled' },
    config: CONFIG,
    width: 640,
    height: 320,
    data: { values: rows },
    mark: { type: 'line', point: false, strokeWidth: 2 },
    encoding: {
      x: { field: 't', type: 'quantitative', title: 'seconds since boot start', scale: { zero: true, nice: 10 }, axis: { tickCount: 10 } },
      y: { field: 'value', type: 'quantitative', title: 'count', scale: { zero: true, nice: TICKS }, axis: { tickCount: TICKS } },
      color: { field: 'counter', type: 'nominal', title: 'counter', scale: { domain: counters, range: COUNTER_COLOURS } },
      strokeDash: { field: 'run', type: 'nominal', title: 'run' },
      detail: { field: 'run' },
    },
  };
}

/** Vega-Lite spec → SVG text (headless vega View, no canvas needed for SVG). */
export async function renderSvg(vlSpec) {
  const { spec } = compile(vlSpec);
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** SVG → PNG at PNG_SCALE, text in DejaVu Sans (no system font lookup: the same output everywhere). */
export function svgToPng(svg) {
  if (!fs.existsSync(FONT_FILE)) throw new Error(`font ${FONT_FILE} missing (Debian fonts-dejavu-core; npm run setup installs it)`);
  const r = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: PNG_SCALE },
    font: { loadSystemFonts: false, fontFiles: [FONT_FILE], defaultFontFamily: FONT_FAMILY, sansSerifFamily: FONT_FAMILY },
    logLevel: 'off',
  });
  return r.render().asPng();
}

/**
 * Draw the report's figures into outDir as NAME.svg and NAME.png (and NAME.vl.json, the
 * Vega-Lite spec, to re-style or open in the Vega editor). Returns [{ name, title, svg }].
 */
export async function writePlots(outDir, by, configs, runs, label) {
  const figures = [];
  const rows = configRows(by, configs, label);
  const labels = configs.filter((c) => by[c]?.ok).map((c) => label[c]);
  if (rows.length) figures.push({ name: 'io-by-config', title: 'Disk ops, guest I/O and wall time by configuration', spec: configSpec(rows, labels) });
  const hits = hitsRows(runs);
  if (hits.length) figures.push({ name: 'tmem-hits-over-time', title: 'tmem puts, gets and hits over time', spec: hitsSpec(hits) });
  const out = [];
  for (const f of figures) {
    const svg = await renderSvg(f.spec);
    fs.writeFileSync(path.join(outDir, `${f.name}.vl.json`), JSON.stringify(f.spec, null, 1));
    fs.writeFileSync(path.join(outDir, `${f.name}.svg`), svg);
    fs.writeFileSync(path.join(outDir, `${f.name}.png`), svgToPng(svg));
    out.push({ name: f.name, title: f.title, svg });
  }
  return out;
}
