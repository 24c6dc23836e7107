// The test-VM library for the plain-Node scripts (run-vm.mjs, setup.mjs,
// check.mjs, kernbench). The library itself is TypeScript
// (vm-images/lib/*.ts, entry index.ts), compiled by `npm run build` into
// dist/vm-images/lib/; this file loads that build and says so when it is
// missing, instead of a module-resolution stack trace.
//
//   import { buildAll, launch, Session, Vm, Daemon } from './vm-images/lib/vm.mjs';
import fs from 'node:fs';

const url = new URL('../../dist/vm-images/lib/index.js', import.meta.url);
if (!fs.existsSync(url)) {
  process.stderr.write('vm-images: dist/vm-images/lib/index.js is missing: run `npm run build` first\n');
  process.exit(2);
}
const lib = await import(url.href);

export const {
  CACHE, REPO_DIR, VM_IMAGES_DIR, makeRunDir, mib, parseSize,
  KERNELS, buildAll, buildDebianModule, buildKernel, buildTmemfiles, kernelName, runScript,
  QmpClient, Daemon, startDaemon, Vm, bootAppend, detectAccel, qemuArgs, startVm, Session, launch,
} = lib;
