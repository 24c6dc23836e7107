// One listening socket per VM: created from a path (a stale socket file is
// replaced; anything else at that path is an error) or inherited as an fd
// (libvirt hands sockets over that way). One connection per socket at a
// time: while a guest is connected, a second connection is accepted and
// closed at once with a log line.
//
// Everything a front-end can make happen per connection (connect, refusal,
// protocol errors, leaving) is logged through one rate limiter per VM
// (log.ts rateLimited): a front-end that reconnects in a loop costs one
// "suppressed K messages" line per interval, not a line per connection.
import { lstatSync, unlinkSync } from 'node:fs';
import { type Logger, rateLimited } from '../log.js';
import type { VhostUserDevice } from './device.js';
import { type ConnIo, VhostUserConnection, type VringChannel } from './connection.js';
import { formatSize } from '../units.js';

/** Mode and numeric owner/group for a socket file tmemd creates (native.SocketAccess). */
export interface SocketAccess {
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
}

/** The OS calls of a listener (native/ in the daemon). */
export interface ListenerIo extends ConnIo {
  listenUnix(path: string, backlog?: number, access?: SocketAccess): number;
  /** SO_PEERCRED of a connection, for the log line naming who connected. */
  peerCredentials?(fd: number): { pid: number; uid: number; gid: number };
  acceptConnection(listenFd: number): number | null;
  checkListeningUnixSocket(fd: number): void;
}

/** Readiness of fds on the event loop (native.FdWatcher). */
export interface Watcher {
  watch(fd: number, onReady: (events: number) => void): void;
  unwatch(fd: number): void;
}

export type ListenOn = { readonly path: string } | { readonly fd: number };

export interface ListenerOptions {
  readonly on: ListenOn;
  readonly device: VhostUserDevice;
  /** The vring worker every connection's commands go to. */
  readonly vrings: VringChannel;
  readonly io: ListenerIo;
  readonly watcher: Watcher;
  readonly log: Logger;
  /**
   * Whether a process listens on a socket path, so that a live socket is
   * never replaced. It must not connect: the daemon listening there would
   * take the probe as its guest and refuse a QEMU arriving meanwhile
   * (tmemd asks the kernel: native.unixPathHasListener).
   */
  readonly inUse?: (path: string) => boolean;
  /** Mode, owner, group of a socket file created at `on.path`. */
  readonly access?: SocketAccess;
  /** Prefix of its log lines (default `vm NAME KIND`). */
  readonly label?: string;
}

export class ListenerError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'ListenerError';
  }
}

export class VhostUserListener {
  private readonly o: ListenerOptions;
  private listenFd = -1;
  /** dev/ino of the socket file we created, so that exit removes ours and nothing else. */
  private created: { path: string; dev: number; ino: number } | null = null;
  private conn: VhostUserConnection | null = null;
  private stopped = false;
  /** This VM's lines, rate-limited: see the file comment. */
  private readonly log: Logger;
  refused = 0;
  accepted = 0;

  constructor(o: ListenerOptions) {
    this.o = o;
    this.log = rateLimited(o.log, o.label ?? `vm ${o.device.vm} ${o.device.kind}`);
  }

  /** `/run/vm1.sock` or `fd=5`. */
  get where(): string {
    return 'path' in this.o.on ? this.o.on.path : `fd=${this.o.on.fd}`;
  }

  get connection(): VhostUserConnection | null {
    return this.conn;
  }

  /** Prefix of this listener's log lines: the option, else `vm NAME KIND`. */
  private get label(): string {
    return this.o.label ?? `vm ${this.o.device.vm} ${this.o.device.kind}`;
  }

  /** Creates (or adopts) the listening socket and starts accepting. Throws ListenerError with a clear message. */
  start(): void {
    const { io, on } = this.o;
    if ('path' in on) {
      removeStaleSocket(on.path, this.o.inUse);
      try {
        this.listenFd = io.listenUnix(on.path, undefined, this.o.access);
      } catch (e) {
        throw new ListenerError(`cannot listen on ${on.path}: ${(e as Error).message}`);
      }
      try {
        const st = lstatSync(on.path);
        this.created = { path: on.path, dev: st.dev, ino: st.ino };
      } catch {
        /* vanished at once: nothing to remove later */
      }
    } else {
      try {
        io.checkListeningUnixSocket(on.fd);
      } catch (e) {
        throw new ListenerError(`fd ${on.fd} is not a listening Unix stream socket: ${(e as Error).message}`);
      }
      this.listenFd = on.fd;
    }
    this.o.watcher.watch(this.listenFd, () => this.onAcceptable());
  }

  /** The listening socket is readable: take one connection (the watcher fires again if more wait). Never throws. */
  private onAcceptable(): void {
    if (this.stopped) return;
    let fd: number | null;
    try {
      fd = this.o.io.acceptConnection(this.listenFd);
    } catch (e) {
      this.log.warn(`${this.label}: accept on ${this.where} failed: ${(e as Error).message}`);
      return;
    }
    if (fd === null) return;
    if (this.conn && !this.conn.closed) {
      this.refused++;
      this.log.warn(`${this.label}: refused a second connection on ${this.where}${this.peer(fd)}: a guest is already connected`);
      this.closeQuietly(fd);
      return;
    }
    this.adopt(fd);
  }

  /** " from pid P uid U" when the OS says who connected. */
  private peer(fd: number): string {
    try {
      const p = this.o.io.peerCredentials?.(fd);
      return p ? ` from pid ${p.pid} uid ${p.uid}` : '';
    } catch {
      return '';
    }
  }

  private adopt(fd: number): void {
    const { io, device, watcher, vrings } = this.o;
    const log = this.log;
    const conn = new VhostUserConnection({
      fd,
      io,
      device,
      vrings,
      log,
      label: this.label,
      unwatch: (cfd) => watcher.unwatch(cfd),
      rewatch: (cfd) => watcher.watch(cfd, () => conn.onReadable()),
      onClose: (c) => {
        if (this.conn === c) this.conn = null;
        log.info(`${this.label}: guest left (RAM ${formatSize(c.guestRamBytes)}${device.describe ? `, ${device.describe()}` : ''})`);
      },
    });
    // Taken now, so that a second front-end is refused while the worker opens this one.
    this.conn = conn;
    this.accepted++;
    // Messages are read at once: the worker runs their commands after the open, in order.
    try {
      conn.open().catch((e: unknown) => conn.close(`cannot add the guest: ${(e as Error).message}; connection closed`, 'error'));
    } catch (e) {
      // the device refused it before anything was posted
      this.conn = null;
      log.error(`${this.label}: cannot add the guest: ${(e as Error).message}; connection closed`);
      this.closeQuietly(fd);
      return;
    }
    try {
      watcher.watch(fd, () => conn.onReadable());
    } catch (e) {
      conn.close(`cannot watch the connection: ${(e as Error).message}`, 'error');
      return;
    }
    log.info(`${this.label}: guest connected on ${this.where}${this.peer(fd)}${device.describe ? ` (${device.describe()})` : ''}`);
  }

  private closeQuietly(fd: number): void {
    try {
      this.o.io.close(fd);
    } catch {
      /* ignore */
    }
  }

  /** Closes the connection (the guest goes), stops listening and removes the socket file we created. Idempotent. */
  stop(reason = 'daemon stopping'): void {
    if (this.stopped) return;
    this.stopped = true;
    this.conn?.close(reason);
    this.conn = null;
    if (this.listenFd >= 0) {
      try {
        this.o.watcher.unwatch(this.listenFd);
      } catch {
        /* ignore */
      }
      this.closeQuietly(this.listenFd);
      this.listenFd = -1;
    }
    if (this.created) {
      try {
        const st = lstatSync(this.created.path);
        if (st.isSocket() && st.dev === this.created.dev && st.ino === this.created.ino) unlinkSync(this.created.path);
      } catch {
        /* already gone */
      }
      this.created = null;
    }
  }
}

/**
 * A leftover socket file at `path` is removed; a non-socket is never touched,
 * nor a socket that `inUse` finds someone listening on (another daemon).
 */
export function removeStaleSocket(path: string, inUse?: (path: string) => boolean): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ListenerError(`cannot check ${path}: ${(e as Error).message}`);
  }
  if (!st.isSocket()) throw new ListenerError(`${path} exists and is not a socket; refusing to replace it`);
  if (inUse?.(path)) throw new ListenerError(`${path} is in use: another process listens on it`);
  try {
    unlinkSync(path);
  } catch (e) {
    throw new ListenerError(`cannot remove the stale socket ${path}: ${(e as Error).message}`);
  }
}
