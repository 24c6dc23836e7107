// The tmem device's per-VM state and the operator's control requests, with a
// recording data plane: freeze and share group survive reconnects, every
// request gets an answer, every bad one a one-line error.
import t from 'tap';
import { connect } from 'node:net';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer, handleControlRequest, type ControlContext } from '../host/control/server.js';
import { requestDaemon } from '../host/control/client.js';
import { silentLogger } from '../host/log.js';
import { type TmemDataPlane, TmemVm } from '../host/tmem/vm.js';

class FakeDp {
  calls: unknown[][] = [];
  next = 1;
  failNext: string | null = null;
  private rec(...a: unknown[]) {
    this.calls.push(a);
    if (this.failNext === a[0]) {
      this.failNext = null;
      const e = new Error(`worker says no to ${String(a[0])}`);
      e.name = 'DataPlaneError';
      throw e;
    }
  }
  addGuest(o: { name: string }) {
    this.rec('addGuest', o.name);
    return this.next++;
  }
  removeGuest(g: number) {
    this.rec('removeGuest', g);
  }
  setFrozen(g: number, f: boolean) {
    this.rec('setFrozen', g, f);
  }
  flushGuest(g: number) {
    this.rec('flushGuest', g);
  }
  setShareGroup(g: number, s: string | null) {
    this.rec('setShareGroup', g, s);
  }
  setMemTable(g: number, r: unknown[]) {
    this.rec('setMemTable', g, r.length);
  }
  setVringEnable(g: number, q: number, e: boolean) {
    this.rec('setVringEnable', g, q, e);
  }
}

function setup() {
  const dp = new FakeDp();
  const vm = new TmemVm({ name: 'web', maxmemBytes: 4n << 30n, shareGroup: null, where: '/tmp/web.sock' }, dp as unknown as TmemDataPlane, { numQueues: 2, log: silentLogger });
  const other = new TmemVm({ name: 'db', maxmemBytes: 1n << 30n, shareGroup: 'g', where: 'fd=3' }, dp as unknown as TmemDataPlane, { numQueues: 2, log: silentLogger });
  const ctx: ControlContext = { vms: [vm, other], stats: () => ({ mode: 'poll', counters: { requests: 5 }, guests: [{ id: 1, queues: [] }] }), info: () => ({ capacityBytes: '1024' }), log: silentLogger };
  const req = (r: Record<string, unknown>) => handleControlRequest(ctx, r);
  return { dp, vm, other, ctx, req };
}

t.test('freeze set while no guest is connected applies when one connects, and across reconnects', (t) => {
  const { dp, vm, req } = setup();
  t.match(req({ cmd: 'freeze', name: 'web' }), { ok: true, result: { name: 'web', frozen: true, connected: false } });
  t.same(dp.calls, [], 'nothing to tell the data plane yet');
  const s = vm.open();
  t.same(dp.calls, [['addGuest', 'web'], ['setFrozen', 1, true]]);
  s.close();
  vm.open();
  t.same(dp.calls.slice(-2), [['addGuest', 'web'], ['setFrozen', 2, true]], 'a new guest of the same VM is frozen too');
  t.match(req({ cmd: 'thaw', name: 'web' }), { ok: true, result: { frozen: false } });
  t.same(dp.calls.at(-1), ['setFrozen', 2, false]);
  t.end();
});

t.test('flush needs a connected guest', (t) => {
  const { dp, vm, req } = setup();
  t.same(req({ cmd: 'flush', name: 'web' }), { ok: false, error: 'vm web has no guest connected' });
  vm.open();
  t.match(req({ cmd: 'flush', name: 'web' }), { ok: true });
  t.same(dp.calls.at(-1), ['flushGuest', 1]);
  t.end();
});

t.test('share group: set live and kept for the next guest', (t) => {
  const { dp, vm, req } = setup();
  vm.open();
  t.match(req({ cmd: 'share-group', name: 'web', group: 'g' }), { ok: true, result: { shareGroup: 'g' } });
  t.same(dp.calls.at(-1), ['setShareGroup', 1, 'g']);
  t.match(req({ cmd: 'share-group', name: 'web', group: null }), { ok: true, result: { shareGroup: null } });
  t.match(req({ cmd: 'share-group', name: 'web', group: 'bad group' }), { ok: false, error: /must be a name/ });
  t.match(req({ cmd: 'share-group', name: 'web', group: 7 }), { ok: false });
  t.end();
});

t.test('guests and stats', (t) => {
  const { vm, req } = setup();
  vm.open().memoryChanged([{ fd: 9, guestPhysAddr: 0n, size: 1n << 30n, userspaceAddr: 0n, mmapOffset: 0n }]);
  const g = req({ cmd: 'guests', id: 7 });
  t.match(g, { id: 7, ok: true });
  t.match((g as { result: unknown[] }).result, [
    { name: 'web', connected: true, guestId: 1, ramBytes: String(1n << 30n), maxmemBytes: String(4n << 30n), socket: '/tmp/web.sock' },
    { name: 'db', connected: false, guestId: null, shareGroup: 'g', socket: 'fd=3' },
  ]);
  const s = req({ cmd: 'stats' }) as { ok: true; result: { host: Record<string, unknown>; guests: { name: string; dataplane: unknown }[] } };
  t.equal(s.ok, true);
  t.same(s.result.host, { capacityBytes: '1024', mode: 'poll', counters: { requests: 5 } });
  t.same(s.result.guests.map((x) => [x.name, x.dataplane]), [
    ['web', { id: 1, queues: [] }],
    ['db', null],
  ]);
  t.end();
});

t.test('bad requests: one-line errors, never a throw', (t) => {
  const { dp, vm, req } = setup();
  t.match(req({}), { ok: false, error: /missing "cmd"/ });
  t.match(req({ cmd: 'reboot' }), { ok: false, error: /unknown command "reboot"/ });
  t.match(req({ cmd: 'freeze' }), { ok: false, error: /freeze needs "name"/ });
  t.match(req({ cmd: 'freeze', name: 'nosuch' }), { ok: false, error: "no VM named 'nosuch' (known: web, db)" });
  vm.open();
  dp.failNext = 'flushGuest';
  t.match(req({ cmd: 'flush', name: 'web' }), { ok: false, error: 'data plane: worker says no to flushGuest' });
  t.end();
});

t.test('the control socket: JSON lines, garbage answered, mode 600, removed on stop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-ctl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { ctx } = setup();
  const path = join(dir, 'ctl.sock');
  const srv = new ControlServer(path, ctx);
  await srv.start();
  t.equal(statSync(path).mode & 0o777, 0o600);
  const r = await requestDaemon(path, { cmd: 'guests' }, 5000);
  t.equal(r.ok, true);
  // several requests, one of them garbage, on one connection
  const lines = await new Promise<string[]>((res, rej) => {
    const s = connect(path);
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const ls = buf.split('\n').filter(Boolean);
      if (ls.length >= 3) {
        s.end();
        res(ls);
      }
    });
    s.on('error', rej);
    s.write('{"cmd":"guests","id":1}\nnot json\n[1]\n');
  });
  t.match(JSON.parse(lines[0]!), { id: 1, ok: true });
  t.match(JSON.parse(lines[1]!), { ok: false, error: /not JSON/ });
  t.match(JSON.parse(lines[2]!), { ok: false, error: 'a request is a JSON object' });
  await srv.stop();
  t.throws(() => statSync(path), 'socket removed');
  t.end();
});

t.test('the control socket: a client that does not read its replies is not answered ahead (replies do not pile up)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-ctl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const base = setup().ctx;
  let answered = 0;
  const big = 'x'.repeat(16 << 10); // a 16 KiB reply each: socket buffers fill after a few dozen
  const ctx: ControlContext = { ...base, stats: () => { answered++; return { mode: 'poll', counters: { pad: big }, guests: [] }; } };
  const path = join(dir, 'ctl.sock');
  const srv = new ControlServer(path, ctx);
  await srv.start();
  const N = 2000;
  const s = connect(path);
  s.pause(); // read nothing yet
  await new Promise<void>((res) => s.once('connect', () => res()));
  s.write('{"cmd":"stats"}\n'.repeat(N));
  await new Promise((r) => setTimeout(r, 500));
  const whileStalled = answered;
  t.ok(whileStalled > 0 && whileStalled < N / 4, `${whileStalled} of ${N} requests answered while the client read nothing`);
  // now read: every request is answered, in order, none lost
  let got = 0;
  let buf = '';
  s.setEncoding('utf8');
  await new Promise<void>((res, rej) => {
    s.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (JSON.parse(line).ok === true) got++;
      }
      if (got === N) res();
    });
    s.on('error', rej);
    s.resume();
  });
  t.equal(got, N, 'all replies arrive once the client reads');
  t.equal(answered, N, 'each request answered exactly once');
  s.destroy();
  await srv.stop();
});
