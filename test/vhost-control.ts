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
import { TmemVm } from '../host/tmem/vm.js';
import type { WorkerStats } from '../host/vhost-user/client.js';
import type { DeviceConnection } from '../host/vhost-user/device.js';

/** One connection as the device sees it: records the control ops sent to its worker instance. */
class FakeConn implements DeviceConnection {
  readonly connectedAt = new Date();
  guestRamBytes = 0n;
  failNext: string | null = null;
  constructor(
    readonly id: number,
    private readonly calls: unknown[][],
  ) {}
  async control(op: string, args?: unknown): Promise<unknown> {
    this.calls.push([op, this.id, args ?? null]);
    if (this.failNext === op) {
      this.failNext = null;
      const e = new Error(`worker says no to ${op}`);
      e.name = 'DataPlaneError';
      throw e;
    }
    return null;
  }
}

const STATS: WorkerStats = {
  mode: 'poll',
  worker: { commands: 3 },
  counters: { vring: { requests: 5 } },
  instances: [{ id: 1, vm: 'web', kind: 'tmem', queues: [] }],
  kinds: { tmem: { store: { freePages: 9, guests: [{ name: 'web', puts: 4 }] } } },
};

function setup() {
  const calls: unknown[][] = [];
  let next = 1;
  const vm = new TmemVm({ name: 'web', maxmemBytes: 4n << 30n, shareGroup: null, where: '/tmp/web.sock' }, { numQueues: 2 });
  const other = new TmemVm({ name: 'db', maxmemBytes: 1n << 30n, shareGroup: 'g', where: 'fd=3' }, { numQueues: 2 });
  /** A front-end connects to vm: the params its worker instance would be opened with, and the connection. */
  const connect = (v: TmemVm) => {
    const c = new FakeConn(next++, calls);
    const params = v.open(c);
    return { c, params };
  };
  const ctx: ControlContext = { vms: [vm, other], stats: async () => STATS, info: () => ({ capacityBytes: '1024' }), log: silentLogger };
  const req = (r: Record<string, unknown>) => handleControlRequest(ctx, r);
  return { calls, vm, other, ctx, req, connect };
}

t.test('freeze set while no guest is connected applies when one connects, and across reconnects', async (t) => {
  const { calls, vm, req, connect } = setup();
  t.match(await req({ cmd: 'freeze', name: 'web' }), { ok: true, result: { name: 'web', frozen: true, connected: false } });
  t.same(calls, [], 'nothing to tell the worker yet');
  const a = connect(vm);
  t.match(a.params, { frozen: true, maxmemBytes: 4n << 30n }, 'the new instance is opened frozen');
  vm.closed(a.c);
  const b = connect(vm);
  t.match(b.params, { frozen: true }, 'a new guest of the same VM is frozen too');
  t.match(await req({ cmd: 'thaw', name: 'web' }), { ok: true, result: { frozen: false } });
  t.same(calls.at(-1), ['setFrozen', 2, { frozen: false }]);
  t.match(connect(vm).params, { frozen: false });
  t.end();
});

t.test('flush needs a connected guest', async (t) => {
  const { calls, vm, req, connect } = setup();
  t.same(await req({ cmd: 'flush', name: 'web' }), { ok: false, error: 'vm web has no guest connected' });
  connect(vm);
  t.match(await req({ cmd: 'flush', name: 'web' }), { ok: true });
  t.same(calls.at(-1), ['flush', 1, null]);
  t.end();
});

t.test('share group: set live and kept for the next guest', async (t) => {
  const { calls, vm, req, connect } = setup();
  connect(vm);
  t.match(await req({ cmd: 'share-group', name: 'web', group: 'g' }), { ok: true, result: { shareGroup: 'g' } });
  t.same(calls.at(-1), ['setShareGroup', 1, { group: 'g' }]);
  t.match(await req({ cmd: 'share-group', name: 'web', group: null }), { ok: true, result: { shareGroup: null } });
  t.match(await req({ cmd: 'share-group', name: 'web', group: 'bad group' }), { ok: false, error: /must be a name/ });
  t.match(await req({ cmd: 'share-group', name: 'web', group: 7 }), { ok: false });
  t.match(connect(vm).params, { shareGroup: null });
  t.end();
});

t.test('guests and stats: one id per connection joins the VM, its worker instance and its store guest', async (t) => {
  const { vm, req, connect } = setup();
  connect(vm).c.guestRamBytes = 1n << 30n;
  const g = await req({ cmd: 'guests', id: 7 });
  t.match(g, { id: 7, ok: true });
  t.match((g as { result: unknown[] }).result, [
    { name: 'web', connected: true, guestId: 1, ramBytes: String(1n << 30n), maxmemBytes: String(4n << 30n), socket: '/tmp/web.sock' },
    { name: 'db', connected: false, guestId: null, shareGroup: 'g', socket: 'fd=3' },
  ]);
  const s = (await req({ cmd: 'stats' })) as { ok: true; result: { host: Record<string, unknown>; guests: { name: string; dataplane: unknown; devices: unknown[]; store: unknown }[] } };
  t.equal(s.ok, true);
  t.same(s.result.host, { capacityBytes: '1024', mode: 'poll', worker: { commands: 3 }, counters: { vring: { requests: 5 } }, store: { freePages: 9 } });
  t.same(s.result.guests.map((x) => [x.name, x.dataplane, x.devices.length, x.store]), [
    ['web', { id: 1, vm: 'web', kind: 'tmem', queues: [] }, 1, { name: 'web', puts: 4 }],
    ['db', null, 0, null],
  ]);
  t.end();
});

t.test('bad requests: one-line errors, never a throw', async (t) => {
  const { vm, req, connect } = setup();
  t.match(await req({}), { ok: false, error: /missing "cmd"/ });
  t.match(await req({ cmd: 'reboot' }), { ok: false, error: /unknown command "reboot"/ });
  t.match(await req({ cmd: 'freeze' }), { ok: false, error: /freeze needs "name"/ });
  t.match(await req({ cmd: 'freeze', name: 'nosuch' }), { ok: false, error: "no VM named 'nosuch' (known: web, db)" });
  connect(vm).c.failNext = 'flush';
  t.match(await req({ cmd: 'flush', name: 'web' }), { ok: false, error: 'data plane: worker says no to flush' });
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
  const ctx: ControlContext = {
    ...base,
    stats: async () => {
      answered++;
      return { ...STATS, worker: { pad: big as unknown as number } };
    },
  };
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
