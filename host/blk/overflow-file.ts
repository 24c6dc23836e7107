// A VM's overflow file (DIR/<vm>.overflow): where tmem-blk puts the pages
// the store has no room for, at offset page * 4096. Sparse: created with the
// disk's size and no blocks; a page's blocks exist while the page lives
// here, and are punched out when it is discarded or goes back to RAM.
//
// The file's contents mean nothing without the in-RAM bitmap that says
// which pages live in it (block-store.ts), so a file left by an earlier run
// is truncated at open, and the file is removed at close.
//
// Node's fs calls are synchronous here on purpose: this runs in the data
// plane worker, on the slow path (the store is full), and a request is
// answered only once its data is written. So that a read never waits for
// the disk while other guests wait behind it, readyToRead asks the page
// cache first (native/file-cache.ts) and the device parks a request whose
// pages are not there yet (host/blk/worker.ts). Writes go to the page cache
// and are not parked. A failure is never thrown on the request path: the
// methods return false and `error` says why (the handler answers
// VIRTIO_BLK_S_IOERR).
import * as fs from 'node:fs';
import { punchHole } from '../../native/fallocate.js';
import { fadvise, pageCached, POSIX_FADV_WILLNEED } from '../../native/file-cache.js';

const PAGE = 4096;

export class OverflowFile {
  readonly path: string;
  readonly sizeBytes: number;
  /** Why the last failed call failed (one line). */
  error = '';
  private fd: number;
  /** preadv2(RWF_NOWAIT) works on this file system (readyToRead); cleared at the first EOPNOTSUPP. */
  private nowaitWorks = true;

  private constructor(path: string, fd: number, sizeBytes: number) {
    this.path = path;
    this.fd = fd;
    this.sizeBytes = sizeBytes;
  }

  /**
   * Creates (or truncates) the file at `path`: mode 0600 whatever the umask,
   * O_NOFOLLOW (a symlink planted in the directory is refused), close-on-exec
   * (libuv opens every file with O_CLOEXEC), a regular file only, sized to
   * `sizeBytes` with no blocks. Throws an Error with one line on failure.
   */
  static open(path: string, sizeBytes: number): OverflowFile {
    const k = fs.constants;
    let fd: number;
    try {
      fd = fs.openSync(path, k.O_RDWR | k.O_CREAT | k.O_NOFOLLOW | k.O_NONBLOCK, 0o600);
    } catch (e) {
      throw new Error(`overflow file ${path}: ${(e as Error).message}`);
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new Error('not a regular file');
      fs.fchmodSync(fd, 0o600);
      fs.ftruncateSync(fd, 0);
      fs.ftruncateSync(fd, sizeBytes);
    } catch (e) {
      fs.closeSync(fd);
      throw new Error(`overflow file ${path}: ${(e as Error).message}`);
    }
    return new OverflowFile(path, fd, sizeBytes);
  }

  get open(): boolean {
    return this.fd >= 0;
  }

  /**
   * Whether page p can be read now without waiting for the disk (it is in
   * the page cache). If not, the kernel is asked to start reading it in the
   * background (WILLNEED) and false is returned: the caller parks its
   * request and asks again later. True when the file system cannot tell
   * (then every read may wait, as before) or on an error (the read reports it).
   */
  readyToRead(p: number): boolean {
    if (!this.nowaitWorks) return true;
    switch (pageCached(this.fd, p * PAGE)) {
      case 'cached':
      case 'error':
        return true;
      case 'unsupported':
        this.nowaitWorks = false;
        return true;
      case 'uncached':
        fadvise(this.fd, p * PAGE, PAGE, POSIX_FADV_WILLNEED);
        return false;
    }
  }

  /** Reads page p into dst[off, off + 4096). */
  readPage(p: number, dst: Uint8Array, off: number): boolean {
    let done = 0;
    try {
      while (done < PAGE) {
        const n = fs.readSync(this.fd, dst, off + done, PAGE - done, p * PAGE + done);
        if (n <= 0) return this.fail(`read of page ${p}: end of file`);
        done += n;
      }
    } catch (e) {
      return this.fail(`read of page ${p}: ${(e as Error).message}`);
    }
    return true;
  }

  /**
   * Writes src[off, off + 4096) as page p. A failure may leave the page
   * partly written (a prefix of the new bytes); callers only write whole
   * merged pages, so each sector then holds either its old or its new data.
   */
  writePage(p: number, src: Uint8Array, off: number): boolean {
    let done = 0;
    try {
      while (done < PAGE) {
        const n = fs.writeSync(this.fd, src, off + done, PAGE - done, p * PAGE + done);
        if (n <= 0) return this.fail(`write of page ${p}: nothing written`);
        done += n;
      }
    } catch (e) {
      return this.fail(`write of page ${p}: ${(e as Error).message}`);
    }
    return true;
  }

  /** Gives pages [first, first + count) back to the file system (they read as zeros). */
  punch(first: number, count: number): boolean {
    try {
      punchHole(this.fd, first * PAGE, count * PAGE);
    } catch (e) {
      return this.fail(`punching pages ${first}+${count}: ${(e as Error).message}`);
    }
    return true;
  }

  /** 512-byte blocks the file holds on disk (st_blocks). */
  blocks(): number {
    return fs.fstatSync(this.fd).blocks;
  }

  /** Closes and removes the file (its contents mean nothing without the daemon's bitmap). */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    try {
      fs.closeSync(fd);
    } catch {
      // already closed: nothing to give back
    }
    try {
      fs.unlinkSync(this.path);
    } catch {
      // removed by someone else: fine
    }
  }

  private fail(why: string): false {
    this.error = `overflow file ${this.path}: ${why}`;
    return false;
  }
}
