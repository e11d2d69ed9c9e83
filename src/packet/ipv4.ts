// IPv4 header (RFC 791 §3.1): validation, field readers, TTL decrement, header writer.
//
// Every function takes (buf, off) so that a packet can be read in place inside a slab slot.
// Readers trust the caller to have run validateIpv4 first and do no bounds checks of their own.

import { checksumUpdate16, sum16 } from './checksum';

export const IPV4_MIN_HEADER = 20;

export const IPPROTO_ICMP = 1;
export const IPPROTO_IPIP = 4;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

// Byte offsets inside the header (RFC 791 §3.1 figure 4).
export const IPV4_OFF_VERSION_IHL = 0;
export const IPV4_OFF_TOS = 1;
export const IPV4_OFF_TOTAL_LENGTH = 2;
export const IPV4_OFF_ID = 4;
export const IPV4_OFF_FLAGS_FRAG = 6;
export const IPV4_OFF_TTL = 8;
export const IPV4_OFF_PROTOCOL = 9;
export const IPV4_OFF_CHECKSUM = 10;
export const IPV4_OFF_SRC = 12;
export const IPV4_OFF_DST = 16;

const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const FRAG_OFFSET_MASK = 0x1fff;

export const Ipv4Verdict = {
  Ok: 0,
  Truncated: 1,
  NotIpv4: 2,
  BadIhl: 3,
  BadTotalLength: 4,
  BadChecksum: 5,
} as const;
export type Ipv4Verdict = (typeof Ipv4Verdict)[keyof typeof Ipv4Verdict];

/** Indexed by verdict; used as metric label values. */
export const IPV4_VERDICT_NAMES: string[] = ['ok', 'truncated', 'not_ipv4', 'bad_ihl', 'bad_total_length', 'bad_checksum'];

/**
 * Checks the header of the packet occupying [off, off+len) of buf. Reads nothing outside that
 * range; a range that does not lie inside buf is reported as Truncated. Bytes past the total
 * length (link-layer padding) are allowed; RFC 1812 §5.2.2 lists the checks a router must make.
 */
export function validateIpv4(buf: Uint8Array, off: number, len: number): number {
  if (!(len >= IPV4_MIN_HEADER) || !(off >= 0) || off + len > buf.length) return Ipv4Verdict.Truncated;
  const vihl = buf[off];
  if (vihl >> 4 !== 4) return Ipv4Verdict.NotIpv4;
  const hlen = (vihl & 0x0f) << 2;
  if (hlen < IPV4_MIN_HEADER || hlen > len) return Ipv4Verdict.BadIhl;
  const total = (buf[off + 2] << 8) | buf[off + 3];
  if (total < hlen || total > len) return Ipv4Verdict.BadTotalLength;
  // A header with its checksum in place sums to 0xffff (RFC 1071 §1, "the result is checked").
  if (sum16(buf, off, hlen) !== 0xffff) return Ipv4Verdict.BadChecksum;
  return Ipv4Verdict.Ok;
}

/** Header length in bytes (IHL * 4). */
export function ipv4HeaderLength(buf: Uint8Array, off: number): number {
  return (buf[off] & 0x0f) << 2;
}

export function ipv4TotalLength(buf: Uint8Array, off: number): number {
  return (buf[off + 2] << 8) | buf[off + 3];
}

/** The version nibble: 4 for IPv4 (RFC 791 §3.1). Only meaningful once len ≥ 1. */
export function ipv4Version(buf: Uint8Array, off: number): number {
  return buf[off] >> 4;
}

/** The header checksum field as stored (RFC 791 §3.1). */
export function ipv4HeaderChecksum(buf: Uint8Array, off: number): number {
  return (buf[off + IPV4_OFF_CHECKSUM] << 8) | buf[off + IPV4_OFF_CHECKSUM + 1];
}

export function ipv4Id(buf: Uint8Array, off: number): number {
  return (buf[off + 4] << 8) | buf[off + 5];
}

export function ipv4Ttl(buf: Uint8Array, off: number): number {
  return buf[off + IPV4_OFF_TTL];
}

export function ipv4Protocol(buf: Uint8Array, off: number): number {
  return buf[off + IPV4_OFF_PROTOCOL];
}

export function ipv4Src(buf: Uint8Array, off: number): number {
  return ((buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15]) >>> 0;
}

export function ipv4Dst(buf: Uint8Array, off: number): number {
  return ((buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19]) >>> 0;
}

export function ipv4Df(buf: Uint8Array, off: number): boolean {
  return (buf[off + 6] & (FLAG_DF >> 8)) !== 0;
}

export function ipv4MoreFragments(buf: Uint8Array, off: number): boolean {
  return (buf[off + 6] & (FLAG_MF >> 8)) !== 0;
}

/** The 13-bit Fragment Offset field, in units of 8 octets (RFC 791 §3.1), not bytes. */
export function ipv4FragmentOffset(buf: Uint8Array, off: number): number {
  return ((buf[off + 6] << 8) | buf[off + 7]) & FRAG_OFFSET_MASK;
}

/** Only the first fragment carries the transport header (RFC 791 §2.3, "Fragmentation"). */
export function ipv4IsNonFirstFragment(buf: Uint8Array, off: number): boolean {
  return (((buf[off + 6] << 8) | buf[off + 7]) & FRAG_OFFSET_MASK) !== 0;
}

/**
 * Forwarding step of RFC 1812 §5.3.1: TTL - 1, with the checksum patched incrementally over the
 * 16-bit word that holds TTL and protocol (RFC 1624 §4 works this exact example). The caller has
 * checked TTL > 1 and sends Time Exceeded otherwise. Returns the new TTL.
 */
export function decrementTtl(buf: Uint8Array, off: number): number {
  const ttl = buf[off + IPV4_OFF_TTL];
  const proto = buf[off + IPV4_OFF_PROTOCOL];
  const newTtl = (ttl - 1) & 0xff;
  const c = off + IPV4_OFF_CHECKSUM;
  const hc = checksumUpdate16((buf[c] << 8) | buf[c + 1], (ttl << 8) | proto, (newTtl << 8) | proto);
  buf[off + IPV4_OFF_TTL] = newTtl;
  buf[c] = hc >>> 8;
  buf[c + 1] = hc & 0xff;
  return newTtl;
}

/** Recomputes the header checksum in place, for rewrites of more than one word; returns it. */
export function ipv4UpdateChecksum(buf: Uint8Array, off: number): number {
  const hlen = (buf[off] & 0x0f) << 2;
  buf[off + IPV4_OFF_CHECKSUM] = 0;
  buf[off + IPV4_OFF_CHECKSUM + 1] = 0;
  const hc = ~sum16(buf, off, hlen) & 0xffff;
  buf[off + IPV4_OFF_CHECKSUM] = hc >>> 8;
  buf[off + IPV4_OFF_CHECKSUM + 1] = hc & 0xff;
  return hc;
}

/**
 * Writes a 20-byte header with no options, TOS 0, fragment offset 0 and a valid checksum.
 * Returns the number of bytes written (20). Positional arguments keep the call allocation-free.
 */
export function writeIpv4Header(
  buf: Uint8Array,
  off: number,
  src: number,
  dst: number,
  protocol: number,
  ttl: number,
  totalLength: number,
  id: number,
  df: boolean,
): number {
  buf[off] = 0x45;
  buf[off + 1] = 0;
  buf[off + 2] = (totalLength >>> 8) & 0xff;
  buf[off + 3] = totalLength & 0xff;
  buf[off + 4] = (id >>> 8) & 0xff;
  buf[off + 5] = id & 0xff;
  buf[off + 6] = df ? FLAG_DF >> 8 : 0;
  buf[off + 7] = 0;
  buf[off + 8] = ttl & 0xff;
  buf[off + 9] = protocol & 0xff;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  buf[off + 12] = src >>> 24;
  buf[off + 13] = (src >>> 16) & 0xff;
  buf[off + 14] = (src >>> 8) & 0xff;
  buf[off + 15] = src & 0xff;
  buf[off + 16] = dst >>> 24;
  buf[off + 17] = (dst >>> 16) & 0xff;
  buf[off + 18] = (dst >>> 8) & 0xff;
  buf[off + 19] = dst & 0xff;
  const hc = ~sum16(buf, off, IPV4_MIN_HEADER) & 0xffff;
  buf[off + 10] = hc >>> 8;
  buf[off + 11] = hc & 0xff;
  return IPV4_MIN_HEADER;
}
