import type { PacketList } from '../io/packet-list';
import type { Peer } from './peer';

/**
 * One encapsulation. The pipeline does everything that is the same for every backend
 * (validation, LPM, TTL, ICMP, sender checks); a backend only knows its own outer headers.
 * Methods are called once per packet from the hot loop: they must not allocate.
 */
export interface Backend {
  readonly type: 'udp' | 'vxlan' | 'ipip' | 'host-gw';
  /** Bytes the encapsulation adds on the underlay; TUN MTU = underlay MTU - mtuOverhead. */
  readonly mtuOverhead: number;
  /** Bytes the backend may write in front of an inner packet in its slab slot. */
  readonly headroom: number;
  /**
   * Queue the inner packet buf[off, off+len) for `peer` on `tx`, writing any outer headers
   * into the headroom in place. Returns false if the packet could not be queued.
   */
  encap(buf: Buffer, off: number, len: number, peer: Peer, tx: PacketList): boolean;
  /**
   * Given a received datagram buf[off, off+len) from `peer`, return the offset of the inner
   * IPv4 packet, or a negative Drop reason.
   */
  decap(buf: Buffer, off: number, len: number, peer: Peer): number;
  onPeerAdded(peer: Peer): void;
  onPeerRemoved(peer: Peer): void;
}
