// Lab naming, on-disk layout and the persisted state (state.json) that lets `status`, `exec` and
// `down` run from a different process than the `up` that formed the lab.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { BackendType } from '../datapath/backends';
import { quote } from '../util/quote';

/** tmpfs: the lab is gone after a reboot, and so is its record. */
export const LAB_ROOT = '/run/weft-lab';
export const DEFAULT_PREFIX = 'weft-';
export const DEFAULT_UNDERLAY = '192.168.77.0/24';
/** Routed topology: the second underlay subnet, behind the router (subnet "B"). */
export const DEFAULT_UNDERLAY_B = '192.168.78.0/24';
export const DEFAULT_NETWORK = '10.244.0.0/16';
export const CONTROL_PORT = 7000;
/** `--registry etcd`: the lab's one etcd member, where weft control would be (client and peer ports as etcd's defaults). */
export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;
/**
 * `--etcd-members`: 1, or 3 so that the cluster keeps quorum (2 of 3) with one member killed. An
 * even count adds a member without adding tolerance (2 members need both), so it is refused.
 */
export const ETCD_MEMBER_COUNTS = [1, 3] as const;
/**
 * Client and peer ports of the members of a 3-member lab. All three run in the switch namespace
 * on control's one address, so only their ports tell them apart: the first keeps etcd's defaults
 * (the address a one-member lab has, and the one the docs' etcdctl lines use), the other two take
 * the ports etcd's own Procfile gives its local 3-member cluster (22379/22380, 32379/32380).
 * Giving each member an address of its own would move the nodes' and the router's addresses, and a
 * process killed or restarted is all a member loss needs.
 */
export const ETCD_MEMBER_PORTS: readonly { client: number; peer: number }[] = [
  { client: ETCD_CLIENT_PORT, peer: ETCD_PEER_PORT },
  { client: 22379, peer: 22380 },
  { client: 32379, peer: 32380 },
];
/** Where the lab's daemons keep their leases: `weft control` (embedded) or etcd directly. */
export const REGISTRIES = ['embedded', 'etcd'] as const;
export type RegistryKind = (typeof REGISTRIES)[number];
export const HEALTHZ_PORT = 9090;
/** `--prometheus`: where weft control serves /metrics, on control's address in the switch namespace. */
export const CONTROL_METRICS_PORT = 7001;
/** `--prometheus`: Prometheus's own port, on control's address in the switch namespace (its default). */
export const PROMETHEUS_PORT = 9090;
/** `--prometheus`: the port on the host's 127.0.0.1 that reaches it (--prometheus-port; 0 picks a free one). */
export const DEFAULT_PROMETHEUS_HOST_PORT = 9090;
/** `--prometheus`: how often it scrapes every target. Short, so a test or a person sees traffic within seconds. */
export const PROMETHEUS_SCRAPE_INTERVAL_S = 1;
export const INSPECT_PORT = 9229;
/** The underlay switch: a Linux bridge inside the switch namespace. */
export const UNDERLAY_BRIDGE = 'br0';
/** Routed topology: subnet B's switch, a second bridge in the same switch namespace. */
export const UNDERLAY_BRIDGE_B = 'br1';
export const NODE_IFACE = 'eth0';
export const POD_IFACE = 'eth0';
/** The reference CNI plugins (Debian's containernetworking-plugins): bridge, host-local, ... */
export const CNI_BIN_DIR = '/usr/lib/cni';
/** The plugin type pods are attached with: weft's own, which delegates to bridge + host-local. */
export const CNI_PLUGIN = 'weft-cni';

/**
 * The lab's own CNI bin dir (like a node's /opt/cni/bin), where weft-cni is installed; searched
 * before the reference plugins. The lab does not write into /usr/lib/cni, which is Debian's.
 */
export function labCniBinDir(dir: string): string {
  return join(dir, 'cni-bin');
}

/** CNI_PATH for the lab's plugin calls: its own bin dir, then the reference plugins. */
export function labCniPath(dir: string): string[] {
  return [labCniBinDir(dir), CNI_BIN_DIR];
}
/**
 * flat: every node on one underlay bridge (one L2 segment). routed: two underlay subnets, each
 * its own bridge, joined only by a router namespace, so nodes on different subnets are not L2
 * neighbours (what host-gw cannot cross and DirectRouting decides per peer).
 */
export const TOPOLOGIES = ['flat', 'routed'] as const;
export type Topology = (typeof TOPOLOGIES)[number];

export interface LabControl {
  /** What runs at `address`: weft control (absent in older records) or an etcd member. */
  kind?: RegistryKind;
  ns: string;
  ip: string;
  port: number;
  /** "ip:port": `weft daemon --control ADDR`, or `--etcd-endpoints http://ADDR` for etcd (the first member's with `members`). */
  address: string;
  /** With `members`, 0: each member is its own process. */
  pid: number;
  /** With `members`, empty. */
  argv: string[];
  /** With `members`, the directory holding their data dirs. */
  stateDir: string;
  netConfPath: string;
  logFile: string;
  /** `--etcd-members 3`: the cluster's members (absent for weft control, a one-member etcd and older records). */
  members?: LabEtcdMember[];
  /** `--prometheus` with weft control: "ip:port" of its /metrics (etcd serves its own on the client address). */
  metricsAddress?: string;
}

/**
 * `--prometheus`: a Prometheus in the switch namespace scraping every daemon and control, and a
 * forwarder (socat) on the host's loopback that enters the switch namespace per connection, so a
 * browser or curl in the root namespace reaches it while the lab keeps no link to the root namespace.
 */
export interface LabPrometheus {
  ns: string;
  /** "ip:port" Prometheus listens on inside `ns` (control's address). */
  address: string;
  /** The host's 127.0.0.1 port the forwarder listens on. */
  hostPort: number;
  /** http://127.0.0.1:hostPort: where to reach it from the root namespace. */
  url: string;
  pid: number;
  argv: string[];
  forwarderPid: number;
  forwarderArgv: string[];
  configFile: string;
  /** Its TSDB, under the lab dir (gone with the lab). */
  dataDir: string;
  logFile: string;
  forwarderLogFile: string;
}

/** One member of a multi-member etcd lab; all run in the switch namespace on control's address. */
export interface LabEtcdMember {
  /** "etcd1" … (etcd's --name). */
  name: string;
  /** 1-based, as in the name. */
  index: number;
  /** "ip:clientPort"; its client URL is http://ADDRESS. */
  address: string;
  clientPort: number;
  peerPort: number;
  peerUrl: string;
  pid: number;
  argv: string[];
  /** Under the lab dir, kept across a kill, so a restarted member comes back with its data and raft log. */
  dataDir: string;
  logFile: string;
}

export interface LabNode {
  /** "n1" … */
  name: string;
  index: number;
  ns: string;
  publicIp: string;
  iface: string;
  pid: number;
  argv: string[];
  dir: string;
  subnetFile: string;
  healthzPort: number;
  logFile: string;
  cniDataDir: string;
  /** Set when the daemon runs under `node --inspect`: the address it listens on inside `ns`. */
  inspect?: string;
  /**
   * The daemon's --monitor-socket, under the node's dir (several daemons share this host's file
   * system, so not the default /run/weft/monitor.sock); absent in records from before it.
   */
  monitorSocket?: string;
  /** The underlay subnet eth0 sits on ("192.168.77.0/24"); absent in records from before topologies. */
  underlay?: string;
  /** Routed topology: the router's address on this node's subnet, next hop to the other subnet. */
  underlayGateway?: string;
}

/** Routed topology: the namespace joining the two underlay subnets. */
export interface LabRouter {
  ns: string;
  /** One leg per underlay subnet: its interface in the router namespace, address, subnet and bridge. */
  legs: { iface: string; ip: string; underlay: string; bridge: string }[];
}

export interface LabPod {
  /** "n1/p1" … */
  name: string;
  node: string;
  ns: string;
  ifname: string;
  /** Pod address without prefix length, as the CNI result gave it. */
  ip: string;
  /** With prefix length ("10.244.7.2/24"). */
  cidr: string;
  gateway?: string;
  containerId: string;
  /** The network configuration given to the CNI plugin on ADD (kept for DEL): weft-cni's, or bridge's in records from before it. */
  cniConfig: Record<string, unknown>;
}

export interface LabOptions {
  nodes: number;
  pods: number;
  backend: BackendType;
  underlay: string;
  network: string;
  inspect?: string;
  leaseTtl?: number;
  /** Absent in records from before etcd: embedded. */
  registry?: RegistryKind;
  /** etcd registry: how many members (absent: 1). */
  etcdMembers?: number;
  daemonArgs: string[];
  controlArgs: string[];
  /** Absent in records from before topologies: flat. */
  topology?: Topology;
  /** Routed topology: subnet B. */
  underlayB?: string;
  /** Fields merged into net-conf.json's Backend object (e.g. { DirectRouting: true }). */
  backendConfig?: Record<string, unknown>;
  /**
   * `--prometheus`: control serves /metrics (--metrics-listen) and daemons serve their health
   * server on every address (--healthz-ip 0.0.0.0), so the switch namespace can scrape them.
   */
  prometheus?: boolean;
}

export interface LabState {
  version: 1;
  prefix: string;
  dir: string;
  createdAt: string;
  /** Absolute path of the weft.js that the lab runs, and the node binary running it. */
  weftJs: string;
  nodeBin: string;
  options: LabOptions;
  switchNs: string;
  /** Subnet A's bridge (the only one in a flat lab). */
  bridge: string;
  /** Routed topology: the router namespace (absent in a flat lab). */
  router?: LabRouter;
  control: LabControl;
  /** `--prometheus` only. */
  prometheus?: LabPrometheus;
  nodes: LabNode[];
  pods: LabPod[];
}

const PREFIX_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$/;

export function checkPrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix)) {
    throw new Error(`bad lab prefix "${prefix}": letters, digits, '_', '.', '-' (at most 40), starting with a letter or digit`);
  }
  return prefix;
}

export const labDir = (prefix: string): string => join(LAB_ROOT, checkPrefix(prefix));
export const statePath = (prefix: string): string => join(labDir(prefix), 'state.json');
export const switchNsName = (prefix: string): string => `${prefix}ul`;
export const routerNsName = (prefix: string): string => `${prefix}rt`;
export const nodeName = (i: number): string => `n${i}`;
export const podName = (node: number, pod: number): string => `n${node}/p${pod}`;
export const nodeNsName = (prefix: string, i: number): string => `${prefix}n${i}`;
export const podNsName = (prefix: string, node: number, pod: number): string => `${prefix}n${node}p${pod}`;

/**
 * Matches exactly the namespaces a lab with this prefix makes, so `down` of the default lab
 * ("weft-") never touches a test lab ("weft-t-lab-x1-") whose names merely start the same way.
 */
export function labNsPattern(prefix: string): RegExp {
  const esc = checkPrefix(prefix).replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
  return new RegExp(`^${esc}(ul|rt|n\\d+(p\\d+)?)$`);
}

/**
 * Resolves a lab target to its namespace: "n1" (node), "n1/p1" (pod), "ul" (the underlay
 * switch, where control runs), "rt" (the router of a routed lab). Names map directly to
 * namespaces, so no state is needed.
 */
export function targetNs(prefix: string, target: string): string {
  checkPrefix(prefix);
  if (target === 'ul' || target === 'control') return switchNsName(prefix);
  if (target === 'rt' || target === 'router') return routerNsName(prefix);
  const m = /^n(\d+)(?:\/p(\d+))?$/.exec(target);
  if (!m) throw new Error(`bad lab target "${target}": use nN (node), nN/pM (pod), ul (underlay switch) or rt (router, routed topology)`);
  return m[2] === undefined ? nodeNsName(prefix, Number(m[1])) : podNsName(prefix, Number(m[1]), Number(m[2]));
}

/** API functions take a lab by prefix or by its state (which carries the prefix). */
export type LabRef = string | Pick<LabState, 'prefix'>;
export const prefixOf = (lab: LabRef): string => (typeof lab === 'string' ? lab : lab.prefix);

export function readState(prefix: string): LabState | null {
  const p = statePath(prefix);
  if (!existsSync(p)) return null;
  const s = JSON.parse(readFileSync(p, 'utf8')) as LabState;
  if (s.version !== 1) throw new Error(`${p}: unknown state version ${String(s.version)}`);
  return s;
}

export function mustReadState(prefix: string): LabState {
  const s = readState(prefix);
  if (!s) throw new Error(`no lab with prefix "${prefix}" (${statePath(prefix)} missing); run \`weft lab up\``);
  return s;
}

/** Write-then-rename, so a reader never sees half a file. */
export function writeState(state: LabState): void {
  const p = join(state.dir, 'state.json');
  mkdirSync(dirname(p), { recursive: true });
  const tmp = `${p}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  renameSync(tmp, p);
}

export function findNode(state: LabState, name: string): LabNode {
  const n = state.nodes.find((x) => x.name === name);
  if (!n) throw new Error(`no node "${name}" in lab "${state.prefix}" (nodes: ${state.nodes.map((x) => x.name).join(', ')})`);
  return n;
}

/**
 * The client URLs of the lab's etcd members, in member order: what daemons get as
 * `--etcd-endpoints` and what etcdctl is pointed at. A one-member lab has just control's.
 */
export function etcdEndpoints(control: Pick<LabControl, 'address' | 'members'>): string[] {
  return (control.members ?? [control]).map((m) => `http://${m.address}`);
}

/** A member of a multi-member etcd lab by index (1-based, as in its name) or name ("etcd2"). */
export function findEtcdMember(state: LabState, member: number | string): LabEtcdMember {
  const ms = state.control.members;
  if (!ms) {
    const what = state.control.kind === 'etcd' ? 'one etcd member (use killControl/startControl)' : 'weft control, not etcd';
    throw new Error(`lab "${state.prefix}" runs ${what}; etcd members exist with --registry etcd --etcd-members 3`);
  }
  const m = ms.find((x) => (typeof member === 'number' ? x.index === member : x.name === member));
  if (!m) {
    const asked = typeof member === 'number' ? String(member) : quote(member);
    throw new Error(`no etcd member ${asked} in lab "${state.prefix}" (members: ${ms.map((x) => `${x.index} ${x.name}`).join(', ')})`);
  }
  return m;
}

export function findPod(state: LabState, name: string): LabPod {
  const p = state.pods.find((x) => x.name === name);
  if (!p) throw new Error(`no pod "${name}" in lab "${state.prefix}" (pods: ${state.pods.map((x) => x.name).join(', ')})`);
  return p;
}

/** Address of a node (its underlay/public IP) or a pod (its overlay IP). */
export function addressOf(state: LabState, target: string): string {
  return target.includes('/') ? findPod(state, target).ip : findNode(state, target).publicIp;
}

/** Pods on nodes other than `node`. */
export function podsNotOn(state: LabState, node: string): LabPod[] {
  return state.pods.filter((p) => p.node !== node);
}

/**
 * The weft.js that the lab runs: bin/weft.js of the package this module belongs to. Found by
 * walking up, because this file runs both from src/lab (vitest) and from dist/src/lab (CLI).
 */
/** bin/weft-cni beside the default bin/weft.js: the CNI plugin the lab installs. */
export function defaultWeftCni(): string {
  return join(dirname(defaultWeftJs()), 'weft-cni');
}

export function defaultWeftJs(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    const cand = join(dir, 'bin', 'weft.js');
    if (existsSync(cand) && existsSync(join(dir, 'package.json'))) return resolve(cand);
    dir = dirname(dir);
  }
  throw new Error(`bin/weft.js not found above ${__dirname}`);
}
