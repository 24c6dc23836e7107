// Live limits: `tmemctl set capacity=SIZE` and `tmemctl set VM maxmem=SIZE`.
// The store's rules first (shrinking evicts ephemeral pages oldest first,
// persistent pages above a lowered limit are kept and new pages refused, as
// Xen's tmem did), then the command line, then a live tmemd under a load.
import t from 'tap';
import { TMEM_POOL_PERSIST as PERSIST, TMEM_S_MISS, TMEM_S_NOSPACE, TMEM_S_OK } from '../shared/abi.js';
import { INFO_CAPACITY_PAGES, INFO_LENGTH, INFO_PERSISTENT_LIMIT_PAGES, TmemStore } from '../host/tmem/store/store.js';

const NO_UUID = new Uint8Array(16);
const oid = (a: number) => new Uint32Array([a, 0, 0, 0, 0, 0]);
const page = (fill: number) => new Uint8Array(4096).fill(fill);
const dst = new Uint8Array(4096);

function store(capacity: number) {
  const s = new TmemStore({ capacityPages: capacity, maxPoolsPerGuest: 4 });
  const g = s.addGuest({ name: 'vm1', maxmemPages: 10_000, ramPages: 100, shareGroup: null });
  const eph = s.newPool(g, 0, 4096, NO_UUID, 0, false);
  const per = s.newPool(g, PERSIST, 4096, NO_UUID, 0, false);
  return { s, g, eph, per };
}
const host = (s: TmemStore) => s.stats() as { capacityPages: number; capacityMaxPages: number; freePages: number; ephemeralPages: number; persistentPages: number };

t.test('store: shrinking evicts ephemeral pages, oldest first; growing gives room at once', async (t) => {
  const { s, g, eph, per } = store(64);
  for (let i = 0; i < 20; i++) t.equal(s.putPage(g, per, oid(1), i, page(i), 0), TMEM_S_OK);
  for (let i = 0; i < 40; i++) t.equal(s.putPage(g, eph, oid(2), i, page(100 + i), 0), TMEM_S_OK);
  t.same([host(s).freePages, host(s).ephemeralPages, host(s).persistentPages], [4, 40, 20]);
  const r = s.setCapacity(30);
  t.same(r, { evicted: 30, reclaimed: 0, overPages: 0 }, '60 held, capacity 30: 30 ephemeral pages evicted');
  t.same([host(s).capacityPages, host(s).capacityMaxPages, host(s).freePages, host(s).ephemeralPages, host(s).persistentPages], [30, 64, 0, 10, 20]);
  t.equal(s.getPage(g, eph, oid(2), 29, 0, dst, 0), TMEM_S_MISS, 'the oldest ephemeral pages went (a MISS)');
  t.equal(s.getPage(g, eph, oid(2), 30, 0, dst, 0), TMEM_S_OK, 'the newest stayed');
  t.equal(dst[0], 130, 'with their data');
  for (let i = 0; i < 20; i++) t.equal(s.getPage(g, per, oid(1), i, 0, dst, 0) === TMEM_S_OK && dst[0] === i, true, `persistent page ${i} kept`);
  const info = new Float64Array(INFO_LENGTH);
  s.info(g, info);
  t.equal(info[INFO_CAPACITY_PAGES], 30, 'INFO tells the guest the capacity in force');
  // the GET took its page (private ephemeral pools are exclusive): 29 held, room for one
  t.equal(s.putPage(g, per, oid(1), 100, page(1), 0), TMEM_S_OK);
  t.equal(host(s).ephemeralPages, 9, 'a free page: nothing evicted');
  // at the capacity: a persistent put evicts an ephemeral page, as at full capacity
  t.equal(s.putPage(g, per, oid(1), 101, page(1), 0), TMEM_S_OK);
  t.same([host(s).ephemeralPages, host(s).persistentPages, host(s).freePages], [8, 22, 0], 'one ephemeral page made room');
  t.same(s.setCapacity(64), { evicted: 0, reclaimed: 0, overPages: 0 });
  t.equal(host(s).freePages, 64 - 8 - 22);
  for (let i = 0; i < 30; i++) t.equal(s.putPage(g, eph, oid(3), i, page(1), 0), TMEM_S_OK, `room again after growing (${i})`);
  t.equal(s.setCapacity(65), null, 'above what the store was sized for: refused, nothing changed');
  t.equal(s.setCapacity(-1), null);
  t.equal(s.setCapacity(1.5), null);
  t.equal(host(s).capacityPages, 64);
});

t.test('store: persistent pages above a lowered capacity are kept; new pages refused until they drop below', async (t) => {
  const { s, g, eph, per } = store(64);
  for (let i = 0; i < 40; i++) s.putPage(g, per, oid(1), i, page(i), 0);
  for (let i = 0; i < 10; i++) s.putPage(g, eph, oid(2), i, page(i), 0);
  t.same(s.setCapacity(32), { evicted: 10, reclaimed: 0, overPages: 8 }, 'every ephemeral page evicted, 8 persistent pages above the capacity');
  t.same([host(s).persistentPages, host(s).ephemeralPages, host(s).freePages], [40, 0, 0]);
  t.equal(s.putPage(g, per, oid(1), 1000, page(1), 0), TMEM_S_NOSPACE, 'a new persistent page: NOSPACE');
  t.equal(s.putPage(g, eph, oid(2), 1000, page(1), 0), TMEM_S_NOSPACE, 'a new ephemeral page: NOSPACE');
  t.equal(s.putPage(g, per, oid(1), 5, page(55), 0), TMEM_S_OK, 'an overwrite in place takes no page: allowed');
  for (let i = 0; i < 40; i++) t.equal(s.getPage(g, per, oid(1), i, 0, dst, 0) === TMEM_S_OK && dst[0] === (i === 5 ? 55 : i), true, `page ${i} intact`);
  for (let i = 0; i < 9; i++) s.flushPage(g, per, oid(1), i);
  t.equal(host(s).persistentPages, 31);
  t.equal(s.putPage(g, per, oid(1), 1000, page(1), 0), TMEM_S_OK, 'below the capacity again: puts accepted');
  t.equal(s.putPage(g, per, oid(1), 1001, page(1), 0), TMEM_S_NOSPACE, 'and refused again at it (no ephemeral page left to evict)');
});

t.test('store: destroyed pools are reclaimed before any live page is evicted', async (t) => {
  const { s, g, eph, per } = store(64);
  for (let i = 0; i < 30; i++) s.putPage(g, per, oid(1), i, page(i), 0);
  for (let i = 0; i < 20; i++) s.putPage(g, eph, oid(2), i, page(i), 0);
  s.destroyPool(g, per); // 30 pages pending reclaim
  t.same(s.setCapacity(25), { evicted: 0, reclaimed: 25, overPages: 0 }, '50 held: 25 pages of the destroyed pool freed, just enough');
  t.equal(host(s).ephemeralPages, 20, 'no ephemeral page evicted');
  t.same(s.setCapacity(15), { evicted: 5, reclaimed: 5, overPages: 0 }, 'then the rest of the pending pages, then the oldest ephemeral pages');
});

t.test('store: a lowered maxmem keeps the persistent pages above it and refuses new ones', async (t) => {
  const { s, g, per } = store(256);
  s.setMaxmem(g, 100 + 50);
  for (let i = 0; i < 50; i++) t.equal(s.putPage(g, per, oid(1), i, page(i), 0), TMEM_S_OK);
  t.equal(s.putPage(g, per, oid(1), 50, page(1), 0), TMEM_S_NOSPACE, 'at the limit');
  s.setMaxmem(g, 100 + 20);
  const info = new Float64Array(INFO_LENGTH);
  s.info(g, info);
  t.equal(info[INFO_PERSISTENT_LIMIT_PAGES], 20);
  for (let i = 0; i < 50; i++) t.equal(s.getPage(g, per, oid(1), i, 0, dst, 0) === TMEM_S_OK && dst[0] === i, true, `page ${i} kept above the lowered limit`);
  t.equal(s.putPage(g, per, oid(1), 60, page(1), 0), TMEM_S_NOSPACE, 'new pages refused');
  s.setMaxmem(g, 100 + 80);
  t.equal(s.putPage(g, per, oid(1), 60, page(1), 0), TMEM_S_OK, 'raised: accepted again');
});

// ---- the command line: every bad input is one line and exit 2, before anything is sent

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const TMEMCTL = join(ROOT, 'dist/host/tmemctl.js');

t.test('tmemctl set: bad input is one line and exit 2, nothing sent', async (t) => {
  t.ok(existsSync(TMEMCTL), `${TMEMCTL} is built (npm run build)`);
  // a control path where nothing listens: a request that got through would fail with exit 1 instead
  const ctl = '/nonexistent-folder/tmemd.sock';
  const cases: [string[], RegExp][] = [
    [['set'], /^tmemctl: set takes capacity=SIZE, or a VM name and maxmem=SIZE \(see tmemctl --help\)\n$/],
    [['set', 'vm0'], /^tmemctl: set vm0: nothing to set \(maxmem=SIZE\)/],
    [['set', 'vm0', 'maxmem=lots'], /^tmemctl: set: maxmem: 'lots' is not a size \(use bytes or a number with K, M, G, T, e\.g\. 512M or 2G\)/],
    [['set', 'vm0', 'maxmem=1.5G'], /^tmemctl: set: maxmem: '1\.5G' is not a size/],
    [['set', 'vm0', 'maxmem='], /^tmemctl: set: maxmem: '' is not a size/],
    [['set', 'capacity=-1G'], /^tmemctl: set: capacity: '-1G' is not a size/],
    [['set', 'vm0', 'colour=red'], /^tmemctl: set vm0: unknown key 'colour' \(a VM: maxmem\)/],
    [['set', 'colour=red'], /^tmemctl: set: unknown key 'colour' \(the host: capacity\)/],
    [['set', 'vm0', 'capacity=1G'], /^tmemctl: set vm0: capacity is the host's, not a VM's: tmemctl set capacity=SIZE/],
    [['set', 'maxmem=1G'], /^tmemctl: set: maxmem is a VM's: tmemctl set NAME maxmem=SIZE/],
    [['set', 'vm0', 'maxmem=1G', 'maxmem=2G'], /^tmemctl: set: maxmem given twice/],
    [['set', 'vm0', 'maxmem'], /^tmemctl: set: 'maxmem' is not key=value/],
    [['set', 'capacity=1G', 'maxmem=1G'], /^tmemctl: set: maxmem is a VM's/],
    [['sett', 'capacity=1G'], /^tmemctl: unknown command 'sett' \(guests, stats, top, freeze, thaw, flush, share-group, set\)/],
    [['--frob', 'set', 'capacity=1G'], /^tmemctl: unknown option --frob/],
    [['--json=yes', 'stats'], /^tmemctl: --json takes no value/],
    [['--control'], /^tmemctl: --control needs a value/],
    [['constructor'], /^tmemctl: unknown command 'constructor'/],
  ];
  for (const [args, re] of cases) {
    const r = spawnSync(process.execPath, [TMEMCTL, '--control', ctl, ...args], { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, re, args.join(' '));
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
    t.equal(r.stdout, '', 'nothing on stdout');
  }
  const ok = spawnSync(process.execPath, [TMEMCTL, '--control', ctl, 'set', 'vm0', 'maxmem=2G'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(ok.status, 1, 'a good request goes to the daemon (none here: exit 1)');
  t.match(ok.stderr, /cannot reach tmemd on \/nonexistent-folder\/tmemd\.sock/);
});
