// What `weft wire`, `weft trace` and `weft replay` share: the topology flags that build an
// OfflineNode, and the text they print for packets — one line of fields per header, its bytes
// in hex underneath, and a box diagram of the header stack. Decoding here is for people: it
// reads bounds-checked, never throws on garbage, and makes no datapath decision.

import { formatMac } from '../packet/ethernet';
import { IPPROTO_ICMP, IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP } from '../packet/ipv4';
import { formatIpv4 } from '../route/address';
import { OfflineNode } from '../datapath/offline';
import { resolveTopology } from './topology-flags';

/** parseArgs options every offline command takes. */
export const TOPOLOGY_OPTIONS = {
  network: { type: 'string' },
  'local-subnet': { type: 'string' },
  'local-ip': { type: 'string' },
  peer: { type: 'string', multiple: true },
  vni: { type: 'string' },
  port: { type: 'string' },
  mtu: { type: 'string' },
} as const;

export const TOPOLOGY_HELP = `topology (default: the lab's — Network 10.244.0.0/16, this node 192.168.77.11 holding
10.244.1.0/24, peers 192.168.77.12 → 10.244.2.0/24 and 192.168.77.13 → 10.244.3.0/24):
  --local-ip IP          this node's underlay address; naming one of the default nodes makes it
                         this node and the other two its peers
  --local-subnet CIDR    this node's lease
  --peer SUBNET=IP       a peer's lease and underlay address (repeatable; replaces the defaults)
  --network CIDR         the cluster Network (net-conf.json's Network)
  --vni N, --port N      Backend.VNI, Backend.Port (vxlan 1/8472, udp 8285 by default)
  --mtu N                underlay MTU (1500); the tunnel MTU is this minus the backend's overhead
`;

export function intFlag(name: string, s: string | undefined, min: number, max: number): number | undefined {
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!/^\d+$/.test(s) || !Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: "${s}" is not a whole number in ${min}..${max}`);
  return n;
}

export interface TopologyValues {
  network?: string;
  'local-subnet'?: string;
  'local-ip'?: string;
  peer?: string[];
  vni?: string;
  port?: string;
  mtu?: string;
}

export function nodeFromFlags(backend: string, v: TopologyValues): OfflineNode {
  const topology = resolveTopology({ network: v.network, localSubnet: v['local-subnet'], localIp: v['local-ip'], peers: v.peer });
  return new OfflineNode({
    backend,
    topology,
    vni: intFlag('vni', v.vni, 0, 0xffffff),
    port: intFlag('port', v.port, 1, 65535),
    underlayMtu: intFlag('mtu', v.mtu, 576, 9000),
  });
}

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
    out.push({ name: quoted ? 'quoted UDP' : 'UDP', bytes: b.subarray(l4, l4 + 8), fields: `${sp} → ${dp}, len ${rd16(b, l4 + 4)}, checksum ${h16(rd16(b, l4 + 6))}`, depth, quoted, span: quoted ? 8 : n });
    const p = l4 + 8;
    if (!quoted && ctx.vxlanPort !== undefined && dp === ctx.vxlanPort && lend - p >= 8) {
      out[out.length - 1].span = 8;
      const flags = b[p];
      out.push({ name: 'VXLAN', bytes: b.subarray(p, p + 8), fields: `flags ${h8(flags)}${flags & 0x08 ? ' (I)' : ''}, VNI ${(b[p + 4] << 16) | (b[p + 5] << 8) | b[p + 6]}`, depth, span: 8 });
      const e = p + 8;
      if (lend - e < 14) {
        rest('data', e, depth + 1);
        return out;
      }
      const type = rd16(b, e + 12);
      out.push({ name: 'Ethernet', bytes: b.subarray(e, e + 14), fields: `${formatMac(b, e + 6)} → ${formatMac(b, e)}, type ${h16(type)}`, depth: depth + 1, span: 14 });
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
  const f = op === 1 ? `request: who has ${tpa}? tell ${spa} (${formatMac(b, o + 8)})` : op === 2 ? `reply: ${spa} is at ${formatMac(b, o + 8)}, to ${tpa}` : `op ${op}`;
  return [{ name: 'ARP', bytes: b.subarray(o, o + 28), fields: f, depth, span: 28 }];
}

/**
 * Names layers as the README and the kernel's documentation do: with a tunnel in the stack,
 * what is outside it is "outer" and what it carries is "inner"; `innerOnly` names a bare
 * packet that is itself the inner one (what the udp backend hands its socket).
 */
export function nameLayers(layers: Layer[], innerOnly = false): Layer[] {
  const tunnel = layers.some((l) => l.depth > 0);
  return layers.map((l) => {
    if (l.quoted || l.name === 'data' || l.name.startsWith('fragment')) return l;
    if (tunnel) {
      if (l.depth > 0) return { ...l, name: `inner ${l.name}` };
      if (l.name === 'IPv4') return { ...l, name: 'outer IPv4' };
      return l;
    }
    if (innerOnly && (l.name === 'IPv4' || l.name === 'Ethernet')) return { ...l, name: `inner ${l.name}` };
    return l;
  });
}

/** The layers as wire.ts has always printed them: name, fields, and the bytes underneath. */
export function layerLines(layers: Layer[], indent = '  '): string[] {
  const lines: string[] = [];
  for (const l of layers) {
    const name = l.quoted ? `  ${l.name}` : l.name;
    lines.push(`${indent}${name.padEnd(15)} ${l.fields}`);
    // Payload is counted, not dumped: the headers are what a walk is about.
    if (!/data|bytes/.test(l.name)) lines.push(`${indent}${''.padEnd(15)} ${hex(l.bytes)}`);
  }
  return lines;
}

export interface Span {
  /** Index of the first and one past the last layer the bracket covers. */
  from: number;
  to: number;
  label: string;
}

/**
 * The header stack as boxes, one per layer with its size, and brackets underneath saying who
 * wrote which part — the drawing the seeds' articles make of each encapsulation, here from
 * the bytes the code produced. Layers: outermost first, the last one standing for everything
 * the innermost header carries.
 */
export function stackDiagram(cells: { name: string; bytes: number }[], spans: Span[]): string[] {
  const texts = cells.map((c) => `${c.name} ${c.bytes}`);
  const widths = texts.map((t) => t.length + 2);
  const labels = spans.map((s) => ` ${s.label} `);
  // Widen the boxes under a bracket whose label would not fit, one column at a time across them.
  spans.forEach((s, i) => {
    const need = labels[i].length + 4;
    const have = () => widths.slice(s.from, s.to).reduce((a, b) => a + b, 0) + (s.to - s.from - 1);
    for (let k = 0; have() < need; k++) widths[s.from + (k % (s.to - s.from))]++;
  });
  const center = (t: string, w: number) => ' '.repeat(Math.floor((w - t.length) / 2)) + t + ' '.repeat(Math.ceil((w - t.length) / 2));
  const line = (l: string, m: string, r: string) => l + widths.map((w) => '─'.repeat(w)).join(m) + r;
  const out = [line('┌', '┬', '┐'), '│' + texts.map((t, i) => center(t, widths[i])).join('│') + '│', line('└', '┴', '┘')];
  let under = ' ';
  spans.forEach((s, i) => {
    const w = widths.slice(s.from, s.to).reduce((a, b) => a + b, 0) + (s.to - s.from - 1);
    const dashes = w - 2 - labels[i].length;
    const left = Math.floor(dashes / 2);
    under += '◀' + '─'.repeat(left) + labels[i] + '─'.repeat(dashes - left) + '▶ ';
  });
  out.push(under.trimEnd());
  return out;
}
