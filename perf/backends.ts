// Encapsulations side by side: each weft backend, the kernel's own data planes (host-gw
// routing, the VXLAN device set up as flanneld sets up flannel.1) and OpenVPN without crypto
// (the reference userspace TUN/UDP tunnel), each on a fresh 2-node netns lab of the same
// shape, pod to pod, in one run.
//
//   node dist/perf/backends.js [--tunnels weft-udp,weft-vxlan,...] [--runs 3] [--seconds 5] [--out perf/results]
//
// host-gw is the kernel's routing: weft only installs `SUBNET via PEER dev eth0` routes, so it
// is also the "kernel host-gw" reference. OpenVPN runs on a udp lab, its /24 routes steering
// the pods' traffic past weft0 while it is measured.
import { parseArgs } from 'node:util';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { daemonStatus, iperf3Pair, labDown, labExec, labUp, mustReadState, networkOf, readSubnetEnv, type LabState } from '../src/lab';
import type { BackendType } from '../src/datapath/backend';
import { kernelVxlanNode } from '../src/lab/kernel-vxlan';

const PREFIX = 'weft-perf-';
const OVPN_DEV = 'ovpn0';
const OVPN_PORT = 1194;

const TUNNELS = ['weft-udp', 'weft-vxlan', 'weft-ipip', 'host-gw', 'kernel-vxlan', 'openvpn'] as const;
type Tunnel = (typeof TUNNELS)[number];

/** Bytes each adds in front of the pod's packet on the underlay (what the wire carries). */
const OVERHEAD: Record<Tunnel, number> = {
  'weft-udp': 28, // IPv4 20 + UDP 8 (flannel udp)
  'weft-vxlan': 50, // IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14 (RFC 7348)
  'weft-ipip': 20, // IPv4 20 (RFC 2003)
  'host-gw': 0,
  'kernel-vxlan': 50,
  // IPv4 20 + UDP 8: with --cipher none --auth none and no TLS, OpenVPN adds no framing of its
  // own (captured: a 128-byte inner packet travels as a 136-byte UDP datagram).
  openvpn: 28,
};

interface Sample {
  tcpBps: number[];
  retransmits: number[];
  udp64Pps: number[];
  rttP50Ms: number[];
  rttP99Ms: number[];
  mtu: number;
  maxRssBytes: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function rtt(prefix: string, dst: string): Promise<{ p50: number; p99: number }> {
  // 300 echo requests 10 ms apart: enough for a p99 that is more than the single worst sample.
  const v = await labExec(prefix, 'n1/p1', ['ping', '-n', '-c', '300', '-i', '0.01', '-W', '1', dst], { timeoutMs: 30_000 });
  const times = [...v.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (times.length < 250) throw new Error(`ping to ${dst}: only ${times.length}/300 replies`);
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99) };
}

/** Delivered 64-byte UDP datagrams per second: iperf3 floods (-b 0), the receiver's count decides. */
async function udp64(prefix: string, dst: string, seconds: number): Promise<number> {
  const server = labExec(prefix, 'n2/p1', ['iperf3', '-s', '-1', '-p', '5202', '-J'], { timeoutMs: (seconds + 30) * 1000 });
  await new Promise((r) => setTimeout(r, 500));
  const c = await labExec(prefix, 'n1/p1', ['iperf3', '-c', dst, '-p', '5202', '-u', '-b', '0', '-l', '64', '-t', String(seconds), '-J'], {
    timeoutMs: (seconds + 20) * 1000,
  });
  const s = await server;
  const j = JSON.parse(s.stdout) as { end?: { sum?: { packets?: number; lost_packets?: number; seconds?: number } } };
  const sum = j.end?.sum;
  if (!sum?.packets) throw new Error(`iperf3 udp: no server summary (client exit ${c.code}: ${c.stderr.slice(0, 200)})`);
  return (sum.packets - (sum.lost_packets ?? 0)) / (sum.seconds || seconds);
}

function subnetOf(st: LabState, node: string): string {
  const env = readSubnetEnv(st.nodes.find((x) => x.name === node)!.subnetFile);
  if (!env) throw new Error(`no subnet.env for ${node}`);
  return networkOf(env.subnet);
}

async function startOpenVpn(st: LabState): Promise<() => Promise<void>> {
  const [a, b] = st.nodes;
  const ends = [
    { node: a, peer: b, local: '10.98.0.1', remote: '10.98.0.2' },
    { node: b, peer: a, local: '10.98.0.2', remote: '10.98.0.1' },
  ];
  for (const e of ends) {
    const log = path.join(st.dir, 'logs', `openvpn-${e.node.name}.log`);
    // --disable-dco keeps OpenVPN in userspace (no kernel data-channel offload), which is the point of the reference.
    const args = [
      'openvpn', '--dev', OVPN_DEV, '--dev-type', 'tun', '--proto', 'udp',
      '--local', e.node.publicIp, '--lport', String(OVPN_PORT), '--remote', e.peer.publicIp, '--rport', String(OVPN_PORT),
      '--ifconfig', e.local, e.remote, '--cipher', 'none', '--auth', 'none', '--tun-mtu', '1472', '--disable-dco',
      '--verb', '3', '--log', log, '--writepid', path.join(st.dir, `openvpn-${e.node.name}.pid`), '--daemon',
    ];
    const r = await labExec(st.prefix, e.node.name, args, { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`openvpn in ${e.node.name}: exit ${r.code} ${r.stderr}`);
  }
  const stop = async () => {
    for (const e of ends) {
      const pid = Number(await fs.readFile(path.join(st.dir, `openvpn-${e.node.name}.pid`), 'utf8').catch(() => '0'));
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* already gone */
        }
      }
    }
  };
  for (let i = 0; i < 50; i++) {
    const p = await labExec(st.prefix, 'n1', ['ping', '-n', '-c', '1', '-W', '1', '10.98.0.2'], { timeoutMs: 5_000 });
    if (p.code === 0) {
      // Steer each node's traffic for the other's pods into OpenVPN: a /24 beats weft's /16.
      for (const [node, remote] of [['n1', subnetOf(st, 'n2')], ['n2', subnetOf(st, 'n1')]] as const) {
        const r = await labExec(st.prefix, node, ['ip', 'route', 'replace', remote, 'dev', OVPN_DEV], { timeoutMs: 5_000 });
        if (r.code !== 0) throw new Error(`route via ${OVPN_DEV} in ${node}: ${r.stderr}`);
        await labExec(st.prefix, node, ['sysctl', '-qw', `net.ipv4.conf.${OVPN_DEV}.rp_filter=0`], { timeoutMs: 5_000 });
      }
      return stop;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await stop();
  throw new Error('openvpn tunnel did not come up');
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const BACKEND: Record<Tunnel, BackendType> = {
  'weft-udp': 'udp',
  'weft-vxlan': 'vxlan',
  'weft-ipip': 'ipip',
  'host-gw': 'host-gw',
  'kernel-vxlan': 'vxlan',
  openvpn: 'udp',
};

async function measure(tunnel: Tunnel, runs: number, seconds: number, log: (m: string) => void): Promise<Sample> {
  await labDown(PREFIX).catch(() => undefined);
  log(`${tunnel}: forming a 2-node lab (backend ${BACKEND[tunnel]})`);
  await labUp({ prefix: PREFIX, nodes: 2, pods: 1, backend: BACKEND[tunnel] });
  const st = mustReadState(PREFIX);
  const dst = st.pods.find((p) => p.node === 'n2')!.ip;
  let stop: (() => Promise<void>) | undefined;
  const s: Sample = { tcpBps: [], retransmits: [], udp64Pps: [], rttP50Ms: [], rttP99Ms: [], mtu: 0, maxRssBytes: 0 };
  try {
    // OpenVPN's tunnel MTU is what we gave it; the others are what subnet.env hands pods (kernel VXLAN: 1450 like weft's).
    s.mtu = tunnel === 'openvpn' ? 1472 : readSubnetEnv(st.nodes[0].subnetFile)!.mtu;
    if (tunnel === 'openvpn') stop = await startOpenVpn(st);
    if (tunnel === 'kernel-vxlan') {
      // Both nodes become flannel.1 as flanneld sets it up (kernel to kernel, so the kernel's own
      // checksum offload stays on). n1 is programmed again once n2's lease carries its new MAC.
      await kernelVxlanNode(PREFIX, 'n1', { wireChecksums: false });
      await kernelVxlanNode(PREFIX, 'n2', { wireChecksums: false });
      await kernelVxlanNode(PREFIX, 'n1', { wireChecksums: false });
    }
    const weftDatapath = tunnel.startsWith('weft-');
    for (let r = 0; r < runs; r++) {
      // Latency first, on an idle tunnel: right after a flood the heap and queues are still settling.
      const t = await rtt(PREFIX, dst);
      s.rttP50Ms.push(t.p50);
      s.rttP99Ms.push(t.p99);
      log(`${tunnel} run ${r + 1}/${runs}: TCP ${seconds}s`);
      const sampler = weftDatapath
        ? setInterval(() => {
            for (const n of st.nodes) s.maxRssBytes = Math.max(s.maxRssBytes, rssOf(n.pid));
          }, 200)
        : undefined;
      const tcp = await iperf3Pair(PREFIX, 'n1/p1', 'n2/p1', { seconds });
      if (sampler) clearInterval(sampler);
      if (!tcp.ok) throw new Error(`${tunnel} iperf3: ${tcp.error}`);
      s.tcpBps.push(tcp.bitsPerSecond);
      s.retransmits.push(tcp.retransmits ?? 0);
      log(`${tunnel} run ${r + 1}/${runs}: 64-byte UDP flood ${seconds}s`);
      s.udp64Pps.push(await udp64(PREFIX, dst, seconds));
    }
    if (weftDatapath) {
      // Prove the traffic took weft's datapath, not some other route.
      const c = ((await daemonStatus(PREFIX, 'n1')) as { counters: { txPackets: number } }).counters;
      if (c.txPackets < 1000) throw new Error(`${tunnel}: only ${c.txPackets} packets went through weft on n1`);
    }
  } finally {
    await stop?.();
    await labDown(PREFIX);
  }
  return s;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tunnels: { type: 'string', default: TUNNELS.join(',') },
      runs: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '5' },
      out: { type: 'string', default: 'perf/results' },
    },
  });
  const tunnels = values.tunnels!.split(',').map((t) => t.trim()) as Tunnel[];
  for (const t of tunnels) if (!TUNNELS.includes(t)) throw new Error(`--tunnels: unknown "${t}" (known: ${TUNNELS.join(', ')})`);
  const runs = Number(values.runs);
  const seconds = Number(values.seconds);
  const log = (m: string) => process.stderr.write(`[perf] ${m}\n`);

  const res: Partial<Record<Tunnel, Sample>> = {};
  for (const t of tunnels) res[t] = await measure(t, runs, seconds, log);

  const g = (x: number) => (x / 1e9).toFixed(2);
  const rows = tunnels.map((t) => {
    const s = res[t]!;
    return `| ${t} | ${g(median(s.tcpBps))} (${g(Math.min(...s.tcpBps))}–${g(Math.max(...s.tcpBps))}) | ${median(s.retransmits)} | ${(median(s.udp64Pps) / 1e3).toFixed(0)} | ${median(s.rttP50Ms).toFixed(3)} / ${median(s.rttP99Ms).toFixed(3)} | ${OVERHEAD[t]} | ${s.mtu} | ${s.maxRssBytes ? (s.maxRssBytes / 2 ** 20).toFixed(0) : '–'} |`;
  });
  const date = new Date().toISOString().slice(0, 10);
  const md = [
    `Measured ${date} on this machine (2 cores), a 2-node netns lab per tunnel, pod to pod, ${runs} runs of ${seconds} s, median (min–max):`,
    '',
    '| tunnel | TCP 1 stream Gbit/s | TCP retransmits | 64-byte UDP delivered kpps | idle RTT p50 / p99 ms | header bytes | pod MTU | weft RSS MiB |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  process.stdout.write(md + '\n');
  await fs.mkdir(values.out!, { recursive: true });
  await fs.writeFile(path.join(values.out!, 'backends.md'), md + '\n');
  await fs.writeFile(path.join(values.out!, 'backends.json'), JSON.stringify({ date, runs, seconds, results: res }, null, 2) + '\n');
}

main().catch((e) => {
  process.stderr.write(`perf: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
