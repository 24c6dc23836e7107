// kernbench data disk: a subset of the configured Linux 5.10 tree of the guest kernel,
// compiled inside the guest with the exact gcc commands of the kernel build.
//
// For each chosen object (.o of a C file in the kernel build dir) we read kbuild's
// `.X.o.cmd`: the gcc command line and the full list of headers it used. The sources and
// headers go to kb/src, the generated headers to kb/build, and kb/build/Makefile.kernbench
// gets one rule per object (the recipe is the kernel's own command with the source tree
// path rewritten to ../src). `mkfs.ext4 -d` makes the image, cached by a hash of the inputs:
// $CACHE/kernbench/data-<hash>.img. The VM opens it with snapshot=on, so every run
// starts from the same bytes.
//
//   node vm-images/kernbench/build-data.mjs [--size N] [--dirs fs/ext4,mm,...]   (prints the image path)
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE } from '../lib/vm.mjs';

const RECIPE = 4; // bump when the layout of the image changes
export const DEFAULT_DIRS = ['fs/ext4', 'mm', 'kernel', 'lib', 'block', 'fs'];

/** Parse one kbuild .cmd file: { cmd, source, deps[] } or null if it is not a C compile. */
export function parseCmd(file) {
  const text = fs.readFileSync(file, 'utf8');
  const m = /^cmd_(\S+) := (gcc .* -c -o (\S+) (\S+\.c))$/m.exec(text);
  if (!m) return null;
  const obj = m[1];
  const deps = [];
  const d = text.indexOf(`deps_${obj} := \\`);
  if (d >= 0) {
    for (const raw of text.slice(d).split('\n').slice(1)) {
      const line = raw.trim().replace(/\s*\\$/, '');
      if (!line) break;
      if (line.startsWith('$(')) continue; // $(wildcard include/config/...)
      deps.push(line);
    }
  }
  return { obj, cmd: m[2], source: m[4], deps };
}

/** The compile units of a directory (not its subdirectories), sorted by name. */
function objectsOf(buildDir, dir) {
  const abs = path.join(buildDir, dir);
  let names;
  try { names = fs.readdirSync(abs); } catch { return []; }
  return names.filter((n) => /^\..+\.o\.cmd$/.test(n)).sort()
    .map((n) => parseCmd(path.join(abs, n))).filter(Boolean);
}

/**
 * Choose `size` objects round-robin over `dirs` (so a small size is still a mix).
 */
export function chooseObjects(buildDir, dirs, size) {
  const lists = dirs.map((d) => objectsOf(buildDir, d));
  const out = [];
  const seen = new Set();
  for (let i = 0; out.length < size && lists.some((l) => i < l.length); i++) {
    for (const l of lists) {
      if (i < l.length && out.length < size && !seen.has(l[i].obj)) { seen.add(l[i].obj); out.push(l[i]); }
    }
  }
  return out;
}

/**
 * Build (or find) the data image. Returns { img, hash, objects: [names], srcBytes }.
 */
export function buildDataDisk({ kernelDir, size = 24, dirs = DEFAULT_DIRS, log = process.stderr } = {}) {
  kernelDir = fs.realpathSync(kernelDir);
  const buildDir = path.join(kernelDir, 'build');
  const srcDir = path.join(kernelDir, 'src');
  const objs = chooseObjects(buildDir, dirs, size);
  if (!objs.length) throw new Error(`kernbench: no compile units under ${buildDir} for ${dirs.join(',')}`);
  const h = crypto.createHash('sha256');
  h.update(JSON.stringify({ RECIPE, kernelDir, objs: objs.map((o) => [o.obj, o.cmd]) }));
  const hash = h.digest('hex').slice(0, 16);
  const dir = path.join(CACHE, 'kernbench');
  fs.mkdirSync(dir, { recursive: true });
  const img = path.join(dir, `data-${hash}.img`);
  const meta = path.join(dir, `data-${hash}.json`);
  if (fs.existsSync(img) && fs.existsSync(meta)) {
    log?.write(`kernbench: data disk cached: ${img}\n`);
    return { img, hash, ...JSON.parse(fs.readFileSync(meta, 'utf8')) };
  }
  const t0 = Date.now();
  const st = fs.mkdtempSync(path.join(dir, 'stage-'));
  try {
    const files = new Map(); // dest (relative to stage) -> source
    const srcPrefix = srcDir + '/';
    const add = (p) => {
      if (p.startsWith(srcPrefix)) files.set(path.join('kb/src', p.slice(srcPrefix.length)), p);
      else if (!path.isAbsolute(p)) files.set(path.join('kb/build', p), path.join(buildDir, p));
      // other absolute paths (gcc's own headers) are in the guest's gcc 12 as well
    };
    // kbuild's dep lists leave out the generated headers (fixdep turns autoconf.h into config deps)
    const walk = (rel) => {
      for (const e of fs.readdirSync(path.join(buildDir, rel), { withFileTypes: true })) {
        const r = path.join(rel, e.name);
        if (e.isDirectory()) walk(r); else if (e.isFile()) add(r);
      }
    };
    for (const g of ['include/generated', 'arch/x86/include/generated']) if (fs.existsSync(path.join(buildDir, g))) walk(g);
    const rules = [];
    for (const o of objs) {
      add(o.source);
      o.deps.forEach(add);
      const cmd = o.cmd.split(srcDir).join('../src').replace(/\$/g, '$$$$').replace(/#/g, '\\#');
      rules.push(`# obj ${o.obj}\n${o.obj}:\n\t@mkdir -p $(dir $@)\n\t@echo "  CC $@"\n\t@${cmd}\n`);
    }
    let srcBytes = 0;
    for (const [dest, src] of files) {
      let s;
      try { s = fs.statSync(src); } catch { continue; }
      if (!s.isFile()) continue;
      const d = path.join(st, dest);
      fs.mkdirSync(path.dirname(d), { recursive: true });
      fs.copyFileSync(src, d);
      srcBytes += s.size;
    }
    // the object directories exist in the tree (dep files are written there)
    for (const o of objs) fs.mkdirSync(path.join(st, 'kb/build', path.dirname(o.obj)), { recursive: true });
    const mk = `# kernbench: ${objs.length} objects of Linux 5.10 (${kernelDir}), generated by vm-images/kernbench/build-data.mjs\n` +
      `.PHONY: all\nall: ${objs.map((o) => o.obj).join(' ')}\n\n${rules.join('\n')}`;
    fs.writeFileSync(path.join(st, 'kb/build/Makefile.kernbench'), mk);
    // room for the objects and dep files: generous
    const sizeMiB = Math.ceil((srcBytes * 1.6) / 2 ** 20) + 256 + objs.length * 2;
    const tmp = `${img}.tmp`;
    fs.rmSync(tmp, { force: true });
    fs.closeSync(fs.openSync(tmp, 'w'));
    fs.truncateSync(tmp, sizeMiB * 2 ** 20);
    execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'tmemdata', '-d', st, tmp], { stdio: ['ignore', 'ignore', 'inherit'] });
    fs.renameSync(tmp, img);
    const info = { objects: objs.map((o) => o.obj), files: files.size, srcBytes, sizeMiB, kernelDir, dirs };
    fs.writeFileSync(meta, JSON.stringify(info, null, 1));
    log?.write(`kernbench: built ${img}: ${objs.length} objects, ${files.size} files, ${(srcBytes / 2 ** 20).toFixed(1)} MiB of sources/headers, ${sizeMiB} MiB image, ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    // keep the 4 newest images
    const imgs = fs.readdirSync(dir).filter((n) => /^data-.*\.img$/.test(n))
      .map((n) => ({ n, t: fs.statSync(path.join(dir, n)).mtimeMs })).sort((a, b) => b.t - a.t);
    for (const { n } of imgs.slice(4)) { fs.rmSync(path.join(dir, n), { force: true }); fs.rmSync(path.join(dir, n.replace(/\.img$/, '.json')), { force: true }); }
    return { img, hash, ...info };
  } finally {
    fs.rmSync(st, { recursive: true, force: true });
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const a = process.argv.slice(2);
  const get = (k, d) => { const i = a.indexOf(k); return i >= 0 ? a[i + 1] : d; };
  const r = buildDataDisk({
    kernelDir: get('--kernel', path.join(CACHE, 'kernel')),
    size: Number(get('--size', 24)),
    dirs: get('--dirs', DEFAULT_DIRS.join(',')).split(','),
  });
  console.log(r.img);
}
