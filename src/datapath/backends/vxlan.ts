import type { PacketList } from '../../io/packet-list';
import { SplitTransport } from '../../io/split-transport';
import type { Transport } from '../../io/transport';
import { UdpSocket } from '../../io/udp';
import { UdpSocketPool } from '../../io/udp-pool';
import { formatIpv4 } from '../../route/address';
import { ARP_LEN, arpSenderIp, arpTargetIp, isArpRequest, writeArpReply, ARP_OFF_SHA } from '../../packet/arp';
import {
  ETH_HLEN,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ethertype,
  formatMac,
  isBroadcastMac,
  isMulticastMac,
  macEquals,
  parseMac,
  writeEthernetHeader,
} from '../../packet/ethernet';
import { IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HEADER } from '../../packet/ipv4';
import { UDP_HEADER } from '../../packet/udp';
import { VXLAN_HLEN, VXLAN_VNI_MAX, vxlanIFlag, vxlanVni, writeVxlanHeader } from '../../packet/vxlan';
import { ENCAP_OK, type Backend } from '../backend';
import type { Peer } from '../peer';
import { Drop } from '../stats';

/** flannel's vxlan Port default: the Linux kernel's historical VXLAN port (IANA's 4789 came later). */
export const VXLAN_DEFAULT_PORT = 8472;
/** flannel's vxlan VNI default. */
export const VXLAN_DEFAULT_VNI = 1;

/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): what a 1500-byte underlay leaves 1450 for. */
export const VXLAN_OVERHEAD = IPV4_MIN_HEADER + UDP_HEADER + VXLAN_HLEN + ETH_HLEN;
/**
 * What encap writes in front of the inner packet: VXLAN (8) + inner Ethernet (14). The outer
 * IPv4 and UDP headers are the kernel's (the send sockets are UDP sockets, openVxlanTransport).
 */
export const VXLAN_ENCAP_HEADER = VXLAN_HLEN + ETH_HLEN;
/**
 * An answer to an ARP request as handed to the send socket: VXLAN + Ethernet + ARP, 50 bytes
 * (78 on the wire with the kernel's IPv4 + UDP; no padding to 60: a tunnel is not a wire).
 */
export const VXLAN_ARP_REPLY_LEN = VXLAN_HLEN + ETH_HLEN + ARP_LEN;
/**
 * Send sockets in the pool: how many distinct outer source ports carry the flow entropy. The
 * kernel's VXLAN device has ~28k (one per flow hash); 16 is enough for an underlay's ECMP to
 * spread flows over its paths, and keeps a batch's per-socket sends few.
 */
export const VXLAN_SEND_SOCKETS = 16;
// Source ports as Linux's udp_flow_src_port picks them when the device has no `srcport` range:
// the namespace's ip_local_port_range, 32768–60999 by default (the result is < max).
export const VXLAN_SRC_PORT_MIN = 32768;
export const VXLAN_SRC_PORT_MAX = 60999;
/**
 * The pool's source ports in the offline node (weft trace/replay/wire): the kernel picks the
 * real ones (ephemeral, from ip_local_port_range); offline they are fixed so that the same
 * input gives the same bytes.
 */
export const VXLAN_OFFLINE_SEND_PORTS: readonly number[] = Array.from({ length: VXLAN_SEND_SOCKETS }, (_, i) => VXLAN_SRC_PORT_MIN + i);
const IPPROTO_DCCP = 33;
const IPPROTO_SCTP = 132;
const IPPROTO_UDPLITE = 136;

/**
 * The VTEP MAC of the node with underlay address `publicIp`: 0e:00 followed by the four bytes of
 * the address (0e:00:c0:a8:4d:0b for 192.168.77.11). 0x0e has the locally-administered bit set
 * and the group bit clear (IEEE 802), so it is a unicast address no vendor assigns. It is
 * derived rather than random so that a restarted daemon comes back with the MAC its lease
 * already carries: flannel.1 keeps its MAC while the device lives, and kernel peers holding
 * permanent neighbor and FDB entries for it keep reaching us without waiting for a lease event.
 * Docker derives container MACs from addresses (02:42:<ip>) for the same reason.
 */
export function vtepMacFor(publicIp: number): Buffer {
  const ip = publicIp >>> 0;
  return Buffer.from([0x0e, 0x00, ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff]);
}

/**
 * flannel's vxlan BackendData: the VNI and the VTEP MAC that peers put in their neighbor and
 * forwarding entries, under flannel's keys so a lease listing reads like flannel's.
 */
export function vxlanLeaseData(vni: number, vtepMac: Buffer): Record<string, unknown> {
  return { VNI: vni, VtepMAC: formatMac(vtepMac) };
}

/**
 * What encap needs for one peer, built once in onPeerAdded from the neighbor and forwarding
 * tables, as the kernel resolves neighbor → MAC → FDB → underlay address for flannel.1 (but
 * once per lease instead of once per packet). One class so every state has one shape.
 */
export class VxlanPeerState {
  constructor(
    /** The peer's VTEP MAC: the key of its forwarding entry. */
    readonly mac: Buffer,
    /** Inner Ethernet header: dst = the peer's VTEP MAC, src = ours, type IPv4. */
    readonly eth: Buffer,
    /** Underlay destination from the FDB entry for the peer's VTEP MAC. */
    readonly dst: number,
  ) {}
}

export interface VxlanBackendOptions {
  vni: number;
  port: number;
  /** Our underlay address (host order): the outer source. */
  localPublicIp: number;
  /** Our VTEP address: the .0 of our lease's subnet, which flannel puts on flannel.1 as /32. */
  localVtepIp: number;
  vtepMac: Buffer;
  log?: { warn(o: object, m: string): void };
}

interface NeighborEntry {
  mac: Buffer;
  owner: Peer;
}

interface FdbEntry {
  dst: number;
  owner: Peer;
}

/**
 * The vxlan backend, byte-compatible with the Linux kernel's VXLAN device as flanneld sets up
 * flannel.1 (id 1, dstport 8472, nolearning): every node's lease carries its VTEP MAC, and each
 * node programs, for each peer, a neighbor entry (peer VTEP IP → VTEP MAC) and a forwarding
 * entry (VTEP MAC → peer's public IP). weft keeps the same two tables in memory.
 *
 * encap writes the VXLAN header and the inner Ethernet header (22 bytes) into the headroom and
 * sets the packet's lane to the inner-flow hash (flowSrcPort); the kernel adds the outer IPv4
 * and UDP headers, the lane choosing which of a pool of UDP sockets (distinct source ports)
 * sends it (openVxlanTransport). RFC 7348 §5 wants the source port to carry a hash of the inner
 * flow so that ECMP in the underlay spreads flows; one flow's packets share a socket, so its
 * equal-size segments go out as one UDP_SEGMENT send. mtuOverhead stays 50: the outer headers
 * are still on the wire, only their writer moved.
 */
export class VxlanBackend implements Backend {
  readonly type = 'vxlan' as const;
  readonly mtuOverhead = VXLAN_OVERHEAD;
  readonly headroom = VXLAN_ENCAP_HEADER;
  readonly vni: number;
  readonly port: number;
  readonly vtepMac: Buffer;
  readonly localPublicIp: number;
  readonly localVtepIp: number;
  /**
   * Packets not sent because the peer's lease has no usable VtepMAC (or another VNI). encap
   * returns Drop.NoNeighbor for them, which the pipeline counts as no_neighbor; this counts the
   * same packets on the backend's own /status.
   */
  noNeighbor = 0;
  /** ARP requests answered (also counted by the pipeline as `consumed`). */
  arpReplies = 0;
  private readonly log?: { warn(o: object, m: string): void };
  private readonly neigh = new Map<number, NeighborEntry>();
  private readonly fdbTable = new Map<string, FdbEntry>();

  constructor(opts: VxlanBackendOptions) {
    if (!Number.isInteger(opts.vni) || opts.vni < 0 || opts.vni > VXLAN_VNI_MAX) {
      throw new RangeError(`VXLAN VNI must be an integer in [0, ${VXLAN_VNI_MAX}] (24 bits, RFC 7348 §5): ${opts.vni}`);
    }
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 0xffff) {
      throw new RangeError(`VXLAN port must be in [1, 65535]: ${opts.port}`);
    }
    if (opts.vtepMac.length !== 6 || isMulticastMac(opts.vtepMac, 0)) {
      throw new Error(`VTEP MAC must be a 6-byte unicast address: ${formatMac(opts.vtepMac)}`);
    }
    this.vni = opts.vni;
    this.port = opts.port;
    this.vtepMac = Buffer.from(opts.vtepMac);
    this.localPublicIp = opts.localPublicIp >>> 0;
    this.localVtepIp = opts.localVtepIp >>> 0;
    this.log = opts.log;
  }

  /** Our lease's BackendData (the one definition is vxlanLeaseData). */
  leaseData(): Record<string, unknown> {
    return vxlanLeaseData(this.vni, this.vtepMac);
  }

  /** For /status: our VTEP, both tables, and what could not be encapsulated or was answered. */
  status(): Record<string, unknown> {
    return {
      vni: this.vni,
      vtepMac: formatMac(this.vtepMac),
      neighbors: this.neighbors(),
      fdb: this.fdb(),
      noNeighbor: this.noNeighbor,
      arpReplies: this.arpReplies,
    };
  }

  /** The neighbor table: peer VTEP IP → VTEP MAC (what `ip neigh show dev flannel.1` lists). */
  neighbors(): { ip: string; mac: string }[] {
    return [...this.neigh].map(([ip, e]) => ({ ip: formatIpv4(ip), mac: formatMac(e.mac) }));
  }

  /** The forwarding table: VTEP MAC → underlay destination (what `bridge fdb show dev flannel.1` lists). */
  fdb(): { mac: string; dst: string }[] {
    return [...this.fdbTable].map(([mac, e]) => ({ mac, dst: formatIpv4(e.dst) }));
  }

  onPeerAdded(peer: Peer): void {
    peer.backendState = null;
    if (peer.local) return;
    const data = peer.backendData ?? {};
    const where = { subnet: `${formatIpv4(peer.subnet.addr)}/${peer.subnet.len}`, publicIp: formatIpv4(peer.publicIp) };
    // flannel's own vxlan backend never looks at a peer's VNI (all nodes share net-conf.json);
    // a lease that names another one was written by a node configured differently, whose
    // device would drop our frames (and we theirs), so it gets no entries.
    if (data.VNI !== undefined && Number(data.VNI) !== this.vni) {
      this.log?.warn({ ...where, vni: data.VNI, ours: this.vni }, 'vxlan: peer lease has another VNI; not programming it');
      return;
    }
    let mac: Buffer;
    try {
      mac = parseMac(data.VtepMAC as string);
    } catch (e) {
      this.log?.warn({ ...where, vtepMac: data.VtepMAC, err: (e as Error).message }, 'vxlan: peer lease has no usable VtepMAC; its pods are unreachable');
      return;
    }
    if (isMulticastMac(mac, 0)) {
      this.log?.warn({ ...where, vtepMac: data.VtepMAC }, 'vxlan: peer VtepMAC is a group address; not programming it');
      return;
    }
    // flanneld: `ip neigh replace <peer .0> lladdr <mac> nud permanent` and
    // `bridge fdb replace <mac> dst <public ip> self permanent`.
    const vtepIp = peer.subnet.addr >>> 0;
    this.neigh.set(vtepIp, { mac, owner: peer });
    const key = formatMac(mac);
    const prev = this.fdbTable.get(key);
    if (prev && prev.dst !== peer.publicIp) {
      this.log?.warn({ ...where, vtepMac: key, previousDst: formatIpv4(prev.dst) }, 'vxlan: VtepMAC moved to another node; replacing its forwarding entry');
    }
    this.fdbTable.set(key, { dst: peer.publicIp, owner: peer });
    peer.backendState = this.stateFor(vtepIp);
  }

  onPeerRemoved(peer: Peer): void {
    // Only entries this peer owns: a lease update arrives as added(new) then removed(old) for
    // the same subnet, and the new peer's entries must survive the old one's removal.
    const st = peer.backendState as VxlanPeerState | null;
    peer.backendState = null;
    if (st === null) return;
    const vtepIp = peer.subnet.addr >>> 0;
    if (this.neigh.get(vtepIp)?.owner === peer) this.neigh.delete(vtepIp);
    const key = formatMac(st.mac);
    if (this.fdbTable.get(key)?.owner === peer) this.fdbTable.delete(key);
  }

  /**
   * What the kernel resolves per packet for flannel.1 — neighbor (VTEP IP → MAC), then FDB
   * (MAC → underlay address) — resolved once per lease.
   */
  private stateFor(vtepIp: number): VxlanPeerState | null {
    const n = this.neigh.get(vtepIp);
    if (!n) return null;
    const f = this.fdbTable.get(formatMac(n.mac));
    if (!f) return null;
    const eth = Buffer.alloc(ETH_HLEN);
    writeEthernetHeader(eth, 0, n.mac, this.vtepMac, ETHERTYPE_IPV4);
    return new VxlanPeerState(n.mac, eth, f.dst);
  }

  encap(buf: Buffer, off: number, len: number, peer: Peer, tx: PacketList): number {
    const st = peer.backendState as VxlanPeerState | null;
    if (st === null) {
      this.noNeighbor++;
      return Drop.NoNeighbor;
    }
    const o = off - VXLAN_ENCAP_HEADER;
    if (o < 0) return Drop.SendFailed;
    // The lane picks the send socket, hence the outer source port (RFC 7348 §5 entropy).
    const lane = flowSrcPort(buf, off, len);
    // Outer TOS/ECN: the send socket's TOS, 0 (not-ECT) for every packet. Before, the outer
    // copied the inner ECN (RFC 6040 §4.1 normal mode, as the kernel's ip_tunnel_ecn_encap);
    // doing so through a socket needs an IP_TOS cmsg per packet, which would break GSO runs.
    // A not-ECT outer is RFC 6040's compatibility mode (§4.2): always safe, and the decapsulator
    // leaves the inner ECN as it was; congestion marks in the underlay are dropped (not
    // forwarded as CE), so ECN-capable inner flows see loss there instead.
    writeVxlanHeader(buf, o, this.vni);
    const e = o + VXLAN_HLEN;
    const eth = st.eth;
    for (let i = 0; i < ETH_HLEN; i++) buf[e + i] = eth[i];
    return tx.push(o, len + VXLAN_ENCAP_HEADER, st.dst, this.port, lane) ? ENCAP_OK : Drop.SendFailed;
  }

  decap(buf: Buffer, off: number, len: number, peer: Peer, replies: PacketList): number {
    if (len < VXLAN_HLEN + ETH_HLEN) return -Drop.BadEncap;
    if (!vxlanIFlag(buf, off)) return -Drop.BadEncap;
    if (vxlanVni(buf, off) !== this.vni) return -Drop.WrongVni;
    const e = off + VXLAN_HLEN;
    const type = ethertype(buf, e);
    if (type === ETHERTYPE_IPV4) {
      // flannel.1 hands the kernel only frames for its own MAC (others are PACKET_OTHERHOST and
      // never reach IP); we are that device.
      if (!macEquals(buf, e, this.vtepMac, 0)) return -Drop.WrongMac;
      return e + ETH_HLEN;
    }
    if (type === ETHERTYPE_ARP) return this.arp(buf, e, len - VXLAN_HLEN, peer, replies);
    return -Drop.WrongEthertype;
  }

  /** RFC 7348 §5: VXLAN header, then the inner Ethernet frame; only an IPv4 one holds a packet. */
  innerOffset(buf: Uint8Array, off: number, len: number): number {
    const e = off + VXLAN_HLEN;
    if (len < VXLAN_HLEN + ETH_HLEN || ethertype(buf, e) !== ETHERTYPE_IPV4) return -1;
    return e + ETH_HLEN;
  }

  /**
   * A kernel VTEP without a permanent neighbor entry for our VTEP address asks for it: the
   * request is broadcast, replicated by its all-zeros FDB entry to us. We answer as flannel.1's
   * kernel would (arp_process): a unicast reply to the requester's MAC, sender = our VTEP
   * MAC/IP. Only requests for our VTEP address are answered; other ARP is not ours to handle
   * (counted as wrong_ethertype: this datapath carries IPv4 and answers only that question).
   */
  private arp(buf: Buffer, e: number, frameLen: number, peer: Peer, replies: PacketList): number {
    const a = e + ETH_HLEN;
    if (!isArpRequest(buf, a, frameLen - ETH_HLEN)) return -Drop.WrongEthertype;
    // arp_rcv drops frames for another station (PACKET_OTHERHOST); a request is broadcast,
    // or unicast to us when the kernel re-validates a stale entry (NUD_PROBE).
    if (!isBroadcastMac(buf, e) && !macEquals(buf, e, this.vtepMac, 0)) return -Drop.WrongMac;
    if (arpTargetIp(buf, a) !== this.localVtepIp) return -Drop.WrongEthertype;
    const requesterIp = arpSenderIp(buf, a);
    const slot = replies.count * replies.slotSize;
    if (replies.count >= replies.capacity || slot + VXLAN_ARP_REPLY_LEN > replies.buf.length || replies.slotSize < VXLAN_ARP_REPLY_LEN) {
      return -Drop.SendFailed;
    }
    const out = replies.buf;
    // The reply goes to the VXLAN port, not to the request's source port: a kernel VTEP picks
    // source ports by flow hash and listens only on its dstport (RFC 7348 §5).
    const dst = peer.publicIp;
    const lane = portFromHash(mix3(this.localVtepIp, requesterIp, ETHERTYPE_ARP));
    writeVxlanHeader(out, slot, this.vni);
    const re = slot + VXLAN_HLEN;
    // Ethernet destination: the requester's hardware address from the ARP body, as arp_send does.
    for (let i = 0; i < 6; i++) {
      out[re + i] = buf[a + ARP_OFF_SHA + i];
      out[re + 6 + i] = this.vtepMac[i];
    }
    out[re + 12] = ETHERTYPE_ARP >>> 8;
    out[re + 13] = ETHERTYPE_ARP & 0xff;
    writeArpReply(out, re + ETH_HLEN, this.vtepMac, this.localVtepIp, buf, a + ARP_OFF_SHA, requesterIp);
    replies.push(slot, VXLAN_ARP_REPLY_LEN, dst, this.port, lane);
    this.arpReplies++;
    return -Drop.Consumed;
  }
}

/** Protocols whose first 4 bytes are source and destination port, which Linux's flow dissector hashes. */
function hasPorts(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP || proto === IPPROTO_DCCP || proto === IPPROTO_UDPLITE;
}

/**
 * UDP source port for the inner IPv4 packet buf[off, off+len) (validated by the pipeline):
 * a hash of the flow — addresses, protocol, and the L4 ports when this is a first fragment
 * (later fragments carry no transport header, RFC 791) — mapped into the ephemeral range.
 * RFC 7348 §5: "it is recommended that the UDP source port number be calculated using a hash
 * of fields from the inner packet ... for ECMP entropy". The kernel's key is random per boot
 * (siphash), so the exact ports cannot match its; the properties do: the same flow always gets
 * the same port, both directions of a flow hash alike (the kernel orders the endpoints before
 * hashing, __flow_hash_consistentify), and the mapping is udp_flow_src_port's.
 */
export function flowSrcPort(buf: Uint8Array, off: number, len: number): number {
  const src = ((buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15]) >>> 0;
  const dst = ((buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19]) >>> 0;
  const proto = buf[off + 9];
  const ihl = (buf[off] & 0x0f) << 2;
  let sp = 0;
  let dp = 0;
  const firstFragment = (((buf[off + 6] << 8) | buf[off + 7]) & 0x1fff) === 0;
  if (firstFragment && hasPorts(proto) && ihl + 4 <= len) {
    sp = (buf[off + ihl] << 8) | buf[off + ihl + 1];
    dp = (buf[off + ihl + 2] << 8) | buf[off + ihl + 3];
  }
  // Order the endpoints so A→B and B→A hash alike.
  let a = src;
  let b = dst;
  let pa = sp;
  let pb = dp;
  if (src > dst || (src === dst && sp > dp)) {
    a = dst;
    b = src;
    pa = dp;
    pb = sp;
  }
  return portFromHash(mix3(a, b, (((pa << 16) | pb) ^ Math.imul(proto, 0x9e3779b1)) >>> 0));
}

/** udp_flow_src_port's mapping: fold the hash (hash ^= hash << 16), then scale it into [min, max). */
export function portFromHash(h: number): number {
  const x = (h ^ (h << 16)) >>> 0;
  return VXLAN_SRC_PORT_MIN + Math.floor((x * (VXLAN_SRC_PORT_MAX - VXLAN_SRC_PORT_MIN)) / 4294967296);
}

// MurmurHash3's 32-bit block mix and finaliser: cheap, allocation-free, good avalanche.
function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function mix3(a: number, b: number, c: number): number {
  let h = 0x5745_4654; // "WEFT"
  h = mixWord(h, a | 0);
  h = mixWord(h, b | 0);
  h = mixWord(h, c | 0);
  h ^= 12;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The vxlan underlay: receive on a UDP socket bound to our public IP and the VXLAN port (the
 * kernel strips outer IPv4 and UDP, and checks the UDP checksum when there is one); send
 * through a pool of VXLAN_SEND_SOCKETS UDP sockets bound to our public IP at ports the kernel
 * picks (UdpSocketPool), each packet through the socket its lane (flow hash) names. With
 * `gso`, the pool sends runs with UDP_SEGMENT.
 *
 * What the kernel puts on the wire for these sockets, against its own VXLAN device (vxlan_xmit
 * with flanneld's defaults):
 *   - UDP checksum: computed (a socket's default). The VXLAN device over IPv4 sends 0
 *     (udpcsum off); both are valid (RFC 7348 §5), and every receiver, kernel or weft, accepts
 *     either. SO_NO_CHECK would match the device, but the kernel refuses UDP_SEGMENT sends on
 *     such a socket (udp_send_skb: EINVAL), and the checksum costs little with GSO (per
 *     segment, offloaded where the device can) while covering the inner Ethernet header, which
 *     no other checksum does. Before this, weft sent 0.
 *   - DF: clear, as the VXLAN device (no `df` option) and weft's raw socket before: the pool
 *     sockets set IP_MTU_DISCOVER = IP_PMTUDISC_DONT (dfClear). So an outer packet over the
 *     route MTU is fragmented by the socket, as the device does; the raw IP_HDRINCL socket used
 *     before refused it (EMSGSIZE).
 *   - TTL 64 (ip_default_ttl) either way; TOS 0 (see encap); Identification the kernel's
 *     (ip_select_ident, as the device's; weft counted its own before).
 *   - Source port: one of the pool's ports, by flow; the VXLAN device hashes each flow to one
 *     of ~28k ports in the same range, weft before to one of ~28k as well.
 *
 * The receive side always runs through UDP_GRO's staging path with the VXLAN and inner Ethernet
 * headers declared (groTunnelHeader): a kernel VXLAN peer (flanneld's flannel.1) hands its
 * TSO super-packets to the underlay whole, a veth or Docker bridge passes them on unsegmented,
 * and our socket then receives one 64 KB datagram where a NIC would have delivered ~45. The
 * addon cuts it into the inner packets the peer meant, each behind a copy of the tunnel headers,
 * at most `tunnelMtu` bytes, with complete checksums; without it such a datagram would be
 * truncated and dropped, and TCP from a kernel peer would stall.
 */
export function openVxlanTransport(
  localPublicIp: number,
  port: number,
  opts: { tunnelMtu: number; gso?: boolean; onGsoDisabled?: (socket: string) => void },
): Transport {
  const receiver = UdpSocket.bind(localPublicIp, port, { gro: true, groTunnelHeader: VXLAN_ENCAP_HEADER, groTunnelMtu: opts.tunnelMtu });
  try {
    const sender = UdpSocketPool.open(localPublicIp, VXLAN_SEND_SOCKETS, {
      dfClear: true,
      gso: opts.gso ?? false,
      onGsoDisabled: () => opts.onGsoDisabled?.(`vxlan ${port} send pool`),
    });
    return new SplitTransport(receiver, sender);
  } catch (err) {
    receiver.close();
    throw err;
  }
}
