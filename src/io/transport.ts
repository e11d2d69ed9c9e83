import type { PacketList } from './packet-list';

/**
 * Where a backend's packets meet the underlay: a batch in, a batch out, and a readiness
 * callback. UdpSocket is one; vxlan pairs a UDP socket (receive on 8472) with a UdpSocketPool
 * (send: one socket, hence one source port, per inner-flow hash, RFC 7348 §5); ipip uses
 * raw IP sockets both ways. MemoryTransport (memory-transport.ts) is the in-memory double that
 * weft trace/replay/wire and tests use.
 */
export interface Transport {
  /** Fill `list` from slot 0 with received datagrams (source address/port per packet); returns the count. */
  recv(list: PacketList): number;
  /** Send list's first `count` entries to their addrs/ports; returns how many the kernel took. */
  send(list: PacketList): number;
  onReadable(cb: (err?: Error) => void): void;
  close(): void;
  /** GSO/GRO counters by name, for /status (sockets opened with offloads; absent otherwise). */
  offloadStats?(): Record<string, number>;
}
