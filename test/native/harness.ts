// Helpers of the native layer's tests (test/native-*.ts).
import type { Test } from 'tap';
import * as native from '../../native/index.js';

/** obj (a watcher, an eventfd set) and the given fds closed at the test's end, obj first; returns obj. */
export function closeAtEnd<T extends { close(): void }>(t: Test, obj: T, ...fds: number[]): T {
  t.teardown(() => {
    obj.close();
    fds.forEach(native.close);
  });
  return obj;
}
