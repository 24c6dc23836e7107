// Per-VM log rate limiting (issue 13 item 6): a front-end that connects
// over and over (or is refused as a second guest over and over) costs at
// most VM_LOG_RATE_LIMIT.burst lines per interval and then one
// "suppressed K messages" line, not a line per connection. The limiter
// itself with a fake clock, then the built daemon under a connection flood.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, rateLimited, VM_LOG_RATE_LIMIT } from '../host/log.js';
import * as native from '../native/index.js';
import { Daemon } from './vhost/harness.js';

t.test('rateLimited: burst per interval, one suppressed line when the interval ends, debug untouched', (t) => {
  const lines: string[] = [];
  const base = createLogger('debug', (l) => lines.push(l));
  let now = 1000;
  const timers: { at: number; fn: () => void }[] = [];
  const clock = { now: () => now, later: (fn: () => void, ms: number) => timers.push({ at: now + ms, fn }) };
  const log = rateLimited(base, 'vm x', { burst: 3, intervalMs: 1000 }, clock);
  for (let i = 0; i < 10; i++) log.info(`line ${i}`);
  log.debug('debug is not limited');
  t.same(lines, ['tmemd info: line 0', 'tmemd info: line 1', 'tmemd info: line 2', 'tmemd debug: debug is not limited']);
  t.equal(timers.length, 1, 'one timer for the summary');
  now = timers[0]!.at;
  timers.shift()!.fn();
  t.equal(lines.at(-1), 'tmemd warn: vm x: suppressed 7 log messages (more than 3 in 1 s)');
  // A new interval: lines pass again; an error counts like the rest.
  log.error('after');
  t.equal(lines.at(-1), 'tmemd error: after');
  log.warn('a');
  log.warn('b');
  log.warn('c (suppressed)');
  t.equal(lines.length, 8, 'the 4th line of the interval is dropped');
  // The flood stops, a line comes after the interval: the count goes first, then the line.
  now += 5000;
  log.info('later');
  t.same(lines.slice(-2), ['tmemd warn: vm x: suppressed 1 log message (more than 3 in 1 s)', 'tmemd info: later']);
  // The timer of that interval finds nothing left to say.
  for (const x of timers.splice(0)) x.fn();
  t.equal(lines.length, 10);
  t.end();
});

t.test('the daemon under a connection flood: log lines bounded per VM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-ratelimit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const quiet = join(dir, 'quiet.sock');
  const d = new Daemon(['--vm', `name=flood,socket=${sock},maxmem=1G`, '--vm', `name=quiet,socket=${quiet},maxmem=1G`, '--control', 'none', '--capacity', '16M', '--queues-mode', 'notify'], { waitMs: 90000 });
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  const t0 = Date.now();
  // One guest holds the socket; then 1,000 more connections, each refused with a warning.
  const holder = native.connectUnix(sock);
  await d.waitFor(/vm flood: guest connected/);
  const N = 1000;
  for (let i = 0; i < N; i++) {
    const c = native.connectUnix(sock);
    native.close(c);
    if (i % 100 === 99) await new Promise((r) => setImmediate(r));
  }
  native.close(holder);
  // Then 300 connect/leave cycles.
  for (let i = 0; i < 300; i++) {
    const c = native.connectUnix(sock);
    native.close(c);
    await new Promise((r) => setTimeout(r, 1));
  }
  // The other VM still gets its lines: the budget is per VM.
  const q = native.connectUnix(quiet);
  await d.waitFor(/vm quiet: guest connected/);
  native.close(q);
  await d.waitFor(/vm quiet: guest left/);
  const seconds = (Date.now() - t0) / 1000;
  // The suppressed count is written when the interval ends.
  await d.waitFor(/vm flood: suppressed \d+ log messages \(more than 100 in 60 s\)/, VM_LOG_RATE_LIMIT.intervalMs + 30000);
  const floodLines = d.stderr.split('\n').filter((l) => /^tmemd \w+: vm flood: /.test(l));
  const suppressed = floodLines.filter((l) => /suppressed \d+ log messages/.test(l));
  const intervals = Math.ceil((seconds * 1000) / VM_LOG_RATE_LIMIT.intervalMs) + 1;
  const bound = intervals * (VM_LOG_RATE_LIMIT.burst + 1) + 2; // + the "listening" line and a summary
  t.ok(floodLines.length <= bound, `${floodLines.length} lines for vm flood after ${N} refused connections and 300 cycles in ${seconds.toFixed(1)} s (bound ${bound})`);
  t.ok(suppressed.length >= 1, `suppressed lines: ${JSON.stringify(suppressed)}`);
  const dropped = suppressed.reduce((a, l) => a + Number(/suppressed (\d+)/.exec(l)![1]), 0);
  t.ok(dropped >= N, `${dropped} messages suppressed`);
  t.match(d.stderr, /vm flood: refused a second connection on .* from pid \d+ uid \d+: a guest is already connected/, 'the first refusals are logged in full');
});
