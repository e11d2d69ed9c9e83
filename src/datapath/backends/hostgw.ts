import type { PacketList } from '../../io/packet-list';
import { decrementTtl, ipv4Df, ipv4Dst, ipv4TotalLength, ipv4Ttl, IPV4_VERDICT_NAMES, Ipv4Verdict, validateIpv4 } from '../../packet/ipv4';
import type { RouteTable } from '../../route/route-table';
import type { Backend } from '../backend';
import type { HostRoutes } from '../host-routes';
import type { Peer } from '../peer';
import { Drop } from '../stats';

/**
 * flannel's host-gw backend: no encapsulation at all. Each peer's subnet becomes a kernel route
 * `SUBNET via PEER_PUBLIC_IP dev IFACE` (HostRoutes), and the kernel forwards pod packets by
 * it; nothing reaches weft, so there is no TUN, no socket and no pipeline (the backend table
 * says needsTun: false). The backend's whole job is its peer hooks, as in flannel, where
 * hostgw is a backend like the others whose lease handler installs routes.
 */
export class HostGwBackend implements Backend {
  readonly type = 'host-gw' as const;
  readonly mtuOverhead = 0;
  readonly headroom = 0;

  constructor(readonly routes: HostRoutes) {}

  /** Never called: host-gw has no datapath. A packet that got here anyway has no tunnel to take. */
  encap(_buf: Buffer, _off: number, _len: number, _peer: Peer, _tx: PacketList): number {
    return Drop.NoRoute;
  }

  /** Never called: nothing is encapsulated, so nothing arrives to be unwrapped. */
  decap(_buf: Buffer, _off: number, _len: number, _peer: Peer, _replies: PacketList): number {
    return -Drop.BadEncap;
  }

  /** Nothing is encapsulated: the kernel forwards host-gw's packets, weft receives none. */
  innerOffset(_buf: Uint8Array, _off: number, _len: number): number {
    return -1;
  }

  /** Route replacement is asynchronous and serialised inside HostRoutes; failures are logged and counted there. */
  onPeerAdded(peer: Peer): void {
    void this.routes.add(peer);
  }

  onPeerRemoved(peer: Peer): void {
    void this.routes.remove(peer);
  }
}

/** What the kernel does with a pod's packet under host-gw, where no weft code runs. */
export type KernelForward =
  { verdict: 'forward'; peer: Peer; packet: Buffer } | { verdict: 'local' | 'no-route' | 'invalid' | 'ttl' | 'too-big'; peer?: Peer; why: string };

/**
 * The kernel's side of host-gw for one packet: it forwards by the routes HostGwBackend installs
 * from the same leases that fill `routes`. A sketch of ip_forward's choices, so replay and trace
 * can say where a packet goes; it comes back as forwarded (TTL lowered, header checksum patched
 * as ip_decrease_ttl does).
 */
export function kernelForward(routes: RouteTable<Peer>, underlayMtu: number, pkt: Uint8Array): KernelForward {
  const v = validateIpv4(pkt, 0, pkt.length);
  if (v !== Ipv4Verdict.Ok) return { verdict: 'invalid', why: `${IPV4_VERDICT_NAMES[v]}: the kernel's ip_rcv drops it` };
  const peer = routes.lookup(ipv4Dst(pkt, 0));
  if (peer === undefined) return { verdict: 'no-route', why: 'no host-gw route covers it: the kernel uses its other routes (default route, or unreachable)' };
  if (peer.local) return { verdict: 'local', peer, why: "our own lease: delivered on the pods' bridge, not forwarded" };
  if (ipv4Ttl(pkt, 0) <= 1) return { verdict: 'ttl', peer, why: "TTL expires: the kernel's ip_forward answers ICMP time exceeded" };
  const total = ipv4TotalLength(pkt, 0);
  if (total > underlayMtu && ipv4Df(pkt, 0)) {
    return { verdict: 'too-big', peer, why: `larger than the underlay MTU ${underlayMtu} with DF: the kernel answers ICMP fragmentation needed` };
  }
  const packet = Buffer.from(pkt.subarray(0, total));
  decrementTtl(packet, 0);
  return { verdict: 'forward', peer, packet };
}
