// A UDP socket that moves whole batches with recvmmsg/sendmmsg: the underlay socket of the udp
// and vxlan backends. node:dgram delivers one datagram per callback with a fresh Buffer each,
// which is exactly the per-packet cost the data path avoids.

import { FdHandle } from './fd-handle';
import { native } from './native';
import type { PacketList } from './packet-list';

export interface UdpBindOptions {
  /** SO_RCVBUF in bytes (default 4 MiB); forced past net.core.rmem_max when running as root. */
  rcvbuf?: number;
  /** SO_SNDBUF in bytes (default 4 MiB); forced past net.core.wmem_max when running as root. */
  sndbuf?: number;
}

// A 4 MiB buffer holds a few thousand full-size datagrams: enough to ride out the gap between
// two event-loop turns at Gbit/s rates, where the ~208 KiB kernel default drops bursts.
const DEFAULT_SOCKET_BUFFER = 4 << 20;

export class UdpSocket {
  /** The bound local port (the kernel's choice when bound to port 0). */
  readonly port: number;
  private readonly handle: FdHandle;

  private constructor(fd: number, port: number) {
    this.port = port;
    this.handle = new FdHandle(fd, `UDP socket on port ${port}`);
  }

  /** Binds addr:port (addr a host-order uint32; 0 = any address, port 0 = ephemeral). */
  static bind(addr: number, port: number, opts: UdpBindOptions = {}): UdpSocket {
    const fd = native.udpOpen(
      addr,
      port,
      opts.rcvbuf ?? DEFAULT_SOCKET_BUFFER,
      opts.sndbuf ?? DEFAULT_SOCKET_BUFFER,
    );
    let bound: number;
    try {
      bound = native.localPort(fd);
    } catch (err) {
      native.close(fd);
      throw err;
    }
    return new UdpSocket(fd, bound);
  }

  /** The file descriptor; -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }

  /**
   * Receives every queued datagram (up to the list's slots) into the slab from slot 0, with
   * each sender's address and port in addrs/ports; sets list.count. A datagram larger than a
   * slot comes back with lens[i] = -1.
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
    );
    list.count = n;
    return n;
  }

  /**
   * Sends list's first `count` datagrams, each to its addrs[i]:ports[i]. Returns how many the
   * kernel took: it stops early when the socket buffer is full, and drops single datagrams the
   * kernel refuses (too large, unreachable).
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
