// One vhost-user connection = one device instance of one VM. Reads
// front-end messages from a non-blocking Unix socket with recvmsg (never
// through a net.Socket, which would drop the fds), checks every header and
// payload, and dispatches on the request number to one function per message,
// named after the spec (libvhost-user style). This is the protocol table and
// the only place a message is validated; a valid message that changes rings
// or memory becomes one command to the vring worker (VringChannel, client.ts),
// whose reply (GET_VRING_BASE's index, an error) comes back asynchronously:
// meanwhile this connection reads nothing more (QEMU's messages are handled
// in order) and the event loop serves everyone else. A worker that does not
// answer within its timeout closes this connection with a log line.
//
// Negotiation state (acked features and protocol features, owner) lives
// here; queue state, guest memory and the device's state live in the worker.
//
// Failure policy: an unknown or malformed message, or a command the worker
// refuses, gets one clear log line and closes this connection only (every fd
// received and not handed over is closed). Nothing escapes the readiness
// callback.
//
// Framing: the header (12 bytes) is read on its own, then exactly `size`
// payload bytes, so one recvmsg never runs into the next message (whose fds
// would otherwise arrive early). A message may arrive in pieces; its fds come
// with its first bytes.
import type { Logger } from '../log.js';
import type { DeviceConnection, MemoryRegion, VhostUserDevice, VringAddr } from './device.js';
import type { OpenOptions } from './client.js';
import { formatSize } from '../units.js';
import {
  bit,
  bitsOf,
  decodeConfig,
  decodeHeader,
  decodeMemTable,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeMsg,
  encodeU64,
  encodeVringState,
  memTableRegionCount,
  memTableSize,
  requestName,
  VHOST_MEMORY_BASELINE_NREGIONS,
  VHOST_USER_CONFIG_HDR_SIZE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_HDR_SIZE,
  VHOST_USER_MAX_CONFIG_SIZE,
  VHOST_USER_MAX_FDS,
  VHOST_USER_MAX_PAYLOAD,
  VHOST_USER_MEMORY_HDR_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_FLAGS,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_U64_SIZE,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VHOST_USER_VRING_ADDR_SIZE,
  VHOST_USER_VRING_STATE_SIZE,
  VhostUserProtocolFeature,
  VhostUserRequest,
  type VhostUserMsg,
} from './messages.js';

/** The OS calls a connection needs (native/ in the daemon; a fake in unit tests). */
export interface ConnIo {
  /** Bytes read into buf (0 = EOF), or null when nothing is available (EAGAIN); fds received are appended to fdsOut. */
  recvMsg(fd: number, buf: Uint8Array, fdsOut: number[], maxFds?: number): number | null;
  /** Bytes sent. */
  sendMsg(fd: number, buf: Uint8Array, fds?: number[]): number;
  close(fd: number): void;
  /** Checks that a received fd is an eventfd and makes it non-blocking; throws if it is not one. */
  adoptEventfd(fd: number): void;
}

/** A message the engine refuses: logged, then the connection is closed. */
export class ProtocolError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'ProtocolError';
  }
}

/** Messages handled per readiness callback before yielding to the event loop. */
const MAX_MSGS_PER_WAKEUP = 64;
const U64_MAX = (1n << 64n) - 1n;
/** Largest queue size of a split ring (virtio 1.x 2.7). */
const MAX_QUEUE_SIZE = 32768;

/**
 * The vring worker as a connection uses it (DataPlane in client.ts; a fake
 * in unit tests). Each call is one command, run in order in the worker; a
 * rejection is the worker's one-line refusal or its timeout.
 */
export interface VringChannel {
  newInstanceId(): number;
  open(id: number, o: OpenOptions): Promise<void>;
  /** Never rejects (a late worker gets the close queued). */
  close(id: number): Promise<boolean>;
  setFeatures(id: number, features: bigint): Promise<void>;
  /** Takes the regions' fds. Resolves with the guest's RAM in bytes. */
  setMemTable(id: number, regions: readonly MemoryRegion[]): Promise<bigint>;
  setVringNum(id: number, queue: number, num: number): Promise<void>;
  setVringAddr(id: number, queue: number, addr: VringAddr): Promise<void>;
  setVringBase(id: number, queue: number, base: number): Promise<void>;
  getVringBase(id: number, queue: number): Promise<number>;
  /** Takes the fd (-1: none). */
  setVringFd(id: number, which: 'setVringKick' | 'setVringCall' | 'setVringErr', queue: number, fd: number): Promise<void>;
  setVringEnable(id: number, queue: number, enable: boolean): Promise<void>;
  reset(id: number): Promise<void>;
  control(id: number, name: string, args?: unknown): Promise<unknown>;
}

type Reply = Buffer | undefined;
type Handler = (m: VhostUserMsg) => Reply | Promise<Reply>;

export interface ConnectionOptions {
  readonly fd: number;
  readonly io: ConnIo;
  readonly device: VhostUserDevice;
  readonly vrings: VringChannel;
  readonly log: Logger;
  /** Prefix of every log line, e.g. `vm web1`. */
  readonly label: string;
  /** Stop watching the fd: when the connection closes (before its number can be reused), and while a worker command is in flight. */
  readonly unwatch?: (fd: number) => void;
  /** Watch the fd again once a worker command has answered (onReadable is then called when it is readable). */
  readonly rewatch?: (fd: number) => void;
  /** Called once when the connection is closed (by either side), after the device and the socket were closed. */
  readonly onClose?: (conn: VhostUserConnection, reason: string) => void;
}

export class VhostUserConnection implements DeviceConnection {
  readonly fd: number;
  readonly connectedAt = new Date();
  private readonly io: ConnIo;
  private readonly device: VhostUserDevice;
  private readonly vrings: VringChannel;
  private readonly log: Logger;
  private readonly label: string;
  private readonly onClose: ((conn: VhostUserConnection, reason: string) => void) | undefined;
  private readonly unwatch: ((fd: number) => void) | undefined;
  private readonly rewatch: ((fd: number) => void) | undefined;
  /** The instance id in the worker (one id per connection); -1 before open(). */
  private instanceId = -1;
  /** open() posted: a close must close the instance too. */
  private opened = false;
  private readonly numQueues: number;

  // message assembly
  private readonly hdr = Buffer.alloc(VHOST_USER_HDR_SIZE);
  private hdrHave = 0;
  private payload: Buffer | null = null;
  private payloadHave = 0;
  private pendingFds: number[] = [];
  private scheduled = false;
  /** The message whose worker command is in flight: nothing more is read until it is answered. */
  private busy: string | null = null;

  // negotiated state (what the spec calls the back-end's view of the front-end)
  private ackedFeatures: bigint | null = null;
  private ackedProtocolFeatures = 0n;
  private owner = false;
  /** The guest RAM the worker reported with the last SET_MEM_TABLE, for log lines (the worker owns the memory). */
  private lastRamBytes = 0n;
  private closedReason: string | null = null;
  /** Messages handled, by request name (for stats and tests). */
  readonly counts = new Map<string, number>();

  private readonly table: Readonly<Record<number, Handler>>;

  constructor(o: ConnectionOptions) {
    this.fd = o.fd;
    this.io = o.io;
    this.device = o.device;
    this.vrings = o.vrings;
    this.log = o.log;
    this.label = o.label;
    this.onClose = o.onClose;
    this.unwatch = o.unwatch;
    this.rewatch = o.rewatch;
    this.numQueues = this.device.numQueues();
    const R = VhostUserRequest;
    this.table = {
      [R.GET_FEATURES]: (m) => this.getFeatures(m),
      [R.SET_FEATURES]: (m) => this.setFeatures(m),
      [R.SET_OWNER]: (m) => this.setOwner(m),
      [R.RESET_OWNER]: (m) => this.resetOwner(m),
      [R.SET_MEM_TABLE]: (m) => this.setMemTable(m),
      [R.SET_VRING_NUM]: (m) => this.setVringNum(m),
      [R.SET_VRING_ADDR]: (m) => this.setVringAddr(m),
      [R.SET_VRING_BASE]: (m) => this.setVringBase(m),
      [R.GET_VRING_BASE]: (m) => this.getVringBase(m),
      [R.SET_VRING_KICK]: (m) => this.setVringKick(m),
      [R.SET_VRING_CALL]: (m) => this.setVringCall(m),
      [R.SET_VRING_ERR]: (m) => this.setVringErr(m),
      [R.GET_PROTOCOL_FEATURES]: (m) => this.getProtocolFeatures(m),
      [R.SET_PROTOCOL_FEATURES]: (m) => this.setProtocolFeatures(m),
      [R.GET_QUEUE_NUM]: (m) => this.getQueueNum(m),
      [R.SET_VRING_ENABLE]: (m) => this.setVringEnable(m),
      [R.GET_CONFIG]: (m) => this.getConfig(m),
      [R.SET_CONFIG]: (m) => this.setConfig(m),
      [R.RESET_DEVICE]: (m) => this.resetDevice(m),
    };
  }

  /** DeviceConnection: the worker instance's id. */
  get id(): number {
    return this.instanceId;
  }

  /** DeviceConnection: a device control op on this connection's worker instance. */
  control(op: string, args?: unknown): Promise<unknown> {
    if (this.closed || !this.opened) return Promise.reject(new Error('the guest is not connected'));
    return this.vrings.control(this.instanceId, op, args);
  }

  /**
   * Opens the device instance in the worker (the guest appears). Throws at
   * once if the device refuses (nothing posted: the caller closes the fd);
   * the returned promise rejects if the worker refuses (the caller closes
   * the connection). Messages may be read meanwhile: their commands run
   * after the open, in order.
   */
  open(): Promise<void> {
    this.instanceId = this.vrings.newInstanceId();
    const d = this.device;
    const params = d.open(this);
    this.opened = true;
    return this.vrings.open(this.instanceId, { vm: d.vm, kind: d.kind, numQueues: this.numQueues, policy: d.memoryPolicy(), params }).catch((e: unknown) => {
      // Refused by the worker: no instance to close. Not answered in time
      // (DataPlaneError answered = false): the worker still opens it when it
      // gets there, so `opened` stays and close() posts its close after it.
      if ((e as { answered?: boolean }).answered === false) throw e;
      if (this.opened) {
        this.opened = false;
        d.closed(this);
      }
      throw e;
    });
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** Guest RAM as the worker reported it at the last SET_MEM_TABLE. */
  get guestRamBytes(): bigint {
    return this.lastRamBytes;
  }

  get features(): bigint | null {
    return this.ackedFeatures;
  }

  get protocolFeatures(): bigint {
    return this.ackedProtocolFeatures;
  }

  get hasOwner(): boolean {
    return this.owner;
  }

  /** The message waiting for the worker, if any (stats, tests). */
  get waitingFor(): string | null {
    return this.busy;
  }

  // ---------------------------------------------------------------- reading

  /** The socket is readable (or hung up): read and handle what is there. Never throws. */
  onReadable(): void {
    try {
      this.readMessages();
    } catch (e) {
      // Only reached by a bug in the engine itself; still this connection only.
      this.close(`internal error: ${(e as Error).stack ?? String(e)}`, 'error');
    }
  }

  private readMessages(): void {
    for (let handled = 0; !this.closed && this.busy === null; ) {
      if (handled >= MAX_MSGS_PER_WAKEUP) {
        // A front-end that floods us must not starve other guests.
        if (!this.scheduled) {
          this.scheduled = true;
          setImmediate(() => {
            this.scheduled = false;
            this.onReadable();
          });
        }
        return;
      }
      if (this.payload === null) {
        const n = this.recv(this.hdr.subarray(this.hdrHave));
        if (n === null) return;
        if (n === 0) {
          this.eof(this.hdrHave > 0 ? `front-end closed the connection in the middle of a header (${this.hdrHave} of ${VHOST_USER_HDR_SIZE} bytes)` : 'front-end closed the connection');
          return;
        }
        this.hdrHave += n;
        if (this.hdrHave < VHOST_USER_HDR_SIZE) continue;
        const h = decodeHeader(this.hdr);
        const err = this.checkHeader(h.request, h.flags, h.size);
        if (err) {
          this.refuse(h.request, err);
          return;
        }
        this.payload = Buffer.alloc(h.size);
        this.payloadHave = 0;
      }
      if (this.payloadHave < this.payload.length) {
        const n = this.recv(this.payload.subarray(this.payloadHave));
        if (n === null) return;
        if (n === 0) {
          const h = decodeHeader(this.hdr);
          this.eof(`front-end closed the connection in the middle of ${requestName(h.request)} (payload ${this.payloadHave} of ${h.size} bytes)`);
          return;
        }
        this.payloadHave += n;
        if (this.payloadHave < this.payload.length) continue;
      }
      const h = decodeHeader(this.hdr);
      const msg: VhostUserMsg = { request: h.request, flags: h.flags, size: h.size, payload: this.payload, fds: this.pendingFds };
      this.hdrHave = 0;
      this.payload = null;
      this.payloadHave = 0;
      this.pendingFds = [];
      this.dispatch(msg);
      handled++;
    }
  }

  /** One recvmsg into `buf`; fds go to pendingFds. null = nothing to read now. */
  private recv(buf: Buffer): number | null {
    const fds: number[] = [];
    let n: number | null;
    try {
      n = this.io.recvMsg(this.fd, buf, fds, VHOST_USER_MAX_FDS + 1);
    } catch (e) {
      for (const fd of fds) this.closeFd(fd);
      const code = (e as { code?: string }).code;
      // ECONNRESET and friends: the peer is gone.
      this.close(`reading the socket failed: ${(e as Error).message}`, code === 'ECONNRESET' ? 'info' : 'warn');
      return null;
    }
    this.pendingFds.push(...fds);
    if (this.pendingFds.length > VHOST_USER_MAX_FDS) {
      const req = this.hdrHave >= 4 ? this.hdr.readUInt32LE(0) : -1;
      this.refuse(req, `${this.pendingFds.length} fds with one message (at most ${VHOST_USER_MAX_FDS})`);
      return null;
    }
    return n;
  }

  private checkHeader(request: number, flags: number, size: number): string | null {
    if ((flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) return `unsupported protocol version ${flags & VHOST_USER_VERSION_MASK} (flags 0x${flags.toString(16)})`;
    if (flags & VHOST_USER_REPLY_MASK) return `a reply (flags 0x${flags.toString(16)}) where a request was expected`;
    if (size > VHOST_USER_MAX_PAYLOAD) return `payload size ${size} exceeds the maximum of ${VHOST_USER_MAX_PAYLOAD}`;
    if (request === 0) return 'request number 0';
    return null;
  }

  private eof(why: string): void {
    this.close(why, this.hdrHave > 0 || this.payload !== null ? 'warn' : 'info');
  }

  /** A message refused before dispatch: log it and close. */
  private refuse(request: number, why: string): void {
    this.close(`malformed ${request >= 0 ? requestName(request) : 'message'}: ${why}; closing the connection`, 'warn');
  }

  // ---------------------------------------------------------------- dispatch

  private dispatch(m: VhostUserMsg): void {
    const name = requestName(m.request);
    const handler = this.table[m.request];
    this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
    if (!handler) {
      this.closeFds(m.fds);
      this.close(`unsupported ${name} (size ${m.size}, flags 0x${m.flags.toString(16)}); closing the connection`, 'warn');
      return;
    }
    this.log.debug(`${this.label}: ${name} size ${m.size} flags 0x${m.flags.toString(16)} fds ${m.fds.length}`);
    let reply: Reply | Promise<Reply>;
    try {
      reply = handler(m);
    } catch (e) {
      this.failed(m, e);
      return;
    }
    if (!(reply instanceof Promise)) {
      this.finish(m, reply);
      return;
    }
    // The worker answers later: read nothing more (messages are handled in
    // order, and the level-triggered watcher would call us again and again).
    this.busy = name;
    try {
      this.unwatch?.(this.fd);
    } catch {
      /* not watched */
    }
    reply.then(
      (r) => {
        this.busy = null;
        // Closed meanwhile (daemon stopping, the open refused): close() saw
        // only pendingFds, so fds this message brought and its handler did
        // not take are still ours to close.
        if (this.closed) {
          this.closeFds(m.fds);
          return;
        }
        this.finish(m, r);
        if (this.closed) return;
        try {
          this.rewatch?.(this.fd);
        } catch (e) {
          this.close(`cannot watch the connection again: ${(e as Error).message}`, 'error');
          return;
        }
        // What arrived meanwhile is read now (the watcher fires too, if more comes).
        this.onReadable();
      },
      (e: unknown) => {
        this.busy = null;
        // failed() closes the message's fds; once closed they are still ours (see above).
        if (!this.closed) this.failed(m, e);
        else this.closeFds(m.fds);
      },
    );
  }

  /** A handler done: fds it did not take are closed, the reply or the REPLY_ACK success sent. */
  private finish(m: VhostUserMsg, reply: Reply): void {
    const name = requestName(m.request);
    if (m.fds.length > 0) {
      this.log.warn(`${this.label}: ${name} carried ${m.fds.length} fd(s) it does not take; closed them`);
      this.closeFds(m.fds);
    }
    if (this.closed) return;
    if (reply !== undefined) this.send(m.request, reply);
    else if ((m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0) this.send(m.request, encodeU64(0n)); // REPLY_ACK: success
  }

  /** A handler refused the message, or the worker refused or did not answer its command: log and close. */
  private failed(m: VhostUserMsg, e: unknown): void {
    const name = requestName(m.request);
    this.closeFds(m.fds);
    const malformed = e instanceof ProtocolError;
    // The front-end is waiting for an ack: tell it the request failed before it sees the socket close.
    if ((m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0 && !REQUESTS_WITH_REPLY.has(m.request)) this.send(m.request, encodeU64(1n));
    this.close(malformed ? `malformed ${name}: ${(e as Error).message}; closing the connection` : `${name} failed: ${(e as Error).message}; closing the connection`, malformed ? 'warn' : 'error');
  }

  private send(request: number, payload: Buffer): void {
    if (this.closed) return;
    const buf = encodeMsg(request, VHOST_USER_REPLY_FLAGS, payload);
    try {
      let off = 0;
      for (let tries = 0; off < buf.length; tries++) {
        if (tries > 100) throw new Error('the socket does not take the reply');
        off += this.io.sendMsg(this.fd, buf.subarray(off));
      }
    } catch (e) {
      this.close(`sending the reply to ${requestName(request)} failed: ${(e as Error).message}`, 'warn');
    }
  }

  // ---------------------------------------------------------------- helpers

  private expectSize(m: VhostUserMsg, size: number): void {
    if (m.size !== size) throw new ProtocolError(`payload of ${m.size} bytes, expected ${size}`);
  }

  /** Moves exactly n fds out of the message (they are the caller's from then on). */
  private takeFds(m: VhostUserMsg, n: number): number[] {
    if (m.fds.length !== n) throw new ProtocolError(`${m.fds.length} fd(s) received, expected ${n}`);
    return m.fds.splice(0, n);
  }

  private queueIndex(index: number): number {
    if (index >= this.numQueues) throw new ProtocolError(`queue ${index} does not exist (the device has ${this.numQueues})`);
    return index;
  }

  private hasProtocolFeature(b: number): boolean {
    return (this.ackedProtocolFeatures & bit(b)) !== 0n;
  }

  private closeFd(fd: number): void {
    try {
      this.io.close(fd);
    } catch (e) {
      this.log.warn(`${this.label}: closing fd ${fd}: ${(e as Error).message}`);
    }
  }

  private closeFds(fds: number[]): void {
    for (const fd of fds.splice(0)) this.closeFd(fd);
  }

  // ---------------------------------------------------------------- messages
  // One function per message; names follow docs/interop/vhost-user.rst.
  // Each validates its message completely, then (if it changes rings or
  // memory) posts one command to the worker, where the effect runs (the
  // *_exec functions of engine.ts).

  /** GET_FEATURES: the virtio features the device offers, VHOST_USER_F_PROTOCOL_FEATURES included. */
  private getFeatures(m: VhostUserMsg): Buffer {
    this.expectSize(m, 0);
    return encodeU64(this.device.features());
  }

  /** SET_FEATURES: the features the driver accepted; only offered bits may be set. */
  private async setFeatures(m: VhostUserMsg): Promise<undefined> {
    this.expectSize(m, VHOST_USER_U64_SIZE);
    const f = decodeU64(m.payload);
    const extra = f & ~this.device.features();
    if (extra) throw new ProtocolError(`features 0x${f.toString(16)} include bits never offered: ${bitsOf(extra).join(', ')}`);
    this.ackedFeatures = f;
    this.log.debug(`${this.label}: features acked: bits ${bitsOf(f).join(', ')}`);
    await this.vrings.setFeatures(this.instanceId, f);
    return undefined;
  }

  /** GET_PROTOCOL_FEATURES: valid because VHOST_USER_F_PROTOCOL_FEATURES is always offered. */
  private getProtocolFeatures(m: VhostUserMsg): Buffer {
    this.expectSize(m, 0);
    if (!(this.device.features() & bit(VHOST_USER_F_PROTOCOL_FEATURES))) throw new ProtocolError('protocol features are not offered by this device');
    return encodeU64(this.device.protocolFeatures());
  }

  /** SET_PROTOCOL_FEATURES: only offered bits may be set. */
  private setProtocolFeatures(m: VhostUserMsg): undefined {
    this.expectSize(m, VHOST_USER_U64_SIZE);
    const f = decodeU64(m.payload);
    const extra = f & ~this.device.protocolFeatures();
    if (extra) throw new ProtocolError(`protocol features 0x${f.toString(16)} include bits never offered: ${bitsOf(extra).join(', ')}`);
    this.ackedProtocolFeatures = f;
    return undefined;
  }

  /** SET_OWNER: the front-end takes the device; nothing to do beyond remembering it. */
  private setOwner(m: VhostUserMsg): undefined {
    this.expectSize(m, 0);
    this.owner = true;
    return undefined;
  }

  /** RESET_OWNER: deprecated in the spec but still sent by front-ends without RESET_DEVICE; stops every ring. */
  private async resetOwner(m: VhostUserMsg): Promise<undefined> {
    this.expectSize(m, 0);
    this.owner = false;
    await this.resetRings();
    return undefined;
  }

  /** RESET_DEVICE: the same, keeping the owner. */
  private async resetDevice(m: VhostUserMsg): Promise<undefined> {
    this.expectSize(m, 0);
    await this.resetRings();
    return undefined;
  }

  private resetRings(): Promise<void> {
    this.ackedFeatures = null;
    return this.vrings.reset(this.instanceId);
  }

  /** GET_QUEUE_NUM: the most queues the device supports (MQ). */
  private getQueueNum(m: VhostUserMsg): Buffer {
    this.expectSize(m, 0);
    return encodeU64(BigInt(this.numQueues));
  }

  /** SET_MEM_TABLE: all guest memory regions, one fd each; replaces the previous table. */
  private async setMemTable(m: VhostUserMsg): Promise<undefined> {
    if (m.size < VHOST_USER_MEMORY_HDR_SIZE) throw new ProtocolError(`payload of ${m.size} bytes, shorter than the ${VHOST_USER_MEMORY_HDR_SIZE}-byte memory header`);
    const n = memTableRegionCount(m.payload);
    if (n > VHOST_MEMORY_BASELINE_NREGIONS) throw new ProtocolError(`${n} regions (at most ${VHOST_MEMORY_BASELINE_NREGIONS})`);
    if (m.size !== memTableSize(n)) throw new ProtocolError(`payload of ${m.size} bytes for ${n} region(s), expected ${memTableSize(n)}`);
    if (m.fds.length !== n) throw new ProtocolError(`${m.fds.length} fd(s) for ${n} region(s)`);
    const descs = decodeMemTable(m.payload);
    descs.forEach((r, i) => {
      if (r.size === 0n) throw new ProtocolError(`region ${i} has size 0`);
      if (r.guestPhysAddr + r.size - 1n > U64_MAX) throw new ProtocolError(`region ${i}: guest-physical range wraps`);
      if (r.userspaceAddr + r.size - 1n > U64_MAX) throw new ProtocolError(`region ${i}: userspace range wraps`);
      if (r.mmapOffset + r.size - 1n > U64_MAX) throw new ProtocolError(`region ${i}: mmap offset range wraps`);
      for (let j = 0; j < i; j++) {
        const o = descs[j]!;
        if (r.guestPhysAddr < o.guestPhysAddr + o.size && o.guestPhysAddr < r.guestPhysAddr + r.size) throw new ProtocolError(`regions ${j} and ${i} overlap in guest-physical memory`);
      }
    });
    const fds = this.takeFds(m, n);
    const regions: MemoryRegion[] = descs.map((r, i) => ({ ...r, fd: fds[i]! }));
    const before = this.lastRamBytes;
    const ram = await this.vrings.setMemTable(this.instanceId, regions);
    this.lastRamBytes = ram;
    const line = `${this.label}: guest memory: ${n} region(s), RAM ${formatSize(ram)}`;
    if (before !== ram) this.log.info(line);
    else this.log.debug(line);
    return undefined;
  }

  /** SET_VRING_NUM: the queue size, a power of 2 up to the device's maximum (the one place this is checked). */
  private async setVringNum(m: VhostUserMsg): Promise<undefined> {
    this.expectSize(m, VHOST_USER_VRING_STATE_SIZE);
    const s = decodeVringState(m.payload);
    const q = this.queueIndex(s.index);
    const max = Math.min(this.device.maxQueueSize(), MAX_QUEUE_SIZE);
    if (s.num < 1 || s.num > max || (s.num & (s.num - 1)) !== 0) throw new ProtocolError(`queue ${q}: size ${s.num} is not a power of 2 in 1..${max}`);
    await this.vrings.setVringNum(this.instanceId, q, s.num);
    return undefined;
  }

  /** SET_VRING_ADDR: ring addresses in the front-end's address space (translated through userspace_addr). */
  private async setVringAddr(m: VhostUserMsg): Promise<undefined> {
    this.expectSize(m, VHOST_USER_VRING_ADDR_SIZE);
    const a = decodeVringAddr(m.payload);
    const q = this.queueIndex(a.index);
    // Split-ring alignment (virtio 1.x 2.7): descriptors 16, avail 2, used 4.
    if (a.descUser % 16n !== 0n) throw new ProtocolError(`queue ${q}: descriptor table 0x${a.descUser.toString(16)} not 16-byte aligned`);
    if (a.availUser % 2n !== 0n) throw new ProtocolError(`queue ${q}: avail ring 0x${a.availUser.toString(16)} not 2-byte aligned`);
    if (a.usedUser % 4n !== 0n) throw new ProtocolError(`queue ${q}: used ring 0x${a.usedUser.toString(16)} not 4-byte aligned`);
    if (a.flags & 1) this.log.debug(`${this.label}: queue ${q}: VHOST_VRING_F_LOG ignored (dirty logging is not offered)`);
    await this.vrings.setVringAddr(this.instanceId, q, { descUser: a.descUser, usedUser: a.usedUser, availUser: a.availUser });
    return undefined;
  }

  /** SET_VRING_BASE: the next avail index to process (split rings: 16 bits). */
  private async setVringBase(m: VhostUserMsg): Promise<undefined> {
    this.expectSize(m, VHOST_USER_VRING_STATE_SIZE);
    const s = decodeVringState(m.payload);
    const q = this.queueIndex(s.index);
    if (s.num > 0xffff) throw new ProtocolError(`queue ${q}: base ${s.num} does not fit a split ring's 16-bit index`);
    await this.vrings.setVringBase(this.instanceId, q, s.num);
    return undefined;
  }

  /** GET_VRING_BASE: stops the ring; the reply carries the next avail index. */
  private async getVringBase(m: VhostUserMsg): Promise<Buffer> {
    this.expectSize(m, VHOST_USER_VRING_STATE_SIZE);
    const s = decodeVringState(m.payload);
    const q = this.queueIndex(s.index);
    const base = await this.vrings.getVringBase(this.instanceId, q);
    return encodeVringState({ index: q, num: base });
  }

  /** The u64 of SET_VRING_KICK/CALL/ERR: queue index, and an fd unless bit 8 says there is none. */
  private vringFile(m: VhostUserMsg): { q: number; fd: number } {
    this.expectSize(m, VHOST_USER_U64_SIZE);
    const f = decodeVringFile(m.payload);
    const q = this.queueIndex(f.index);
    if (f.noFd) return { q, fd: -1 }; // a stray fd is closed by finish() with a warning
    const fd = this.takeFds(m, 1)[0]!;
    try {
      this.io.adoptEventfd(fd);
    } catch (e) {
      this.closeFd(fd);
      throw new ProtocolError((e as Error).message);
    }
    return { q, fd };
  }

  /** SET_VRING_KICK: the eventfd the driver kicks, or none (the device polls the ring). */
  private async setVringKick(m: VhostUserMsg): Promise<undefined> {
    const { q, fd } = this.vringFile(m);
    await this.vrings.setVringFd(this.instanceId, 'setVringKick', q, fd);
    return undefined;
  }

  /** SET_VRING_CALL: the eventfd the device signals on completion, or none. */
  private async setVringCall(m: VhostUserMsg): Promise<undefined> {
    const { q, fd } = this.vringFile(m);
    await this.vrings.setVringFd(this.instanceId, 'setVringCall', q, fd);
    return undefined;
  }

  /** SET_VRING_ERR: the eventfd for ring errors, or none. */
  private async setVringErr(m: VhostUserMsg): Promise<undefined> {
    const { q, fd } = this.vringFile(m);
    await this.vrings.setVringFd(this.instanceId, 'setVringErr', q, fd);
    return undefined;
  }

  /** SET_VRING_ENABLE: num 1 starts processing the ring, 0 stops it (protocol features negotiated). */
  private async setVringEnable(m: VhostUserMsg): Promise<undefined> {
    this.expectSize(m, VHOST_USER_VRING_STATE_SIZE);
    const s = decodeVringState(m.payload);
    const q = this.queueIndex(s.index);
    if (s.num > 1) throw new ProtocolError(`queue ${q}: enable value ${s.num} is neither 0 nor 1`);
    await this.vrings.setVringEnable(this.instanceId, q, s.num === 1);
    return undefined;
  }

  /** The GET_CONFIG/SET_CONFIG payload, checked: CONFIG negotiated, the range within the 256-byte config space. */
  private configMsg(m: VhostUserMsg): ReturnType<typeof decodeConfig> {
    if (!this.hasProtocolFeature(VhostUserProtocolFeature.CONFIG)) throw new ProtocolError('the CONFIG protocol feature was not negotiated');
    if (m.size < VHOST_USER_CONFIG_HDR_SIZE) throw new ProtocolError(`payload of ${m.size} bytes, shorter than the ${VHOST_USER_CONFIG_HDR_SIZE}-byte config header`);
    const c = decodeConfig(m.payload);
    if (c.size > VHOST_USER_MAX_CONFIG_SIZE || c.offset > VHOST_USER_MAX_CONFIG_SIZE || c.offset + c.size > VHOST_USER_MAX_CONFIG_SIZE) {
      throw new ProtocolError(`config range ${c.offset}+${c.size} is outside the ${VHOST_USER_MAX_CONFIG_SIZE}-byte config space`);
    }
    if (m.size !== VHOST_USER_CONFIG_HDR_SIZE + c.size) throw new ProtocolError(`payload of ${m.size} bytes for ${c.size} config bytes, expected ${VHOST_USER_CONFIG_HDR_SIZE + c.size}`);
    return c;
  }

  /** GET_CONFIG: the device's config space bytes [offset, offset + size), in a reply of the same shape. */
  private getConfig(m: VhostUserMsg): Buffer {
    const c = this.configMsg(m);
    if (!this.device.getConfig) throw new ProtocolError(`the ${this.device.kind} device has no config space`);
    const data = this.device.getConfig(c.offset, c.size);
    if (data.length !== c.size) throw new Error(`the ${this.device.kind} device returned ${data.length} config bytes for ${c.size}`);
    return encodeConfig(c.offset, c.flags, data);
  }

  /** SET_CONFIG: the driver writes config space; the device may refuse (the connection is then closed, as for any refused message). */
  private setConfig(m: VhostUserMsg): undefined {
    const c = this.configMsg(m);
    if (!this.device.setConfig) throw new ProtocolError(`the ${this.device.kind} device has no writable config space`);
    this.device.setConfig(c.offset, c.data, c.flags);
    return undefined;
  }

  // ---------------------------------------------------------------- closing

  /** Closes the connection: the device instance (the guest goes), the socket and every fd not handed over. Idempotent. */
  close(reason: string, level: 'info' | 'warn' | 'error' = 'info'): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    try {
      this.unwatch?.(this.fd);
    } catch {
      /* not watched */
    }
    this.log[level](`${this.label}: ${reason}`);
    this.closeFds(this.pendingFds);
    this.payload = null;
    if (this.opened) {
      this.opened = false;
      try {
        this.device.closed(this);
      } catch (e) {
        this.log.error(`${this.label}: device close handler: ${(e as Error).message}`);
      }
      // Posted after whatever command is still in flight: the worker runs it in order.
      void this.vrings.close(this.instanceId);
    }
    this.closeFd(this.fd);
    try {
      this.onClose?.(this, reason);
    } catch (e) {
      this.log.error(`${this.label}: close handler: ${(e as Error).message}`);
    }
  }

  /** Why the connection closed, or null while open. */
  get closeReason(): string | null {
    return this.closedReason;
  }

  /** REPLY_ACK negotiated (for tests and stats). */
  get replyAck(): boolean {
    return this.hasProtocolFeature(VhostUserProtocolFeature.REPLY_ACK);
  }
}

/** Requests whose reply is their own payload (NEED_REPLY adds nothing to them). */
const REQUESTS_WITH_REPLY: ReadonlySet<number> = new Set([
  VhostUserRequest.GET_FEATURES,
  VhostUserRequest.GET_PROTOCOL_FEATURES,
  VhostUserRequest.GET_QUEUE_NUM,
  VhostUserRequest.GET_VRING_BASE,
  VhostUserRequest.GET_CONFIG,
  VhostUserRequest.GET_MAX_MEM_SLOTS,
  VhostUserRequest.GET_STATUS,
  VhostUserRequest.GET_INFLIGHT_FD,
]);

