// blk-loadgen (test/loadgen/blk.c, the front-end of bench:blk) against
// qemu-storage-daemon's vhost-user-blk export (Debian 12's QEMU 7.2, unpacked
// by vm-images/build-qsd.sh; npm run setup makes it): QEMU's handshake works
// with a stock backend and every read is verified; a backend that loses
// writes (QEMU's null-co driver, reads return zeros) is caught as mismatches
// with exit status 1; bad flags are one-line errors with exit status 2.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from './loadgen/harness.js';

const LOADGEN = join(ROOT, 'test/loadgen/build/blk-loadgen');
const QSD = '/var/cache/tmem-kvm/qsd/bin/qemu-storage-daemon';
const qsdPath = process.env.TMEM_KVM_CACHE ? join(process.env.TMEM_KVM_CACHE, 'qsd/bin/qemu-storage-daemon') : QSD;

const mk = spawnSync('make', ['-s', '-C', join(ROOT, 'test/loadgen'), '-f', 'blk.mk'], { encoding: 'utf8' });
if (mk.status !== 0) throw new Error(`building blk-loadgen failed:\n${mk.stdout}${mk.stderr}`);
if (!existsSync(qsdPath)) throw new Error(`${qsdPath} is missing: run npm run setup (vm-images/build-qsd.sh)`);

interface Run { code: number | null; out: string; err: string; json: Record<string, unknown> | null }

function loadgen(args: string[], timeoutMs = 120000): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(LOADGEN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(timer);
      let json: Record<string, unknown> | null = null;
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      try { json = line ? JSON.parse(line) : null; } catch { /* null */ }
      resolve({ code, out, err, json });
    });
  });
}

/** qemu-storage-daemon exporting one block node over vhost-user-blk; stopped at teardown. */
async function startQsd(t: { teardown(fn: () => unknown): void }, blockdev: (dir: string) => string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'loadgen-blk-'));
  const sock = join(dir, 'blk.sock');
  const p: ChildProcess = spawn(qsdPath, ['--blockdev', blockdev(dir),
    '--export', `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${sock},writable=on,num-queues=2,logical-block-size=4096`],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr!.on('data', (d) => { log += d; });
  t.teardown(async () => {
    if (p.exitCode === null) { p.kill('SIGTERM'); await new Promise((r) => p.once('exit', r)); }
    rmSync(dir, { recursive: true, force: true });
  });
  for (let i = 0; i < 200 && !existsSync(sock); i++) {
    if (p.exitCode !== null) throw new Error(`qemu-storage-daemon exited: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!existsSync(sock)) throw new Error(`qemu-storage-daemon made no socket: ${log}`);
  return sock;
}

t.test('against a file on tmpfs: QEMU\'s handshake, 2 queues, every read verified', async (t) => {
  const sock = await startQsd(t, (dir) => {
    const img = join(dir, 'disk.img');
    const fd = openSync(img, 'w'); ftruncateSync(fd, 64 << 20); closeSync(fd);
    return `driver=file,node-name=d0,filename=${img},discard=unmap`;
  });
  const r = await loadgen(['--socket', sock, '--queues', '2', '--depth', '16', '--seconds', '1', '--span-mib', '32', '--json']);
  t.equal(r.code, 0, 'exit 0', { err: r.err });
  const j = r.json ?? {};
  t.equal(j.ok, true, 'ok');
  t.equal(j.mismatches, 0, 'no mismatch');
  t.equal(j.badStatus, 0, 'every status OK');
  t.equal(j.blkSize, 4096, 'blk_size 4096 from the config space');
  t.equal(j.numQueues, 2, 'num_queues 2 from the config space');
  t.equal(j.capacitySectors, (64 << 20) / 512, 'capacity from the config space');
  t.equal(j.spanBlocks, (32 << 20) / 4096, 'the span');
  t.ok((j.reads as number) > 100 && (j.writes as number) > 100, `reads ${j.reads} and writes ${j.writes} in the timed phase`);
  t.ok((j.p99Us as number) >= (j.p50Us as number) && (j.p50Us as number) > 0, `p50 ${j.p50Us} us <= p99 ${j.p99Us} us`);
});

t.test('a backend that loses writes (null-co, reads are zeros) is caught', async (t) => {
  const sock = await startQsd(t, () => `driver=null-co,node-name=d0,size=${64 << 20},read-zeroes=on`);
  const r = await loadgen(['--socket', sock, '--queues', '1', '--depth', '4', '--seconds', '1', '--span-mib', '8', '--json']);
  t.equal(r.code, 1, 'exit 1 (mismatch)');
  t.equal(r.json?.ok, false, 'ok false');
  t.ok((r.json?.mismatches as number) > 1000, `mismatches counted (${r.json?.mismatches})`);
  t.match(r.err, /block \d+ read back wrong/, 'says which block came back wrong');
});

t.test('bad flags and no backend: one line, exit 2', async (t) => {
  for (const [args, re] of [
    [['--socket', '/nonexistent/blk.sock', '--timeout-ms', '200'], /connecting to \/nonexistent\/blk\.sock/],
    [['--socket', 'x', '--depth', '100', '--qsize', '256'], /--depth 100 needs 300 descriptors/],
    [['--socket', 'x', '--qsize', '100'], /--qsize 100: a power of two/],
    [['--socket', 'x', '--read-pct', '101'], /--read-pct: '101' is not a whole number from 0 to 100/],
    [['--queues', '2'], /usage: blk-loadgen/],
  ] as const) {
    const r = await loadgen([...args], 20000);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.err, re, `${args.join(' ')}: ${r.err.trim().split('\n')[0]}`);
  }
});
