// A UDP socket that moves whole batches with recvmmsg/sendmmsg: the underlay socket of the udp
// and vxlan backends. node:dgram delivers one datagram per callback with a fresh Buffer each,
// which is exactly the per-packet cost the data path avoids.

import { DatagramSocket, DEFAULT_SOCKET_BUFFER } from './datagram';
import { native } from './native';

export interface UdpBindOptions {
  /** SO_RCVBUF in bytes (default 4 MiB); forced past net.core.rmem_max when running as root. */
  rcvbuf?: number;
  /** SO_SNDBUF in bytes (default 4 MiB); forced past net.core.wmem_max when running as root. */
  sndbuf?: number;
  /**
   * UDP_GRO: the kernel may hand over trains of datagrams coalesced into one; recv splits them
   * back (through a stage of `groRegions` x 64 KiB, default 8). Off by default.
   */
  gro?: boolean;
  groRegions?: number;
  /**
   * With gro: bytes of tunnel headers in front of the inner IP packet in every datagram (22 for
   * VXLAN: 8 VXLAN + 14 Ethernet; 0 for flannel's udp backend). A kernel VXLAN peer on a veth
   * sends TSO super-packets that arrive as one datagram; with this set they are cut into the
   * datagrams a NIC would have delivered. Without it (default) they come back as lens -1.
   */
  groTunnelHeader?: number;
  /**
   * With groTunnelHeader: the overlay's inner MTU (e.g. 1450 for VXLAN on a 1500 underlay). An
   * inner TCP super-packet comes without the sender's segment size, so it is cut into inner
   * packets of at most this many bytes; 0 (default): as large as fits a slot.
   */
  groTunnelMtu?: number;
  /**
   * IP_MTU_DISCOVER = IP_PMTUDISC_DONT: send with DF clear, fragmenting datagrams over the route
   * MTU, as the kernel's VXLAN device does (vxlan's send pool). Off by default (IP_PMTUDISC_WANT:
   * DF set on what fits).
   */
  dfClear?: boolean;
  /** UDP_SEGMENT: send runs of equal-size datagrams to one peer as one message. Off by default. */
  gso?: boolean;
  /** With gso: called once if the kernel refuses GSO for this socket for good (see DatagramOffload). */
  onGsoDisabled?: () => void;
}

export class UdpSocket extends DatagramSocket {
  readonly port: number;

  private constructor(fd: number, port: number, opts: UdpBindOptions) {
    super(fd, `UDP socket on port ${port}`, {
      groRegions: opts.gro ? (opts.groRegions ?? 8) : 0,
      gso: opts.gso ?? false,
      groTunnelHeader: opts.groTunnelHeader,
      groTunnelMtu: opts.groTunnelMtu,
      onGsoDisabled: opts.onGsoDisabled,
    });
    this.port = port;
  }

  /** Binds addr:port (addr a host-order uint32; 0 = any address, port 0 = ephemeral). */
  // `override`: a class's static side inherits Function.prototype.bind from its base constructor.
  static override bind(addr: number, port: number, opts: UdpBindOptions = {}): UdpSocket {
    const tunnel = opts.groTunnelHeader ?? -1;
    if (!Number.isInteger(tunnel) || tunnel < -1 || tunnel > 1024) {
      throw new RangeError(`groTunnelHeader must be an integer in [-1, 1024]: ${tunnel}`);
    }
    const mtu = opts.groTunnelMtu ?? 0;
    if (!Number.isInteger(mtu) || mtu < 0 || mtu > 65535) {
      throw new RangeError(`groTunnelMtu must be an integer in [0, 65535]: ${mtu}`);
    }
    const regions = opts.groRegions ?? 8;
    if (!Number.isInteger(regions) || regions < 1 || regions > 1024) {
      throw new RangeError(`groRegions must be an integer in [1, 1024]: ${regions}`);
    }
    const fd = native.udpOpen(addr, port, opts.rcvbuf ?? DEFAULT_SOCKET_BUFFER, opts.sndbuf ?? DEFAULT_SOCKET_BUFFER, opts.gro ?? false, opts.dfClear ?? false);
    let bound: number;
    try {
      bound = native.localPort(fd);
    } catch (err) {
      native.close(fd);
      throw err;
    }
    return new UdpSocket(fd, bound, opts);
  }
}
