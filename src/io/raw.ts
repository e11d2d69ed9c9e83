// A raw IPv4 socket (raw(7)) moving whole batches with recvmmsg/sendmmsg: the underlay of the
// ipip backend both ways (vxlan sent through one until it moved to a UdpSocketPool, which can
// use UDP_SEGMENT). What a batch holds differs from UdpSocket's:
//   - received datagrams start at their IPv4 header (the kernel keeps it for raw sockets), and
//     addrs[i] is the sender with ports[i] = 0;
//   - on a socket opened with hdrincl (or protocol IPPROTO_RAW, which implies it), each entry
//     sent is a complete IPv4 packet; the kernel routes it by addrs[i], not by the header's
//     destination, fills in Total Length and the header checksum, and never fragments it (an
//     entry over the route MTU is refused and dropped).

import { DatagramSocket, DEFAULT_SOCKET_BUFFER } from './datagram';
import { native } from './native';

/** IPPROTO_RAW: a send-only raw socket that implies IP_HDRINCL and never receives (raw(7)). */
export const IPPROTO_RAW = 255;

export interface RawOpenOptions {
  /** Set IP_HDRINCL: sends carry their own IPv4 header (implied by IPPROTO_RAW). */
  hdrincl?: boolean;
  /**
   * Local address (host-order uint32) to bind; 0 (default) leaves the socket unbound. For a raw
   * socket, bind only filters: the socket then receives only datagrams addressed to it.
   */
  bindAddr?: number;
  /** SO_RCVBUF in bytes (default 4 MiB); forced past net.core.rmem_max when running as root. */
  rcvbuf?: number;
  /** SO_SNDBUF in bytes (default 4 MiB); forced past net.core.wmem_max when running as root. */
  sndbuf?: number;
}

export class RawSocket extends DatagramSocket {
  /** The IP protocol number the socket was opened for. */
  readonly protocol: number;

  private constructor(fd: number, protocol: number) {
    super(fd, `raw IP socket for protocol ${protocol}`);
    this.protocol = protocol;
  }

  /**
   * Opens socket(AF_INET, SOCK_RAW, protocol), non-blocking. Needs CAP_NET_RAW. Throws with
   * `code`/`syscall` set when the kernel refuses (EPERM without the capability, EADDRNOTAVAIL
   * for a bindAddr that is not local).
   */
  static open(protocol: number, opts: RawOpenOptions = {}): RawSocket {
    const fd = native.rawOpen(protocol, opts.hdrincl ?? false, opts.bindAddr ?? 0, opts.rcvbuf ?? DEFAULT_SOCKET_BUFFER, opts.sndbuf ?? DEFAULT_SOCKET_BUFFER);
    return new RawSocket(fd, protocol);
  }
}
