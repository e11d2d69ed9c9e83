// weft lab up | demo | status | exec | down — a multi-node overlay on network namespaces.
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { parseArgs } from 'node:util';
import { BACKEND_TYPES, isBackendType, type BackendType } from '../datapath/backends';
import {
  DEFAULT_NETWORK,
  DEFAULT_PREFIX,
  DEFAULT_UNDERLAY,
  DEFAULT_UNDERLAY_B,
  REGISTRIES,
  TOPOLOGIES,
  formatDemo,
  formatStatus,
  labDemo,
  labDown,
  labStatus,
  labUp,
  targetNs,
  type RegistryKind,
  type Topology,
} from '../lab';
import { nsExists } from '../lab/netns';
import { findNode, mustReadState } from '../lab/state';
import { attach, MONITOR_OPTIONS, monitorRunFromFlags } from './monitor';
import { quote } from '../util/quote';

export const USAGE = `usage: weft lab <command> [flags]

commands:
  up      form a lab: a switch namespace (underlay bridge, weft control), N node namespaces
          (weft daemon each) and K pod namespaces per node attached with the CNI bridge plugin
            --nodes N (3)  --pods K (1)  --backend ${BACKEND_TYPES.join('|')} (udp)
            --prefix P (${DEFAULT_PREFIX})  --underlay CIDR (${DEFAULT_UNDERLAY})  --network CIDR (${DEFAULT_NETWORK})
            --topology ${TOPOLOGIES.join('|')} (flat): routed puts the first half of the nodes on --underlay
              and the rest on --underlay-b CIDR (${DEFAULT_UNDERLAY_B}), two bridges joined by a router
              namespace (rt), so nodes on different subnets are not L2 neighbours
            --direct-routing (net-conf Backend.DirectRouting: host routes to same-subnet peers)
            --inspect NODE (run that node's daemon under node --inspect=0.0.0.0:9229 in its namespace)
            --registry embedded|etcd (embedded): etcd runs one etcd member where weft control would,
              with the net-conf at /coreos.com/network/config, and daemons use --etcd-endpoints
            --etcd-members 1|3 (1, --registry etcd only): 3 runs a 3-member etcd cluster there (client
              ports 2379, 22379, 32379), one of which can be killed while the other two keep quorum
            --prometheus: run Prometheus in the switch namespace, scraping every daemon's and control's
              /metrics every second (storage under the lab dir), reachable from this host at
              http://127.0.0.1:PORT (weft lab status prints it); daemons then serve their health
              server on 0.0.0.0. --prometheus-port PORT (9090; 0 picks a free one)
            --lease-ttl SECONDS  --force (recreate an existing lab)  --keep-on-failure
  demo    down any previous lab, up 3 nodes (udp), ping every pod pair across nodes, one iperf3;
          the lab stays up   [--prefix P] [--backend B] [--nodes N] [--pods K] [--topology T] [--direct-routing]
                             [--registry R] [--etcd-members N]
  status  nodes, pods and control of a lab   [--prefix P] [--json]
  exec    run a command in a lab namespace: weft lab exec [--prefix P] [--timeout S] TARGET -- CMD...
          TARGET: nN (node), nN/pM (pod), ul (underlay switch, where control runs), rt (router, routed topology)
  monitor attach to a node's daemon and print its packet events (weft monitor, on the node's
          own socket): weft lab monitor [--prefix P] NODE [--type drop|trace|all] [--src CIDR]
          [--dst CIDR] [--proto P] [--peer IP] [--rate N] [--count N] [--json]
  down    stop the lab's processes and delete its namespaces and state   [--prefix P]
`;

const progress = (msg: string): void => {
  process.stderr.write(`weft lab: ${msg}\n`);
};

function int(name: string, v: string | undefined, dflt?: number): number | undefined {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`--${name} must be an integer, got ${quote(v)}`);
  return n;
}

function topology(v: string | undefined): Topology | undefined {
  if (v === undefined) return undefined;
  if (!(TOPOLOGIES as readonly string[]).includes(v)) throw new Error(`--topology must be one of ${TOPOLOGIES.join('|')}, got "${v}"`);
  return v as Topology;
}

function registry(v: string | undefined): RegistryKind | undefined {
  if (v === undefined) return undefined;
  if (!(REGISTRIES as readonly string[]).includes(v)) throw new Error(`--registry must be one of ${REGISTRIES.join('|')}, got "${v}"`);
  return v as RegistryKind;
}

function backend(v: string | undefined): BackendType | undefined {
  if (v === undefined) return undefined;
  if (!isBackendType(v)) throw new Error(`--backend must be one of ${BACKEND_TYPES.join('|')}, got "${v}"`);
  return v;
}

const UP_OPTIONS = {
  nodes: { type: 'string' },
  pods: { type: 'string' },
  backend: { type: 'string' },
  prefix: { type: 'string' },
  underlay: { type: 'string' },
  network: { type: 'string' },
  topology: { type: 'string' },
  'underlay-b': { type: 'string' },
  'direct-routing': { type: 'boolean' },
  inspect: { type: 'string' },
  'lease-ttl': { type: 'string' },
  registry: { type: 'string' },
  'etcd-members': { type: 'string' },
  prometheus: { type: 'boolean' },
  'prometheus-port': { type: 'string' },
  force: { type: 'boolean' },
  'keep-on-failure': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * Runs fn with an AbortSignal that Ctrl-C / SIGTERM trip, so an interrupted `up` takes down what
 * it had made instead of leaving half a lab behind.
 */
async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const onSig = (): void => {
    progress('interrupted');
    ac.abort();
  };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  try {
    return await fn(ac.signal);
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
}

async function up(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: UP_OPTIONS, strict: true });
  if (values.help) return help();
  const prefix = values.prefix ?? DEFAULT_PREFIX;
  const opts = {
    prefix,
    nodes: int('nodes', values.nodes),
    pods: int('pods', values.pods),
    backend: backend(values.backend),
    underlay: values.underlay,
    network: values.network,
    topology: topology(values.topology),
    underlayB: values['underlay-b'],
    directRouting: values['direct-routing'],
    inspect: values.inspect,
    leaseTtl: int('lease-ttl', values['lease-ttl']),
    registry: registry(values.registry),
    etcdMembers: int('etcd-members', values['etcd-members']),
    prometheus: values.prometheus,
    prometheusPort: int('prometheus-port', values['prometheus-port']),
    force: values.force,
    keepOnFailure: values['keep-on-failure'],
    log: progress,
  };
  await interruptible((signal) => labUp({ ...opts, signal }));
  process.stdout.write(formatStatus(await labStatus(prefix)));
  return 0;
}

async function demo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      prefix: UP_OPTIONS.prefix,
      backend: UP_OPTIONS.backend,
      nodes: UP_OPTIONS.nodes,
      pods: UP_OPTIONS.pods,
      topology: UP_OPTIONS.topology,
      'direct-routing': UP_OPTIONS['direct-routing'],
      registry: UP_OPTIONS.registry,
      'etcd-members': UP_OPTIONS['etcd-members'],
      help: UP_OPTIONS.help,
    },
    strict: true,
  });
  if (values.help) return help();
  const opts = {
    prefix: values.prefix,
    backend: backend(values.backend),
    nodes: int('nodes', values.nodes),
    pods: int('pods', values.pods),
    topology: topology(values.topology),
    directRouting: values['direct-routing'],
    registry: registry(values.registry),
    etcdMembers: int('etcd-members', values['etcd-members']),
    log: progress,
  };
  const r = await interruptible((signal) => labDemo({ ...opts, signal }));
  process.stdout.write('\n' + formatDemo(r));
  if (!r.ok) process.stderr.write(`weft lab demo: some traffic did not get through (FAIL rows above; logs in ${r.state.dir}/logs)\n`);
  return r.ok ? 0 : 1;
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { prefix: UP_OPTIONS.prefix, json: { type: 'boolean' }, help: UP_OPTIONS.help },
    strict: true,
  });
  if (values.help) return help();
  const s = await labStatus(values.prefix ?? DEFAULT_PREFIX);
  process.stdout.write(values.json ? JSON.stringify(s, null, 2) + '\n' : formatStatus(s));
  return s.exists ? 0 : 1;
}

async function down(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { prefix: UP_OPTIONS.prefix, help: UP_OPTIONS.help }, strict: true });
  if (values.help) return help();
  const prefix = values.prefix ?? DEFAULT_PREFIX;
  await labDown(prefix, { log: progress });
  progress(`lab "${prefix}" is down`);
  return 0;
}

/**
 * The user's command runs with our stdio and no timeout (it may be an interactive shell) unless
 * --timeout is given. Ctrl-C reaches it directly through the terminal's process group; we only
 * keep ourselves alive to report its exit code.
 */
async function exec(argv: string[]): Promise<number> {
  let head: string[];
  let cmd: string[];
  const dd = argv.indexOf('--');
  if (dd >= 0) {
    head = argv.slice(0, dd);
    cmd = argv.slice(dd + 1);
  } else {
    // No "--": flags, then the target, then the command with its own flags.
    let i = 0;
    while (i < argv.length && argv[i].startsWith('-')) i += argv[i].includes('=') || argv[i] === '-h' || argv[i] === '--help' ? 1 : 2;
    head = argv.slice(0, i + 1);
    cmd = argv.slice(i + 1);
  }
  const { values, positionals } = parseArgs({
    args: head,
    options: { prefix: UP_OPTIONS.prefix, timeout: { type: 'string' }, help: UP_OPTIONS.help },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) return help();
  if (positionals.length !== 1 || cmd.length === 0) throw new Error('usage: weft lab exec [--prefix P] [--timeout S] TARGET -- CMD...');
  const ns = targetNs(values.prefix ?? DEFAULT_PREFIX, positionals[0]);
  if (!nsExists(ns)) throw new Error(`namespace ${ns} does not exist (is the lab up? weft lab status)`);
  const timeoutS = int('timeout', values.timeout);

  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'inherit' });
    const ignore = (): void => undefined;
    process.on('SIGINT', ignore);
    const timer = timeoutS ? setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000) : undefined;
    child.on('error', reject);
    child.on('close', (code, sig) => {
      process.off('SIGINT', ignore);
      if (timer) clearTimeout(timer);
      if (code !== null) resolve(code);
      else resolve(sig === 'SIGKILL' && timeoutS ? 124 : 128 + (sig ? osConstants.signals[sig] : 0));
    });
  });
}

/** weft lab monitor NODE [filters]: `weft monitor` on that node's socket (the lab gives each its own). */
async function monitor(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { prefix: UP_OPTIONS.prefix, ...MONITOR_OPTIONS, help: UP_OPTIONS.help },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) return help();
  if (positionals.length !== 1) throw new Error('usage: weft lab monitor [--prefix P] NODE [filters] (NODE: n1, n2, ...)');
  const run = monitorRunFromFlags(values);
  const node = findNode(mustReadState(values.prefix ?? DEFAULT_PREFIX), positionals[0]);
  if (!node.monitorSocket) throw new Error(`${node.name}'s daemon was started without a monitor socket (a lab from before weft monitor: weft lab up --force)`);
  return attach(node.monitorSocket, run);
}

function help(): number {
  process.stdout.write(USAGE);
  return 0;
}

const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<number>> = { up, demo, status, exec, monitor, down };

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '-h' || sub === '--help' || sub === 'help') {
    process.stdout.write(USAGE);
    return sub ? 0 : 2;
  }
  const fn = SUBCOMMANDS[sub];
  if (!fn) {
    process.stderr.write(`weft lab: unknown command "${sub}"\n${USAGE}`);
    return 2;
  }
  return fn(rest);
}
