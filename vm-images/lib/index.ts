// The test-VM library (see vm-images/README.md): build the images, start
// tmemd and QEMU, read the console and the harness port, talk QMP, stop both
// in order. TypeScript, compiled by `npm run build` to dist/vm-images/lib/;
// vm-images/lib/vm.mjs loads it for the plain-Node scripts.
export { CACHE, REPO_DIR, VM_IMAGES_DIR, makeRunDir, mib, parseSize, type Sink } from './paths.js';
export { KERNELS, buildAll, buildDebianModule, buildKernel, buildTmemfiles, kernelName, runScript, type BootKernel, type BuildOptions, type Built, type KernelName } from './build.js';
export { QmpClient, type BlockStats, type QmpEvent, type QmpValue } from './qmp.js';
export { Daemon, startDaemon, type DaemonOptions, type Exit } from './daemon.js';
export { Vm, bootAppend, detectAccel, qemuArgs, startVm, type Accel, type QemuArgsInput, type VmOptions, type VmResult } from './vm.js';
export { Session, launch, type LaunchOptions, type Launched, type StopResult } from './session.js';
