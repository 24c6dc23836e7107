// What tmemd does for a service manager, in one call from host/tmemd.ts:
// the sockets systemd passed (activation.ts) and the notification channel
// (notify.ts). Journald log prefixes are the logger's sink (journal.ts).
import * as native from '../../native/index.js';
import { boundUnixAddress } from '../../native/notify.js';
import type { DaemonConfig } from '../config.js';
import type { Logger } from '../log.js';
import { applySocketActivation, takeListenFds } from './activation.js';
import { Notifier } from './notify.js';

export { ActivationError } from './activation.js';
export { Notifier } from './notify.js';
export { stderrSink } from './journal.js';

/**
 * The config with systemd's sockets in place of the VM sockets (when tmemd
 * was socket-activated) and the notifier. Throws ActivationError with one
 * line when the sockets do not match the config; the notifier has then
 * already told systemd why (STATUS=).
 */
export function startService(cfg: DaemonConfig, log: Logger, env: NodeJS.ProcessEnv = process.env): { config: DaemonConfig; notifier: Notifier } {
  const notifier = new Notifier(log, env);
  try {
    const fds = takeListenFds(env);
    if (fds === null) {
      // Started by systemd (INVOCATION_ID) without sockets: tmemd creates the VM sockets itself,
      // which under the shipped unit (ProtectSystem=strict) fails; say what was meant.
      if (env.INVOCATION_ID !== undefined && cfg.vms.some((v) => v.socket !== null)) {
        log.warn('started by systemd without socket activation: creating the VM sockets here; with tmemd@.socket units, start those (systemctl start tmemd@VM.socket) and tmemd gets them');
      }
      return { config: cfg, notifier };
    }
    const io = { checkListeningUnixSocket: native.checkListeningUnixSocket, boundUnixAddress };
    return { config: applySocketActivation(cfg, fds, io, log), notifier };
  } catch (e) {
    notifier.status(`failed: ${(e as Error).message}`);
    notifier.close();
    throw e;
  }
}
