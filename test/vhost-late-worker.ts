// The main event loop never waits on the vring worker: with the worker made
// late on purpose (the TMEMD_TEST_HOOKS test hook, refused outside
// NODE_ENV=test), another VM's socket and the control socket keep answering;
// the late VM gets its reply once the worker answers, or, past the reply
// timeout, a failure ack and a closed connection with a log line, and its
// removal runs when the worker gets to it. Checked by order of events, not by
// timing thresholds.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requestDaemon } from '../host/control/client.js';
import { encodeVringState, VhostUserRequest as R } from '../host/vhost-user/messages.js';
import { ACK, Daemon, TMEMD, VhostSocket } from './vhost/harness.js';

/** A front-end socket; replies wait up to 20 s (the late worker answers after 7). */
const front = (path: string) => new VhostSocket(path, 20000);

t.test('the test hook is refused outside NODE_ENV=test', async (t) => {
  const r = spawnSync(process.execPath, [TMEMD, '--vm', 'name=a,socket=/tmp/none.sock,maxmem=64M', '--control', 'none'], {
    encoding: 'utf8',
    env: { ...process.env, NODE_ENV: 'production', TMEMD_TEST_HOOKS: 'stall:a:open:10' },
    timeout: 20000,
  });
  t.equal(r.status, 1);
  t.match(r.stderr, /^tmemd: TMEMD_TEST_HOOKS is a test hook; refused outside NODE_ENV=test\n$/);
});

t.test('one VM late in the worker: another VM and the control socket answer; the late VM gets its reply, or is closed past the timeout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-late-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = (n: string) => join(dir, `${n}.sock`);
  const ctl = join(dir, 'ctl.sock');
  const d = new Daemon(
    ['--vm', `name=slow,socket=${sock('slow')},maxmem=64M`, '--vm', `name=late,socket=${sock('late')},maxmem=64M`, '--vm', `name=fast,socket=${sock('fast')},maxmem=64M`, '--control', ctl, '--capacity', '64M'],
    { env: { ...process.env, NODE_ENV: 'test', TMEMD_TEST_HOOKS: 'stall:slow:getVringBase:3000,stall:late:setVringNum:7000' }, waitMs: 30000, killAfterMs: 15000 },
  );
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  t.match(d.stderr, /test hooks enabled/, 'the daemon says loudly that test hooks are on');

  const fast = front(sock('fast'));
  fast.send(R.GET_FEATURES);
  t.match(fast.next(), { request: R.GET_FEATURES }, 'the fast VM is connected');

  // 1. slow: GET_VRING_BASE, which the worker answers 3 s late (under the 5 s reply timeout)
  const slow = front(sock('slow'));
  slow.send(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
  fast.send(R.GET_FEATURES);
  t.match(fast.next(), { request: R.GET_FEATURES }, 'the other VM answers while the worker is late');
  fast.send(R.GET_QUEUE_NUM);
  t.match(fast.next(), { request: R.GET_QUEUE_NUM });
  const g = await requestDaemon(ctl, { cmd: 'guests' }, 10000);
  t.equal(g.ok, true, 'the control socket answers while the worker is late');
  t.notOk(slow.readable(), 'and all that happened before the late VM got its reply');
  const r = slow.next();
  t.not(r, 'eof');
  if (r !== 'eof') {
    t.equal(r.request, R.GET_VRING_BASE, 'the late VM gets its reply once the worker answers');
    t.same([r.payload.readUInt32LE(0), r.payload.readUInt32LE(4)], [0, 0]);
  }
  slow.send(R.GET_FEATURES);
  t.match(slow.next(), { request: R.GET_FEATURES }, 'and its connection goes on');

  // 2. late: SET_VRING_NUM with NEED_REPLY, which the worker answers 7 s late (past the 5 s timeout)
  const late = front(sock('late'));
  late.send(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 256 }), [], ACK);
  fast.send(R.GET_FEATURES);
  t.match(fast.next(), { request: R.GET_FEATURES }, 'the other VM answers meanwhile');
  t.equal((await requestDaemon(ctl, { cmd: 'guests' }, 10000)).ok, true, 'so does the control socket');
  const nack = late.next();
  t.not(nack, 'eof');
  if (nack !== 'eof') {
    t.equal(nack.request, R.SET_VRING_NUM);
    t.equal(nack.payload.readBigUInt64LE(0), 1n, 'past the timeout: the front-end is told the request failed');
  }
  t.equal(late.next(), 'eof', 'then the connection is closed');
  await d.waitFor(/vm late: SET_VRING_NUM \(8\) failed: vring worker did not answer setVringNum within 5000 ms/);
  t.pass('with a log line saying why');
  // the worker gets to the late command, then to the close queued behind it
  await d.waitFor(/vring worker answered setVringNum after \d+ ms/);
  const stats = await requestDaemon(ctl, { cmd: 'stats' }, 20000);
  t.equal(stats.ok, true);
  const res = (stats as { result: { guests: { name: string; connected: boolean; dataplane: unknown; store: unknown }[] } }).result;
  const lateVm = res.guests.find((x) => x.name === 'late')!;
  t.same([lateVm.connected, lateVm.dataplane, lateVm.store], [false, null, null], 'nothing of the late VM is left in the worker or the store');
  t.equal(res.guests.find((x) => x.name === 'fast')!.connected, true, 'the fast VM is still connected');
  fast.close();
  slow.close();
  late.close();
  t.equal((await d.stop()).code, 0, 'clean exit');
});
