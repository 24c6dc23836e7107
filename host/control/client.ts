// The client side of the control socket (host/control/server.ts): one JSON
// request line, one reply line. Used by tmemctl and by tests.
import { connect } from 'node:net';

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
      const why = e.code === 'ENOENT' ? 'no such socket (is tmemd running, with this --control?)' : e.code === 'ECONNREFUSED' ? 'connection refused (tmemd is not running)' : e.code === 'EACCES' ? 'permission denied' : e.message;
      reject(new Error(`cannot reach tmemd on ${path}: ${why}`));
    });
    s.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`tmemd on ${path} closed the connection without answering`));
    });
  });
}

