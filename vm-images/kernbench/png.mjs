// A tiny PNG writer and chart drawer (no dependencies): an RGBA canvas, rectangles,
// lines, 5x7 bitmap text, bar and line charts; PNG = signature + IHDR + zlib IDAT + IEND.
import zlib from 'node:zlib';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
export function crc32(buf) {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** Encode an RGBA buffer (width*height*4) as PNG. */
export function encodePng(width, height, rgba) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 6; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0; // 8-bit RGBA
  const raw = Buffer.alloc((width * 4 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 4 + 1)] = 0; // filter: none
    Buffer.from(rgba.buffer, rgba.byteOffset + y * width * 4, width * 4).copy(raw, y * (width * 4 + 1) + 1);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0)),
  ]);
}

// 5x7 font, columns LSB at the top (the classic glcdfont), ' ' .. 'Z' and '_'
const FONT_HEX = '0000000000 00005f0000 0007000700 147f147f14 242a7f2a12 2313086462 3649552250 0005030000 001c224100 0041221c00 082a1c2a08 08083e0808 0050300000 0808080808 0060600000 2010080402 3e5149453e 00427f4000 4261514946 2141454b31 1814127f10 2745454539 3c4a494930 0171090503 3649494936 064949291e 0036360000 0056360000 0008142241 1414141414 4122140800 0201510906 324979413e 7e1111117e 7f49494936 3e41414122 7f4141221c 7f49494941 7f09090101 3e41415132 7f0808087f 00417f4100 2040413f01 7f08142241 7f40404040 7f0204027f 7f0408107f 3e4141413e 7f09090906 3e4151215e 7f09192946 4649494931 01017f0101 3f4040403f 1f2040201f 7f2018207f 6314081463 0304780403 6151494543'
  .split(' ');
const GLYPHS = new Map();
{
  FONT_HEX.forEach((h, i) => GLYPHS.set(String.fromCharCode(0x20 + i), h.match(/../g).map((x) => parseInt(x, 16))));
  GLYPHS.set('_', [0x40, 0x40, 0x40, 0x40, 0x40]);
}

export class Canvas {
  constructor(w, h, bg = [255, 255, 255, 255]) {
    this.w = w; this.h = h; this.px = new Uint8Array(w * h * 4);
    for (let i = 0; i < w * h; i++) this.px.set(bg, i * 4);
  }
  set(x, y, c) {
    x = Math.round(x); y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.w || y >= this.h) return;
    this.px.set(c.length === 4 ? c : [...c, 255], (y * this.w + x) * 4);
  }
  rect(x, y, w, h, c) {
    for (let j = Math.round(y); j < Math.round(y + h); j++) for (let i = Math.round(x); i < Math.round(x + w); i++) this.set(i, j, c);
  }
  /**
   * A line; with dash [on, off] only `on` of every `on + off` pixels are drawn,
   * counting from `phase` (returned, so that a polyline's dashes run on).
   */
  line(x0, y0, x1, y1, c, width = 1, dash = null, phase = 0) {
    const n = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let k = 0; k <= n; k++) {
      if (dash && (phase + k) % (dash[0] + dash[1]) >= dash[0]) continue;
      const x = x0 + ((x1 - x0) * k) / n, y = y0 + ((y1 - y0) * k) / n;
      for (let a = 0; a < width; a++) for (let b = 0; b < width; b++) this.set(x + a - (width >> 1), y + b - (width >> 1), c);
    }
    return phase + Math.round(n);
  }
  /** Text with the 5x7 font, scale s; returns the width drawn. */
  text(x, y, str, c = [0, 0, 0], s = 2) {
    let cx = x;
    for (const ch of String(str)) {
      const g = GLYPHS.get(ch.toUpperCase()) || GLYPHS.get('?');
      for (let col = 0; col < 5; col++) for (let row = 0; row < 7; row++) if (g[col] & (1 << row)) this.rect(cx + col * s, y + row * s, s, s, c);
      cx += 6 * s;
    }
    return cx - x;
  }
  textWidth(str, s = 2) { return String(str).length * 6 * s; }
  png() { return encodePng(this.w, this.h, this.px); }
}

export const PALETTE = [[52, 101, 164], [204, 0, 0], [78, 154, 6], [245, 121, 0], [117, 80, 123], [193, 125, 17], [85, 87, 83]];

export function fmtNum(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(0) + 'K';
  if (a >= 100) return v.toFixed(0);
  return +v.toFixed(1) + '';
}

/**
 * Grouped bar chart in a panel: groups = [{ label, values: [per series] }], series = names.
 */
export function barPanel(cv, { x, y, w, h, title, groups, series, colors = PALETTE }) {
  cv.text(x + 8, y + 6, title, [0, 0, 0], 2);
  const top = y + 34, bottom = y + h - 44, left = x + 70, right = x + w - 10;
  const max = Math.max(1e-9, ...groups.flatMap((g) => g.values.filter(Number.isFinite)));
  cv.line(left, top, left, bottom, [0, 0, 0]); cv.line(left, bottom, right, bottom, [0, 0, 0]);
  for (let k = 0; k <= 4; k++) {
    const yy = bottom - ((bottom - top) * k) / 4;
    cv.line(left - 4, yy, left, yy, [0, 0, 0]);
    if (k) cv.line(left + 1, yy, right, yy, [225, 225, 225]);
    const lab = fmtNum((max * k) / 4);
    cv.text(left - 8 - cv.textWidth(lab, 1) , yy - 3, lab, [0, 0, 0], 1);
  }
  const gw = (right - left) / Math.max(1, groups.length);
  const bw = Math.max(2, (gw * 0.8) / Math.max(1, series.length));
  groups.forEach((g, gi) => {
    const gx = left + gi * gw + gw * 0.1;
    g.values.forEach((v, si) => {
      if (!Number.isFinite(v)) return;
      const bh = ((bottom - top) * v) / max;
      cv.rect(gx + si * bw, bottom - bh, bw - 2, bh, colors[si % colors.length]);
      const lab = fmtNum(v);
      if (cv.textWidth(lab, 1) <= bw + 6) cv.text(gx + si * bw + (bw - 2 - cv.textWidth(lab, 1)) / 2, bottom - bh - 10, lab, [0, 0, 0], 1);
    });
    cv.text(gx + (gw * 0.8 - cv.textWidth(g.label, 2)) / 2, bottom + 8, g.label, [0, 0, 0], 2);
  });
  let lx = left;
  if (series.length > 1) series.forEach((s, si) => {
    cv.rect(lx, bottom + 30, 10, 10, colors[si % colors.length]);
    lx += 14 + cv.text(lx + 14, bottom + 32, s, [0, 0, 0], 1) + 10;
  });
}

/** Line chart: lines = [{ name, points: [[x, y]...] }]. */
/**
 * Lines over a shared x axis. A line may set its own `color` and `dash`
 * ([on, off] pixels); `legend` entries ({ name, color, dash }) replace the
 * default legend of one entry per line.
 */
export function linePanel(cv, { x, y, w, h, title, xLabel, lines, colors = PALETTE, legend = null }) {
  cv.text(x + 8, y + 6, title, [0, 0, 0], 2);
  const top = y + 34, bottom = y + h - 50, left = x + 70, right = x + w - 20;
  const pts = lines.flatMap((l) => l.points);
  const xmax = Math.max(1e-9, ...pts.map((p) => p[0]));
  const ymax = Math.max(1e-9, ...pts.map((p) => p[1]));
  cv.line(left, top, left, bottom, [0, 0, 0]); cv.line(left, bottom, right, bottom, [0, 0, 0]);
  for (let k = 0; k <= 4; k++) {
    const yy = bottom - ((bottom - top) * k) / 4;
    if (k) cv.line(left + 1, yy, right, yy, [225, 225, 225]);
    const lab = fmtNum((ymax * k) / 4);
    cv.text(left - 8 - cv.textWidth(lab, 1), yy - 3, lab, [0, 0, 0], 1);
    const xx = left + ((right - left) * k) / 4;
    cv.line(xx, bottom, xx, bottom + 4, [0, 0, 0]);
    const xl = fmtNum((xmax * k) / 4);
    cv.text(xx - cv.textWidth(xl, 1) / 2, bottom + 8, xl, [0, 0, 0], 1);
  }
  cv.text(right - cv.textWidth(xLabel, 1), bottom + 20, xLabel, [0, 0, 0], 1);
  const colorOf = (l, li) => l.color ?? colors[li % colors.length];
  lines.forEach((l, li) => {
    let prev = null, phase = 0;
    for (const [px, py] of l.points) {
      const sx = left + ((right - left) * px) / xmax, sy = bottom - ((bottom - top) * py) / ymax;
      if (prev) phase = cv.line(prev[0], prev[1], sx, sy, colorOf(l, li), 2, l.dash ?? null, phase);
      prev = [sx, sy];
    }
  });
  const entries = legend ?? lines.map((l, li) => ({ name: l.name, color: colorOf(l, li), dash: l.dash ?? null }));
  let lx = left;
  for (const e of entries) {
    cv.line(lx, bottom + 39, lx + 18, bottom + 39, e.color, 2, e.dash);
    lx += 22 + cv.text(lx + 22, bottom + 36, e.name, [0, 0, 0], 1) + 12;
  }
}
