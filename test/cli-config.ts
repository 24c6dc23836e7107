// tmemd's command line and config file: every value that parses, every bad
// input with its one-line error (host/config.ts).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_BLK_SIZE_BYTES, DEFAULTS, HELP, MAX_CAPACITY_BYTES, MAX_CONFIG_BYTES, formatSize, parseArgs, parseSize, parseVmSpec, readConfigText, type DaemonConfig } from '../host/config.js';
import { folderProblem, socketPathProblem } from '../host/control/client.js';
import { MAX_CAPACITY_PAGES, TmemStore } from '../host/tmem/store/store.js';

/** VM specs that give no socket-mode/owner/group (test/socket-modes.ts covers those). */
const NO_SOCKET_ACCESS = { mode: null, owner: null, group: null };
/** VM specs without max-ram/allow-unsealed/tmem-max/ram, as parseVmSpec gives them (max-ram filled in by parseArgs). */
const NO_LIMITS = { maxRamBytes: null, allowUnsealed: false, tmemMaxBytes: null, ramBytes: 0n };

const env = { TMEMD_CONTROL: '/tmp/ctl.sock' };
/** The host's RAM as parseArgs sees it in these tests (not this machine's): 64T. */
const HOST_MEM = 64n << 40n;
const run = (argv: string[], files: Record<string, string> = {}, hostMem = HOST_MEM): DaemonConfig => {
  const r = parseArgs(argv, env, (p) => {
    if (!(p in files)) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
    return files[p]!;
  }, hostMem);
  if (r.kind !== 'run') throw new Error(`expected run, got ${r.kind}`);
  return r.config;
};
/** The call throws a one-line ConfigError matching re. */
/** The few assertions the helpers use (t and subtests alike). */
type Asserts = Pick<typeof t, 'fail' | 'ok' | 'match' | 'notOk'>;
const throwsConfig = (tt: Asserts, fn: () => unknown, re: RegExp, name: string) => {
  try {
    fn();
    tt.fail(`${name}: did not throw`);
  } catch (e) {
    tt.ok(e instanceof ConfigError, `${name}: a ConfigError`);
    tt.match((e as Error).message, re, name);
    tt.notOk((e as Error).message.includes('\n'), `${name}: one line`);
  }
};
const fails = (tt: Asserts, argv: string[], re: RegExp, files: Record<string, string> = {}, hostMem = HOST_MEM) => throwsConfig(tt, () => run(argv, files, hostMem), re, argv.join(' '));

const VM = 'name=a,socket=/tmp/a.sock,maxmem=2G';
const TMEMD_JS = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist/host/tmemd.js');

t.test('sizes: plain bytes and binary units', (t) => {
  t.equal(parseSize('4096', 'x'), 4096n);
  t.equal(parseSize('512M', 'x'), 512n << 20n);
  t.equal(parseSize('2G', 'x'), 2n << 30n);
  t.equal(parseSize('2g', 'x'), 2n << 30n);
  t.equal(parseSize('1T', 'x'), 1n << 40n);
  t.equal(parseSize('4K', 'x'), 4096n);
  t.equal(parseSize('2GiB', 'x'), 2n << 30n);
  t.equal(parseSize('2GB', 'x'), 2n << 30n);
  t.equal(parseSize('0', 'x'), 0n);
  for (const bad of ['', 'G', '-1', '1.5G', '2X', '0x10', '2 G B', '1e9', 'abc', '99999999999999999999999P']) {
    t.throws(() => parseSize(bad, '--capacity'), /--capacity: /, `'${bad}' refused`);
  }
  t.end();
});

t.test('--vm specs', (t) => {
  t.same(parseVmSpec('name=web1,socket=/run/web1.sock,maxmem=6G,share-group=g1'), { name: 'web1', socket: '/run/web1.sock', fd: null, maxmemBytes: 6n << 30n, shareGroup: 'g1', socketAccess: NO_SOCKET_ACCESS, blk: null, limits: NO_LIMITS });
  t.same(parseVmSpec('name=db,fd=5,maxmem=1024'), { name: 'db', socket: null, fd: 5, maxmemBytes: 1024n, shareGroup: null, socketAccess: NO_SOCKET_ACCESS, blk: null, limits: NO_LIMITS });
  t.equal(parseVmSpec('name=x,socket=/tmp/a,,b.sock,maxmem=1G').socket, '/tmp/a,b.sock', ',, is a literal comma');
  const bad: [string, RegExp][] = [
    ['socket=/a,maxmem=1G', /name= is missing/],
    ['name=a,maxmem=1G', /exactly one of socket=PATH or fd=N/],
    ['name=a,socket=/a,fd=3,maxmem=1G', /exactly one of socket=PATH or fd=N/],
    ['name=a,socket=/a', /maxmem= is missing/],
    ['name=a,socket=/a,maxmem=lots', /maxmem: 'lots' is not a size/],
    ['name=a,socket=/a,maxmem=1G,colour=red', /unknown key 'colour'/],
    ['name=a,name=b,socket=/a,maxmem=1G', /name= given twice/],
    ['name=a,socket=/a,maxmem=1G,oops', /'oops' is not key=value/],
    ['name=a b,socket=/a,maxmem=1G', /not a valid name/],
    ['name=a,fd=-1,maxmem=1G', /fd: '-1' is not a whole number/],
    ['name=a,fd=x,maxmem=1G', /fd: 'x' is not a whole number/],
    ['name=a,socket=,maxmem=1G', /socket must be a non-empty path/],
    [`name=a,socket=/${'x'.repeat(120)},maxmem=1G`, /longer than a Unix socket address allows/],
    ['name=a,socket=/a,maxmem=1G,share-group=bad group', /share-group: 'bad group' is not a valid name/],
  ];
  for (const [s, re] of bad) throwsConfig(t, () => parseVmSpec(s), re, s);
  t.end();
});

t.test('defaults', (t) => {
  const c = run(['--vm', VM]);
  t.equal(c.capacityBytes, DEFAULTS.capacityBytes);
  t.equal(c.maxPools, DEFAULTS.maxPools);
  t.equal(c.queuesMode, DEFAULTS.queuesMode);
  t.equal(c.pollSpinMs, 50, 'poll mode spins 50 ms on idle rings before it sleeps');
  t.equal(c.queues, DEFAULTS.queues);
  t.equal(c.logLevel, 'info');
  t.equal(c.control, '/tmp/ctl.sock', 'control from $TMEMD_CONTROL');
  const r = parseArgs(['--vm', VM], {});
  t.equal(r.kind === 'run' && r.config.control, '/run/tmemd.sock');
  t.end();
});

t.test('every flag, both spellings', (t) => {
  const c = run(['--vm', VM, '--vm=name=b,fd=7,maxmem=1G', '--capacity', '2G', '--max-pools=4', '--queues-mode', 'notify', '--poll-spin-ms=5', '--queues', '2', '--control=/tmp/c.sock', '--log-level', 'debug']);
  t.equal(c.vms.length, 2);
  t.equal(c.vms[1]!.fd, 7);
  t.equal(c.capacityBytes, 2n << 30n);
  t.equal(c.maxPools, 4);
  t.equal(c.queuesMode, 'notify');
  t.equal(c.pollSpinMs, 5);
  t.equal(c.queues, 2);
  t.equal(c.control, '/tmp/c.sock');
  t.equal(c.logLevel, 'debug');
  t.equal(run(['--vm', VM, '--control', 'none']).control, null);
  t.equal(run(['--vm', VM, '-v']).logLevel, 'debug');
  t.equal(run(['--vm', VM, '-q']).logLevel, 'warn');
  t.end();
});

t.test('QEMU backend program conventions: --socket-path / --fd', (t) => {
  const c = run(['--socket-path', '/tmp/x.sock']);
  t.same(c.vms, [{ name: 'vm0', socket: '/tmp/x.sock', fd: null, maxmemBytes: 0n, shareGroup: null, socketAccess: NO_SOCKET_ACCESS, blk: null, limits: { ...NO_LIMITS, maxRamBytes: HOST_MEM } }]);
  const d = run(['--fd', '3', '--name', 'web', '--maxmem', '4G']);
  t.same(d.vms, [{ name: 'web', socket: null, fd: 3, maxmemBytes: 4n << 30n, shareGroup: null, socketAccess: NO_SOCKET_ACCESS, blk: null, limits: { ...NO_LIMITS, maxRamBytes: HOST_MEM } }]);
  fails(t, ['--socket-path', '/a', '--fd', '3'], /mutually exclusive/);
  fails(t, ['--vm', VM, '--maxmem', '1G'], /go with --socket-path or --fd/);
  t.end();
});

t.test('help and capabilities win over everything else', (t) => {
  t.same(parseArgs(['--bogus', '--help']), { kind: 'help' });
  t.same(parseArgs(['-h']), { kind: 'help' });
  t.same(parseArgs(['--capacity', 'x', '--print-capabilities']), { kind: 'capabilities' });
  t.end();
});

t.test('bad flags and values: one line each', (t) => {
  fails(t, [], /no VM configured/);
  fails(t, ['--vm', VM, '--frobnicate'], /unknown option --frobnicate/);
  fails(t, ['--vm', VM, 'stray'], /unexpected argument 'stray'/);
  fails(t, ['--vm'], /--vm needs a value/);
  fails(t, ['--vm', VM, '--capacity'], /--capacity needs a value/);
  fails(t, ['--vm', VM, '--capacity', '12Q'], /--capacity: '12Q' is not a size/);
  fails(t, ['--vm', VM, '--capacity', '100'], /less than one 4K page/);
  fails(t, ['--vm', VM, '--max-pools', '0'], /--max-pools: 0 is out of range/);
  fails(t, ['--vm', VM, '--max-pools', 'many'], /not a whole number/);
  fails(t, ['--vm', VM, '--max-pools', '70000'], /out of range/);
  fails(t, ['--vm', VM, '--queues', '0'], /--queues: 0 is out of range \(1..256\)/);
  fails(t, ['--vm', VM, '--queues', '257'], /out of range/);
  fails(t, ['--vm', VM, '--queues', '1.5'], /not a whole number/);
  fails(t, ['--vm', VM, '--queues-mode', 'spin'], /'spin' is neither poll nor notify/);
  t.equal(run(['--vm', VM, '--poll-spin-ms', 'inf']).pollSpinMs, Infinity, '--poll-spin-ms inf: spin forever');
  t.equal(run(['--vm', VM, '--poll-spin-ms', '0']).pollSpinMs, 0);
  fails(t, ['--vm', VM, '--poll-spin-ms', '-1'], /--poll-spin-ms: .*(out of range|not a whole number)/);
  fails(t, ['--vm', VM, '--poll-spin-ms', '60001'], /--poll-spin-ms: 60001 is out of range \(0..60000\)/);
  fails(t, ['--vm', VM, '--poll-spin-ms', 'fast'], /--poll-spin-ms: .*not a whole number/);
  fails(t, ['--vm', VM, '--log-level', 'loud'], /'loud' is not one of error, warn, info, debug/);
  fails(t, ['--vm', VM, '--control', ''], /--control needs a path/);
  fails(t, ['--vm', VM, '--help=yes'.replace('--help', '--verbose')], /takes no value/);
  fails(t, ['--vm', VM, '--vm', 'name=a,socket=/tmp/b.sock,maxmem=1G'], /VM name 'a' is used twice/);
  fails(t, ['--vm', VM, '--vm', 'name=b,socket=/tmp/a.sock,maxmem=1G'], /socket \/tmp\/a.sock is given to two VMs/);
  fails(t, ['--vm', 'name=a,fd=4,maxmem=1G', '--vm', 'name=b,fd=4,maxmem=1G'], /fd 4 is given to two VMs/);
  fails(t, ['--vm', VM, '--control', '/tmp/a.sock'], /also a VM's socket/);
  fails(t, ['--vm', VM, '--config', 'a.json', '--config', 'b.json'], /--config given twice/);
  t.end();
});

t.test('config file', (t) => {
  const file = JSON.stringify({
    vms: [{ name: 'web', socket: '/tmp/web.sock', maxmem: '4G', shareGroup: 'g' }, 'name=db,fd=9,maxmem=1G', { name: 'n', fd: 10, maxmem: 4096 }],
    capacity: '8G',
    'max-pools': 8,
    queuesMode: 'notify',
    pollSpinMs: 'inf',
    queues: 4,
    control: '/tmp/f.sock',
    logLevel: 'warn',
  });
  const c = run(['--config', 'f.json'], { 'f.json': file });
  t.equal(c.vms.length, 3);
  t.same(c.vms[0], { name: 'web', socket: '/tmp/web.sock', fd: null, maxmemBytes: 4n << 30n, shareGroup: 'g', socketAccess: NO_SOCKET_ACCESS, blk: null, limits: { ...NO_LIMITS, maxRamBytes: HOST_MEM } });
  t.equal(c.vms[2]!.maxmemBytes, 4096n);
  t.equal(c.capacityBytes, 8n << 30n);
  t.equal(c.maxPools, 8);
  t.equal(c.queuesMode, 'notify');
  t.equal(c.pollSpinMs, Infinity);
  t.equal(c.queues, 4);
  t.equal(c.control, '/tmp/f.sock');
  t.equal(c.logLevel, 'warn');
  const o = run(['--config', 'f.json', '--queues', '2', '--vm', 'name=extra,socket=/tmp/e.sock,maxmem=1G'], { 'f.json': file });
  t.equal(o.queues, 2, 'flags override the file');
  t.equal(o.vms.length, 4, '--vm adds to the file');
  t.equal(run(['--config', 'g.json'], { 'g.json': JSON.stringify({ vms: [{ name: 'a', socket: '/x', maxmem: 1 }], control: null }) }).control, null);

  fails(t, ['--config', 'missing.json'], /--config missing.json: cannot read: ENOENT/);
  fails(t, ['--config', 'f.json'], /not valid JSON/, { 'f.json': '{nope' });
  fails(t, ['--config', 'f.json'], /top level must be a JSON object/, { 'f.json': '[]' });
  fails(t, ['--config', 'f.json'], /unknown key/, { 'f.json': '{"vms":[],"colour":1}' });
  fails(t, ['--config', 'f.json'], /vms: must be an array/, { 'f.json': '{"vms":{}}' });
  fails(t, ['--config', 'f.json'], /vms\[0\]: unknown key 'colour'/, { 'f.json': '{"vms":[{"name":"a","socket":"/a","maxmem":"1G","colour":1}]}' });
  fails(t, ['--config', 'f.json'], /vms\[0\]: must be an object/, { 'f.json': '{"vms":[3]}' });
  fails(t, ['--config', 'f.json'], /maxmem= is missing/, { 'f.json': '{"vms":[{"name":"a","socket":"/a"}]}' });
  fails(t, ['--config', 'f.json'], /maxmem: -5 is not a whole number of bytes/, { 'f.json': '{"vms":[{"name":"a","socket":"/a","maxmem":-5}]}' });
  fails(t, ['--config', 'f.json'], /queuesMode: 'fast'/, { 'f.json': `{"vms":["${VM}"],"queuesMode":"fast"}` });
  fails(t, ['--config', 'f.json'], /capacity: expected a string or number/, { 'f.json': `{"vms":["${VM}"],"capacity":true}` });
  fails(t, ['--config', 'f.json'], /no VM configured/, { 'f.json': '{}' });
  t.end();
});

t.test('capacity range: what the store can hold, checked when parsing', (t) => {
  t.equal(MAX_CAPACITY_BYTES, BigInt(MAX_CAPACITY_PAGES) * 4096n);
  const max = `${MAX_CAPACITY_BYTES}`;
  t.equal(run(['--vm', VM, '--capacity', max]).capacityBytes, MAX_CAPACITY_BYTES, 'the largest capacity the store takes');
  t.throws(() => new TmemStore({ capacityPages: MAX_CAPACITY_PAGES + 1, maxPoolsPerGuest: 1 }), RangeError, 'one page more: the store refuses it');
  for (const big of [`${MAX_CAPACITY_BYTES + 4096n}`, '8T', '9T', '1P', '2047P']) {
    fails(t, ['--vm', VM, '--capacity', big], /--capacity: \S+ is too large: the store holds at most 2147483647 pages of 4K/);
  }
  fails(t, ['--config', 'f.json'], /capacity: 8T is too large/, { 'f.json': `{"vms":["${VM}"],"capacity":"8T"}` });
  fails(t, ['--config', 'f.json'], /capacity: 8796093022208 is too large/, { 'f.json': `{"vms":["${VM}"],"capacity":8796093022208}` });
  t.end();
});

t.test("capacity vs the host's RAM: more than os.totalmem() is refused with a clear message", (t) => {
  const ram = 4n << 30n;
  t.equal(run(['--vm', VM, '--capacity', '4G'], {}, ram).capacityBytes, ram, 'all of RAM is allowed');
  fails(t, ['--vm', VM, '--capacity', '5G'], /^--capacity: 5G is more than this host's total RAM \(4 GiB, 4294967296 bytes\); give a smaller capacity$/, {}, ram);
  fails(t, ['--vm', VM, '--capacity', `${ram + 1n}`], /more than this host's total RAM/, {}, ram);
  fails(t, ['--config', 'f.json'], /^--config f\.json: capacity: 6G is more than this host's total RAM \(4 GiB/, { 'f.json': `{"vms":["${VM}"],"capacity":"6G"}` }, ram);
  t.equal(run(['--config', 'f.json', '--capacity', '1G'], { 'f.json': `{"vms":["${VM}"],"capacity":"6G"}` }, ram).capacityBytes, 1n << 30n, 'a flag overriding a too large file value is fine');
  t.equal(run(['--vm', VM], {}, 512n << 20n).capacityBytes, DEFAULTS.capacityBytes, 'only a capacity given is checked (the default is not)');
  t.equal(formatSize(25276502016n), '23.54 GiB');
  t.equal(formatSize(1n << 40n), '1 TiB');
  t.equal(formatSize(4095n), '3.99 KiB');
  // the default host RAM is this machine's
  const mine = BigInt(totalmem());
  t.equal(parseArgs(['--vm', VM, '--capacity', `${mine}`], env).kind, 'run');
  throwsConfig(t, () => parseArgs(['--vm', VM, '--capacity', `${mine + 4096n}`], env), new RegExp(`more than this host's total RAM \\(${formatSize(mine).replace('.', '\\.')}, ${mine} bytes\\)`), 'os.totalmem() by default');
  t.end();
});

const TMEMD = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist/host/tmemd.js');
t.test('tmemd: a capacity out of range is a config error (exit 2, one line), not a failed start', (t) => {
  const tmemd = TMEMD;
  t.ok(existsSync(TMEMD), `${TMEMD} is built (npm run build)`);
  for (const [cap, re] of [
    ['9T', /--capacity: 9T is too large/],
    [`${BigInt(totalmem()) + 4096n}`, /more than this host's total RAM/],
  ] as [string, RegExp][]) {
    const r = spawnSync(process.execPath, [tmemd, '--vm', 'name=a,socket=/tmp/tmemd-cap-test.sock,maxmem=1G', '--control', 'none', '--capacity', cap], { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.status, 2, `--capacity ${cap}: exit 2`);
    t.match(r.stderr, re);
    t.notMatch(r.stderr, /worker/, 'not a worker failure');
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
  t.end();
});

// ---- issue 13: VM limits, bounded config reads, messages that say what is wrong

t.test('VM limits: max-ram, ram, tmem-max, allow-unsealed (flags and file); max-ram defaults to the host RAM', (t) => {
  const s = parseVmSpec('name=a,socket=/a,maxmem=8G,max-ram=4G,ram=2G,tmem-max=1G,allow-unsealed=on');
  t.same(s.limits, { maxRamBytes: 4n << 30n, allowUnsealed: true, tmemMaxBytes: 1n << 30n, ramBytes: 2n << 30n });
  t.equal(parseVmSpec('name=a,socket=/a,maxmem=1G,allow-unsealed=off').limits.allowUnsealed, false);
  const c = run(['--vm', VM]);
  t.same(c.vms[0]!.limits, { ...NO_LIMITS, maxRamBytes: HOST_MEM }, 'defaults: max-ram = host RAM, no cap, no floor, sealed RAM only');
  t.equal(run(['--vm', VM], {}, 16n << 30n).vms[0]!.limits.maxRamBytes, 16n << 30n, 'max-ram follows the host RAM given');
  const f = run(['--config', 'f.json'], {
    'f.json': JSON.stringify({ vms: [{ name: 'w', socket: '/w', maxmem: '4G', maxRam: '3G', ram: '1G', tmemMax: 1048576, allowUnsealed: true }, { name: 'k', socket: '/k', maxmem: '4G', 'max-ram': '2G', 'tmem-max': '64M', 'allow-unsealed': 'off' }] }),
  });
  t.same(f.vms[0]!.limits, { maxRamBytes: 3n << 30n, allowUnsealed: true, tmemMaxBytes: 1n << 20n, ramBytes: 1n << 30n }, 'file, camelCase');
  t.same(f.vms[1]!.limits, { maxRamBytes: 2n << 30n, allowUnsealed: false, tmemMaxBytes: 64n << 20n, ramBytes: 0n }, 'file, kebab-case');
  fails(t, ['--vm', `${VM},allow-unsealed=maybe`], /allow-unsealed: 'maybe' is neither on nor off/);
  fails(t, ['--vm', `${VM},max-ram=100`], /max-ram is less than one 4K page/);
  fails(t, ['--vm', `${VM},max-ram=1G,ram=2G`], /ram= \(2147483648 bytes\) is more than max-ram= \(1073741824 bytes\)/);
  fails(t, ['--vm', `${VM},ram=2G`], /VM a: ram= \(2147483648 bytes\) is more than this host's RAM \(1 GiB\); give max-ram= too/, {}, 1n << 30n);
  fails(t, ['--vm', `${VM},tmem-max=lots`], /tmem-max: 'lots' is not a size/);
  fails(t, ['--vm', `${VM},max-ram=1G,max-ram=2G`], /max-ram= given twice/);
  fails(t, ['--config', 'f.json'], /vms\[0\] \(a\): tmem-max must be a size/, { 'f.json': '{"vms":[{"name":"a","socket":"/a","maxmem":"1G","tmemMax":true}]}' });
  t.end();
});

t.test('capacity above the memory available now: a warning (not an error), MemAvailable read from /proc/meminfo', (t) => {
  const parse = (argv: string[], avail: bigint | null) => {
    const r = parseArgs(argv, env, () => '', 16n << 30n, avail);
    if (r.kind !== 'run') throw new Error(r.kind);
    return r.config;
  };
  t.same(parse(['--vm', VM, '--capacity', '4G'], 8n << 30n).warnings, [], 'below MemAvailable: no warning');
  const w = parse(['--vm', VM, '--capacity', '12G'], 8n << 30n).warnings;
  t.equal(w.length, 1);
  t.match(w[0], /^--capacity: 12G is more than the memory available now \(MemAvailable 8 GiB of 16 GiB\): once tmem fills up, the host may run out of memory \(OOM killer\)/);
  t.match(parse(['--vm', VM], 512n << 20n).warnings[0], /^the default capacity: 1 GiB is more than the memory available now/, 'the default capacity too');
  t.same(parse(['--vm', VM, '--capacity', '12G'], null).warnings, [], 'no MemAvailable: nothing to compare');
  fails(t, ['--vm', VM, '--capacity', '17G'], /more than this host's total RAM/, {}, 16n << 30n);
  const real = parseArgs(['--vm', VM], env);
  t.ok(real.kind === 'run' && Array.isArray(real.config.warnings), 'this machine: MemAvailable read without error');
  t.end();
});

t.test('config files are read with a size limit: devices, pipes, folders and huge files are refused in one line', async (t) => {
  const { mkdtempSync, mkdirSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const real = (argv: string[], re: RegExp, name: string) => throwsConfig(t, () => parseArgs(argv, env), re, name);
  real(['--config', '/dev/zero'], /^--config \/dev\/zero: not a regular file \(a character device\)$/, '/dev/zero');
  const fifo = join(dir, 'fifo');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  real(['--config', fifo], /not a regular file \(a pipe\)/, 'a FIFO with no writer: refused, not a hang');
  mkdirSync(join(dir, 'd'));
  real(['--config', join(dir, 'd')], /not a regular file \(a folder\)/, 'a folder');
  const big = join(dir, 'big.json');
  writeFileSync(big, `{"vms":[],"x":"${'a'.repeat(MAX_CONFIG_BYTES)}"}`);
  real(['--config', big], /big\.json: \d+ bytes, more than a config file may have \(1048576\)/, 'over 1 MiB');
  real(['--config', join(dir, 'absent.json')], /cannot read: ENOENT/, 'absent');
  const ok = join(dir, 'ok.json');
  writeFileSync(ok, JSON.stringify({ vms: [VM], queues: 3 }));
  const r = parseArgs(['--config', ok], env);
  t.ok(r.kind === 'run' && r.config.queues === 3, 'a real small file is read');
  t.equal(readConfigText(ok), JSON.stringify({ vms: [VM], queues: 3 }));
  const d = spawnSync(process.execPath, [TMEMD_JS, '--config', '/dev/zero'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(d.status, 2, 'tmemd --config /dev/zero: exit 2 (was 134, std::bad_alloc)');
  t.match(d.stderr, /^tmemd: --config \/dev\/zero: not a regular file \(a character device\) \(see tmemd --help\)\n$/);
  t.end();
});

t.test('messages: SIGHUP in the help; a control path in a missing folder; tmemctl against a regular file', async (t) => {
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  t.match(HELP, /stops on SIGTERM, SIGINT or SIGHUP/);
  t.match(HELP, /0 after SIGTERM\/SIGINT\/SIGHUP/);
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-msg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const missing = join(dir, 'no', 'such', 'ctl.sock');
  const d = spawnSync(process.execPath, [TMEMD_JS, '--vm', `name=a,socket=${join(dir, 'a.sock')},maxmem=1G`, '--capacity', '16M', '--control', missing], { encoding: 'utf8', timeout: 30_000 });
  t.equal(d.status, 1);
  t.match(d.stderr, new RegExp(`cannot listen on the control socket .*ctl\\.sock: the folder ${dir}/no/such does not exist`));
  t.notMatch(d.stderr, /EACCES/);
  const ctl = join(dirname(TMEMD_JS), 'tmemctl.js');
  const a = spawnSync(process.execPath, [ctl, '--control', missing, 'stats'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(a.status, 1);
  t.match(a.stderr, /cannot reach tmemd on .*ctl\.sock: the folder .*\/no\/such does not exist/);
  const reg = join(dir, 'regular');
  writeFileSync(reg, 'x');
  const b = spawnSync(process.execPath, [ctl, '--control', reg, 'stats'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(b.status, 1);
  t.match(b.stderr, /cannot reach tmemd on .*regular: .*regular is not a socket \(it is a regular file\)/);
  t.notMatch(b.stderr, /not running/);
  t.equal(socketPathProblem(join(dir, 'absent.sock')), null, 'an absent socket in a folder that exists: the usual "no such socket"');
  t.equal(folderProblem(reg + '/x'), `${reg} is not a folder`);
  t.end();
});

// ---- issue 12: node:util parseArgs, one size parser/formatter, tmem-blk keys, --metrics-listen

t.test('host/units.ts: the one size parser and formatter', async (t) => {
  const u = await import('../host/units.js');
  t.equal(u.parseSize('2 GiB'), 2n << 30n, 'what formatSize writes reads back');
  t.equal(u.parseSize('1P'), 1n << 50n);
  t.throws(() => u.parseSize('1.5G'), u.SizeError);
  t.throws(() => u.parseSize('18446744073709551616'), /too large/);
  t.equal(u.parseSize('18446744073709551615'), (1n << 64n) - 1n);
  const cases: [bigint | number, string][] = [
    [0n, '0 B'], [100n, '100 B'], [1024n, '1 KiB'], [1536n, '1.50 KiB'], [4097n, '4.00 KiB'], [4n << 20n, '4 MiB'], [64n << 20n, '64 MiB'],
    [8n << 30n, '8 GiB'], [3n << 40n, '3 TiB'], [5n << 50n, '5 PiB'], [2048n << 50n, '2048 PiB'], [4096, '4 KiB'],
  ];
  for (const [v, want] of cases) t.equal(u.formatSize(v), want, `${v}`);
  t.equal(u.formatSize((2n << 30n) + 1n), '2.00 GiB', 'truncated, never rounded up, never shown as exact');
  t.equal(u.formatSize((2n << 30n) - 1n), '1.99 GiB');
  t.equal(u.formatSize(-4096n), '-4 KiB');
  for (const v of [0n, 4096n, 1n << 30n, 6n << 40n]) t.equal(u.parseSize(u.formatSize(v)), v, `round trip ${v}`);
  t.end();
});

t.test('tmem-blk keys: blk-socket=, blk-size= (default 8G, a multiple of 4K, > 0), in --vm and the config file', (t) => {
  const v = parseVmSpec('name=a,socket=/run/a.sock,maxmem=2G,blk-socket=/run/a-blk.sock');
  t.same(v.blk, { socket: '/run/a-blk.sock', sizeBytes: 8n << 30n }, 'default size 8G');
  t.equal(DEFAULT_BLK_SIZE_BYTES, 8n << 30n);
  t.same(parseVmSpec('name=a,socket=/a,maxmem=2G,blk-socket=/b,blk-size=64M').blk, { socket: '/b', sizeBytes: 64n << 20n });
  t.same(parseVmSpec('name=a,fd=3,maxmem=2G,blk-socket=/b,blk-size=4096').blk, { socket: '/b', sizeBytes: 4096n }, 'with an inherited tmem fd too');
  t.equal(parseVmSpec(VM).blk, null, 'no blk-socket: no tmem-blk disk');
  const bad: [string, RegExp][] = [
    [`${VM},blk-size=1G`, /^--vm \(a\): blk-size= goes with blk-socket=PATH/],
    [`${VM},blk-socket=/b,blk-size=0`, /^--vm \(a\): blk-size must be more than 0$/],
    [`${VM},blk-socket=/b,blk-size=1000`, /^--vm \(a\): blk-size 1000 B \(1000 bytes\) is not a multiple of 4 KiB$/],
    [`${VM},blk-socket=/b,blk-size=6144`, /blk-size 6 KiB \(6144 bytes\) is not a multiple of 4 KiB/],
    [`${VM},blk-socket=/b,blk-size=big`, /^--vm \(a\): blk-size: 'big' is not a size/],
    [`${VM},blk-socket=`, /^--vm \(a\): blk-socket must be a non-empty path$/],
    [`${VM},blk-socket=/${'x'.repeat(120)}`, /blk-socket path '.*' is longer than a Unix socket address allows \(107 bytes\)/],
    [`${VM},blk-socket=/tmp/a.sock`, /blk-socket is the VM's socket too/],
    [`${VM},blk-socket=/b,blk-socket=/c`, /blk-socket= given twice/],
  ];
  for (const [s, re] of bad) throwsConfig(t, () => parseVmSpec(s), re, s);
  fails(t, ['--vm', `${VM},blk-socket=/tmp/x.sock`, '--vm', 'name=b,socket=/tmp/x.sock,maxmem=1G'], /VM a: blk-socket \/tmp\/x.sock is also another socket of this daemon/);
  fails(t, ['--vm', `${VM},blk-socket=/tmp/x.sock`, '--vm', 'name=b,socket=/tmp/b.sock,maxmem=1G,blk-socket=/tmp/x.sock'], /VM b: blk-socket \/tmp\/x.sock is also another socket/);
  fails(t, ['--vm', `${VM},blk-socket=/tmp/x.sock`, '--control', '/tmp/x.sock'], /--control \/tmp\/x.sock is also a VM's socket/);
  const f = run(['--config', 'f.json'], {
    'f.json': JSON.stringify({ vms: [{ name: 'w', socket: '/w', maxmem: '4G', 'blk-socket': '/wb', 'blk-size': '1G' }, { name: 'k', socket: '/k', maxmem: '4G', blkSocket: '/kb', blkSize: 8192 }, 'name=s,socket=/s,maxmem=1G,blk-socket=/sb'] }),
  });
  t.same(f.vms.map((x) => x.blk), [{ socket: '/wb', sizeBytes: 1n << 30n }, { socket: '/kb', sizeBytes: 8192n }, { socket: '/sb', sizeBytes: 8n << 30n }], 'config file: kebab-case, camelCase, --vm strings');
  fails(t, ['--config', 'f.json'], /vms\[0\] \(w\): blk-size must be a size/, { 'f.json': '{"vms":[{"name":"w","socket":"/w","maxmem":"1G","blk-socket":"/b","blk-size":true}]}' });
  fails(t, ['--config', 'f.json'], /vms\[0\] \(w\): blk-socket must be a non-empty path/, { 'f.json': '{"vms":[{"name":"w","socket":"/w","maxmem":"1G","blk-socket":5}]}' });
  t.end();
});

t.test('--blk-overflow-dir: an existing folder (flag or file), made absolute', async (t) => {
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'tmemd-overflow-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.equal(run(['--vm', VM]).blkOverflowDir, null, 'default: none');
  t.equal(run(['--vm', VM, '--blk-overflow-dir', dir]).blkOverflowDir, dir);
  t.equal(run(['--vm', VM, `--blk-overflow-dir=${dir}/.`]).blkOverflowDir, dir, 'normalised');
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    t.equal(run(['--vm', VM, '--blk-overflow-dir', '.']).blkOverflowDir, dir, 'a relative folder becomes absolute');
  } finally {
    process.chdir(cwd);
  }
  t.equal(run(['--config', 'f.json'], { 'f.json': JSON.stringify({ vms: [VM], 'blk-overflow-dir': dir }) }).blkOverflowDir, dir, 'config file, kebab-case');
  t.equal(run(['--config', 'f.json'], { 'f.json': JSON.stringify({ vms: [VM], blkOverflowDir: dir }) }).blkOverflowDir, dir, 'config file, camelCase');
  fails(t, ['--vm', VM, '--blk-overflow-dir', join(dir, 'absent')], new RegExp(`^--blk-overflow-dir: ${dir}/absent does not exist; give an existing folder$`));
  writeFileSync(join(dir, 'file'), 'x');
  fails(t, ['--vm', VM, '--blk-overflow-dir', join(dir, 'file')], new RegExp(`^--blk-overflow-dir: ${dir}/file is not a folder$`));
  fails(t, ['--vm', VM, '--blk-overflow-dir', join(dir, 'file', 'x')], /has a part that is not a folder/);
  fails(t, ['--vm', VM, '--blk-overflow-dir', ''], /^--blk-overflow-dir needs a folder$/);
  fails(t, ['--vm', VM, '--blk-overflow-dir'], /^--blk-overflow-dir needs a value$/);
  fails(t, ['--config', 'f.json'], /blk-overflow-dir: must be a folder's path/, { 'f.json': `{"vms":["${VM}"],"blk-overflow-dir":7}` });
  t.end();
});

t.test('--metrics-listen HOST:PORT (off by default)', (t) => {
  t.equal(run(['--vm', VM]).metricsListen, null, 'off by default');
  t.same(run(['--vm', VM, '--metrics-listen', '127.0.0.1:9850']).metricsListen, { host: '127.0.0.1', port: 9850 });
  t.same(run(['--vm', VM, '--metrics-listen=[::1]:9850']).metricsListen, { host: '::1', port: 9850 });
  t.same(run(['--vm', VM, '--metrics-listen', 'localhost:0']).metricsListen, { host: 'localhost', port: 0 }, 'port 0: any free port');
  t.same(run(['--config', 'f.json'], { 'f.json': JSON.stringify({ vms: [VM], 'metrics-listen': '127.0.0.1:1' }) }).metricsListen, { host: '127.0.0.1', port: 1 });
  t.equal(run(['--config', 'f.json'], { 'f.json': JSON.stringify({ vms: [VM], metricsListen: null }) }).metricsListen, null);
  const bad: [string, RegExp][] = [
    ['9850', /^--metrics-listen: '9850' is not HOST:PORT \(e\.g\. 127\.0\.0\.1:9850 or \[::1\]:9850\)$/],
    ['127.0.0.1', /is not HOST:PORT/],
    ['::1:9850', /is not HOST:PORT/],
    ['127.0.0.1:', /is not HOST:PORT/],
    ['127.0.0.1:http', /is not HOST:PORT/],
    ['127.0.0.1:70000', /^--metrics-listen: port 70000 is out of range \(0\.\.65535\)$/],
    ['999.1.1.1:9850', /^--metrics-listen: '999\.1\.1\.1' is not an IP address/],
    ['example.org:9850', /'example\.org' is not an IP address/],
    ['[127.0.0.1]:9850', /'127\.0\.0\.1' is not an IP address/],
    ['[]:9850', /'' is not an IP address/],
  ];
  for (const [v, re] of bad) fails(t, ['--vm', VM, '--metrics-listen', v], re);
  t.end();
});

t.test('node:util parseArgs underneath: flag spellings and the messages stay ours', (t) => {
  const c = run(['-vq', '--vm', VM]);
  t.equal(c.logLevel, 'warn', 'short flags grouped, the last one wins');
  t.equal(run(['--vm', VM, '--queues', '2', '--queues=3']).queues, 3, 'a repeated flag: the last one wins');
  fails(t, ['--vm', '--queues'], /^--vm '--queues': '--queues' is not key=value$/);
  fails(t, ['--vm', VM, '-x'], /^unknown option -x$/);
  fails(t, ['--vm', VM, '--', '--queues', '2'], /^unexpected argument '--queues' \(VMs are given with --vm/);
  fails(t, ['--vm', VM, '--quiet=1'], /^--quiet takes no value$/);
  fails(t, ['--vm', VM, '--print-capabilitiesx'], /^unknown option --print-capabilitiesx$/);
  fails(t, ['--vm', VM, '--constructor', 'x'], /^unknown option --constructor$/, {}, HOST_MEM);
  t.end();
});
