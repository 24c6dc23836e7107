// The data plane's engine in-process, with fake OS functions and ArrayBuffer
// guest RAM: ring lifecycle as QEMU drives it, scan on enable, ring order,
// notifications, broken rings isolated, unanswerable chains, guest removal,
// and the budget rule (fairness between guests and between a guest's queues),
// checked by counting work, never by timing it.
import t from 'tap';
import { TMEM_OP_GET_PAGE, TMEM_OP_NEW_POOL, TMEM_OP_PUT_PAGE, TMEM_POOL_PERSIST, TMEM_S_OK } from '../shared/abi.js';
import { Engine, type EngineOs, type OsMapping, PENALTY, TURN_UNITS } from '../host/vhost-user/engine.js';
import { VC } from '../host/vhost-user/counters.js';
import { HANDLE_LATER, type WorkerDevice } from '../host/vhost-user/device.js';
import { INFO_LAYOUT } from '../host/tmem/info-layout.js';
import { TmemDevice } from '../host/tmem/device.js';
import { FakeStore } from './device-fake-store.js';
import { FakeEventfds } from './engine/fakes.js';
import { DriverRing, F_WRITE, FakeGuest, newPoolPayload, pattern, readResp, reqHeader } from './virtio-driver.js';

const UVA = 0x7f00_0000_0000;
const EVENT_IDX = 1n << 29n;
const VERSION_1 = 1n << 32n;

class FakeOs extends FakeEventfds implements EngineOs {
  files = new Map<number, Uint8Array>();
  closed: number[] = [];
  mapped = 0;
  unmapped = 0;
  mmapShared(fd: number, length: bigint, offset: bigint): OsMapping {
    const f = this.files.get(fd);
    if (!f) throw new Error(`EBADF: fd ${fd}`);
    this.mapped++;
    return { windows: [{ offset: 0n, bytes: f.subarray(Number(offset), Number(offset + length)) }] };
  }
  munmap(): void {
    this.unmapped++;
  }
  close(fd: number): void {
    this.closed.push(fd);
  }
}

let nextFd = 100;
let nextInstance = 1;

/** The tmem device's request handling as a WorkerDevice on the model store (the tmem worker half without the real store). */
function tmemOn(store: FakeStore, name: string, numQueues: number): TmemDevice & WorkerDevice {
  const storeGuest = store.addGuest({ name, maxmemPages: (1 << 30) / 4096, ramPages: 0, shareGroup: null });
  const d = new TmemDevice(store, INFO_LAYOUT, { storeGuest, sharedNegotiated: false, numQueues });
  return Object.assign(d, {
    setFeatures(f: bigint) {
      d.guest.sharedNegotiated = (f & 1n) === 1n;
    },
    memoryChanged(ram: bigint) {
      store.setGuestRam(storeGuest, Number(ram / 4096n));
    },
    queuesAddressed(n: number) {
      d.guest.numQueues = n;
    },
    close() {
      store.removeGuest(storeGuest);
    },
  });
}

function setup(opts: { poll?: boolean; features?: bigint; num?: number; idleWanted?: () => boolean } = {}) {
  const os = new FakeOs();
  const store = new FakeStore();
  const logs: string[] = [];
  const e = new Engine(os, (l, m) => logs.push(`${l}: ${m}`), opts.poll ?? false);
  // the store's idle work, as the tmem kind does it (counted)
  const idle = { calls: 0 };
  e.addKind({
    counters: [],
    open: () => {
      throw new Error('not used');
    },
    idle: () => {
      idle.calls++;
      return store.reclaimStep() > 0;
    },
    ...(opts.idleWanted ? { idleWanted: opts.idleWanted } : {}),
  });
  /** An instance's vring counter by name. */
  const counter = (id: number, name: keyof typeof VC) => e.instances.get(id)!.counters[VC[name]]!;
  /** The store guest of an instance. */
  const storeGuest = (id: number) => (e.instances.get(id)!.dev as unknown as TmemDevice).guest.storeGuest;
  const vm = (name: string, queues = 1, num = opts.num ?? 16) => {
    const g = new FakeGuest(2 << 20);
    const memFd = nextFd++;
    os.files.set(memFd, g.ram);
    const id = nextInstance++;
    e.open({ id, vm: name, kind: 'tmem', numQueues: queues }, { maxRamBytes: null, allowUnsealed: false }, tmemOn(store, name, queues));
    e.setFeatures(id, opts.features ?? VERSION_1);
    e.setMemTable(id, [{ fd: memFd, guestPhysAddr: 0n, size: BigInt(g.ram.length), userspaceAddr: BigInt(UVA), mmapOffset: 0n }]);
    const rings = Array.from({ length: queues }, () => new DriverRing(g, num));
    const fds = rings.map(() => ({ kick: nextFd++, call: nextFd++, err: nextFd++ }));
    const start = (q: number, base = 0) => {
      const r = rings[q]!;
      e.setVringNum(id, q, r.num);
      e.setVringBase(id, q, base);
      e.setVringAddr(id, q, { descUser: BigInt(UVA + r.desc), usedUser: BigInt(UVA + r.used), availUser: BigInt(UVA + r.avail) });
      e.setVringFd(id, q, 'kickFd', fds[q]!.kick);
      e.setVringFd(id, q, 'callFd', fds[q]!.call);
      e.setVringFd(id, q, 'errFd', fds[q]!.err);
      e.setVringEnable(id, q, true);
    };
    /** Posts a request: header, optional readable payload, optional writable area, response. */
    const post = (q: number, h: Uint8Array, rd?: Uint8Array, wr = 0, respLen = 16) => {
      const r = rings[q]!;
      const descs = [{ addr: g.put(h), len: 48 }];
      if (rd) descs.push({ addr: g.put(rd, 4096), len: rd.length });
      let data = 0;
      if (wr) descs.push({ addr: (data = g.alloc(wr, 4096)), len: wr, flags: F_WRITE } as never);
      const resp = g.alloc(16);
      descs.push({ addr: resp, len: respLen, flags: F_WRITE } as never);
      const head = r.chain(descs);
      r.publish(head);
      return { head, resp, data };
    };
    return { id, g, rings, fds, start, post, memFd };
  };
  return { os, store, e, logs, vm, counter, storeGuest, idle };
}

t.test('a ring is scanned as soon as it is enabled (the kick came before)', async (t) => {
  const { e, vm } = setup();
  const v = vm('a');
  const p = v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  v.start(0);
  t.equal(e.pass(false), 1, 'served without any kick');
  t.same(v.rings[0]!.takeUsed(), [{ id: p.head, len: 16 }]);
  t.equal(readResp(v.g, p.resp).status, TMEM_S_OK);
});

t.test('notify mode: requests are completed in ring order; kicks re-enabled after; call signalled', async (t) => {
  const { e, os, vm } = setup({ features: VERSION_1 | EVENT_IDX });
  const v = vm('a');
  v.start(0);
  e.pass(false);
  const heads: number[] = [];
  const pool = v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  heads.push(pool.head);
  for (let i = 0; i < 5; i++) heads.push(v.post(0, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: i }), pattern(i)).head);
  const q = e.instances.get(v.id)!.queues[0]!;
  t.equal(e.pass(false), 0, 'not kicked, not scanned');
  os.eventfdWrite(v.fds[0]!.kick);
  e.kicked(e.instances.get(v.id)!, q);
  t.equal(e.pass(false), 6);
  t.same(
    v.rings[0]!.takeUsed().map((u) => u.id),
    heads,
    'ring order',
  );
  t.equal(v.rings[0]!.availEvent(), 6, 'avail_event = next avail index: the guest kicks for the next request');
  t.equal(os.counts.get(v.fds[0]!.call), 1n, 'one interrupt for the batch');
  t.equal(os.counts.get(v.fds[0]!.kick), 0n, 'kick consumed');
});

t.test('no interrupt when the guest asks for none', async (t) => {
  const { e, os, vm, counter } = setup();
  const v = vm('a');
  v.rings[0]!.setAvailFlags(1);
  v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  v.start(0);
  e.pass(false);
  t.equal(os.counts.get(v.fds[0]!.call) ?? 0n, 0n);
  t.equal(counter(v.id, 'callsSuppressed'), 1);
});

t.test('poll mode asks the guest not to kick', async (t) => {
  for (const [features, check] of [
    [VERSION_1, (r: DriverRing) => (r.usedFlags() & 1) === 1],
    [VERSION_1 | EVENT_IDX, (r: DriverRing) => r.availEvent() === ((r.availIdx + 0x8000) & 0xffff)],
  ] as const) {
    const { e, vm } = setup({ poll: true, features });
    const v = vm('a');
    v.start(0);
    t.ok(check(v.rings[0]!), `features 0x${features.toString(16)}`);
    v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
    t.equal(e.pass(true), 1, 'served by polling');
    t.notOk(e.enableAllKicks(), 'going to sleep: nothing pending');
    t.notOk(check(v.rings[0]!), 'kicks re-enabled while asleep');
    e.suppressAllKicks();
    t.ok(check(v.rings[0]!));
  }
});

t.test('GET_VRING_BASE stops the ring, returns the next avail index, changes nothing in the store', async (t) => {
  const { e, os, store, vm } = setup();
  const v = vm('a');
  v.start(0);
  v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  v.post(0, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: 7 }), pattern(7));
  e.pass(false);
  const pages = store.pages.size;
  const later = v.post(0, reqHeader({ op: TMEM_OP_GET_PAGE, pool: 0, index: 7 }), undefined, 4096);
  e.setVringEnable(v.id, 0, false);
  t.equal(e.getVringBase(v.id, 0), 2, 'the unserved request is still ahead');
  t.ok(os.closed.includes(v.fds[0]!.kick) && os.closed.includes(v.fds[0]!.call), 'kick and call fds closed');
  t.equal(e.pass(true), 0, 'stopped');
  t.equal(store.pages.size, pages);
  // resume: the whole start sequence again, from base 2
  v.fds[0] = { kick: nextFd++, call: nextFd++, err: v.fds[0]!.err };
  v.start(0, 2);
  t.equal(e.pass(false), 1);
  t.same(v.g.read(later.data, 4096), pattern(7), 'persistent page survived the stop');
});

t.test('a chain that cannot be answered is completed with len 0 and counted; the next one is served', async (t) => {
  const { e, vm, logs, counter } = setup();
  const v = vm('a');
  v.start(0);
  const r = v.rings[0]!;
  const bad = r.chain([{ addr: 0x7fff_0000_0000, len: 48 }, { addr: v.g.alloc(16), len: 16, flags: F_WRITE }]);
  r.publish(bad);
  const short = v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0), 0, 8);
  const good = v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  t.equal(e.pass(false), 3);
  t.same(r.takeUsed(), [
    { id: bad, len: 0 },
    { id: short.head, len: 0 },
    { id: good.head, len: 16 },
  ]);
  t.equal(counter(v.id, 'unanswerable'), 2);
  t.equal(counter(v.id, 'chainsRefused'), 1, 'one refused by the walker, one by the device');
  t.equal(counter(v.id, 'requests'), 3);
  t.match(logs.join('\n'), /outside guest memory/);
  t.match(logs.join('\n'), /16-byte response/);
});

t.test('a malformed ring breaks only its own queue: err fd signalled, other guests go on', async (t) => {
  const { e, os, vm, counter } = setup();
  const a = vm('a');
  const b = vm('b');
  a.start(0);
  b.start(0);
  a.rings[0]!.setAvailIdx(100); // 100 ahead of 0 on a 16-entry ring
  b.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  t.equal(e.pass(true), 1);
  const qa = e.instances.get(a.id)!.queues[0]!;
  t.match(qa.broken, /more than the queue size/);
  t.equal(os.counts.get(a.fds[0]!.err), 1n);
  t.equal(counter(a.id, 'brokenQueues'), 1);
  t.equal(counter(b.id, 'brokenQueues'), 0);
  b.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  t.equal(e.pass(true), 1, 'b still served');
  // the guest restarts its ring: it works again
  a.rings[0]!.setAvailIdx(0);
  e.setVringEnable(a.id, 0, false);
  e.getVringBase(a.id, 0);
  a.start(0);
  a.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  t.equal(e.pass(true), 1);
});

t.test('a ring placed outside guest memory is refused when it starts, not when used', async (t) => {
  const { e, vm } = setup();
  const v = vm('a');
  e.setVringNum(v.id, 0, 16);
  e.setVringAddr(v.id, 0, { descUser: 0x1000n, usedUser: 0x2000n, availUser: 0x3000n }); // GPAs, not QEMU addresses
  e.setVringEnable(v.id, 0, true);
  t.match(e.instances.get(v.id)!.queues[0]!.broken, /not inside guest memory/);
  t.equal(e.running.length, 0);
});

t.test('an exception inside the device breaks that queue only', async (t) => {
  const { e, store, vm, storeGuest } = setup();
  const a = vm('a');
  const b = vm('b');
  a.start(0);
  b.start(0);
  const orig = store.newPool.bind(store);
  store.newPool = (g, ...rest) => {
    if (g === storeGuest(a.id)) throw new Error('boom');
    return orig(g, ...rest);
  };
  a.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  b.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  e.pass(true);
  t.match(e.instances.get(a.id)!.queues[0]!.broken, /boom/);
  t.same(b.rings[0]!.takeUsed().length, 1);
});

t.test('several queues of one guest are served independently, each in order', async (t) => {
  const { e, vm } = setup({ num: 8 });
  const v = vm('a', 3);
  for (let q = 0; q < 3; q++) v.start(q);
  v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  e.pass(true);
  const want: number[][] = [[], [], []];
  for (let i = 0; i < 7; i++) for (let q = 0; q < 3; q++) want[q]!.push(v.post(q, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: 10 * q + i }), pattern(i)).head);
  v.rings[0]!.takeUsed();
  t.equal(e.pass(true), 21);
  for (let q = 0; q < 3; q++) t.same(v.rings[q]!.takeUsed().map((u) => u.id), want[q], `queue ${q}`);
});

t.test('a new memory table while rings run: rings follow, old mappings unmapped, fds closed', async (t) => {
  const { e, os, vm } = setup();
  const v = vm('a');
  v.start(0);
  const fd2 = nextFd++;
  os.files.set(fd2, v.g.ram);
  e.setMemTable(v.id, [{ fd: fd2, guestPhysAddr: 0n, size: BigInt(v.g.ram.length), userspaceAddr: BigInt(UVA), mmapOffset: 0n }]);
  t.equal(os.unmapped, 1);
  t.ok(os.closed.includes(fd2) && os.closed.includes(v.memFd), 'region fds closed after mmap');
  v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  t.equal(e.pass(true), 1);
});

t.test('a refused memory table leaves the old one and closes the new fds', async (t) => {
  const { e, os, vm } = setup();
  const v = vm('a');
  v.start(0);
  const f1 = nextFd++;
  const f2 = nextFd++;
  os.files.set(f1, new Uint8Array(8192));
  os.files.set(f2, new Uint8Array(8192));
  t.throws(() =>
    e.setMemTable(v.id, [
      { fd: f1, guestPhysAddr: 0n, size: 8192n, userspaceAddr: 0n, mmapOffset: 0n },
      { fd: f2, guestPhysAddr: 4096n, size: 4096n, userspaceAddr: 1n << 20n, mmapOffset: 0n },
    ]),
  );
  t.ok(os.closed.includes(f1) && os.closed.includes(f2));
  t.equal(os.unmapped, 2, 'both new mappings undone');
  v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
  t.equal(e.pass(true), 1, 'still served from the old table');
});

t.test('closing an instance stops its rings, closes its fds, unmaps, closes its device; the store frees in idle steps', async (t) => {
  const { e, os, store, vm, storeGuest, idle } = setup();
  const v = vm('a');
  v.start(0);
  const sg = storeGuest(v.id);
  e.idle();
  const before = idle.calls;
  e.close(v.id);
  t.equal(e.running.length, 0);
  for (const fd of Object.values(v.fds[0]!)) t.ok(os.closed.includes(fd), `fd ${fd} closed`);
  t.equal(os.unmapped, os.mapped);
  t.notOk(store.guests.has(sg), 'the device closed its store guest');
  t.ok(e.idlePending);
  while (e.idle());
  t.equal(idle.calls - before, 3, 'reclaimed in 3 idle steps');
  t.throws(() => e.setVringEnable(v.id, 0, true), /unknown instance/);
});

t.test('after serving requests, idle work is pending only if a kind wants it (DeviceKind.idleWanted); a kind without idleWanted is always run', async (t) => {
  for (const wanted of [false, true, undefined]) {
    const asked = { n: 0 };
    const { e, vm } = setup(wanted === undefined ? {} : { idleWanted: () => (asked.n++, wanted) });
    const v = vm('a');
    v.start(0);
    while (e.idle());
    t.notOk(e.idlePending, 'nothing pending before the request');
    v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(0));
    t.equal(e.pass(true), 1, 'the request is served');
    t.equal(e.idlePending, wanted ?? true, `idleWanted ${String(wanted)}: idle work ${wanted === false ? 'not ' : ''}pending`);
    if (wanted !== undefined) t.equal(asked.n, 1, 'the kind was asked once');
    t.equal(e.pass(true), 0, 'a pass without work');
    t.equal(e.idlePending, wanted ?? true, 'a pass without work changes nothing');
  }
});

t.test('the store hears the guest\'s RAM size from its memory table', async (t) => {
  const { store, vm, storeGuest } = setup();
  const v = vm('a');
  t.equal(store.guests.get(storeGuest(v.id))!.ramPages, (2 << 20) / 4096);
});

// ------------------------------------------------------------ the budget rule

/** A PUT chain of 3 descriptors costs 3 + ceil((4144 + 16) / 256) = 20 units. */
const PUT_UNITS = 20;

type Vm = ReturnType<ReturnType<typeof setup>['vm']>;

/**
 * Fills every entry of a queue's avail ring with one head (a hostile guest may
 * post a head again before it is used): a chain of the whole queue size
 * (1024) of 4-byte readable descriptors, no writable byte, which the device
 * cannot answer; or a valid PUT whose page is split over 1021 descriptors
 * (1023 in all). Returns the chain's length in descriptors.
 */
function flood(v: Vm, q: number, kind: 'malformed' | 'split-put'): number {
  const r = v.rings[q]!;
  const buf = v.g.alloc(4096, 4096);
  let descs: { addr: number; len: number; flags?: number }[];
  if (kind === 'malformed') descs = Array.from({ length: r.num }, (_, i) => ({ addr: buf + 4 * (i % 1024), len: 4 }));
  else {
    v.g.write(buf, pattern(q));
    descs = [{ addr: v.g.put(reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: 1000 + q })), len: 48 }];
    for (let i = 0; i < 1020; i++) descs.push({ addr: buf + 4 * i, len: 4 });
    descs.push({ addr: buf + 4080, len: 16 });
    descs.push({ addr: v.g.alloc(16), len: 16, flags: F_WRITE });
  }
  const head = r.chain(descs);
  while (((r.availIdx - r.usedIdx()) & 0xffff) < r.num) r.publish(head);
  return descs.length;
}

/** Chains a guest's queues have completed so far. */
function completed(e: Engine, v: Vm): number {
  return e.instances.get(v.id)!.queues.reduce((n, q) => n + q.completed, 0);
}

/** A persistent pool 0 for the guest, made on its queue 0. */
function pool0(e: Engine, v: Vm): void {
  const p = v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  while (v.rings[0]!.usedIdx() === 0) e.pass(true);
  v.rings[0]!.takeUsed();
  if (readResp(v.g, p.resp).status !== TMEM_S_OK) throw new Error('NEW_POOL failed');
}

for (const mode of ['poll', 'notify'] as const) {
  for (const kind of ['malformed', 'split-put'] as const) {
    t.test(`${mode} mode: one request of a guest waits for at most one turn (${TURN_UNITS} units + one chain) of a guest flooding 4 queues with ${kind} chains of the queue size`, async (t) => {
      const { e, os, store, vm, storeGuest } = setup({ poll: mode === 'poll' });
      const noisy = vm('noisy', 4, 1024); // first in turn order: the quiet request is served after it
      const quiet = vm('quiet');
      for (let q = 0; q < 4; q++) noisy.start(q);
      quiet.start(0);
      e.pass(true);
      pool0(e, noisy);
      pool0(e, quiet);
      let len = 0;
      for (let q = 0; q < 4; q++) len = flood(noisy, q, kind);
      const qg = storeGuest(quiet.id);
      let noisyDescsBefore = -1;
      const put = store.putPage.bind(store);
      store.putPage = (g, ...rest) => {
        if (g === qg) noisyDescsBefore = completed(e, noisy) * len;
        return put(g, ...rest);
      };
      const before = completed(e, noisy);
      const req = quiet.post(0, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: 1 }), pattern(1));
      if (mode === 'notify') {
        for (let q = 0; q < 4; q++) os.eventfdWrite(noisy.fds[q]!.kick);
        os.eventfdWrite(quiet.fds[0]!.kick);
        for (let q = 0; q < 4; q++) e.kicked(e.instances.get(noisy.id)!, e.instances.get(noisy.id)!.queues[q]!);
        e.kicked(e.instances.get(quiet.id)!, e.instances.get(quiet.id)!.queues[0]!);
      }
      e.pass(mode === 'poll');
      t.same(quiet.rings[0]!.takeUsed(), [{ id: req.head, len: 16 }], 'the quiet request is completed in the first pass');
      t.equal(readResp(quiet.g, req.resp).status, TMEM_S_OK);
      const walked = (completed(e, noisy) - before) * len;
      t.ok(walked >= len, `the noisy guest was served too (${walked} descriptors)`);
      t.ok(noisyDescsBefore >= 0 && noisyDescsBefore - before * len <= TURN_UNITS + len, `noisy descriptors walked before the quiet request: ${noisyDescsBefore - before * len} <= ${TURN_UNITS} + ${len}`);
      t.ok(e.deferred, 'the noisy guest has work left for the next pass');
      if (mode === 'notify') t.ok(e.instances.get(noisy.id)!.queues.some((q) => q.scan), 'a noisy queue cut short stays marked for the next pass');
    });
  }
}

t.test(`the penalty: a guest whose chains the device refuses gets 1/${PENALTY} of the descriptor walks of a guest sending valid chains as long`, async (t) => {
  const { e, vm } = setup({ poll: true });
  const bad = vm('bad', 1, 1024);
  const good = vm('good', 1, 1024);
  bad.start(0);
  good.start(0);
  pool0(e, good);
  const badLen = flood(bad, 0, 'malformed');
  const goodLen = flood(good, 0, 'split-put');
  const passes = 256; // fewer chains than a 1024-entry ring holds
  for (let i = 0; i < passes; i++) e.pass(true);
  const badChains = completed(e, bad);
  const goodChains = completed(e, good) - 1;
  // In the long run a guest spends TURN_UNITS a pass: a refused chain costs
  // PENALTY x 1024 units, the valid one 1023 + 17 (its page, 4160 bytes).
  const badWant = (passes * TURN_UNITS) / (PENALTY * badLen);
  const goodWant = (passes * TURN_UNITS) / (goodLen + 17);
  t.ok(Math.abs(badChains - badWant) <= 1, `refused chains: ${badChains}, about ${badWant}`);
  t.ok(Math.abs(goodChains - goodWant) <= 1, `valid chains: ${goodChains}, about ${goodWant.toFixed(1)}`);
  const ratio = (goodChains * goodLen) / (badChains * badLen);
  t.ok(ratio > PENALTY * 0.9 && ratio < PENALTY * 1.1, `descriptors walked, valid / refused: ${ratio.toFixed(2)}`);
  t.equal(e.instances.get(bad.id)!.counters[VC.penalizedChains], badChains);
  t.equal(e.instances.get(good.id)!.counters[VC.penalizedChains], 0);
});

t.test('a turn holds about TURN_UNITS of work: ordinary PUTs are served a turn at a time, in ring order, none left behind (notify mode)', async (t) => {
  const { e, os, vm } = setup({ num: 256 });
  const v = vm('a');
  v.start(0);
  e.pass(false);
  pool0(e, v);
  const heads: number[] = [];
  for (let i = 0; i < 80; i++) heads.push(v.post(0, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: i }), pattern(i)).head);
  const q = e.instances.get(v.id)!.queues[0]!;
  os.eventfdWrite(v.fds[0]!.kick);
  e.kicked(e.instances.get(v.id)!, q);
  const perTurn = Math.ceil(TURN_UNITS / PUT_UNITS);
  t.equal(e.pass(false), perTurn, `${perTurn} PUTs of ${PUT_UNITS} units in the first turn`);
  t.ok(q.scan && e.deferred, 'the queue stays marked: no kick will come for the rest');
  let served = perTurn;
  let passes = 1;
  while (q.scan) {
    served += e.pass(false);
    passes++;
  }
  t.equal(served, 80, 'the rest in the next passes, without a kick');
  t.ok(passes >= 80 / perTurn && passes <= 80 / perTurn + 2, `${passes} passes`);
  t.notOk(e.deferred);
  t.same(
    v.rings[0]!.takeUsed().map((u) => u.id),
    heads,
    'ring order',
  );
});

t.test('a device that reports extraCost (work its bytes do not show) is charged it: fewer of its chains per turn, none lost', async (t) => {
  const { e, vm } = setup({ num: 256 });
  const v = vm('a');
  // PUT_UNITS + 44 = 64 units a PUT: four fit a turn of TURN_UNITS (256)
  Object.assign(e.instances.get(v.id)!.dev, { extraCost: 44 });
  v.start(0);
  e.pass(true);
  pool0(e, v);
  for (let i = 0; i < 40; i++) v.post(0, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: i }), pattern(i));
  const perTurn = Math.ceil(TURN_UNITS / (PUT_UNITS + 44));
  t.equal(perTurn, 4);
  t.equal(e.pass(true), perTurn, `${perTurn} PUTs of ${PUT_UNITS} + 44 units in the first turn`);
  t.ok(e.deferred, 'work left for the next turns');
  let served = perTurn;
  while (e.deferred || served < 40) {
    const n = e.pass(true);
    if (n === 0 && !e.deferred) break;
    served += n;
  }
  t.equal(served, 40, 'every request served');
  t.equal(v.rings[0]!.takeUsed().length, 40, 'and completed');
});

t.test("round robin between a guest's queues: a full queue does not keep its sibling queues waiting", async (t) => {
  const { e, vm } = setup({ poll: true, num: 256 });
  const v = vm('a', 4);
  for (let q = 0; q < 4; q++) v.start(q);
  pool0(e, v);
  for (let q = 0; q < 4; q++) for (let i = 0; i < 60; i++) v.post(q, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: 1000 * q + i }), pattern(i));
  const qs = e.instances.get(v.id)!.queues;
  const base = qs.map((q) => q.completed);
  for (let p = 0; p < 4; p++) e.pass(true);
  qs.forEach((q, i) => t.ok(q.completed - base[i]! > 0, `queue ${i} served within 4 passes (${q.completed - base[i]!} chains)`));
  while (e.pass(true) > 0);
  t.same(qs.map((q, i) => q.completed - base[i]!), [60, 60, 60, 60], 'every request completed');
});

t.test('notify mode: a guest sitting out its debt loses no request: its queue stays marked and every chain is served without another kick', async (t) => {
  const { e, os, vm } = setup();
  const v = vm('a', 1, 256);
  v.start(0);
  e.pass(false);
  const len = flood(v, 0, 'malformed'); // 256 refused chains of 256 descriptors: 1,024 units each, 4 turns
  const q = e.instances.get(v.id)!.queues[0]!;
  os.eventfdWrite(v.fds[0]!.kick);
  e.kicked(e.instances.get(v.id)!, q);
  let passes = 0;
  let sat = 0;
  while (q.scan && passes < 100000) {
    const before = q.completed;
    e.pass(false);
    if (q.completed === before) sat++;
    passes++;
  }
  const sitOut = (PENALTY * len) / TURN_UNITS - 1;
  t.equal(sitOut, 3, 'each chain costs four turns');
  t.equal(q.completed, 256, `all 256 chains served, in ${passes} passes`);
  t.equal(v.rings[0]!.takeUsed().length, 256);
  t.ok(sat >= 255 * sitOut, `${sat} passes sat out repaying debt (at least ${255 * sitOut})`);
  t.equal(os.counts.get(v.fds[0]!.kick), 0n, 'one kick, consumed; none needed since');
  t.notOk(e.deferred || q.scan, 'done: kicks re-enabled, nothing marked');
});

/** Makes instance `id`'s device answer HANDLE_LATER to its next `times` calls (a device whose data is on a disk); counts the calls. */
function later(e: Engine, id: number, times: number): { calls: number; left: number } {
  const dev = e.instances.get(id)!.dev;
  const handle = dev.handle.bind(dev);
  const s = { calls: 0, left: times };
  dev.handle = (q, rd, wr) => {
    s.calls++;
    if (s.left > 0) {
      s.left--;
      return HANDLE_LATER;
    }
    return handle(q, rd, wr);
  };
  return s;
}

t.test('HANDLE_LATER parks the queue behind its head chain: nothing completed, other guests served, the chain offered again every pass without a kick and then served in ring order', async (t) => {
  const { e, vm, counter } = setup({ features: VERSION_1 | EVENT_IDX });
  const a = vm('a');
  const b = vm('b');
  a.start(0);
  b.start(0);
  e.pass(false);
  const dev = later(e, a.id, 2);
  const heads = [a.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST)).head, a.post(0, reqHeader({ op: TMEM_OP_PUT_PAGE, pool: 0, index: 1 }), pattern(1)).head];
  const bp = b.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  const qa = e.instances.get(a.id)!.queues[0]!;
  const qb = e.instances.get(b.id)!.queues[0]!;
  qa.scan = true;
  qb.scan = true;
  t.equal(e.pass(false), 1, 'one chain completed: the other guest');
  t.same(b.rings[0]!.takeUsed().map((u) => u.id), [bp.head]);
  t.same(a.rings[0]!.takeUsed(), [], 'the parked guest: nothing completed');
  t.ok(qa.parked && e.parked, 'its queue is parked, and the engine says so (the worker sleeps at most 1 ms)');
  t.notOk(qa.scan || e.deferred, 'not marked for an immediate scan: the worker does not spin on it');
  t.equal(dev.calls, 1, 'the queue stopped at its head: the chain behind it was not offered');
  t.equal(counter(a.id, 'parkedChains'), 1);
  t.equal(e.pass(false), 0, 'next pass, no kick: offered again, still later');
  t.equal(dev.calls, 2);
  t.equal(counter(a.id, 'parkedChains'), 1, 'counted once per chain');
  t.equal(e.pass(false), 2, 'then served, both chains');
  t.same(a.rings[0]!.takeUsed().map((u) => u.id), heads, 'in ring order');
  t.notOk(qa.parked || e.parked, 'unparked');
  t.equal(counter(a.id, 'requests'), 2, 'each chain completed once');
});

t.test('GET_VRING_BASE while a queue is parked names the parked chain as not taken; the next start serves it', async (t) => {
  const { e, vm } = setup();
  const v = vm('a');
  v.start(0);
  e.pass(false);
  const dev = later(e, v.id, 1);
  const p = v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  e.instances.get(v.id)!.queues[0]!.scan = true;
  t.equal(e.pass(false), 0);
  t.equal(dev.calls, 1);
  t.equal(e.getVringBase(v.id, 0), 0, 'the base still names the parked chain');
  t.same(v.rings[0]!.takeUsed(), []);
  v.start(0, 0);
  t.equal(e.pass(false), 1, 'offered again at the restart and served');
  t.same(v.rings[0]!.takeUsed(), [{ id: p.head, len: 16 }]);
  t.equal(readResp(v.g, p.resp).status, TMEM_S_OK);
});

t.test('poll mode: a parked queue is offered again each pass and served once the device is ready', async (t) => {
  const { e, vm } = setup({ poll: true });
  const v = vm('a');
  v.start(0);
  e.pass(true);
  const dev = later(e, v.id, 3);
  const p = v.post(0, reqHeader({ op: TMEM_OP_NEW_POOL }), newPoolPayload(TMEM_POOL_PERSIST));
  let passes = 0;
  while (v.rings[0]!.usedIdx() === 0 && passes < 10) {
    e.pass(true);
    passes++;
  }
  t.equal(passes, 4, 'three passes parked, served at the fourth');
  t.equal(dev.calls, 4);
  t.same(v.rings[0]!.takeUsed(), [{ id: p.head, len: 16 }]);
});
