// Ethernet II header (IEEE 802.3 clause 3.2 with the DIX type field): what a VXLAN frame
// carries inside (RFC 7348 §5, "Inner Ethernet Header"). No 802.1Q tag: the kernel's VXLAN
// device, as flanneld creates it, neither adds nor expects one.
//
// Same conventions as ipv4.ts: (buf, off) functions that read and write in place; readers trust
// the caller to have checked the length.

export const ETH_HLEN = 14;
export const ETH_ALEN = 6;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;

export const ETH_OFF_DST = 0;
export const ETH_OFF_SRC = 6;
export const ETH_OFF_TYPE = 12;

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/**
 * "0e:1a:2b:3c:4d:5e" → 6 bytes. Only the colon form, as `ip link` prints it and flannel stores
 * VtepMAC in its lease (Go's net.HardwareAddr.String()); anything else is an error naming it.
 */
export function parseMac(s: string): Buffer {
  if (typeof s !== 'string' || !MAC_RE.test(s)) {
    throw new Error(`bad MAC address ${JSON.stringify(s)}: expected six colon-separated hex octets, e.g. 0e:00:c0:a8:4d:0b`);
  }
  return Buffer.from(s.replace(/:/g, ''), 'hex');
}

/** The 6 bytes at `off` as lower-case "aa:bb:cc:dd:ee:ff" (what `ip link` prints). Allocates; not for the hot path. */
export function formatMac(b: Uint8Array, off = 0): string {
  let s = '';
  for (let i = 0; i < ETH_ALEN; i++) {
    const v = b[off + i] ?? 0;
    s += (i ? ':' : '') + (v < 16 ? '0' : '') + v.toString(16);
  }
  return s;
}

/** Writes dst, src (6 bytes each, from offset 0 of the arrays given) and the type. Returns 14. */
export function writeEthernetHeader(buf: Uint8Array, off: number, dst: Uint8Array, src: Uint8Array, ethertype: number): number {
  for (let i = 0; i < ETH_ALEN; i++) {
    buf[off + i] = dst[i];
    buf[off + ETH_OFF_SRC + i] = src[i];
  }
  buf[off + ETH_OFF_TYPE] = (ethertype >>> 8) & 0xff;
  buf[off + ETH_OFF_TYPE + 1] = ethertype & 0xff;
  return ETH_HLEN;
}

export function ethertype(buf: Uint8Array, off: number): number {
  return (buf[off + ETH_OFF_TYPE] << 8) | buf[off + ETH_OFF_TYPE + 1];
}

/** True when the 6 bytes at buf[off] equal mac[macOff..macOff+6). No allocation (Buffer.equals would need subarrays). */
export function macEquals(buf: Uint8Array, off: number, mac: Uint8Array, macOff = 0): boolean {
  for (let i = 0; i < ETH_ALEN; i++) if (buf[off + i] !== mac[macOff + i]) return false;
  return true;
}

/** ff:ff:ff:ff:ff:ff, where an ARP request goes (RFC 826, "Packet Generation"). */
export function isBroadcastMac(buf: Uint8Array, off: number): boolean {
  for (let i = 0; i < ETH_ALEN; i++) if (buf[off + i] !== 0xff) return false;
  return true;
}

/** I/G bit (IEEE 802, the least significant bit of the first octet): group (multicast or broadcast) address. */
export function isMulticastMac(buf: Uint8Array, off: number): boolean {
  return (buf[off] & 0x01) !== 0;
}

/** U/L bit (IEEE 802, second least significant bit of the first octet): locally administered. */
export function isLocalMac(buf: Uint8Array, off: number): boolean {
  return (buf[off] & 0x02) !== 0;
}

/** Copies the destination MAC at buf[off] into out[outOff..+6). */
export function ethDst(buf: Uint8Array, off: number, out: Uint8Array, outOff = 0): void {
  for (let i = 0; i < ETH_ALEN; i++) out[outOff + i] = buf[off + ETH_OFF_DST + i];
}

/** Copies the source MAC at buf[off] into out[outOff..+6). */
export function ethSrc(buf: Uint8Array, off: number, out: Uint8Array, outOff = 0): void {
  for (let i = 0; i < ETH_ALEN; i++) out[outOff + i] = buf[off + ETH_OFF_SRC + i];
}
