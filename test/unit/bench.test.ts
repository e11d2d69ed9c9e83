// weft bench's pure parts: argument parsing, summaries, /proc parsing, the progress bar and the
// Markdown. The measurements themselves run in test/integration/bench.test.ts.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { median, quantile, stat } from '../../src/bench/stats';
import { parseHostTicks, parseProcStatTicks } from '../../src/bench/measure';
import { Progress, fmtDuration } from '../../src/bench/progress';
import { fmtStat, formatMarkdown, mainTable, scalingTable } from '../../src/bench/report';
import { parseBenchArgs, parseTunnels } from '../../src/cli/bench';
import { plannedSeconds } from '../../src/bench/run';
import { SPECS } from '../../src/bench/tunnels';
import { TUNNELS, type BenchResults, type Stat, type TunnelResult } from '../../src/bench/types';

const s = (...xs: number[]): Stat => stat(xs);

function row(tunnel: TunnelResult['tunnel'], bps: number[], over: Partial<TunnelResult> = {}): TunnelResult {
  return {
    tunnel,
    kind: tunnel.startsWith('kernel') ? 'kernel' : tunnel === 'openvpn' ? 'reference' : 'weft',
    description: 'x',
    headerBytes: 28,
    mtu: 1472,
    tcp1Bps: s(...bps),
    tcp4Bps: s(...bps.map((b) => b * 1.1)),
    retransmits: s(0),
    udp64Pps: s(150_000),
    rttP50Ms: s(0.061),
    rttP99Ms: s(0.25),
    tunnelCpuSecPerGB: tunnel.startsWith('kernel') ? null : s(3.456),
    hostCpuSecPerGB: s(5.5),
    scaling: [1, 2, 4, 8].map((n) => ({ streams: n, bps: s(...bps.map((b) => b * (1 + n / 10))) })),
    maxRssBytes: null,
    ...over,
  };
}

describe('stats', () => {
  it('median of odd and even counts, min and max', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(stat([5, 1, 9])).toEqual({ median: 5, min: 1, max: 9, samples: [5, 1, 9] });
  });
  it('quantile is nearest-rank: an actual sample, p99 of 300 is the 297th', () => {
    const xs = Array.from({ length: 300 }, (_, i) => i + 1);
    expect(quantile(xs, 0.99)).toBe(297);
    expect(quantile(xs, 0.5)).toBe(150);
    expect(quantile([7], 0.99)).toBe(7);
    fc.assert(
      fc.property(fc.array(fc.double({ noNaN: true, min: -1e6, max: 1e6 }), { minLength: 1 }), fc.double({ min: 0, max: 1, noNaN: true }), (xs, q) => {
        const v = quantile(xs, q);
        expect(xs).toContain(v);
        // At least q of the samples are at or below it.
        expect(xs.filter((x) => x <= v).length).toBeGreaterThanOrEqual(Math.ceil(q * xs.length));
      }),
    );
  });
  it('refuses no samples and non-finite ones with a message', () => {
    expect(() => stat([])).toThrow(/no samples/);
    expect(() => stat([1, NaN])).toThrow(/not a finite/);
    expect(() => quantile([1], 1.5)).toThrow(/outside/);
  });
});

describe('/proc parsing', () => {
  it('reads utime + stime after the command name, even one with spaces and parentheses', () => {
    // Fields from 3 on: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    const line = '4242 (node (weft) x) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 0 0 20 0 11 0 100 0 0';
    expect(parseProcStatTicks(line)).toBe(1234 + 567);
    expect(() => parseProcStatTicks('garbage')).toThrow(/stat/);
  });
  it('host busy ticks leave out idle and iowait', () => {
    const t = parseHostTicks('cpu  100 5 50 1000 20 3 7 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n');
    expect(t.total).toBe(100 + 5 + 50 + 1000 + 20 + 3 + 7 + 0);
    expect(t.busy).toBe(100 + 5 + 50 + 3 + 7);
    expect(() => parseHostTicks('intr 1 2 3')).toThrow(/cpu/);
  });
});

describe('arguments', () => {
  it('defaults: every data plane, 3 runs of 5 s, streams 1,2,4,8, 300 pings', () => {
    const p = parseBenchArgs([]);
    if (p === 'help') throw new Error('help');
    expect(p.options).toEqual({ tunnels: [...TUNNELS], runs: 3, seconds: 5, streams: [1, 2, 4, 8], pings: 300, quick: false });
    expect(p.prefix).toBe('weft-bench-');
  });
  it('--quick shortens everything, and explicit flags still win', () => {
    const p = parseBenchArgs(['--quick', '--runs', '2']);
    if (p === 'help') throw new Error('help');
    expect(p.options).toMatchObject({ runs: 2, seconds: 2, streams: [1, 4], pings: 100, quick: true });
  });
  it('--backends takes names and weft short names, drops repeats, keeps the canonical order', () => {
    expect(parseTunnels('openvpn,udp,kernel-vxlan,weft-udp')).toEqual(['kernel-vxlan', 'weft-udp', 'openvpn']);
    expect(parseTunnels('host-gw,kernel-host-gw')).toEqual(['kernel-host-gw', 'weft-host-gw']);
    expect(() => parseTunnels('udp,wireguard')).toThrow(/unknown "wireguard".*known: kernel-host-gw/);
    expect(() => parseTunnels(' , ')).toThrow(/empty/);
  });
  it('--offload-compare and --offload-mechanisms pick their sets; only one set at a time', () => {
    const tunnels = (argv: string[]) => {
      const p = parseBenchArgs(argv);
      if (p === 'help') throw new Error('help');
      return p.options.tunnels;
    };
    const compare = tunnels(['--offload-compare']);
    expect(compare).toEqual(expect.arrayContaining([...TUNNELS, 'weft-udp-no-offload', 'weft-vxlan-no-offload', 'weft-ipip-no-offload', 'weft-udp-busy-poll']));
    expect(compare.filter((t) => t.startsWith('weft-udp-offload-'))).toEqual([]);
    // Every combination of tun, gso and gro: all (weft-udp), none (-no-offload) and the six between.
    expect(tunnels(['--offload-mechanisms'])).toEqual([
      'kernel-vxlan',
      'weft-udp',
      'weft-udp-no-offload',
      'weft-udp-offload-tun',
      'weft-udp-offload-gso',
      'weft-udp-offload-gro',
      'weft-udp-offload-tun-gso',
      'weft-udp-offload-tun-gro',
      'weft-udp-offload-gso-gro',
      'openvpn',
    ]);
    expect(SPECS['weft-udp-offload-tun-gro'].daemonArgs).toEqual(['--offload', 'tun,gro']);
    expect(SPECS['weft-udp-offload-gso'].daemonArgs).toEqual(['--offload', 'gso']);
    expect(() => parseBenchArgs(['--offload-compare', '--offload-mechanisms'])).toThrow('give one of --backends, --offload-compare and --offload-mechanisms');
    expect(() => parseBenchArgs(['--backends', 'udp', '--offload-compare'])).toThrow('give one of');
  });
  it('bad numbers and stream lists get one clear line', () => {
    expect(() => parseBenchArgs(['--runs', '0'])).toThrow(/--runs must be an integer from 1/);
    expect(() => parseBenchArgs(['--seconds', '2.5'])).toThrow(/--seconds/);
    expect(() => parseBenchArgs(['--streams', '2,8'])).toThrow(/must include 1 and 4/);
    expect(() => parseBenchArgs(['--pings', '5'])).toThrow(/at least 10/);
    expect(() => parseBenchArgs(['--prefix', 'Bad Prefix'])).toThrow();
    expect(() => parseBenchArgs(['--frobnicate'])).toThrow(/frobnicate/);
    expect(parseBenchArgs(['-h'])).toBe('help');
  });
  it('--quick is planned to fit in under 2 minutes for all seven data planes', () => {
    const p = parseBenchArgs(['--quick']);
    if (p === 'help') throw new Error('help');
    expect(plannedSeconds(p.options)).toBeLessThan(120);
    const full = parseBenchArgs([]);
    if (full === 'help') throw new Error('help');
    expect(plannedSeconds(full.options)).toBeGreaterThan(plannedSeconds(p.options) * 3);
  });
});

describe('progress bar', () => {
  it('to a pipe: one line per step, percent by planned time, time left', () => {
    const lines: string[] = [];
    let now = 0;
    const p = new Progress(100, { isTTY: false, write: (x: string) => lines.push(x) }, () => now);
    p.step('lab');
    p.advance(25);
    now = 25_000;
    p.step('tcp');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\[-{24}\]\s+0%/);
    expect(lines[1]).toMatch(/^\[#{6}-{18}\]\s+25%\s+1m15s left\s+tcp\n$/);
    expect(lines.join('')).not.toContain('\x1b');
  });
  it('on a terminal: redraws one line, cut to the width, notes above it', () => {
    const out: string[] = [];
    const p = new Progress(10, { isTTY: true, columns: 40, write: (x: string) => out.push(x) }, () => 0);
    p.step('a step with a very long label that does not fit in forty columns');
    expect(out[0].startsWith('\r\x1b[K')).toBe(true);
    expect(out[0].length - 4).toBeLessThanOrEqual(39);
    p.note('warning');
    expect(out.slice(1).join('')).toContain('warning\n');
    expect(out.at(-1)).toBe(out[0]); // the bar comes back under the note
    p.advance(1000);
    expect(p.line()).toMatch(/100%/);
  });
  it('durations', () => {
    expect(fmtDuration(59.4)).toBe('59s');
    expect(fmtDuration(61)).toBe('1m01s');
  });
});

describe('Markdown', () => {
  const results: BenchResults = {
    date: '2026-11-23T10:00:00.000Z',
    command: 'weft bench --quick',
    machine: { cpus: 2, cpuModel: 'AMD EPYC', kernel: '6.1', node: 'v20.0.0', iperf3: 'iperf 3.12' },
    options: { tunnels: ['kernel-vxlan', 'weft-udp'], runs: 3, seconds: 5, streams: [1, 2, 4, 8], pings: 300, quick: false },
    results: [row('kernel-vxlan', [11e9, 10e9, 12e9], { headerBytes: 50, mtu: 1450 }), row('weft-udp', [0.94e9, 0.9e9, 1.01e9])],
    elapsedSec: 600,
  };
  it('one row per data plane with median (min–max), µs RTT, and no tunnel CPU for the kernel', () => {
    const t = mainTable(results.results).split('\n');
    expect(t).toHaveLength(4);
    expect(t[2]).toBe('| kernel-vxlan | 11.00 (10.00–12.00) | 12.10 (11.00–13.20) | 150 | 61 / 250 | – (kernel) | 5.50 | 50 | 1450 |');
    expect(t[3]).toMatch(/^\| weft-udp \| 0\.94 \(0\.90–1\.01\) \| .* \| 3\.46 \| 5\.50 \| 28 \| 1472 \|$/);
    for (const l of t) expect(l.split('|')).toHaveLength(11);
  });
  it('one sample shows just the figure', () => {
    expect(fmtStat(s(2e9), (x) => (x / 1e9).toFixed(2))).toBe('2.00');
    expect(fmtStat(s(1, 3, 2), String)).toBe('2 (1–3)');
  });
  it('the scaling table has a column per stream count, a dash where a point is missing', () => {
    const rs = [results.results[0], { ...results.results[1], scaling: results.results[1].scaling.filter((p) => p.streams !== 8) }];
    const t = scalingTable(rs).split('\n');
    expect(t[0]).toBe('| TCP Gbit/s by parallel streams | 1 | 2 | 4 | 8 |');
    expect(t[3].endsWith('| – |')).toBe(true);
  });
  it('states the date, the command and the conditions above the tables', () => {
    const md = formatMarkdown(results);
    expect(md.split('\n')[0]).toBe('weft bench, 2026-11-23: `weft bench --quick`');
    expect(md).toContain('3 runs of 5 s per test, median (min–max)');
    expect(md).toContain('2 CPUs (AMD EPYC)');
  });
});
