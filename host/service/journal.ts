// journald-friendly log lines. When stderr is the journal's stream
// (JOURNAL_STREAM names its device and inode, systemd.exec(5)), each line
// starts with its syslog priority, "<3>" for errors up to "<7>" for debug
// (sd-daemon(3)): journald strips the prefix and stores the priority, so
// `journalctl -u tmemd -p warning` shows tmemd's warnings and errors.
// Anywhere else (a terminal, a pipe, a file) lines stay as they are.
import { fstatSync } from 'node:fs';
import type { LogLevel } from '../log.js';

/** sd-daemon.h: SD_ERR 3, SD_WARNING 4, SD_INFO 6, SD_DEBUG 7. */
export const SYSLOG_PRIORITY: Readonly<Record<LogLevel, number>> = { error: 3, warn: 4, info: 6, debug: 7 };

/** Whether fd (stderr) is the stream JOURNAL_STREAM ("DEV:INODE") names. */
export function isJournalStream(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const js = env.JOURNAL_STREAM;
  if (js === undefined) return false;
  const m = /^(\d+):(\d+)$/.exec(js);
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** A log sink (createLogger) writing to stderr, with priority prefixes when stderr is the journal. */
export function stderrSink(env: NodeJS.ProcessEnv = process.env, write: (s: string) => void = (s) => process.stderr.write(s)): (line: string, level: LogLevel) => void {
  if (!isJournalStream(env)) return (line) => write(line + '\n');
  return (line, level) => write(`<${SYSLOG_PRIORITY[level]}>${line}\n`);
}
