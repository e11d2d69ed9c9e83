// How `weft bench` turns a fresh 2-node lab into each data plane it compares. Every tunnel gets
// a lab of its own, formed with the weft backend it needs, and then (for the kernel's data
// planes and the reference) the weft daemons are replaced by what flanneld or OpenVPN would
// have set up, so each row measures exactly one data plane with nothing of another in the path.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { daemonStatus, labExec, mustReadState, networkOf, readSubnetEnv, stopDaemon, type LabState } from '../lab';
import { kernelVxlanNode, KERNEL_VXLAN_DEVICE } from '../lab/kernel-vxlan';
import { isAlive, run, sleep, terminate } from '../lab/process';
import type { BackendType } from '../datapath/backends';
import { RTT_PING_INTERVAL_MS } from './measure';
import { OFFLOAD_MECHANISM_ROWS, type OffloadMechanismRow, type PerSyscall, type Tunnel, type TunnelKind } from './types';

export interface TunnelSpec {
  kind: TunnelKind;
  /** The weft backend the lab is formed with. */
  labBackend: BackendType;
  /** Extra `weft daemon` flags for the lab's daemons. */
  daemonArgs?: string[];
  description: string;
}

/**
 * The weft-udp-busy-poll row's --busy-poll-us: twice the RTT test's ping gap, so the daemons
 * are still polling when the next echo request comes and no hop waits for a wake-up. A shorter
 * window saves only the wake-ups that come soon after a packet (the reply on the requesting
 * node), not the request's after 10 ms of quiet, and on this kind of VM (vCPUs that halt when
 * idle) that one costs most: measured with 1000 µs, the p50 did not move (docs/benchmarks.md).
 * The row's CPU column shows what the window costs.
 */
export const BENCH_BUSY_POLL_US = 2 * RTT_PING_INTERVAL_MS * 1000;

/** The weft-udp-offload-* rows: the daemons run with --offload and the mechanisms the name lists. */
function offloadMechanismSpecs(): Record<OffloadMechanismRow, TunnelSpec> {
  const what: Record<string, string> = { tun: 'TSO/GRO on the TUN', gso: 'UDP_SEGMENT sends', gro: 'UDP_GRO receives' };
  return Object.fromEntries(
    OFFLOAD_MECHANISM_ROWS.map((t) => {
      const list = t.slice('weft-udp-offload-'.length).split('-');
      const spec: TunnelSpec = {
        kind: 'weft',
        labBackend: 'udp',
        daemonArgs: ['--offload', list.join(',')],
        description: `weft-udp with --offload ${list.join(',')}: ${list.map((m) => what[m]).join(' and ')} only`,
      };
      return [t, spec];
    }),
  ) as Record<OffloadMechanismRow, TunnelSpec>;
}

export const SPECS: Record<Tunnel, TunnelSpec> = {
  'kernel-host-gw': {
    kind: 'kernel',
    labBackend: 'host-gw',
    description: 'routes `SUBNET via PEER dev eth0` set by hand as flannel host-gw sets them; no weft process, no encapsulation',
  },
  'kernel-vxlan': {
    kind: 'kernel',
    labBackend: 'vxlan',
    description: "the kernel's VXLAN device set up as flanneld sets up flannel.1 (VNI 1, port 8472, permanent neighbor/FDB entries)",
  },
  'weft-host-gw': { kind: 'weft', labBackend: 'host-gw', description: 'weft daemons installing host-gw routes; the kernel forwards' },
  'weft-udp': { kind: 'weft', labBackend: 'udp', description: "weft's userspace datapath, flannel's UDP encapsulation on port 8285" },
  'weft-vxlan': { kind: 'weft', labBackend: 'vxlan', description: "weft's userspace datapath, VXLAN (RFC 7348) on port 8472" },
  'weft-ipip': { kind: 'weft', labBackend: 'ipip', description: "weft's userspace datapath, IP-in-IP (RFC 2003, IP protocol 4)" },
  'weft-udp-no-offload': {
    kind: 'weft',
    labBackend: 'udp',
    daemonArgs: ['--no-offload'],
    description: 'weft-udp with --no-offload: one packet per TUN read/write and per datagram',
  },
  'weft-vxlan-no-offload': {
    kind: 'weft',
    labBackend: 'vxlan',
    daemonArgs: ['--no-offload'],
    description: 'weft-vxlan with --no-offload: one packet per TUN read/write',
  },
  'weft-udp-busy-poll': {
    kind: 'weft',
    labBackend: 'udp',
    daemonArgs: ['--busy-poll-us', String(BENCH_BUSY_POLL_US)],
    description: `weft-udp with --busy-poll-us ${BENCH_BUSY_POLL_US}: keeps polling for ${BENCH_BUSY_POLL_US} µs of quiet after packets before sleeping`,
  },
  ...offloadMechanismSpecs(),
  'weft-ipip-no-offload': {
    kind: 'weft',
    labBackend: 'ipip',
    daemonArgs: ['--no-offload'],
    description: 'weft-ipip with --no-offload: one packet per TUN read/write',
  },
  openvpn: {
    kind: 'reference',
    labBackend: 'udp',
    description: 'OpenVPN 2.6 point-to-point over UDP, --cipher none --auth none, userspace (no DCO): the reference userspace TUN tunnel',
  },
};

/** What a tunnel looks like once set up: the processes that carry its packets and the device the route to the peer pod must use. */
export interface ActiveTunnel {
  /** Processes moving the packets (CPU time and RSS are theirs); empty for the kernel's data planes. */
  pids: number[];
  /** The device `ip route get <peer pod>` must name on n1: proof the traffic takes this data plane. */
  device: string;
  /** Stops what setUp started beyond the lab (the lab itself is torn down by the caller). */
  stop(): Promise<void>;
}

const OVPN_DEV = 'ovpn0';
const OVPN_PORT = 1194;
/** OpenVPN's tun MTU: the underlay's 1500 less IPv4 + UDP, as weft's udp backend gives its pods. */
const OVPN_MTU = 1472;

function subnetOf(st: LabState, node: string): string {
  const n = st.nodes.find((x) => x.name === node);
  const env = n && readSubnetEnv(n.subnetFile);
  if (!env) throw new Error(`no subnet.env for ${node}`);
  return networkOf(env.subnet);
}

async function must(prefix: string, target: string, argv: string[]): Promise<void> {
  const r = await labExec(prefix, target, argv, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`${target}: ${argv.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
}

/** Turns the freshly formed lab `prefix` into `tunnel`'s data plane. */
export async function setUp(tunnel: Tunnel, prefix: string): Promise<ActiveTunnel> {
  const st = mustReadState(prefix);
  const daemons = st.nodes.map((n) => n.pid);
  const none = async (): Promise<void> => undefined;
  switch (tunnel) {
    case 'weft-udp':
    case 'weft-vxlan':
    case 'weft-ipip':
    case 'weft-udp-no-offload':
    case 'weft-vxlan-no-offload':
    case 'weft-ipip-no-offload':
    case 'weft-udp-offload-tun':
    case 'weft-udp-offload-gso':
    case 'weft-udp-offload-gro':
    case 'weft-udp-offload-tun-gso':
    case 'weft-udp-offload-tun-gro':
    case 'weft-udp-offload-gso-gro':
      return { pids: daemons, device: 'weft0', stop: none };
    case 'weft-udp-busy-poll':
      await pinEachToItsOwnCpu(daemons);
      return { pids: daemons, device: 'weft0', stop: none };
    case 'weft-host-gw':
      return { pids: daemons, device: st.nodes[0].iface, stop: none };
    case 'kernel-host-gw': {
      // Note the subnets first: a stopped daemon keeps its lease and subnet.env (as flanneld
      // does), and SIGTERM takes its routes with it, which these then replace.
      const routes = st.nodes.map((n) => ({ node: n, peers: st.nodes.filter((p) => p !== n).map((p) => ({ subnet: subnetOf(st, p.name), via: p.publicIp })) }));
      for (const n of st.nodes) await stopDaemon(prefix, n.name, 'SIGTERM');
      for (const r of routes) {
        for (const p of r.peers) await must(prefix, r.node.name, ['ip', 'route', 'replace', p.subnet, 'via', p.via, 'dev', r.node.iface]);
      }
      return { pids: [], device: st.nodes[0].iface, stop: none };
    }
    case 'kernel-vxlan':
      // Both nodes become flannel.1 as flanneld sets it up, kernel to kernel. n1 is programmed
      // again once n2's lease carries its new MAC.
      await kernelVxlanNode(prefix, 'n1');
      await kernelVxlanNode(prefix, 'n2');
      await kernelVxlanNode(prefix, 'n1');
      return { pids: [], device: KERNEL_VXLAN_DEVICE, stop: none };
    case 'openvpn':
      return startOpenVpn(st);
  }
}

/**
 * Busy polling is deployed with each poller on a CPU of its own (as DPDK's and VPP's poll-mode
 * workers are), and the busy-poll row does the same: daemon i is pinned, all its threads, to
 * CPU i (modulo the CPUs there are). Left to the scheduler, the two pollers of a 2-node lab on
 * one machine can end up sharing one CPU while the other halts; on this kind of VM (whose
 * scheduler packs tasks onto few vCPUs) a trace caught exactly that, at 420-460 µs p50 against
 * 156-178 once pinned, minutes apart on the same lab (docs/benchmarks.md, "Idle latency"). Pods,
 * iperf3 and softirq work stay free to run anywhere.
 */
async function pinEachToItsOwnCpu(pids: number[]): Promise<void> {
  const cpus = os.availableParallelism();
  for (const [i, pid] of pids.entries()) {
    const r = await run('taskset', ['--all-tasks', '--cpu-list', '--pid', String(i % cpus), String(pid)], { timeoutMs: 5_000 });
    if (r.code !== 0) throw new Error(`taskset for daemon ${pid}: ${(r.stderr || r.stdout).trim()}`);
  }
}

async function startOpenVpn(st: LabState): Promise<ActiveTunnel> {
  const prefix = st.prefix;
  const [a, b] = st.nodes;
  const remote = { n1: subnetOf(st, 'n2'), n2: subnetOf(st, 'n1') } as Record<string, string>;
  // No weft in the path: the udp lab's daemons go (their TUN and routes with them); the pods
  // keep the addresses and the 1472-byte MTU the udp lease gave them, which is OpenVPN's too.
  for (const n of st.nodes) await stopDaemon(prefix, n.name, 'SIGTERM');
  const ends = [
    { node: a, peer: b, local: '10.98.0.1', remote: '10.98.0.2' },
    { node: b, peer: a, local: '10.98.0.2', remote: '10.98.0.1' },
  ];
  const pidFile = (name: string) => path.join(st.dir, `openvpn-${name}.pid`);
  const pids: number[] = [];
  const stop = async (): Promise<void> => {
    await terminate(
      pids.filter((p) => isAlive(p)),
      3_000,
    );
  };
  try {
    for (const e of ends) {
      // --disable-dco keeps OpenVPN in userspace (2.6 would otherwise hand the data channel to
      // the ovpn-dco kernel module where it exists), which is the point of the reference.
      await must(prefix, e.node.name, [
        'openvpn',
        '--dev',
        OVPN_DEV,
        '--dev-type',
        'tun',
        '--proto',
        'udp',
        '--local',
        e.node.publicIp,
        '--lport',
        String(OVPN_PORT),
        '--remote',
        e.peer.publicIp,
        '--rport',
        String(OVPN_PORT),
        '--ifconfig',
        e.local,
        e.remote,
        '--cipher',
        'none',
        '--auth',
        'none',
        '--tun-mtu',
        String(OVPN_MTU),
        '--disable-dco',
        '--verb',
        '3',
        '--log',
        path.join(st.dir, 'logs', `openvpn-${e.node.name}.log`),
        '--writepid',
        pidFile(e.node.name),
        '--daemon',
      ]);
      pids.push(await readPidFile(pidFile(e.node.name)));
    }
    for (let i = 0; ; i++) {
      const p = await labExec(prefix, 'n1', ['ping', '-n', '-c', '1', '-W', '1', '10.98.0.2'], { timeoutMs: 5_000 });
      if (p.code === 0) break;
      if (i === 50) throw new Error(`openvpn tunnel did not come up (logs: ${st.dir}/logs/openvpn-n1.log)`);
      await sleep(200);
    }
    for (const n of ['n1', 'n2']) {
      await must(prefix, n, ['ip', 'route', 'replace', remote[n], 'dev', OVPN_DEV]);
      // Replies from the peer's pods arrive on ovpn0 from addresses the node routes there: fine
      // for strict rp_filter too, but the lab's defaults are not ours to rely on.
      await must(prefix, n, ['sysctl', '-qw', `net.ipv4.conf.${OVPN_DEV}.rp_filter=0`]);
    }
    return { pids, device: OVPN_DEV, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * Checks, before a tunnel is measured, that the path between the pods is the one named:
 * `ip route get` on n1 for the peer pod gives the tunnel's device, and every tunnel process is alive.
 */
export async function checkPath(prefix: string, t: ActiveTunnel, dst: string): Promise<void> {
  const r = await labExec(prefix, 'n1', ['ip', '-j', 'route', 'get', dst], { timeoutMs: 5_000 });
  const dev = r.code === 0 ? (JSON.parse(r.stdout) as { dev?: string }[])[0]?.dev : undefined;
  if (dev !== t.device) throw new Error(`n1 routes ${dst} via ${dev ?? `nothing (${r.stderr.trim()})`}, not ${t.device}`);
  const dead = t.pids.filter((p) => !isAlive(p));
  if (dead.length) throw new Error(`tunnel process${dead.length > 1 ? 'es' : ''} ${dead.join(', ')} exited`);
}

/** After a weft tunnel was measured: the packets really went through weft's datapath (its counters moved). */
interface SyscallCounters {
  tunReadPackets: number;
  tunWritePackets: number;
  txPackets: number;
  tunReads: number;
  tunWrites: number;
  socketMessagesSent: number;
}

/** The counters perSyscall is computed from: n1 sends, n2 receives. Null where weft's datapath does not carry the packets. */
export async function syscallCounters(prefix: string, tunnel: Tunnel): Promise<{ n1: SyscallCounters; n2: SyscallCounters } | null> {
  if (SPECS[tunnel].kind !== 'weft' || SPECS[tunnel].labBackend === 'host-gw') return null;
  const read = async (node: string): Promise<SyscallCounters> => {
    const s = (await daemonStatus(prefix, node)) as {
      counters: { tunReadPackets: number; tunWritePackets: number; txPackets: number };
      offload: { tunReads: number; tunWrites: number; socketMessagesSent: number };
    };
    return { ...s.counters, ...s.offload };
  };
  return { n1: await read('n1'), n2: await read('n2') };
}

/** Packets per system call between two syscallCounters snapshots. */
export function perSyscall(a: { n1: SyscallCounters; n2: SyscallCounters }, b: { n1: SyscallCounters; n2: SyscallCounters }): PerSyscall {
  const ratio = (x: number, y: number) => (y > 0 ? x / y : 0);
  return {
    tunRead: ratio(b.n1.tunReadPackets - a.n1.tunReadPackets, b.n1.tunReads - a.n1.tunReads),
    tunWrite: ratio(b.n2.tunWritePackets - a.n2.tunWritePackets, b.n2.tunWrites - a.n2.tunWrites),
    socketSend: ratio(b.n1.txPackets - a.n1.txPackets, b.n1.socketMessagesSent - a.n1.socketMessagesSent),
  };
}

export async function checkWeftCarried(prefix: string, tunnel: Tunnel, minPackets: number): Promise<void> {
  if (SPECS[tunnel].kind !== 'weft' || tunnel === 'weft-host-gw') return;
  const c = ((await daemonStatus(prefix, 'n1')) as { counters: { txPackets: number } }).counters;
  if (c.txPackets < minPackets) throw new Error(`${tunnel}: only ${c.txPackets} packets went through weft on n1`);
}

/**
 * OpenVPN with --daemon writes --writepid from the child after it forks, so the parent (whose
 * exit `must` waited for) can return before the file exists: poll for it, bounded.
 */
async function readPidFile(file: string): Promise<number> {
  for (let i = 0; ; i++) {
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    const pid = Number(text.trim());
    if (Number.isInteger(pid) && pid > 0) return pid;
    if (i === 50) throw new Error(`${file}: no PID after 5 s (the daemon did not start; see its log)`);
    await sleep(100);
  }
}
