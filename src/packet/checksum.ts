// Internet checksum: RFC 1071 (computation) and RFC 1624 (incremental update).
//
// Words are read big-endian byte by byte rather than through a Uint16Array view: packets sit at
// arbitrary (odd) offsets inside slabs, and network order is big-endian on every host we run on.

/**
 * Folded 16-bit one's-complement sum of `len` bytes at `off`, plus `initial` (a partial sum such
 * as a pseudo-header's). Not complemented. An odd trailing byte is padded with a zero byte on the
 * right (RFC 1071 §4.1, "Add left-over byte, if any").
 */
export function sum16(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  let i = off;
  const end = off + (len & ~1);
  // Deferring the end-around carry (RFC 1071 §2(B)) is exact as long as the accumulator does
  // not lose precision: 2^53 / 0xffff words is far beyond any packet.
  for (; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (len & 1) sum += buf[i] << 8;
  // `>>> 16` would truncate above 2^32, so the first folds use division.
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The value to store in a checksum field: the complement of the folded sum. */
export function checksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~sum16(buf, off, len, initial) & 0xffff;
}

/**
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). Eqn. 2 (HC' = HC - ~m - m') can yield 0x0000 where a
 * full recompute yields 0xffff (RFC 1624 §3); eqn. 3 stays in the one's-complement domain.
 */
export function checksumUpdate16(oldChecksum: number, oldWord: number, newWord: number): number {
  let sum = (~oldChecksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
