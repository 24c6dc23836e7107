// The service manager's side channel (sd_notify(3)), written to $NOTIFY_SOCKET
// directly, one datagram per call, as libsystemd does: READY=1 once every
// listener serves, STATUS= lines for `systemctl status`, STOPPING=1 when a
// signal stops the daemon, and WATCHDOG=1 every WATCHDOG_USEC/2 when the unit
// has WatchdogSec=. Without NOTIFY_SOCKET every call does nothing.
//
// The watchdog pings come from a timer on the main thread's event loop, so a
// stuck event loop (the thread that answers QEMU's control messages) stops
// them and systemd restarts the daemon; the data-plane worker has its own
// stall handling (host/vhost-user).
import { close as closeFd } from '../../native/fd.js';
import * as notify from '../../native/notify.js';
import type { Logger } from '../log.js';

/** What Notifier needs of the OS (native/notify.ts in the daemon). */
export interface NotifyIo {
  unixAddress(addr: string): Buffer;
  datagramSocket(): number;
  sendDatagram(fd: number, addr: Buffer, data: Uint8Array): void;
  close(fd: number): void;
}

const nativeIo: NotifyIo = {
  unixAddress: notify.unixAddress,
  datagramSocket: notify.datagramSocket,
  sendDatagram: notify.sendDatagram,
  close: (fd) => {
    try {
      closeFd(fd);
    } catch {
      /* closing at exit */
    }
  },
};

/** STATUS= text is one line: newlines would start new assignments. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 1000);
}

export class Notifier {
  private fd = -1;
  private addr: Buffer | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private warned = false;

  /** From NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; `enabled` is false when systemd asked for nothing. */
  constructor(
    private readonly log: Logger,
    env: NodeJS.ProcessEnv = process.env,
    private readonly io: NotifyIo = nativeIo,
    pid: number = process.pid,
  ) {
    const where = env.NOTIFY_SOCKET;
    if (where !== undefined && where !== '') {
      try {
        this.addr = io.unixAddress(where);
        this.fd = io.datagramSocket();
      } catch (e) {
        this.addr = null;
        log.warn(`NOTIFY_SOCKET=${where}: cannot notify the service manager: ${(e as Error).message}`);
      }
    }
    const usecText = env.WATCHDOG_USEC;
    if (this.addr !== null && usecText !== undefined) {
      const usec = /^\d{1,15}$/.test(usecText) ? Number(usecText) : NaN;
      const forUs = env.WATCHDOG_PID === undefined || env.WATCHDOG_PID === String(pid);
      if (!Number.isFinite(usec) || usec === 0) log.warn(`WATCHDOG_USEC='${usecText}' is not a positive number of microseconds: no watchdog pings`);
      else if (forUs) {
        const ms = Math.max(1, Math.floor(usec / 2000));
        this.watchdog = setInterval(() => this.send('WATCHDOG=1'), ms);
        this.watchdog.unref();
        log.info(`systemd watchdog: pinging every ${ms} ms (WatchdogSec=${usec / 1e6} s)`);
      }
    }
    // sd_notify(unset_environment=0) leaves NOTIFY_SOCKET; the watchdog variables are for this process only.
    delete env.WATCHDOG_USEC;
    delete env.WATCHDOG_PID;
  }

  get enabled(): boolean {
    return this.addr !== null;
  }

  /** The daemon serves every listener (systemd's start job completes). */
  ready(status: string): void {
    this.send(`READY=1\nSTATUS=${oneLine(status)}`);
  }

  status(status: string): void {
    this.send(`STATUS=${oneLine(status)}`);
  }

  /** A stop signal arrived: systemd shows "deactivating" instead of taking the exit for a crash. */
  stopping(status = 'stopping'): void {
    this.stopWatchdog();
    this.send(`STOPPING=1\nSTATUS=${oneLine(status)}`);
  }

  /** The daemon is about to exit: no more pings, socket closed. */
  close(): void {
    this.stopWatchdog();
    if (this.fd >= 0) this.io.close(this.fd);
    this.fd = -1;
    this.addr = null;
  }

  private stopWatchdog(): void {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  /** Never throws: a lost notification is logged once (systemd then times the start out, which says the rest). */
  private send(text: string): void {
    if (this.addr === null || this.fd < 0) return;
    try {
      this.io.sendDatagram(this.fd, this.addr, Buffer.from(text, 'utf8'));
    } catch (e) {
      if (!this.warned) this.log.warn(`cannot notify the service manager (${text.split('\n')[0]}): ${(e as Error).message}`);
      this.warned = true;
    }
  }
}
