// An offline node: the daemon's node — backend, peers, pipeline and the Datapath I/O loop, built
// by the same assembleNode (node.ts) the daemon calls — with the TUN device and the underlay
// sockets replaced by their in-memory doubles (io/memory-tun.ts, io/memory-transport.ts).
// `weft replay`, `weft trace` and `weft wire` run packets through it with no root, no TUN and
// no sockets, so a breakpoint in pipeline.ts or in a backend's encap/decap is hit by a command
// that needs nothing but a capture file.
//
// What is simulated, and only that, is the kernel's side of the two file descriptors (in the
// doubles) and what the kernel hands a bound socket (delivery below). Everything weft decides
// runs unchanged.

import { MemoryTransport, type SentDatagram } from '../io/memory-transport';
import { MemoryTun } from '../io/memory-tun';
import {
  IPPROTO_IPIP,
  IPPROTO_UDP,
  Ipv4Verdict,
  IPV4_VERDICT_NAMES,
  ipv4Dst,
  ipv4FragmentOffset,
  ipv4HeaderLength,
  ipv4MoreFragments,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  validateIpv4,
} from '../packet/ipv4';
import { UDP_HEADER, udpDstPort, udpLength, udpSrcPort } from '../packet/udp';
import { formatCidr, formatIpv4, type Cidr } from '../route/address';
import type { Backend } from './backend';
import { BACKEND_TYPES, BACKENDS, DEFAULT_VNI, isBackendType, type BackendConfig, type BackendType } from './backends';
import { kernelForward, type KernelForward } from './backends/hostgw';
import { VXLAN_OFFLINE_SEND_PORTS } from './backends/vxlan';
import type { Datapath } from './datapath';
import { HostRoutes } from './host-routes';
import { assembleNode } from './node';
import type { Peer, PeerLease } from './peer';
import type { PeerSet } from './peers';
import type { Pipeline } from './pipeline';
import { DatapathStats, DROP_NAMES } from './stats';

export type { SentDatagram } from '../io/memory-transport';
export type { KernelForward } from './backends/hostgw';

/** The lab's underlay MTU (veth default). */
export const DEFAULT_UNDERLAY_MTU = 1500;

export interface NodeSpec {
  subnet: Cidr;
  publicIp: number;
}

/** The nodes an offline run knows about: the Network, this node, and its peers. */
export interface OfflineTopology {
  network: Cidr;
  local: NodeSpec;
  peers: NodeSpec[];
}

export interface OfflineNodeOptions {
  backend: string;
  topology: OfflineTopology;
  /** Backend.VNI (vxlan). */
  vni?: number;
  /** Backend.Port (udp, vxlan). */
  port?: number;
  underlayMtu?: number;
  /**
   * The TUN as the daemon opens it with offloads (IFF_VNET_HDR, TSO granted): what the kernel
   * hands over is a virtio-net header and a packet, possibly a GSO super-packet, split by the
   * addon's own code; what the datapath writes is coalesced as tunWrite coalesces it (MemoryTun).
   */
  tunOffload?: boolean;
  /**
   * The leases as a live node holds them (weft monitor explaining a daemon's packets): used
   * as they are, backend data included (a kernel flanneld peer's VtepMAC is its own, not the
   * one weft would derive from its address), instead of leases made up from the topology,
   * which must then name the same nodes.
   */
  leases?: { local: PeerLease; peers: PeerLease[] };
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

/** What the kernel would hand the backend's receiving socket for one underlay packet, or why it would not. */
export type Delivery = { payload: Uint8Array; from: number; fromPort: number } | { skip: string };

export class OfflineNode {
  readonly type: BackendType;
  /** The Backend the flags describe, as net-conf.json's Backend would say it. */
  readonly backendConfig: BackendConfig;
  readonly backend: Backend;
  /** weft's datapath carries this backend's packets (every backend but host-gw, which the kernel forwards). */
  readonly tunnel: boolean;
  /** The underlay port the backend's socket is bound to (0 for ipip and host-gw). */
  readonly port: number;
  readonly topology: OfflineTopology;
  readonly network: Cidr;
  readonly localSubnet: Cidr;
  readonly localIp: number;
  readonly underlayMtu: number;
  /** Largest inner packet the tunnel carries: the daemon's TUN MTU. */
  readonly tunnelMtu: number;
  readonly peers: PeerSet;
  readonly stats = new DatapathStats();
  /** Undefined for host-gw, whose packets the kernel forwards (kernelForward). */
  readonly pipeline: Pipeline | undefined;
  readonly datapath: Datapath | undefined;
  private readonly tun: MemoryTun;
  private readonly sock: MemoryTransport;
  private readonly opts: OfflineNodeOptions;

  constructor(opts: OfflineNodeOptions) {
    if (!isBackendType(opts.backend)) {
      throw new Error(`--backend: "${opts.backend}" is not one of ${BACKEND_TYPES.join(', ')}`);
    }
    const type = opts.backend;
    const topo = opts.topology;
    this.opts = opts;
    this.tun = new MemoryTun(opts.tunOffload ?? false);
    this.type = type;
    this.topology = topo;
    this.network = topo.network;
    this.localSubnet = topo.local.subnet;
    this.localIp = topo.local.publicIp;
    this.underlayMtu = opts.underlayMtu ?? DEFAULT_UNDERLAY_MTU;
    if (!Number.isInteger(this.underlayMtu) || this.underlayMtu < 576 || this.underlayMtu > 9000) {
      throw new Error(`--mtu: ${opts.underlayMtu} is not an underlay MTU in 576..9000`);
    }
    const spec = BACKENDS[type];
    this.tunnel = spec.needsTun;
    // As net-conf.json's parser (control/netconfig.ts) fills in Backend: a port only for the UDP
    // encapsulations, a VNI only for vxlan.
    this.port = spec.defaultPort ? (opts.port ?? spec.defaultPort) : 0;
    const vni = type === 'vxlan' ? (opts.vni ?? DEFAULT_VNI) : undefined;
    this.backendConfig = { type, port: this.port || undefined, vni };

    const made = (n: NodeSpec): PeerLease => ({
      subnet: formatCidr(n.subnet),
      publicIp: formatIpv4(n.publicIp),
      backendType: type,
      backendData: spec.leaseData(n.publicIp, vni ?? 0),
    });
    const given = opts.leases;
    const lease = (n: NodeSpec): PeerLease =>
      (given && [given.local, ...given.peers].find((l) => l.subnet === formatCidr(n.subnet) && l.publicIp === formatIpv4(n.publicIp))) ?? made(n);
    // vxlan sends through a pool of UDP sockets (openVxlanTransport): the kernel adds outer IPv4
    // + UDP, the source port being the port of the socket the packet's flow hash picks.
    this.sock = new MemoryTransport(
      type === 'ipip' ? 'raw' : 'udp',
      this.localIp,
      this.port,
      this.underlayMtu,
      type === 'vxlan' ? VXLAN_OFFLINE_SEND_PORTS : undefined,
      type === 'vxlan',
    );
    const node = assembleNode({
      backend: this.backendConfig,
      network: this.network,
      lease: lease(topo.local),
      underlayMtu: this.underlayMtu,
      devices: spec.needsTun ? { tun: this.tun, transport: this.sock } : undefined,
      // host-gw's routes, as if every peer were on our underlay subnet; nothing runs `ip`.
      hostRoutes: new HostRoutes({
        iface: 'eth0',
        ifaceAddrs: [{ ip: formatIpv4(this.localIp), prefixLen: 0 }],
        log: { info() {}, error() {} },
        ip: async () => '',
      }),
      stats: this.stats,
      // ipip's outer Identification starts at 1, like vxlan's, not at random as in the daemon:
      // the same input must give the same bytes (the packet walks in docs/ depend on it).
      ipipFirstId: 1,
    });
    this.backend = node.backend;
    this.tunnelMtu = node.tunnelMtu;
    this.peers = node.peers;
    this.pipeline = node.pipeline;
    this.datapath = node.datapath;
    this.peers.applySnapshot(topo.peers.map(lease));
    this.datapath?.start((e) => {
      throw e;
    });
  }

  /** What the kernel does with a pod's packet under host-gw: it forwards by the routes the backend installs. */
  kernelForward(pkt: Uint8Array): KernelForward {
    return kernelForward(this.peers.routes, this.underlayMtu, pkt);
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
    if (!this.datapath) throw new Error('host-gw has no weft datapath: the kernel forwards by the routes weft installs (kernelForward)');
    this.tun.queue.push(pkt);
    return this.step(() => this.tun.ready!());
  }

  /** TUN_COUNTER's counters of the in-memory TUN (super-packets split, segments merged; with tunOffload). */
  get tunCounters(): Float64Array {
    return this.tun.counters;
  }

  /**
   * The same cluster seen from the node at `publicIp` (one of our peers): same backend,
   * Network and options, that node local and the others (this one included) its peers. What
   * this node sends, that one receives (delivery, ingress).
   */
  nodeAt(publicIp: number): OfflineNode {
    const all = [this.topology.local, ...this.topology.peers];
    const local = all.find((n) => n.publicIp === publicIp);
    if (!local) throw new Error(`no node at ${formatIpv4(publicIp)} in this topology`);
    return new OfflineNode({ ...this.opts, topology: { network: this.network, local, peers: all.filter((n) => n !== local) } });
  }

  /** Datagrams that arrive together (one receive batch, as recvmmsg or a GRO train hands them over). */
  ingressBatch(datagrams: readonly { payload: Uint8Array; from: number; fromPort: number }[]): StepOutcome {
    if (!this.datapath) throw new Error('host-gw has no weft datapath: the kernel delivers by its own routes');
    for (const d of datagrams) this.sock.queue.push({ payload: d.payload, addr: d.from, port: d.fromPort });
    return this.step(() => this.sock.ready!());
  }

  /** One datagram as the backend's socket receives it (see delivery()); the Datapath's socket-readable handler runs. */
  ingress(payload: Uint8Array, from: number, fromPort: number): StepOutcome {
    return this.ingressBatch([{ payload, from, fromPort }]);
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
    if (dport !== this.port) return { skip: `UDP port ${dport}, not ${this.port}: not for the ${this.type} socket` };
    const ulen = udpLength(outer, u);
    if (ulen < UDP_HEADER || ulen > total - hlen) return { skip: `UDP length ${ulen} does not fit the packet: the kernel drops it` };
    // The kernel also verifies a non-zero UDP checksum here. Replay does not: a capture taken on
    // the sending host holds what the stack handed the NIC, and with checksum offload that is
    // a partial sum the NIC completes on the way out, so good packets would look bad.
    return { payload: outer.subarray(u + UDP_HEADER, u + ulen), from, fromPort: udpSrcPort(outer, u) };
  }
}
