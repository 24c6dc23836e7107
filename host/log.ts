// A tiny levelled logger. The daemon logs one line per event to stderr, with a
// level filter set from the command line; tests pass their own sink.
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const rank: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export interface Logger {
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
}

export function isLogLevel(s: string): s is LogLevel {
  return Object.prototype.hasOwnProperty.call(rank, s);
}

/** `sink` gets each line and its level (host/service/journal.ts turns the level into a journald priority). */
export function createLogger(level: LogLevel, sink: (line: string, level: LogLevel) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const at = (lvl: LogLevel) => (msg: string) => {
    if (rank[lvl] <= rank[level]) sink(`tmemd ${lvl}: ${msg}`, lvl);
  };
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}

export const silentLogger: Logger = { error() {}, warn() {}, info() {}, debug() {} };

export interface RateLimit {
  /** Messages let through per interval (printk_ratelimit_burst). */
  readonly burst: number;
  /** The interval in ms (printk_ratelimit). */
  readonly intervalMs: number;
}

/**
 * Per VM: 100 lines per minute. The sustained rate is the kernel's
 * printk_ratelimit default (10 per 5 s); the larger burst keeps every line of
 * a QEMU start, a reboot or a handful of failed attempts (a few lines each),
 * which an operator needs whole.
 */
export const VM_LOG_RATE_LIMIT: RateLimit = { burst: 100, intervalMs: 60_000 };

export interface RateLimitClock {
  now(): number;
  /** Calls fn once after ms; must not keep the process alive. */
  later(fn: () => void, ms: number): void;
}

const realClock: RateLimitClock = {
  now: () => Date.now(),
  later: (fn, ms) => {
    setTimeout(fn, ms).unref();
  },
};

/**
 * A logger that lets at most `burst` error/warn/info lines through per
 * interval and drops the rest, like the kernel's printk_ratelimit: whoever
 * can make the daemon log (a front-end connecting 60,000 times) cannot fill
 * the disk or drown other VMs' lines. When a window in which lines were
 * dropped ends, one line says how many ("suppressed K messages"); it is
 * written by a timer, so a flood that stops is still accounted for.
 * Debug lines are not limited: the operator asked for every one.
 */
export function rateLimited(log: Logger, what: string, limit: RateLimit = VM_LOG_RATE_LIMIT, clock: RateLimitClock = realClock): Logger {
  let windowStart = -Infinity;
  let passed = 0;
  let suppressed = 0;
  let timerSet = false;
  const report = (): void => {
    if (suppressed > 0) {
      log.warn(`${what}: suppressed ${suppressed} log message${suppressed === 1 ? '' : 's'} (more than ${limit.burst} in ${limit.intervalMs / 1000} s)`);
      suppressed = 0;
    }
  };
  const onTimer = (): void => {
    timerSet = false;
    const left = windowStart + limit.intervalMs - clock.now();
    if (left <= 0) report();
    else if (suppressed > 0) {
      timerSet = true;
      clock.later(onTimer, left);
    }
  };
  const at =
    (lvl: 'error' | 'warn' | 'info') =>
    (msg: string): void => {
      const now = clock.now();
      if (now - windowStart >= limit.intervalMs) {
        report();
        windowStart = now;
        passed = 0;
      }
      if (passed < limit.burst) {
        passed++;
        log[lvl](msg);
        return;
      }
      suppressed++;
      if (!timerSet) {
        timerSet = true;
        clock.later(onTimer, Math.max(0, windowStart + limit.intervalMs - now));
      }
    };
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: (msg) => log.debug(msg) };
}
