import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { escapeXml, formatGbit, niceTicks, renderOverviewSvg, renderScalingSvg, spreadLabels, svgToPng } from '../../src/bench/chart';
import type { BenchResults, Stat, Tunnel, TunnelKind, TunnelResult } from '../../src/bench/types';

// ---------------------------------------------------------------------------------------------
// Fixture: the shape of a real 2-CPU run (host-gw near 14 Gbit/s, the userspace tunnels near 1)

function stat(median: number, spread = 0.04): Stat {
  const samples = [median * (1 - spread), median, median * (1 + spread / 2)];
  return { median, min: samples[0], max: samples[2], samples };
}

const ROWS: Array<[Tunnel, TunnelKind, number, number, number, number[]]> = [
  // tunnel, kind, tcp1 bps, headerBytes, mtu, scaling medians (Gbit/s) at 1, 2, 4, 8 streams
  ['kernel-host-gw', 'kernel', 14.1e9, 0, 1500, [14.1, 15.4, 16.0, 15.7]],
  ['kernel-vxlan', 'kernel', 11.2e9, 50, 1450, [11.2, 12.5, 13.1, 12.8]],
  ['weft-host-gw', 'weft', 13.9e9, 0, 1500, [13.9, 15.1, 15.8, 15.5]],
  ['weft-udp', 'weft', 0.94e9, 28, 1472, [0.94, 1.21, 1.35, 1.3]],
  ['weft-vxlan', 'weft', 1.0e9, 50, 1450, [1.0, 1.26, 1.4, 1.37]],
  ['weft-ipip', 'weft', 1.07e9, 20, 1480, [1.07, 1.31, 1.46, 1.42]],
  ['openvpn', 'reference', 0.68e9, 28, 1472, [0.68, 0.7, 0.72, 0.71]],
];
const STREAMS = [1, 2, 4, 8];

function tunnelResult([tunnel, kind, tcp1, headerBytes, mtu, scaling]: (typeof ROWS)[number]): TunnelResult {
  return {
    tunnel,
    kind,
    description: `${tunnel} between two network namespaces`,
    headerBytes,
    mtu,
    tcp1Bps: stat(tcp1),
    tcp4Bps: stat(scaling[2] * 1e9, 0.06),
    retransmits: stat(12),
    udp64Pps: stat(180_000),
    rttP50Ms: stat(0.08),
    rttP99Ms: stat(0.2),
    tunnelCpuSecPerGB: kind === 'kernel' ? null : stat(1.9),
    hostCpuSecPerGB: stat(2.4),
    scaling: scaling.map((g, i) => ({ streams: STREAMS[i], bps: stat(g * 1e9, 0.05) })),
    maxRssBytes: kind === 'kernel' ? null : 60e6,
  };
}

function fixture(): BenchResults {
  return {
    date: '2026-11-23T03:40:12.345Z',
    command: 'weft bench --runs 3 --seconds 10',
    machine: { cpus: 2, cpuModel: 'Intel Xeon (2 vCPU)', kernel: '6.1.0-27-amd64', node: 'v20.18.0', iperf3: 'iperf 3.12' },
    options: { tunnels: ROWS.map((r) => r[0]), runs: 3, seconds: 10, streams: STREAMS, pings: 100, quick: false },
    results: ROWS.map(tunnelResult),
    elapsedSec: 612,
  };
}

// ---------------------------------------------------------------------------------------------
// Reading the SVG back

type El = { name: string; a: Record<string, string> };

function elements(svg: string, name: string, cls?: string): El[] {
  const out: El[] = [];
  for (const m of svg.matchAll(new RegExp(`<${name}\\b([^>]*?)/?>`, 'g'))) {
    const a: Record<string, string> = {};
    for (const am of m[1].matchAll(/([\w:-]+)="([^"]*)"/g)) a[am[1]] = am[2];
    if (cls === undefined || (a.class ?? '').split(' ').includes(cls)) out.push({ name, a });
  }
  return out;
}

const num = (e: El, k: string) => {
  const v = Number(e.a[k]);
  if (!Number.isFinite(v)) throw new Error(`${e.name} ${JSON.stringify(e.a)} has no numeric ${k}`);
  return v;
};

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'weft-bench-chart-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Renders through rsvg-convert (which rejects malformed XML) and returns the PNG's IHDR size. */
async function renderPng(svg: string, name = 'chart'): Promise<{ width: number; height: number }> {
  const dir = process.env.BENCH_CHART_OUT ?? tempDir();
  const svgFile = join(dir, `${name}.svg`);
  const pngFile = join(dir, `${name}.png`);
  writeFileSync(svgFile, svg);
  expect(await svgToPng(svgFile, pngFile)).toBe('written');
  const png = readFileSync(pngFile);
  expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(png.toString('latin1', 12, 16)).toBe('IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

function svgSize(svg: string): { width: number; height: number } {
  const root = elements(svg, 'svg')[0];
  expect(root.a.viewBox).toBe(`0 0 ${root.a.width} ${root.a.height}`);
  return { width: num(root, 'width'), height: num(root, 'height') };
}

// ---------------------------------------------------------------------------------------------

describe('niceTicks', () => {
  it('steps by 1, 2 or 5 × 10^k from 0 to the first tick at or above max', () => {
    expect(niceTicks(16.2)).toEqual([0, 5, 10, 15, 20]);
    expect(niceTicks(14.1)).toEqual([0, 5, 10, 15]);
    expect(niceTicks(1.46)).toEqual([0, 0.5, 1, 1.5]);
    expect(niceTicks(50, 4)).toEqual([0, 20, 40, 60]);
    expect(niceTicks(50)).toEqual([0, 10, 20, 30, 40, 50]);
    expect(niceTicks(10)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0.3)).toEqual([0, 0.1, 0.2, 0.3]);
  });

  it('gives a usable scale for a max of 0, negative or NaN', () => {
    expect(niceTicks(0)).toEqual([0, 1]);
    expect(niceTicks(-3)).toEqual([0, 1]);
    expect(niceTicks(Number.NaN)).toEqual([0, 1]);
  });

  it('covers any positive max with a handful of evenly spaced nice ticks', () => {
    fc.assert(
      fc.property(fc.double({ min: 1e-6, max: 1e13, noNaN: true }), (max) => {
        const t = niceTicks(max);
        expect(t[0]).toBe(0);
        expect(t[t.length - 1]).toBeGreaterThanOrEqual(max * (1 - 1e-9));
        // Not wastefully far above: the top tick is within one step of max.
        const step = t[1] - t[0];
        expect(t[t.length - 1] - step).toBeLessThan(max);
        expect(t.length).toBeGreaterThanOrEqual(2);
        expect(t.length).toBeLessThanOrEqual(12);
        const mantissa = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
        expect([1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-6)).toBe(true);
        for (let i = 1; i < t.length; i++) expect(t[i] - t[i - 1]).toBeCloseTo(step, 9);
      }),
    );
  });
});

describe('escapeXml / formatGbit / spreadLabels', () => {
  it('escapes the five XML specials and drops control characters XML cannot carry', () => {
    expect(escapeXml(`a&b<c>d"e'f`)).toBe('a&amp;b&lt;c&gt;d&quot;e&apos;f');
    expect(escapeXml('x\u0001y\tz')).toBe('xy\tz');
  });

  it('formats Gbit/s with two decimals below 10', () => {
    expect(formatGbit(0.94e9)).toBe('0.94');
    expect(formatGbit(14.1e9)).toBe('14.1');
    expect(formatGbit(Number.NaN)).toBe('n/a');
  });

  it('keeps labels in order, at least gap apart and inside the range when they fit', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 200, noNaN: true }), { maxLength: 12 }), (want) => {
        const got = spreadLabels(want, 13, 0, 200);
        const order = want.map((_, i) => i).sort((a, b) => want[a] - want[b] || a - b);
        for (let k = 1; k < order.length; k++) expect(got[order[k]] - got[order[k - 1]]).toBeGreaterThanOrEqual(13 - 1e-9);
        for (const y of got) {
          expect(y).toBeGreaterThanOrEqual(0);
          expect(y).toBeLessThanOrEqual(200 + 1e-9);
        }
      }),
    );
    expect(spreadLabels([50, 120], 13, 0, 200)).toEqual([50, 120]);
  });
});

describe('renderOverviewSvg', () => {
  const r = fixture();
  const svg = renderOverviewSvg(r);
  const bars = elements(svg, 'rect', 'bar');
  const bar = (tunnel: string, series: string) => {
    const found = bars.filter((b) => b.a['data-tunnel'] === tunnel && b.a['data-series'] === series);
    expect(found).toHaveLength(1);
    return found[0];
  };

  it('draws every tunnel exactly once in each series, in input order', () => {
    for (const series of ['tcp1', 'tcp4', 'header']) {
      const names = bars.filter((b) => b.a['data-series'] === series).map((b) => b.a['data-tunnel']);
      expect(names).toEqual(ROWS.map((row) => row[0]));
    }
    expect(elements(svg, 'text', 'mtu').map((t) => t.a['data-value'])).toEqual(ROWS.map((row) => String(row[4])));
    expect(svg).toContain('>MTU 1450<');
  });

  it('makes throughput bar lengths proportional to their medians on one shared axis', () => {
    const tcp = bars.filter((b) => b.a['data-series'] !== 'header');
    expect(tcp).toHaveLength(14);
    const x0 = num(tcp[0], 'x');
    const pxPerBps = num(bar('kernel-host-gw', 'tcp1'), 'width') / 14.1e9;
    for (const b of tcp) {
      expect(num(b, 'x')).toBe(x0);
      expect(num(b, 'data-value')).toBeGreaterThan(0);
      expect(num(b, 'width') / num(b, 'data-value') / pxPerBps).toBeCloseTo(1, 2);
    }
    // 0.94 vs 14.1 Gbit/s: the pixel ratio is the value ratio within 1 %.
    const ratio = num(bar('weft-udp', 'tcp1'), 'width') / num(bar('kernel-host-gw', 'tcp1'), 'width');
    expect(Math.abs(ratio / (0.94 / 14.1) - 1)).toBeLessThan(0.01);
    // The labels show the medians.
    const label = elements(svg, 'text', 'value').find((t) => t.a['data-tunnel'] === 'weft-udp' && t.a['data-series'] === 'tcp1');
    expect(label).toBeDefined();
    expect(svg).toMatch(/data-tunnel="weft-udp" data-series="tcp1" data-kind="weft">0\.94</);
  });

  it('spans each whisker from min to max of its own bar', () => {
    const whiskers = elements(svg, 'line', 'whisker');
    expect(whiskers).toHaveLength(14);
    for (const w of whiskers) {
      const b = bar(w.a['data-tunnel'], w.a['data-series']);
      const t = r.results.find((x) => x.tunnel === w.a['data-tunnel'])!;
      const s = w.a['data-series'] === 'tcp1' ? t.tcp1Bps : t.tcp4Bps;
      const px = num(b, 'width') / s.median;
      expect(num(w, 'x1') - num(b, 'x')).toBeCloseTo(s.min * px, 0);
      expect(num(w, 'x2') - num(b, 'x')).toBeCloseTo(s.max * px, 0);
      // On the bar's vertical centre.
      expect(num(w, 'y1')).toBeCloseTo(num(b, 'y') + num(b, 'height') / 2, 5);
    }
  });

  it('keeps axis ticks nice, from 0 and past the largest whisker', () => {
    const ticks = elements(svg, 'text', 'tick');
    expect(svg).toMatch(/class="tick">0</);
    // 16 Gbit/s × 1.03 (the 4-stream whisker) → 0, 5, 10, 15, 20.
    expect(svg).toMatch(/class="tick">20</);
    expect(ticks.length).toBeGreaterThanOrEqual(5);
  });

  it('orders and scales the header bars by bytes, from 0', () => {
    const h = bars.filter((b) => b.a['data-series'] === 'header');
    const x0 = num(h[0], 'x');
    const vx = num(bar('kernel-vxlan', 'header'), 'width') / 50;
    for (const b of h) {
      expect(num(b, 'x')).toBe(x0);
      expect(num(b, 'width')).toBeCloseTo(num(b, 'data-value') * vx, 1);
    }
    const sorted = [...h].sort((a, b) => num(a, 'data-value') - num(b, 'data-value'));
    for (let i = 1; i < sorted.length; i++) expect(num(sorted[i], 'width')).toBeGreaterThanOrEqual(num(sorted[i - 1], 'width'));
    expect(num(bar('kernel-host-gw', 'header'), 'width')).toBe(0);
    expect(num(bar('weft-ipip', 'header'), 'width') / num(bar('weft-udp', 'header'), 'width')).toBeCloseTo(20 / 28, 2);
  });

  it('colours by kind, the same colour for every tunnel of a kind', () => {
    const fill = (tunnel: string) => bar(tunnel, 'tcp4').a.fill;
    expect(fill('weft-udp')).toBe(fill('weft-ipip'));
    expect(fill('kernel-vxlan')).toBe(fill('kernel-host-gw'));
    expect(new Set([fill('weft-udp'), fill('kernel-vxlan'), fill('openvpn')]).size).toBe(3);
  });

  it('puts the date, command and machine in the heading', () => {
    expect(svg).toContain('2026-11-23');
    expect(svg).not.toContain('03:40:12');
    expect(svg).toContain('$ weft bench --runs 3 --seconds 10');
    expect(svg).toContain('2 CPUs');
    expect(svg).toContain('kernel 6.1.0-27-amd64');
  });

  it('renders to a PNG at twice the SVG size', async () => {
    const size = svgSize(svg);
    expect(size.width).toBe(960);
    expect(await renderPng(svg, 'overview')).toEqual({ width: 2 * size.width, height: 2 * size.height });
  });
});

describe('renderScalingSvg', () => {
  const r = fixture();
  const svg = renderScalingSvg(r);
  const points = elements(svg, 'circle', 'point');
  const low = ['weft-udp', 'weft-vxlan', 'weft-ipip', 'openvpn'];

  it('draws one line per tunnel and a point per stream count in the full panel', () => {
    const main = elements(svg, 'polyline', 'series').filter((p) => p.a['data-panel'] === 'main');
    expect(main.map((p) => p.a['data-tunnel'])).toEqual(ROWS.map((row) => row[0]));
    for (const [tunnel] of ROWS) {
      const mine = points.filter((p) => p.a['data-panel'] === 'main' && p.a['data-tunnel'] === tunnel);
      expect(mine.map((p) => p.a['data-streams'])).toEqual(['1', '2', '4', '8']);
    }
  });

  it('repeats the tunnels below a fifth of the fastest in a zoom panel with its own scale', () => {
    const zoom = elements(svg, 'polyline', 'series').filter((p) => p.a['data-panel'] === 'zoom');
    expect(zoom.map((p) => p.a['data-tunnel'])).toEqual(low);
    expect(svg).toMatch(/Zoom: the 4 tunnels below 20% of the fastest/);
    // The zoom spreads the 0.68..1.46 Gbit/s lines over far more pixels than the full panel does.
    const spread = (panel: string) => {
      const ys = points.filter((p) => p.a['data-panel'] === panel && low.includes(p.a['data-tunnel'])).map((p) => num(p, 'cy'));
      return Math.max(...ys) - Math.min(...ys);
    };
    expect(spread('zoom')).toBeGreaterThan(5 * spread('main'));
  });

  it('places higher medians higher, linearly from 0, within each panel', () => {
    for (const panel of ['main', 'zoom']) {
      const ps = points.filter((p) => p.a['data-panel'] === panel).sort((a, b) => num(a, 'data-value') - num(b, 'data-value'));
      for (let i = 1; i < ps.length; i++) expect(num(ps[i], 'cy')).toBeLessThanOrEqual(num(ps[i - 1], 'cy'));
      // Linear from 0: cy = base − k·value for one base and k across the panel.
      const [a, b] = [ps[0], ps[ps.length - 1]];
      const k = (num(a, 'cy') - num(b, 'cy')) / (num(b, 'data-value') - num(a, 'data-value'));
      const base = num(a, 'cy') + k * num(a, 'data-value');
      for (const p of ps) expect(num(p, 'cy')).toBeCloseTo(base - k * num(p, 'data-value'), 0);
      // The 0 gridline sits at base.
      expect(elements(svg, 'line', 'axis').some((l) => Math.abs(num(l, 'y1') - base) < 0.5 && l.a.y1 === l.a.y2)).toBe(true);
    }
  });

  it('hangs a min..max whisker on each point', () => {
    const whiskers = elements(svg, 'line', 'whisker');
    for (const p of points) {
      const w = whiskers.find((x) => ['data-tunnel', 'data-panel', 'data-streams'].every((k) => x.a[k] === p.a[k]));
      expect(w).toBeDefined();
      expect(num(w!, 'x1')).toBe(num(p, 'cx'));
      const top = num(w!, 'y1');
      const bottom = num(w!, 'y2');
      expect(top).toBeLessThan(num(p, 'cy'));
      expect(bottom).toBeGreaterThan(num(p, 'cy'));
    }
  });

  it('labels line ends without overlap', () => {
    for (const panel of ['main', 'zoom']) {
      const ys = elements(svg, 'text', 'end-label')
        .filter((t) => t.a['data-panel'] === panel)
        .map((t) => num(t, 'y'))
        .sort((a, b) => a - b);
      expect(ys.length).toBeGreaterThan(1);
      for (let i = 1; i < ys.length; i++) expect(ys[i] - ys[i - 1]).toBeGreaterThanOrEqual(12.9);
    }
    expect(svg).toMatch(/>weft-udp 1\.30</);
  });

  it('renders to a PNG', async () => {
    const size = svgSize(svg);
    expect(await renderPng(svg, 'scaling')).toEqual({ width: 2 * size.width, height: 2 * size.height });
  });

  it('needs no zoom panel when the tunnels are within 5× of each other', () => {
    const close = fixture();
    close.results = close.results.filter((t) => t.kind === 'kernel' || t.tunnel === 'weft-host-gw');
    const s = renderScalingSvg(close);
    expect(elements(s, 'polyline', 'series').every((p) => p.a['data-panel'] === 'main')).toBe(true);
    expect(s).not.toContain('Zoom');
  });
});

describe('charts from awkward results', () => {
  it('escapes XML specials in the command, machine and description', async () => {
    const r = fixture();
    r.command = `weft bench --tunnels 'weft-udp,openvpn' > "out.json" && echo <done>`;
    r.machine.kernel = '6.1 <custom & "patched">';
    r.results[3].description = `udp <port 8285> & 'flannel' "compatible"`;
    for (const [name, svg] of [
      ['overview-escaped', renderOverviewSvg(r)],
      ['scaling-escaped', renderScalingSvg(r)],
    ] as const) {
      expect(svg).toContain('&apos;weft-udp,openvpn&apos; &gt; &quot;out.json&quot; &amp;&amp; echo &lt;done&gt;');
      expect(svg).not.toContain('<done>');
      expect(svg).not.toContain('<custom');
      await renderPng(svg, name);
    }
    expect(renderOverviewSvg(r)).toContain('udp &lt;port 8285&gt; &amp; &apos;flannel&apos; &quot;compatible&quot;');
  });

  it('says "no results" for an empty run, in a valid SVG', async () => {
    const r = fixture();
    r.results = [];
    for (const svg of [renderOverviewSvg(r), renderScalingSvg(r)]) {
      expect(svg).toContain('>no results<');
      expect(elements(svg, 'rect', 'bar')).toHaveLength(0);
      await renderPng(svg, 'empty');
    }
  });

  it('draws a single tunnel, zero throughput, missing scaling points and a very long name', async () => {
    const r = fixture();
    const zero = { median: 0, min: 0, max: 0, samples: [0, 0, 0] };
    const long = 'weft-udp-with-a-very-long-experimental-name-that-does-not-fit-anywhere' as Tunnel;
    r.results = [
      { ...r.results[3], tunnel: long },
      { ...r.results[6], tcp1Bps: zero, tcp4Bps: zero, scaling: [] },
    ];
    r.results[0].scaling = r.results[0].scaling.filter((p) => p.streams !== 2);
    const overview = renderOverviewSvg(r);
    const scaling = renderScalingSvg(r);
    for (const svg of [overview, scaling]) expect(svg).not.toMatch(/="[^"]*NaN/);
    // The zero bar is there, with zero length, and a readable label.
    const zeroBar = elements(overview, 'rect', 'bar').find((b) => b.a['data-tunnel'] === 'openvpn' && b.a['data-series'] === 'tcp1')!;
    expect(num(zeroBar, 'width')).toBe(0);
    expect(overview).toMatch(/data-tunnel="openvpn" data-series="tcp1" data-kind="reference">0\.00</);
    // The long name is cut for the row label; the full name stays in the data and the tooltip.
    expect(overview).toContain(`data-tunnel="${long}"`);
    expect(overview).toContain('…</text>');
    // Three points for the tunnel that lost one; no line for the one with none, but a legend entry.
    expect(elements(scaling, 'circle', 'point').map((p) => p.a['data-streams'])).toEqual(['1', '4', '8']);
    expect(scaling).toContain('openvpn (no data)');
    expect(scaling).toMatch(/… 1\.30<\/text>/);
    await renderPng(overview, 'awkward-overview');
    await renderPng(scaling, 'awkward-scaling');

    // One tunnel on its own.
    const one = fixture();
    one.results = [one.results[0]];
    await renderPng(renderOverviewSvg(one), 'one-overview');
    await renderPng(renderScalingSvg(one), 'one-scaling');
    // No scaling measurements at all.
    one.results[0].scaling = [];
    expect(renderScalingSvg(one)).toContain('no scaling measurements');
  });
});

describe('svgToPng', () => {
  it("returns 'no-renderer' when rsvg-convert is not on PATH", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'a.svg'), renderOverviewSvg(fixture()));
    const saved = process.env.PATH;
    try {
      process.env.PATH = dir;
      expect(await svgToPng(join(dir, 'a.svg'), join(dir, 'a.png'))).toBe('no-renderer');
    } finally {
      process.env.PATH = saved;
    }
  });

  it('throws with rsvg-convert’s message on malformed SVG and writes no PNG', async () => {
    const dir = tempDir();
    const svgFile = join(dir, 'bad.svg');
    const pngFile = join(dir, 'bad.png');
    writeFileSync(svgFile, '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>a & b</text></svg>');
    await expect(svgToPng(svgFile, pngFile)).rejects.toThrow(/rsvg-convert exited with 1 .*bad\.svg.*XML/s);
    expect(() => readFileSync(pngFile)).toThrow(/ENOENT/);
  });
});
