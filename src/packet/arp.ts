// ARP for IPv4 over Ethernet (RFC 826), the only kind a VXLAN VTEP meets: the kernel's VXLAN
// device, when it has no neighbor entry for a peer's VTEP address, broadcasts a request for it
// into the overlay, and the peer answers as any host on an Ethernet would.
//
//   hrd 2 | pro 2 | hln 1 | pln 1 | op 2 | sha 6 | spa 4 | tha 6 | tpa 4      (28 bytes)

import { ETH_ALEN, ETHERTYPE_IPV4 } from './ethernet';

export const ARP_LEN = 28;
/** ar$hrd for Ethernet (RFC 826 "ares_hrd$Ethernet"; IANA ARP Hardware Type 1). */
export const ARP_HRD_ETHERNET = 1;
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;

export const ARP_OFF_OP = 6;
export const ARP_OFF_SHA = 8;
export const ARP_OFF_SPA = 14;
export const ARP_OFF_THA = 18;
export const ARP_OFF_TPA = 24;

/**
 * True when [off, off+len) of buf holds an ARP request for an IPv4 address over Ethernet:
 * htype 1, ptype 0x0800, hlen 6, plen 4, op 1 (RFC 826 "Packet Reception" checks hardware and
 * protocol type and their lengths first). Reads nothing outside that range and is false for a
 * range that does not lie inside buf. Trailing bytes (Ethernet padding to 60) are allowed.
 */
export function isArpRequest(buf: Uint8Array, off: number, len: number): boolean {
  if (!(len >= ARP_LEN) || !(off >= 0) || off + len > buf.length) return false;
  return (
    buf[off] === 0 &&
    buf[off + 1] === ARP_HRD_ETHERNET &&
    buf[off + 2] === ETHERTYPE_IPV4 >>> 8 &&
    buf[off + 3] === (ETHERTYPE_IPV4 & 0xff) &&
    buf[off + 4] === ETH_ALEN &&
    buf[off + 5] === 4 &&
    buf[off + 6] === 0 &&
    buf[off + 7] === ARP_OP_REQUEST
  );
}

export function arpOp(buf: Uint8Array, off: number): number {
  return (buf[off + ARP_OFF_OP] << 8) | buf[off + ARP_OFF_OP + 1];
}

/** Sender protocol (IPv4) address, host order. */
export function arpSenderIp(buf: Uint8Array, off: number): number {
  const p = off + ARP_OFF_SPA;
  return ((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0;
}

/** Target protocol (IPv4) address, host order. */
export function arpTargetIp(buf: Uint8Array, off: number): number {
  const p = off + ARP_OFF_TPA;
  return ((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0;
}

/** Copies the sender hardware address into out[outOff..+6). */
export function arpSenderMac(buf: Uint8Array, off: number, out: Uint8Array, outOff = 0): void {
  for (let i = 0; i < ETH_ALEN; i++) out[outOff + i] = buf[off + ARP_OFF_SHA + i];
}

/** Copies the target hardware address into out[outOff..+6) (zero in a request: it is what is asked for). */
export function arpTargetMac(buf: Uint8Array, off: number, out: Uint8Array, outOff = 0): void {
  for (let i = 0; i < ETH_ALEN; i++) out[outOff + i] = buf[off + ARP_OFF_THA + i];
}

/**
 * Writes the 28-byte reply to a request (RFC 826 "Packet Reception": swap the hardware and
 * protocol fields, put our address in the sender fields, set the opcode to reply):
 * sender = (ourMac, ourIp), target = (requesterMac, requesterIp). `requesterMac` is read from
 * reqMac[reqMacOff..+6), so it can point straight into the request (even when the request is
 * being overwritten in place: it is copied before the sender fields are written). Returns 28.
 */
export function writeArpReply(
  buf: Uint8Array,
  off: number,
  ourMac: Uint8Array,
  ourIp: number,
  reqMac: Uint8Array,
  reqMacOff: number,
  requesterIp: number,
): number {
  // Target first: the requester's MAC may sit where the sender MAC is about to go.
  for (let i = ETH_ALEN - 1; i >= 0; i--) buf[off + ARP_OFF_THA + i] = reqMac[reqMacOff + i];
  buf[off] = 0;
  buf[off + 1] = ARP_HRD_ETHERNET;
  buf[off + 2] = ETHERTYPE_IPV4 >>> 8;
  buf[off + 3] = ETHERTYPE_IPV4 & 0xff;
  buf[off + 4] = ETH_ALEN;
  buf[off + 5] = 4;
  buf[off + 6] = 0;
  buf[off + 7] = ARP_OP_REPLY;
  for (let i = 0; i < ETH_ALEN; i++) buf[off + ARP_OFF_SHA + i] = ourMac[i];
  writeIp(buf, off + ARP_OFF_SPA, ourIp);
  writeIp(buf, off + ARP_OFF_TPA, requesterIp);
  return ARP_LEN;
}

/** Writes a 28-byte request "who has targetIp? tell senderIp" (tha zero, RFC 826). For tests and tools. */
export function writeArpRequest(buf: Uint8Array, off: number, senderMac: Uint8Array, senderIp: number, targetIp: number): number {
  buf[off] = 0;
  buf[off + 1] = ARP_HRD_ETHERNET;
  buf[off + 2] = ETHERTYPE_IPV4 >>> 8;
  buf[off + 3] = ETHERTYPE_IPV4 & 0xff;
  buf[off + 4] = ETH_ALEN;
  buf[off + 5] = 4;
  buf[off + 6] = 0;
  buf[off + 7] = ARP_OP_REQUEST;
  for (let i = 0; i < ETH_ALEN; i++) {
    buf[off + ARP_OFF_SHA + i] = senderMac[i];
    buf[off + ARP_OFF_THA + i] = 0;
  }
  writeIp(buf, off + ARP_OFF_SPA, senderIp);
  writeIp(buf, off + ARP_OFF_TPA, targetIp);
  return ARP_LEN;
}

function writeIp(buf: Uint8Array, p: number, ip: number): void {
  buf[p] = ip >>> 24;
  buf[p + 1] = (ip >>> 16) & 0xff;
  buf[p + 2] = (ip >>> 8) & 0xff;
  buf[p + 3] = ip & 0xff;
}
