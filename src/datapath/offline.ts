// An offline node: the daemon's datapath — PeerSet, Backend, Pipeline and the Datapath I/O loop,
// built as src/daemon/daemon.ts builds them — with the TUN device and the underlay socket
// replaced by in-memory queues. `weft replay`, `weft trace` and `weft wire` run packets
// through it with no root, no TUN and no sockets, so a breakpoint in pipeline.ts or in a
// backend's encap/decap is hit by a command that needs nothing but a capture file.
//
// What is simulated, and only that, is the kernel's side of the two file descriptors: the TUN
// read (one packet per slot at slot + headroom, -1 for one that does not fit) and the sockets'
// send and receive (what a UDP socket adds in front of a datagram, what an IP_HDRINCL send
// refuses, what a bound socket would be handed). Everything weft decides runs unchanged.

import { parseNetConfig, type NetworkConfig } from '../control/netconfig';
import type { Lease } from '../control/registry';
import { PeerSet } from '../daemon/peers';
import type { Transport } from '../io/transport';
import { PacketList } from '../io/packet-list';
import {
  decrementTtl,
  IPPROTO_IPIP,
  IPPROTO_UDP,
  IPV4_MIN_HEADER,
  Ipv4Verdict,
  IPV4_VERDICT_NAMES,
  ipv4Dst,
  ipv4FragmentOffset,
  ipv4HeaderLength,
  ipv4MoreFragments,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  ipv4UpdateChecksum,
  validateIpv4,
  writeIpv4Header,
} from '../packet/ipv4';
import { UDP_HEADER, udpChecksum, udpDstPort, udpLength, udpSrcPort, writeUdpHeader } from '../packet/udp';
import { cidrContainsCidr, formatCidr, formatIpv4, parseCidr, parseIpv4, type Cidr } from '../route/address';
import type { Backend, BackendType } from './backend';
import { createBackend, leaseDataFor, type BackendSetup } from './backends';
import { Datapath, type PacketDevice } from './datapath';
import type { Peer } from './peer';
import { Pipeline } from './pipeline';
import { DatapathStats, DROP_NAMES } from './stats';

export const BACKEND_NAMES: readonly BackendType[] = ['udp', 'vxlan', 'ipip', 'host-gw'];

/** The lab's shape (src/lab): Network 10.244.0.0/16, nodes 192.168.77.11.. holding 10.244.1.0/24... */
export const DEFAULT_NETWORK = '10.244.0.0/16';
export const DEFAULT_NODES: readonly { subnet: string; publicIp: string }[] = [
  { subnet: '10.244.1.0/24', publicIp: '192.168.77.11' },
  { subnet: '10.244.2.0/24', publicIp: '192.168.77.12' },
  { subnet: '10.244.3.0/24', publicIp: '192.168.77.13' },
];
/** The lab's underlay MTU (veth default). */
export const DEFAULT_UNDERLAY_MTU = 1500;
/** Linux's net.ipv4.ip_default_ttl: the TTL the kernel's sockets put on what they send. */
const KERNEL_DEFAULT_TTL = 64;

export interface NodeSpec {
  subnet: Cidr;
  publicIp: number;
}

export interface Topology {
  network: Cidr;
  local: NodeSpec;
  peers: NodeSpec[];
}

/** Command-line shape of a topology: every field optional, defaults are the lab's. */
export interface TopologyFlags {
  network?: string;
  localSubnet?: string;
  localIp?: string;
  /** "SUBNET=IP", each replacing the default peers. */
  peers?: string[];
}

function cidrFlag(flag: string, s: string): Cidr {
  try {
    return parseCidr(s);
  } catch (e) {
    throw new Error(`${flag}: ${(e as Error).message}`);
  }
}

function ipFlag(flag: string, s: string): number {
  try {
    return parseIpv4(s);
  } catch (e) {
    throw new Error(`${flag}: ${(e as Error).message}`);
  }
}

/**
 * The nodes an offline run knows about. Without --peer, the lab's three nodes; --local-ip
 * naming one of them makes that one local (so a capture taken on node 2 replays as node 2),
 * and the rest are its peers. --peer replaces the peers outright.
 */
export function resolveTopology(f: TopologyFlags): Topology {
  const network = cidrFlag('--network', f.network ?? DEFAULT_NETWORK);
  const defaults = DEFAULT_NODES.map((n) => ({ subnet: parseCidr(n.subnet), publicIp: parseIpv4(n.publicIp) }));
  const localIp = f.localIp !== undefined ? ipFlag('--local-ip', f.localIp) : defaults[0].publicIp;
  let peers: NodeSpec[];
  let local: NodeSpec;
  if (f.peers && f.peers.length > 0) {
    peers = f.peers.map((spec) => {
      const eq = spec.indexOf('=');
      if (eq < 0) throw new Error(`--peer: "${spec}" is not SUBNET=IP (e.g. 10.244.2.0/24=192.168.77.12)`);
      return { subnet: cidrFlag('--peer', spec.slice(0, eq)), publicIp: ipFlag('--peer', spec.slice(eq + 1)) };
    });
    local = { subnet: defaults[0].subnet, publicIp: localIp };
  } else {
    const chosen = defaults.find((n) => n.publicIp === localIp);
    local = chosen ?? { subnet: defaults[0].subnet, publicIp: localIp };
    peers = defaults.filter((n) => n !== chosen && n.publicIp !== localIp);
  }
  if (f.localSubnet !== undefined) local = { subnet: cidrFlag('--local-subnet', f.localSubnet), publicIp: local.publicIp };
  if (f.peers === undefined || f.peers.length === 0) {
    // Default peers give way to a local subnet that overlaps them.
    peers = peers.filter((p) => !cidrContainsCidr(p.subnet, local.subnet) && !cidrContainsCidr(local.subnet, p.subnet));
  }
  const all = [local, ...peers];
  for (const n of all) {
    if (!cidrContainsCidr(network, n.subnet)) throw new Error(`subnet ${formatCidr(n.subnet)} is outside the Network ${formatCidr(network)}`);
  }
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i];
      const b = all[j];
      if (cidrContainsCidr(a.subnet, b.subnet) || cidrContainsCidr(b.subnet, a.subnet)) {
        throw new Error(`subnets ${formatCidr(a.subnet)} and ${formatCidr(b.subnet)} overlap: each node holds its own lease`);
      }
      if (a.publicIp === b.publicIp) throw new Error(`two nodes share the public IP ${formatIpv4(a.publicIp)}`);
    }
  }
  return { network, local, peers };
}

export interface OfflineNodeOptions {
  backend: string;
  topology: Topology;
  /** Backend.VNI (vxlan). */
  vni?: number;
  /** Backend.Port (udp, vxlan). */
  port?: number;
  underlayMtu?: number;
}

/** One datagram handed to the underlay socket, and what the kernel puts on the wire for it. */
export interface SentDatagram {
  /** The bytes weft passed to send: for udp the inner packet, for vxlan/ipip a whole outer IPv4 packet. */
  payload: Buffer;
  addr: number;
  port: number;
  /**
   * The IPv4 packets on the underlay: for a UDP socket the kernel's IPv4 + UDP headers in front
   * of the payload (or its fragments); for an IP_HDRINCL send the payload itself.
   */
  wire: Buffer[];
}

export interface StepOutcome {
  /** What went to the underlay socket (egress: encapsulated packets; ingress: vxlan ARP replies). */
  sent: SentDatagram[];
  /** What was written into the TUN device (egress: ICMP errors we originate; ingress: decapsulated packets). */
  toTun: Buffer[];
  /** Drop reasons (Drop values, index DROP_NAMES) counted while handling this packet, with repeats. */
  drops: number[];
  /** Datagrams the socket refused (an IP_HDRINCL send larger than the underlay MTU: EMSGSIZE). */
  refused: SentDatagram[];
}

/**
 * The TUN side of the daemon's datapath, in memory: `read` fills the list the way the native
 * readPackets does (one packet per slot at slot + headroom, lens -1 if it does not fit) and
 * `write` keeps copies of what the datapath writes into the device.
 */
class MemoryTun implements PacketDevice {
  readonly queue: Uint8Array[] = [];
  readonly written: Buffer[] = [];
  ready: ((err?: Error) => void) | null = null;

  read(list: PacketList): number {
    const room = list.slotSize - list.headroom;
    let n = 0;
    const slots = list.slots;
    while (n < slots && this.queue.length > 0) {
      const pkt = this.queue.shift()!;
      const off = n * list.slotSize + list.headroom;
      list.offs[n] = off;
      if (pkt.length > room) {
        list.lens[n] = -1;
      } else {
        list.buf.set(pkt, off);
        list.lens[n] = pkt.length;
      }
      n++;
    }
    list.count = n;
    return n;
  }

  write(list: PacketList): number {
    for (let i = 0; i < list.count; i++) {
      if (list.lens[i] <= 0) continue;
      this.written.push(Buffer.from(list.buf.subarray(list.offs[i], list.offs[i] + list.lens[i])));
    }
    return list.count;
  }

  onReadable(cb: (err?: Error) => void): void {
    this.ready = cb;
  }

  close(): void {}
}

/**
 * The underlay socket, in memory. Sends are framed as the kernel would put them on the wire;
 * receives are filled like recvmmsg (payload at slot + headroom, sender address and port).
 */
class MemoryTransport implements Transport {
  readonly queue: { payload: Uint8Array; addr: number; port: number }[] = [];
  readonly sent: SentDatagram[] = [];
  readonly refused: SentDatagram[] = [];
  ready: ((err?: Error) => void) | null = null;

  constructor(
    /** 'udp': a UDP socket bound to localIp:port (udp backend). 'raw': an IP_HDRINCL send (vxlan, ipip). */
    private readonly kind: 'udp' | 'raw',
    private readonly localIp: number,
    private readonly port: number,
    private readonly mtu: number,
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
        d.wire.push(...udpSocketFrames(payload, this.localIp, this.port, d.addr, d.port, this.mtu));
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
 * a larger datagram is fragmented locally, without DF (__ip_make_skb / ip_fragment). The
 * kernel picks the Identification; these frames carry 0.
 */
export function udpSocketFrames(payload: Uint8Array, src: number, sport: number, dst: number, dport: number, mtu: number): Buffer[] {
  const udpLen = UDP_HEADER + payload.length;
  const total = IPV4_MIN_HEADER + udpLen;
  const whole = Buffer.alloc(total);
  const fits = total <= mtu;
  writeIpv4Header(whole, 0, src, dst, IPPROTO_UDP, KERNEL_DEFAULT_TTL, total, 0, fits);
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

/** What the kernel would hand the backend's receiving socket for one underlay packet, or why it would not. */
export type Delivery = { payload: Uint8Array; from: number; fromPort: number } | { skip: string };

export class OfflineNode {
  readonly type: BackendType;
  readonly config: NetworkConfig;
  readonly setup: BackendSetup;
  readonly backend: Backend | null;
  readonly topology: Topology;
  readonly network: Cidr;
  readonly localSubnet: Cidr;
  readonly localIp: number;
  readonly underlayMtu: number;
  /** Largest inner packet the tunnel carries: the daemon's TUN MTU. */
  readonly tunnelMtu: number;
  readonly peers: PeerSet;
  readonly stats = new DatapathStats();
  readonly pipeline: Pipeline | null;
  readonly datapath: Datapath | null;
  private readonly tun = new MemoryTun();
  private readonly sock: MemoryTransport;

  constructor(opts: OfflineNodeOptions) {
    if (!(BACKEND_NAMES as readonly string[]).includes(opts.backend)) {
      throw new Error(`--backend: "${opts.backend}" is not one of ${BACKEND_NAMES.join(', ')}`);
    }
    const type = opts.backend as BackendType;
    const topo = opts.topology;
    this.type = type;
    this.topology = topo;
    this.network = topo.network;
    this.localSubnet = topo.local.subnet;
    this.localIp = topo.local.publicIp;
    this.underlayMtu = opts.underlayMtu ?? DEFAULT_UNDERLAY_MTU;
    if (!Number.isInteger(this.underlayMtu) || this.underlayMtu < 576 || this.underlayMtu > 9000) {
      throw new Error(`--mtu: ${opts.underlayMtu} is not an underlay MTU in 576..9000`);
    }
    const backendJson: Record<string, unknown> = { Type: type };
    if (opts.vni !== undefined) backendJson.VNI = opts.vni;
    if (opts.port !== undefined) backendJson.Port = opts.port;
    this.config = parseNetConfig({ Network: formatCidr(topo.network), Backend: backendJson });

    // As Daemon.start: backend for our lease, MTU from the underlay, PeerSet fed by the leases.
    // ipip's outer Identification starts at 1, like vxlan's, not at random as in the daemon: the
    // same input must give the same bytes (the README's walks depend on it).
    const setup = createBackend(this.config, { publicIp: this.localIp, subnet: this.localSubnet }, { ipipFirstId: 1 });
    this.setup = setup;
    this.backend = setup.backend;
    this.tunnelMtu = this.underlayMtu - (this.backend?.mtuOverhead ?? 0);
    const lease = (n: NodeSpec): Lease => ({
      subnet: formatCidr(n.subnet),
      publicIp: formatIpv4(n.publicIp),
      backendType: type,
      backendData: leaseDataFor(this.config, n.publicIp),
      expiration: 0,
    });
    const backend = this.backend;
    this.peers = new PeerSet(type, setup.port, lease(topo.local), (added, removed) => {
      // Daemon.onPeersChanged: per-peer backend state before the route snapshot is swapped in.
      for (const p of added) backend?.onPeerAdded(p);
      for (const p of removed) backend?.onPeerRemoved(p);
    });
    this.peers.applySnapshot(topo.peers.map(lease));

    this.sock = new MemoryTransport(type === 'udp' ? 'udp' : 'raw', this.localIp, setup.port, this.underlayMtu);
    if (backend) {
      this.pipeline = new Pipeline({
        backend,
        routes: this.peers.routes,
        peersByAddr: this.peers.byAddr,
        network: this.network,
        localSubnet: this.localSubnet,
        icmpSource: this.localSubnet.addr,
        stats: this.stats,
        batchSize: 64,
        tunnelMtu: this.tunnelMtu,
      });
      this.datapath = new Datapath(this.tun, this.sock, this.pipeline);
      this.datapath.start((e) => {
        throw e;
      });
    } else {
      this.pipeline = null;
      this.datapath = null;
    }
  }

  /** Our own peer entry and the others, as the route table holds them. */
  routeEntries(): { subnet: Cidr; peer: Peer }[] {
    return this.peers.routes.entries().map((e) => ({ subnet: { addr: e.addr, len: e.len }, peer: e.value }));
  }

  /**
   * One packet as the kernel routes it into weft0: the Datapath's TUN-readable handler runs
   * (pipeline.egress → the backend's encap → one batched send; ICMP errors written back).
   */
  egress(pkt: Uint8Array): StepOutcome {
    if (!this.datapath) throw new Error('host-gw has no weft datapath: the kernel forwards by the routes weft installs');
    this.tun.queue.push(pkt);
    return this.step(() => this.tun.ready!());
  }

  /** One datagram as the backend's socket receives it (see delivery()); the Datapath's socket-readable handler runs. */
  ingress(payload: Uint8Array, from: number, fromPort: number): StepOutcome {
    if (!this.datapath) throw new Error('host-gw has no weft datapath: the kernel delivers by its own routes');
    this.sock.queue.push({ payload, addr: from, port: fromPort });
    return this.step(() => this.sock.ready!());
  }

  private step(fire: () => void): StepOutcome {
    const before = Float64Array.from(this.stats.drops);
    const sent0 = this.sock.sent.length;
    const refused0 = this.sock.refused.length;
    const tun0 = this.tun.written.length;
    fire();
    const drops: number[] = [];
    for (let i = 1; i < DROP_NAMES.length; i++) {
      for (let k = before[i]; k < this.stats.drops[i]; k++) drops.push(i);
    }
    const out = {
      sent: this.sock.sent.slice(sent0),
      refused: this.sock.refused.slice(refused0),
      toTun: this.tun.written.slice(tun0),
      drops,
    };
    // Nothing needs the history; keep memory flat over a long capture.
    this.sock.sent.length = 0;
    this.sock.refused.length = 0;
    this.tun.written.length = 0;
    return out;
  }

  /**
   * What the kernel does with an underlay packet before weft sees it: the backend's socket is
   * bound to our public IP (and, for udp and vxlan, to the backend's UDP port), so only packets
   * addressed there reach it, reassembled, with the UDP header stripped; ipip's
   * raw protocol-4 socket gets the whole packet, outer header included.
   */
  delivery(outer: Uint8Array): Delivery {
    const v = validateIpv4(outer, 0, outer.length);
    if (v !== Ipv4Verdict.Ok) return { skip: `not a valid IPv4 packet (${IPV4_VERDICT_NAMES[v]}): the kernel drops it` };
    const dst = ipv4Dst(outer, 0);
    if (dst !== this.localIp) return { skip: `addressed to ${formatIpv4(dst)}, not to this node (${formatIpv4(this.localIp)})` };
    if (ipv4MoreFragments(outer, 0) || ipv4FragmentOffset(outer, 0) !== 0) {
      return { skip: 'an outer fragment: the kernel reassembles before the socket sees it; replay does not' };
    }
    const total = ipv4TotalLength(outer, 0);
    const hlen = ipv4HeaderLength(outer, 0);
    const proto = ipv4Protocol(outer, 0);
    const from = ipv4Src(outer, 0);
    if (this.type === 'ipip') {
      if (proto !== IPPROTO_IPIP) return { skip: `IP protocol ${proto}, not 4 (IPIP): not for the ipip socket` };
      return { payload: outer.subarray(0, total), from, fromPort: 0 };
    }
    if (proto !== IPPROTO_UDP) return { skip: `IP protocol ${proto}, not UDP: not for the ${this.type} socket` };
    if (total - hlen < UDP_HEADER) return { skip: 'truncated UDP header: the kernel drops it' };
    const u = hlen;
    const dport = udpDstPort(outer, u);
    if (dport !== this.setup.port) return { skip: `UDP port ${dport}, not ${this.setup.port}: not for the ${this.type} socket` };
    const ulen = udpLength(outer, u);
    if (ulen < UDP_HEADER || ulen > total - hlen) return { skip: `UDP length ${ulen} does not fit the packet: the kernel drops it` };
    // The kernel also verifies a non-zero UDP checksum here. Replay does not: a capture taken on
    // the sending host holds what the stack handed the NIC, and with checksum offload that is
    // a partial sum the NIC completes on the way out, so good packets would look bad.
    return { payload: outer.subarray(u + UDP_HEADER, u + ulen), from, fromPort: udpSrcPort(outer, u) };
  }
}

/** What the kernel does with a pod's packet under host-gw, where no weft code runs. */
export type KernelForward =
  | { verdict: 'forward'; peer: Peer; packet: Buffer }
  | { verdict: 'local' | 'no-route' | 'invalid' | 'ttl' | 'too-big'; peer?: Peer; why: string };

/**
 * host-gw: the kernel forwards by `SUBNET via PEER dev IFACE`, the routes the daemon installs
 * from the same leases (src/daemon/host-routes.ts). A sketch of ip_forward's choices for one
 * packet, so replay and trace can say where it goes; the packet comes back as forwarded (TTL
 * lowered, header checksum patched as ip_decrease_ttl does).
 */
export function kernelForward(node: OfflineNode, pkt: Uint8Array): KernelForward {
  const v = validateIpv4(pkt, 0, pkt.length);
  if (v !== Ipv4Verdict.Ok) return { verdict: 'invalid', why: `${IPV4_VERDICT_NAMES[v]}: the kernel's ip_rcv drops it` };
  const peer = node.peers.routes.lookup(ipv4Dst(pkt, 0));
  if (peer === undefined) return { verdict: 'no-route', why: 'no host-gw route covers it: the kernel uses its other routes (default route, or unreachable)' };
  if (peer.local) return { verdict: 'local', peer, why: "our own lease: delivered on the pods' bridge, not forwarded" };
  if (pkt[8] <= 1) return { verdict: 'ttl', peer, why: "TTL expires: the kernel's ip_forward answers ICMP time exceeded" };
  const total = ipv4TotalLength(pkt, 0);
  if (total > node.underlayMtu && (pkt[6] & 0x40) !== 0) {
    return { verdict: 'too-big', peer, why: `larger than the underlay MTU ${node.underlayMtu} with DF: the kernel answers ICMP fragmentation needed` };
  }
  const packet = Buffer.from(pkt.subarray(0, total));
  decrementTtl(packet, 0);
  return { verdict: 'forward', peer, packet };
}
