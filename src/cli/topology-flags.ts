// The topology flags of weft trace, replay and wire (--network, --local-subnet, --local-ip,
// --peer): which nodes an offline run knows about. Without them, the netns lab's shape.

import type { NodeSpec, OfflineTopology } from '../datapath/offline';
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
    throw new Error(`${flag}: ${(e as Error).message}`);
  }
}

function ipFlag(flag: string, s: string): number {
  try {
    return parseIpv4(s);
  } catch (e) {
    throw new Error(`${flag}: ${(e as Error).message}`);
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
