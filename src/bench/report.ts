// The bench's Markdown: the table people paste into a slide or an issue, stating how it was
// measured above it (date, command, machine, runs) so the figures are never separated from
// their conditions.
import type { BenchResults, Stat, TunnelResult } from './types';

/** "median (min–max)" with the given formatter; just the median when there was one sample. */
export function fmtStat(s: Stat, f: (x: number) => string): string {
  if (s.samples.length < 2) return f(s.median);
  return `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

const gbit = (x: number): string => (x / 1e9).toFixed(2);
const kpps = (x: number): string => (x / 1e3).toFixed(0);
const usec = (x: number): string => (x * 1000).toFixed(0);
const secPerGb = (x: number): string => x.toFixed(2);

export function header(r: BenchResults): string {
  const o = r.options;
  const m = r.machine;
  return [
    `weft bench, ${r.date.slice(0, 10)}: \`${r.command}\``,
    '',
    `${m.cpus} CPUs (${m.cpuModel}), Linux ${m.kernel}, Node ${m.node}, ${m.iperf3}. Pod to pod across a 2-node netns lab, a fresh lab per data plane; ` +
      `${o.runs} run${o.runs > 1 ? 's' : ''} of ${o.seconds} s per test${o.runs > 1 ? ', median (min–max)' : ''}; RTT from ${o.pings} idle pings; ` +
      'CPU: seconds per GB delivered in the 1-stream test (tunnel: its processes; host: all CPUs busy).',
  ].join('\n');
}

export function mainTable(rs: readonly TunnelResult[]): string {
  const rows = rs.map((t) =>
    [
      t.tunnel,
      fmtStat(t.tcp1Bps, gbit),
      fmtStat(t.tcp4Bps, gbit),
      fmtStat(t.udp64Pps, kpps),
      `${usec(t.rttP50Ms.median)} / ${usec(t.rttP99Ms.median)}`,
      t.tunnelCpuSecPerGB ? fmtStat(t.tunnelCpuSecPerGB, secPerGb) : '– (kernel)',
      fmtStat(t.hostCpuSecPerGB, secPerGb),
      String(t.headerBytes),
      String(t.mtu),
    ].join(' | '),
  );
  return [
    '| data plane | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | 64 B UDP delivered kpps | RTT p50 / p99 µs | tunnel CPU s/GB | host CPU s/GB | header bytes | MTU |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|',
    ...rows.map((r) => `| ${r} |`),
  ].join('\n');
}

export function scalingTable(rs: readonly TunnelResult[]): string {
  const streams = [...new Set(rs.flatMap((t) => t.scaling.map((p) => p.streams)))].sort((a, b) => a - b);
  if (streams.length === 0) return '';
  const rows = rs.map((t) => {
    const cells = streams.map((n) => {
      const p = t.scaling.find((x) => x.streams === n);
      return p ? fmtStat(p.bps, gbit) : '–';
    });
    return `| ${t.tunnel} | ${cells.join(' | ')} |`;
  });
  return [`| TCP Gbit/s by parallel streams | ${streams.map((n) => `${n}`).join(' | ')} |`, `|---|${streams.map(() => '--:').join('|')}|`, ...rows].join('\n');
}

/** weft's rows: packets moved per system call in the 1-stream test (1.0 everywhere without offloads). */
export function syscallTable(rs: readonly TunnelResult[]): string {
  const weft = rs.filter((t) => t.perSyscall);
  if (weft.length === 0) return '';
  const f = (x: number) => x.toFixed(1);
  return [
    '| packets per system call, 1 stream | TUN read (sender) | TUN write (receiver) | socket message sent |',
    '|---|--:|--:|--:|',
    ...weft.map((t) => `| ${t.tunnel} | ${f(t.perSyscall!.tunRead)} | ${f(t.perSyscall!.tunWrite)} | ${f(t.perSyscall!.socketSend)} |`),
  ].join('\n');
}

/** Idle RTT beside the CPU the tunnel processes spent while it was measured (what busy polling trades). */
export function rttCpuTable(rs: readonly TunnelResult[]): string {
  const rows = rs.filter((t) => t.rttTunnelCpuPct);
  if (rows.length === 0) return '';
  return [
    '| idle RTT and its CPU | RTT p50 / p99 µs | tunnel CPU while pinging, % of a CPU |',
    '|---|--:|--:|',
    ...rows.map((t) => `| ${t.tunnel} | ${usec(t.rttP50Ms.median)} / ${usec(t.rttP99Ms.median)} | ${fmtStat(t.rttTunnelCpuPct!, (x) => x.toFixed(1))} |`),
  ].join('\n');
}

export function formatMarkdown(r: BenchResults): string {
  const parts = [header(r), '', mainTable(r.results)];
  const sc = scalingTable(r.results);
  if (sc) parts.push('', sc);
  const sys = syscallTable(r.results);
  if (sys) parts.push('', sys);
  const idle = rttCpuTable(r.results);
  if (idle) parts.push('', idle);
  return parts.join('\n') + '\n';
}
