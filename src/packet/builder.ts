// Builds whole, valid IPv4 packets for tests, trace and the lab. Allocates; not for the datapath.

import { parseIpv4 } from '../route/address';
import { IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HEADER, writeIpv4Header } from './ipv4';
import { TCP_MIN_HEADER, tcpChecksum, writeTcpHeader, type TcpHeaderFields } from './tcp';
import { UDP_HEADER, udpChecksum, writeUdpHeader } from './udp';

export const BUILDER_DEFAULT_SRC_PORT = 40000;
export const BUILDER_DEFAULT_DST_PORT = 9000;

export interface Ipv4PacketOptions {
  src: string | number;
  dst: string | number;
  /** Defaults to UDP (17). */
  protocol?: number;
  /** Defaults to 64. */
  ttl?: number;
  /** Defaults to 0. */
  id?: number;
  /** Defaults to false. */
  df?: boolean;
  /**
   * For UDP: the UDP data; a UDP header with a valid checksum is prepended. For TCP with `tcp`
   * given: the segment data; a 20-byte TCP header with a valid checksum is prepended. Otherwise:
   * the IP payload as is. Defaults to empty.
   */
  payload?: Uint8Array;
  /** UDP and TCP (with `tcp`); default 40000. */
  srcPort?: number;
  /** UDP and TCP (with `tcp`); default 9000. */
  dstPort?: number;
  /** TCP only: build a TCP header with these sequence and acknowledgment numbers, flags and window (default: seq 0, ack 0, SYN, window 64240). */
  tcp?: Partial<Pick<TcpHeaderFields, 'seq' | 'ack' | 'flags' | 'window'>>;
}

function toAddr(a: string | number): number {
  return typeof a === 'number' ? a >>> 0 : parseIpv4(a);
}

export function buildIpv4Packet(opts: Ipv4PacketOptions): Buffer {
  const src = toAddr(opts.src);
  const dst = toAddr(opts.dst);
  const protocol = opts.protocol ?? IPPROTO_UDP;
  const payload = opts.payload ?? new Uint8Array(0);
  const tcp = protocol === IPPROTO_TCP ? opts.tcp : undefined;
  const l4Len = protocol === IPPROTO_UDP ? UDP_HEADER + payload.length : tcp ? TCP_MIN_HEADER + payload.length : payload.length;
  const total = IPV4_MIN_HEADER + l4Len;
  if (total > 0xffff) throw new RangeError(`packet of ${total} bytes exceeds the IPv4 total length field`);
  const buf = Buffer.alloc(total);
  writeIpv4Header(buf, 0, src, dst, protocol, opts.ttl ?? 64, total, opts.id ?? 0, opts.df ?? false);
  if (protocol === IPPROTO_UDP) {
    const u = IPV4_MIN_HEADER;
    writeUdpHeader(buf, u, opts.srcPort ?? BUILDER_DEFAULT_SRC_PORT, opts.dstPort ?? BUILDER_DEFAULT_DST_PORT, l4Len);
    buf.set(payload, u + UDP_HEADER);
    const ck = udpChecksum(buf, u, l4Len, src, dst);
    buf[u + 6] = ck >>> 8;
    buf[u + 7] = ck & 0xff;
  } else if (tcp) {
    const t = IPV4_MIN_HEADER;
    const h = tcp;
    writeTcpHeader(buf, t, {
      srcPort: opts.srcPort ?? BUILDER_DEFAULT_SRC_PORT,
      dstPort: opts.dstPort ?? BUILDER_DEFAULT_DST_PORT,
      seq: h.seq ?? 0,
      ack: h.ack ?? 0,
      flags: h.flags ?? 0x02,
      // Linux's initial window for a 1460-byte MSS (44 × 1460, rounded as tcp_select_initial_window does).
      window: h.window ?? 64240,
    });
    buf.set(payload, t + TCP_MIN_HEADER);
    const ck = tcpChecksum(buf, t, l4Len, src, dst);
    buf[t + 16] = ck >>> 8;
    buf[t + 17] = ck & 0xff;
  } else {
    buf.set(payload, IPV4_MIN_HEADER);
  }
  return buf;
}
