// Where things are: the repository, vm-images/, the build cache, and the
// per-VM run directories. This file runs from vm-images/lib/ (tap's loader)
// and from dist/vm-images/lib/ (compiled), so the repository is found by
// walking up, not by a fixed number of "..".
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSize as parseSizeText } from '../../host/units.js';

function findRepo(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(d, 'package.json')) && fs.existsSync(path.join(d, 'vm-images', 'build-kernel.sh'))) return d;
    d = path.dirname(d);
  }
  throw new Error(`cannot find the repository root above ${fileURLToPath(import.meta.url)}`);
}

export const REPO_DIR = findRepo();
export const VM_IMAGES_DIR = path.join(REPO_DIR, 'vm-images');
export const CACHE = process.env.TMEM_KVM_CACHE || '/var/cache/tmem-kvm';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** "512M" / "2G" / "1048576" -> bytes (binary units): the repository's one size parser (host/units.ts). */
export function parseSize(s: string | number): number {
  return typeof s === 'number' ? s : Number(parseSizeText(s));
}

/** A size in whole MiB. */
export const mib = (s: string | number): number => Math.round(parseSize(s) / 2 ** 20);

/** A fresh run directory under $CACHE/run (swap/data images, sockets of one VM). */
export function makeRunDir(prefix = 'vm'): string {
  const base = path.join(CACHE, 'run');
  fs.mkdirSync(base, { recursive: true });
  // prune run directories left behind by killed runs (untouched for 2 days)
  for (const d of fs.readdirSync(base)) {
    try {
      const p = path.join(base, d);
      if (Date.now() - fs.statSync(p).mtimeMs > 2 * 86400e3) fs.rmSync(p, { recursive: true, force: true });
    } catch { /* raced with another process */ }
  }
  return fs.mkdtempSync(path.join(base, `${prefix}-`));
}

/** Where progress text goes: a stream, or null for silence. */
export interface Sink { write(s: string): unknown }
