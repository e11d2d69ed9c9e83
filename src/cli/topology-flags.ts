// The topology flags of weft trace, replay and wire (--network, --local-subnet, --local-ip,
// --peer, --vni, --port, --mtu): which nodes an offline run knows about and how its backend is
// configured, and the OfflineNode they build. Without them, the netns lab's shape.

import { OfflineNode, type NodeSpec, type OfflineTopology } from '../datapath/offline';
import { DEFAULT_NETWORK } from '../lab/state';
import { cidrContainsCidr, formatCidr, formatIpv4, parseCidr, parseIpv4, type Cidr } from '../route/address';

/** The lab's nodes (src/lab): 192.168.77.11.. holding 10.244.1.0/24.. of DEFAULT_NETWORK. */
export const DEFAULT_NODES: readonly { subnet: string; publicIp: string }[] = [
  { subnet: '10.244.1.0/24', publicIp: '192.168.77.11' },
  { subnet: '10.244.2.0/24', publicIp: '192.168.77.12' },
  { subnet: '10.244.3.0/24', publicIp: '192.168.77.13' },
];

/** Command-line shape of a topology: every field optional, defaults are the lab's. */
export interface TopologyFlags {
  network?: string;
  localSubnet?: string;
  localIp?: string;
  /** "SUBNET=IP", each replacing the default peers. */
  peers?: string[];
}

function cidrFlag(flag: string, s: string): Cidr {
  try {
    return parseCidr(s);
  } catch (e) {
    throw new Error(`${flag}: ${(e as Error).message}`, { cause: e });
  }
}

function ipFlag(flag: string, s: string): number {
  try {
    return parseIpv4(s);
  } catch (e) {
    throw new Error(`${flag}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The nodes an offline run knows about. Without --peer, the lab's three nodes; --local-ip
 * naming one of them makes that one local (so a capture taken on node 2 replays as node 2),
 * and the rest are its peers. --peer replaces the peers outright.
 */
export function resolveTopology(f: TopologyFlags): OfflineTopology {
  const network = cidrFlag('--network', f.network ?? DEFAULT_NETWORK);
  const defaults = DEFAULT_NODES.map((n) => ({ subnet: parseCidr(n.subnet), publicIp: parseIpv4(n.publicIp) }));
  const localIp = f.localIp !== undefined ? ipFlag('--local-ip', f.localIp) : defaults[0].publicIp;
  let peers: NodeSpec[];
  let local: NodeSpec;
  if (f.peers && f.peers.length > 0) {
    peers = f.peers.map((spec) => {
      const eq = spec.indexOf('=');
      if (eq < 0) throw new Error(`--peer: "${spec}" is not SUBNET=IP (e.g. 10.244.2.0/24=192.168.77.12)`);
      return { subnet: cidrFlag('--peer', spec.slice(0, eq)), publicIp: ipFlag('--peer', spec.slice(eq + 1)) };
    });
    local = { subnet: defaults[0].subnet, publicIp: localIp };
  } else {
    const chosen = defaults.find((n) => n.publicIp === localIp);
    local = chosen ?? { subnet: defaults[0].subnet, publicIp: localIp };
    peers = defaults.filter((n) => n !== chosen && n.publicIp !== localIp);
  }
  if (f.localSubnet !== undefined) local = { subnet: cidrFlag('--local-subnet', f.localSubnet), publicIp: local.publicIp };
  if (f.peers === undefined || f.peers.length === 0) {
    // Default peers give way to a local subnet that overlaps them.
    peers = peers.filter((p) => !cidrContainsCidr(p.subnet, local.subnet) && !cidrContainsCidr(local.subnet, p.subnet));
  }
  const all = [local, ...peers];
  for (const n of all) {
    if (!cidrContainsCidr(network, n.subnet)) throw new Error(`subnet ${formatCidr(n.subnet)} is outside the Network ${formatCidr(network)}`);
  }
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i];
      const b = all[j];
      if (cidrContainsCidr(a.subnet, b.subnet) || cidrContainsCidr(b.subnet, a.subnet)) {
        throw new Error(`subnets ${formatCidr(a.subnet)} and ${formatCidr(b.subnet)} overlap: each node holds its own lease`);
      }
      if (a.publicIp === b.publicIp) throw new Error(`two nodes share the public IP ${formatIpv4(a.publicIp)}`);
    }
  }
  return { network, local, peers };
}

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

/** tunOffload: the TUN as the daemon opens it with offloads (weft trace --super). */
export function nodeFromFlags(backend: string, v: TopologyValues, tunOffload = false): OfflineNode {
  const topology = resolveTopology({ network: v.network, localSubnet: v['local-subnet'], localIp: v['local-ip'], peers: v.peer });
  return new OfflineNode({
    backend,
    topology,
    vni: intFlag('vni', v.vni, 0, 0xffffff),
    port: intFlag('port', v.port, 1, 65535),
    underlayMtu: intFlag('mtu', v.mtu, 576, 9000),
    tunOffload,
  });
}
