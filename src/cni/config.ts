// weft-cni's network configuration and the delegate configuration it builds from it, as flannel's
// CNI plugin does (flannel-io/cni-plugin flannel.go loadFlannelNetConf, flannel_linux.go doCmdAdd
// and getDelegateIPAM): the node's lease from subnet.env becomes a `bridge` + `host-local` config.
import { formatCidr, formatIpv4, maskOf, parseAddrPrefix } from '../route/address';
import type { SubnetEnv } from '../daemon/subnet-env';
import { CNI_ERRORS, CniError } from './errors';

/** Where flanneld writes the node's lease; weft daemon's --subnet-file default is the same. */
export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';
/** Saved delegate configs, one per attachment (flannel's plugin uses /var/lib/cni/flannel). */
export const DEFAULT_DATA_DIR = '/var/lib/cni/weft';

/** Every version libcni knows (flannel's plugin declares them all, cni.All); 1.1.0 brings STATUS and GC. */
export const SUPPORTED_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const LATEST_VERSION = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1];

type Json = Record<string, unknown>;

export interface WeftCniConf {
  cniVersion: string;
  name: string;
  subnetFile: string;
  dataDir: string;
  /** Fields merged over the defaults of the delegate config (flannel's `delegate`). */
  delegate: Json;
  /** The start of the delegate's `ipam` (flannel's top-level `ipam`); ranges come from subnet.env. */
  ipam: Json;
  runtimeConfig?: Json;
  prevResult?: unknown;
  /** The whole object as given, for keys only some commands read (GC's valid attachments). */
  raw: Json;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** -1, 0 or 1 as a < b, a = b, a > b for dotted versions ("0.4.0" < "1.0.0"). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/** The config's cniVersion when it is a string, for error results (which should carry it). */
export function peekVersion(text: string): string | undefined {
  try {
    const v = (JSON.parse(text) as Json | null)?.cniVersion;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

function invalid(msg: string): CniError {
  return new CniError(CNI_ERRORS.INVALID_CONFIG, msg);
}

function optionalObject(conf: Json, key: string): Json | undefined {
  const v = conf[key];
  if (v === undefined) return undefined;
  if (!isObject(v)) throw invalid(`"${key}" must be an object, got ${JSON.stringify(v)}`);
  return v;
}

function absolutePath(conf: Json, key: string, dflt: string): string {
  const v = conf[key];
  if (v === undefined) return dflt;
  // A relative path would depend on the runtime's working directory.
  if (typeof v !== 'string' || !v.startsWith('/')) throw invalid(`"${key}" must be an absolute path, got ${JSON.stringify(v)}`);
  return v;
}

export function parseConf(text: string): WeftCniConf {
  let conf: unknown;
  try {
    conf = JSON.parse(text);
  } catch (e) {
    throw new CniError(CNI_ERRORS.DECODE, 'failed to decode the network config on stdin', e instanceof Error ? e.message : String(e));
  }
  if (!isObject(conf)) throw new CniError(CNI_ERRORS.DECODE, 'the network config on stdin is not a JSON object');
  const version = conf.cniVersion;
  if (typeof version !== 'string') throw invalid(`"cniVersion" must be a string, got ${JSON.stringify(version)}`);
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(
      CNI_ERRORS.INCOMPATIBLE_VERSION,
      'incompatible CNI versions',
      `config is "${version}", weft-cni supports ${SUPPORTED_VERSIONS.map((v) => `"${v}"`).join(', ')}`,
    );
  }
  if (typeof conf.name !== 'string' || conf.name === '') throw invalid(`"name" must be a non-empty string, got ${JSON.stringify(conf.name)}`);
  const delegate = optionalObject(conf, 'delegate') ?? {};
  // flannel refuses these too: name and ipam are the plugin's to set.
  if (delegate.type !== undefined && typeof delegate.type !== 'string') throw invalid('"delegate.type", if present, must be a string');
  if ('name' in delegate) throw invalid('"delegate" must not have a "name": weft-cni sets it to the network\'s name');
  if ('ipam' in delegate) throw invalid('"delegate" must not have an "ipam": give it at the top level; weft-cni adds ranges and routes from subnet.env');
  const ipam = optionalObject(conf, 'ipam') ?? {};
  // flannel overwrites ranges silently; a range the user wrote and we dropped would be a lie.
  if ('ranges' in ipam || 'subnet' in ipam) {
    const key = 'ranges' in ipam ? 'ranges' : 'subnet';
    throw new CniError(
      CNI_ERRORS.UNSUPPORTED_FIELD,
      `unsupported field "ipam.${key}": ${JSON.stringify(ipam[key])}`,
      "the pod range is the node's lease, read from subnet.env",
    );
  }
  if (ipam.routes !== undefined && !Array.isArray(ipam.routes)) throw invalid(`"ipam.routes" must be an array, got ${JSON.stringify(ipam.routes)}`);
  return {
    cniVersion: version,
    name: conf.name,
    subnetFile: absolutePath(conf, 'subnetFile', DEFAULT_SUBNET_FILE),
    dataDir: absolutePath(conf, 'dataDir', DEFAULT_DATA_DIR),
    delegate,
    ipam,
    runtimeConfig: optionalObject(conf, 'runtimeConfig'),
    prevResult: conf.prevResult,
    raw: conf,
  };
}

/** "10.244.7.1/24" (subnet.env's FLANNEL_SUBNET, the gateway's address) → "10.244.7.0/24". */
function networkOf(cidr: string): string {
  const c = parseAddrPrefix(cidr);
  return formatCidr({ addr: (c.addr & maskOf(c.len)) >>> 0, len: c.len });
}

/** The pod range host-local allocates from: the node's lease. */
export function podRange(env: SubnetEnv): string {
  return networkOf(env.subnet);
}

/**
 * The config handed to the delegate, as flannel's doCmdAdd builds it: the user's `delegate`
 * fields win; otherwise type `bridge`, `ipMasq` = !FLANNEL_IPMASQ (the bridge masquerades only
 * when flanneld does not), `mtu` = FLANNEL_MTU, `isGateway` for bridge; `ipam` is the user's
 * top-level ipam with type host-local by default, the range set to the node's lease and a route
 * to each cluster network (via the range's gateway) appended to the user's routes.
 */
export function buildDelegate(conf: WeftCniConf, env: SubnetEnv): Json {
  const d: Json = { cniVersion: conf.cniVersion, name: conf.name, ...conf.delegate };
  d.name = conf.name;
  d.cniVersion = conf.cniVersion;
  if (d.type === undefined) d.type = 'bridge';
  if (d.ipMasq === undefined) d.ipMasq = !env.ipmasq;
  if (d.mtu === undefined) d.mtu = env.mtu;
  if (d.type === 'bridge' && d.isGateway === undefined) d.isGateway = true;
  // FLANNEL_NETWORK may list several networks, comma-separated (flannel's loadFlannelSubnetEnv).
  const networks = [...new Set(env.network.split(',').map((n) => networkOf(n.trim())))];
  const range = podRange(env);
  // The gateway written out, where flannel leaves it unset: the route is the same either way
  // (host-local's gateway is the range's first address, and the bridge installs a gateway-less
  // route via it), but the reference bridge's CHECK (plugins 1.1.1) looks the route up with the
  // result's gateway as given, so a gateway-less route is never "found" and CHECK always fails.
  const gw = formatIpv4(parseAddrPrefix(range).addr + 1);
  d.ipam = {
    type: 'host-local',
    ...conf.ipam,
    ranges: [[{ subnet: range }]],
    routes: [...((conf.ipam.routes as unknown[] | undefined) ?? []), ...networks.map((dst) => ({ dst, gw }))],
  };
  if (conf.runtimeConfig) d.runtimeConfig = conf.runtimeConfig;
  return d;
}
