// The harness port (vm-images/guest/init.sh, vm-images/lib/vm.mjs): the
// guest's markers and results reach the host whole. The serial console
// cannot promise that: the kernel writes its messages straight to the UART,
// so a warning printed while a program writes a line lands inside that line.
// Seen in CI: a @@TMEM-RESULT line arrived torn and an e2e test failed on it.
// Here the guest sends a burst of numbered lines on both channels while it
// prints kernel warnings, and the host blocks its event loop for a while
// meanwhile (neither channel is read: the port must hold the guest back, not
// drop). Every line must come over the port, in order and intact; what the
// console kept is reported.
import t from 'tap';
import { atGate, bootVm, e2eEnv, tail, waitReady } from './e2e/harness.js';

const COUNT = 4000;
const BODY = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const STALL_MS = 4000;

/** Blocks this process's event loop: neither the console pipe nor the port socket is read meanwhile. */
function stallEventLoop(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) { /* spin */ }
}

function floodLines(text: string): string[] {
  return text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.startsWith('@@E2E-FLOOD '));
}

t.test('markers come over the harness port whole while the host is not reading', async (t) => {
  const env = await e2eEnv(t);
  const vm = await bootVm(env, { ram: '256M', swapSize: '0', dataSize: '0', noModule: true, run: `/opt/tmem/workloads/e2e-flood.sh ${COUNT}` });
  const ready = await waitReady(vm, false);
  t.match(ready, / harness=port\b/, 'the guest opened the harness port');
  const go = await atGate(vm, 'start');
  go();
  stallEventLoop(STALL_MS);
  await vm.waitFor(new RegExp(`@@E2E-FLOOD-END ${COUNT}\\b`), 300000);
  await vm.waitFor(/@@TMEM-POWEROFF/, 120000);

  const port = floodLines(vm.markers());
  const expected = Array.from({ length: COUNT }, (_, i) => `@@E2E-FLOOD ${i} ${BODY}`);
  const bad = port.findIndex((l, i) => l !== expected[i]);
  t.equal(port.length, COUNT, `all ${COUNT} lines came over the port`);
  t.equal(bad, -1, bad < 0 ? 'every port line is intact and in order' : `port line ${bad} differs: ${JSON.stringify(port[bad])}`);
  const consoleLines = floodLines(vm.output());
  const consoleIntact = consoleLines.filter((l, i) => l === expected[i]).length;
  const kernelLines = (vm.output().match(/e2e-flood: a kernel warning/g) ?? []).length;
  t.comment(`console (the UART) meanwhile: ${consoleLines.length} flood lines, ${consoleIntact} intact at their place; ${kernelLines} kernel warnings`);
  t.ok(kernelLines > 0, 'the kernel printed its warnings on the console during the burst');
  await vm.quit();
  if (t.passing() === false) t.comment(tail(vm.output()));
});
