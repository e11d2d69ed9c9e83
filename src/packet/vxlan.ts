// VXLAN header (RFC 7348 §5, "VXLAN Frame Format"):
//
//    0                   1                   2                   3
//   |R|R|R|R|I|R|R|R|            Reserved                           |
//   |                VXLAN Network Identifier (VNI) |   Reserved    |
//
// It follows the outer UDP header (destination port 4789 by IANA; flannel and the Linux kernel's
// historical default are 8472) and precedes the inner Ethernet frame.

export const VXLAN_HLEN = 8;
/** The I flag: "MUST be set to 1 for a valid VXLAN Network ID (VNI)" (RFC 7348 §5). */
export const VXLAN_FLAG_I = 0x08;
/** The VNI is a 24-bit field. */
export const VXLAN_VNI_MAX = 0xffffff;

/**
 * Writes the 8-byte header: flags 0x08 (only I), the 24-bit VNI, and every reserved field zero
 * ("Reserved fields ... MUST be set to zero on transmission", RFC 7348 §5). Returns 8.
 */
export function writeVxlanHeader(buf: Uint8Array, off: number, vni: number): number {
  buf[off] = VXLAN_FLAG_I;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = (vni >>> 16) & 0xff;
  buf[off + 5] = (vni >>> 8) & 0xff;
  buf[off + 6] = vni & 0xff;
  buf[off + 7] = 0;
  return VXLAN_HLEN;
}

/**
 * True when the I flag is set. The other flag bits and the reserved fields are not checked:
 * RFC 7348 §5 says they "MUST be ... ignored on receipt", which is also what the kernel does
 * without extensions (GBP, GPE) configured.
 */
export function vxlanIFlag(buf: Uint8Array, off: number): boolean {
  return (buf[off] & VXLAN_FLAG_I) !== 0;
}

/** The 24-bit VNI (bytes 4–6). */
export function vxlanVni(buf: Uint8Array, off: number): number {
  return (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
}
