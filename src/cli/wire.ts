// `weft wire --backend B`: push one packet through the real egress pipeline and backend, with
// no root, no TUN and no sockets, and print what goes on the wire layer by layer, as bytes
// and fields. The README's packet walks are this command's output, so they cannot drift from
// the code.
import { parseArgs } from 'node:util';
import { parseNetConfig } from '../control/netconfig';
import type { BackendType } from '../datapath/backend';
import { createBackend, leaseDataFor } from '../datapath/backends';
import type { Peer } from '../datapath/peer';
import { Pipeline } from '../datapath/pipeline';
import { DatapathStats, DROP_NAMES } from '../datapath/stats';
import { PacketList } from '../io/packet-list';
import { buildIpv4Packet } from '../packet/builder';
import { formatMac } from '../packet/ethernet';
import { writeIcmpEcho } from '../packet/icmp';
import { RouteTable } from '../route/route-table';
import { formatIpv4, maskOf, parseCidr, parseIpv4 } from '../route/cidr';

const HELP = `usage: weft wire [--backend udp|vxlan|ipip] [--src IP] [--dst IP] [--local IP] [--peer IP] [--size N]

Builds an ICMP echo request from pod --src to pod --dst (each pod's /24 is its node's lease),
runs it through weft's egress pipeline and the backend's encapsulation exactly as the daemon
would, and prints the bytes handed to the underlay socket, layer by layer.
`;

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex').replace(/(..)/g, '$1 ').trim();

function ipv4Fields(b: Buffer, o: number): string {
  const flags = b[o + 6] >> 5;
  return `IPv4 ${formatIpv4(b.readUInt32BE(o + 12))} → ${formatIpv4(b.readUInt32BE(o + 16))}, proto ${b[o + 9]}, TTL ${b[o + 8]}, ` +
    `len ${b.readUInt16BE(o + 2)}, id 0x${b.readUInt16BE(o + 4).toString(16).padStart(4, '0')}, DF ${flags & 2 ? 1 : 0}, TOS 0x${b[o + 1].toString(16).padStart(2, '0')}, checksum 0x${b.readUInt16BE(o + 10).toString(16).padStart(4, '0')}`;
}

function layers(type: BackendType, b: Buffer): { name: string; bytes: Buffer; fields: string }[] {
  const out: { name: string; bytes: Buffer; fields: string }[] = [];
  let o = 0;
  if (type === 'vxlan' || type === 'ipip') {
    out.push({ name: 'outer IPv4', bytes: b.subarray(0, 20), fields: ipv4Fields(b, 0) });
    o = 20;
  }
  if (type === 'vxlan') {
    out.push({
      name: 'UDP',
      bytes: b.subarray(o, o + 8),
      fields: `${b.readUInt16BE(o)} → ${b.readUInt16BE(o + 2)}, len ${b.readUInt16BE(o + 4)}, checksum 0x${b.readUInt16BE(o + 6).toString(16).padStart(4, '0')}`,
    });
    o += 8;
    out.push({ name: 'VXLAN', bytes: b.subarray(o, o + 8), fields: `flags 0x${b[o].toString(16).padStart(2, '0')} (I), VNI ${b.readUIntBE(o + 4, 3)}` });
    o += 8;
    out.push({
      name: 'inner Ethernet',
      bytes: b.subarray(o, o + 14),
      fields: `${formatMac(b, o + 6)} → ${formatMac(b, o)}, type 0x${b.readUInt16BE(o + 12).toString(16).padStart(4, '0')}`,
    });
    o += 14;
  }
  out.push({ name: 'inner IPv4', bytes: b.subarray(o, o + 20), fields: ipv4Fields(b, o) });
  out.push({ name: 'ICMP', bytes: b.subarray(o + 20, o + 28), fields: `type ${b[o + 20]} (echo request), id ${b.readUInt16BE(o + 24)}, seq ${b.readUInt16BE(o + 26)}` });
  return out;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      backend: { type: 'string', default: 'vxlan' },
      src: { type: 'string', default: '10.244.1.2' },
      dst: { type: 'string', default: '10.244.2.2' },
      local: { type: 'string', default: '192.168.77.11' },
      peer: { type: 'string', default: '192.168.77.12' },
      size: { type: 'string', default: '84' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const type = values.backend as BackendType;
  if (!['udp', 'vxlan', 'ipip'].includes(type)) throw new Error(`--backend: "${type}" has no encapsulation to show (udp, vxlan, ipip; host-gw sends the pod's packet as is)`);
  const size = Number(values.size);
  if (!Number.isInteger(size) || size < 28 || size > 1400) throw new Error(`--size: ${values.size} is not 28..1400`);
  const src = parseIpv4(values.src!);
  const dst = parseIpv4(values.dst!);
  const localIp = parseIpv4(values.local!);
  const peerIp = parseIpv4(values.peer!);
  const localSubnet = { addr: (src & maskOf(24)) >>> 0, len: 24 };
  const peerSubnet = { addr: (dst & maskOf(24)) >>> 0, len: 24 };
  if (localSubnet.addr === peerSubnet.addr) throw new Error('--src and --dst must be in different /24s (different nodes)');

  const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: type } });
  const network = parseCidr(config.network);
  const setup = createBackend(config, { publicIp: localIp, subnet: localSubnet });
  const backend = setup.backend!;
  // The peer's lease, as the control plane would hand it to us.
  const peerData = leaseDataFor(config, peerIp);
  const peer: Peer = { subnet: peerSubnet, publicIp: peerIp, port: setup.port, backendData: peerData, local: false, direct: false, backendState: null };
  const self: Peer = { subnet: localSubnet, publicIp: localIp, port: setup.port, backendData: leaseDataFor(config, localIp), local: true, direct: false, backendState: null };
  backend.onPeerAdded(peer);
  const routes = new RouteTable<Peer>();
  routes.replaceAll([
    { addr: localSubnet.addr, len: 24, value: self },
    { addr: peerSubnet.addr, len: 24, value: peer },
  ]);
  const stats = new DatapathStats();
  const pipeline = new Pipeline({
    backend, routes, peersByAddr: new Map([[peerIp, peer]]), network, localSubnet, icmpSource: localSubnet.addr, stats, batchSize: 1, tunnelMtu: 1500 - backend.mtuOverhead,
  });
  const payload = Buffer.alloc(size - 28);
  const echo = Buffer.alloc(size - 20);
  writeIcmpEcho(echo, 0, 8, 0x77, 1, payload);
  // TTL 63: the pod sent 64 and the node's kernel already forwarded it once into the TUN.
  const pkt = buildIpv4Packet({ src, dst, protocol: 1, ttl: 63, id: 0x1c46, df: true, payload: echo });
  const rx = new PacketList({ capacity: 1, slotSize: 2048, headroom: 64 });
  rx.buf.set(pkt, 64);
  rx.push(64, pkt.length);
  const tx = PacketList.view(rx);
  pipeline.egress(rx, tx);
  if (tx.count !== 1) {
    const why = stats.drops.findIndex((n) => n > 0);
    throw new Error(`the pipeline did not send the packet (drop: ${DROP_NAMES[why] ?? 'none'})`);
  }
  const wire = Buffer.from(rx.buf.subarray(tx.offs[0], tx.offs[0] + tx.lens[0]));
  const to = `${formatIpv4(tx.addrs[0])}${tx.ports[0] ? `:${tx.ports[0]}` : ''}`;
  const p = (s: string) => process.stdout.write(s + '\n');
  p(`${type}: ${size}-byte ICMP echo ${values.src} → ${values.dst}, node ${values.local} → node ${values.peer}`);
  p(`handed to the underlay socket: ${wire.length} bytes to ${to}` +
    (type === 'udp' ? ` (the kernel's UDP socket adds IPv4 ${values.local} → ${values.peer} and UDP ${setup.port} → ${setup.port}: 28 bytes)` : ` (sent as is: IP_HDRINCL)`));
  for (const l of layers(type, wire)) {
    p(`  ${l.name.padEnd(15)} ${l.fields}`);
    p(`  ${''.padEnd(15)} ${hex(l.bytes)}`);
  }
  return 0;
}
