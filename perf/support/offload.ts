// Packet builders and an independent checksum for the offload tests: deliberately the plain
// RFC 1071 loop over 16-bit big-endian words, sharing nothing with native/offload.cc.

export function sum16(buf: Uint8Array, off: number, len: number, init = 0): number {
  let s = init;
  for (let i = 0; i < len; i += 2) s += (buf[off + i] << 8) | (i + 1 < len ? buf[off + i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** One's complement sum of the TCP/UDP pseudo-header (RFC 793 3.1, RFC 8200 8.1), folded. */
export function pseudo(pkt: Uint8Array, off = 0, l4Len?: number): number {
  const v6 = pkt[off] >> 4 === 6;
  const b = Buffer.from(pkt.buffer, pkt.byteOffset, pkt.byteLength);
  if (v6) {
    const len = l4Len ?? b.readUInt16BE(off + 4);
    return sum16(b, off + 8, 32, pkt[off + 6] + (len >>> 16) + (len & 0xffff));
  }
  const ihl = (pkt[off] & 15) * 4;
  const len = l4Len ?? b.readUInt16BE(off + 2) - ihl;
  return sum16(b, off + 12, 8, pkt[off + 9] + len);
}

export function l3Len(pkt: Uint8Array, off = 0): number {
  return pkt[off] >> 4 === 6 ? 40 : (pkt[off] & 15) * 4;
}

/** Whether the IPv4 header checksum verifies (always true for IPv6, which has none). */
export function ipCsumOk(pkt: Uint8Array, off = 0): boolean {
  if (pkt[off] >> 4 === 6) return true;
  return sum16(pkt, off, l3Len(pkt, off)) === 0xffff;
}

/** Whether the TCP/UDP checksum of the packet at off (len bytes) verifies. */
export function l4CsumOk(pkt: Uint8Array, off: number, len: number): boolean {
  const l3 = l3Len(pkt, off);
  return sum16(pkt, off + l3, len - l3, pseudo(pkt, off, len - l3)) === 0xffff;
}

export function fixIpCsum(b: Buffer): void {
  if (b[0] >> 4 !== 4) return;
  b.writeUInt16BE(0, 10);
  b.writeUInt16BE(~sum16(b, 0, l3Len(b)) & 0xffff, 10);
}

export function fixL4Csum(b: Buffer): void {
  const l3 = l3Len(b);
  const proto = b[0] >> 4 === 6 ? b[6] : b[9];
  const at = l3 + (proto === 6 ? 16 : 6);
  b.writeUInt16BE(0, at);
  let c = ~sum16(b, l3, b.length - l3, pseudo(b)) & 0xffff;
  if (proto === 17 && c === 0) c = 0xffff;
  b.writeUInt16BE(c, at);
}

/** Puts the CHECKSUM_PARTIAL seed (the folded pseudo-header sum) in the L4 checksum field. */
export function seedL4Csum(b: Buffer): void {
  const l3 = l3Len(b);
  const proto = b[0] >> 4 === 6 ? b[6] : b[9];
  b.writeUInt16BE(pseudo(b), l3 + (proto === 6 ? 16 : 6));
}

export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 };

export interface TcpOpts {
  src?: number;
  dst?: number;
  sport?: number;
  dport?: number;
  seq?: number;
  ack?: number;
  flags?: number;
  payload?: Uint8Array | number;
  id?: number;
  tos?: number;
  ttl?: number;
  df?: boolean;
  ipOptions?: Uint8Array;
  tcpOptions?: Uint8Array;
  v6?: boolean;
  /** 'valid' (default), 'seed' (pseudo-header only) or a fixed value. */
  csum?: 'valid' | 'seed' | number;
}

function payloadBytes(p: Uint8Array | number | undefined, salt: number): Buffer {
  if (p === undefined) return Buffer.alloc(0);
  if (typeof p !== 'number') return Buffer.from(p);
  const b = Buffer.alloc(p);
  for (let i = 0; i < p; i++) b[i] = (i * 7 + salt) & 0xff;
  return b;
}

function ipHeader(o: {
  v6?: boolean;
  proto: number;
  l4Len: number;
  src: number;
  dst: number;
  id: number;
  tos: number;
  ttl: number;
  df: boolean;
  ipOptions?: Uint8Array;
}): Buffer {
  if (o.v6) {
    const h = Buffer.alloc(40);
    h.writeUInt32BE(0x60000000 | (o.tos << 20), 0);
    h.writeUInt16BE(o.l4Len, 4);
    h[6] = o.proto;
    h[7] = o.ttl;
    h.writeUInt32BE(0xfd000000, 8);
    h.writeUInt32BE(o.src, 20);
    h.writeUInt32BE(0xfd000000, 24);
    h.writeUInt32BE(o.dst, 36);
    return h;
  }
  const opt = o.ipOptions ?? new Uint8Array(0);
  if (opt.length % 4 !== 0) throw new Error('IP options must be a multiple of 4 bytes');
  const h = Buffer.alloc(20 + opt.length);
  h[0] = 0x40 | ((20 + opt.length) / 4);
  h[1] = o.tos;
  h.writeUInt16BE(h.length + o.l4Len, 2);
  h.writeUInt16BE(o.id & 0xffff, 4);
  h.writeUInt16BE(o.df ? 0x4000 : 0, 6);
  h[8] = o.ttl;
  h[9] = o.proto;
  h.writeUInt32BE(o.src >>> 0, 12);
  h.writeUInt32BE(o.dst >>> 0, 16);
  Buffer.from(opt).copy(h, 20);
  fixIpCsum(h);
  return h;
}

export function tcpPacket(o: TcpOpts = {}): Buffer {
  const opts = o.tcpOptions ?? new Uint8Array(0);
  if (opts.length % 4 !== 0) throw new Error('TCP options must be a multiple of 4 bytes');
  const payload = payloadBytes(o.payload, o.seq ?? 0);
  const th = Buffer.alloc(20 + opts.length);
  th.writeUInt16BE(o.sport ?? 40000, 0);
  th.writeUInt16BE(o.dport ?? 5201, 2);
  th.writeUInt32BE((o.seq ?? 1000) >>> 0, 4);
  th.writeUInt32BE((o.ack ?? 5000) >>> 0, 8);
  th[12] = (th.length / 4) << 4;
  th[13] = o.flags ?? TCP.ACK;
  th.writeUInt16BE(502, 14);
  Buffer.from(opts).copy(th, 20);
  const ip = ipHeader({
    v6: o.v6,
    proto: 6,
    l4Len: th.length + payload.length,
    src: o.src ?? 0x0a000001,
    dst: o.dst ?? 0x0a000002,
    id: o.id ?? 0x100,
    tos: o.tos ?? 0,
    ttl: o.ttl ?? 64,
    df: o.df ?? true,
    ipOptions: o.ipOptions,
  });
  const b = Buffer.concat([ip, th, payload]);
  const c = o.csum ?? 'valid';
  if (c === 'valid') fixL4Csum(b);
  else if (c === 'seed') seedL4Csum(b);
  else b.writeUInt16BE(c, ip.length + 16);
  return b;
}

export function udpPacket(
  o: {
    src?: number;
    dst?: number;
    sport?: number;
    dport?: number;
    payload?: Uint8Array | number;
    v6?: boolean;
    id?: number;
    csum?: 'valid' | 'seed' | number;
  } = {},
): Buffer {
  const payload = payloadBytes(o.payload, 3);
  const uh = Buffer.alloc(8);
  uh.writeUInt16BE(o.sport ?? 40001, 0);
  uh.writeUInt16BE(o.dport ?? 4789, 2);
  uh.writeUInt16BE(8 + payload.length, 4);
  const ip = ipHeader({
    v6: o.v6,
    proto: 17,
    l4Len: 8 + payload.length,
    src: o.src ?? 0x0a000001,
    dst: o.dst ?? 0x0a000002,
    id: o.id ?? 0x200,
    tos: 0,
    ttl: 64,
    df: true,
  });
  const b = Buffer.concat([ip, uh, payload]);
  const c = o.csum ?? 'valid';
  if (c === 'valid') fixL4Csum(b);
  else if (c === 'seed') seedL4Csum(b);
  else b.writeUInt16BE(c, ip.length + 6);
  return b;
}

export const VNET = { NEEDS_CSUM: 1, DATA_VALID: 2, GSO_NONE: 0, GSO_TCPV4: 1, GSO_UDP: 3, GSO_TCPV6: 4, GSO_UDP_L4: 5, GSO_ECN: 0x80 };

export interface VnetFields {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function vnetHdr(h: Partial<VnetFields>): Buffer {
  const b = Buffer.alloc(10);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? 0;
  b.writeUInt16LE(h.hdrLen ?? 0, 2);
  b.writeUInt16LE(h.gsoSize ?? 0, 4);
  b.writeUInt16LE(h.csumStart ?? 0, 6);
  b.writeUInt16LE(h.csumOffset ?? 0, 8);
  return b;
}

export function readVnet(b: Uint8Array, off = 0): VnetFields {
  const v = Buffer.from(b.buffer, b.byteOffset + off, 10);
  return { flags: v[0], gsoType: v[1], hdrLen: v.readUInt16LE(2), gsoSize: v.readUInt16LE(4), csumStart: v.readUInt16LE(6), csumOffset: v.readUInt16LE(8) };
}

/**
 * A super-packet as the kernel hands one to a TUN with TSO: the whole stream's headers once,
 * total length for the whole, the L4 checksum field holding the pseudo-header seed, and a GSO
 * virtio-net header.
 */
export function superPacket(pkt: Buffer, gsoSize: number): Buffer {
  const b = Buffer.from(pkt);
  const v6 = b[0] >> 4 === 6;
  const l3 = l3Len(b);
  const proto = v6 ? b[6] : b[9];
  seedL4Csum(b);
  const l4hl = proto === 6 ? (b[l3 + 12] >> 4) * 4 : 8;
  const gsoType = proto === 17 ? VNET.GSO_UDP_L4 : v6 ? VNET.GSO_TCPV6 : VNET.GSO_TCPV4;
  return Buffer.concat([vnetHdr({ flags: VNET.NEEDS_CSUM, gsoType, hdrLen: l3 + l4hl, gsoSize, csumStart: l3, csumOffset: proto === 6 ? 16 : 6 }), b]);
}
