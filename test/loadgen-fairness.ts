// One guest flooding the daemon does not starve another (issue 13, item 5):
// two C front-ends (test/loadgen/) against the built daemon over real
// sockets. While one VM keeps 4 queues of 1024 entries full of chains as long
// as a queue allows, the other VM's requests at depth 1 all complete, every
// page verified, and the daemon's own counters show the budget rule at work
// (host/vhost-user/engine.ts): the flooding guest's turns were cut, its
// refused chains charged the penalty, all four of its queues served in turn,
// and it was served too. Counts, not times: how fast is ring-bench --noisy.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildLoadgen, explain, LOADGEN, ROOT, runLoadgen, TMEMD, UNTRACED } from './loadgen/harness.js';

buildLoadgen();
const TMEMCTL = join(ROOT, 'dist/host/tmemctl.js');

interface QueueStats {
  completed: number;
  unanswerable: number;
}
/** The instance record of the VM's tmem connection (guests[i].dataplane); the budget rule's counters are in its vring block. */
interface GuestDataplane {
  queues: QueueStats[];
  counters: { vring: { workUnits: number; penalizedChains: number; turnsCut: number } };
}

/** The data plane's view of the connected guest named `name` (tmemctl --json stats). */
function guestStats(ctl: string, name: string): { queues: QueueStats[]; workUnits: number; penalizedChains: number; turnsCut: number } {
  const r = spawnSync(process.execPath, [TMEMCTL, '--control', ctl, '--json', 'stats'], { encoding: 'utf8', timeout: 20000 });
  if (r.status !== 0) throw new Error(`tmemctl stats failed (${r.status}): ${r.stderr}`);
  const s = JSON.parse(r.stdout) as { guests: { name: string; dataplane: GuestDataplane | null }[] };
  const g = s.guests.find((x) => x.name === name);
  if (!g?.dataplane) throw new Error(`no connected guest ${name} in: ${r.stdout.slice(0, 2000)}`);
  return { queues: g.dataplane.queues, ...g.dataplane.counters.vring };
}

for (const mode of ['poll', 'notify'] as const) {
  for (const noise of ['long', 'split'] as const) {
    const what = noise === 'long' ? 'chains of 1024 descriptors it cannot answer' : 'valid PUTs split over 1023 descriptors';
    t.test(`${mode} mode: beside a guest flooding 4 queues with ${what}, another guest's every request completes and verifies; the flood is served too, in turns cut by the budget`, async (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'tmem-fairness-'));
      const qsock = join(dir, 'quiet.sock');
      const nsock = join(dir, 'noisy.sock');
      const ctl = join(dir, 'ctl.sock');
      const d = spawn(
        UNTRACED[0]!,
        [...UNTRACED.slice(1), process.execPath, TMEMD, '--vm', `name=quiet,socket=${qsock},maxmem=1G`, '--vm', `name=noisy,socket=${nsock},maxmem=1G`, '--capacity', '256M', '--queues', '4', '--queues-mode', mode, '--control', ctl],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let log = '';
      d.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
      const n = spawn(LOADGEN, ['noisy', '--socket', nsock, '--json', '--queues', '4', '--qsize', '1024', '--noise', noise, '--timeout-ms', '30000'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let nout = '';
      let nerr = '';
      n.stdout!.setEncoding('utf8').on('data', (s: string) => (nout += s));
      n.stderr!.setEncoding('utf8').on('data', (s: string) => (nerr += s));
      const nDone = new Promise<number | null>((res) => n.once('close', (code) => res(code)));
      t.teardown(async () => {
        if (n.exitCode === null) n.kill('SIGKILL');
        if (d.exitCode === null) d.kill('SIGTERM');
        await new Promise((r) => (d.exitCode !== null ? r(null) : d.once('close', r)));
        rmSync(dir, { recursive: true, force: true });
      });
      const until = async (what: string, ok: () => boolean) => {
        const end = Date.now() + 30000;
        while (!ok()) {
          if (d.exitCode !== null) throw new Error(`tmemd exited (${d.exitCode}) waiting for ${what}:\n${log}`);
          if (n.exitCode !== null) throw new Error(`the noisy front-end exited (${n.exitCode}) waiting for ${what}:\n${nerr}\n${nout}\n--- tmemd:\n${log}`);
          if (Date.now() > end) throw new Error(`${what}: not within 30 s\n${nerr}\n--- tmemd:\n${log}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await until('the noisy guest flooding', () => existsSync(ctl) && nerr.includes('noisy: flooding'));

      const r = await runLoadgen('verify', qsock, ['--json', '--ram', '16M', '--queues', '1', '--depth', '1', '--ops', '3000', '--timeout-ms', '5000'], 300000);
      t.equal(r.code, 0, 'the quiet guest: verify exits 0 (no request later than 5 s, every page right)', { output: explain(r) + `\n--- tmemd:\n${log.slice(-2000)}` });
      t.ok((r.json?.ops as number) >= 3000, `quiet ops: ${r.json?.ops}`);

      const s = guestStats(ctl, 'noisy');
      const perQueue = s.queues.map((q) => q.completed);
      t.ok(
        perQueue.every((c) => c > 1),
        `every noisy queue served in turn: ${perQueue.join(', ')} chains`,
      );
      t.ok(s.turnsCut > 0, `noisy turns cut by the budget: ${s.turnsCut}`);
      if (noise === 'long') t.ok(s.penalizedChains > 0, `refused chains charged the penalty: ${s.penalizedChains}`);
      else t.equal(s.penalizedChains, 0, 'valid chains are not penalized');

      n.kill('SIGTERM');
      const code = await nDone;
      t.equal(code, 0, 'the noisy front-end exits 0 (its chains kept completing: no 30 s stall)', { nerr });
      const j = JSON.parse(nout.trimEnd().split('\n').pop() ?? '{}') as { chains?: number; unanswered?: number };
      t.ok((j.chains ?? 0) > 0, `noisy chains completed: ${j.chains}`);
      t.equal(j.unanswered, noise === 'long' ? j.chains : 0, noise === 'long' ? 'each completed with len 0' : 'each answered');
      t.equal(d.exitCode, null, 'tmemd still runs');
    });
  }
}
