// "Is this socket path in use?" without connecting (issue 13 item 6): a
// second daemon given the first one's socket must refuse to start and must
// not, even for a moment, become the first daemon's guest (a QEMU connecting
// at that moment would be refused). native.unixPathHasListener asks the
// kernel (sock_diag) by the file's device and inode: a listener is found
// whatever path it was bound under; a stale socket file (its process gone)
// is not a listener and is replaced.
import t from 'tap';
import { linkSync, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import * as native from '../native/index.js';
import { requestDaemon } from '../host/control/client.js';
import { Daemon } from './vhost/harness.js';
const dir = mkdtempSync(join(tmpdir(), 'tmemd-probe-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('unixPathHasListener: listening, bound only, closed, renamed, relative, missing, not a socket', (t) => {
  const p = join(dir, 'l.sock');
  const fd = native.listenUnix(p);
  t.equal(native.unixPathHasListener(p), true, 'a listening socket is found');
  const moved = join(dir, 'moved.sock');
  renameSync(p, moved);
  t.equal(native.unixPathHasListener(moved), true, 'found under its new name (by device and inode, not by the bound path)');
  t.equal(native.unixPathHasListener(p), false, 'the old name is gone');
  native.close(fd);
  t.equal(native.unixPathHasListener(moved), false, 'after close: a stale file, no listener');
  t.ok(statSync(moved).isSocket(), 'the stale socket file is still there');

  // Bound under a relative path: /proc/net/unix would show "rel.sock", which no absolute path matches.
  const cwd = process.cwd();
  process.chdir(dir);
  let rfd: number;
  try {
    rfd = native.listenUnix('rel.sock');
  } finally {
    process.chdir(cwd);
  }
  t.equal(native.unixPathHasListener(join(dir, 'rel.sock')), true, 'bound under a relative path, found by its absolute path');
  t.equal(native.unixPathHasListener(relative(cwd, join(dir, 'rel.sock'))), true, 'and by another relative path');
  native.close(rfd);

  t.equal(native.unixPathHasListener(join(dir, 'missing.sock')), false, 'a missing path');
  t.equal(native.unixPathHasListener(dir), false, 'a directory');
  t.end();
});

t.test("a second daemon on the same socket refuses without ever becoming the first one's guest", async (t) => {
  const sock = join(dir, 'vm.sock');
  const ctl1 = join(dir, 'ctl1.sock');
  const a = new Daemon(['--vm', `name=one,socket=${sock},maxmem=1G`, '--control', ctl1, '--capacity', '16M', '--queues-mode', 'notify']);
  t.teardown(() => a.stop());
  await a.waitFor(/ready:/);
  const before = statSync(sock);
  for (let i = 0; i < 5; i++) {
    const b = new Daemon(['--vm', `name=two,socket=${sock},maxmem=1G`, '--control', join(dir, `ctl2-${i}.sock`), '--capacity', '16M', '--queues-mode', 'notify']);
    const st = await b.exited;
    t.equal(st.code, 1, `second daemon ${i} exits 1`);
    t.match(b.stderr, new RegExp(`tmemd: ${sock.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is in use: another process listens on it`));
  }
  const after = statSync(sock);
  t.equal(after.ino, before.ino, "the first daemon's socket file was not replaced");
  const r = await requestDaemon(ctl1, { cmd: 'stats' }, 10000);
  t.equal(r.ok, true);
  const host = (r.result as { host: { refusedConnections: number; guestsConnected: number } }).host;
  t.equal(host.refusedConnections, 0, 'no connection was refused');
  t.equal(host.guestsConnected, 0, 'no guest is connected');
  t.notMatch(a.stderr, /guest connected|guest left|refused a second/, 'the first daemon never saw a connection');
  // and it still serves a guest
  const c = native.connectUnix(sock);
  await a.waitFor(/vm one: guest connected/);
  native.close(c);
  await a.waitFor(/vm one: guest left/);
});

t.test('a stale socket file (no listener) is replaced', async (t) => {
  const sock = join(dir, 'stale.sock');
  native.close(native.listenUnix(sock)); // bound, then its process "died": the file stays
  // A second name keeps the old inode alive, so the new socket cannot reuse its number.
  linkSync(sock, `${sock}.old`);
  const old = statSync(sock).ino;
  const d = new Daemon(['--vm', `name=s,socket=${sock},maxmem=1G`, '--control', 'none', '--capacity', '16M', '--queues-mode', 'notify']);
  t.teardown(() => d.stop());
  await d.waitFor(/ready:/);
  t.not(statSync(sock).ino, old, 'a new socket file');
  t.equal(statSync(`${sock}.old`).nlink, 1, 'the stale one was unlinked');
  t.equal(native.unixPathHasListener(sock), true, 'and the daemon listens on it');
});
