// Building (or finding cached) what a VM boots: QEMU, a guest kernel, the
// root image and the project-files disk, through the vm-images/*.sh scripts
// (each caches its output in $CACHE keyed by its inputs and prints its path).
//
// The guest kernel is a parameter:
//   'tmem'    the project's 5.10 build (build-kernel.sh): cleancache and frontswap,
//             THP off, lockup detectors off; everything built in, no initramfs
//   'debian'  Debian 11's own linux-image-5.10.0-N-amd64, unmodified
//             (build-debian-kernel.sh): frontswap but no cleancache, THP always,
//             lockup detectors on; virtio and ext4 are modules, so it boots
//             with an initramfs of ours; the module is built against Debian's
//             headers (build-debian-module.sh)
//   'bookworm'          Debian 12's own linux-image-6.1.0-N-cloud-amd64, unmodified
//                       (build-bookworm-kernel.sh cloud): no frontswap, no zswap, THP
//                       always; virtio as modules (our initramfs); no module of ours:
//                       this guest swaps on a block device (tmem-blk)
//   'bookworm-generic'  linux-image-6.1.0-N-amd64 of the same version: the same with
//                       zswap built in (off unless zswap.enabled=1)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { VM_IMAGES_DIR, type Sink } from './paths.js';

export type KernelName = 'tmem' | 'debian' | 'bookworm' | 'bookworm-generic';
export const KERNELS: readonly KernelName[] = ['tmem', 'debian', 'bookworm', 'bookworm-generic'];

/** A 6.1 kernel (no frontswap): no virtio_tmem module is built or put on the files disk for it. */
export const isBookworm = (k: KernelName): boolean => k === 'bookworm' || k === 'bookworm-generic';

/** A kernel name from a flag or option; anything else is a one-line error. */
export function kernelName(s: string | undefined): KernelName {
  const k = s ?? 'tmem';
  if ((KERNELS as readonly string[]).includes(k)) return k as KernelName;
  throw new Error(`unknown guest kernel '${k}' (use ${KERNELS.join(', ')})`);
}

/** What QEMU boots, and what the module is built against. */
export interface BootKernel {
  name: KernelName;
  /** uname -r in the guest */
  version: string;
  /** the cache directory of this kernel */
  dir: string;
  /** -kernel (bzImage, vmlinuz) */
  image: string;
  /** -initrd, or null when the kernel mounts its root by itself */
  initrd: string | null;
  /** KDIR for an out-of-tree module build */
  buildDir: string;
}

export interface Built {
  kernel: BootKernel;
  qemu: string;
  rootfs: string;
  /** the project-files disk (module, workloads), /opt/tmem in the guest */
  tmemfiles: string;
  /** the virtio_tmem.ko on that disk, or null */
  module: string | null;
  /** the same as kernel.dir, kernel.image, kernel.buildDir (kept for existing callers) */
  kernelDir: string;
  bzImage: string;
  kernelBuildDir: string;
}

export interface BuildOptions {
  kernel?: KernelName;
  /**
   * virtio_tmem.ko for the files disk: a path, 'none' (or false) for none, or
   * undefined: the kernel's own (tmem: the newest under guest-driver/;
   * debian: build-debian-module.sh, rebuilt when guest-driver/ changed)
   */
  module?: string | false;
  /** a directory to put at /opt/tmem/extra in the guest */
  extra?: string;
  /** progress text (default stderr; null for silence) */
  log?: Sink | null;
}

/** Run one of our build scripts; its progress goes to `log`, its last stdout line is the result. */
export function runScript(script: string, args: string[] = [], { log = process.stderr as Sink | null, env = process.env } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [path.join(VM_IMAGES_DIR, script), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d; });
    p.stderr.on('data', (d: Buffer) => { log?.write(String(d)); });
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${script} ${args.join(' ')} failed with exit status ${code}`));
      const lines = out.trim().split('\n');
      resolve(lines[lines.length - 1]!);
    });
  });
}

const readVersion = (dir: string): string => {
  try { return fs.readFileSync(path.join(dir, 'version'), 'utf8').trim(); } catch { return 'unknown'; }
};

/** Build (or find cached) one guest kernel. */
export async function buildKernel(name: KernelName, log: Sink | null = process.stderr): Promise<BootKernel> {
  if (isBookworm(name)) {
    const dir = await runScript('build-bookworm-kernel.sh', [name === 'bookworm' ? 'cloud' : 'generic'], { log });
    // no headers: nothing of ours is built against 6.1
    return { name, version: readVersion(dir), dir, image: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'), buildDir: '' };
  }
  if (name === 'debian') {
    const dir = await runScript('build-debian-kernel.sh', [], { log });
    return {
      name, version: readVersion(dir), dir, image: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'),
      buildDir: fs.realpathSync(path.join(dir, 'headers')),
    };
  }
  const dir = await runScript('build-kernel.sh', [], { log });
  return { name, version: readVersion(dir), dir, image: path.join(dir, 'bzImage'), initrd: null, buildDir: path.join(dir, 'build') };
}

/** The module of Debian's kernel, from the working tree's guest-driver/ (cached by its sources). */
export function buildDebianModule(kernel: BootKernel, log: Sink | null = process.stderr): Promise<string> {
  return runScript('build-debian-module.sh', [kernel.dir], { log });
}

/** Build (or find cached) everything one VM needs. */
export async function buildAll({ kernel = 'tmem', module, extra, log = process.stderr }: BuildOptions = {}): Promise<Built> {
  const qemu = await runScript('qemu.sh', [], { log });
  const k = await buildKernel(kernel, log);
  const rootfs = await runScript('build-rootfs.sh', [], { log });
  let mod: string | null;
  if (module === 'none' || module === false || (isBookworm(k.name) && !module)) mod = null;
  else if (module) mod = module;
  else if (k.name === 'debian') mod = await buildDebianModule(k, log);
  else mod = newestModule();
  const tmemfiles = await buildTmemfiles({ module: mod ?? 'none', extra, log });
  return { kernel: k, qemu, rootfs, tmemfiles, module: mod, kernelDir: k.dir, bzImage: k.image, kernelBuildDir: k.buildDir };
}

/** The newest virtio_tmem.ko under guest-driver/ (what build-tmemfiles.sh takes by default), or null. */
function newestModule(): string | null {
  const dir = path.join(VM_IMAGES_DIR, '..', 'guest-driver');
  let best: { p: string; t: number } | null = null;
  const walk = (d: string): void => {
    let ents: fs.Dirent[];
    try { ents = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of ents) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name === 'virtio_tmem.ko') {
        const t = fs.statSync(p).mtimeMs;
        if (!best || t > best.t) best = { p, t };
      }
    }
  };
  walk(dir);
  return (best as { p: string } | null)?.p ?? null;
}

/** Only the small project-files disk (module + workloads), e.g. after rebuilding the module. */
export function buildTmemfiles({ module, extra, log = process.stderr }: { module?: string | false; extra?: string | undefined; log?: Sink | null } = {}): Promise<string> {
  const args: string[] = [];
  if (module === 'none' || module === false) args.push('--no-module');
  else if (module) args.push('--module', module);
  if (extra) args.push('--extra', extra);
  return runScript('build-tmemfiles.sh', args, { log });
}
