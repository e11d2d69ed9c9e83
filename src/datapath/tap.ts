import type { Peer } from './peer';

/**
 * A view into the live pipeline for `weft monitor`: what the datapath hands an observer, and
 * when. The pipeline holds `tap: PacketTap | null` and calls it only on the drop path, and only
 * when it is set, so nobody watching costs one null test per dropped packet and nothing per
 * forwarded one.
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
}
