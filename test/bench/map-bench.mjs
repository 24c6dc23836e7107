#!/usr/bin/env node
// What mapping a guest's RAM costs the data-plane worker (issue 13 item 2:
// one SET_MEM_TABLE of 256 GiB of sparse RAM stalled every guest for 1.2 s).
//
//   node test/bench/map-bench.mjs [--gib N] [--json]      (after npm run build)
//
// For a sparse, sealed memfd of N GiB (default 256) it times, in this process:
//   mmap:   native.mmapShared (mmap(2) plus the lazy window objects: what
//           SET_MEM_TABLE costs now)
//   views:  making every window's Uint8Array (koffi.view = an external
//           ArrayBuffer per GiB: what SET_MEM_TABLE cost before the windows
//           were made lazy), with the V8 GCs it triggers counted
//   munmap: native.munmap
// Figures go to stdout; with --json one JSON object as the last line.
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const built = join(root, 'dist/native/index.js');
if (!existsSync(built)) {
  console.error(`map-bench: ${built} is missing: run npm run build first`);
  process.exit(1);
}
const native = await import(built);

const args = process.argv.slice(2);
const json = args.includes('--json');
const gi = args.indexOf('--gib');
const gib = gi >= 0 ? Number(args[gi + 1]) : 256;
if (!(Number.isInteger(gib) && gib >= 1 && gib <= 4096)) {
  console.error(`map-bench: --gib must be a whole number 1..4096, not ${args[gi + 1]}`);
  process.exit(2);
}

let gcs = 0;
let gcMs = 0;
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcs++;
    gcMs += e.duration;
  }
});
obs.observe({ entryTypes: ['gc'] });
const tick = () => new Promise((r) => setTimeout(r, 200)); // lets the observer report (gc entries arrive late)

const size = BigInt(gib) << 30n;
const fd = native.memfdCreate('map-bench', size);
let t0 = performance.now();
const m = native.mmapShared(fd, size, 0n);
const mmapMs = performance.now() - t0;
await tick();
const gcBefore = gcs;
const gcMsBefore = gcMs;
t0 = performance.now();
let bytes = 0;
for (const w of m.windows) bytes += w.bytes.length;
const viewsMs = performance.now() - t0;
await tick();
const viewGcs = gcs - gcBefore;
const viewGcMs = gcMs - gcMsBefore;
if (bytes !== Number(size)) throw new Error(`views cover ${bytes} bytes, not ${size}`);
t0 = performance.now();
native.munmap(m);
const munmapMs = performance.now() - t0;
native.close(fd);
obs.disconnect();

const r = {
  gib,
  windows: m.windows.length,
  mmapMs: +mmapMs.toFixed(3),
  viewsMs: +viewsMs.toFixed(1),
  viewsMsPerGib: +(viewsMs / gib).toFixed(2),
  viewGcs,
  viewGcMs: +viewGcMs.toFixed(1),
  munmapMs: +munmapMs.toFixed(3),
};
console.log(`guest RAM ${gib} GiB (sparse sealed memfd), ${r.windows} windows of 1 GiB`);
console.log(`  mmapShared (lazy windows, SET_MEM_TABLE now)   ${r.mmapMs} ms`);
console.log(`  every window's view (SET_MEM_TABLE before)     ${r.viewsMs} ms (${r.viewsMsPerGib} ms per GiB; ${viewGcs} GCs, ${r.viewGcMs} ms in GC)`);
console.log(`  munmap                                         ${r.munmapMs} ms`);
if (json) console.log(JSON.stringify(r));
