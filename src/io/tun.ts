// A TUN device: the kernel routes IPv4 packets into it and takes packets written to it as if
// they had arrived on a link. Opened IFF_TUN | IFF_NO_PI, so every packet starts at its IP
// header. With `offload`, the kernel hands over 64 KB TCP (and UDP) super-packets and takes
// them back (IFF_VNET_HDR + TUNSETOFFLOAD); the addon splits and coalesces them, so a
// PacketList still holds one ordinary packet per slot either way.

import { FdHandle } from './fd-handle';
import { native, offloadNames, TUN_COUNTER, TUN_REFUSE, VNET_READ_MAX } from './native';
import type { PacketDevice } from './packet-device';
import type { PacketList } from './packet-list';

export interface TunOpenOptions {
  /**
   * IFF_MULTI_QUEUE: each open of the same name adds a queue, and the kernel spreads flows
   * across the queues' fds, so several readers can share one device.
   */
  multiQueue?: boolean;
  /**
   * IFF_VNET_HDR with TUNSETOFFLOAD (checksum, TSO4/6, USO4/6 as the kernel grants): fewer,
   * larger reads and writes for bulk TCP. The device's reads and writes then go through the
   * addon's split and coalesce; `offloads` says what was granted. With multiQueue, open every
   * queue the same way: the virtio-net header is a property of the device, not of the fd, so
   * open throws EINVAL for a queue that disagrees with the device.
   */
  offload?: boolean;
}

/** TunDevice.stats(): the offload counters by name (TUN_COUNTER), refusals by reason. */
export interface TunOffloadStats {
  superRead: number;
  segmentsOut: number;
  csumCompleted: number;
  packetsRead: number;
  refused: Record<string, number>;
  coalescedWrites: number;
  segmentsMerged: number;
  plainWrites: number;
  partialFixed: number;
  writeErrors: number;
  truncatedReads: number;
}

export class TunDevice implements PacketDevice {
  /** The interface name the kernel assigned (a "tun%d" template comes back expanded). */
  readonly name: string;
  /** Whether the fd carries virtio-net headers (opened with `offload`). */
  readonly vnetHdr: boolean;
  /** TUN_F bits the kernel granted (TUN_OFFLOAD); 0 without `offload`. */
  readonly offloads: number;
  /** Cumulative offload counters, TUN_COUNTER layout (also counts partial checksums fixed without offload). */
  readonly counters: Float64Array;
  private readonly handle: FdHandle;
  // One super-packet being split across reads, and where to resume (tunReadVnet).
  private readonly rbuf: Buffer | undefined;
  private readonly splitState: Int32Array;
  // Whether a read() produced packets since onReadable's callback last returned.
  private progress = false;

  private constructor(fd: number, name: string, vnetHdr: boolean, offloads: number) {
    this.name = name;
    this.vnetHdr = vnetHdr;
    this.offloads = offloads;
    this.counters = new Float64Array(TUN_COUNTER.COUNT);
    this.handle = new FdHandle(fd, `TUN ${name}`);
    this.rbuf = vnetHdr ? Buffer.allocUnsafeSlow(VNET_READ_MAX) : undefined;
    this.splitState = new Int32Array(2);
  }

  /** Creates (or, with multiQueue, attaches another queue to) the TUN interface `name`. */
  static open(name: string, opts: TunOpenOptions = {}): TunDevice {
    const vnet = opts.offload ?? false;
    const r = native.tunOpen(name, opts.multiQueue ?? false, vnet);
    return new TunDevice(r.fd, r.name, vnet, r.offloads);
  }

  /** Names of the granted offloads (e.g. ["CSUM", "TSO4", "TSO6", "USO4", "USO6"]). */
  get offloadNames(): string[] {
    return offloadNames(this.offloads);
  }

  /** The counters by name. */
  stats(): TunOffloadStats {
    const c = this.counters;
    const refused: Record<string, number> = {};
    TUN_REFUSE.forEach((reason, i) => {
      if (i > 0) refused[reason] = c[TUN_COUNTER.REFUSED + i];
    });
    return {
      superRead: c[TUN_COUNTER.SUPER_READ],
      segmentsOut: c[TUN_COUNTER.SEGMENTS_OUT],
      csumCompleted: c[TUN_COUNTER.CSUM_COMPLETED],
      packetsRead: c[TUN_COUNTER.PACKETS_READ],
      refused,
      coalescedWrites: c[TUN_COUNTER.COALESCED_WRITES],
      segmentsMerged: c[TUN_COUNTER.SEGMENTS_MERGED],
      plainWrites: c[TUN_COUNTER.PLAIN_WRITES],
      partialFixed: c[TUN_COUNTER.PARTIAL_FIXED],
      writeErrors: c[TUN_COUNTER.WRITE_ERRORS],
      truncatedReads: c[TUN_COUNTER.TRUNCATED_READS],
    };
  }

  /** The file descriptor; -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }

  /**
   * Reads every packet queued (up to the list's slots) into the list's slab, from slot 0, and
   * sets list.count. A packet larger than a slot comes back with lens[i] = -1. With offload, a
   * super-packet arrives as its segments; one that does not fit the remaining slots continues
   * in the next read (so a reader must read until read() returns 0, as it does anyway).
   */
  read(list: PacketList): number {
    if (this.rbuf) {
      const c = native.tunReadVnet(
        this.handle.live(),
        this.rbuf,
        list.buf,
        list.slotSize,
        list.headroom,
        list.slots,
        list.offs,
        list.lens,
        this.splitState,
        this.counters,
      );
      list.count = c;
      if (c > 0) this.progress = true;
      return c;
    }
    const n = native.readPackets(this.handle.live(), list.buf, list.slotSize, list.headroom, list.slots, list.offs, list.lens);
    list.count = n;
    return n;
  }

  /**
   * Writes list's first `count` packets; returns how many the kernel took. TCP/UDP checksums
   * that hold only the pseudo-header sum (a kernel peer's CHECKSUM_PARTIAL that a virtual
   * underlay never finished) are finished in place first, or the kernel would drop them. With
   * offload, consecutive segments of one TCP flow are written as one super-packet, their first
   * packet's headers patched in place.
   */
  write(list: PacketList): number {
    return native.tunWrite(this.handle.live(), list.buf, list.offs, list.lens, list.count, this.vnetHdr, this.counters);
  }

  /**
   * Calls cb whenever packets are waiting (level-triggered: read until read() returns 0, or cb
   * fires again; with offload also while segments of a super-packet wait, see `pending`). A
   * second call replaces the first callback. If the device goes away under the fd, cb gets the
   * error once and is not called again.
   */
  onReadable(cb: (err?: Error) => void): void {
    if (!this.rbuf) {
      this.handle.onReadable(cb);
      return;
    }
    // Again only while something waits and the callback did take packets: a callback that
    // stopped reading (or has no slots) is left to the next readiness instead of spinning.
    this.handle.onReadable(cb, () => {
      const again = this.pending && this.progress;
      this.progress = false;
      return again;
    });
  }

  /**
   * Whether segments of a super-packet already read wait for the next read() (the slots ran
   * out). onReadable's callback is called again for them even though the fd is not readable.
   */
  get pending(): boolean {
    return this.splitState[0] !== 0;
  }

  /** Stops polling and closes the fd (the interface disappears unless other queues hold it). Idempotent. */
  close(): void {
    this.handle.close();
  }
}
