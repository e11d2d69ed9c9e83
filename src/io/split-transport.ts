// One Transport made of two sockets: what arrives on one, what leaves through the other.
// vxlan receives on a UDP socket bound to 8472 and sends through a UdpSocketPool (one UDP socket
// per flow-hash lane, for RFC 7348 §5 source-port entropy); ipip receives on a protocol-4 raw socket and sends through an
// IPPROTO_RAW one. Sending on the receiving socket is not an option for ipip: a protocol-4
// IP_HDRINCL socket would also be handed every incoming IPIP packet, so the send-only socket is
// the protocol the kernel never delivers (IPPROTO_RAW, raw(7)).

import type { PacketList } from './packet-list';
import type { Transport } from './transport';

export class SplitTransport implements Transport {
  readonly receiver: Transport;
  readonly sender: Transport;

  constructor(receiver: Transport, sender: Transport) {
    this.receiver = receiver;
    this.sender = sender;
  }

  recv(list: PacketList): number {
    return this.receiver.recv(list);
  }

  send(list: PacketList): number {
    return this.sender.send(list);
  }

  /** Readiness of the receiving side only: the sending side is written to when there is work. */
  onReadable(cb: (err?: Error) => void): void {
    this.receiver.onReadable(cb);
  }

  /** Both sockets' offload counters, the receiver's GRO and the sender's GSO, summed by name. */
  offloadStats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of [this.receiver, this.sender]) {
      for (const [k, v] of Object.entries(t.offloadStats?.() ?? {})) out[k] = (out[k] ?? 0) + v;
    }
    return out;
  }

  /** Closes both; the sender is closed even if closing the receiver throws. Idempotent if both are. */
  close(): void {
    try {
      this.receiver.close();
    } finally {
      this.sender.close();
    }
  }
}
