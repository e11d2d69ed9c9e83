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

/**
 * How weft treats one net-conf.json key flanneld reads.
 * - `same`: as flanneld.
 * - `default-only`: weft implements only the Go zero value (false), which is also flanneld's
 *   default; any other value is refused.
 * - `refused`: weft does not implement it; present with any value but null, it is refused.
 */
export type NetConfKeyRule = 'same' | 'default-only' | 'refused';

export interface NetConfKey {
  readonly key: string;
  readonly rule: NetConfKeyRule;
  /** What weft does with it, for the compatibility docs and the error line. */
  readonly note: string;
}

/**
 * The top level of net-conf.json: the fields of flanneld's subnet.Config (pkg/subnet/config.go),
 * which encoding/json fills; BackendType there is `json:"-"` and so not a key.
 */
export const TOP_KEYS: readonly NetConfKey[] = [
  { key: 'Network', rule: 'same', note: 'required; the IPv4 cluster network' },
  { key: 'SubnetLen', rule: 'same', note: '0 or absent: 24, or a quarter of a network smaller than /22' },
  { key: 'SubnetMin', rule: 'same', note: 'default: the second subnet' },
  { key: 'SubnetMax', rule: 'same', note: 'default: the last subnet' },
  { key: 'Backend', rule: 'same', note: "absent: udp, as flanneld's code (flannel's docs say vxlan); given without Type: refused, as flanneld" },
  { key: 'EnableNFTables', rule: 'same', note: 'masquerade and forward rules in nftables instead of iptables' },
  { key: 'EnableIPv4', rule: 'same', note: 'true (the default) only: weft is IPv4; false is refused' },
  { key: 'EnableIPv6', rule: 'default-only', note: 'weft is IPv4-only: true is refused' },
  { key: 'IPv6Network', rule: 'refused', note: 'weft is IPv4-only' },
  { key: 'IPv6SubnetLen', rule: 'refused', note: 'weft is IPv4-only' },
  { key: 'IPv6SubnetMin', rule: 'refused', note: 'weft is IPv4-only' },
  { key: 'IPv6SubnetMax', rule: 'refused', note: 'weft is IPv4-only' },
];

/**
 * Backend keys by Backend.Type: the config structs of flannel's Linux backends (pkg/backend/udp,
 * vxlan, ipip, hostgw). Type is read for every backend. A key of another backend is refused
 * rather than ignored as flanneld ignores it: it configures nothing, and is most often left over
 * from a backend switch or a Type typo.
 */
export const BACKEND_KEYS: Readonly<Record<BackendType, readonly NetConfKey[]>> = {
  udp: [{ key: 'Port', rule: 'same', note: 'default 8285' }],
  vxlan: [
    { key: 'VNI', rule: 'same', note: 'default 1' },
    { key: 'Port', rule: 'same', note: 'default 8472' },
    {
      key: 'MTU',
      rule: 'same',
      note: "the MTU of the outgoing (underlay) packets, default the interface's; tunnel and pod MTU are 50 less; above the interface's MTU is refused at daemon start",
    },
    { key: 'DirectRouting', rule: 'same', note: 'host routes to peers on the same underlay subnet' },
    { key: 'GBP', rule: 'default-only', note: 'VXLAN Group Based Policy is not implemented: true is refused' },
    { key: 'Learning', rule: 'default-only', note: "weft's VTEP learns nothing from traffic (peers come from leases): true is refused" },
    { key: 'MacPrefix', rule: 'refused', note: "flannel's Windows backend only" },
    { key: 'Name', rule: 'refused', note: "flannel's Windows backend only" },
  ],
  ipip: [{ key: 'DirectRouting', rule: 'same', note: 'host routes to peers on the same underlay subnet' }],
  'host-gw': [],
};

/** Smallest Backend.MTU: 576, the datagram every IPv4 host must accept (RFC 791), as weft trace's --mtu. */
export const MIN_BACKEND_MTU = 576;

/**
 * Refuse keys that are not in `known` (a typo, or a key another backend takes), and keys that
 * appear twice in different case: Go's encoding/json would let the later one win silently.
 */
function checkKeys(obj: Record<string, unknown>, known: readonly NetConfKey[], label: string, otherwise: (k: string) => string): void {
  const seen = new Map<string, string>();
  for (const k of Object.keys(obj)) {
    const lower = k.toLowerCase();
    const spec = known.find((s) => s.key.toLowerCase() === lower);
    if (!spec) fail(`${label}${quoteKey(k)} ${otherwise(k)}`);
    const before = seen.get(lower);
    if (before !== undefined) fail(`${label}${spec.key} is given twice (${quoteKey(before)} and ${quoteKey(k)}); keys match case-insensitively, keep one`);
    seen.set(lower, k);
    const v = obj[k];
    if (v === null) continue; // Go's encoding/json leaves the field at its default
    if (spec.rule === 'refused') fail(`${label}${spec.key} is not supported by weft (${spec.note}); remove it`);
    if (spec.rule === 'default-only') {
      if (typeof v !== 'boolean') fail(`${label}${spec.key} ${show(v)} must be true or false`);
      if (v) fail(`${label}${spec.key} true is not supported by weft (${spec.note})`);
    }
  }
}

/** A key as the file spells it; quoted only when it is not a plain word (e.g. a stray space). */
function quoteKey(k: string): string {
  return /^[A-Za-z0-9_-]{1,64}$/.test(k) ? k : JSON.stringify(k.length > 64 ? `${k.slice(0, 64)}…` : k);
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
  checkKeys(obj, TOP_KEYS, '', () => 'is not a flannel net-conf.json key');
  const v4 = field(obj, 'EnableIPv4');
  if (v4 !== undefined && v4 !== null && typeof v4 !== 'boolean') fail(`EnableIPv4 ${show(v4)} must be true or false`);
  // flanneld's EnableIPv4 defaults to true; false asks for an IPv6-only network.
  if (v4 === false) fail('EnableIPv4 false (an IPv6-only network) is not supported by weft, which is IPv4-only');

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

/**
 * Backend absent: udp, as flanneld's code decides (pkg/subnet/config.go parseBackendType), not
 * vxlan as flannel's configuration.md says. weft and flanneld nodes reading one config from etcd
 * must pick the same backend, or a mixed cluster splits into two data planes that cannot reach
 * each other; the manifests flannel ships all write Type out, which both read alike. A Backend
 * without a Type (or with "") is refused, as flanneld refuses it ("unknown backend type").
 */
function parseBackend(v: unknown): BackendConfig {
  if (v === undefined || v === null) return { type: 'udp', port: BACKENDS.udp.defaultPort };
  if (!isPlainObject(v)) fail(`Backend ${show(v)} must be an object like {"Type": "vxlan"}`);
  const t = field(v, 'Type');
  let type: BackendType;
  if (t === undefined || t === null || t === '') {
    return fail(`Backend.Type is required when Backend is given (one of ${BACKEND_TYPES.join(', ')}), as flanneld requires it`);
  } else if (isBackendType(t)) {
    type = t;
  } else {
    return fail(`Backend.Type ${show(t)} is not supported; use one of ${BACKEND_TYPES.join(', ')}`);
  }
  const known: NetConfKey[] = [{ key: 'Type', rule: 'same', note: '' }, ...BACKEND_KEYS[type]];
  checkKeys(v, known, 'Backend.', (k) => {
    const takers = BACKEND_TYPES.filter((b) => BACKEND_KEYS[b].some((s) => s.key.toLowerCase() === k.toLowerCase()));
    return takers.length > 0
      ? `is not a key of the ${type} backend (${takers.join(', ')} take${takers.length === 1 ? 's' : ''} it); remove it`
      : 'is not a flannel Backend key';
  });
  // vxlan Port 0 is the kernel's default port in flanneld (the link is created with port 0);
  // udp has no such default, so there 0 is refused.
  const port = optionalInt(v, 'Port', 'Backend.Port', type === 'vxlan' ? 0 : 1, 65535);
  const vni = optionalInt(v, 'VNI', 'Backend.VNI', 0, 0xffffff); // 24-bit field, RFC 7348 §5
  const mtu = optionalInt(v, 'MTU', 'Backend.MTU', MIN_BACKEND_MTU, 65535);
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
      out.port = port || BACKENDS.vxlan.defaultPort;
      out.vni = vni ?? DEFAULT_VNI;
      out.directRouting = (dr as boolean | undefined) ?? false;
      if (mtu !== undefined) out.mtu = mtu;
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
