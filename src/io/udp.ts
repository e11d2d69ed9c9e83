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
}

export class UdpSocket extends DatagramSocket {
  readonly port: number;

  private constructor(fd: number, port: number) {
    super(fd, `UDP socket on port ${port}`);
    this.port = port;
  }

  /** Binds addr:port (addr a host-order uint32; 0 = any address, port 0 = ephemeral). */
  // `override`: a class's static side inherits Function.prototype.bind from its base constructor.
  static override bind(addr: number, port: number, opts: UdpBindOptions = {}): UdpSocket {
    const fd = native.udpOpen(addr, port, opts.rcvbuf ?? DEFAULT_SOCKET_BUFFER, opts.sndbuf ?? DEFAULT_SOCKET_BUFFER);
    let bound: number;
    try {
      bound = native.localPort(fd);
    } catch (err) {
      native.close(fd);
      throw err;
    }
    return new UdpSocket(fd, bound);
  }
}
