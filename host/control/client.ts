// The client side of the control socket (host/control/server.ts): one JSON
// request line, one reply line. Used by tmemctl and by tests.
import { lstatSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';

/**
 * What is wrong with the folder of a socket path, in words (null: nothing
 * found): a missing folder makes bind(2) and libuv report EACCES or ENOENT,
 * which do not say it.
 */
export function folderProblem(path: string): string | null {
  const dir = dirname(resolve(path));
  try {
    if (!statSync(dir).isDirectory()) return `${dir} is not a folder`;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `the folder ${dir} does not exist`;
    if (code === 'ENOTDIR') return `a part of ${dir} is not a folder`;
    if (code === 'EACCES') return `the folder ${dir} cannot be reached (permission denied)`;
  }
  return null;
}

/** What is wrong with a path given as a socket to connect to, in words (null: nothing found). */
export function socketPathProblem(path: string): string | null {
  const f = folderProblem(path);
  if (f !== null) return f;
  try {
    const st = lstatSync(path);
    if (!st.isSocket()) return `${path} is not a socket (it is ${st.isFile() ? 'a regular file' : st.isDirectory() ? 'a folder' : st.isSymbolicLink() ? 'a symbolic link' : 'not a socket'})`;
  } catch {
    /* absent: the caller's usual words (no such socket) say it */
  }
  return null;
}

export interface ControlResponse {
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** One request, one reply line. */
export function requestDaemon(path: string, req: Record<string, unknown>, timeoutMs: number): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer from tmemd on ${path} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(JSON.stringify({ id: 1, ...req }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      s.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)));
      } catch (e) {
        reject(new Error(`tmemd sent a reply that is not JSON: ${(e as Error).message}`));
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const problem = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'EACCES' || e.code === 'ENOTSOCK' ? socketPathProblem(path) : null;
      const why =
        problem ??
        (e.code === 'ENOENT' ? 'no such socket (is tmemd running, with this --control?)' : e.code === 'ECONNREFUSED' ? 'connection refused (tmemd is not running)' : e.code === 'EACCES' ? 'permission denied' : e.message);
      reject(new Error(`cannot reach tmemd on ${path}: ${why}`));
    });
    s.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`tmemd on ${path} closed the connection without answering`));
    });
  });
}

