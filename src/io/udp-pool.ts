// A send-only pool of UDP sockets at distinct source ports: vxlan's underlay sender. RFC 7348 §5
// wants the outer UDP source port to carry a hash of the inner flow (ECMP entropy); a UDP socket
// has one source port, and a raw IP_HDRINCL socket (which could write any port) cannot use
// UDP_SEGMENT. So each packet's lane (PacketList.lanes, the inner-flow hash) picks one of N
// sockets: the packets of one flow leave through one socket, consecutive and equal-sized, and
// so form GSO runs, while distinct flows spread over N source ports.

import type { PacketList } from './packet-list';
import type { Transport } from './transport';
import { UdpSocket, type UdpBindOptions } from './udp';

export class UdpSocketPool implements Transport {
  readonly sockets: UdpSocket[];
  /** The sockets' source ports, index = lane % size. */
  readonly ports: number[];
  // Per-socket descriptor arrays over the caller's slab, grown (rarely) to the largest batch
  // seen: partitioning a batch allocates nothing in steady state.
  private offs: Int32Array[] = [];
  private lens: Int32Array[] = [];
  private addrs: Uint32Array[] = [];
  private dports: Uint16Array[] = [];
  private readonly counts: Int32Array;
  private capacity = 0;

  private constructor(sockets: UdpSocket[]) {
    this.sockets = sockets;
    this.ports = sockets.map((s) => s.port);
    this.counts = new Int32Array(sockets.length);
  }

  /**
   * Binds `size` UDP sockets to addr at port 0: the kernel picks each an unused port from
   * net.ipv4.ip_local_port_range (32768–60999 by default: the range udp_flow_src_port maps the
   * kernel VXLAN device's flow hash into), so the ports are distinct and collide with nothing
   * else bound on the host. rcvbuf defaults to the kernel's: these sockets never read.
   */
  static open(addr: number, size: number, opts: UdpBindOptions = {}): UdpSocketPool {
    if (!Number.isInteger(size) || size < 1 || size > 256) throw new RangeError(`pool size must be an integer in [1, 256]: ${size}`);
    const sockets: UdpSocket[] = [];
    // The pool is one sender to its owner: told once, not once per socket.
    let told = false;
    const onGsoDisabled = (): void => {
      if (told) return;
      told = true;
      opts.onGsoDisabled?.();
    };
    try {
      for (let i = 0; i < size; i++) sockets.push(UdpSocket.bind(addr, 0, { rcvbuf: 0, ...opts, gro: false, onGsoDisabled }));
    } catch (err) {
      for (const s of sockets) s.close();
      throw err;
    }
    return new UdpSocketPool(sockets);
  }

  private grow(n: number): void {
    const k = this.sockets.length;
    this.offs = Array.from({ length: k }, () => new Int32Array(n));
    this.lens = Array.from({ length: k }, () => new Int32Array(n));
    this.addrs = Array.from({ length: k }, () => new Uint32Array(n));
    this.dports = Array.from({ length: k }, () => new Uint16Array(n));
    this.capacity = n;
  }

  /** Partitions list by lanes[i] % size (order kept within a socket) and sends each part in one batch. */
  send(list: PacketList): number {
    const n = list.count;
    if (n === 0) return 0;
    if (n > this.capacity) this.grow(list.capacity);
    const k = this.sockets.length;
    const counts = this.counts;
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const s = list.lanes[i] % k;
      const j = counts[s]++;
      this.offs[s][j] = list.offs[i];
      this.lens[s][j] = list.lens[i];
      this.addrs[s][j] = list.addrs[i];
      this.dports[s][j] = list.ports[i];
    }
    let sent = 0;
    for (let s = 0; s < k; s++) {
      if (counts[s] === 0) continue;
      sent += this.sockets[s].sendDescriptors(list.buf, this.offs[s], this.lens[s], this.addrs[s], this.dports[s], counts[s]);
    }
    return sent;
  }

  recv(list: PacketList): number {
    list.count = 0;
    return 0;
  }

  /** The pool never reads: nothing to wait for. */
  onReadable(_cb: (err?: Error) => void): void {}

  /** The sockets' GSO counters summed by name. */
  offloadStats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.sockets) for (const [k, v] of Object.entries(s.offloadStats())) out[k] = (out[k] ?? 0) + v;
    return out;
  }

  /** Closes every socket (all are tried even if one throws). Idempotent. */
  close(): void {
    let first: Error | undefined;
    for (const s of this.sockets) {
      try {
        s.close();
      } catch (err) {
        first ??= err as Error;
      }
    }
    if (first !== undefined) throw first;
  }
}
