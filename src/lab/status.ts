// `weft lab status`: what the lab record says, checked against what is actually running.
import { networkOf } from './addr';
import { readSubnetEnv } from './cni';
import { listNs, nsExists } from './netns';
import { healthUrls, probe, type HttpProbe } from './probe';
import { isLabPid } from './lifecycle';
import { DEFAULT_PREFIX, findNode, labDir, labNsPattern, mustReadState, prefixOf, readState, type LabRef, type Topology } from './state';

export interface NodeStatus {
  name: string;
  ns: string;
  publicIp: string;
  /** The underlay subnet its eth0 sits on ("192.168.77.0/24"); in a routed lab, A or B. */
  underlay: string;
  pid: number;
  alive: boolean;
  /** FLANNEL_SUBNET from the node's subnet.env ("10.244.7.1/24"), null when absent. */
  lease: string | null;
  /** The lease as a network ("10.244.7.0/24"). */
  subnet: string | null;
  mtu: number | null;
  ready: boolean;
  /** The daemon's /status JSON ({lease, peers, counters}), null when unreachable. */
  daemon: unknown;
  /** Where the inspector listens inside `ns`, when the daemon runs under --inspect. */
  inspect?: string;
  /** The daemon's monitor socket (weft lab monitor NODE attaches to it). */
  monitorSocket?: string;
  log: string;
}

export interface EtcdMemberStatus {
  name: string;
  /** Client URL. */
  address: string;
  peerUrl: string;
  pid: number;
  alive: boolean;
  log: string;
}

export interface PrometheusStatus {
  /** http://127.0.0.1:PORT, through the forwarder: the address to open from the host. */
  url: string;
  ns: string;
  /** Where it listens inside `ns`. */
  address: string;
  pid: number;
  alive: boolean;
  forwarderPid: number;
  forwarderAlive: boolean;
  config: string;
  log: string;
}

export interface PodStatus {
  name: string;
  ns: string;
  node: string;
  ip: string;
  cidr: string;
  gateway?: string;
  present: boolean;
}

export interface LabStatus {
  prefix: string;
  exists: boolean;
  dir: string;
  /** Lab namespaces present on the machine (also reported when the record is missing). */
  namespaces: string[];
  backend?: string;
  network?: string;
  /** Subnet A: the only underlay subnet of a flat lab, the one control sits on in a routed lab. */
  underlay?: string;
  topology?: Topology;
  /** Every underlay subnet: [A] (flat) or [A, B] (routed). */
  underlays?: string[];
  /** Routed topology: the router namespace and its address on each subnet. */
  router?: { ns: string; present: boolean; legs: { iface: string; ip: string; underlay: string }[] };
  /** Extra net-conf.json Backend fields the lab was made with (e.g. { DirectRouting: true }). */
  backendConfig?: Record<string, unknown>;
  createdAt?: string;
  /**
   * With `members` (`--etcd-members 3`) pid is 0 and alive means a majority of the members' processes
   * are alive, as the cluster needs to serve.
   */
  control?: {
    kind: 'embedded' | 'etcd';
    ns: string;
    address: string;
    pid: number;
    alive: boolean;
    log: string;
    members?: EtcdMemberStatus[];
    /** `--prometheus` with weft control: where its /metrics is served inside `ns`. */
    metrics?: string;
  };
  /** `--prometheus`: where to reach it from the host (`url`), and whether it and its forwarder run. */
  prometheus?: PrometheusStatus;
  nodes: NodeStatus[];
  pods: PodStatus[];
}

function pick(results: HttpProbe[], path: string): HttpProbe | undefined {
  return results.find((r) => r.url.endsWith(path) && r.status !== 0);
}

export async function labStatus(lab: LabRef): Promise<LabStatus> {
  const prefix = prefixOf(lab);
  const pattern = labNsPattern(prefix);
  const namespaces = (await listNs()).filter((n) => pattern.test(n)).sort();
  const state = readState(prefix);
  if (!state) return { prefix, exists: false, dir: labDir(prefix), namespaces, nodes: [], pods: [] };

  const nodes = await Promise.all(
    state.nodes.map(async (n): Promise<NodeStatus> => {
      const alive = isLabPid(n.pid, state.dir);
      const env = readSubnetEnv(n.subnetFile);
      let ready = false;
      let daemon: unknown = null;
      if (alive && nsExists(n.ns)) {
        const targets = [...healthUrls(n.publicIp, n.healthzPort, '/readyz'), ...healthUrls(n.publicIp, n.healthzPort, '/status')];
        const results = await probe(
          n.ns,
          { mode: 'http', targets, untilOk: false, deadlineMs: 0, intervalMs: 0, perTryTimeoutMs: 1500 },
          { nodeBin: state.nodeBin },
        ).catch(() => [] as HttpProbe[]);
        ready = pick(results, '/readyz')?.ok === true;
        const st = pick(results, '/status');
        if (st?.status === 200) {
          try {
            daemon = JSON.parse(st.body);
          } catch {
            daemon = st.body;
          }
        }
      }
      return {
        name: n.name,
        ns: n.ns,
        publicIp: n.publicIp,
        underlay: n.underlay ?? networkOf(state.options.underlay),
        pid: n.pid,
        alive,
        lease: env?.subnet ?? null,
        subnet: env ? networkOf(env.subnet) : null,
        mtu: env?.mtu ?? null,
        ready,
        daemon,
        ...(n.inspect ? { inspect: n.inspect } : {}),
        ...(n.monitorSocket ? { monitorSocket: n.monitorSocket } : {}),
        log: n.logFile,
      };
    }),
  );
  const members = state.control.members?.map((m): EtcdMemberStatus => ({
    name: m.name,
    address: `http://${m.address}`,
    peerUrl: m.peerUrl,
    pid: m.pid,
    alive: isLabPid(m.pid, state.dir),
    log: m.logFile,
  }));
  return {
    prefix,
    exists: true,
    dir: state.dir,
    namespaces,
    backend: state.options.backend,
    network: state.options.network,
    underlay: state.options.underlay,
    topology: state.options.topology ?? 'flat',
    underlays: state.router ? state.router.legs.map((l) => l.underlay) : [networkOf(state.options.underlay)],
    ...(state.router
      ? {
          router: {
            ns: state.router.ns,
            present: nsExists(state.router.ns),
            legs: state.router.legs.map(({ iface, ip, underlay }) => ({ iface, ip, underlay })),
          },
        }
      : {}),
    ...(state.options.backendConfig ? { backendConfig: state.options.backendConfig } : {}),
    createdAt: state.createdAt,
    control: {
      kind: state.control.kind ?? 'embedded',
      ns: state.control.ns,
      address: state.control.address,
      pid: state.control.pid,
      alive: members ? members.filter((m) => m.alive).length > members.length / 2 : isLabPid(state.control.pid, state.dir),
      log: state.control.logFile,
      ...(members ? { members } : {}),
      ...(state.control.metricsAddress ? { metrics: `http://${state.control.metricsAddress}/metrics` } : {}),
    },
    ...(state.prometheus
      ? {
          prometheus: {
            url: state.prometheus.url,
            ns: state.prometheus.ns,
            address: state.prometheus.address,
            pid: state.prometheus.pid,
            alive: isLabPid(state.prometheus.pid, state.dir),
            forwarderPid: state.prometheus.forwarderPid,
            forwarderAlive: isLabPid(state.prometheus.forwarderPid, state.dir),
            config: state.prometheus.configFile,
            log: state.prometheus.logFile,
          },
        }
      : {}),
    nodes,
    pods: state.pods.map((p) => ({ name: p.name, ns: p.ns, node: p.node, ip: p.ip, cidr: p.cidr, gateway: p.gateway, present: nsExists(p.ns) })),
  };
}

/** Left-aligned columns, two spaces apart. */
export function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ');
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

const yn = (b: boolean): string => (b ? 'yes' : 'NO');

export function formatStatus(s: LabStatus): string {
  if (!s.exists) {
    return (
      `no lab with prefix "${s.prefix}" (${s.dir}/state.json missing)` +
      (s.namespaces.length ? `\nleftover namespaces: ${s.namespaces.join(' ')} (weft lab down --prefix ${s.prefix} removes them)` : '') +
      '\n'
    );
  }
  const c = s.control!;
  const extra = s.backendConfig ? ` ${JSON.stringify(s.backendConfig)}` : '';
  const r = s.router;
  const underlay = r ? `routed underlay ${r.legs.map((l) => l.underlay).join(' + ')}` : `underlay ${s.underlay}`;
  let out = `lab "${s.prefix}": backend ${s.backend}${extra}, network ${s.network}, ${underlay}, state ${s.dir}\n\n`;
  out += c.members
    ? table(
        ['ETCD MEMBER', 'NAMESPACE', 'ADDRESS', 'PEER', 'PID', 'ALIVE'],
        c.members.map((m) => [m.name, c.ns, m.address, m.peerUrl, String(m.pid), yn(m.alive)]),
      )
    : table(
        ['CONTROL', 'NAMESPACE', 'ADDRESS', 'PID', 'ALIVE'],
        [[c.kind === 'etcd' ? 'etcd' : 'control', c.ns, c.kind === 'etcd' ? `http://${c.address}` : c.address, String(c.pid), yn(c.alive)]],
      );
  const pr = s.prometheus;
  if (pr) {
    out += '\n';
    out += table(
      ['PROMETHEUS', 'NAMESPACE', 'ADDRESS', 'PID', 'ALIVE', 'FORWARDER'],
      [['prometheus', c.ns, pr.address, String(pr.pid), yn(pr.alive), yn(pr.forwarderAlive)]],
    );
  }
  if (r) {
    out += '\n';
    out += table(
      ['ROUTER', 'NAMESPACE', 'ADDRESSES', 'PRESENT'],
      [['router', r.ns, r.legs.map((l) => `${l.iface} ${l.ip} (${l.underlay})`).join(', '), yn(r.present)]],
    );
  }
  out += '\n';
  // The UNDERLAY column only where there is more than one underlay subnet to tell apart.
  out += table(
    ['NODE', 'NAMESPACE', 'PUBLIC IP', ...(r ? ['UNDERLAY'] : []), 'PID', 'ALIVE', 'LEASE', 'MTU', 'READY'],
    s.nodes.map((n) => [
      n.name,
      n.ns,
      n.publicIp,
      ...(r ? [n.underlay] : []),
      String(n.pid),
      yn(n.alive),
      n.lease ?? '-',
      n.mtu === null ? '-' : String(n.mtu),
      yn(n.ready),
    ]),
  );
  if (s.pods.length) {
    out += '\n';
    out += table(
      ['POD', 'NAMESPACE', 'IP', 'NODE'],
      s.pods.map((p) => [p.name, p.ns, p.present ? p.cidr : `${p.cidr} (namespace missing)`, p.node]),
    );
  }
  for (const n of s.nodes) {
    if (n.inspect) {
      out +=
        `\n${n.name}'s daemon runs under the inspector at ${n.inspect} inside ${n.ns} (not reachable from the root namespace):\n` +
        `  weft lab exec${s.prefix === DEFAULT_PREFIX ? '' : ` --prefix ${s.prefix}`} ${n.name} -- node inspect 127.0.0.1:${n.inspect.split(':').pop()}\n`;
    }
  }
  if (pr) {
    out +=
      `\nPrometheus: ${pr.url} from this host (PromQL at ${pr.url}/api/v1/query, targets at ${pr.url}/api/v1/targets);\n` +
      `  it scrapes every daemon's /metrics${c.metrics ? ` and control's ${c.metrics}` : c.kind === 'etcd' ? " and etcd's /metrics" : ''}; config ${pr.config}\n`;
  }
  const watched = s.nodes.find((n) => n.monitorSocket);
  if (watched) {
    out += `\nmonitor: weft lab monitor${s.prefix === DEFAULT_PREFIX ? '' : ` --prefix ${s.prefix}`} NODE [--type drop|trace|all] [filters] (sockets: ${s.dir}/NODE/monitor.sock)\n`;
  }
  out += `\nlogs: ${s.dir}/logs/\n`;
  return out;
}

/** One daemon's /status JSON ({lease, peers, counters}); throws when it does not answer 200. */
export async function daemonStatus(lab: LabRef, node: string): Promise<unknown> {
  return JSON.parse(await daemonGet(lab, node, '/status')) as unknown;
}

/** One daemon's /metrics (Prometheus text exposition); throws when it does not answer 200. */
export function daemonMetrics(lab: LabRef, node: string): Promise<string> {
  return daemonGet(lab, node, '/metrics');
}

/** GET a path of a daemon's health server, from inside its node namespace (the only place it listens). */
async function daemonGet(lab: LabRef, node: string, path: string): Promise<string> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  const n = findNode(state, node);
  const results = await probe(
    n.ns,
    { mode: 'http', targets: healthUrls(n.publicIp, n.healthzPort, path), untilOk: true, deadlineMs: 0, intervalMs: 0, perTryTimeoutMs: 2000 },
    { nodeBin: state.nodeBin },
  );
  const ok = results.find((r) => r.ok);
  if (!ok) throw new Error(`daemon ${node} ${path}: ${results.map((r) => `${r.url} → ${r.status || r.error}`).join('; ')}`);
  return ok.body;
}
