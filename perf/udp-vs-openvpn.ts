// Issue-2 benchmark: weft's udp backend against OpenVPN without crypto, the reference
// userspace TUN/UDP tunnel, on the same 2-node netns lab, in one run.
//
// Both tunnels carry the same pod-to-pod traffic: OpenVPN runs between the two node
// namespaces and, while it is measured, a /24 route per remote pod subnet (more specific
// than weft's /16) steers pod traffic into its TUN instead of weft0. Same pods, same bridge,
// same MTU (1472); only the tunnel differs. Runs are interleaved so drift hits both alike.
//
//   node dist/perf/udp-vs-openvpn.js [--runs 3] [--seconds 5] [--out perf/results]
import { parseArgs } from 'node:util';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  daemonStatus,
  iperf3Pair,
  labDown,
  labExec,
  labUp,
  mustReadState,
  readSubnetEnv,
  networkOf,
  type LabState,
} from '../src/lab';

const PREFIX = 'weft-perf-';
const OVPN_DEV = 'ovpn0';
const OVPN_PORT = 1194;

interface Sample {
  tcpBps: number[];
  retransmits: number[];
  udp64Pps: number[];
  rttP50Ms: number[];
  rttP99Ms: number[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function rtt(prefix: string, dst: string): Promise<{ p50: number; p99: number; n: number }> {
  // 300 echo requests 10 ms apart: enough for a p99 that is more than the single worst sample.
  const v = await labExec(prefix, 'n1/p1', ['ping', '-n', '-c', '300', '-i', '0.01', '-W', '1', dst], { timeoutMs: 30_000 });
  const times = [...v.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (times.length < 250) throw new Error(`ping to ${dst}: only ${times.length}/300 replies`);
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99), n: times.length };
}

/** Delivered 64-byte UDP datagrams per second: iperf3 floods (-b 0), the receiver's count decides. */
async function udp64(prefix: string, seconds: number): Promise<number> {
  const st = mustReadState(prefix);
  const dst = st.pods.find((p) => p.node === 'n2')!.ip;
  const server = labExec(prefix, 'n2/p1', ['iperf3', '-s', '-1', '-p', '5202', '-J'], { timeoutMs: (seconds + 30) * 1000 });
  await new Promise((r) => setTimeout(r, 500));
  const c = await labExec(prefix, 'n1/p1', ['iperf3', '-c', dst, '-p', '5202', '-u', '-b', '0', '-l', '64', '-t', String(seconds), '-J'], {
    timeoutMs: (seconds + 20) * 1000,
  });
  const s = await server;
  // The server's own report counts what actually arrived.
  const j = JSON.parse(s.stdout) as { end?: { sum?: { packets?: number; lost_packets?: number; seconds?: number } } };
  const sum = j.end?.sum;
  if (!sum?.packets) throw new Error(`iperf3 udp: no server summary (client exit ${c.code}: ${c.stderr.slice(0, 200)})`);
  return (sum.packets - (sum.lost_packets ?? 0)) / (sum.seconds || seconds);
}

function subnetOf(st: LabState, node: string): string {
  const n = st.nodes.find((x) => x.name === node)!;
  const env = readSubnetEnv(n.subnetFile);
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
      const pidFile = path.join(st.dir, `openvpn-${e.node.name}.pid`);
      const pid = Number(await fs.readFile(pidFile, 'utf8').catch(() => '0'));
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* already gone */
        }
      }
    }
  };
  // Wait until the tunnel passes traffic between the node ends.
  for (let i = 0; i < 50; i++) {
    const p = await labExec(st.prefix, 'n1', ['ping', '-n', '-c', '1', '-W', '1', '10.98.0.2'], { timeoutMs: 5_000 });
    if (p.code === 0) return stop;
    await new Promise((r) => setTimeout(r, 200));
  }
  await stop();
  throw new Error('openvpn tunnel did not come up');
}

async function routeVia(st: LabState, dev: string | null): Promise<void> {
  const s1 = subnetOf(st, 'n1');
  const s2 = subnetOf(st, 'n2');
  for (const [node, remote] of [['n1', s2], ['n2', s1]] as const) {
    const argv = dev ? ['ip', 'route', 'replace', remote, 'dev', dev] : ['ip', 'route', 'del', remote, 'dev', OVPN_DEV];
    const r = await labExec(st.prefix, node, argv, { timeoutMs: 5_000 });
    if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${node}: ${r.stderr}`);
    if (dev) await labExec(st.prefix, node, ['sysctl', '-qw', `net.ipv4.conf.${dev}.rp_filter=0`], { timeoutMs: 5_000 });
  }
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '5' },
      out: { type: 'string', default: 'perf/results' },
    },
  });
  const runs = Number(values.runs);
  const seconds = Number(values.seconds);
  const log = (m: string) => process.stderr.write(`[perf] ${m}\n`);

  await labDown(PREFIX).catch(() => undefined);
  log('forming a 2-node lab (udp backend)');
  await labUp({ prefix: PREFIX, nodes: 2, pods: 1, backend: 'udp', log });
  const st = mustReadState(PREFIX);
  const dst = st.pods.find((p) => p.node === 'n2')!.ip;
  let stopVpn: (() => Promise<void>) | undefined;
  try {
    stopVpn = await startOpenVpn(st);
    const res: Record<'weft-udp' | 'openvpn', Sample> = {
      'weft-udp': { tcpBps: [], retransmits: [], udp64Pps: [], rttP50Ms: [], rttP99Ms: [] },
      openvpn: { tcpBps: [], retransmits: [], udp64Pps: [], rttP50Ms: [], rttP99Ms: [] },
    };
    const daemonPids = st.nodes.map((n) => n.pid);
    let maxRss = 0;
    let gcBefore = 0;
    let gcAfter = 0;
    let pktsBefore = 0;
    let pktsAfter = 0;
    const gcAndPackets = async () => {
      let gc = 0;
      let pkts = 0;
      for (const n of st.nodes) {
        const s = (await daemonStatus(st, n.name)) as { runtime?: { minorGc: number; majorGc: number }; counters?: { txPackets: number; rxPackets: number } };
        gc += (s.runtime?.minorGc ?? 0) + (s.runtime?.majorGc ?? 0);
        pkts += (s.counters?.txPackets ?? 0) + (s.counters?.rxPackets ?? 0);
      }
      return { gc, pkts };
    };

    for (let r = 0; r < runs; r++) {
      for (const tunnel of ['weft-udp', 'openvpn'] as const) {
        await routeVia(st, tunnel === 'openvpn' ? OVPN_DEV : null).catch((e) => {
          if (tunnel === 'openvpn') throw e;
        });
        // Latency first, on an idle tunnel: after a flood the daemon's heap and the kernel's
        // queues are still settling, which measures the previous test, not this one.
        const t = await rtt(PREFIX, dst);
        res[tunnel].rttP50Ms.push(t.p50);
        res[tunnel].rttP99Ms.push(t.p99);
        log(`run ${r + 1}/${runs}: ${tunnel} TCP ${seconds}s`);
        let sampler: NodeJS.Timeout | undefined;
        if (tunnel === 'weft-udp') {
          const g = await gcAndPackets();
          gcBefore += g.gc;
          pktsBefore += g.pkts;
          sampler = setInterval(() => {
            for (const pid of daemonPids) maxRss = Math.max(maxRss, rssOf(pid));
          }, 200);
        }
        const tcp = await iperf3Pair(PREFIX, 'n1/p1', 'n2/p1', { seconds });
        if (sampler) {
          clearInterval(sampler);
          const g = await gcAndPackets();
          gcAfter += g.gc;
          pktsAfter += g.pkts;
        }
        if (!tcp.ok) throw new Error(`${tunnel} iperf3: ${tcp.error}`);
        res[tunnel].tcpBps.push(tcp.bitsPerSecond);
        res[tunnel].retransmits.push(tcp.retransmits ?? 0);
        log(`run ${r + 1}/${runs}: ${tunnel} UDP 64-byte flood ${seconds}s`);
        res[tunnel].udp64Pps.push(await udp64(PREFIX, seconds));
        if (tunnel === 'openvpn') await routeVia(st, null);
      }
    }

    const gcPerMillion = ((gcAfter - gcBefore) / Math.max(1, pktsAfter - pktsBefore)) * 1e6;
    const row = (name: string, s: Sample) =>
      `| ${name} | ${(median(s.tcpBps) / 1e9).toFixed(2)} (${(Math.min(...s.tcpBps) / 1e9).toFixed(2)}–${(Math.max(...s.tcpBps) / 1e9).toFixed(2)}) | ${median(s.retransmits)} | ${(median(s.udp64Pps) / 1e3).toFixed(0)} | ${median(s.rttP50Ms).toFixed(3)} / ${median(s.rttP99Ms).toFixed(3)} |`;
    const ratio = median(res['weft-udp'].tcpBps) / median(res.openvpn.tcpBps);
    const date = new Date().toISOString().slice(0, 10);
    const md = [
      `Measured ${date} on this machine (2 cores), 2-node netns lab, pod to pod, ${runs} runs of ${seconds} s, median (min–max):`,
      '',
      '| tunnel | TCP 1 stream Gbit/s | TCP retransmits | 64-byte UDP delivered kpps (median) | idle RTT p50 / p99 ms (median of runs, 300 pings each) |',
      '|---|---|---|---|---|',
      row('weft udp', res['weft-udp']),
      row('OpenVPN, no crypto', res.openvpn),
      '',
      `weft/OpenVPN TCP throughput: ${ratio.toFixed(2)}×. weft daemon peak RSS under load: ${(maxRss / 2 ** 20).toFixed(1)} MiB. ` +
        `Garbage collections in both daemons during the weft TCP runs: ${gcAfter - gcBefore} over ${((pktsAfter - pktsBefore) / 1e6).toFixed(2)} M packets (${gcPerMillion.toFixed(2)} per million).`,
    ].join('\n');
    process.stdout.write(md + '\n');
    await fs.mkdir(values.out!, { recursive: true });
    await fs.writeFile(path.join(values.out!, 'udp-vs-openvpn.md'), md + '\n');
    await fs.writeFile(
      path.join(values.out!, 'udp-vs-openvpn.json'),
      JSON.stringify({ date, runs, seconds, results: res, ratio, maxRssBytes: maxRss, gc: gcAfter - gcBefore, packets: pktsAfter - pktsBefore }, null, 2) + '\n',
    );
  } finally {
    await stopVpn?.();
    await labDown(PREFIX);
  }
}

main().catch((e) => {
  process.stderr.write(`perf: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
