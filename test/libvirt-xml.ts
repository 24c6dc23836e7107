// examples/libvirt/*.xml against libvirt's own domain schema with
// virt-xml-validate (Debian's libvirt-clients; it runs xmllint from
// libxml2-utils), a broken copy that must fail (the validator really
// checks), and the example against the project: the tmem device's QEMU
// arguments are exactly those the tests run QEMU with (vm-images/lib/vm.ts),
// its socket is the one the systemd units and sample config give vm0, and
// guest RAM is a shared memfd, which tmemd and vhost-user need.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuArgs } from '../vm-images/lib/vm.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const EXAMPLES = join(root, 'examples/libvirt');
const VALIDATE = '/usr/bin/virt-xml-validate';

if (!existsSync(VALIDATE)) throw new Error(`${VALIDATE} is missing: install Debian's libvirt-clients and libxml2-utils (npm run setup does)`);
if (!existsSync('/usr/bin/xmllint')) throw new Error('/usr/bin/xmllint is missing (virt-xml-validate runs it): install libxml2-utils (npm run setup does)');

const dir = mkdtempSync(join(tmpdir(), 'tmem-libvirt-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function validate(file: string): { status: number | null; out: string } {
  const r = spawnSync(VALIDATE, [file, 'domain'], { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

const files = readdirSync(EXAMPLES).filter((f) => f.endsWith('.xml'));
const main = join(EXAMPLES, 'tmem-vm0.xml');
const xml = readFileSync(main, 'utf8');

t.test('every example validates against libvirt\'s domain schema', async (t) => {
  t.ok(files.length >= 1, `${files.length} example(s)`);
  for (const f of files) {
    const r = validate(join(EXAMPLES, f));
    t.equal(r.status, 0, `${f}: ${r.out}`);
    t.match(r.out, /validates$/, `${f} validates`);
  }
});

t.test('a broken copy fails: the schema is really applied', async (t) => {
  for (const [what, from, to] of [
    ['an unknown memory access mode', "<access mode='shared'/>", "<access mode='sharable'/>"],
    ['a vhostuser disk source without a path', "<source type='unix' path='/run/tmemd/vm0-blk.sock'/>", "<source type='unix'/>"],
    ['a qemu:arg without its value', "<qemu:arg value='-chardev'/>", '<qemu:arg/>'],
  ] as const) {
    t.ok(xml.includes(from), `the example has ${from}`);
    const bad = join(dir, 'bad.xml');
    writeFileSync(bad, xml.replace(from, to));
    const r = validate(bad);
    t.not(r.status, 0, `${what}: refused`);
    t.match(r.out, /fails to validate/, 'with virt-xml-validate\'s verdict');
  }
});

/** The values of <qemu:arg value='...'/> in order. */
function qemuCommandline(s: string): string[] {
  const block = /<qemu:commandline>([\s\S]*?)<\/qemu:commandline>/.exec(s);
  if (!block) return [];
  return [...block[1]!.matchAll(/<qemu:arg value='([^']*)'\/>/g)].map((m) => m[1]!);
}

t.test('the example runs the tmem device the way the project runs QEMU', async (t) => {
  const args = qemuCommandline(xml);
  const socket = /path=([^,]+)/.exec(args[1] ?? '')?.[1];
  const queues = Number(/num_vqs=(\d+)/.exec(args[3] ?? '')?.[1]);
  t.ok(socket, `the chardev names a socket (${socket})`);
  // vm.ts builds the same two options for a VM with that socket and queue count.
  const ours = qemuArgs({
    cpus: 2,
    queues,
    tmemSocket: socket!,
    accel: 'tcg',
    kernel: { image: '/k' },
    append: '',
    qmpPath: '/q',
    rootfs: '/r',
  } as Parameters<typeof qemuArgs>[0]);
  const chardev = ours.findIndex((a, k) => ours[k - 1] === '-chardev' && a.startsWith('socket,id=tmem0,'));
  t.ok(chardev > 0 && ours[chardev + 1] === '-device' && ours[chardev + 2]?.startsWith('vhost-user-test-device-pci,'), 'vm.ts has the tmem chardev and device');
  // libvirt fills pcie.0 from slot 1 with its root ports: the example gives the device a slot of its own.
  t.same(args, ['-chardev', ours[chardev]!, '-device', `${ours[chardev + 2]!},bus=pcie.0,addr=0x10`], 'the same -chardev and -device as vm-images/lib/vm.ts, in PCI slot 0x10');
  t.ok(queues >= 1 && queues <= 8, `num_vqs=${queues} is within tmemd's default --queues 8`);
  // The socket is vm0's in the systemd units and the sample config.
  const sample = JSON.parse(readFileSync(join(root, 'contrib/systemd/tmemd.json'), 'utf8')) as { vms: { name: string; socket: string }[] };
  t.equal(sample.vms.find((v) => v.name === 'vm0')?.socket, socket, "the sample config's vm0 socket");
  const unit = readFileSync(join(root, 'contrib/systemd/tmemd@.socket'), 'utf8');
  t.equal(/^ListenStream=(.*)$/m.exec(unit)?.[1]?.replace('%i', 'vm0'), socket, 'tmemd@vm0.socket listens there');
  t.match(xml, /<memoryBacking>\s*<source type='memfd'\/>\s*<access mode='shared'\/>\s*<\/memoryBacking>/, 'guest RAM is a shared memfd');
  t.match(xml, /<domain type='kvm' xmlns:qemu='http:\/\/libvirt\.org\/schemas\/domain\/qemu\/1\.0'>/, 'the qemu namespace is declared (libvirt drops <qemu:commandline> otherwise)');
  t.match(xml, /<disk type='vhostuser' device='disk'>\s*<driver name='qemu' type='raw'[^>]*\/>\s*<source type='unix' path='\/run\/tmemd\/[^']+'\/>/, 'tmem-blk as a vhostuser disk on a socket in /run/tmemd');
});
