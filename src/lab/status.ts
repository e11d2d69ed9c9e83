// `weft lab status`: what the lab record says, checked against what is actually running.
import { networkOf } from './addr';
import { readSubnetEnv } from './cni';
import { listNs, nsExists } from './netns';
import { healthUrls, probe, type HttpProbe } from './probe';
import { isLabPid } from './procs';
import { DEFAULT_PREFIX, findNode, labDir, labNsPattern, mustReadState, prefixOf, readState, type LabRef } from './state';

export interface NodeStatus {
  name: string;
  ns: string;
  publicIp: string;
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
  underlay?: string;
  createdAt?: string;
  control?: { ns: string; address: string; pid: number; alive: boolean; log: string };
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
        const targets = [
          ...healthUrls(n.publicIp, n.healthzPort, '/readyz'),
          ...healthUrls(n.publicIp, n.healthzPort, '/status'),
        ];
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
        pid: n.pid,
        alive,
        lease: env?.subnet ?? null,
        subnet: env ? networkOf(env.subnet) : null,
        mtu: env?.mtu ?? null,
        ready,
        daemon,
        ...(n.inspect ? { inspect: n.inspect } : {}),
        log: n.logFile,
      };
    }),
  );
  return {
    prefix,
    exists: true,
    dir: state.dir,
    namespaces,
    backend: state.options.backend,
    network: state.options.network,
    underlay: state.options.underlay,
    createdAt: state.createdAt,
    control: {
      ns: state.control.ns,
      address: state.control.address,
      pid: state.control.pid,
      alive: isLabPid(state.control.pid, state.dir),
      log: state.control.logFile,
    },
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
  let out = `lab "${s.prefix}": backend ${s.backend}, network ${s.network}, underlay ${s.underlay}, state ${s.dir}\n\n`;
  out += table(
    ['CONTROL', 'NAMESPACE', 'ADDRESS', 'PID', 'ALIVE'],
    [['control', c.ns, c.address, String(c.pid), yn(c.alive)]],
  );
  out += '\n';
  out += table(
    ['NODE', 'NAMESPACE', 'PUBLIC IP', 'PID', 'ALIVE', 'LEASE', 'MTU', 'READY'],
    s.nodes.map((n) => [n.name, n.ns, n.publicIp, String(n.pid), yn(n.alive), n.lease ?? '-', n.mtu === null ? '-' : String(n.mtu), yn(n.ready)]),
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
  out += `\nlogs: ${s.dir}/logs/\n`;
  return out;
}

/** One daemon's /status JSON ({lease, peers, counters}); throws when it does not answer 200. */
export async function daemonStatus(lab: LabRef, node: string): Promise<unknown> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  const n = findNode(state, node);
  const results = await probe(
    n.ns,
    { mode: 'http', targets: healthUrls(n.publicIp, n.healthzPort, '/status'), untilOk: true, deadlineMs: 0, intervalMs: 0, perTryTimeoutMs: 2000 },
    { nodeBin: state.nodeBin },
  );
  const ok = results.find((r) => r.ok);
  if (!ok) throw new Error(`daemon ${node} /status: ${results.map((r) => `${r.url} → ${r.status || r.error}`).join('; ')}`);
  return JSON.parse(ok.body) as unknown;
}
