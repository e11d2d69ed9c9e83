// The in-memory double of the underlay sockets (UdpSocket, UdpSocketPool, RawSocket, SplitTransport), beside
// the Transport interface they implement. What it simulates, and only that, is the kernel's
// side of the socket: what a UDP socket puts in front of a datagram (and how it fragments one),
// what an IP_HDRINCL send refuses, and what recvmmsg fills in.

import { IPPROTO_UDP, IPV4_MIN_HEADER, ipv4UpdateChecksum, writeIpv4Header } from '../packet/ipv4';
import { UDP_HEADER, udpChecksum, writeUdpHeader } from '../packet/udp';
import type { PacketList } from './packet-list';
import type { Transport } from './transport';

/** Linux's net.ipv4.ip_default_ttl: the TTL the kernel's sockets put on what they send. */
const KERNEL_DEFAULT_TTL = 64;

/** One datagram handed to the underlay socket, and what the kernel puts on the wire for it. */
export interface SentDatagram {
  /** The bytes weft passed to send: for udp the inner packet, for vxlan VXLAN + Ethernet + inner packet, for ipip a whole outer IPv4 packet. */
  payload: Buffer;
  addr: number;
  port: number;
  /**
   * The IPv4 packets on the underlay: for a UDP socket the kernel's IPv4 + UDP headers in front
   * of the payload (or its fragments); for an IP_HDRINCL send the payload itself.
   */
  wire: Buffer[];
}

/**
 * The underlay socket, in memory. Sends are framed as the kernel would put them on the wire;
 * receives are filled like recvmmsg (payload at slot + headroom, sender address and port).
 */
export class MemoryTransport implements Transport {
  readonly queue: { payload: Uint8Array; addr: number; port: number }[] = [];
  readonly sent: SentDatagram[] = [];
  readonly refused: SentDatagram[] = [];
  ready: ((err?: Error) => void) | null = null;

  constructor(
    /** 'udp': a UDP socket bound to localIp:port (udp, vxlan). 'raw': an IP_HDRINCL send (ipip). */
    private readonly kind: 'udp' | 'raw',
    private readonly localIp: number,
    private readonly port: number,
    private readonly mtu: number,
    /**
     * For 'udp': a pool of send sockets (UdpSocketPool) at these source ports, packet i sent from
     * lanePorts[lanes[i] % length]; without it every packet leaves from `port`.
     */
    private readonly lanePorts?: readonly number[],
    /** For 'udp': the socket sends with DF clear (IP_PMTUDISC_DONT, UdpBindOptions.dfClear). */
    private readonly dfClear = false,
  ) {}

  recv(list: PacketList): number {
    const room = list.slotSize - list.headroom;
    let n = 0;
    const slots = list.slots;
    while (n < slots && this.queue.length > 0) {
      const d = this.queue.shift()!;
      const off = n * list.slotSize + list.headroom;
      list.offs[n] = off;
      list.addrs[n] = d.addr;
      list.ports[n] = d.port;
      if (d.payload.length > room) {
        // MSG_TRUNC: the native receive marks a datagram that did not fit its slot.
        list.lens[n] = -1;
      } else {
        list.buf.set(d.payload, off);
        list.lens[n] = d.payload.length;
      }
      n++;
    }
    list.count = n;
    return n;
  }

  send(list: PacketList): number {
    let accepted = 0;
    for (let i = 0; i < list.count; i++) {
      const len = list.lens[i];
      if (len <= 0) continue;
      const payload = Buffer.from(list.buf.subarray(list.offs[i], list.offs[i] + len));
      const d: SentDatagram = { payload, addr: list.addrs[i], port: list.ports[i], wire: [] };
      if (this.kind === 'raw') {
        // raw(7) with IP_HDRINCL does not fragment: a packet over the device MTU fails with
        // EMSGSIZE (raw_send_hdrinc), and the native sendBatch drops it and counts it unsent.
        if (len > this.mtu) {
          this.refused.push(d);
          continue;
        }
        d.wire.push(payload);
      } else {
        const sport = this.lanePorts ? this.lanePorts[list.lanes[i] % this.lanePorts.length] : this.port;
        d.wire.push(...udpSocketFrames(payload, this.localIp, sport, d.addr, d.port, this.mtu, this.dfClear));
      }
      this.sent.push(d);
      accepted++;
    }
    return accepted;
  }

  onReadable(cb: (err?: Error) => void): void {
    this.ready = cb;
  }

  close(): void {}
}

/**
 * What an unconnected Linux UDP socket (IP_PMTUDISC_WANT, the default) puts on the wire for
 * one datagram: IPv4 (TTL 64, TOS 0) + UDP with its checksum, DF set when it fits the MTU;
 * a larger datagram is fragmented locally, without DF (__ip_make_skb / ip_fragment). With
 * dfClear (IP_PMTUDISC_DONT) DF is never set. The kernel picks the Identification; these
 * frames carry 0.
 */
export function udpSocketFrames(payload: Uint8Array, src: number, sport: number, dst: number, dport: number, mtu: number, dfClear = false): Buffer[] {
  const udpLen = UDP_HEADER + payload.length;
  const total = IPV4_MIN_HEADER + udpLen;
  const whole = Buffer.alloc(total);
  const fits = total <= mtu;
  writeIpv4Header(whole, 0, src, dst, IPPROTO_UDP, KERNEL_DEFAULT_TTL, total, 0, fits && !dfClear);
  writeUdpHeader(whole, IPV4_MIN_HEADER, sport, dport, udpLen);
  whole.set(payload, IPV4_MIN_HEADER + UDP_HEADER);
  const ck = udpChecksum(whole, IPV4_MIN_HEADER, udpLen, src, dst);
  whole[IPV4_MIN_HEADER + 6] = ck >>> 8;
  whole[IPV4_MIN_HEADER + 7] = ck & 0xff;
  if (fits) return [whole];
  // RFC 791: every fragment but the last carries a multiple of 8 data bytes and MF.
  const per = Math.floor((mtu - IPV4_MIN_HEADER) / 8) * 8;
  const frames: Buffer[] = [];
  for (let at = 0; at < udpLen; at += per) {
    const n = Math.min(per, udpLen - at);
    const f = Buffer.alloc(IPV4_MIN_HEADER + n);
    writeIpv4Header(f, 0, src, dst, IPPROTO_UDP, KERNEL_DEFAULT_TTL, IPV4_MIN_HEADER + n, 0, false);
    const word = ((at + n < udpLen ? 0x2000 : 0) | (at / 8)) & 0xffff;
    f[6] = word >>> 8;
    f[7] = word & 0xff;
    ipv4UpdateChecksum(f, 0);
    f.set(whole.subarray(IPV4_MIN_HEADER + at, IPV4_MIN_HEADER + at + n), IPV4_MIN_HEADER);
    frames.push(f);
  }
  return frames;
}
