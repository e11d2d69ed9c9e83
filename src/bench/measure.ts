// The measurements `weft bench` makes between two pods of a lab: each one a real tool on real
// traffic (ping, iperf3, tcpdump), read back from its own output, plus the CPU accounting the
// kernel keeps in /proc. Nothing here knows which data plane carries the packets.
import { readFileSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { iperf3Pair, labExec, targetNs } from '../lab';
import { waitTcpListening } from '../lab/traffic';
import { run, sleep } from '../lab/process';
import { networkLayer, PcapReader } from '../packet/pcap';
import { quantile } from './stats';

let clkTck = 0;

/** Clock ticks per second of the times in /proc/PID/stat (sysconf(_SC_CLK_TCK), 100 on Linux). */
export async function clockTicks(): Promise<number> {
  if (clkTck) return clkTck;
  const r = await run('getconf', ['CLK_TCK'], { timeoutMs: 5_000 });
  const n = Number(r.stdout.trim());
  clkTck = r.code === 0 && n > 0 ? n : 100;
  return clkTck;
}

/**
 * User + system CPU time of one process, all its threads together, in clock ticks: fields 14
 * and 15 of /proc/PID/stat (proc(5)), counted after the ")" that ends the command name, which
 * may itself contain spaces and parentheses. 0 when the process is gone.
 */
export function parseProcStatTicks(text: string): number {
  const end = text.lastIndexOf(')');
  if (end < 0) throw new Error('not a /proc/PID/stat line');
  // After ") " come field 3 (state) onwards: utime is field 14, so index 11 of this list.
  const f = text
    .slice(end + 2)
    .trim()
    .split(/\s+/);
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('/proc/PID/stat: no utime/stime fields');
  return utime + stime;
}

export function processTicks(pids: readonly number[]): number {
  let t = 0;
  for (const pid of pids) {
    try {
      t += parseProcStatTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      // Exited: its time is lost to us, which the check that tunnel processes stay alive catches.
    }
  }
  return t;
}

/**
 * Busy and total clock ticks of the whole machine from the "cpu" line of /proc/stat (proc(5)):
 * user nice system idle iowait irq softirq steal ...; busy is everything but idle and iowait.
 * guest time is already inside user, so it is not added twice.
 */
export function parseHostTicks(text: string): { busy: number; total: number } {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('/proc/stat: no "cpu" line');
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (v.length < 5 || v.some((x) => !Number.isFinite(x))) throw new Error('/proc/stat: malformed "cpu" line');
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - v[3] - v[4], total };
}

export function hostTicks(): { busy: number; total: number } {
  return parseHostTicks(readFileSync('/proc/stat', 'utf8'));
}

/** The gap between the RTT test's echo requests: long enough for every process on the path to go idle. */
export const RTT_PING_INTERVAL_MS = 10;

/**
 * Idle round trips (`count` echo requests RTT_PING_INTERVAL_MS apart from `from` to `dst`),
 * milliseconds p50 and p99, and the CPU the tunnel processes spent meanwhile, as a percentage of
 * one CPU: what busy polling (--busy-poll-us) costs is read beside what it buys.
 */
export async function rtt(
  prefix: string,
  from: string,
  dst: string,
  count: number,
  tunnelPids: readonly number[] = [],
): Promise<{ p50: number; p99: number; tunnelCpuPct: number }> {
  const hz = await clockTicks();
  const ticks0 = processTicks(tunnelPids);
  const t0 = performance.now();
  const v = await labExec(prefix, from, ['ping', '-n', '-c', String(count), '-i', String(RTT_PING_INTERVAL_MS / 1000), '-W', '1', dst], {
    timeoutMs: count * 100 + 10_000,
  });
  const times = [...v.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  // A few lost echoes do not spoil a latency figure; many mean the tunnel is not working.
  if (times.length < count * 0.9) throw new Error(`ping ${from} → ${dst}: ${times.length}/${count} replies`);
  const wallSec = (performance.now() - t0) / 1000;
  const tunnelCpuPct = wallSec > 0 ? ((processTicks(tunnelPids) - ticks0) / hz / wallSec) * 100 : 0;
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99), tunnelCpuPct };
}

export interface TcpSample {
  bps: number;
  bytes: number;
  retransmits: number;
  /** CPU seconds of the given tunnel processes during the test. */
  tunnelCpuSec: number;
  /** Busy CPU seconds of the whole machine (all CPUs) during the test. */
  hostCpuSec: number;
  argv: string;
}

/** One iperf3 TCP test of `streams` parallel streams, with the CPU the tunnel processes and the machine spent on it. */
export async function tcp(prefix: string, from: string, to: string, seconds: number, streams: number, tunnelPids: readonly number[]): Promise<TcpSample> {
  const hz = await clockTicks();
  const p0 = processTicks(tunnelPids);
  const h0 = hostTicks();
  const r = await iperf3Pair(prefix, from, to, { seconds, streams: streams > 1 ? streams : undefined });
  const h1 = hostTicks();
  const p1 = processTicks(tunnelPids);
  if (!r.ok) throw new Error(`iperf3 ${from} → ${to} (${streams} stream${streams > 1 ? 's' : ''}): ${r.error}`);
  return {
    bps: r.bitsPerSecond,
    bytes: r.receivedBytes,
    retransmits: r.retransmits ?? 0,
    tunnelCpuSec: (p1 - p0) / hz,
    hostCpuSec: (h1.busy - h0.busy) / hz,
    argv: `iperf3 -c ${r.dst} -t ${seconds}${streams > 1 ? ` -P ${streams}` : ''}`,
  };
}

/**
 * 64-byte UDP datagrams per second delivered: iperf3 sends as fast as it can (-b 0) and the
 * receiving server's own count of what arrived decides, not what the client managed to send.
 */
export async function udp64(prefix: string, from: string, to: string, dst: string, seconds: number, port = 5202): Promise<number> {
  const server = labExec(prefix, to, ['iperf3', '-s', '-1', '-p', String(port), '-J'], { timeoutMs: (seconds + 30) * 1000 });
  try {
    if (!(await waitTcpListening(targetNs(prefix, to), port))) throw new Error(`iperf3 server in ${to} not listening on ${port} after 5 s`);
    const c = await labExec(prefix, from, ['iperf3', '-c', dst, '-p', String(port), '-u', '-b', '0', '-l', '64', '-t', String(seconds), '-J'], {
      timeoutMs: (seconds + 20) * 1000,
    });
    const s = await server;
    let sum: { packets?: number; lost_packets?: number; seconds?: number } | undefined;
    try {
      sum = (JSON.parse(s.stdout) as { end?: { sum?: typeof sum } }).end?.sum;
    } catch {
      sum = undefined;
    }
    if (!sum?.packets)
      throw new Error(`iperf3 -u ${from} → ${to}: no receiver summary (client exit ${c.code}: ${(c.stderr || c.stdout).trim().slice(0, 200)})`);
    return (sum.packets - (sum.lost_packets ?? 0)) / (sum.seconds || seconds);
  } finally {
    await server.catch(() => undefined);
  }
}

/** The ICMP echo payload the overhead capture sends: its IPv4 packet is 20 + 8 + this. */
const PROBE_PAYLOAD = 1000;

/**
 * Bytes the underlay carries per packet beyond the pod's own IPv4 packet, read off the wire:
 * tcpdump on the receiving node's underlay interface captures what arrives from the sending
 * node while the pod pings with a known packet size, and the outer IPv4 total length minus the
 * inner one is the overhead (an inner Ethernet header inside VXLAN counts, an outer one on the
 * underlay does not: every data plane pays that alike).
 */
export async function headerOverhead(
  prefix: string,
  opts: { from: string; dst: string; captureNode: string; iface: string; srcMac: string; dir: string },
): Promise<number> {
  const file = path.join(opts.dir, 'overhead.pcap');
  const inner = 20 + 8 + PROBE_PAYLOAD;
  // Filtered by the sending node's MAC, not an IP address: without encapsulation (host-gw) the
  // packet on the underlay carries the pods' addresses. `greater` is frame length: every
  // encapsulation of the probe is at least the inner packet.
  const cap = labExec(
    prefix,
    opts.captureNode,
    ['timeout', '10', 'tcpdump', '-i', opts.iface, '-nn', '-U', '-c', '3', '-w', file, 'ether', 'src', opts.srcMac, 'and', 'greater', String(inner)],
    {
      timeoutMs: 15_000,
    },
  );
  try {
    // tcpdump says "listening" on stderr, which labExec only returns at exit: give it a moment,
    // and send more probes than it waits for.
    await sleep(700);
    await labExec(prefix, opts.from, ['ping', '-n', '-c', '6', '-i', '0.2', '-s', String(PROBE_PAYLOAD), opts.dst], { timeoutMs: 10_000 });
  } finally {
    await cap;
  }
  const buf = await fs.readFile(file).catch(() => Buffer.alloc(0));
  if (buf.length === 0) throw new Error(`overhead capture on ${opts.captureNode}/${opts.iface}: tcpdump wrote nothing`);
  const reader = new PcapReader(buf);
  const seen: number[] = [];
  for (let rec = reader.next(); rec; rec = reader.next()) {
    const nl = networkLayer(reader.header.linktype, rec.data, reader.header.fcsBytes);
    if (typeof nl === 'string' || nl.ethertype !== 0x0800 || nl.len < 4) continue;
    const outerLen = (rec.data[nl.off + 2] << 8) | rec.data[nl.off + 3];
    seen.push(outerLen - inner);
  }
  await fs.rm(file, { force: true });
  if (seen.length === 0) throw new Error(`overhead capture on ${opts.captureNode}/${opts.iface}: no IPv4 packet from ${opts.srcMac} of the probe's size`);
  // Every probe crosses the same way; differing sizes would mean something else was captured.
  if (new Set(seen).size !== 1) throw new Error(`overhead capture: probes arrived with different overheads (${seen.join(', ')} bytes)`);
  return seen[0];
}

/**
 * The largest IPv4 packet that gets from `from` to `dst` and back with DF set (ping -M do), by
 * bisection between 68 (RFC 791's minimum MTU) and `upTo`. This is the MTU the pod actually has
 * end to end: its interface's, or less where the path does not carry what the interface promises.
 */
export async function pathMtu(prefix: string, from: string, dst: string, upTo: number): Promise<number> {
  const ok = async (mtu: number): Promise<boolean> => {
    const r = await labExec(prefix, from, ['ping', '-n', '-M', 'do', '-c', '1', '-W', '1', '-s', String(mtu - 28), dst], { timeoutMs: 5_000 });
    return r.code === 0;
  };
  if (await ok(upTo)) return upTo;
  let lo = 68;
  let hi = upTo; // lo passes (checked below), hi fails
  if (!(await ok(lo))) throw new Error(`path MTU ${from} → ${dst}: even a ${lo}-byte ping does not cross`);
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (await ok(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}
