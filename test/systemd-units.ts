// The units in contrib/systemd/ through systemd's own checker, as an operator
// would install them: copied unchanged into a sandbox root's
// /etc/systemd/system, with tmemd at the ExecStart path (/usr/local/bin/tmemd,
// where `npm install -g` puts it; here a two-line script that execs the built
// dist/host/tmemd.js) and the host's own system units beside them.
// `systemd-analyze verify --root` then checks syntax, dependencies and that
// ExecStart exists and is executable under that root (shown by the same run
// with the binary removed, which must fail), and `systemd-analyze security
// --offline` scores the service's hardening. The sample config the service
// reads must start tmemd's socket-activation path (the same ExecStart flags).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const TMEMD = join(root, 'dist/host/tmemd.js');
const UNITS = join(root, 'contrib/systemd');
const ANALYZE = '/usr/bin/systemd-analyze';
const HOST_UNITS = '/usr/lib/systemd/system';

if (!existsSync(ANALYZE)) throw new Error(`${ANALYZE} is missing: install Debian's systemd package (apt-get install systemd)`);
if (!existsSync(TMEMD)) throw new Error(`${TMEMD} is missing: run npm run build first`);
if (!existsSync(join(HOST_UNITS, 'sysinit.target'))) throw new Error(`${HOST_UNITS} has no sysinit.target: systemd's units are needed for verify`);

const sandbox = mkdtempSync(join(tmpdir(), 'tmem-units-'));
t.teardown(() => rmSync(sandbox, { recursive: true, force: true }));
const etc = join(sandbox, 'etc/systemd/system');
mkdirSync(etc, { recursive: true });
mkdirSync(join(sandbox, 'usr/lib/systemd'), { recursive: true });
cpSync(HOST_UNITS, join(sandbox, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
for (const f of ['tmemd.service', 'tmemd@.socket']) cpSync(join(UNITS, f), join(etc, f));

const service = readFileSync(join(UNITS, 'tmemd.service'), 'utf8');
const execStart = /^ExecStart=(\S+)(.*)$/m.exec(service);
if (!execStart) throw new Error('tmemd.service has no ExecStart=');
const bin = execStart[1]!;
const binInRoot = join(sandbox, bin);
mkdirSync(dirname(binInRoot), { recursive: true });
writeFileSync(binInRoot, `#!/bin/sh\nexec ${process.execPath} ${TMEMD} "$@"\n`);
chmodSync(binInRoot, 0o755);

function analyze(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(ANALYZE, args, { cwd: etc, encoding: 'utf8', timeout: 120000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

t.test('systemd-analyze verify: the service and an instance of the socket template', async (t) => {
  const r = analyze(['verify', `--root=${sandbox}`, 'tmemd.service', 'tmemd@vm0.socket']);
  t.equal(r.status, 0, 'exit status 0');
  t.equal(r.out, '', 'not a warning');
  // The same check with the ExecStart binary gone must fail: verify does look for it.
  renameSync(binInRoot, binInRoot + '.away');
  const gone = analyze(['verify', `--root=${sandbox}`, 'tmemd.service']);
  renameSync(binInRoot + '.away', binInRoot);
  t.not(gone.status, 0, 'without the binary verify fails');
  t.match(gone.out, new RegExp(`tmemd\\.service: Command ${bin.replace(/\//g, '\\/')} is not executable`), 'naming ExecStart');
});

t.test('systemd-analyze security: the service is hardened (exposure at most 4.0 of 10)', async (t) => {
  const r = analyze(['security', '--offline=true', `--root=${sandbox}`, '--threshold=40', '--no-pager', 'tmemd.service']);
  const level = /Overall exposure level for tmemd\.service: ([\d.]+)/.exec(r.out);
  t.ok(level, 'an overall exposure level');
  t.equal(r.status, 0, `within the threshold (exposure ${level?.[1]})`);
  t.ok(Number(level?.[1]) <= 4.0, `exposure ${level?.[1]} <= 4.0`);
});

t.test('the socket template and the service agree', async (t) => {
  const socket = readFileSync(join(UNITS, 'tmemd@.socket'), 'utf8');
  t.match(socket, /^FileDescriptorName=%i$/m, 'each socket is named after its VM (LISTEN_FDNAMES)');
  t.match(socket, /^Service=tmemd\.service$/m, 'and handed to tmemd.service');
  t.match(socket, /^ListenStream=\/run\/tmem\/%i\.sock$/m, 'listening on /run/tmem/VM.sock');
  t.match(service, /^Type=notify$/m, 'the service says READY=1 itself');
});

t.test("the service's ExecStart with the sample config: flags and config are valid, and a start without the VM's socket is refused in one line", async (t) => {
  const args = execStart[2]!.trim().split(/\s+/).map((a) => (a === '/etc/tmem/tmemd.json' ? join(UNITS, 'tmemd.json') : a));
  t.ok(args.includes(join(UNITS, 'tmemd.json')), 'ExecStart reads /etc/tmem/tmemd.json');
  // LISTEN_PID set by the shell to the pid exec keeps; no socket passed (LISTEN_FDS=0).
  const r = spawnSync('sh', ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', 'sh', binInRoot, ...args.map((a) => (a === '/run/tmemd/control.sock' ? join(sandbox, 'control.sock') : a))], {
    env: { ...process.env, LISTEN_FDS: '0' },
    encoding: 'utf8',
    timeout: 60000,
  });
  t.equal(r.status, 1, 'exit status 1');
  t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr.trim()}`);
  t.match(r.stderr, /^tmemd: vm vm0: started by systemd with 0 socket\(s\) .* none named 'vm0': start its socket unit \(systemctl start tmemd@vm0\.socket\)/);
});
