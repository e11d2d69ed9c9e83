import { PacketList } from '../io/packet-list';
import { cidrContains, type Cidr } from '../route/address';
import type { RouteTable } from '../route/route-table';
import { decrementTtl, ipv4Df, ipv4Dst, ipv4Src, ipv4TotalLength, ipv4Ttl, validateIpv4, Ipv4Verdict } from '../packet/ipv4';
import { buildIcmpError, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_NET_UNREACH, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED } from '../packet/icmp';
import { ENCAP_OK, type Backend } from './backend';
import type { Peer } from './peer';
import { type DatapathStats, Drop } from './stats';
import type { PacketTap } from './tap';

/** Largest ICMP error we build: IPv4 (20) + ICMP (8) + quoted header (≤60) + 8 bytes. */
const ICMP_SLOT = 128;
/** Largest underlay reply a backend writes (vxlan ARP reply: 20 + 8 + 8 + 14 + 28 = 78 bytes). */
const REPLY_SLOT = 128;

export interface PipelineOptions {
  backend: Backend;
  routes: RouteTable<Peer>;
  /** Sender lookup for ingress: underlay address → peer. */
  peersByAddr: Map<number, Peer>;
  network: Cidr;
  localSubnet: Cidr;
  /** Source address of the ICMP errors we originate: the TUN device's address, as a router uses its interface address. */
  icmpSource: number;
  stats: DatapathStats;
  /** Packets per batch; sizes the ICMP and reply lists. */
  batchSize: number;
  /**
   * Largest inner packet the tunnel carries without fragmenting the outer one: underlay MTU
   * minus the backend's overhead. Normally the TUN MTU, so the kernel never hands us more;
   * if the TUN MTU is raised past it, DF packets get ICMP fragmentation-needed from us.
   */
  tunnelMtu: number;
}

/**
 * The per-packet decisions, with no I/O: given a batch read from TUN or a socket, fill the
 * lists of what must be sent or written. This is where a debugger breakpoint shows every
 * routing and encapsulation decision; the I/O loop around it (datapath.ts) only moves batches.
 */
export class Pipeline {
  readonly backend: Backend;
  readonly stats: DatapathStats;
  /** ICMP errors we originate, written back into TUN after each egress batch. */
  readonly icmpOut: PacketList;
  /** Underlay answers a backend writes while decapsulating (ARP replies), sent after each ingress batch. */
  readonly replies: PacketList;
  private readonly tunnelMtu: number;
  private readonly routes: RouteTable<Peer>;
  private readonly peersByAddr: Map<number, Peer>;
  private readonly network: Cidr;
  private readonly localSubnet: Cidr;
  private readonly icmpSource: number;
  /** `weft monitor`'s view of the drops (tap.ts); null while nobody is attached. */
  tap: PacketTap | null = null;

  constructor(opts: PipelineOptions) {
    this.backend = opts.backend;
    this.routes = opts.routes;
    this.peersByAddr = opts.peersByAddr;
    this.network = opts.network;
    this.localSubnet = opts.localSubnet;
    this.icmpSource = opts.icmpSource;
    this.stats = opts.stats;
    this.tunnelMtu = opts.tunnelMtu;
    this.icmpOut = new PacketList({ capacity: opts.batchSize, slotSize: ICMP_SLOT, headroom: 0 });
    this.replies = new PacketList({ capacity: opts.batchSize, slotSize: REPLY_SLOT, headroom: 0 });
  }

  /**
   * Egress: packets the kernel routed into TUN. Valid packets with a leased destination are
   * handed to the backend, which queues them (outer headers written in place) on `tx`.
   * The caller clears `tx` and `icmpOut` before each batch.
   */
  egress(rx: PacketList, tx: PacketList): void {
    const buf = rx.buf;
    const stats = this.stats;
    const backend = this.backend;
    const n = rx.count;
    stats.tunReadPackets += n;
    for (let i = 0; i < n; i++) {
      const off = rx.offs[i];
      const len = rx.lens[i];
      if (len < 0) {
        // Larger than a slot: the TUN MTU raised past what we sized for, or (trace, replay) a
        // captured super-packet handed over as one packet, without a virtio-net header. A live
        // super-packet is split before this; one it cannot split is refused and counted there.
        this.drop(Drop.Oversize, false, buf, off, 0, undefined);
        continue;
      }
      const verdict = validateIpv4(buf, off, len);
      if (verdict !== Ipv4Verdict.Ok) {
        this.drop(verdict, false, buf, off, len, undefined);
        continue;
      }
      const dst = ipv4Dst(buf, off);
      const peer = this.routes.lookup(dst);
      if (peer === undefined) {
        if (cidrContains(this.network, dst)) {
          // No lease covers it: answer as a router with no route would (RFC 1812 §5.2.7.1).
          this.icmpError(buf, off, len, ICMP_DEST_UNREACH, ICMP_NET_UNREACH);
          this.drop(Drop.NoRoute, false, buf, off, len, undefined);
        } else {
          this.drop(Drop.NotInNetwork, false, buf, off, len, undefined);
        }
        continue;
      }
      if (peer.local) {
        this.drop(Drop.LocalDestination, false, buf, off, len, undefined);
        continue;
      }
      // We forward like a router, so we decrement TTL as flannel's udp proxy does; a packet
      // that would leave with TTL 0 is answered with time-exceeded (RFC 1812 §5.3.1).
      if (ipv4Ttl(buf, off) <= 1) {
        this.icmpError(buf, off, len, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED);
        this.drop(Drop.TtlExpired, false, buf, off, len, peer);
        continue;
      }
      // Send exactly the IP datagram: anything the device appended past Total Length is not ours.
      const total = ipv4TotalLength(buf, off);
      if (total > this.tunnelMtu && ipv4Df(buf, off)) {
        // Path MTU discovery (RFC 1191): tell the sender what fits; its kernel caches it and
        // TCP shrinks its segments. Without DF it goes on: the udp backend's socket fragments
        // the outer datagram, while the raw IP_HDRINCL send of vxlan and ipip refuses anything
        // over the underlay MTU (counted as send_failed) — the TUN MTU normally prevents both.
        this.icmpError(buf, off, len, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, this.tunnelMtu);
        this.drop(Drop.TooBig, false, buf, off, len, peer);
        continue;
      }
      decrementTtl(buf, off);
      const result = backend.encap(buf, off, total, peer, tx);
      if (result === ENCAP_OK) {
        stats.txPackets++;
        stats.txBytes += total;
        const pc = peer.counters;
        pc.txPackets++;
        pc.txBytes += total;
      } else {
        this.drop(result, false, buf, off, total, peer);
      }
    }
  }

  /**
   * Ingress: datagrams from the underlay. Only a node holding a lease may send to us, only
   * for sources inside its own subnet, and only to destinations inside ours.
   */
  ingress(rx: PacketList, toTun: PacketList): void {
    const replies = this.replies;
    const buf = rx.buf;
    const stats = this.stats;
    const n = rx.count;
    for (let i = 0; i < n; i++) {
      const len = rx.lens[i];
      const off = rx.offs[i];
      if (len < 0) {
        this.drop(Drop.Oversize, true, buf, off, 0, undefined);
        continue;
      }
      const peer = this.peersByAddr.get(rx.addrs[i]);
      if (peer === undefined || peer.local) {
        this.drop(Drop.UnknownPeer, true, buf, off, len, undefined);
        continue;
      }
      const inner = this.backend.decap(buf, off, len, peer, replies);
      if (inner < 0) {
        // Consumed (an ARP request the backend answered) is counted with the drops but is the
        // backend doing its job, not the peer sending something wrong.
        if (inner === -Drop.Consumed) stats.drops[Drop.Consumed]++;
        else this.drop(-inner, true, buf, off, len, peer);
        continue;
      }
      const innerLen = len - (inner - off);
      const verdict = validateIpv4(buf, inner, innerLen);
      if (verdict !== Ipv4Verdict.Ok) {
        this.drop(verdict, true, buf, inner, innerLen, peer);
        continue;
      }
      if (!cidrContains(peer.subnet, ipv4Src(buf, inner))) {
        this.drop(Drop.SrcNotInPeerSubnet, true, buf, inner, innerLen, peer);
        continue;
      }
      if (!cidrContains(this.localSubnet, ipv4Dst(buf, inner))) {
        this.drop(Drop.DstNotLocal, true, buf, inner, innerLen, peer);
        continue;
      }
      const total = ipv4TotalLength(buf, inner);
      toTun.push(inner, total);
      stats.rxPackets++;
      stats.rxBytes += total;
      const pc = peer.counters;
      pc.rxPackets++;
      pc.rxBytes += total;
    }
  }

  /**
   * Every drop goes through here: the node's count by reason, the peer's when it is known, and
   * the monitor's tap when one is attached. Only dropped packets pay for the call.
   */
  private drop(reason: number, ingress: boolean, buf: Buffer, off: number, len: number, peer: Peer | undefined): void {
    this.stats.drops[reason]++;
    if (peer !== undefined) {
      if (ingress) peer.counters.rxDrops++;
      else peer.counters.txDrops++;
    }
    if (this.tap !== null) this.tap.drop(reason, ingress, buf, off, len, peer);
  }

  private icmpError(buf: Buffer, off: number, len: number, type: number, code: number, mtu = 0): void {
    const out = this.icmpOut;
    if (out.count >= out.capacity) return;
    const slot = out.count * ICMP_SLOT;
    const n = buildIcmpError(out.buf, slot, buf, off, len, type, code, this.icmpSource, mtu);
    if (n > 0) out.push(slot, n);
  }
}
