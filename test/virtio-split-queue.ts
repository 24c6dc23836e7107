// The split queue in place in guest RAM: ring order, index wrap, broken rings,
// EVENT_IDX both ways, kick suppression (host/virtio/split-queue.ts).
import t from 'tap';
import { needEvent, SplitQueue } from '../host/virtio/split-queue.js';
import { DriverRing, FakeGuest } from './virtio-driver.js';

function setup(num = 8, eventIdx = false, base = 0) {
  const g = new FakeGuest(1 << 16);
  const r = new DriverRing(g, num);
  if (base) r.setAvailIdx(base);
  const q = SplitQueue.create(g.mem, num, r.addrs, base, eventIdx, true);
  if (typeof q === 'string') throw new Error(q);
  return { g, r, q };
}

t.test('vring_need_event as virtio defines it', async (t) => {
  t.ok(needEvent(0, 1, 0), 'event 0 crossed by 0 -> 1');
  t.notOk(needEvent(1, 1, 0), 'event 1 not crossed by 0 -> 1');
  t.ok(needEvent(1, 2, 0), 'event 1 crossed by 0 -> 2');
  t.ok(needEvent(0xffff, 0, 0xfffe), 'wraps');
  t.notOk(needEvent(5, 3, 3), 'nothing new');
});

t.test('heads come out and are completed in ring order, across the 16-bit wrap', async (t) => {
  const { r, q } = setup(8, false, 0xfffe);
  t.equal(q.pending(), 0);
  for (const h of [3, 1, 2, 0]) r.publish(h);
  t.equal(q.pending(), 4);
  const got: number[] = [];
  while (q.pending() > 0) {
    const h = q.popHead();
    got.push(h);
    q.pushUsed(h, 16 + h);
  }
  t.same(got, [3, 1, 2, 0]);
  t.equal(q.lastAvail, 2, 'wrapped past 0xffff');
  const used = r.takeUsed();
  t.same(used, [3, 1, 2, 0].map((id) => ({ id, len: 16 + id })));
});

t.test('used idx starts where the ring left it (resume after a stop)', async (t) => {
  const g = new FakeGuest(1 << 16);
  const r = new DriverRing(g, 8);
  g.dv.setUint16(g.off(r.used) + 2, 5, true);
  const q = SplitQueue.create(g.mem, 8, r.addrs, 5, false);
  if (typeof q === 'string') throw new Error(q);
  t.equal(q.usedIdx, 5);
  t.equal(q.lastAvail, 5);
});

t.test('an avail idx more than the queue size ahead is a broken ring', async (t) => {
  const { r, q } = setup(8);
  r.setAvailIdx(9);
  t.equal(q.pending(), -1);
  r.setAvailIdx(8);
  t.equal(q.pending(), 8);
});

t.test('without EVENT_IDX the guest silences interrupts with VRING_AVAIL_F_NO_INTERRUPT', async (t) => {
  const { r, q } = setup(8, false);
  r.publish(0);
  q.pushUsed(q.popHead(), 16);
  t.ok(q.needsNotify());
  r.setAvailFlags(1);
  t.notOk(q.needsNotify());
});

t.test('with EVENT_IDX the device interrupts only when used idx passes used_event', async (t) => {
  const { r, q } = setup(8, true);
  for (let i = 0; i < 4; i++) r.publish(i);
  r.setUsedEvent(2); // "interrupt me once used idx goes past 2"
  q.pushUsed(q.popHead(), 16);
  t.ok(q.needsNotify(), 'the first decision always notifies');
  q.pushUsed(q.popHead(), 16); // used idx 2
  t.notOk(q.needsNotify(), '1 -> 2 does not pass event 2');
  q.pushUsed(q.popHead(), 16); // 3
  t.ok(q.needsNotify(), '2 -> 3 passes event 2');
  q.pushUsed(q.popHead(), 16); // 4
  t.notOk(q.needsNotify(), 'already past, guest did not move used_event');
});

t.test('poll mode without EVENT_IDX sets VRING_USED_F_NO_NOTIFY; re-enabling clears it', async (t) => {
  const { r, q } = setup(8, false);
  q.suppressKicks();
  t.equal(r.usedFlags() & 1, 1);
  t.notOk(q.enableKicks(), 'nothing pending');
  t.equal(r.usedFlags() & 1, 0);
});

t.test('poll mode with EVENT_IDX keeps avail_event out of the guest\'s reach', async (t) => {
  const { r, q } = setup(8, true);
  q.suppressKicks();
  for (let k = 0; k < 20; k++) {
    // the guest adds one request: would it kick?
    const old = r.availIdx;
    r.publish(k % 8);
    t.notOk(needEvent(r.availEvent(), r.availIdx, old), `no kick for request ${k}`);
    q.pushUsed(q.popHead(), 16);
  }
  t.equal(r.usedFlags() & 1, 0, 'flags untouched with EVENT_IDX');
});

t.test('re-enabling kicks with EVENT_IDX asks for the very next request and reports a race', async (t) => {
  const { r, q } = setup(8, true);
  q.suppressKicks();
  r.publish(0);
  t.ok(q.enableKicks(), 'a request arrived while kicks were off: do not sleep');
  q.pushUsed(q.popHead(), 16);
  t.notOk(q.enableKicks());
  t.equal(r.availEvent(), 1);
  const old = r.availIdx;
  r.publish(1);
  t.ok(needEvent(r.availEvent(), r.availIdx, old), 'the guest kicks for the next request');
});

t.test('a queue is placed only where virtio allows', async (t) => {
  const g = new FakeGuest(1 << 16);
  const r = new DriverRing(g, 8);
  t.match(SplitQueue.create(g.mem, 6, r.addrs, 0, false), /power of 2/);
  t.match(SplitQueue.create(g.mem, 65536, r.addrs, 0, false), /power of 2/);
  t.match(SplitQueue.create(g.mem, 8, { ...r.addrs, desc: r.desc + 8 }, 0, false), /16-aligned/);
  t.match(SplitQueue.create(g.mem, 8, { ...r.addrs, avail: r.avail + 1 }, 0, false), /2-aligned/);
  t.match(SplitQueue.create(g.mem, 8, { ...r.addrs, used: r.used + 2 }, 0, false), /4-aligned/);
  t.match(SplitQueue.create(g.mem, 8, { ...r.addrs, used: (1 << 16) - 16 }, 0, false), /not inside guest memory/);
  t.match(SplitQueue.create(g.mem, 8, { ...r.addrs, desc: 1 << 20 }, 0, false), /not inside guest memory/);
  t.type(SplitQueue.create(g.mem, 8, r.addrs, 0, false), SplitQueue);
});
