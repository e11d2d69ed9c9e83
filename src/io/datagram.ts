import { FdHandle } from './fd-handle';
import { GRO_REGION, groStateLength, native, UDP_COUNTER } from './native';
import type { PacketList } from './packet-list';
import type { Transport } from './transport';

/**
 * A 4 MiB buffer holds a few thousand full-size datagrams: enough to ride out the gap between
 * two event-loop turns at Gbit/s rates, where the ~208 KiB kernel default drops bursts.
 */
export const DEFAULT_SOCKET_BUFFER = 4 << 20;

/**
 * Batched datagram I/O on one socket (UDP or raw IP): recvmmsg into a PacketList's slots with
 * each sender's address and port, sendmmsg of its entries to theirs. UdpSocket and RawSocket
 * differ only in how the socket is opened.
 */
/** GSO/GRO use of a DatagramSocket (UdpSocket.bind's `gro`/`gso`). */
export interface DatagramOffload {
  /** UDP_GRO is on: receive through stage regions of this many 64 KiB. */
  groRegions?: number;
  /** Send runs with UDP_SEGMENT. */
  gso?: boolean;
  /** Bytes of tunnel headers before the inner IP packet, for cutting tunnel super-datagrams (recvBatch). */
  groTunnelHeader?: number;
  /** Inner MTU for cutting tunnel super-datagrams that came without a segment size. */
  groTunnelMtu?: number;
  /**
   * Called once, when the kernel first refuses a GSO send on this socket for good (EIO and the
   * like: the run was resent as plain datagrams, and so is everything after), so the owner can
   * say so in its log rather than lose throughput silently.
   */
  onGsoDisabled?: () => void;
}

export class DatagramSocket implements Transport {
  protected readonly handle: FdHandle;
  /** Cumulative GSO/GRO counters, UDP_COUNTER layout (all zero without offload). */
  readonly counters: Float64Array;
  readonly gso: boolean;
  private readonly stage: Buffer | undefined;
  private readonly groState: Int32Array | undefined;
  private readonly groTunnelHeader: number;
  private readonly groTunnelMtu: number;
  // Whether a recv() produced datagrams since onReadable's callback last returned.
  private progress = false;
  private readonly onGsoDisabled: (() => void) | undefined;
  private gsoDisabledSeen = false;

  protected constructor(fd: number, what: string, offload: DatagramOffload = {}) {
    this.handle = new FdHandle(fd, what);
    this.counters = new Float64Array(UDP_COUNTER.COUNT);
    this.gso = offload.gso ?? false;
    const regions = offload.groRegions ?? 0;
    this.stage = regions > 0 ? Buffer.allocUnsafeSlow(regions * GRO_REGION) : undefined;
    this.groState = regions > 0 ? new Int32Array(groStateLength(regions)) : undefined;
    this.groTunnelHeader = offload.groTunnelHeader ?? -1;
    this.groTunnelMtu = offload.groTunnelMtu ?? 0;
    this.onGsoDisabled = offload.onGsoDisabled;
  }

  /** Whether UDP_GRO trains are being received and split. */
  get gro(): boolean {
    return this.stage !== undefined;
  }

  /** True once the kernel refused GSO for this socket (sends are plain datagrams since). */
  get gsoDisabled(): boolean {
    return this.counters[UDP_COUNTER.GSO_DISABLED] !== 0;
  }

  /** The GSO/GRO counters by name (UDP_COUNTER), for /status; empty for a socket without offloads. */
  offloadStats(): Record<string, number> {
    if (!this.gso && !this.stage) return {};
    const out: Record<string, number> = {};
    for (const [name, i] of Object.entries(UDP_COUNTER)) {
      if (name === 'COUNT') continue;
      out[name.toLowerCase().replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase())] = this.counters[i];
    }
    return out;
  }

  /** The file descriptor; -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }

  /**
   * Receives every queued datagram (up to the list's slots) into the slab from slot 0, with the
   * sender's address and port (0 for raw sockets, whose data starts at the IPv4 header); sets
   * list.count. A datagram larger than a slot comes back with lens[i] = -1. With GRO, a
   * coalesced train comes back as the datagrams that were sent; what does not fit the list
   * waits for the next recv.
   */
  recv(list: PacketList): number {
    const n = native.recvBatch(
      this.handle.live(),
      list.buf,
      list.slotSize,
      list.headroom,
      list.slots,
      list.offs,
      list.lens,
      list.addrs,
      list.ports,
      this.stage,
      this.groState,
      this.stage ? this.counters : undefined,
      this.stage ? this.groTunnelHeader : undefined,
      this.stage ? this.groTunnelMtu : undefined,
    );
    list.count = n;
    if (n > 0) this.progress = true;
    return n;
  }

  /**
   * Sends list's first `count` entries to their addrs/ports. Returns how many the kernel took:
   * it stops early when the socket buffer or device queue is full, and skips single packets the
   * kernel refuses (over the MTU, unreachable, malformed header). With GSO, runs of equal-size
   * datagrams to one peer go out as one UDP_SEGMENT send each (the count is still datagrams).
   */
  send(list: PacketList): number {
    return this.sendDescriptors(list.buf, list.offs, list.lens, list.addrs, list.ports, list.count);
  }

  /**
   * send() on bare descriptor arrays over `buf`: for a UdpSocketPool, which partitions one batch
   * into per-socket descriptor arrays it allocated once.
   */
  sendDescriptors(buf: Buffer, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, count: number): number {
    if (this.gso) {
      const sent = native.sendBatch(this.handle.live(), buf, offs, lens, addrs, ports, count, true, this.counters);
      if (!this.gsoDisabledSeen && this.counters[UDP_COUNTER.GSO_DISABLED] !== 0) {
        this.gsoDisabledSeen = true;
        this.onGsoDisabled?.();
      }
      return sent;
    }
    return native.sendBatch(this.handle.live(), buf, offs, lens, addrs, ports, count);
  }

  /**
   * Calls cb whenever datagrams are waiting (level-triggered; with GRO also while a train's
   * datagrams wait in user space, see `pending`); a second call replaces the first.
   */
  onReadable(cb: (err?: Error) => void): void {
    if (!this.groState) {
      this.handle.onReadable(cb);
      return;
    }
    // As TunDevice: again only while something waits and the callback did take datagrams.
    this.handle.onReadable(cb, () => {
      const again = this.pending && this.progress;
      this.progress = false;
      return again;
    });
  }

  /**
   * Whether datagrams of a GRO train already received wait for the next recv() (the slots ran
   * out); onReadable's callback is called again for them even though the socket is not readable.
   */
  get pending(): boolean {
    return this.groState !== undefined && this.groState[0] !== 0;
  }

  /** Stops polling and closes the socket. Idempotent. */
  close(): void {
    this.handle.close();
  }
}
