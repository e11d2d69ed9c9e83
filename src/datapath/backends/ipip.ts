import type { PacketList } from '../../io/packet-list';
import { IPPROTO_RAW, RawSocket } from '../../io/raw';
import { SplitTransport } from '../../io/split-transport';
import type { Transport } from '../../io/transport';
import { checksumUpdate16 } from '../../packet/checksum';
import { IPPROTO_IPIP, IPV4_MIN_HEADER, Ipv4Verdict, ipv4Df, ipv4Dst, ipv4HeaderLength, ipv4Protocol, validateIpv4, writeIpv4Header } from '../../packet/ipv4';
import { ENCAP_OK, type Backend } from '../backend';
import type { Peer } from '../peer';
import { Drop } from '../stats';

/**
 * RFC 2003 §3.1: "set to a value appropriate for delivery of the encapsulated datagram to the
 * tunnel exit point". The exit is one underlay path away; 64 is Linux's net.ipv4.ip_default_ttl.
 */
export const IPIP_OUTER_TTL = 64;

/** ECN field (RFC 3168 §5): the low two bits of the TOS byte. */
const ECN_MASK = 0x03;
const ECN_NOT_ECT = 0x00;
const ECN_CE = 0x03;

/** The outer IPv4 header: what a 1500-byte underlay leaves 1480 for. */
export const IPIP_OVERHEAD = IPV4_MIN_HEADER;

/** Largest inner packet whose outer Total Length still fits 16 bits. */
const MAX_INNER = 0xffff - IPV4_MIN_HEADER;

/**
 * IP in IP (RFC 2003), as Calico's IPIP mode and flannel's ipip backend put it on the wire: a
 * 20-byte outer IPv4 header, protocol 4, in front of the inner packet, nothing else. There is
 * no kernel ipip device here (and no need for one): the outer header is written into the
 * slot's headroom and the packet leaves through a raw IP_HDRINCL socket; incoming packets
 * arrive whole, outer header included, on a raw protocol-4 socket.
 */
export class IpipBackend implements Backend {
  readonly type = 'ipip' as const;
  readonly mtuOverhead = IPIP_OVERHEAD;
  readonly headroom = IPIP_OVERHEAD;
  private readonly localPublicIp: number;
  /**
   * Outer Identification: a wrapping counter. RFC 6864 §4.1 requires uniqueness only for
   * packets that may be fragmented; a per-backend counter gives that, and a random start keeps
   * a restarted daemon from reusing the IDs of its previous life right away.
   */
  private nextId: number;

  constructor(localPublicIp: number, firstId?: number) {
    this.localPublicIp = localPublicIp >>> 0;
    if (firstId !== undefined && !(Number.isInteger(firstId) && firstId >= 0 && firstId <= 0xffff)) {
      throw new RangeError(`ipip first Identification ${firstId} is not a 16-bit value`);
    }
    this.nextId = firstId ?? Math.floor(Math.random() * 0x10000);
  }

  encap(buf: Buffer, off: number, len: number, peer: Peer, tx: PacketList): number {
    if (len > MAX_INNER) return Drop.Oversize;
    const outer = off - IPV4_MIN_HEADER;
    const id = this.nextId;
    this.nextId = (id + 1) & 0xffff;
    // RFC 2003 §3.1: "if the Don't Fragment bit is set in the inner IP header, it MUST be set in
    // the outer IP header"; without it we leave DF clear (the RFC's MAY is not taken). The
    // IP_HDRINCL socket does not fragment either way (raw_send_hdrinc): anything over the
    // underlay MTU is refused, which is why the TUN MTU is 20 below it.
    writeIpv4Header(buf, outer, this.localPublicIp, peer.publicIp, IPPROTO_IPIP, IPIP_OUTER_TTL, len + IPV4_MIN_HEADER, id, ipv4Df(buf, off));
    // RFC 2003 §3.1: Type of Service "copied from the inner IP header". That copies the ECN
    // bits too, RFC 6040's normal mode; decap propagates a CE mark back (below), so a router
    // on the underlay that marks instead of dropping still signals the inner flow.
    const tos = buf[off + 1];
    if (tos !== 0) {
      const c = outer + 10;
      // writeIpv4Header leaves TOS 0; patch it into the first header word (0x45, TOS) and the
      // checksum incrementally (RFC 1624) rather than summing the header twice.
      const hc = checksumUpdate16((buf[c] << 8) | buf[c + 1], 0x4500, 0x4500 | tos);
      buf[outer + 1] = tos;
      buf[c] = hc >>> 8;
      buf[c + 1] = hc & 0xff;
    }
    return tx.push(outer, len + IPV4_MIN_HEADER, peer.publicIp, 0) ? ENCAP_OK : Drop.SendFailed;
  }

  decap(buf: Buffer, off: number, len: number, _peer: Peer, _replies: PacketList): number {
    // The raw socket hands over the outer header as received; the kernel checked its checksum
    // (ip_rcv) but nothing says a future transport will have, and the check is one pass over
    // 20 bytes.
    if (validateIpv4(buf, off, len) !== Ipv4Verdict.Ok) return -Drop.BadEncap;
    if (ipv4Protocol(buf, off) !== IPPROTO_IPIP) return -Drop.BadEncap;
    // An unbound socket, or a second address on the interface, would hand us IPIP sent to
    // another local address: not tunnel traffic for this node's lease.
    if (ipv4Dst(buf, off) !== this.localPublicIp) return -Drop.BadEncap;
    // Raw sockets receive after reassembly (ip_local_deliver), so a fragment here means a
    // transport that skipped it: its payload is not a whole inner packet.
    if (((buf[off + 6] & 0x3f) | buf[off + 7]) !== 0) return -Drop.BadEncap;
    const hlen = ipv4HeaderLength(buf, off);
    const inner = off + hlen;
    // RFC 6040 §4.2, decapsulation of a CE-marked outer header: the mark moves to an ECN-capable
    // inner header; a Not-ECT inner one cannot carry it and the packet is dropped (the outer was
    // copied from it, so no router should have marked it: it was not our encapsulation).
    if ((buf[off + 1] & ECN_MASK) === ECN_CE && len - hlen >= IPV4_MIN_HEADER) {
      const tos = buf[inner + 1];
      const ecn = tos & ECN_MASK;
      if (ecn === ECN_NOT_ECT) return -Drop.BadEncap;
      if (ecn !== ECN_CE) {
        const c = inner + 10;
        const w0 = (buf[inner] << 8) | tos;
        const hc = checksumUpdate16((buf[c] << 8) | buf[c + 1], w0, w0 | ECN_CE);
        buf[inner + 1] = tos | ECN_CE;
        buf[c] = hc >>> 8;
        buf[c + 1] = hc & 0xff;
      }
    }
    return inner;
  }

  /** RFC 2003 §3: the inner packet follows the outer IPv4 header, options included. */
  innerOffset(buf: Uint8Array, off: number, len: number): number {
    if (len < IPV4_MIN_HEADER || buf[off] >> 4 !== 4) return -1;
    const hlen = ipv4HeaderLength(buf, off);
    return hlen >= IPV4_MIN_HEADER && hlen < len ? off + hlen : -1;
  }

  onPeerAdded(_peer: Peer): void {}
  onPeerRemoved(_peer: Peer): void {}
}

/**
 * The ipip underlay: receive on a raw protocol-4 socket bound to our public IP, send through an
 * IPPROTO_RAW socket (IP_HDRINCL implied) with the outer header encap wrote. With no ipip
 * module in the kernel, the protocol-4 socket is what keeps incoming IPIP from being answered
 * with ICMP protocol-unreachable: ip_local_deliver only sends that when no raw socket took the
 * packet. Sending on that same socket is avoided: a protocol-4 IP_HDRINCL socket is also handed
 * every incoming IPIP packet, while IPPROTO_RAW is the protocol the kernel never delivers.
 */
export function openIpipTransport(localPublicIp: number): Transport {
  const receiver = RawSocket.open(IPPROTO_IPIP, { bindAddr: localPublicIp });
  try {
    // rcvbuf 0: kernel default, the send socket never receives.
    return new SplitTransport(receiver, RawSocket.open(IPPROTO_RAW, { hdrincl: true, rcvbuf: 0 }));
  } catch (err) {
    receiver.close();
    throw err;
  }
}
