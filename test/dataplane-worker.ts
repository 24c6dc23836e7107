// The data plane through its worker thread, in both modes, with memfd guest
// RAM mapped by native/ and real eventfds: the test plays the guest driver
// on the main thread while the worker serves the rings. Runs from dist/
// (npm test builds first): tap's TypeScript loader does not reach workers.
import t from 'tap';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  TMEM_OP_GET_PAGE,
  TMEM_OP_INFO,
  TMEM_OP_NEW_POOL,
  TMEM_OP_PUT_PAGE,
  TMEM_POOL_PERSIST,
  TMEM_S_MISS,
  TMEM_S_OK,
} from '../shared/abi.js';
import { DriverRing, F_INDIRECT, F_WRITE, FakeGuest, newPoolPayload, pattern, readResp, reqHeader, writeDesc, type Desc } from './virtio-driver.js';

const distClient = new URL('../dist/host/vhost-user/client.js', import.meta.url);
const distNative = new URL('../dist/native/index.js', import.meta.url);
const distStore = new URL('../dist/host/tmem/store/store.js', import.meta.url);
const distTmem = new URL('../dist/host/tmem/worker.js', import.meta.url);
const ready = [distClient, distNative, distStore, distTmem].every((u) => existsSync(fileURLToPath(u)));
/** The worker's device kinds and their config, as tmemd gives them. */
const DEVICES = { devices: [{ kind: 'tmem', module: distTmem.href }] };
const deviceConfig = (capacityPages: number, maxPoolsPerGuest: number) => ({ ...DEVICES, deviceConfig: { capacityPages, maxPoolsPerGuest } });
const TMEM_PARAMS = { maxmemBytes: 1n << 30n, shareGroup: null, tmemMaxBytes: null, ramFloorBytes: 0n, frozen: false };
const POLICY = { maxRamBytes: null, allowUnsealed: false };

const VERSION_1 = 1n << 32n;
const EVENT_IDX = 1n << 29n;
const INDIRECT = 1n << 28n;
const RAM = 4 << 20;
const UVA = 0x7f12_0000_0000;

type Native = typeof import('../native/index.js');
type Client = typeof import('../host/vhost-user/client.js');

async function load(): Promise<{ native: Native; client: Client }> {
  return { native: (await import(distNative.href)) as Native, client: (await import(distClient.href)) as Client };
}

/** Waits (yielding to the event loop) until cond() holds. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

/** Busy-waits (no event loop turn) until cond() holds: for latency measurements. */
function spin(cond: () => boolean, ms = 5000): void {
  const end = Date.now() + ms;
  let i = 0;
  while (!cond()) if ((++i & 0xffff) === 0 && Date.now() > end) throw new Error('timed out spinning');
}

async function harness(mode: 'poll' | 'notify', logs: string[]) {
  const { native, client } = await load();
  const log = {
    error: (m: string) => logs.push(`error: ${m}`),
    warn: (m: string) => logs.push(`warn: ${m}`),
    info: (m: string) => logs.push(`info: ${m}`),
    debug: (m: string) => logs.push(`debug: ${m}`),
  };
  const dp = await client.DataPlane.start({ mode, ...deviceConfig(1 << 14, 16), log, pollSpinMs: 20 });
  const mine: { fd: number }[] = [];
  const maps: ReturnType<Native['mmapShared']>[] = [];
  const vm = async (name: string, queues = 1, features = VERSION_1 | EVENT_IDX | INDIRECT) => {
    const memfd = native.memfdCreate(name, BigInt(RAM));
    const m = native.mmapShared(memfd, BigInt(RAM), 0n);
    maps.push(m);
    const g = new FakeGuest(RAM, { ram: m.windows[0]!.bytes });
    const id = dp.newInstanceId();
    await dp.open(id, { vm: name, kind: 'tmem', numQueues: queues, policy: POLICY, params: TMEM_PARAMS });
    await dp.setFeatures(id, features);
    await dp.setMemTable(id, [{ fd: memfd, guestPhysAddr: 0n, size: BigInt(RAM), userspaceAddr: BigInt(UVA), mmapOffset: 0n }]);
    const rings = Array.from({ length: queues }, () => new DriverRing(g, 256));
    const fds = rings.map(() => ({ kick: native.eventfd(0), call: native.eventfd(0), err: native.eventfd(0) }));
    const start = async (q: number, base = 0, enable = true) => {
      const r = rings[q]!;
      await dp.setVringNum(id, q, r.num);
      await dp.setVringBase(id, q, base);
      await dp.setVringAddr(id, q, { descUser: BigInt(UVA + r.desc), usedUser: BigInt(UVA + r.used), availUser: BigInt(UVA + r.avail) });
      await dp.setVringFd(id, 'setVringKick', q, fds[q]!.kick);
      await dp.setVringFd(id, 'setVringCall', q, fds[q]!.call);
      await dp.setVringFd(id, 'setVringErr', q, fds[q]!.err);
      if (enable) await dp.setVringEnable(id, q, true);
    };
    const kick = (q: number) => {
      if (mode === 'notify') native.eventfdWrite(fds[q]!.kick, 1n);
    };
    // Requests reuse preallocated buffers per slot so a long run does not exhaust the fake RAM.
    const slots = rings.map(() =>
      Array.from({ length: 64 }, () => ({ hdr: g.alloc(48), page: g.alloc(4096, 4096), resp: g.alloc(16), tbl: g.alloc(48) })),
    );
    let slot = 0;
    const submit = (q: number, h: Uint8Array, opts: { rd?: Uint8Array; wr?: number; indirect?: boolean } = {}) => {
      const r = rings[q]!;
      const s = slots[q]![slot++ % 64]!;
      g.write(s.hdr, h);
      const descs: Desc[] = [{ addr: s.hdr, len: 48 }];
      if (opts.rd) {
        g.write(s.page, opts.rd);
        descs.push({ addr: s.page, len: opts.rd.length });
      }
      if (opts.wr) descs.push({ addr: s.page, len: opts.wr, flags: F_WRITE });
      descs.push({ addr: s.resp, len: 16, flags: F_WRITE });
      let head: number;
      if (opts.indirect) {
        descs.forEach((d, k) => writeDesc(g, s.tbl, k, { ...d, flags: (d.flags ?? 0) | (k < descs.length - 1 ? 1 : 0), next: k + 1 }));
        head = r.chain([{ addr: s.tbl, len: 16 * descs.length, flags: F_INDIRECT }]);
      } else head = r.chain(descs);
      r.publish(head);
      return { head, resp: s.resp, page: s.page };
    };
    /** Submits, kicks, waits for completion; returns the response and the used element. */
    const call = async (q: number, h: Uint8Array, opts: { rd?: Uint8Array; wr?: number; indirect?: boolean } = {}) => {
      const x = submit(q, h, opts);
      kick(q);
      const r = rings[q]!;
      await until(() => r.usedIdx() !== r.usedSeen, `completion on ${name} queue ${q}`);
      const used = r.takeUsed();
      return { ...readResp(g, x.resp), used, page: g.read(x.page, 4096) };
    };
    return { id, g, rings, fds, start, submit, call, kick };
  };
  const done = async () => {
    await dp.stop();
    for (const m of maps) native.munmap(m);
    for (const x of mine) native.close(x.fd);
  };
  return { dp, vm, native, done, client };
}

for (const mode of ['poll', 'notify'] as const) {
  t.test(`${mode} mode`, { skip: ready ? false : 'native/ or host/tmem/store/ not built yet' }, async (t) => {
    const logs: string[] = [];
    const h = await harness(mode, logs);
    t.teardown(() => {
      if (logs.some((l) => l.startsWith('error'))) t.comment(logs.join('\n'));
    });

    await t.test('a request posted before the ring is enabled is served at enable', async (t) => {
      const v = await h.vm('early');
      await v.start(0, 0, false);
      const x = v.submit(0, reqHeader({ op: TMEM_OP_NEW_POOL }), { rd: newPoolPayload(TMEM_POOL_PERSIST) });
      h.native.eventfdWrite(v.fds[0]!.kick, 1n); // QEMU: the kick came before the enable
      await h.dp.setVringEnable(v.id, 0, true);
      await until(() => v.rings[0]!.usedIdx() === 1, 'the first completion');
      t.same(v.rings[0]!.takeUsed(), [{ id: x.head, len: 16 }]);
      t.equal(readResp(v.g, x.resp).status, TMEM_S_OK);
      await h.dp.close(v.id);
    });

    await t.test('every GET returns what was PUT, direct and indirect chains, across queues', async (t) => {
      const v = await h.vm('data', 2);
      await v.start(0);
      await v.start(1);
      const p = await v.call(0, reqHeader({ op: TMEM_OP_NEW_POOL }), { rd: newPoolPayload(TMEM_POOL_PERSIST) });
      t.equal(p.status, TMEM_S_OK);
      const pool = Number(p.value);
      const N = 300;
      for (let i = 0; i < N; i++) {
        const r = await v.call(i % 2, reqHeader({ op: TMEM_OP_PUT_PAGE, pool, index: i, oid: [BigInt(i), 1n, 2n] }), { rd: pattern(i), indirect: i % 3 === 0 });
        if (r.status !== TMEM_S_OK) t.fail(`put ${i}: ${r.status}`);
      }
      let bad = 0;
      for (let i = 0; i < N; i++) {
        const r = await v.call((i + 1) % 2, reqHeader({ op: TMEM_OP_GET_PAGE, pool, index: i, oid: [BigInt(i), 1n, 2n] }), { wr: 4096, indirect: i % 2 === 0 });
        if (r.status !== TMEM_S_OK || r.used[0]!.len !== 4112 || Buffer.compare(r.page, pattern(i)) !== 0) bad++;
      }
      t.equal(bad, 0, `${N} pages read back intact`);
      const miss = await v.call(0, reqHeader({ op: TMEM_OP_GET_PAGE, pool, index: N + 1 }), { wr: 4096 });
      t.same([miss.status, miss.used[0]!.len], [TMEM_S_MISS, 16]);
      const info = await v.call(1, reqHeader({ op: TMEM_OP_INFO }), { wr: 64 });
      t.equal(info.used[0]!.len, 80);
      t.equal(new DataView(info.page.buffer).getUint32(12, true), 2, 'num_queues');
      const st = await h.dp.stats();
      const c = st.counters.tmem!;
      t.ok(c.opPutPage! >= N && c.opGetPage! >= N, 'the tmem counters, host-wide');
      const inst = st.instances.find((g) => g.vm === 'data') as { queues: { completed: number }[]; counters: { tmem: { opPutPage: number } } } | undefined;
      t.ok(inst && inst.queues[0]!.completed > 0, 'stats() lists the instance');
      t.ok(inst && inst.counters.tmem.opPutPage >= N, 'and its own counters');
      t.match(st.kinds.tmem, { store: { guests: [{ name: 'data' }] } }, 'the store guest of the VM');
      await h.dp.close(v.id);
    });

    await t.test('GET_VRING_BASE stops the ring and returns the next avail index; restart continues', async (t) => {
      const v = await h.vm('pause');
      await v.start(0);
      const p = await v.call(0, reqHeader({ op: TMEM_OP_NEW_POOL }), { rd: newPoolPayload(TMEM_POOL_PERSIST) });
      await v.call(0, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: Number(p.value), index: 1 }), { rd: pattern(11) });
      await h.dp.setVringEnable(v.id, 0, false);
      t.equal(await h.dp.getVringBase(v.id, 0), 2);
      const x = v.submit(0, reqHeader({ op: TMEM_OP_GET_PAGE, pool: Number(p.value), index: 1 }), { wr: 4096 });
      await sleep(30);
      t.equal(v.rings[0]!.usedIdx(), 2, 'not served while stopped');
      v.fds[0] = { kick: h.native.eventfd(0), call: h.native.eventfd(0), err: v.fds[0]!.err };
      await v.start(0, 2);
      await until(() => v.rings[0]!.usedIdx() === 3, 'service after restart');
      t.same(v.g.read(x.page, 4096), pattern(11), 'the persistent page survived the stop');
      await h.dp.close(v.id);
    });

    await t.test('a malformed ring breaks its own queue only; bad chains get len 0', async (t) => {
      const a = await h.vm('broken');
      const b = await h.vm('healthy');
      await a.start(0);
      await b.start(0);
      const bad = b.rings[0]!.chain([{ addr: RAM + 4096, len: 48 }, { addr: 0, len: 16, flags: F_WRITE }]);
      b.rings[0]!.publish(bad);
      b.kick(0);
      await until(() => b.rings[0]!.usedIdx() === 1, 'the bad chain completed');
      t.same(b.rings[0]!.takeUsed(), [{ id: bad, len: 0 }]);
      a.rings[0]!.setAvailIdx(1000);
      a.kick(0);
      await until(() => h.native.eventfdRead(a.fds[0]!.err) !== null, 'the err eventfd');
      const r = await b.call(0, reqHeader({ op: TMEM_OP_NEW_POOL }), { rd: newPoolPayload(0) });
      t.equal(r.status, TMEM_S_OK, 'the other guest is still served');
      t.ok((await h.dp.stats()).counters.vring!.brokenQueues! >= 1);
      await h.dp.close(a.id);
      await h.dp.close(b.id);
    });

    await t.test('commands the worker refuses reject with DataPlaneError (answered); the worker goes on', async (t) => {
      await t.rejects(h.dp.setVringNum(9999, 0, 256), /unknown instance 9999/);
      const v = await h.vm('args');
      await t.rejects(h.dp.setVringNum(v.id, 5, 256), /no queue 5/);
      await t.rejects(h.dp.setMemTable(v.id, [{ fd: -1, guestPhysAddr: 0n, size: 1n, userspaceAddr: 0n, mmapOffset: 0n }]), /region 0/);
      const e = await h.dp.setVringNum(9999, 0, 256).catch((x: unknown) => x);
      t.ok(e instanceof h.client.DataPlaneError && e.answered, 'answered by the worker');
      await h.dp.close(v.id);
    });

    await t.test('latency of one request at a time (informative)', async (t) => {
      const v = await h.vm('lat');
      await v.start(0);
      const p = await v.call(0, reqHeader({ op: TMEM_OP_NEW_POOL }), { rd: newPoolPayload(TMEM_POOL_PERSIST) });
      const r = v.rings[0]!;
      const lat: number[] = [];
      const page = pattern(5);
      for (let i = 0; i < 2000; i++) {
        const t0 = process.hrtime.bigint();
        v.submit(0, reqHeader({ op: i % 2 ? TMEM_OP_GET_PAGE : TMEM_OP_PUT_PAGE, pool: Number(p.value), index: i >> 1 }), i % 2 ? { wr: 4096 } : { rd: page });
        v.kick(0);
        spin(() => r.usedIdx() !== r.usedSeen);
        lat.push(Number(process.hrtime.bigint() - t0) / 1000);
        r.takeUsed();
      }
      lat.sort((x, y) => x - y);
      t.comment(`${mode}: p50 ${lat[1000]!.toFixed(1)} us, p99 ${lat[1980]!.toFixed(1)} us per request (test harness in JS on the main thread)`);
      t.pass();
      await h.dp.close(v.id);
    });

    await h.done();
    t.notOk(h.dp.alive, 'stopped');
  });
}

t.test('a worker that does not answer in time: the call rejects, the event loop keeps running, the late reply is logged', { skip: ready ? false : 'native/ or host/tmem/store/ not built yet' }, async (t) => {
  const { client } = await load();
  const logs: string[] = [];
  const log = { error: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), info() {}, debug() {} };
  // debugStall is a test hook: the worker refuses it without TMEMD_TEST_HOOKS=debug
  const plain = await client.DataPlane.start({ mode: 'notify', ...deviceConfig(16, 4), log });
  await t.rejects(plain.debugStall(10), /debugStall is a test hook/);
  await plain.stop();
  process.env.TMEMD_TEST_HOOKS = 'debug';
  const dp = await client.DataPlane.start({ mode: 'notify', ...deviceConfig(16, 4), log, replyTimeoutMs: 200 });
  delete process.env.TMEMD_TEST_HOOKS;
  const t0 = Date.now();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  await t.rejects(dp.debugStall(1500), /did not answer debugStall within 200 ms/);
  t.ok(Date.now() - t0 < 1000, 'gave up after the timeout');
  t.ok(ticks >= 5, `the event loop ran meanwhile (${ticks} timer ticks)`);
  t.notOk(dp.alive, 'not alive while the reply is overdue');
  await new Promise((r) => setTimeout(r, 1600));
  clearInterval(timer);
  t.ok(dp.alive, 'alive again once the stalled command was answered');
  t.ok(await dp.stats(), 'commands work again');
  t.match(logs.join('\n'), /answered debugStall after \d+ ms/);
  await dp.stop();
});

t.test('fds handed with a refused command are closed by the worker, not leaked', { skip: ready ? false : 'native/ or host/tmem/store/ not built yet' }, async (t) => {
  const { client, native } = await load();
  const log = { error() {}, warn() {}, info() {}, debug() {} };
  const dp = await client.DataPlane.start({ mode: 'notify', ...deviceConfig(16, 4), log });
  t.teardown(() => dp.stop());
  // Whether fd is still the very file handed over: closed, or its number
  // reused by a file this process opened since (tap's loader thread opens an
  // eventfd at a time of its own), both mean ours was closed. /proc/self/fdinfo
  // tells an eventfd by its count, a memfd by its name.
  const stillOurs = (fd: number, mark: RegExp) => {
    try {
      return mark.test(readlinkSync(`/proc/self/fd/${fd}`) + '\n' + readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    } catch {
      return false;
    }
  };
  const kick = native.eventfd();
  native.eventfdWrite(kick, 0x7e57n);
  t.ok(stillOurs(kick, /^eventfd-count:\s*7e57$/m), 'the kick eventfd is recognised by its count before');
  await t.rejects(dp.setVringFd(999, 'setVringKick', 0, kick), /unknown instance 999/);
  t.notOk(stillOurs(kick, /^eventfd-count:\s*7e57$/m), 'the kick fd of a refused SET_VRING_KICK is closed');
  const mfd = native.memfdCreate('refused', 4096n);
  t.ok(stillOurs(mfd, /memfd:refused/), 'the memfd is recognised by its name before');
  await t.rejects(dp.setMemTable(999, [{ fd: mfd, guestPhysAddr: 0n, size: 4096n, userspaceAddr: 0n, mmapOffset: 0n }]), /unknown instance 999/);
  t.notOk(stillOurs(mfd, /memfd:refused/), 'the region fd of a refused SET_MEM_TABLE is closed');
});
