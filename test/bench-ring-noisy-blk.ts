// ring-bench --noisy's blk kinds (README "Known limits": tmem-blk's overflow
// file is read and written on the one vring worker): a quiet tmem guest
// timed beside a tmem-blk guest whose pages go to the overflow file. Figures
// are the benchmark's business; this checks that the run works end to end,
// that its JSON carries the fields the README and the lead read, and that
// what it claims to measure happened: the blk guest's pages went to and came
// from the overflow file while the quiet guest was timed (blk-ram, the
// control: none did), and the cold kind's drop emptied the file's cache.
// No bound on any latency or rate.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { buildLoadgen, ROOT, UNTRACED } from './loadgen/harness.js';

buildLoadgen();
const BENCH = join(ROOT, 'test/bench/ring-bench.mjs');
const KINDS = ['blk-ram', 'blk-overflow', 'blk-overflow-cold'];

type Row = Record<string, unknown>;
const num = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const positive = (x: unknown): boolean => num(x) && x > 0;

/** The bench as users run it (without tap's NODE_OPTIONS loader in tmemd). */
function bench(args: string[], timeout: number) {
  return spawnSync(UNTRACED[0]!, [...UNTRACED.slice(1), process.execPath, BENCH, ...args], { encoding: 'utf8', timeout });
}

t.test('bench:ring --noisy --noise blk-ram,blk-overflow,blk-overflow-cold --json: the quiet guest beside overflow file I/O, in both modes', (t) => {
  const r = bench(['--noisy', '--noise', KINDS.join(','), '--rounds', '1', '--lat-ops', '300', '--json'], 240000);
  t.equal(r.status, 0, 'ring-bench exits 0', { stderr: r.stderr.slice(-3000) });
  const last = r.stdout.trimEnd().split('\n').pop() ?? '';
  const j = JSON.parse(last) as { noisy: Record<string, { noise: Record<string, Row>; baselineP99us: unknown }>; bound: Row; blkNoise: Row; rounds: unknown };
  t.equal(j.rounds, 1, 'rounds');
  t.equal(j.blkNoise.diskMib, 256, 'blkNoise: the disk');
  t.equal(j.blkNoise.maxmem, '32M', 'blkNoise: the VM limit');
  t.equal(typeof j.blkNoise.overflowDirFs, 'string', `blkNoise: the overflow folder's filesystem (${String(j.blkNoise.overflowDirFs)})`);
  t.equal(typeof j.bound.met, 'boolean', 'bound.met');
  t.same(Object.keys(j.noisy).sort(), ['notify', 'poll'], 'both modes');
  for (const [mode, m] of Object.entries(j.noisy)) {
    t.ok(positive(m.baselineP99us), `${mode}: baselineP99us = ${String(m.baselineP99us)}`);
    t.same(Object.keys(m.noise), KINDS, `${mode}: a record per kind, in --noise order`);
    for (const kind of KINDS) {
      const k = m.noise[kind]!;
      const where = `${mode}, ${kind}`;
      for (const f of ['p50us', 'p90us', 'p99us', 'maxUs', 'p99Ratio', 'noisyRequestsPerSec', 'noisyRequests', 'noisySeconds']) t.ok(positive(k[f]), `${where}: ${f} = ${String(k[f])}`);
      t.equal(typeof k.boundMet, 'boolean', `${where}: boundMet`);
      t.ok(Array.isArray(k.quietRoundsP99us) && (k.quietRoundsP99us as unknown[]).length === 1, `${where}: quietRoundsP99us has the round`);
      t.ok(num(k.noisyRamReads) && num(k.noisyRamWrites), `${where}: RAM pages read ${String(k.noisyRamReads)}, written ${String(k.noisyRamWrites)}`);
      if (kind === 'blk-ram') {
        // the control: every page in RAM, so the file saw nothing
        t.equal(k.noisyOverflowReads, 0, `${where}: no overflow page read`);
        t.equal(k.noisyOverflowWrites, 0, `${where}: no overflow page written`);
        t.equal(k.noisyOverflowPages, 0, `${where}: no page in the file`);
        t.ok(positive(k.noisyRamReads) && positive(k.noisyRamWrites), `${where}: its pages were read and written in RAM`);
        continue;
      }
      // the claim: overflow file I/O happened while the quiet guest was timed
      t.ok(positive(k.noisyOverflowReads), `${where}: overflow pages read while timed = ${String(k.noisyOverflowReads)}`);
      t.ok(positive(k.noisyOverflowWrites), `${where}: overflow pages written while timed = ${String(k.noisyOverflowWrites)}`);
      t.ok(positive(k.noisyOverflowPages), `${where}: pages in the file = ${String(k.noisyOverflowPages)}`);
      t.ok(positive(k.noisyOverflowFileBytes), `${where}: the file's allocated bytes = ${String(k.noisyOverflowFileBytes)}`);
      const atStart = (k.overflowFileCachedBytesAtStart as unknown[])[0];
      t.ok(num(atStart), `${where}: the file's cached bytes at the start = ${String(atStart)}`);
      if (kind === 'blk-overflow-cold') {
        const before = (k.overflowFileCachedBytesBeforeFirstDrop as unknown[])[0];
        t.ok(positive(before), `${where}: cached before the first drop = ${String(before)}`);
        t.ok(num(atStart) && num(before) && atStart < before / 2, `${where}: the drop emptied the file's cache (${String(before)} -> ${String(atStart)} bytes)`);
        t.ok(Array.isArray(k.overflowFileDrops) && num((k.overflowFileDrops as unknown[])[0]), `${where}: overflowFileDrops = ${JSON.stringify(k.overflowFileDrops)}`);
      }
    }
  }
  t.match(r.stderr, /poll\s+beside blk-overflow-cold\s+[\d.]+/, 'the table has the cold row');
  t.match(r.stderr, /notify, blk-overflow: the blk guest did [\d,]+ requests\/s .*overflow file [\d,]+ pages read, [\d,]+ written/, 'the blk guest line is printed');
  t.end();
});

t.test('bench:ring refuses the blk kinds\' bad flags in one line, before starting anything', (t) => {
  const cases: [string[], RegExp][] = [
    [['--noisy', '--noise', 'blk-overflow-cold', '--blk-overflow-dir', '/dev/shm'], /^ring-bench: blk-overflow-cold: \/dev\/shm is tmpfs, .*\n$/],
    [['--noisy', '--noise', 'long', '--blk-overflow-dir', '/tmp'], /^ring-bench: --blk-overflow-dir: only with --noisy and a noise kind of blk-ram, blk-overflow, blk-overflow-cold\n$/],
    [['--noisy', '--noise', 'blk-overflow', '--blk-overflow-dir', '/nonexistent/dir'], /^ring-bench: --blk-overflow-dir \/nonexistent\/dir: ENOENT\n$/],
    [['--noisy', '--noise', 'blk-overflow,blk-overflow'], /^ring-bench: --noise: a kind is named twice in 'blk-overflow,blk-overflow'\n$/],
    [['--noisy', '--noise', 'blk'], /^ring-bench: --noise: 'blk' is not one of long, split, valid, blk-ram, blk-overflow, blk-overflow-cold\n$/],
  ];
  for (const [args, re] of cases) {
    const r = bench(args, 30000);
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, re, `${args.join(' ')}: one line`);
  }
  t.end();
});
