import type { PacketList } from '../io/packet-list';
import type { Peer } from './peer';

/**
 * A view into the live pipeline for `weft monitor`: what the datapath hands an observer, and
 * when. The pipeline holds `tap: PacketTap | null`; the datapath loop and the pipeline's drop
 * path call it only when it is set, so nobody watching costs one null test per batch (datapath.ts)
 * and one per dropped packet (pipeline.ts), and nothing per forwarded packet.
 *
 * Every call is made in the middle of forwarding: an implementation copies what it keeps, does
 * no I/O, never blocks and never throws.
 */
export interface PacketTap {
  /**
   * A packet the pipeline dropped. `reason` indexes DROP_NAMES; `ingress` says which way it was
   * going; buf[off, off + len) is the packet as the pipeline had it when it gave up (on ingress:
   * the inner packet once decapsulated, the whole datagram before that); `peer` is the node it
   * came from or was routed to, when known. The bytes are only valid during the call: copy what
   * you keep, and never block.
   */
  drop(reason: number, ingress: boolean, buf: Buffer, off: number, len: number, peer: Peer | undefined): void;
  /**
   * A batch about to go through the pipeline, as read: egress, the pods' packets from the TUN;
   * ingress, the datagrams from the underlay (their sender in list.addrs / list.ports). Called
   * before the pipeline rewrites them in place (TTL, encapsulation), once per batch.
   */
  batch(ingress: boolean, list: PacketList): void;
  /**
   * Packets lost after the pipeline let them through, counted per batch by the datapath: the
   * socket refused `count` datagrams (Drop.SendFailed) or the TUN `count` packets
   * (Drop.TunWriteFailed). Which packets is not known cheaply, only how many.
   */
  lost(reason: number, ingress: boolean, count: number): void;
}
