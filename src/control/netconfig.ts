// flannel's net-conf.json: the cluster network and how it is cut into per-node subnets.
// The rules follow flanneld's CheckNetworkConfig (pkg/subnet/config.go) so a file that flanneld
// accepts means the same thing here; where flanneld silently fixes a value up (host bits in
// Network) weft refuses with a message instead, because a silently different network is worse
// than a startup error.
import { formatCidr, formatIpv4, maskOf, parseCidr, parseIpv4 } from '../route/address';

import { BACKEND_TYPES, BACKENDS, DEFAULT_VNI, isBackendType, type BackendConfig, type BackendType } from '../datapath/backends';

export type { BackendConfig } from '../datapath/backends';

export interface NetworkConfig {
  /** e.g. "10.244.0.0/16" */
  network: string;
  subnetLen: number;
  /** First subnet's network address, e.g. "10.244.1.0". */
  subnetMin: string;
  /** Last subnet's network address, e.g. "10.244.255.0". */
  subnetMax: string;
  backend: BackendConfig;
  /**
   * EnableNFTables: the node's masquerade and forward rules go into native nftables tables
   * instead of iptables chains (flanneld's pkg/trafficmngr/nftables, same rules).
   */
  enableNftables: boolean;
  /** The JSON object as read, so it can be handed on verbatim (gRPC GetConfig, etcd). */
  raw: unknown;
}

const WHERE = 'net-conf.json';

function fail(msg: string): never {
  throw new Error(`${WHERE}: ${msg}`);
}

/**
 * Go's encoding/json matches object keys to struct fields case-insensitively (an exact match
 * wins), and flanneld reads net-conf.json that way; configs in the wild spell "Subnetlen".
 */
function field(obj: Record<string, unknown>, name: string): unknown {
  if (Object.prototype.hasOwnProperty.call(obj, name)) return obj[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(obj)) {
    if (k.toLowerCase() === lower) return obj[k];
  }
  return undefined;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
}

function optionalInt(obj: Record<string, unknown>, name: string, label: string, min: number, max: number): number | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(`${label} ${show(v)} must be an integer from ${min} to ${max}`);
  }
  return v;
}

function optionalAddr(obj: Record<string, unknown>, name: string): number | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(`${name} ${show(v)} must be an IPv4 address string like "10.244.1.0"`);
  try {
    return parseIpv4(v);
  } catch {
    return fail(`${name} ${show(v)} is not an IPv4 address`);
  }
}

export function parseNetConfig(json: string | unknown): NetworkConfig {
  let raw: unknown = json;
  if (typeof json === 'string') {
    try {
      raw = JSON.parse(json);
    } catch (e) {
      fail(`not valid JSON (${(e as Error).message})`);
    }
  }
  if (!isPlainObject(raw)) fail('must be a JSON object like {"Network": "10.244.0.0/16"}');
  const obj = raw;

  const netStr = field(obj, 'Network');
  if (netStr === undefined || netStr === null || netStr === '') {
    fail('Network is required (e.g. "Network": "10.244.0.0/16")');
  }
  if (typeof netStr !== 'string') fail(`Network ${show(netStr)} must be a CIDR string like "10.244.0.0/16"`);
  let network;
  try {
    network = parseCidr(netStr);
  } catch (e) {
    // route/address.ts says 'invalid CIDR "<value>": <why>'; keep only the why, the value is named here.
    const why = (e as Error).message.replace(/^invalid CIDR "[^"]*": /, '');
    return fail(`Network ${show(netStr)} is not a valid IPv4 CIDR: ${why}`);
  }
  const netText = formatCidr(network);
  // Four subnets of at least /30 (the first is skipped, see SubnetMin) need a /28.
  if (network.len > 28) fail(`Network ${netText} is too small: the smallest usable network is a /28`);

  const explicitLen = optionalInt(obj, 'SubnetLen', 'SubnetLen', 0, 32);
  let subnetLen: number;
  if (explicitLen === undefined || explicitLen === 0) {
    // flanneld: a /24 per node when the network has room for four of them, else a quarter.
    subnetLen = network.len <= 22 ? 24 : network.len + 2;
  } else {
    subnetLen = explicitLen;
    // A /31 or /32 leaves no room for the bridge gateway plus pods.
    if (subnetLen > 30) fail(`SubnetLen ${subnetLen} is too long: at most 30`);
    // flanneld requires room for four subnets: the first is never handed out, so a split in
    // two would leave a single node.
    if (subnetLen < network.len + 2) {
      fail(`SubnetLen ${subnetLen} is too short for Network ${netText}: at least ${network.len + 2} so the network holds four subnets`);
    }
  }

  const size = 2 ** (32 - subnetLen);
  const netAddr = network.addr >>> 0;
  const netLast = (netAddr + 2 ** (32 - network.len) - 1) >>> 0;
  const subnetMask = maskOf(subnetLen) >>> 0;

  const checkBound = (name: string, addr: number): void => {
    if (addr < netAddr || addr > netLast) fail(`${name} ${formatIpv4(addr)} is outside Network ${netText}`);
    if ((addr & subnetMask) >>> 0 !== addr) {
      fail(`${name} ${formatIpv4(addr)} is not on a SubnetLen boundary (/${subnetLen})`);
    }
  };

  // The first subnet is skipped by default: its network address equals the cluster network's,
  // and flanneld found that confuses tools that treat x.y.0.0 as "the network".
  const minGiven = optionalAddr(obj, 'SubnetMin');
  const subnetMin = minGiven ?? (netAddr + size) >>> 0;
  if (minGiven !== undefined) checkBound('SubnetMin', subnetMin);
  const maxGiven = optionalAddr(obj, 'SubnetMax');
  const subnetMax = maxGiven ?? (netLast - size + 1) >>> 0;
  if (maxGiven !== undefined) checkBound('SubnetMax', subnetMax);
  if (subnetMin > subnetMax) {
    fail(`SubnetMin ${formatIpv4(subnetMin)} is above SubnetMax ${formatIpv4(subnetMax)}`);
  }

  const backend = parseBackend(field(obj, 'Backend'));
  const nft = field(obj, 'EnableNFTables');
  if (nft !== undefined && nft !== null && typeof nft !== 'boolean') fail(`EnableNFTables ${show(nft)} must be true or false`);

  return {
    network: netText,
    subnetLen,
    subnetMin: formatIpv4(subnetMin),
    subnetMax: formatIpv4(subnetMax),
    backend,
    enableNftables: nft === true,
    raw,
  };
}

function parseBackend(v: unknown): BackendConfig {
  if (v === undefined || v === null) return { type: 'udp', port: BACKENDS.udp.defaultPort };
  if (!isPlainObject(v)) fail(`Backend ${show(v)} must be an object like {"Type": "vxlan"}`);
  const t = field(v, 'Type');
  let type: BackendType;
  if (t === undefined || t === null) {
    type = 'udp';
  } else if (isBackendType(t)) {
    type = t;
  } else {
    return fail(`Backend.Type ${show(t)} is not supported; use one of ${BACKEND_TYPES.join(', ')}`);
  }
  // Validate every field that is present, even where this backend ignores it: a typo'd value
  // should not wait until someone switches backends to surface.
  const port = optionalInt(v, 'Port', 'Backend.Port', 1, 65535);
  const vni = optionalInt(v, 'VNI', 'Backend.VNI', 0, 0xffffff); // 24-bit field, RFC 7348 §5
  const dr = field(v, 'DirectRouting');
  if (dr !== undefined && dr !== null && typeof dr !== 'boolean') {
    fail(`Backend.DirectRouting ${show(dr)} must be true or false`);
  }
  const out: BackendConfig = { type };
  switch (type) {
    case 'udp':
      out.port = port ?? BACKENDS.udp.defaultPort;
      break;
    case 'vxlan':
      out.port = port ?? BACKENDS.vxlan.defaultPort;
      out.vni = vni ?? DEFAULT_VNI;
      out.directRouting = (dr as boolean | undefined) ?? false;
      break;
    case 'ipip':
      // Raw IP protocol 4: no port, no VNI; flannel's ipip backend takes DirectRouting too.
      out.directRouting = (dr as boolean | undefined) ?? false;
      break;
    default:
      // host-gw sends nothing of its own.
      break;
  }
  return out;
}

/** Number of subnets between SubnetMin and SubnetMax inclusive. */
export function subnetCount(cfg: NetworkConfig): number {
  const size = 2 ** (32 - cfg.subnetLen);
  return (parseIpv4(cfg.subnetMax) - parseIpv4(cfg.subnetMin)) / size + 1;
}
