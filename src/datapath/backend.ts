import type { PacketList } from '../io/packet-list';
import type { Peer } from './peer';

/** encap's result when the packet was queued; anything else is a Drop reason. */
export const ENCAP_OK = 0;

/**
 * One encapsulation. The pipeline does everything that is the same for every backend
 * (validation, LPM, TTL, ICMP, MTU, sender checks); a backend only knows its own outer
 * headers. encap/decap are called once per packet from the hot loop: they must not allocate.
 */
export interface Backend {
  /** Its name in the backend table (backends/index.ts, which declares BackendType). */
  readonly type: string;
  /** Bytes the encapsulation adds on the underlay; TUN MTU = underlay MTU - mtuOverhead. */
  readonly mtuOverhead: number;
  /** Bytes the backend may write in front of an inner packet in its slab slot. */
  readonly headroom: number;
  /**
   * Queue the inner packet buf[off, off+len) for `peer` on `tx`, writing any outer headers
   * into the headroom in place (tx entries may start before `off`). Returns ENCAP_OK, or the
   * Drop reason (src/datapath/stats.ts) why the packet could not be queued.
   */
  encap(buf: Buffer, off: number, len: number, peer: Peer, tx: PacketList): number;
  /**
   * Given a received datagram buf[off, off+len) from `peer`, return the offset of the inner
   * IPv4 packet, or a negative Drop reason. A backend that must answer on the underlay
   * (vxlan answering ARP for its VTEP address) writes the answer into `replies` (own slab)
   * and returns -Drop.Consumed.
   */
  decap(buf: Buffer, off: number, len: number, peer: Peer, replies: PacketList): number;
  /**
   * Where the inner IPv4 packet would start in a received datagram buf[off, off+len), or -1 if
   * the datagram cannot hold one: the layout decap relies on, read without decap's checks or
   * side effects (vxlan's ARP answers, ipip's ECN rewrite). For weft monitor, which looks at
   * datagrams before decap or that decap refused; decap alone decides what is forwarded.
   */
  innerOffset(buf: Uint8Array, off: number, len: number): number;
  onPeerAdded(peer: Peer): void;
  onPeerRemoved(peer: Peer): void;
  /** Backend tables for /status (vxlan: neighbor and forwarding entries). */
  status?(): Record<string, unknown>;
}
