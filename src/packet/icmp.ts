// ICMP errors a forwarding node sends (RFC 792, RFC 1812 §4.3, RFC 1191) and echo for tests.

import { checksum } from './checksum';
import { IPPROTO_ICMP, IPV4_MIN_HEADER, writeIpv4Header } from './ipv4';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;

// Destination Unreachable codes (RFC 792, RFC 1191).
export const ICMP_NET_UNREACH = 0;
export const ICMP_HOST_UNREACH = 1;
export const ICMP_FRAG_NEEDED = 4;
// Time Exceeded codes (RFC 792).
export const ICMP_TTL_EXCEEDED = 0;

export const ICMP_HEADER = 8;
/** Octets of the original datagram's data quoted after its header (RFC 792, RFC 1812 §4.3.2.3). */
export const ICMP_QUOTE_DATA = 8;
/** Largest message buildIcmpError writes: IPv4 + ICMP header + 60-byte header + 8 octets. */
export const ICMP_ERROR_MAX = IPV4_MIN_HEADER + ICMP_HEADER + 60 + ICMP_QUOTE_DATA;

// Originated datagrams carry the host's default TTL (RFC 1122 §3.2.1.7); 64 as Linux's ip_default_ttl.
const ICMP_ERROR_TTL = 64;

// Identification for generated errors. DF is clear, so RFC 6864 §4.1 wants IDs that differ
// between datagrams; a wrapping counter is what Linux's ip_select_ident approximates.
let nextIcmpId = 0;

/**
 * Query (non-error) message types, after Linux's icmp_pointers table: echo, timestamp,
 * information and address-mask requests and replies. Every other type, including unassigned
 * ones, is treated as an error so that we never answer an error with an error (RFC 1812 §4.3.2.7).
 */
/** The ICMP message's type field (RFC 792), at the start of the ICMP header. */
export function icmpType(buf: Uint8Array, off: number): number {
  return buf[off];
}

export function icmpCode(buf: Uint8Array, off: number): number {
  return buf[off + 1];
}

export function icmpIsQuery(type: number): boolean {
  return type === 0 || type === 8 || (type >= 13 && type <= 18);
}

/** Class A 0/8 ("this network"), 127/8 (loopback), 224/4 (multicast), 240/4 incl. broadcast. */
function isBadErrorSource(src: number): boolean {
  const a = src >>> 24;
  return a === 0 || a === 127 || a >= 224;
}

/**
 * RFC 1812 §4.3.2.7: an ICMP error MUST NOT be sent about an ICMP error, a non-initial fragment,
 * a datagram to a multicast or broadcast address, or one whose source does not name a single
 * host. Also refuses anything too short or malformed to make that decision, and a region that
 * does not lie inside `orig`.
 */
export function icmpErrorAllowed(orig: Uint8Array, origOff: number, origLen: number): boolean {
  if (!(origLen >= IPV4_MIN_HEADER) || !(origOff >= 0) || origOff + origLen > orig.length) return false;
  const vihl = orig[origOff];
  if (vihl >> 4 !== 4) return false;
  const hlen = (vihl & 0x0f) << 2;
  if (hlen < IPV4_MIN_HEADER || hlen > origLen) return false;
  if ((((orig[origOff + 6] << 8) | orig[origOff + 7]) & 0x1fff) !== 0) return false;
  const src = ((orig[origOff + 12] << 24) | (orig[origOff + 13] << 16) | (orig[origOff + 14] << 8) | orig[origOff + 15]) >>> 0;
  if (isBadErrorSource(src)) return false;
  const dst = ((orig[origOff + 16] << 24) | (orig[origOff + 17] << 16) | (orig[origOff + 18] << 8) | orig[origOff + 19]) >>> 0;
  if (dst >>> 28 === 0xe || dst === 0xffffffff) return false;
  if (orig[origOff + 9] === IPPROTO_ICMP) {
    // The type octet must lie inside the datagram (not in link padding) to tell query from error.
    if (hlen >= datagramEnd(orig, origOff, origLen, hlen)) return false;
    if (!icmpIsQuery(orig[origOff + hlen])) return false;
  }
  return true;
}

/** Length of the datagram proper: the total length when it is sane, else what we were given. */
function datagramEnd(orig: Uint8Array, origOff: number, origLen: number, hlen: number): number {
  const total = (orig[origOff + 2] << 8) | orig[origOff + 3];
  return total >= hlen && total < origLen ? total : origLen;
}

/**
 * Writes a complete IPv4 datagram carrying an ICMP error about the datagram at
 * [origOff, origOff+origLen) of `orig`: IPv4 header (srcAddr → original source, TTL 64, DF clear),
 * ICMP header, then the original header and the first 8 octets of its data (RFC 792), fewer if the
 * original is shorter. For Fragmentation Needed, `nextHopMtu` goes in the low 16 bits of the
 * second word (RFC 1191 §4). Returns bytes written, or 0 when RFC 1812 §4.3.2.7 forbids the
 * message or `out` has no room at outOff.
 *
 * `out` may be the same memory as `orig` (e.g. writing in place into the slot's headroom): all
 * fields of the original are read, and the quote moved, before any header byte is written.
 */
export function buildIcmpError(
  out: Uint8Array,
  outOff: number,
  orig: Uint8Array,
  origOff: number,
  origLen: number,
  type: number,
  code: number,
  srcAddr: number,
  nextHopMtu = 0,
): number {
  if (!icmpErrorAllowed(orig, origOff, origLen)) return 0;
  const hlen = (orig[origOff] & 0x0f) << 2;
  const end = datagramEnd(orig, origOff, origLen, hlen);
  const quoteLen = end < hlen + ICMP_QUOTE_DATA ? end : hlen + ICMP_QUOTE_DATA;
  const icmpLen = ICMP_HEADER + quoteLen;
  const total = IPV4_MIN_HEADER + icmpLen;
  if (!(outOff >= 0) || outOff + total > out.length) return 0;

  const origSrc = ((orig[origOff + 12] << 24) | (orig[origOff + 13] << 16) | (orig[origOff + 14] << 8) | orig[origOff + 15]) >>> 0;
  moveBytes(out, outOff + IPV4_MIN_HEADER + ICMP_HEADER, orig, origOff, quoteLen);

  const icmp = outOff + IPV4_MIN_HEADER;
  out[icmp] = type & 0xff;
  out[icmp + 1] = code & 0xff;
  out[icmp + 2] = 0;
  out[icmp + 3] = 0;
  out[icmp + 4] = 0;
  out[icmp + 5] = 0;
  if (type === ICMP_DEST_UNREACH && code === ICMP_FRAG_NEEDED) {
    out[icmp + 6] = (nextHopMtu >>> 8) & 0xff;
    out[icmp + 7] = nextHopMtu & 0xff;
  } else {
    out[icmp + 6] = 0;
    out[icmp + 7] = 0;
  }
  const ck = checksum(out, icmp, icmpLen);
  out[icmp + 2] = ck >>> 8;
  out[icmp + 3] = ck & 0xff;

  nextIcmpId = (nextIcmpId + 1) & 0xffff;
  writeIpv4Header(out, outOff, srcAddr, origSrc, IPPROTO_ICMP, ICMP_ERROR_TTL, total, nextIcmpId, false);
  return total;
}

/**
 * memmove between two views that may share an ArrayBuffer. Uint8Array.prototype.set would also
 * handle overlap, but needs a subarray view (an allocation) to bound the source.
 */
function moveBytes(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, n: number): void {
  const backward = dst.buffer === src.buffer && dst.byteOffset + dstOff > src.byteOffset + srcOff;
  if (backward) {
    for (let i = n - 1; i >= 0; i--) dst[dstOff + i] = src[srcOff + i];
  } else {
    for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i];
  }
}

/**
 * Echo or Echo Reply (RFC 792): type, code 0, checksum, identifier, sequence, data.
 * Returns bytes written, or 0 if `out` has no room at `off`.
 */
export function writeIcmpEcho(out: Uint8Array, off: number, type: number, id: number, seq: number, payload: Uint8Array): number {
  const len = ICMP_HEADER + payload.length;
  if (!(off >= 0) || off + len > out.length) return 0;
  out[off] = type & 0xff;
  out[off + 1] = 0;
  out[off + 2] = 0;
  out[off + 3] = 0;
  out[off + 4] = (id >>> 8) & 0xff;
  out[off + 5] = id & 0xff;
  out[off + 6] = (seq >>> 8) & 0xff;
  out[off + 7] = seq & 0xff;
  out.set(payload, off + ICMP_HEADER);
  const ck = checksum(out, off, len);
  out[off + 2] = ck >>> 8;
  out[off + 3] = ck & 0xff;
  return len;
}
