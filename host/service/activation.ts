// systemd socket activation (sd_listen_fds(3), sd_listen_fds_with_names):
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES become one inherited listening
// socket per VM, matched by name (FileDescriptorName=%i in tmemd@.socket).
//
// The rule: when systemd started tmemd with sockets (LISTEN_PID is ours), each
// VM configured with socket=PATH takes the socket named after it instead of
// creating PATH, and that socket must be the one bound at PATH. A VM without
// its socket, a socket that is not a listening Unix stream socket, or one no
// VM claims is an error: tmemd exits with one line rather than run with a VM
// whose QEMU would wait forever in a socket's backlog. VMs given as fd=N
// keep their fd. Without LISTEN_PID, nothing changes.
import { resolve } from 'node:path';
import type { DaemonConfig, VmSpec } from '../config.js';
import type { Logger } from '../log.js';

/** The first inherited fd (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;
/** More would be a misconfiguration, and the names travel in one variable. */
const MAX_LISTEN_FDS = 4096;

export class ActivationError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'ActivationError';
  }
}

export interface ListenFd {
  readonly fd: number;
  /** FileDescriptorName= of its socket unit (systemd's default: the socket unit's name); 'unknown' without LISTEN_FDNAMES. */
  readonly name: string;
}

/**
 * The fds systemd passed to this process, or null when it passed none to us
 * (no LISTEN_PID, or another process's: as sd_listen_fds). Like sd_listen_fds(unset=1), the
 * three variables are removed from the environment whatever the outcome, so
 * nothing started later (the data-plane worker) takes them for its own.
 * Malformed values throw ActivationError.
 */
export function takeListenFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): ListenFd[] | null {
  const pidText = env.LISTEN_PID;
  const fdsText = env.LISTEN_FDS;
  const namesText = env.LISTEN_FDNAMES;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  // As libsystemd: without LISTEN_PID the fds may be anyone's, so none are taken.
  if (pidText === undefined) return null;
  if (!/^[1-9]\d{0,9}$/.test(pidText)) throw new ActivationError(`LISTEN_PID='${pidText}' is not a process id`);
  if (Number(pidText) !== pid) return null;
  if (fdsText === undefined) throw new ActivationError('LISTEN_PID is this process but LISTEN_FDS is not set');
  if (!/^\d{1,5}$/.test(fdsText) || Number(fdsText) > MAX_LISTEN_FDS) throw new ActivationError(`LISTEN_FDS='${fdsText}' is not a number of sockets (0..${MAX_LISTEN_FDS})`);
  const n = Number(fdsText);
  let names: string[];
  if (namesText === undefined) names = Array.from({ length: n }, () => 'unknown');
  else {
    names = n === 0 && namesText === '' ? [] : namesText.split(':');
    if (names.length !== n) throw new ActivationError(`LISTEN_FDNAMES='${namesText}' names ${names.length} socket(s) but LISTEN_FDS=${n}`);
  }
  return names.map((name, i) => ({ fd: LISTEN_FDS_START + i, name }));
}

/** What applySocketActivation needs of the OS (native/ in the daemon; fakes in tests). */
export interface ActivationIo {
  /** Throws unless fd is a listening AF_UNIX stream socket; makes it NONBLOCK|CLOEXEC. */
  checkListeningUnixSocket(fd: number): void;
  /** Path ('@name' if abstract) the socket is bound to, or null. */
  boundUnixAddress(fd: number): string | null;
}

function describeNames(fds: readonly ListenFd[]): string {
  return fds.length === 0 ? 'none' : fds.map((f) => f.name).join(':');
}

/**
 * The config with each socket=PATH VM moved onto its inherited socket.
 * Throws ActivationError (one line naming the VM or socket) when a VM has no
 * socket, a socket is not what it must be, or a socket is left over.
 */
export function applySocketActivation(cfg: DaemonConfig, fds: readonly ListenFd[], io: ActivationIo, log: Logger): DaemonConfig {
  const byName = new Map<string, ListenFd>();
  for (const f of fds) {
    if (byName.has(f.name)) throw new ActivationError(`systemd passed two sockets named '${f.name}' (fds ${byName.get(f.name)!.fd} and ${f.fd}; LISTEN_FDNAMES=${describeNames(fds)}): give each tmemd@.socket its own FileDescriptorName=`);
    byName.set(f.name, f);
  }
  const used = new Set<number>();
  for (const v of cfg.vms) if (v.fd !== null) used.add(v.fd);
  const vms: VmSpec[] = [];
  // Logged once every check passed: a failed start says one line, the error.
  const lines: [level: 'info' | 'warn', msg: string][] = [];
  for (const v of cfg.vms) {
    if (v.socket === null) {
      vms.push(v);
      continue;
    }
    const f = byName.get(v.name);
    if (f === undefined || used.has(f.fd)) {
      throw new ActivationError(
        `vm ${v.name}: started by systemd with ${fds.length} socket(s) (LISTEN_FDNAMES=${describeNames(fds)}) but none named '${v.name}': start its socket unit (systemctl start tmemd@${v.name}.socket) before tmemd, or name its socket ${v.name} (FileDescriptorName=${v.name})`,
      );
    }
    try {
      io.checkListeningUnixSocket(f.fd);
    } catch (e) {
      throw new ActivationError(`vm ${v.name}: systemd's socket '${f.name}' (fd ${f.fd}) is not a listening Unix stream socket (ListenStream=/path in its unit): ${(e as Error).message}`);
    }
    let bound: string | null;
    try {
      bound = io.boundUnixAddress(f.fd);
    } catch (e) {
      throw new ActivationError(`vm ${v.name}: cannot tell where systemd's socket '${f.name}' (fd ${f.fd}) is bound: ${(e as Error).message}`);
    }
    const want = resolve(v.socket);
    if (bound !== want) {
      throw new ActivationError(`vm ${v.name}: systemd's socket '${f.name}' (fd ${f.fd}) is bound to ${bound ?? 'no address'}, not to the VM's socket=${want}: make ListenStream= and socket= the same path`);
    }
    const a = v.socketAccess;
    if (a.mode !== null || a.owner !== null || a.group !== null) {
      lines.push(['warn', `vm ${v.name}: socket-mode, socket-owner and socket-group are ignored: systemd created ${want} (set SocketMode=, SocketUser=, SocketGroup= in its socket unit)`]);
    }
    used.add(f.fd);
    lines.push(['info', `vm ${v.name}: socket ${want} from systemd (fd ${f.fd})`]);
    vms.push({ ...v, socket: null, fd: f.fd });
  }
  const extra = fds.filter((f) => !used.has(f.fd));
  if (extra.length > 0) {
    const f = extra[0]!;
    throw new ActivationError(
      `systemd passed socket '${f.name}' (fd ${f.fd})${extra.length > 1 ? ` and ${extra.length - 1} more` : ''} but no VM is named '${f.name}': add the VM to tmemd's configuration, or stop and disable tmemd@${f.name}.socket`,
    );
  }
  for (const [level, msg] of lines) log[level](msg);
  return { ...cfg, vms };
}
