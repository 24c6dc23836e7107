// The VM library's stop order (vm-images/lib/session.ts), without booting a
// guest: a stand-in QEMU (speaks just enough QMP: greeting, capabilities,
// quit) and a stand-in tmemd (creates its socket, notes SIGTERM) write to one
// log, and Session.stop() must have QEMU gone before the daemon is asked to
// stop, continue a SIGSTOPped daemon, remove the run directory, and do it all
// once however often it is called. Also: the guest kernel is a parameter of
// the QEMU command line (Debian's boots with an initrd, ours without), and an
// unknown kernel name is a one-line error.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon, Session, Vm, bootAppend, kernelName, qemuArgs, type BootKernel } from '../vm-images/lib/index.js';

const FAKE_QEMU = `
const net = require('node:net');
const fs = require('node:fs');
const log = process.argv[2];
const args = process.argv.slice(3);
const qmp = args[args.indexOf('-qmp') + 1].replace(/^unix:/, '').split(',')[0];
net.createServer((c) => {
  c.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + '\\n');
  let buf = '';
  c.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) {
      const m = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
      c.write(JSON.stringify({ return: {}, id: m.id }) + '\\n');
      if (m.execute === 'quit') { fs.appendFileSync(log, 'qemu exits\\n'); process.exit(0); }
    }
  });
}).listen(qmp);
`;

const FAKE_TMEMD = `
const net = require('node:net');
const fs = require('node:fs');
const [log, sock] = process.argv.slice(2, 4);
net.createServer(() => {}).listen(sock);
process.on('SIGTERM', () => { fs.appendFileSync(log, 'daemon asked to stop\\n'); process.exit(0); });
`;

function kernel(name: 'tmem' | 'debian'): BootKernel {
  return name === 'debian'
    ? { name, version: '5.10.0-32-amd64', dir: '/k', image: '/k/vmlinuz', initrd: '/k/initrd.img', buildDir: '/k/headers' }
    : { name, version: '5.10.223', dir: '/t', image: '/t/bzImage', initrd: null, buildDir: '/t/build' };
}

t.test('the guest kernel is a parameter of the command line', async (t) => {
  const base = { qemu: 'q', rootfs: '/r.img', cpus: 2, queues: 2, qmpPath: '/q.sock', append: bootAppend({}), accel: 'tcg' as const };
  const deb = qemuArgs({ ...base, kernel: kernel('debian') });
  const ours = qemuArgs({ ...base, kernel: kernel('tmem') });
  t.same(deb.slice(deb.indexOf('-kernel'), deb.indexOf('-kernel') + 4), ['-kernel', '/k/vmlinuz', '-initrd', '/k/initrd.img'], "Debian's vmlinuz with our initramfs");
  t.equal(ours[ours.indexOf('-kernel') + 1], '/t/bzImage', 'our bzImage');
  t.notOk(ours.includes('-initrd'), 'our kernel boots without an initrd');
  t.same(deb.filter((a) => a !== '/k/vmlinuz' && a !== '-initrd' && a !== '/k/initrd.img'), ours.filter((a) => a !== '/t/bzImage'), 'nothing else differs');
  t.equal(kernelName(undefined), 'tmem', 'the default kernel is ours');
  t.equal(kernelName('debian'), 'debian');
  // tmem-blk: QEMU's own vhost-user-blk-pci on the given socket, at the fixed address the guest looks for
  const blk = qemuArgs({ ...base, kernel: kernel('debian'), blkSocket: '/run/a,b/blk.sock', blkQueues: 3 });
  t.same(blk.slice(blk.indexOf('socket,id=blk0,path=/run/a,,b/blk.sock') - 1, blk.indexOf('socket,id=blk0,path=/run/a,,b/blk.sock') + 3),
    ['-chardev', 'socket,id=blk0,path=/run/a,,b/blk.sock', '-device', 'vhost-user-blk-pci,chardev=blk0,num-queues=3,bus=pcie.0,addr=0x10,id=tmemblk'], 'blkSocket: a vhost-user-blk-pci disk at 00:10.0 (comma escaped)');
  t.notOk(deb.some((x) => x.includes('vhost-user-blk')), 'none without blkSocket');
  t.equal(kernelName('bookworm'), 'bookworm');
  t.equal(kernelName('bookworm-generic'), 'bookworm-generic');
  t.throws(() => kernelName('fedora'), /^unknown guest kernel 'fedora' \(use tmem, debian, bookworm, bookworm-generic\)$/, 'an unknown kernel is a one-line error');
});

t.test('Session.stop: QEMU first, then the daemon (continued if stopped), then the run directory; once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vm-session-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = join(dir, 'order.log');
  writeFileSync(log, '');
  const qemu = join(dir, 'fake-qemu.sh');
  writeFileSync(join(dir, 'fake-qemu.cjs'), FAKE_QEMU);
  writeFileSync(join(dir, 'fake-tmemd.cjs'), FAKE_TMEMD);
  writeFileSync(qemu, `#!/bin/sh\nexec ${process.execPath} ${join(dir, 'fake-qemu.cjs')} ${log} "$@"\n`, { mode: 0o755 });
  const runDir = join(dir, 'run');

  const s = new Session();
  const sock = join(dir, 'tmem.sock');
  const daemon = s.add(await Daemon.start({ cmd: `${process.execPath} ${join(dir, 'fake-tmemd.cjs')} ${log} ${sock}`, socket: sock, maxmem: '1G', log: null }));
  const vm = s.add(await Vm.start({ qemu, kernel: kernel('debian'), rootfs: '/dev/null', runDir, swapSize: 0, dataSize: 0, tmemSocket: sock, harnessPort: false }));
  s.addDir(runDir);
  t.ok(vm.cmdline.includes('-initrd'), 'the VM was started with the initrd');
  await vm.qmpClient(); // QEMU is up
  process.kill(daemon.proc.pid!, 'SIGSTOP'); // a test that stalls the daemon, then fails

  const [a, b] = await Promise.all([s.stop(), s.stop()]);
  t.equal(a, b, 'a second stop() is the first one');
  t.same(readFileSync(log, 'utf8').split('\n').filter(Boolean), ['qemu exits', 'daemon asked to stop'], 'QEMU was gone before the daemon was asked to stop');
  t.equal(a.qemu[0]!.code, 0, 'QEMU quit over QMP');
  t.equal(a.daemons[0]!.code, 0, 'the stopped daemon was continued and exited on SIGTERM');
  t.notOk(existsSync(runDir), 'the run directory is removed');
});
