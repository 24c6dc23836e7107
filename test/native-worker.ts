// koffi inside a worker_threads Worker: the data-plane worker maps guest RAM,
// polls eventfds and reads them, with its own koffi instance.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import * as native from '../native/index.js';

const workerSrc = `
import { parentPort, workerData } from 'node:worker_threads';
const native = await import(workerData.nativeUrl);
const { memfd, wake } = workerData;
// mmap: the main thread wrote 'hi' at offset 100 of the memfd.
const m = native.mmapShared(memfd, 4096n, 0n);
const seen = String.fromCharCode(m.windows[0].bytes[100], m.windows[0].bytes[101]);
m.windows[0].bytes[200] = 0x5a; // for the main thread to see
native.munmap(m);
// eventfd + poll: tell the main thread we are ready, then block in poll(2) until it wakes us.
const own = native.eventfd();
native.eventfdWrite(own, 3n);
const ownRead = native.eventfdRead(own);
native.close(own);
parentPort.postMessage({ type: 'ready', seen, ownRead: String(ownRead) });
const rev = new Int16Array(1);
const n = native.pollFds(Int32Array.of(wake), 1, rev, 10000);
const value = native.eventfdRead(wake);
parentPort.postMessage({ type: 'woken', n, revents: rev[0], value: String(value) });
`;

t.test('koffi in a Worker: mmap, eventfd, poll (blocking) work and see the main thread', async (t) => {
  const memfd = native.memfdCreate('worker', 4096n);
  const wake = native.eventfd();
  t.teardown(() => [memfd, wake].forEach(native.close));
  const m = native.mmapShared(memfd, 4096n, 0n);
  t.teardown(() => native.munmap(m));
  m.windows[0]!.bytes.set([0x68, 0x69], 100);

  const nativeUrl = new URL('../native/index.js', import.meta.url).href;
  const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(workerSrc)}`), { workerData: { nativeUrl, memfd, wake } });
  const msgs: Record<string, unknown>[] = [];
  const done = new Promise<void>((res, rej) => {
    w.on('error', rej);
    w.on('exit', (code) => (code === 0 ? res() : rej(new Error(`worker exit ${code}`))));
    w.on('message', (msg: Record<string, unknown>) => {
      msgs.push(msg);
      // The worker is (about to be) blocked in poll(2): wake it through the eventfd.
      if (msg.type === 'ready') setTimeout(() => native.eventfdWrite(wake, 7n), 50);
    });
  });
  await done;
  t.same(msgs, [
    { type: 'ready', seen: 'hi', ownRead: '3' },
    { type: 'woken', n: 1, revents: 1, value: '7' },
  ]);
  t.equal(m.windows[0]!.bytes[200], 0x5a, 'the worker wrote through its own mapping');
});
