// Stand-ins for what the data-plane engine and the device kinds get from
// their surroundings, shared by the in-process tests (dataplane-engine.ts,
// blk-device.ts, virtio-fuzz.ts): eventfds as counters in a map (the engine's
// EngineOs calls), and the WorkerHost a device kind is created with.
import type { WorkerHost } from '../../host/vhost-user/device.js';

/** The eventfd half of EngineOs: a counter per fd, read and reset as eventfd(2) does (null when 0). */
export class FakeEventfds {
  counts = new Map<number, bigint>();
  eventfdRead(fd: number): bigint | null {
    const v = this.counts.get(fd) ?? 0n;
    this.counts.set(fd, 0n);
    return v === 0n ? null : v;
  }
  eventfdWrite(fd: number, v = 1n): void {
    this.counts.set(fd, (this.counts.get(fd) ?? 0n) + v);
  }
}

/** A WorkerHost as the vring worker gives one: the device config, the mode, no log, one shared object per key. */
export function fakeWorkerHost(config: { capacityPages: number; maxPoolsPerGuest: number }, mode: WorkerHost['mode']): WorkerHost {
  const shared = new Map<string, unknown>();
  return {
    config,
    mode,
    log: () => {},
    shared<T>(key: string, create: () => T): T {
      if (!shared.has(key)) shared.set(key, create());
      return shared.get(key) as T;
    },
  };
}
