// flannel's etcd layout, as pkg/subnet/etcd/registry.go and pkg/lease/lease.go write it:
//   PREFIX/config                  net-conf.json text
//   PREFIX/subnets/10.244.3.0-24   {"PublicIP":"192.168.77.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{...}}
// Matching it byte for byte means `etcdctl get --prefix /coreos.com/network/subnets` reads the
// same for weft and flanneld nodes, and each sees the other's leases as peers.
import { formatCidr, formatIpv4, parseCidr, parseIpv4 } from '../../route/address';
import { MAX_LEASE_VALUE_BYTES, leaseProblem } from '../limits';
import { quote } from '../../util/quote';

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

/** The lease attributes a subnet key's value carries (flannel's LeaseAttrs, IPv4 part). */
export interface LeaseAttrs {
  publicIp: string;
  backendType: string;
  backendData: Record<string, unknown>;
}

/** "/coreos.com/network/" → "/coreos.com/network"; refuses what cannot be a key prefix. */
export function normalisePrefix(prefix: string): string {
  const p = prefix.replace(/\/+$/, '');
  if (!p.startsWith('/') || p.length < 2) {
    throw new Error(`etcd prefix ${JSON.stringify(prefix)} must be an absolute key path like ${DEFAULT_ETCD_PREFIX}`);
  }
  return p;
}

export function configKey(prefix: string): string {
  return `${prefix}/config`;
}

/** Prefix of every lease key, with the trailing slash so ".../subnetsX" is not swept in. */
export function subnetsPrefix(prefix: string): string {
  return `${prefix}/subnets/`;
}

/** "10.244.3.0/24" → "PREFIX/subnets/10.244.3.0-24" (flannel's MakeSubnetKey: '/' is the key separator). */
export function subnetKey(prefix: string, subnet: string): string {
  const c = parseCidr(subnet);
  return `${subnetsPrefix(prefix)}${formatIpv4(c.addr)}-${c.len}`;
}

// flannel's ParseSubnetKey also accepts a dual-stack key, "10.244.3.0-24&fd00:10:244:3::-64";
// weft routes IPv4 only, but the IPv4 half of such a lease is still taken and still a peer.
const SUBNET_NAME = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})-(\d{1,2})(?:&([0-9a-fA-F:]+)-(\d{1,3}))?$/;

/** The IPv4 subnet (CIDR) a lease key names, or undefined when the key is not a subnet key. */
export function parseSubnetKey(prefix: string, key: string): string | undefined {
  const base = subnetsPrefix(prefix);
  if (!key.startsWith(base)) return undefined;
  const m = SUBNET_NAME.exec(key.slice(base.length));
  if (!m) return undefined;
  try {
    // Host bits set ("10.244.3.5-24") is refused: flannel never writes such a key, and routing
    // it would need a guess at which /24 was meant.
    return formatCidr(parseCidr(`${m[1]}/${m[2]}`));
  } catch {
    return undefined;
  }
}

/**
 * flannel's LeaseAttrs as Go's encoding/json writes it: fields in struct order, PublicIPv6 a
 * nil pointer (null), BackendType and BackendData omitempty (udp, host-gw and ipip leases carry
 * no BackendData; flannel's udp backend sets no BackendType either, but weft always names it).
 */
export function encodeLeaseValue(a: LeaseAttrs): string {
  const v: Record<string, unknown> = { PublicIP: a.publicIp, PublicIPv6: null };
  if (a.backendType !== '') v.BackendType = a.backendType;
  if (Object.keys(a.backendData).length > 0) v.BackendData = a.backendData;
  return JSON.stringify(v);
}

/** Go's encoding/json matches field names case-insensitively (an exact match wins); so do we. */
function field(obj: Record<string, unknown>, name: string): unknown {
  if (Object.prototype.hasOwnProperty.call(obj, name)) return obj[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(obj)) if (k.toLowerCase() === lower) return obj[k];
  return undefined;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses a lease value; throws an Error saying what is wrong with it, quoting at most a short
 * prefix of anything it did not like. A value beyond limits.ts' sizes is refused like a
 * malformed one: it would make every List reply carrying it too large for the nodes.
 */
export function decodeLeaseValue(text: string): LeaseAttrs {
  if (text.length > MAX_LEASE_VALUE_BYTES) throw new Error(`value is ${text.length} characters long, more than a lease's ${MAX_LEASE_VALUE_BYTES}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isPlainObject(raw)) throw new Error('not a JSON object');
  const ip = field(raw, 'PublicIP');
  if (typeof ip !== 'string') throw new Error('PublicIP is missing or not a string');
  let publicIp: string;
  try {
    publicIp = formatIpv4(parseIpv4(ip));
  } catch {
    throw new Error(`PublicIP ${quote(ip)} is not an IPv4 address`);
  }
  const type = field(raw, 'BackendType');
  if (type !== undefined && type !== null && typeof type !== 'string') throw new Error('BackendType is not a string');
  const data = field(raw, 'BackendData');
  if (data !== undefined && data !== null && !isPlainObject(data)) throw new Error('BackendData is not a JSON object');
  const attrs: LeaseAttrs = {
    publicIp,
    // Every flannel backend but udp writes its type; a lease without one is a flannel udp node.
    backendType: typeof type === 'string' && type !== '' ? type : 'udp',
    backendData: isPlainObject(data) ? data : {},
  };
  const problem = leaseProblem({ subnet: '', ...attrs });
  if (problem !== undefined) throw new Error(problem);
  return attrs;
}

/** JSON text with object keys sorted, so two spellings of one config compare equal. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isPlainObject(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** The key just past every key that starts with `prefix` (etcd's range_end for a prefix scan). */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]++;
      return end;
    }
  }
  return Buffer.from([0]); // all 0xff: to the end of the keyspace
}
