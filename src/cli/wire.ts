// `weft wire --backend B`: push one packet through the real egress pipeline and backend, with
// no root, no TUN and no sockets, and print what goes on the wire layer by layer, as bytes
// and fields. `weft trace` is the longer form (every decision on the way, any packet, every
// backend); weft trace's packet walks in docs/architecture.md show the same bytes.
import { parseArgs } from 'node:util';
import { BACKEND_TYPES, BACKENDS } from '../datapath/backends';
import { OfflineNode } from '../datapath/offline';
import { resolveTopology } from './topology-flags';
import { DROP_NAMES } from '../datapath/stats';
import { buildIpv4Packet } from '../packet/builder';
import { writeIcmpEcho } from '../packet/icmp';
import { formatCidr, formatIpv4, maskOf, parseIpv4 } from '../route/address';
import { decodeIpv4 } from '../packet/dissect';
import { layerLines, nameLayers } from '../packet/layers';

/** The backends that encapsulate: every one but host-gw. */
const TUNNELS = BACKEND_TYPES.filter((t) => BACKENDS[t].needsTun);

const HELP = `usage: weft wire [--backend ${TUNNELS.join('|')}] [--src IP] [--dst IP] [--local IP] [--peer IP] [--size N]

Builds an ICMP echo request from pod --src to pod --dst (each pod's /24 is its node's lease),
runs it through weft's egress pipeline and the backend's encapsulation exactly as the daemon
would, and prints the bytes handed to the underlay socket, layer by layer.
`;

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
  const type = values.backend!;
  if (!(TUNNELS as readonly string[]).includes(type))
    throw new Error(`--backend: "${type}" has no encapsulation to show (${TUNNELS.join(', ')}; host-gw sends the pod's packet as is)`);
  const size = Number(values.size);
  if (!Number.isInteger(size) || size < 28 || size > 1400) throw new Error(`--size: ${values.size} is not 28..1400`);
  const src = parseIpv4(values.src!);
  const dst = parseIpv4(values.dst!);
  const localSubnet = { addr: (src & maskOf(24)) >>> 0, len: 24 };
  const peerSubnet = { addr: (dst & maskOf(24)) >>> 0, len: 24 };
  if (localSubnet.addr === peerSubnet.addr) throw new Error('--src and --dst must be in different /24s (different nodes)');

  // The daemon's datapath for node --local, with the peer's lease as the control plane hands it
  // over (src/datapath/offline.ts; `weft trace` shows every decision on the way).
  const node = new OfflineNode({
    backend: type,
    topology: resolveTopology({ localSubnet: formatCidr(localSubnet), localIp: values.local, peers: [`${formatCidr(peerSubnet)}=${values.peer}`] }),
  });
  const payload = Buffer.alloc(size - 28);
  const echo = Buffer.alloc(size - 20);
  writeIcmpEcho(echo, 0, 8, 0x77, 1, payload);
  // TTL 63: the pod sent 64 and the node's kernel already forwarded it once into the TUN.
  const pkt = buildIpv4Packet({ src, dst, protocol: 1, ttl: 63, id: 0x1c46, df: true, payload: echo });
  const r = node.egress(pkt);
  if (r.sent.length !== 1) {
    throw new Error(`the pipeline did not send the packet (drop: ${DROP_NAMES[r.drops[0]] ?? 'none'})`);
  }
  const d = r.sent[0];
  // vxlan: the payload starts at the VXLAN header; show it with the kernel's IPv4 + UDP in front.
  const wire = type === 'vxlan' ? d.wire[0] : d.payload;
  const to = `${formatIpv4(d.addr)}${d.port ? `:${d.port}` : ''}`;
  const p = (s: string) => process.stdout.write(s + '\n');
  p(`${type}: ${size}-byte ICMP echo ${values.src} → ${values.dst}, node ${values.local} → node ${values.peer}`);
  p(
    `handed to the underlay socket: ${d.payload.length} bytes to ${to}` +
      (type === 'udp'
        ? ` (the kernel's UDP socket adds IPv4 ${values.local} → ${values.peer} and UDP ${node.port} → ${node.port}: 28 bytes)`
        : type === 'vxlan'
          ? ` (VXLAN + Ethernet + packet; the kernel's UDP socket its flow hash picks adds IPv4 and UDP: 28 bytes, shown here, ${wire.length} bytes on the wire)`
          : ` (sent as is: IP_HDRINCL)`),
  );
  const ctx = { vxlanPort: type === 'vxlan' ? node.port : undefined };
  for (const line of layerLines(nameLayers(decodeIpv4(wire, 0, wire.length, ctx), type === 'udp'))) p(line);
  return 0;
}
