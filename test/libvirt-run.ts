// examples/libvirt/tmem-vm0.xml run by libvirt itself: virt-qemu-run
// (Debian's libvirt-daemon-driver-qemu: libvirt's QEMU driver embedded in
// one process, qemu:///embed, no libvirtd) starts the domain against the
// built tmemd. The example is changed only where this machine differs from
// a host that runs it: TCG instead of KVM (no host CPU model), the project's
// QEMU 11.1 as <emulator>, the test guest's kernel, root, swap and project
// disks in place of the example's images, a console file, paths in a
// temporary directory, and the workload named through <sysinfo type='fwcfg'>.
// The tmem device's <qemu:commandline> and the memfd memory backing are the
// example's, byte for byte. The tmem-blk <disk type='vhostuser'> is kept with
// its socket path in the temporary directory: QEMU's vhost-user-blk-pci
// connects to tmemd at start (GET_CONFIG) and the guest's virtio_blk sets
// up its rings in tmemd (its "guest memory" line for vm0 blk).
// libvirt runs unprivileged (as nobody) so that it needs no libvirt-qemu
// user, cgroups or AppArmor here.
//
// Checks: libvirt starts the domain; the guest finds the tmem device at
// 00:10.0 and loads the module; tmemd maps the memfd libvirt made (its
// "guest memory" line: libvirt's memfd is sealed as tmemd requires);
// swapstress over more memory than the guest has verifies every page with
// frontswap puts and gets served by tmemd.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { e2eEnv, ROOT, TMEMD_CMD } from './e2e/harness.js';

const VQR = '/usr/bin/virt-qemu-run';
const VALIDATE = '/usr/bin/virt-xml-validate';
const NOBODY = 65534;
const RAM_MIB = 192;
const SWAP_MIB = 256;
const STRESS_MIB = 224;

if (!existsSync(VQR)) throw new Error(`${VQR} is missing: install Debian's libvirt-daemon-driver-qemu (npm run setup does)`);
if (!existsSync(VALIDATE)) throw new Error(`${VALIDATE} is missing: install Debian's libvirt-clients (npm run setup does)`);
if (!existsSync('/usr/bin/setpriv')) throw new Error('/usr/bin/setpriv is missing (util-linux)');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The example, with what differs on this machine replaced; throws if a piece to replace is not there. */
function domainXml(o: { qemu: string; kernel: string; append: string; rootfs: string; files: string; swap: string; console: string; tmemSocket: string; blkSocket: string }): string {
  let s = readFileSync(join(ROOT, 'examples/libvirt/tmem-vm0.xml'), 'utf8');
  const sub = (from: string | RegExp, to: string): void => {
    const before = s;
    s = s.replace(from, to);
    if (s === before) throw new Error(`the example no longer has ${from}`);
  };
  sub(/<!--[\s\S]*?-->\s*/g, '');
  sub("<domain type='kvm'", "<domain type='qemu'");
  sub(/\s*<cpu mode='host-passthrough'\/>/, '');
  sub("<memory unit='MiB'>2048</memory>", `<memory unit='MiB'>${RAM_MIB}</memory>`);
  sub("<currentMemory unit='MiB'>2048</currentMemory>", `<currentMemory unit='MiB'>${RAM_MIB}</currentMemory>`);
  sub('<emulator>/usr/local/bin/qemu-system-x86_64</emulator>', `<emulator>${o.qemu}</emulator>`);
  sub("<boot dev='hd'/>", `<kernel>${o.kernel}</kernel>\n    <cmdline>${o.append}</cmdline>`);
  sub('</os>', `</os>\n  <sysinfo type='fwcfg'>\n    <entry name='opt/tmem/run'>/opt/tmem/workloads/swapstress.sh --mib ${STRESS_MIB}</entry>\n  </sysinfo>`);
  // The example's two file disks become the guest's root and swap disks (found by serial), plus the project files.
  const disk = (file: string, dev: string, serial: string, ro: boolean) =>
    `<disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      <source file='${file}'/>\n      <target dev='${dev}' bus='virtio'/>${ro ? '\n      <readonly/>' : ''}\n      <serial>${serial}</serial>\n    </disk>`;
  sub(/<disk type='file' device='disk'>\s*<driver name='qemu' type='qcow2'\/>[\s\S]*?<\/disk>/, disk(o.rootfs, 'vda', 'tmemroot', true));
  sub(/<disk type='file' device='disk'>\s*<driver name='qemu' type='raw'\/>\s*<source file='\/var\/lib\/libvirt\/images\/vm0-swap.img'\/>[\s\S]*?<\/disk>/, `${disk(o.swap, 'vdb', 'tmemswap', false)}\n    ${disk(o.files, 'vdd', 'tmemfiles', true)}`);
  sub(/<serial type='pty'>[\s\S]*?<\/console>/, `<serial type='file'>\n      <source path='${o.console}'/>\n      <target port='0'/>\n    </serial>`);
  sub("path=/run/tmem/vm0.sock'", `path=${o.tmemSocket}'`);
  sub("<source type='unix' path='/run/tmemd/vm0-blk.sock'/>", `<source type='unix' path='${o.blkSocket}'/>`); // tmem-blk: see the top of this file
  return s;
}

t.test('the libvirt example, run by libvirt: the guest uses tmem served by tmemd', async (t) => {
  const env = await e2eEnv(t);
  const b = env.built;
  // Everything libvirt and QEMU (running as nobody) touch: the directory tree and its files.
  const dir = mkdtempSync(join(tmpdir(), 'tmem-libvirt-run-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o755);
  const lvRoot = join(dir, 'libvirt');
  mkdirSync(join(lvRoot, 'etc'), { recursive: true });
  // No virtlogd here: QEMU's output goes to a file libvirt opens itself.
  writeFileSync(join(lvRoot, 'etc', 'qemu.conf'), 'stdio_handler = "file"\n');
  const swap = join(dir, 'swap.img');
  writeFileSync(swap, '');
  spawnSync('truncate', ['-s', `${SWAP_MIB}M`, swap]);
  const mk = spawnSync('mkswap', ['-q', swap], { encoding: 'utf8' });
  if (mk.status !== 0) throw new Error(`mkswap failed: ${mk.stderr}`);
  const consolePath = join(dir, 'console.log');
  writeFileSync(consolePath, '');
  for (const p of [lvRoot, join(lvRoot, 'etc'), join(lvRoot, 'etc', 'qemu.conf'), swap, consolePath]) chownSync(p, NOBODY, NOBODY);

  const tmemSocket = join(dir, 'vm0.sock');
  const blkSocket = join(dir, 'vm0-blk.sock');
  const overflowDir = join(dir, 'overflow');
  mkdirSync(overflowDir);
  const daemon = await env.lib.startDaemon({
    cmd: TMEMD_CMD,
    socket: tmemSocket,
    blkSocket,
    blkSize: '64M',
    blkOverflowDir: overflowDir,
    name: 'vm0',
    maxmem: '1G',
    capacity: '512M',
    queues: 2,
    // QEMU runs as nobody here (as libvirt-qemu on a real host: socket-group=kvm there)
    args: ['--socket-mode', '0666', '--control', 'none'],
    log: null,
  });
  env.cleanup.add(daemon);

  const xml = domainXml({ qemu: b.qemu, kernel: b.kernel.image, append: env.lib.bootAppend({}), rootfs: b.rootfs, files: b.tmemfiles, swap, console: consolePath, tmemSocket, blkSocket });
  const xmlPath = join(dir, 'vm0.xml');
  writeFileSync(xmlPath, xml);
  const v = spawnSync(VALIDATE, [xmlPath, 'domain'], { encoding: 'utf8' });
  t.equal(v.status, 0, `the domain run here validates too: ${v.stdout}${v.stderr}`.trim());
  t.match(xml, /<qemu:arg value='vhost-user-test-device-pci,chardev=tmem0,virtio-id=39,num_vqs=2,vq_size=256,id=tmem0dev,bus=pcie.0,addr=0x10'\/>/, "the example's tmem device, unchanged");
  t.match(xml, /<memoryBacking>\s*<source type='memfd'\/>\s*<access mode='shared'\/>/, "the example's memory backing, unchanged");

  let out = '';
  const lv = spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'env', `HOME=${lvRoot}`, VQR, '-r', lvRoot, xmlPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  lv.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  lv.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const lvExit = new Promise<number | null>((r) => lv.once('exit', (code) => r(code)));
  // virt-qemu-run destroys the domain on SIGTERM; QEMU must stop before tmemd, and the cleanup stops tmemd.
  const stopLibvirt = async (): Promise<void> => {
    if (lv.exitCode === null && lv.signalCode === null) lv.kill('SIGTERM');
    const timer = setTimeout(() => lv.kill('SIGKILL'), 20000);
    await lvExit;
    clearTimeout(timer);
  };
  t.teardown(stopLibvirt);

  const consoleText = () => (existsSync(consolePath) ? readFileSync(consolePath, 'utf8') : '');
  const end = Date.now() + 15 * 60_000;
  while (!consoleText().includes('@@TMEM-POWEROFF')) {
    if (lv.exitCode !== null) throw new Error(`virt-qemu-run exited (${lv.exitCode}) before the guest powered off:\n${out}\n--- console:\n${consoleText().slice(-3000)}\n--- tmemd:\n${daemon.output()}`);
    if (Date.now() > end) throw new Error(`the guest did not power off within 15 min:\n${consoleText().slice(-3000)}`);
    await sleep(500);
  }
  await stopLibvirt();
  const con = consoleText();
  const ready = /@@TMEM-READY [^\n]*/.exec(con)?.[0] ?? '';
  t.match(ready, /tmemdev=0000:00:10\.0/, 'the guest finds the tmem device in the slot the example gives it');
  t.match(ready, /module=loaded/, 'virtio_tmem loaded');
  t.match(ready, new RegExp(`swap=/dev/vd`), 'the swap disk found');
  const resultLine = /@@TMEM-RESULT (\{[^\n]*\})/.exec(con)?.[1];
  t.ok(resultLine, 'swapstress reported');
  /* eslint-disable @typescript-eslint/no-explicit-any */
  const res = JSON.parse(resultLine ?? '{}') as any;
  t.equal(res.rc, 0, 'swapstress exit 0');
  t.equal(res.result?.ok, true, 'every page verified');
  t.equal(res.result?.mismatches, 0, '0 mismatches');
  t.ok(res.result?.pages_checked >= (STRESS_MIB * 256), `${res.result?.pages_checked} page checks`);
  const lat = String(res.tmem_debugfs?.latency_ns ?? '');
  const count = (op: string) => Number(new RegExp(`^${op} (\\d+) `, 'm').exec(lat)?.[1] ?? 0);
  t.ok(count('put_page') > 0, `tmem puts served by tmemd: ${count('put_page')}`);
  t.ok(count('get_page') > 0, `tmem gets served by tmemd: ${count('get_page')}`);
  // (pswpout counts swap disk writes only: pages frontswap took never reach it)
  t.ok(res.result?.pages * 4 > res.result?.memtotal_kb, `the workload's ${res.result?.pages} pages are more than the guest's ${res.result?.memtotal_kb} kB: it had to swap`);
  t.comment(`pswpout ${res.vmstat_delta?.pswpout} (disk), put_page ${count('put_page')}, get_page ${count('get_page')}`);
  const log = daemon.output();
  t.match(log, new RegExp(`vm vm0: guest memory: 1 region\\(s\\), RAM ${RAM_MIB} MiB`), "tmemd mapped libvirt's memfd (sealed, as tmemd requires)");
  t.match(log, /vm vm0 blk: guest connected on /, "QEMU's vhost-user-blk-pci from the example's <disk type='vhostuser'> connected to tmem-blk");
  t.match(log, new RegExp(`vm vm0 blk: guest memory: 1 region\\(s\\), RAM ${RAM_MIB} MiB`), "the guest's virtio_blk set up tmem-blk's rings");
  t.notMatch(log, /tmemd error:|BUG/, 'no error in tmemd');
});
