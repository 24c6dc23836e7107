// Keeps Node's debugger out of a production tmemd. Node opens its inspector
// (a WebSocket on 127.0.0.1:9229 that evaluates any JavaScript sent to it) when
// the process gets SIGUSR1, which anyone allowed to signal the daemon can send
// (`kill -USR1`, `process._debugProcess(pid)`, a logrotate-style USR1): that
// was code execution as root. SIGUSR2 would simply kill the daemon (default
// action) unless a report/heap-snapshot flag claims it.
//
// A JS listener for a signal makes libuv install its own sigaction for it,
// which replaces the handler Node's inspector registered at startup (checked
// on Node 20: with a listener, `kill -USR1` opens nothing on 9229 and prints
// no "Debugger listening"; test/daemon-signals.ts checks it on the built
// daemon, with its worker thread running). Signals are process-wide, so this
// covers the worker thread too; a worker has no inspector of its own.
//
// This module must be the first import of host/tmemd.ts: ES modules are
// evaluated in import order, so the listeners exist before koffi, the data
// plane or any socket does. But no module is evaluated before the whole
// import graph is loaded and linked, so until then (hundreds of ms after
// exec: test/daemon-bootstrap-signal.ts counts 300-400 inspector starts in a
// 1/ms flood) Node's own SIGUSR1 handler is in place: a SIGUSR1 then
// starts the inspector on --inspect-port's address. Node 20 has no
// --disable-sigusr1 (Node 22.14 does), so tmemd's interpreter line (which
// npm's bin, the unit and vm-images' Daemon run) gives it INSPECTOR_BLACKHOLE, an address of TEST-NET-1
// (RFC 5737) that no host has: the inspector then fails to bind ("Starting
// inspector on 192.0.2.1:9229 failed: address not available") and nothing
// listens (test/daemon-bootstrap-signal.ts floods a starting daemon with
// SIGUSR1). A tmemd started as `node dist/host/tmemd.js` has no such flag,
// so assertNoInspector() runs again once the daemon is ready and refuses to
// go on if the inspector is open, whatever opened it. (A SIGUSR1 before Node
// installs any handler, in the first milliseconds after exec, takes the
// default action and ends the process: it cannot open it.)
//
// The other debug doors: --inspect, --inspect-brk, --inspect-wait (on the
// command line or in NODE_OPTIONS) are refused unless TMEMD_ALLOW_INSPECTOR=1
// says a developer wants them; inspector.open() is called nowhere in tmemd,
// and no request of the control socket or of a guest evaluates code.
import inspector from 'node:inspector';

/**
 * The inspector address tmemd is started with (`--inspect-port=`, in the
 * interpreter line of host/tmemd.ts): TEST-NET-1, which no host has, so an
 * inspector that a bootstrap-time SIGUSR1 tries to start cannot listen.
 */
export const INSPECTOR_BLACKHOLE = '192.0.2.1:9229';

/** Set to 1 to run tmemd under --inspect deliberately (development only). */
export const ALLOW_INSPECTOR_ENV = 'TMEMD_ALLOW_INSPECTOR';

const INSPECT_FLAG = /^--(inspect|inspect-brk|inspect-wait|debug|debug-brk)(=.*)?$/;

/** The debugger-opening flags among `execArgv` and the words of NODE_OPTIONS. */
export function inspectorFlags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const words = (nodeOptions ?? '').split(/\s+/).map((w) => w.replace(/^["']|["']$/g, ''));
  return [...execArgv, ...words].filter((w) => INSPECT_FLAG.test(w));
}

/** One line per interval at most: a flood of signals must not flood the log. */
let sink: (msg: string) => void = (m) => process.stderr.write(`tmemd warn: ${m}\n`);
const seen: Record<string, number> = {};
let lastLine = -Infinity;
const SIGNAL_LOG_INTERVAL_MS = 10_000;

let flushTimer: NodeJS.Timeout | null = null;

function flushSignals(): void {
  const counts = Object.entries(seen).map(([s, n]) => `${s} x${n}`);
  if (counts.length === 0) return;
  for (const k of Object.keys(seen)) delete seen[k];
  lastLine = Date.now();
  sink(`ignored ${counts.join(', ')} (tmemd has no debugger or report on signals; stop it with SIGTERM)`);
}

function onDebugSignal(sig: 'SIGUSR1' | 'SIGUSR2'): void {
  seen[sig] = (seen[sig] ?? 0) + 1;
  const wait = lastLine + SIGNAL_LOG_INTERVAL_MS - Date.now();
  if (wait <= 0) flushSignals();
  else if (!flushTimer) {
    // The ones that arrive while muted are counted in one line when the interval ends.
    flushTimer = setTimeout(() => {
      flushTimer = null;
      flushSignals();
    }, wait);
    flushTimer.unref();
  }
}

process.on('SIGUSR1', () => onDebugSignal('SIGUSR1'));
process.on('SIGUSR2', () => onDebugSignal('SIGUSR2'));

/** Where the signal notice goes once the daemon's logger exists (log.warn). */
export function setDebugGuardSink(s: (msg: string) => void): void {
  sink = s;
}

/**
 * Throws with a one-line message if the inspector is open or was asked for,
 * unless TMEMD_ALLOW_INSPECTOR=1.
 */
export function assertNoInspector(env: NodeJS.ProcessEnv = process.env): void {
  if (env[ALLOW_INSPECTOR_ENV] === '1') return;
  const flags = inspectorFlags(process.execArgv, env.NODE_OPTIONS);
  const url = inspector.url();
  if (url === undefined && flags.length === 0) return;
  if (url !== undefined) inspector.close();
  const why = flags.length > 0 ? `${flags.join(' ')} given (command line or NODE_OPTIONS)` : `the Node inspector is open (${url})`;
  throw new Error(`refusing to run with a debugger: ${why}; anyone reaching it runs code as this daemon. Set ${ALLOW_INSPECTOR_ENV}=1 only on a development machine`);
}
