// Where the compiled form of a module lives. The vring worker runs compiled
// JavaScript (dist/), also when the main thread runs from the .ts sources
// (tap's loader): a worker module URL given from a .ts file is mapped to the
// same path under dist/.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join, relative, resolve } from 'node:path';

/** The file: URL (string) of `rel` (e.g. './worker.js') next to the module at `metaUrl`, compiled. */
export function compiledModuleUrl(metaUrl: string, rel: string): string {
  const here = fileURLToPath(metaUrl);
  if (here.endsWith('.js')) return new URL(rel, metaUrl).href;
  // .../<root>/host/x/y.ts -> <root>/dist/host/x/<rel>
  const dir = dirname(here);
  let root = dir;
  while (!existsSync(join(root, 'package.json')) && dirname(root) !== root) root = dirname(root);
  const built = resolve(join(root, 'dist', relative(root, dir)), rel);
  if (!existsSync(built)) throw new Error(`${built} is missing: build first (npm run build)`);
  return pathToFileURL(built).href;
}
