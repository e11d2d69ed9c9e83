// `weft lab up`: underlay switch + node namespaces + pod namespaces, control and daemons, pods
// attached through weft-cni (delegating to the CNI bridge plugin). Any failure tears down what was made.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BACKEND_TYPES, BACKENDS, DEFAULT_VNI, isBackendType, type BackendType } from '../datapath/backends';
import { formatMac } from '../packet/ethernet';
import { cidrLast, formatIpv4, parseAddrPrefix } from '../route/address';
import { hostAt, networkOf, within } from './addr';
import { cniAdd, installWeftCni, pluginConfig, readSubnetEnv, weftConflist } from './cni';
import { labDown } from './down';
import { ETCD_BIN } from './etcd';
import { DEFAULT_ETCD_PREFIX } from '../control/etcd/codec';

const ETCD_CONFIG_KEY = `${DEFAULT_ETCD_PREFIX}/config`;
import { nsRun, sleep } from './process';
import { addNs, ipBatch, listNs, nodeSysctls, POD_SYSCTLS, setSysctls } from './netns';
import {
  controlArgv,
  daemonArgv,
  etcdMembersFor,
  spawnControl,
  spawnDaemon,
  spawnEtcdMember,
  waitDaemonPeers,
  waitDaemonReady,
  waitEtcdMemberHealthy,
} from './lifecycle';
import { prometheusFor, prometheusHostPort, prometheusPreflight, startPrometheus } from './prometheus';
import {
  CNI_BIN_DIR,
  CONTROL_METRICS_PORT,
  CONTROL_PORT,
  DEFAULT_PROMETHEUS_HOST_PORT,
  defaultWeftCni,
  labCniPath,
  ETCD_CLIENT_PORT,
  ETCD_MEMBER_COUNTS,
  REGISTRIES,
  type RegistryKind,
  DEFAULT_NETWORK,
  DEFAULT_PREFIX,
  DEFAULT_UNDERLAY,
  DEFAULT_UNDERLAY_B,
  HEALTHZ_PORT,
  INSPECT_PORT,
  NODE_IFACE,
  POD_IFACE,
  TOPOLOGIES,
  UNDERLAY_BRIDGE,
  UNDERLAY_BRIDGE_B,
  checkPrefix,
  defaultWeftJs,
  etcdEndpoints,
  labDir,
  labNsPattern,
  nodeName,
  nodeNsName,
  podName,
  podNsName,
  readState,
  routerNsName,
  switchNsName,
  writeState,
  type LabNode,
  type LabRouter,
  type LabState,
  type Topology,
} from './state';
import { quote } from '../util/quote';

export interface LabUpOptions {
  prefix?: string;
  nodes?: number;
  pods?: number;
  backend?: BackendType;
  underlay?: string;
  network?: string;
  /**
   * flat (default): one underlay bridge. routed: subnet A (`underlay`) and subnet B
   * (`underlayB`) on two bridges joined by a router namespace; the first ceil(N/2) nodes sit on
   * A, the rest on B.
   */
  topology?: Topology;
  /** Routed topology: subnet B (default 192.168.78.0/24). */
  underlayB?: string;
  /** net-conf.json Backend.DirectRouting (vxlan, ipip): host routes to peers on the same underlay subnet. */
  directRouting?: boolean;
  /** Further fields merged into net-conf.json's Backend object as given (e.g. { VNI: 2 }). */
  backendConfig?: Record<string, unknown>;
  /** Node name ("n1") whose daemon runs under `node --inspect=0.0.0.0:9229`. */
  inspect?: string;
  leaseTtl?: number;
  /**
   * embedded (default): `weft control` in the switch namespace. etcd: a one-member etcd there
   * instead, the net-conf written to /coreos.com/network/config, and daemons on `--etcd-endpoints`.
   */
  registry?: RegistryKind;
  /**
   * etcd registry: 1 (default) or 3 members, all in the switch namespace on control's address
   * (ETCD_MEMBER_PORTS), so that one can be killed (killEtcdMember) while the other two keep quorum.
   */
  etcdMembers?: number;
  /**
   * Start Prometheus in the switch namespace, scraping every daemon and control every second
   * (prometheus.ts), reachable from the host at http://127.0.0.1:`prometheusPort`. Daemons then
   * serve their health server on every address (--healthz-ip 0.0.0.0), control its /metrics.
   */
  prometheus?: boolean;
  /** With `prometheus`: the host's 127.0.0.1 port for it (default 9090; 0 picks a free one). */
  prometheusPort?: number;
  /** Extra flags appended to every `weft daemon` / `weft control` command line. */
  daemonArgs?: string[];
  controlArgs?: string[];
  /** Recreate when a lab with this prefix already exists. */
  force?: boolean;
  /** Leave a half-made lab in place when up fails (for debugging); default tears it down. */
  keepOnFailure?: boolean;
  /** The weft.js to run (default: this package's bin/weft.js). */
  weftJs?: string;
  readyTimeoutMs?: number;
  /** Aborting (e.g. on Ctrl-C) stops at the next step and tears down what was made. */
  signal?: AbortSignal;
  /** Progress lines ("creating namespaces ..."). */
  log?: (msg: string) => void;
}

// Node i sits at .10+i of its underlay subnet (in a routed lab too, so a node's last octet names
// it on either side); control listens on .1 of subnet A, the bridge's own address; the router
// takes the last usable address of each subnet (.254 of a /24), as a gateway conventionally does.
const NODE_HOST_OFFSET = 10;
const CONTROL_HOST_OFFSET = 1;
const ROUTER_IFACES = ['eth0', 'eth1'] as const;

/** Routed topology: which underlay subnet node i (1-based) of n sits on: 0 = A, 1 = B. */
export function underlaySide(topology: Topology, i: number, n: number): 0 | 1 {
  return topology === 'routed' && i > Math.ceil(n / 2) ? 1 : 0;
}

/** A random unicast MAC with the locally-administered bit set (IEEE 802), as `ip link` would pick. */
function randomLocalMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return formatMac(b);
}

/** The router's address on `cidr`: its last usable host. */
function routerIp(cidr: string): string {
  return formatIpv4(cidrLast(parseAddrPrefix(networkOf(cidr))) - 1);
}

/**
 * flannel's way of configuring a network on etcd: net-conf.json put at PREFIX/config. Retried
 * because a fresh member listens before it has elected itself leader, and writes wait for that.
 */
async function putEtcdNetConf(state: LabState, json: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const endpoints = etcdEndpoints(state.control).join(',');
  const argv = ['etcdctl', '--endpoints', endpoints, '--command-timeout=2s', 'put', ETCD_CONFIG_KEY, json];
  for (;;) {
    const r = await nsRun(state.control.ns, argv, { timeoutMs: 5000, env: { ...process.env, ETCDCTL_API: '3' } });
    if (r.code === 0) return;
    if (Date.now() > deadline) throw new Error(`cannot write ${ETCD_CONFIG_KEY} to etcd at ${endpoints}: ${(r.stderr || r.stdout).trim()}`);
    await sleep(200);
  }
}

function netConf(network: string, backend: BackendType, extra: Record<string, unknown>): Record<string, unknown> {
  // Ports (and vxlan's VNI) are flannel's defaults, from the backend table, written out so the
  // file reads like the seeds'.
  const b: Record<string, unknown> = { Type: backend };
  if (backend === 'vxlan') b.VNI = DEFAULT_VNI;
  if (BACKENDS[backend].defaultPort) b.Port = BACKENDS[backend].defaultPort;
  return { Network: network, SubnetLen: 24, Backend: { ...b, ...extra } };
}

/**
 * `--etcd-members`: 1 or 3, and only with the etcd registry (weft control is one process with its
 * state on disk; it has no members to count). Returns the count, 1 when not given.
 */
export function checkEtcdMembers(registry: string, members: number | undefined): number {
  if (members === undefined) return 1;
  if (registry !== 'etcd') throw new Error(`--etcd-members needs --registry etcd (the ${quote(registry)} registry has no etcd members)`);
  if (!(ETCD_MEMBER_COUNTS as readonly number[]).includes(members)) {
    throw new Error(`--etcd-members must be ${ETCD_MEMBER_COUNTS.join(' or ')}, got ${String(members)}`);
  }
  return members;
}

type Validated = Required<Pick<LabUpOptions, 'prefix' | 'nodes' | 'pods' | 'backend' | 'underlay' | 'network' | 'topology' | 'underlayB'>>;

function validate(o: Validated, inspect?: string): void {
  checkPrefix(o.prefix);
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 200) throw new Error(`--nodes must be 1..200, got ${o.nodes}`);
  if (!Number.isInteger(o.pods) || o.pods < 0 || o.pods > 32) throw new Error(`--pods must be 0..32, got ${o.pods}`);
  if (!isBackendType(o.backend)) throw new Error(`--backend must be one of ${BACKEND_TYPES.join('|')}, got ${o.backend}`);
  if (!(TOPOLOGIES as readonly string[]).includes(o.topology)) throw new Error(`--topology must be one of ${TOPOLOGIES.join('|')}, got ${o.topology}`);
  const net = parseAddrPrefix(o.network);
  if (net.len > 24) throw new Error(`--network ${o.network} must be /24 or larger (SubnetLen is 24)`);
  const overlap = (a: string, b: string): boolean => within(a, b) || within(b, a);
  if (overlap(o.network, o.underlay)) throw new Error(`--network ${o.network} overlaps --underlay ${o.underlay}`);
  if (o.topology === 'flat') {
    hostAt(o.underlay, NODE_HOST_OFFSET + o.nodes); // throws when the nodes do not fit
  } else {
    if (overlap(o.network, o.underlayB)) throw new Error(`--network ${o.network} overlaps --underlay-b ${o.underlayB}`);
    if (overlap(o.underlay, o.underlayB))
      throw new Error(`--underlay ${o.underlay} and --underlay-b ${o.underlayB} overlap; a routed lab needs two separate subnets`);
    for (const [flag, cidr] of [
      ['--underlay', o.underlay],
      ['--underlay-b', o.underlayB],
    ] as const) {
      // The highest node offset on either side must stay below the router's address.
      const net = parseAddrPrefix(networkOf(cidr));
      if (net.addr + NODE_HOST_OFFSET + o.nodes >= cidrLast(net) - 1) {
        throw new Error(`${flag} ${cidr} is too small for ${o.nodes} nodes (at .${NODE_HOST_OFFSET + 1} up) and the router (its last address)`);
      }
    }
  }
  if (inspect !== undefined) {
    const m = /^n(\d+)$/.exec(inspect);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > o.nodes) throw new Error(`--inspect must name a node n1..n${o.nodes}, got ${inspect}`);
  }
}

function preflight(weftJs: string, isDefault: boolean): void {
  if (process.getuid?.() !== 0) throw new Error('the lab needs root (it creates network namespaces)');
  for (const p of ['bridge', 'host-local']) {
    if (!existsSync(join(CNI_BIN_DIR, p))) throw new Error(`CNI plugin ${join(CNI_BIN_DIR, p)} missing: run scripts/setup.sh (containernetworking-plugins)`);
  }
  if (!existsSync(weftJs)) throw new Error(`${weftJs} missing`);
  // Pods attach through weft-cni, which runs the compiled plugin (whatever weft.js the lab runs).
  const cni = join(defaultWeftCni(), '..', '..', 'dist', 'src', 'cni', 'main.js');
  if (!existsSync(cni)) throw new Error(`${cni} missing: build first (npx tsc -p tsconfig.build.json)`);
  // bin/weft.js only loads the compiled CLI; without dist/ every daemon would die at start.
  const built = join(weftJs, '..', '..', 'dist', 'src', 'cli', 'main.js');
  if (isDefault && !existsSync(built)) {
    throw new Error(`${built} missing: build first (npx tsc -p tsconfig.build.json)`);
  }
}

/**
 * Runs `wait` for every item at once: the first failure aborts the others' waits instead of
 * serialising their timeouts, and aborting `outer` (Ctrl-C) aborts them all.
 */
async function waitAll<T>(items: readonly T[], wait: (item: T, signal: AbortSignal) => Promise<void>, outer?: AbortSignal): Promise<void> {
  const ac = new AbortController();
  const onAbort = (): void => ac.abort();
  outer?.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.all(
      items.map((item) =>
        wait(item, ac.signal).catch((err: unknown) => {
          ac.abort();
          throw err;
        }),
      ),
    );
  } finally {
    outer?.removeEventListener('abort', onAbort);
  }
  if (outer?.aborted) throw new Error('interrupted');
}

export async function labUp(opts: LabUpOptions = {}): Promise<LabState> {
  const o = {
    prefix: opts.prefix ?? DEFAULT_PREFIX,
    nodes: opts.nodes ?? 3,
    pods: opts.pods ?? 1,
    backend: opts.backend ?? 'udp',
    underlay: opts.underlay ?? DEFAULT_UNDERLAY,
    network: opts.network ?? DEFAULT_NETWORK,
    topology: opts.topology ?? 'flat',
    underlayB: opts.underlayB ?? DEFAULT_UNDERLAY_B,
  };
  validate(o, opts.inspect);
  const registry = opts.registry ?? 'embedded';
  if (!(REGISTRIES as readonly string[]).includes(registry)) throw new Error(`--registry must be one of ${REGISTRIES.join('|')}, got ${registry}`);
  const etcdMembers = checkEtcdMembers(registry, opts.etcdMembers);
  if (registry === 'etcd' && !existsSync(ETCD_BIN)) throw new Error(`${ETCD_BIN} missing: run scripts/setup.sh (etcd-server)`);
  const backendConfig: Record<string, unknown> = {
    ...(opts.directRouting !== undefined ? { DirectRouting: opts.directRouting } : {}),
    ...(opts.backendConfig ?? {}),
  };
  const routed = o.topology === 'routed';
  const log = opts.log ?? (() => undefined);
  const weftJs = opts.weftJs ?? defaultWeftJs();
  preflight(weftJs, opts.weftJs === undefined);
  if (opts.prometheusPort !== undefined && !opts.prometheus) throw new Error('--prometheus-port needs --prometheus');
  if (opts.prometheus) prometheusPreflight();

  const pattern = labNsPattern(o.prefix);
  const existing = (await listNs()).filter((n) => pattern.test(n));
  if (readState(o.prefix) || existing.length > 0) {
    if (!opts.force) {
      throw new Error(
        `a lab with prefix "${o.prefix}" already exists (${existing.length} namespaces${readState(o.prefix) ? `, ${labDir(o.prefix)}` : ''}); ` +
          '`weft lab down` first, or pass --force to recreate it',
      );
    }
    log(`removing the existing lab "${o.prefix}"`);
    await labDown(o.prefix);
  }
  // After the old lab is down: its Prometheus may have held this port.
  const prometheusPort = opts.prometheus ? await prometheusHostPort(opts.prometheusPort ?? DEFAULT_PROMETHEUS_HOST_PORT) : undefined;

  const dir = labDir(o.prefix);
  const ulLen = parseAddrPrefix(o.underlay).len;
  const controlIp = hostAt(o.underlay, CONTROL_HOST_OFFSET);
  const switchNs = switchNsName(o.prefix);
  // Subnet A, then (routed) subnet B: each one bridge in the switch namespace and one router leg.
  const sides = [
    { underlay: networkOf(o.underlay), len: ulLen, bridge: UNDERLAY_BRIDGE },
    ...(routed ? [{ underlay: networkOf(o.underlayB), len: parseAddrPrefix(o.underlayB).len, bridge: UNDERLAY_BRIDGE_B }] : []),
  ];
  const router: LabRouter | undefined = routed
    ? {
        ns: routerNsName(o.prefix),
        legs: sides.map((sd, k) => ({ iface: ROUTER_IFACES[k], ip: routerIp(sd.underlay), underlay: sd.underlay, bridge: sd.bridge })),
      }
    : undefined;
  const controlPort = registry === 'etcd' ? ETCD_CLIENT_PORT : CONTROL_PORT;
  const controlPart = {
    kind: registry,
    ns: switchNs,
    ip: controlIp,
    port: controlPort,
    address: `${controlIp}:${controlPort}`,
    stateDir: join(dir, registry === 'etcd' ? 'etcd' : 'control'),
    netConfPath: join(dir, 'net-conf.json'),
    logFile: join(dir, 'logs', 'control.log'),
    ...(opts.prometheus && registry !== 'etcd' ? { metricsAddress: `${controlIp}:${CONTROL_METRICS_PORT}` } : {}),
  };
  const base = {
    prefix: o.prefix,
    nodeBin: process.execPath,
    weftJs,
    options: {
      nodes: o.nodes,
      pods: o.pods,
      backend: o.backend,
      underlay: o.underlay,
      network: o.network,
      topology: o.topology,
      ...(routed ? { underlayB: o.underlayB } : {}),
      ...(Object.keys(backendConfig).length ? { backendConfig } : {}),
      inspect: opts.inspect,
      leaseTtl: opts.leaseTtl,
      registry,
      ...(etcdMembers > 1 ? { etcdMembers } : {}),
      daemonArgs: opts.daemonArgs ?? [],
      controlArgs: opts.controlArgs ?? [],
      ...(opts.prometheus ? { prometheus: true } : {}),
    },
  };
  const state: LabState = {
    version: 1,
    dir,
    createdAt: new Date().toISOString(),
    ...base,
    switchNs,
    bridge: UNDERLAY_BRIDGE,
    ...(router ? { router } : {}),
    // Three etcd members are three processes, each with its own record; control then only says
    // where the cluster is (see LabControl.members).
    control:
      etcdMembers > 1
        ? { ...controlPart, pid: 0, argv: [], members: etcdMembersFor({ ...base, dir }, controlPart, etcdMembers) }
        : { ...controlPart, pid: 0, argv: controlArgv(base, controlPart) },
    ...(prometheusPort !== undefined ? { prometheus: prometheusFor({ dir, switchNs, control: controlPart }, prometheusPort) } : {}),
    nodes: [],
    pods: [],
  };
  for (let i = 1; i <= o.nodes; i++) {
    const name = nodeName(i);
    const ndir = join(dir, name);
    const side = underlaySide(o.topology, i, o.nodes);
    const part: Omit<LabNode, 'argv' | 'pid'> = {
      name,
      index: i,
      ns: nodeNsName(o.prefix, i),
      publicIp: hostAt(sides[side].underlay, NODE_HOST_OFFSET + i),
      iface: NODE_IFACE,
      dir: ndir,
      subnetFile: join(ndir, 'subnet.env'),
      monitorSocket: join(ndir, 'monitor.sock'),
      healthzPort: HEALTHZ_PORT,
      logFile: join(dir, 'logs', `${name}.log`),
      cniDataDir: join(ndir, 'cni'),
      inspect: opts.inspect === name ? `0.0.0.0:${INSPECT_PORT}` : undefined,
      underlay: sides[side].underlay,
      ...(router ? { underlayGateway: router.legs[side].ip } : {}),
    };
    state.nodes.push({ ...part, pid: 0, argv: daemonArgv(state, part) });
  }

  let step = 'prepare the lab directory';
  const at = (name: string): void => {
    step = name;
    if (opts.signal?.aborted) throw new Error('interrupted');
  };
  try {
    for (const d of [dir, join(dir, 'logs'), state.control.stateDir, ...state.nodes.flatMap((n) => [n.dir, n.cniDataDir])]) {
      mkdirSync(d, { recursive: true });
    }
    // Recorded before anything exists, so a failed or interrupted up can always be taken down.
    writeState(state);
    writeFileSync(state.control.netConfPath, JSON.stringify(netConf(o.network, o.backend, backendConfig), null, 2) + '\n');
    installWeftCni(dir, state.nodeBin, defaultWeftCni());

    at(`create the underlay switch namespace ${switchNs}`);
    log(`creating underlay switch ${switchNs} (${sides.map((sd) => `${sd.bridge} ${sd.underlay}`).join(', ')}; control at ${controlIp})`);
    await addNs(switchNs);
    // ip_forward stays 0 here: in a routed lab the switch namespace holds both bridges but must
    // not route between them itself, or the router would be bypassed.
    // ip_forward explicitly off: a new namespace inherits IPv4 settings from the root one
    // (net.core.devconf_inherit_init_net=0), so where dockerd has turned forwarding on the switch
    // would otherwise route between its two bridges and bypass the router.
    await setSysctls(switchNs, { 'net.ipv4.ip_forward': 0, 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 });
    await ipBatch(switchNs, [
      // Each bridge gets a MAC of its own (random, locally administered). Without one the kernel
      // gives the bridge the lowest MAC among its ports and changes it when a lower one joins
      // (br_stp_recalculate_bridge_id). A node's ARP entry for control then still holds the old
      // MAC, now only a port's: the bridge passes such a frame up as PACKET_OTHERHOST, and IP drops
      // it, until that entry goes stale and is probed again, 10-30 s of lost packets.
      ...sides.flatMap((sd) => [`link add ${sd.bridge} address ${randomLocalMac()} mtu 1500 type bridge`, `link set ${sd.bridge} up`]),
      // Only bridge A carries an address (control's); B is pure L2, reached through the router.
      `addr add ${controlIp}/${ulLen} dev ${UNDERLAY_BRIDGE}`,
    ]);

    if (router) {
      at(`create the router namespace ${router.ns}`);
      log(`creating router ${router.ns} (${router.legs.map((l) => `${l.iface} ${l.ip} on ${l.bridge}`).join(', ')})`);
      await addNs(router.ns);
      // Set before its legs exist, so they inherit rp_filter 0 from `default`.
      await setSysctls(router.ns, {
        'net.ipv4.ip_forward': 1,
        'net.ipv4.conf.all.rp_filter': 0,
        'net.ipv4.conf.default.rp_filter': 0,
        'net.ipv6.conf.all.disable_ipv6': 1,
        'net.ipv6.conf.default.disable_ipv6': 1,
      });
      for (const l of router.legs) {
        const port = `vrt${l.iface.slice(-1)}`;
        await ipBatch(switchNs, [
          `link add ${port} mtu 1500 type veth peer name ${l.iface} netns ${router.ns}`,
          `link set ${port} master ${l.bridge}`,
          `link set ${port} up`,
        ]);
        await ipBatch(router.ns, [`addr add ${l.ip}/${parseAddrPrefix(l.underlay).len} dev ${l.iface}`, `link set ${l.iface} up`]);
      }
      // Control answers nodes on subnet B through the router; no default route anywhere, so
      // nothing addressed outside the lab's subnets has a way out.
      await ipBatch(switchNs, [`route add ${sides[1].underlay} via ${router.legs[0].ip} dev ${UNDERLAY_BRIDGE}`]);
    }

    for (const n of state.nodes) {
      at(`create node namespace ${n.ns}`);
      const side = sides.findIndex((sd) => sd.underlay === n.underlay);
      const sd = sides[side];
      log(`creating node ${n.name}: ${n.ns} ${n.iface} ${n.publicIp}/${sd.len}${router ? ` on ${sd.bridge}` : ''}`);
      await addNs(n.ns);
      // The veth is made inside the switch namespace with its peer placed straight into the node
      // namespace: neither end ever exists in the root namespace.
      const port = `v${n.name}`;
      await ipBatch(switchNs, [
        `link add ${port} mtu 1500 type veth peer name ${n.iface} netns ${n.ns}`,
        `link set ${port} master ${sd.bridge}`,
        `link set ${port} up`,
      ]);
      await ipBatch(n.ns, [
        `addr add ${n.publicIp}/${sd.len} dev ${n.iface}`,
        `link set ${n.iface} up`,
        // The other underlay subnet through this side's router leg: one route, not a default.
        ...(router ? [`route add ${sides[1 - side].underlay} via ${router.legs[side].ip} dev ${n.iface}`] : []),
      ]);
      await setSysctls(n.ns, nodeSysctls(n.iface));
      for (let j = 1; j <= o.pods; j++) {
        const pns = podNsName(o.prefix, n.index, j);
        at(`create pod namespace ${pns}`);
        await addNs(pns);
        await setSysctls(pns, POD_SYSCTLS);
      }
    }

    const members = state.control.members;
    if (members) {
      at('start etcd members');
      log(`starting ${members.length} etcd members in ${switchNs} on ${etcdEndpoints(state.control).join(', ')}`);
      // All started before any is waited for: a member of a new cluster is healthy only once a
      // quorum of its peers is up and a leader elected.
      for (const m of members) await spawnEtcdMember(state, m, { wait: false });
      await waitAll(members, (m, signal) => waitEtcdMemberHealthy(state, m, opts.readyTimeoutMs, signal), opts.signal);
      at('write the network config to etcd');
      await putEtcdNetConf(state, readFileSync(state.control.netConfPath, 'utf8'), opts.readyTimeoutMs ?? 20_000);
    } else if (registry === 'etcd') {
      at('start etcd');
      log(`starting etcd in ${switchNs} on http://${state.control.address}`);
      await spawnControl(state, { timeoutMs: opts.readyTimeoutMs, signal: opts.signal });
      at('write the network config to etcd');
      await putEtcdNetConf(state, readFileSync(state.control.netConfPath, 'utf8'), opts.readyTimeoutMs ?? 20_000);
    } else {
      at('start weft control');
      log(`starting weft control in ${switchNs} on ${state.control.address}`);
      await spawnControl(state, { timeoutMs: opts.readyTimeoutMs, signal: opts.signal });
    }

    if (state.prometheus) {
      // Before the daemons, so their start is on record too; the config names them already.
      at('start Prometheus');
      log(`starting Prometheus in ${switchNs} on ${state.prometheus.address}, reachable from the host at ${state.prometheus.url}`);
      await startPrometheus(state, { timeoutMs: opts.readyTimeoutMs, signal: opts.signal });
    }

    at('start weft daemons');
    for (const n of state.nodes) {
      log(`starting weft daemon in ${n.ns}${n.inspect ? ` (inspector on ${n.inspect} inside ${n.ns})` : ''}`);
      await spawnDaemon(state, n, { wait: false });
    }
    at('wait for daemons to become ready');
    await waitAll(state.nodes, (n, signal) => waitDaemonReady(state, n, opts.readyTimeoutMs, signal), opts.signal);
    log('daemons ready');

    at('wait for every daemon to know its peers');
    const checked = await Promise.all(state.nodes.map((n) => waitDaemonPeers(state, n, opts.readyTimeoutMs, opts.signal)));
    if (checked.every(Boolean)) log('every daemon knows every other node');
    else log("note: a daemon's /status has no `peers` list; not waiting for the overlay to converge");

    for (const n of state.nodes) {
      at(`attach pods on ${n.name}`);
      const env = readSubnetEnv(n.subnetFile);
      if (!env) throw new Error(`${n.subnetFile} missing or incomplete although ${n.name} reported ready`);
      // What kubelet would find in the node's /etc/cni/net.d; weft-cni saves the delegate config
      // it builds from subnet.env under the node's weft-cni dir.
      const conflist = weftConflist(n);
      writeFileSync(join(n.dir, '10-weft.conflist'), JSON.stringify(conflist, null, 2) + '\n');
      const config = pluginConfig(conflist);
      for (let j = 1; j <= o.pods; j++) {
        const ns = podNsName(o.prefix, n.index, j);
        const containerId = ns.replace(/[^A-Za-z0-9_.-]/g, '_');
        const res = await cniAdd({ nodeNs: n.ns, containerId, netns: `/run/netns/${ns}`, ifname: POD_IFACE, config, cniPath: labCniPath(dir) });
        const ip4 = res.ips?.find((x) => x.address.includes('.'));
        if (!ip4) throw new Error(`CNI ADD for ${ns} returned no IPv4 address: ${JSON.stringify(res)}`);
        state.pods.push({
          name: podName(n.index, j),
          node: n.name,
          ns,
          ifname: POD_IFACE,
          ip: ip4.address.split('/')[0],
          cidr: ip4.address,
          gateway: ip4.gateway,
          containerId,
          cniConfig: config,
        });
        writeState(state);
        log(`pod ${podName(n.index, j)}: ${ns} ${ip4.address} (lease ${env.subnet} on ${n.name})`);
      }
    }
    return state;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (opts.keepOnFailure) {
      throw new Error(`lab up failed at "${step}": ${msg}\n(lab left in place: weft lab down --prefix ${o.prefix})`, { cause: err });
    }
    try {
      await labDown(o.prefix);
    } catch (downErr) {
      throw new Error(`lab up failed at "${step}": ${msg}\n(tearing down also failed: ${downErr instanceof Error ? downErr.message : String(downErr)})`, {
        cause: downErr,
      });
    }
    throw new Error(`lab up failed at "${step}": ${msg}`, { cause: err });
  }
}
