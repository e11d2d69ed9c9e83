import { FdHandle } from './fd-handle';
import { native } from './native';
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
export class DatagramSocket implements Transport {
  protected readonly handle: FdHandle;

  protected constructor(fd: number, what: string) {
    this.handle = new FdHandle(fd, what);
  }

  /** The file descriptor; -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }

  /**
   * Receives every queued datagram (up to the list's slots) into the slab from slot 0, with the
   * sender's address and port (0 for raw sockets, whose data starts at the IPv4 header); sets
   * list.count. A datagram larger than a slot comes back with lens[i] = -1.
   */
  recv(list: PacketList): number {
    const n = native.recvBatch(this.handle.live(), list.buf, list.slotSize, list.headroom, list.slots, list.offs, list.lens, list.addrs, list.ports);
    list.count = n;
    return n;
  }

  /**
   * Sends list's first `count` entries to their addrs/ports. Returns how many the kernel took:
   * it stops early when the socket buffer or device queue is full, and skips single packets the
   * kernel refuses (over the MTU, unreachable, malformed header).
   */
  send(list: PacketList): number {
    return native.sendBatch(this.handle.live(), list.buf, list.offs, list.lens, list.addrs, list.ports, list.count);
  }

  /** Calls cb whenever datagrams are waiting (level-triggered); a second call replaces the first. */
  onReadable(cb: (err?: Error) => void): void {
    this.handle.onReadable(cb);
  }

  /** Stops polling and closes the socket. Idempotent. */
  close(): void {
    this.handle.close();
  }
}
