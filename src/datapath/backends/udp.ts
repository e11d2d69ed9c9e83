import type { PacketList } from '../../io/packet-list';
import { ENCAP_OK, type Backend } from '../backend';
import { Drop } from '../stats';
import type { Peer } from '../peer';

/** flannel's udp backend listens on 8285 unless Backend.Port says otherwise. */
export const UDP_DEFAULT_PORT = 8285;
/** The kernel's outer IPv4 (20) + UDP (8) headers: what a 1500-byte underlay leaves 1472 for. */
export const UDP_OVERHEAD = 28;

/**
 * flannel's udp backend on the wire: the inner IPv4 packet is the entire UDP payload, sent
 * from the node's public IP to the peer's public IP and port. No header of our own: the
 * kernel's UDP socket adds the outer IPv4 (20) + UDP (8) headers, hence 28 bytes of overhead.
 */
export class UdpBackend implements Backend {
  readonly type = 'udp' as const;
  readonly mtuOverhead = UDP_OVERHEAD;
  readonly headroom = 0;

  encap(_buf: Buffer, off: number, len: number, peer: Peer, tx: PacketList): number {
    return tx.push(off, len, peer.publicIp, peer.port) ? ENCAP_OK : Drop.SendFailed;
  }

  decap(_buf: Buffer, off: number, _len: number, _peer: Peer, _replies: PacketList): number {
    return off;
  }

  /** flannel's UDP encapsulation is the bare inner packet as the datagram's payload. */
  innerOffset(_buf: Uint8Array, off: number, _len: number): number {
    return off;
  }

  onPeerAdded(_peer: Peer): void {}
  onPeerRemoved(_peer: Peer): void {}
}
