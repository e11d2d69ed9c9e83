// A dissector for people: an IPv4 packet (and whatever it carries — UDP, TCP, ICMP, VXLAN with
// its inner Ethernet, ARP, an IPIP inner packet, an ICMP error's quoted header) as a list of
// layers, each with its bytes and one line of fields. weft wire, trace and replay print these.
// It reads bounds-checked, never throws on garbage, and makes no datapath decision: the
// datapath's own parsing is in ipv4.ts, udp.ts, vxlan.ts and friends.

import { formatMac } from './ethernet';
import { IPPROTO_ICMP, IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP } from './ipv4';
import { formatIpv4 } from '../route/address';

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex').replace(/(..)/g, '$1 ').trim();
const h16 = (n: number) => `0x${n.toString(16).padStart(4, '0')}`;
const h8 = (n: number) => `0x${n.toString(16).padStart(2, '0')}`;

export interface Layer {
  name: string;
  bytes: Uint8Array;
  fields: string;
  /** Nesting: 0 for the outermost packet, +1 inside each tunnel. */
  depth: number;
  /** Part of an ICMP error's quote of another packet. */
  quoted?: boolean;
  /** For the diagram: bytes this layer stands for (header + what it carries, for the last one). */
  span: number;
}

export interface DecodeContext {
  /** UDP port whose payload is a VXLAN header (8472). */
  vxlanPort?: number;
  /** UDP port whose payload is a bare IPv4 packet (flannel's udp, 8285). */
  udpEncapPort?: number;
}

const rd16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const rd32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

export function ipv4Fields(b: Uint8Array, o: number): string {
  const fl = rd16(b, o + 6);
  const frag = fl & 0x1fff || fl & 0x2000 ? `, fragment offset ${(fl & 0x1fff) * 8}, MF ${fl & 0x2000 ? 1 : 0}` : '';
  return (
    `IPv4 ${formatIpv4(rd32(b, o + 12))} → ${formatIpv4(rd32(b, o + 16))}, proto ${b[o + 9]}, TTL ${b[o + 8]}, ` +
    `len ${rd16(b, o + 2)}, id ${h16(rd16(b, o + 4))}, DF ${fl & 0x4000 ? 1 : 0}${frag}, TOS ${h8(b[o + 1])}, checksum ${h16(rd16(b, o + 10))}`
  );
}

const ICMP_NAMES: Record<string, string> = {
  '0': 'echo reply',
  '8': 'echo request',
  '3/0': 'net unreachable',
  '3/1': 'host unreachable',
  '3/3': 'port unreachable',
  '3/4': 'fragmentation needed',
  '11/0': 'time exceeded in transit',
};

export function icmpName(type: number, code: number): string {
  return ICMP_NAMES[`${type}/${code}`] ?? ICMP_NAMES[String(type)] ?? `type ${type} code ${code}`;
}

const TCP_FLAGS = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR'];

/**
 * The headers of the IPv4 packet at b[o, end), outermost first, following encapsulations
 * (IPIP, VXLAN on ctx.vxlanPort, flannel udp on ctx.udpEncapPort) and ICMP errors' quotes.
 */
export function decodeIpv4(b: Uint8Array, o: number, end: number, ctx: DecodeContext = {}, depth = 0, quoted = false): Layer[] {
  const out: Layer[] = [];
  const rest = (name: string, from: number, d: number) => {
    if (end > from) out.push({ name, bytes: b.subarray(from, end), fields: `${end - from} bytes`, depth: d, quoted, span: end - from });
  };
  if (end - o < 20 || b[o] >> 4 !== 4) {
    rest(quoted ? 'quoted bytes' : 'not IPv4', o, depth);
    return out;
  }
  const hl = (b[o] & 0x0f) * 4;
  const total = Math.min(rd16(b, o + 2), end - o);
  const stop = o + Math.max(total, Math.min(hl, end - o));
  const name = quoted ? 'quoted IPv4' : 'IPv4';
  out.push({ name, bytes: b.subarray(o, o + Math.min(hl, end - o)), fields: ipv4Fields(b, o), depth, quoted, span: hl });
  if (hl < 20 || hl > end - o) return out;
  const l4 = o + hl;
  const lend = quoted ? end : stop;
  const proto = b[o + 9];
  const fl = rd16(b, o + 6);
  if (fl & 0x1fff) {
    rest('fragment data', l4, depth);
    return out;
  }
  const n = lend - l4;
  if (proto === IPPROTO_IPIP && !quoted) {
    out.push(...decodeIpv4(b, l4, lend, ctx, depth + 1));
    return out;
  }
  if (proto === IPPROTO_UDP && n >= 8) {
    const sp = rd16(b, l4);
    const dp = rd16(b, l4 + 2);
    out.push({
      name: quoted ? 'quoted UDP' : 'UDP',
      bytes: b.subarray(l4, l4 + 8),
      fields: `${sp} → ${dp}, len ${rd16(b, l4 + 4)}, checksum ${h16(rd16(b, l4 + 6))}`,
      depth,
      quoted,
      span: quoted ? 8 : n,
    });
    const p = l4 + 8;
    if (!quoted && ctx.vxlanPort !== undefined && dp === ctx.vxlanPort && lend - p >= 8) {
      out[out.length - 1].span = 8;
      const flags = b[p];
      out.push({
        name: 'VXLAN',
        bytes: b.subarray(p, p + 8),
        fields: `flags ${h8(flags)}${flags & 0x08 ? ' (I)' : ''}, VNI ${(b[p + 4] << 16) | (b[p + 5] << 8) | b[p + 6]}`,
        depth,
        span: 8,
      });
      const e = p + 8;
      if (lend - e < 14) {
        rest('data', e, depth + 1);
        return out;
      }
      const type = rd16(b, e + 12);
      out.push({
        name: 'Ethernet',
        bytes: b.subarray(e, e + 14),
        fields: `${formatMac(b, e + 6)} → ${formatMac(b, e)}, type ${h16(type)}`,
        depth: depth + 1,
        span: 14,
      });
      if (type === 0x0800) out.push(...decodeIpv4(b, e + 14, lend, ctx, depth + 1));
      else if (type === 0x0806) out.push(...decodeArp(b, e + 14, lend, depth + 1));
      else rest('data', e + 14, depth + 1);
      return out;
    }
    if (!quoted && ctx.udpEncapPort !== undefined && (dp === ctx.udpEncapPort || sp === ctx.udpEncapPort)) {
      out[out.length - 1].span = 8;
      out.push(...decodeIpv4(b, p, lend, ctx, depth + 1));
      return out;
    }
    if (!quoted) rest('data', p, depth);
    else rest('quoted data', p, depth);
    return out;
  }
  if (proto === IPPROTO_ICMP && n >= 8) {
    const type = b[l4];
    const code = b[l4 + 1];
    let f = `type ${type}${code || (type !== 0 && type !== 8) ? ` code ${code}` : ''} (${icmpName(type, code)})`;
    if (type === 0 || type === 8) f += `, id ${rd16(b, l4 + 4)}, seq ${rd16(b, l4 + 6)}`;
    if (type === 3 && code === 4) f += `, next-hop MTU ${rd16(b, l4 + 6)}`;
    f += `, checksum ${h16(rd16(b, l4 + 2))}`;
    out.push({ name: quoted ? 'quoted ICMP' : 'ICMP', bytes: b.subarray(l4, l4 + 8), fields: f, depth, quoted, span: quoted ? 8 : n });
    if (!quoted && (type === 3 || type === 11)) {
      // The error quotes the offending packet's header and its first 8 data bytes (RFC 792).
      out.push(...decodeIpv4(b, l4 + 8, lend, ctx, depth, true));
    } else if (!quoted) {
      rest('data', l4 + 8, depth);
    }
    return out;
  }
  if (proto === IPPROTO_TCP && n >= 20 && !quoted) {
    const doff = (b[l4 + 12] >> 4) * 4;
    const flags = TCP_FLAGS.filter((_, i) => b[l4 + 13] & (1 << i)).join(',');
    out.push({
      name: 'TCP',
      bytes: b.subarray(l4, l4 + Math.min(Math.max(doff, 20), n)),
      fields: `${rd16(b, l4)} → ${rd16(b, l4 + 2)}, flags ${flags || 'none'}, seq ${rd32(b, l4 + 4)}, ack ${rd32(b, l4 + 8)}, window ${rd16(b, l4 + 14)}, checksum ${h16(rd16(b, l4 + 16))}`,
      depth,
      span: n,
    });
    if (doff >= 20 && doff < n) rest('data', l4 + doff, depth);
    return out;
  }
  rest(quoted ? 'quoted data' : `protocol ${proto} data`, l4, depth);
  return out;
}

function decodeArp(b: Uint8Array, o: number, end: number, depth: number): Layer[] {
  if (end - o < 28) return [{ name: 'ARP', bytes: b.subarray(o, end), fields: `truncated (${end - o} bytes)`, depth, span: end - o }];
  const op = rd16(b, o + 6);
  const spa = formatIpv4(rd32(b, o + 14));
  const tpa = formatIpv4(rd32(b, o + 24));
  const f =
    op === 1
      ? `request: who has ${tpa}? tell ${spa} (${formatMac(b, o + 8)})`
      : op === 2
        ? `reply: ${spa} is at ${formatMac(b, o + 8)}, to ${tpa}`
        : `op ${op}`;
  return [{ name: 'ARP', bytes: b.subarray(o, o + 28), fields: f, depth, span: 28 }];
}
