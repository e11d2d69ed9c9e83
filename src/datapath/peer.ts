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
}
