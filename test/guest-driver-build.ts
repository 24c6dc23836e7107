// guest-driver/ builds warning-free with W=1 and sparse (C=2) against the
// project's guest kernel, and scripts/checkpatch.pl --strict of that kernel
// finds nothing. `npm run setup` installs sparse.
// The build runs in a copy (guest-driver/ and shared/tmem_abi.h side by side,
// as Kbuild expects), so every file is compiled even when guest-driver/ holds
// an up-to-date module from `npm run setup`.
import t from 'tap';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CACHE, ROOT } from './e2e/harness.js';

const KBUILD = join(CACHE, 'kernel', 'build');
const SOURCES = ['virtio_tmem.c', 'tmem_backends.c', 'virtio_tmem.h'];

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
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
  for (const f of [...SOURCES, 'Kbuild', 'Makefile']) copyFileSync(join(ROOT, 'guest-driver', f), join(dir, f));
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
