// The descriptor chain walker of a split virtqueue (virtio 1.x 2.7.5-2.7.7),
// checked the way rust-vmm's virtio-queue does it. It knows nothing about what
// a request means: it turns the chain that starts at a head into the
// device-readable and device-writable byte segments, or refuses the chain.
//
// Rules (a refused chain is reported with a reason and nothing is touched):
//   - ttl = queue size: every buffer descriptor read (the entries of an
//     indirect table included, the descriptor naming the table not) costs
//     one, so loops end and a chain never has more buffers than the queue;
//   - at most one level of indirect table; a table is not empty, is a
//     multiple of 16 bytes, fits in what is left of the ttl, and lies in RAM;
//     INDIRECT_DESC must have been negotiated;
//   - next indices stay inside their table;
//   - no readable descriptor after a writable one;
//   - every byte range lies inside guest RAM and does not wrap;
//   - zero-length descriptors carry no bytes (their address is not checked);
//   - each direction's total stays below 2^32 bytes.
import { GuestMemory, SegmentList } from './guest-memory.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const DESC_SIZE = 16;

const TWO32 = 0x1_0000_0000;

export class ChainWalker {
  mem: GuestMemory | null = null;
  readonly readable: SegmentList;
  readonly writable: SegmentList;
  /** Why the last walk() failed. */
  error = '';
  /** Descriptors read by the last walk(). */
  descriptors = 0;
  private readonly tableSegs = new SegmentList(8);
  private scratch: Uint8Array = new Uint8Array(0);
  private scratchView: DataView = new DataView(this.scratch.buffer);

  /** segmentCapacity bounds the segments of one direction (a descriptor crossing windows or regions makes several). */
  constructor(segmentCapacity = 1024) {
    this.readable = new SegmentList(segmentCapacity);
    this.writable = new SegmentList(segmentCapacity);
  }

  private fail(why: string): false {
    this.error = why;
    return false;
  }

  /**
   * Walks the chain whose head is `head` in the descriptor table at
   * (table, tableOff) of a queue of `queueSize` entries. True when the chain
   * is well formed; then `readable` and `writable` hold its bytes.
   */
  walk(table: DataView, tableOff: number, queueSize: number, head: number, indirectAllowed: boolean): boolean {
    const mem = this.mem;
    const rd = this.readable;
    const wr = this.writable;
    rd.clear();
    wr.clear();
    this.error = '';
    this.descriptors = 0;
    if (mem === null) return this.fail('no guest memory');
    if (head >= queueSize) return this.fail(`head ${head} outside the queue (size ${queueSize})`);
    let ttl = queueSize;
    let tv = table;
    let to = tableOff;
    let tn = queueSize;
    let indirect = false;
    let sawWritable = false;
    let idx = head;
    for (;;) {
      if (ttl === 0) return this.fail(`chain longer than the queue size ${queueSize} (loop?)`);
      ttl--;
      this.descriptors++;
      const o = to + idx * DESC_SIZE;
      const lo = tv.getUint32(o, true);
      const hi = tv.getUint32(o + 4, true);
      const len = tv.getUint32(o + 8, true);
      const flags = tv.getUint16(o + 12, true);
      const next = tv.getUint16(o + 14, true);
      const addr = hi * TWO32 + lo;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (indirect) return this.fail('nested indirect table');
        if (!indirectAllowed) return this.fail('indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC');
        if (len === 0) return this.fail('empty indirect table');
        if (len % DESC_SIZE !== 0) return this.fail(`indirect table of ${len} bytes, not a multiple of 16`);
        const n = len / DESC_SIZE;
        // The descriptor naming the table carries no buffer: the chain is
        // its buffers, so a table of queue-size entries is a full-length
        // chain, as QEMU and libvhost-user accept it (Linux's virtio-blk
        // sends seg_max + 2 entries; QEMU's seg_max is queue size - 2).
        ttl++;
        if (n > ttl) return this.fail(`chain with its indirect table (${n} entries) longer than the queue size ${queueSize}`);
        const ts = this.tableSegs;
        ts.clear();
        if (!mem.translate(addr, len, ts)) return this.fail(`indirect table at 0x${addr.toString(16)} (+${len}) outside guest memory`);
        if (ts.count === 1) {
          tv = ts.views[0]!;
          to = ts.offs[0]!;
        } else {
          // A table split over regions or windows: read it from a private copy.
          if (this.scratch.length < len) {
            this.scratch = new Uint8Array(len);
            this.scratchView = new DataView(this.scratch.buffer);
          }
          ts.readInto(0, this.scratch, 0, len);
          tv = this.scratchView;
          to = 0;
        }
        tn = n;
        idx = 0;
        indirect = true;
        // NEXT on the indirect descriptor itself is not followed: the chain ends in the table.
        continue;
      }
      const write = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (write) sawWritable = true;
      else if (sawWritable) return this.fail('readable descriptor after a writable one');
      if (len > 0) {
        const list = write ? wr : rd;
        if (!mem.translate(addr, len, list)) {
          return this.fail(
            list.count >= list.capacity
              ? `chain needs more than ${list.capacity} segments`
              : `descriptor at 0x${addr.toString(16)} (+${len}) outside guest memory`,
          );
        }
        if (list.total >= TWO32) return this.fail('chain longer than 4 GiB');
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return true;
      if (next >= tn) return this.fail(`next index ${next} outside the ${indirect ? 'indirect table' : 'queue'} (size ${tn})`);
      idx = next;
    }
  }
}
