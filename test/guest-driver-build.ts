// guest-driver/ builds warning-free with W=1 and sparse (C=2) against the
// project's guest kernel, and scripts/checkpatch.pl --strict of that kernel
// finds nothing. `npm run setup` installs sparse and dkms.
// The DKMS tree (`make dkms-source`) is self-contained and `dkms build` makes
// the module from it against the headers of Debian's stock bullseye kernel
// (vm-images/build-debian-kernel.sh puts them in $CACHE/debian-kernel/headers),
// whose config differs from ours (no CONFIG_CLEANCACHE): W=1 clean there too.
// The build runs in a copy (guest-driver/ and shared/tmem_abi.h side by side,
// as Kbuild expects), so every file is compiled even when guest-driver/ holds
// an up-to-date module from `npm run setup`.
import t from 'tap';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CACHE, ROOT } from './e2e/harness.js';

const KBUILD = join(CACHE, 'kernel', 'build');
const SOURCES = ['virtio_tmem.c', 'tmem_backends.c', 'virtio_tmem.h'];

const DEBIAN = join(CACHE, 'debian-kernel');

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 16 << 20, env: env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

t.test('the guest kernel build the module is made against is there', async (t) => {
  t.ok(existsSync(join(KBUILD, 'Makefile')), `${KBUILD} exists (npm run setup builds it)`);
});

t.test('sparse is installed (npm run setup installs it)', async (t) => {
  const r = await run('sparse', ['--version']);
  t.equal(r.code, 0, `sparse --version: ${r.out.trim() || 'not found'}`);
});

t.test('make W=1 C=2 compiles and sparse-checks every file without a warning', async (t) => {
  const top = mkdtempSync(join(tmpdir(), 'vtmem-build-'));
  t.teardown(() => rmSync(top, { recursive: true, force: true }));
  const dir = join(top, 'guest-driver');
  mkdirSync(dir);
  mkdirSync(join(top, 'shared'));
  for (const f of [...SOURCES, 'Kbuild', 'Makefile', 'dkms.conf']) copyFileSync(join(ROOT, 'guest-driver', f), join(dir, f));
  copyFileSync(join(ROOT, 'shared', 'tmem_abi.h'), join(top, 'shared', 'tmem_abi.h'));
  const r = await run('make', ['-C', dir, `KDIR=${KBUILD}`, 'W=1', 'C=2']);
  t.equal(r.code, 0, 'make exits 0');
  for (const f of ['virtio_tmem.c', 'tmem_backends.c']) {
    t.match(r.out, new RegExp(`CC \\[M\\]\\s+\\S*${f.replace('.c', '.o')}`), `${f} was compiled`);
    t.match(r.out, new RegExp(`CHECK\\s+\\S*${f}`), `${f} was checked by sparse`);
  }
  const warnings = r.out.split('\n').filter((l) => /\bwarning:|\berror:/.test(l));
  t.same(warnings, [], 'no compiler or sparse warning or error');
  t.ok(readdirSync(dir).includes('virtio_tmem.ko'), 'virtio_tmem.ko built');
  if (!t.passing()) t.comment(r.out.slice(-4000));
});

t.test('scripts/checkpatch.pl --strict is clean', async (t) => {
  const r = await run('make', ['-s', '-C', join(ROOT, 'guest-driver'), `KDIR=${KBUILD}`, 'checkpatch']);
  const totals = r.out.split('\n').filter((l) => l.startsWith('total:'));
  t.equal(totals.length, SOURCES.length, 'one verdict per source file');
  for (const l of totals) t.match(l, /^total: 0 errors, 0 warnings, 0 checks, \d+ lines checked$/);
  t.equal(r.code, 0, 'checkpatch exits 0');
  if (!t.passing()) t.comment(r.out.slice(-4000));
});

// Debian's headers name gcc-10 as CC (the compiler Debian built 5.10.0-N
// with); the host has gcc 12 only. A gcc-10 on PATH that is gcc lets dkms run
// the Makefile unchanged, as vm-images/build-debian-module.sh does with CC=gcc.
function gcc10Env(dir: string): NodeJS.ProcessEnv {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'gcc-10'), '#!/bin/sh\nexec gcc "$@"\n', { mode: 0o755 });
  return { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };
}

t.test('make dkms-source makes a self-contained tree that dkms builds against Debian\'s stock-kernel headers', async (t) => {
  t.ok(existsSync(join(DEBIAN, 'headers', 'Makefile')), `${DEBIAN}/headers exists (npm run setup fetches Debian's headers)`);
  const dk = await run('dkms', ['--version']);
  t.equal(dk.code, 0, `dkms --version: ${dk.out.trim() || 'not found (npm run setup installs it)'}`);
  if (!t.passing()) return;
  const kver = readFileSync(join(DEBIAN, 'version'), 'utf8').trim();
  const version = /^PACKAGE_VERSION="?([^"\n]+)"?$/m.exec(readFileSync(join(ROOT, 'guest-driver', 'dkms.conf'), 'utf8'))?.[1];
  t.ok(version, 'dkms.conf has PACKAGE_VERSION');
  const top = mkdtempSync(join(tmpdir(), 'vtmem-dkms-'));
  t.teardown(() => rmSync(top, { recursive: true, force: true }));
  const src = join(top, 'src');
  const tree = join(src, `virtio-tmem-${version}`);
  const mk = await run('make', ['-s', '-C', join(ROOT, 'guest-driver'), 'dkms-source', `DKMS_DIR=${tree}`]);
  t.equal(mk.code, 0, `make dkms-source: ${mk.out.trim()}`);
  t.same(readdirSync(tree).sort(), ['Kbuild', 'Makefile', 'dkms.conf', 'tmem_abi.h', 'tmem_backends.c', 'virtio_tmem.c', 'virtio_tmem.h'],
    'the tree holds the sources, the build files and the ABI header');
  t.equal(readFileSync(join(tree, 'tmem_abi.h'), 'utf8'), readFileSync(join(ROOT, 'shared', 'tmem_abi.h'), 'utf8'), 'the ABI header is the generated one');

  // W=1 from the tree alone (no ../shared beside it) against Debian's headers.
  const env = gcc10Env(top);
  const headers = realpathSync(join(DEBIAN, 'headers'));
  const w1 = await run('make', ['-C', tree, `KDIR=${headers}`, 'W=1'], env);
  t.equal(w1.code, 0, 'make W=1 against Debian\'s headers exits 0');
  t.same(w1.out.split('\n').filter((l) => /\bwarning:|\berror:/.test(l)), [], 'no compiler warning or error');
  await run('make', ['-s', '-C', tree, `KDIR=${headers}`, 'clean'], env);

  const dkmstree = join(top, 'dkms');
  mkdirSync(dkmstree);
  const common = ['-m', 'virtio-tmem', '-v', version!, '--sourcetree', src, '--dkmstree', dkmstree];
  const add = await run('dkms', ['add', ...common], env);
  t.equal(add.code, 0, 'dkms add exits 0');
  const build = await run('dkms', ['build', ...common, '-k', kver, '--kernelsourcedir', headers], env);
  t.equal(build.code, 0, `dkms build -k ${kver} exits 0`);
  const ko = join(dkmstree, 'virtio-tmem', version!, kver, 'x86_64', 'module', 'virtio-tmem.ko');
  t.ok(existsSync(ko), 'dkms found BUILT_MODULE_NAME virtio-tmem.ko (the Kbuild object) in its build');
  if (existsSync(ko)) {
    const info = await run('modinfo', ['-F', 'vermagic', ko]);
    t.match(info.out, new RegExp(`^${kver.replace(/\./g, '\\.')} `), `vermagic is Debian's ${kver}`);
  }
  if (!t.passing()) t.comment(`${mk.out}\n${w1.out.slice(-3000)}\n${add.out}\n${build.out.slice(-3000)}`);
});
