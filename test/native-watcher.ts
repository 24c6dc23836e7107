// native/watcher.ts: fd readiness on the event loop, without Node reading the fds.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';
import { setTimeout as sleep } from 'node:timers/promises';
import * as native from '../native/index.js';
import { closeAtEnd } from './native/harness.js';

/** Resolves with the events of the next onReady call, or rejects after ms. */
function nextReady(calls: number[], ms = 2000): Promise<number> {
  const start = calls.length;
  return new Promise((res, rej) => {
    const t0 = Date.now();
    const tick = () => {
      if (calls.length > start) res(calls[start]!);
      else if (Date.now() - t0 > ms) rej(new Error('no readiness callback'));
      else setTimeout(tick, 2);
    };
    tick();
  });
}

t.test('fires for a readable socket, with EPOLLIN; data is left for us to read', async (t) => {
  const [a, b] = native.socketPair(true);
  const w = closeAtEnd(t, new native.FdWatcher(), a, b);
  const calls: number[] = [];
  const buf = new Uint8Array(16);
  let got = '';
  w.watch(b, (ev) => {
    calls.push(ev);
    const n = native.recvMsg(b, buf, []);
    if (n) got += Buffer.from(buf.subarray(0, n)).toString();
  });
  await sleep(50);
  t.same(calls, [], 'nothing before data arrives');
  native.sendMsg(a, Uint8Array.from(Buffer.from('ready')));
  const ev = await nextReady(calls);
  t.ok(ev & native.EPOLLIN, 'EPOLLIN');
  t.equal(got, 'ready', 'the callback read the bytes itself');
});

t.test('fires for an eventfd, once per signal when the callback drains it', async (t) => {
  const efd = native.eventfd();
  const w = closeAtEnd(t, new native.FdWatcher(), efd);
  const values: bigint[] = [];
  const calls: number[] = [];
  w.watch(efd, (ev) => {
    calls.push(ev);
    values.push(native.eventfdRead(efd) ?? -1n);
  });
  native.eventfdWrite(efd, 5n);
  await nextReady(calls);
  native.eventfdWrite(efd, 2n);
  await nextReady(calls);
  await sleep(30);
  t.same(values, [5n, 2n]);
});

t.test('a callback that does not drain its fd is called again (re-armed, level-triggered)', async (t) => {
  const efd = native.eventfd(1);
  const w = closeAtEnd(t, new native.FdWatcher(), efd);
  let n = 0;
  await new Promise<void>((res) =>
    w.watch(efd, () => {
      if (++n === 3) {
        native.eventfdRead(efd);
        res();
      }
    }),
  );
  await sleep(30);
  t.equal(n, 3, 'called until drained, then quiet');
});

t.test('reports a hung-up peer', async (t) => {
  const [a, b] = native.socketPair(true);
  const w = closeAtEnd(t, new native.FdWatcher(), b);
  const calls: number[] = [];
  w.watch(b, (ev) => {
    calls.push(ev);
    w.unwatch(b); // EOF stays readable forever; stop here
  });
  native.close(a);
  const ev = await nextReady(calls);
  t.ok(ev & native.EPOLLHUP, 'EPOLLHUP');
  t.equal(native.recvMsg(b, new Uint8Array(4), []), 0, 'and recvMsg sees EOF');
});

t.test('unwatch stops callbacks; the fd can be watched again', async (t) => {
  const efd = native.eventfd();
  const w = closeAtEnd(t, new native.FdWatcher(), efd);
  const first: number[] = [];
  w.watch(efd, (ev) => first.push(ev));
  w.unwatch(efd);
  t.equal(w.size, 0);
  native.eventfdWrite(efd);
  await sleep(100);
  t.same(first, [], 'no callback after unwatch');
  const second: number[] = [];
  w.watch(efd, (ev) => {
    second.push(ev);
    native.eventfdRead(efd);
  });
  await nextReady(second);
  t.same(first, [], 'the old callback stays silent');
  t.throws(() => w.watch(efd, () => {}), /already watched/);
});

t.test('unwatch from inside another callback drops that fd\'s pending event', async (t) => {
  const e1 = native.eventfd(1);
  const e2 = native.eventfd(1);
  const w = closeAtEnd(t, new native.FdWatcher(), e1, e2);
  const calls: string[] = [];
  // Both are ready before the wait starts, so both events come back from one epoll_wait.
  w.watch(e1, () => {
    calls.push('e1');
    native.eventfdRead(e1);
    w.unwatch(e2);
  });
  w.watch(e2, () => {
    calls.push('e2');
    native.eventfdRead(e2);
    w.unwatch(e1);
  });
  await sleep(100);
  t.equal(calls.length, 1, `exactly one callback ran: ${calls.join(',')}`);
});

t.test('a throwing callback is logged and watching goes on', async (t) => {
  const logs: string[] = [];
  const w = new native.FdWatcher((msg) => logs.push(msg));
  const efd = native.eventfd();
  const ok = native.eventfd();
  t.teardown(() => {
    w.close();
    [efd, ok].forEach(native.close);
  });
  w.watch(efd, () => {
    native.eventfdRead(efd);
    throw new Error('boom');
  });
  const calls: number[] = [];
  w.watch(ok, (ev) => {
    calls.push(ev);
    native.eventfdRead(ok);
  });
  native.eventfdWrite(efd);
  await sleep(50);
  native.eventfdWrite(ok);
  await nextReady(calls);
  t.match(logs, [/callback for fd \d+ threw/]);
});

t.test('close from inside a callback, then nothing more', async (t) => {
  const w = new native.FdWatcher();
  const efd = native.eventfd(1);
  t.teardown(() => native.close(efd));
  let n = 0;
  w.watch(efd, () => {
    n++;
    w.close();
  });
  await sleep(100);
  t.equal(n, 1);
  t.throws(() => w.watch(efd, () => {}), /after close/);
  w.close(); // idempotent
});

// The exit tests run plain node on a JS copy of native/ (transpiled here, with
// node_modules linked beside it): under tap's TypeScript loader a child
// takes ~10 s to start, which would swamp the timings being checked.
let jsNative: string | null = null;
function nativeJs(): string {
  if (jsNative !== null) return jsNative;
  const dir = mkdtempSync(join(tmpdir(), 'native-js-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const root = fileURLToPath(new URL('..', import.meta.url));
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  mkdirSync(join(dir, 'native'));
  for (const f of readdirSync(join(root, 'native')).filter((f) => f.endsWith('.ts'))) {
    const out = ts.transpileModule(readFileSync(join(root, 'native', f), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    });
    writeFileSync(join(dir, 'native', f.replace(/\.ts$/, '.js')), out.outputText);
  }
  jsNative = pathToFileURL(join(dir, 'native', 'index.js')).href;
  return jsNative;
}

/** Runs `body` (an ES module with `native` in scope) in a child node; resolves with its exit code, run time and output. */
function child(body: string, limitMs: number): Promise<{ code: number | null; ms: number; out: string }> {
  const src = `const native = await import(${JSON.stringify(nativeJs())});\n${body}`;
  const t0 = Date.now();
  const p = spawn(process.execPath, ['--input-type=module', '-e', src], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  const timer = setTimeout(() => p.kill('SIGKILL'), limitMs);
  return new Promise((res) =>
    p.on('exit', (code) => {
      clearTimeout(timer);
      res({ code, ms: Date.now() - t0, out });
    }),
  );
}

t.test('close() while watching lets the process exit on its own, quickly', async (t) => {
  const base = await child(`console.log('ok');`, 10000);
  t.equal(base.code, 0, `baseline child runs: ${base.out}`);
  const r = await child(
    `const w = new native.FdWatcher();
     const [a, b] = native.socketPair(true);
     const e = native.eventfd();
     w.watch(b, () => {});
     w.watch(e, () => {});
     setTimeout(() => { w.close(); console.log('closed'); }, 200);`,
    base.ms + 5000,
  );
  t.equal(r.code, 0, `exited by itself: ${r.out}`);
  t.match(r.out, /closed/);
  t.ok(r.ms < base.ms + 200 + 1000, `and quickly (${r.ms} ms, baseline ${base.ms} ms + 200 ms wait)`);
});

t.test('an FdWatcher whose watch set became empty does not keep the process alive', async (t) => {
  const r = await child(
    `const w = new native.FdWatcher();
     const e = native.eventfd();
     w.watch(e, () => {});
     setTimeout(() => { w.unwatch(e); console.log('unwatched'); }, 200);`,
    5000,
  );
  t.equal(r.code, 0, `exited without close(): ${r.out}`);
  t.match(r.out, /unwatched/);
});

t.test('while something is watched the process stays alive (so the exit tests can fail)', async (t) => {
  const r = await child(
    `const w = new native.FdWatcher();
     const e = native.eventfd();
     w.watch(e, () => {});
     console.log('watching');`,
    2000,
  );
  t.match(r.out, /watching/, 'the child got going');
  t.equal(r.code, null, 'still running when killed after 2 s');
});
