// `weft bench` end to end: for each data plane a fresh 2-node lab with one pod per node, the
// data plane set up in it, every measurement repeated `runs` times, the lab torn down. The
// order inside a run is fixed and deliberate: latency first on an idle tunnel (right after a
// flood, queues and the daemon's heap are still settling), then TCP by stream count, then the
// small-packet flood last because it leaves the most behind.
import * as os from 'node:os';
import { labDown, labUp, mustReadState } from '../lab';
import { rssBytes, run as runCmd } from '../lab/process';
import { linkInfo } from '../lab/netns';
import { headerOverhead, pathMtu, rtt, tcp, udp64, type TcpSample } from './measure';
import { checkPath, checkWeftCarried, perSyscall, setUp, SPECS, syscallCounters, type ActiveTunnel } from './tunnels';
import { stat } from './stats';
import type { BenchOptions, BenchResults, PerSyscall, Tunnel, TunnelResult } from './types';

/**
 * Expected seconds of each kind of step, for the progress bar's proportions and estimate: what
 * they took on a 2-CPU machine (a 2-node lab forms in about 1.6 s; kernel-vxlan's set-up and
 * the header/MTU probes take about 2 s).
 */
export function weights(o: Pick<BenchOptions, 'seconds' | 'pings'>) {
  return { lab: 3, probe: 2, rtt: o.pings * 0.011 + 0.2, tcp: o.seconds + 0.3, udp: o.seconds + 0.5, teardown: 0.5 };
}

/** The whole run's expected seconds. */
export function plannedSeconds(o: BenchOptions): number {
  const w = weights(o);
  const perRun = w.rtt + o.streams.length * w.tcp + w.udp;
  return o.tunnels.length * (w.lab + w.probe + o.runs * perRun + w.teardown);
}

export interface BenchHooks {
  step?(label: string): void;
  advance?(weight: number): void;
  signal?: AbortSignal;
}

function aborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new Error('interrupted');
}

async function machine(): Promise<BenchResults['machine']> {
  const cpus = os.cpus();
  const v = await runCmd('iperf3', ['--version'], { timeoutMs: 5_000 }).catch(() => ({ stdout: '' }));
  return {
    cpus: cpus.length,
    cpuModel: (cpus[0]?.model ?? 'unknown').replace(/\s+/g, ' ').trim(),
    kernel: os.release(),
    node: process.version,
    iperf3:
      v.stdout
        .split('\n')[0]
        .replace(/\s*\(.*\)\s*$/, '')
        .trim() || 'iperf3 (version unknown)',
  };
}

export async function runBench(o: BenchOptions & { prefix: string; command: string }, hooks: BenchHooks = {}): Promise<BenchResults> {
  const t0 = Date.now();
  const date = new Date().toISOString();
  const results: TunnelResult[] = [];
  for (const t of o.tunnels) {
    aborted(hooks.signal);
    results.push(await benchTunnel(t, o, hooks));
  }
  return { date, command: o.command, machine: await machine(), options: strip(o), results, elapsedSec: (Date.now() - t0) / 1000 };
}

function strip(o: BenchOptions): BenchOptions {
  return { tunnels: o.tunnels, runs: o.runs, seconds: o.seconds, streams: o.streams, pings: o.pings, quick: o.quick };
}

async function benchTunnel(tunnel: Tunnel, o: BenchOptions & { prefix: string }, hooks: BenchHooks): Promise<TunnelResult> {
  const w = weights(o);
  const spec = SPECS[tunnel];
  const step = (label: string) => hooks.step?.(`${tunnel}: ${label}`);
  const prefix = o.prefix;
  // A lab left under our prefix (a bench killed with SIGKILL) is ours to remove; labDown also
  // finds its namespaces and processes when the state file is gone.
  await labDown(prefix);
  let active: ActiveTunnel | undefined;
  // Interrupting tears the lab down at once: whatever was running in it fails, and the run
  // ends at the next step with everything gone.
  const onAbort = () => void labDown(prefix).catch(() => undefined);
  hooks.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    step(`forming a 2-node lab (weft backend ${spec.labBackend})`);
    await labUp({ prefix, nodes: 2, pods: 1, backend: spec.labBackend, daemonArgs: spec.daemonArgs, signal: hooks.signal });
    active = await setUp(tunnel, prefix);
    hooks.advance?.(w.lab);
    aborted(hooks.signal);

    const st = mustReadState(prefix);
    const from = 'n1/p1';
    const to = 'n2/p1';
    const dst = st.pods.find((p) => p.node === 'n2')!.ip;
    await checkPath(prefix, active, dst);

    step('header bytes and path MTU');
    const headerBytes = await headerOverhead(prefix, {
      from,
      dst,
      captureNode: 'n2',
      iface: st.nodes[1].iface,
      srcMac: (await linkInfo(st.nodes[0].ns, st.nodes[0].iface)).address,
      dir: st.dir,
    });
    const podMtu = (await linkInfo(st.pods.find((p) => p.name === from)!.ns, 'eth0')).mtu;
    const mtu = await pathMtu(prefix, from, dst, podMtu);
    hooks.advance?.(w.probe);

    const p50: number[] = [];
    const p99: number[] = [];
    const rttCpu: number[] = [];
    const byStreams = new Map<number, TcpSample[]>(o.streams.map((n) => [n, []]));
    const udp: number[] = [];
    const syscalls: PerSyscall[] = [];
    let maxRss = 0;
    const sampleRss = () => {
      for (const pid of active!.pids) maxRss = Math.max(maxRss, rssBytes(pid));
    };
    for (let r = 1; r <= o.runs; r++) {
      const runLabel = o.runs > 1 ? `run ${r}/${o.runs}, ` : '';
      aborted(hooks.signal);
      step(`${runLabel}RTT (${o.pings} pings)`);
      const t = await rtt(prefix, from, dst, o.pings, active.pids);
      p50.push(t.p50);
      p99.push(t.p99);
      rttCpu.push(t.tunnelCpuPct);
      hooks.advance?.(w.rtt);
      for (const n of o.streams) {
        aborted(hooks.signal);
        step(`${runLabel}TCP, ${n} stream${n > 1 ? 's' : ''}, ${o.seconds} s`);
        const timer = active.pids.length ? setInterval(sampleRss, 250) : undefined;
        const before = n === 1 ? await syscallCounters(prefix, tunnel) : null;
        try {
          byStreams.get(n)!.push(await tcp(prefix, from, to, o.seconds, n, active.pids));
        } finally {
          clearInterval(timer);
        }
        if (before) syscalls.push(perSyscall(before, (await syscallCounters(prefix, tunnel))!));
        hooks.advance?.(w.tcp);
      }
      aborted(hooks.signal);
      step(`${runLabel}64-byte UDP flood, ${o.seconds} s`);
      udp.push(await udp64(prefix, from, to, dst, o.seconds));
      hooks.advance?.(w.udp);
    }
    await checkPath(prefix, active, dst);
    await checkWeftCarried(prefix, tunnel, 1000);

    const one = byStreams.get(1)!;
    const perGb = (cpu: (s: TcpSample) => number) => stat(one.map((s) => cpu(s) / (s.bytes / 1e9)));
    return {
      tunnel,
      kind: spec.kind,
      description: spec.description,
      headerBytes,
      mtu,
      tcp1Bps: stat(one.map((s) => s.bps)),
      tcp4Bps: stat(byStreams.get(4)!.map((s) => s.bps)),
      retransmits: stat(one.map((s) => s.retransmits)),
      udp64Pps: stat(udp),
      rttP50Ms: stat(p50),
      rttP99Ms: stat(p99),
      tunnelCpuSecPerGB: active.pids.length ? perGb((s) => s.tunnelCpuSec) : null,
      hostCpuSecPerGB: perGb((s) => s.hostCpuSec),
      scaling: o.streams.map((n) => ({ streams: n, bps: stat(byStreams.get(n)!.map((s) => s.bps)) })),
      maxRssBytes: active.pids.length ? maxRss : null,
      perSyscall: syscalls.length ? medianPerSyscall(syscalls) : null,
      rttTunnelCpuPct: active.pids.length ? stat(rttCpu) : null,
    };
  } finally {
    hooks.signal?.removeEventListener('abort', onAbort);
    step('tearing the lab down');
    await active?.stop().catch(() => undefined);
    await labDown(prefix);
    hooks.advance?.(w.teardown);
  }
}

function medianPerSyscall(xs: PerSyscall[]): PerSyscall {
  return {
    tunRead: stat(xs.map((x) => x.tunRead)).median,
    tunWrite: stat(xs.map((x) => x.tunWrite)).median,
    socketSend: stat(xs.map((x) => x.socketSend)).median,
  };
}
