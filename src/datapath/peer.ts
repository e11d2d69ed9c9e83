import type { Cidr } from '../route/address';

/**
 * Another node as the datapath sees it: where its pods live (its lease's subnet) and where
 * to send their packets (its public IP and encapsulation port). One object per lease, created
 * on lease events, never per packet.
 */
export interface Peer {
  /** The lease's subnet, e.g. 10.244.3.0/24. */
  readonly subnet: Cidr;
  /** Underlay address of the node, host-order uint32. */
  readonly publicIp: number;
  /** Destination port on the underlay (flannel udp: 8285, vxlan: 8472; 0 for ipip). */
  readonly port: number;
  /** Backend data from the lease (vxlan: VtepMAC, VNI). */
  readonly backendData: Record<string, unknown>;
  /** True for our own subnet: packets routed here must not be sent anywhere. */
  readonly local: boolean;
  /**
   * DirectRouting: the peer shares our underlay subnet, so the kernel reaches its pods by a
   * host-gw route and the tunnel is not used for it.
   */
  direct: boolean;
  /**
   * What the backend precomputed for this peer in onPeerAdded (vxlan: the inner Ethernet
   * header from its neighbor and forwarding entries), so encap does no table lookups per
   * packet. Every Peer has the field, set or null, to keep one object shape.
   */
  backendState: unknown;
  /**
   * What the pipeline moved to and from this peer, counted where it already counts the node's
   * totals (one field increment on an object it holds anyway) and read only when someone asks
   * (/metrics, /status). A new Peer (a changed lease) starts from zero, as a counter may.
   */
  readonly counters: PeerCounters;
}

/** Per-peer datapath counters (see Peer.counters). Plain numbers: a double counts exactly to 2^53. */
export class PeerCounters {
  /** Inner packets encapsulated towards the peer, and their bytes (the inner IPv4 Total Length). */
  txPackets = 0;
  txBytes = 0;
  /** Inner packets decapsulated from the peer and written to TUN, and their bytes. */
  rxPackets = 0;
  rxBytes = 0;
  /** Datagrams from the peer dropped after it was identified (bad encapsulation, spoofed source, ...). */
  rxDrops = 0;
  /** Packets routed to the peer and dropped before they left (TTL, MTU, no neighbour, send refused). */
  txDrops = 0;
}

/**
 * What the datapath needs of a lease to route to its holder: the control plane's Lease
 * (control/registry.ts) is one, with its expiry on top. Declared here, below the control plane,
 * so the datapath depends on nothing above it.
 */
export interface PeerLease {
  /** The node's subnet in CIDR form, e.g. "10.244.3.0/24". */
  subnet: string;
  /** The node's underlay address; peers send encapsulated traffic here. */
  publicIp: string;
  backendType: string;
  /** Backend-specific attributes (e.g. vxlan's VtepMAC), opaque to the registry. */
  backendData: Record<string, unknown>;
}

/** A lease appearing (granted, renewed, changed) or going away, as a watch reports it. */
export interface PeerLeaseEvent {
  type: 'added' | 'removed';
  lease: PeerLease;
}
