// TCP header (RFC 9293 §3.1), as far as weft reads and builds it: ports, sequence and
// acknowledgment numbers, data offset, flags, window, checksum.

import { checksum } from './checksum';
import { IPPROTO_TCP } from './ipv4';

/** A header without options: data offset 5 (RFC 9293 §3.1). */
export const TCP_MIN_HEADER = 20;

/** Control bits (the flags byte, offset 13). */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

export interface TcpHeaderFields {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
}

/** Writes a 20-byte header (no options, checksum 0, urgent pointer 0). Returns 20. */
export function writeTcpHeader(buf: Uint8Array, off: number, h: TcpHeaderFields): number {
  const v = new DataView(buf.buffer, buf.byteOffset + off, TCP_MIN_HEADER);
  v.setUint16(0, h.srcPort);
  v.setUint16(2, h.dstPort);
  v.setUint32(4, h.seq >>> 0);
  v.setUint32(8, h.ack >>> 0);
  buf[off + 12] = (TCP_MIN_HEADER / 4) << 4;
  buf[off + 13] = h.flags & 0xff;
  v.setUint16(14, h.window);
  v.setUint32(16, 0);
  return TCP_MIN_HEADER;
}

/** The checksum field's value for the segment buf[off, off+len) between src and dst (RFC 9293 §3.1, pseudo-header included). */
export function tcpChecksum(buf: Uint8Array, off: number, len: number, src: number, dst: number): number {
  const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + IPPROTO_TCP + len;
  return checksum(buf, off, len, pseudo);
}

export function tcpFlags(buf: Uint8Array, off: number): number {
  return buf[off + 13];
}
