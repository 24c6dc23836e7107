#!/usr/bin/env node
// The heavy builds the end-to-end tests need, done before tap runs (so that no
// test spends its timeout building): QEMU, the guest kernel, the root image
// (vm-images/*.sh, cached), the guest module (make -C guest-driver, against
// that kernel), the project-files disk with the module, Debian's own kernel
// (downloaded, with our initramfs) and the module built against its headers
// with its own files disk, Debian bookworm's 6.1 kernels (cloud and generic, with our
// initramfs), qemu-storage-daemon (the peer of bench:blk, unpacked into the
// cache) and the loadgen.
//
//   npm run setup                        # = node vm-images/setup.mjs (after npm run build)
//   node vm-images/setup.mjs --no-loadgen
//   node vm-images/setup.mjs --no-debian # only the project's kernel
//
// Exit status 0 when everything is there; 1 with the failing step otherwise.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { buildAll, REPO_DIR } from './lib/vm.mjs';

const args = new Set(process.argv.slice(2));
const t0 = Date.now();
const say = (s) => process.stderr.write(`[setup ${((Date.now() - t0) / 1000).toFixed(0)}s] ${s}\n`);

function run(cmd, argv, opts = {}) {
  return new Promise((resolve, reject) => {
    say(`$ ${cmd} ${argv.join(' ')}`);
    const p = spawn(cmd, argv, { cwd: REPO_DIR, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${argv.join(' ')}: exit status ${code}`))));
  });
}

try {
  say('QEMU, guest kernel, root image (cached; the first build takes about 6 min on 2 cores, mostly the kernel)');
  // the kernel first: the module is built against it; the module is not there yet
  const first = await buildAll({ module: 'none' });
  say(`kernel ${first.kernelDir}, rootfs ${first.rootfs}, qemu ${first.qemu}`);
  // Debian packages the tests use: sparse and dkms for test/guest-driver-build.ts (make C=2, the kernel's
  // static checker over the module; dkms build against Debian's headers), DejaVu Sans for the kernbench
  // report's PNG text (resvg draws with it; test/kernbench-report.ts), prometheus (the server and promtool) for test/metrics-*.ts,
  // systemd (systemd-socket-activate, systemd-analyze: test/systemd-*.ts), libvirt-clients and libxml2-utils
  // (virt-xml-validate and the xmllint it runs: test/libvirt-xml.ts), libvirt-daemon-driver-qemu
  // (virt-qemu-run, libvirt's QEMU driver without libvirtd: test/libvirt-run.ts)
  await run('bash', ['-c', 'LOG_TAG=setup; source vm-images/lib/common.sh; apt_ensure sparse dkms fonts-dejavu-core prometheus systemd libvirt-clients libxml2-utils libvirt-daemon-driver-qemu']);
  say('guest module (make -C guest-driver)');
  await run('make', ['-C', path.join(REPO_DIR, 'guest-driver'), `KDIR=${first.kernelBuildDir}`]);
  const module = path.join(REPO_DIR, 'guest-driver', 'virtio_tmem.ko');
  const b = await buildAll({ module });
  say(`project files disk with the module: ${b.tmemfiles}`);
  if (!args.has('--no-debian')) {
    say("Debian's bullseye kernel (apt-get download through $CACHE/apt-bullseye, our initramfs) and the module against its headers");
    const d = await buildAll({ kernel: 'debian' });
    say(`Debian kernel ${d.kernel.version} (${d.kernel.dir}), module ${d.module}, files disk ${d.tmemfiles}`);
  }
  if (!args.has('--no-debian')) {
    // tmem-blk's guest (test/e2e-blk.ts, kernbench tmem-blk): Debian 12's own 6.1 kernels, cloud (no
    // zswap) and generic (zswap, for kernbench's comparison); and the peer of bench:blk
    for (const kernel of ['bookworm', 'bookworm-generic']) {
      const k = await buildAll({ kernel });
      say(`Debian bookworm kernel ${k.kernel.version} (${k.kernel.dir}), files disk ${k.tmemfiles}`);
    }
    await run('bash', ['vm-images/build-qsd.sh']);
  }
  if (!args.has('--no-loadgen')) {
    say('loadgen (make -C test/loadgen)');
    await run('make', ['-C', path.join(REPO_DIR, 'test', 'loadgen')]);
    await run('make', ['-C', path.join(REPO_DIR, 'test', 'loadgen'), '-f', 'blk.mk']);
  }
  say('done');
} catch (e) {
  say(`FAILED: ${e.message}`);
  process.exit(1);
}
