// UDP header (RFC 768).

import { sum16 } from './checksum';
import { IPPROTO_UDP } from './ipv4';

export const UDP_HEADER = 8;

/** Writes the 8-byte header; checksum 0 means "not computed" (RFC 768). Returns 8. */
export function writeUdpHeader(buf: Uint8Array, off: number, srcPort: number, dstPort: number, length: number, checksum = 0): number {
  buf[off] = (srcPort >>> 8) & 0xff;
  buf[off + 1] = srcPort & 0xff;
  buf[off + 2] = (dstPort >>> 8) & 0xff;
  buf[off + 3] = dstPort & 0xff;
  buf[off + 4] = (length >>> 8) & 0xff;
  buf[off + 5] = length & 0xff;
  buf[off + 6] = (checksum >>> 8) & 0xff;
  buf[off + 7] = checksum & 0xff;
  return UDP_HEADER;
}

export function udpSrcPort(buf: Uint8Array, off: number): number {
  return (buf[off] << 8) | buf[off + 1];
}

export function udpDstPort(buf: Uint8Array, off: number): number {
  return (buf[off + 2] << 8) | buf[off + 3];
}

export function udpLength(buf: Uint8Array, off: number): number {
  return (buf[off + 4] << 8) | buf[off + 5];
}

export function udpChecksumField(buf: Uint8Array, off: number): number {
  return (buf[off + 6] << 8) | buf[off + 7];
}

/**
 * Checksum of the UDP datagram at [off, off+len) with the RFC 768 pseudo-header (source,
 * destination, zero, protocol, UDP length = len). The checksum field in buf is skipped (taken as
 * zero), so the result is both the value to store and, for a received datagram with a non-zero
 * field, the value it must equal. A computed 0 is returned as 0xffff, because 0 on the wire means
 * "no checksum" (RFC 768, "If the computed checksum is zero, it is transmitted as all ones").
 */
export function udpChecksum(buf: Uint8Array, off: number, len: number, srcIp: number, dstIp: number): number {
  let sum = (srcIp >>> 16) + (srcIp & 0xffff) + (dstIp >>> 16) + (dstIp & 0xffff) + IPPROTO_UDP + (len & 0xffff);
  sum = sum16(buf, off, len < 6 ? len : 6, sum);
  if (len > UDP_HEADER) sum = sum16(buf, off + UDP_HEADER, len - UDP_HEADER, sum);
  const ck = ~sum & 0xffff;
  return ck === 0 ? 0xffff : ck;
}
