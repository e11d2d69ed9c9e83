// Charts for `weft bench`: results.json drawn as self-contained SVG (README, slides), and a PNG
// through rsvg-convert where that is installed.
//
// Hand-written SVG rather than a charting library: two fixed chart shapes do not justify a
// dependency, and owning the geometry lets every data-carrying element say what it encodes
// (class + data-* attributes), so the tests can check that a bar's length really is its value.
// Text widths are estimated, not measured (no font engine here): 0.6 em per character is
// DejaVu Sans' average, the widest of the usual sans-serif fallbacks, so estimates err towards
// leaving room.

import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { BenchResults, Stat, TunnelKind, TunnelResult } from './types';

const execFileAsync = promisify(execFile);

const WIDTH = 960;
const PAD = 16;
const FONT = 'sans-serif';
const CHAR_EM = 0.6;

const KIND_COLOUR: Record<TunnelKind, string> = {
  kernel: '#4d5a68',
  weft: '#0a6ebd',
  reference: '#c8550a',
};
const KIND_LABEL: Record<TunnelKind, string> = {
  kernel: 'kernel',
  weft: 'weft (userspace)',
  reference: 'reference tunnel',
};
const KIND_ORDER: TunnelKind[] = ['kernel', 'weft', 'reference'];
// results.json is read from disk, so a kind outside the union must still draw.
const UNKNOWN_COLOUR = '#888888';

// ---------------------------------------------------------------------------------------------
// Small pure helpers (exported for the tests)

/**
 * Text for XML character data and attribute values. Also drops the C0 control characters that
 * XML 1.0 forbids even when escaped: a stray one in a command line would make the whole file
 * unreadable to rsvg-convert and to browsers.
 */
export function escapeXml(s: string): string {
  return (
    s
      // XML 1.0 §2.2 forbids these characters in a document at all, escaped or not: drop them.
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&apos;')
  );
}

/**
 * Axis ticks from 0 up to the first tick at or above `max`, stepping by 1, 2 or 5 × 10^k so the
 * labels are numbers a reader can interpolate between. About `target` intervals; never fewer
 * than one, and a degenerate max (0, negative, NaN) gives [0, 1] so the axis still has a scale.
 */
export function niceTicks(max: number, target = 5): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / Math.max(1, target);
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw * (1 - 1e-9)) ?? 10 * pow;
  const count = Math.max(1, Math.ceil(max / step - 1e-9));
  const ticks: number[] = [];
  // Multiplying instead of accumulating keeps 0.1-steps from drifting to 0.30000000000000004.
  for (let i = 0; i <= count; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/**
 * Vertical positions for labels that want to sit at `wanted` but must be at least `gap` apart
 * and inside [lo, hi]. Labels keep their order; the result is in the input's order. When they
 * cannot all fit, the top ones win and the rest run past `hi` rather than overlap.
 */
export function spreadLabels(wanted: number[], gap: number, lo: number, hi: number): number[] {
  const order = wanted.map((y, i) => ({ y, i })).sort((a, b) => a.y - b.y || a.i - b.i);
  const ys = order.map((o) => Math.min(Math.max(o.y, lo), hi));
  for (let k = 1; k < ys.length; k++) ys[k] = Math.max(ys[k], ys[k - 1] + gap);
  if (ys.length > 0 && ys[ys.length - 1] > hi) {
    ys[ys.length - 1] = hi;
    for (let k = ys.length - 2; k >= 0; k--) ys[k] = Math.min(ys[k], ys[k + 1] - gap);
    if (ys[0] < lo) {
      ys[0] = lo;
      for (let k = 1; k < ys.length; k++) ys[k] = Math.max(ys[k], ys[k - 1] + gap);
    }
  }
  const out = new Array<number>(wanted.length);
  order.forEach((o, k) => (out[o.i] = ys[k]));
  return out;
}

/** Gbit/s as a label: two decimals below 10 so 0.94 and 1.07 stay apart, fewer above. */
export function formatGbit(bps: number): string {
  if (!Number.isFinite(bps)) return 'n/a';
  const g = bps / 1e9;
  return g < 10 ? g.toFixed(2) : g < 100 ? g.toFixed(1) : g.toFixed(0);
}

// ---------------------------------------------------------------------------------------------
// SVG building

type Attrs = Record<string, string | number | undefined>;

/** Coordinates to 2 decimals: exact enough for the ratio tests, short enough to read the file. */
function n(v: number): string {
  return String(Math.round(v * 100) / 100);
}

function tag(name: string, attrs: Attrs, body?: string): string {
  let s = '<' + name;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined) continue;
    s += ` ${k}="${typeof v === 'number' ? n(v) : escapeXml(v)}"`;
  }
  return body === undefined ? s + '/>' : `${s}>${body}</${name}>`;
}

function text(x: number, y: number, s: string, attrs: Attrs = {}): string {
  return tag('text', { x, y, ...attrs }, escapeXml(s));
}

function textWidth(s: string, size: number): number {
  return s.length * size * CHAR_EM;
}

/** `s` cut to fit `px` at font `size`, with an ellipsis where it was cut. */
function fit(s: string, px: number, size: number): string {
  const max = Math.floor(px / (size * CHAR_EM));
  if (s.length <= max) return s;
  return max <= 1 ? '…' : s.slice(0, max - 1) + '…';
}

function svgDoc(height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${n(height)}" viewBox="0 0 ${WIDTH} ${n(height)}" font-family="${FONT}" font-size="12">`,
    tag('title', {}, escapeXml(title)),
    tag('rect', { x: 0, y: 0, width: WIDTH, height, fill: '#ffffff' }),
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

function mix(hex: string, other: string, f: number): string {
  const p = (h: string, i: number) => parseInt(h.slice(1 + 2 * i, 3 + 2 * i), 16);
  let out = '#';
  for (let i = 0; i < 3; i++) {
    const v = Math.round(p(hex, i) * (1 - f) + p(other, i) * f);
    out += v.toString(16).padStart(2, '0');
  }
  return out;
}

function kindColour(kind: string): string {
  return (KIND_COLOUR as Record<string, string>)[kind] ?? UNKNOWN_COLOUR;
}

/** A value a bar or point can stand for; NaN, infinities and negatives cannot. */
function drawable(v: number): boolean {
  return Number.isFinite(v) && v >= 0;
}

function statMax(s: Stat): number {
  return Math.max(...[s.median, s.min, s.max].filter(drawable), 0);
}

/** Title, command line and machine: the three lines every chart opens with. Returns the next free y. */
function header(r: BenchResults, what: string, out: string[]): number {
  const date = String(r.date ?? '').slice(0, 10);
  const title = `weft bench · ${what}${date ? ' · ' + date : ''}`;
  out.push(text(PAD, 30, fit(title, WIDTH - 2 * PAD, 18), { 'font-size': 18, 'font-weight': 'bold', fill: '#111111', class: 'title' }));
  const cmd = `$ ${r.command ?? ''}`;
  out.push(text(PAD, 50, fit(cmd, WIDTH - 2 * PAD, 12), { fill: '#333333', class: 'subtitle', 'font-family': 'monospace' }));
  const m = r.machine;
  const o = r.options;
  const parts: string[] = [];
  if (m) {
    parts.push(`${m.cpus} CPUs${m.cpuModel ? ` (${m.cpuModel})` : ''}`);
    if (m.kernel) parts.push(`kernel ${m.kernel}`);
  }
  if (o && o.runs > 0) parts.push(`${o.runs} run${o.runs === 1 ? '' : 's'} × ${o.seconds} s per test; median shown, whiskers min–max`);
  out.push(text(PAD, 67, fit(parts.join(' · '), WIDTH - 2 * PAD, 12), { fill: '#555555', class: 'subtitle' }));
  return 80;
}

function emptyChart(r: BenchResults, what: string, message: string): string {
  const body: string[] = [];
  const y = header(r, what, body);
  body.push(text(WIDTH / 2, y + 70, message, { 'text-anchor': 'middle', 'font-size': 16, fill: '#666666', class: 'empty' }));
  return svgDoc(y + 120, `weft bench: ${what}`, body);
}

/** Tick labels without trailing zeros: 0, 2.5, 10. */
function tickLabel(v: number): string {
  return String(Number(v.toPrecision(6)));
}

// ---------------------------------------------------------------------------------------------
// Overview: TCP throughput and header overhead, one row per tunnel shared by both panels

/**
 * One SVG with two panels that share a row per tunnel: (a) TCP throughput with 1 and 4 streams,
 * (b) outer header bytes per packet and the measured MTU. Sharing the rows means a tunnel's
 * name is written once and a reader can follow a row across both.
 */
export function renderOverviewSvg(r: BenchResults): string {
  const what = 'pod-to-pod TCP throughput and per-packet overhead';
  const results = r.results ?? [];
  if (results.length === 0) return emptyChart(r, what, 'no results');

  const body: string[] = [];
  let y = header(r, what, body);

  // Legend: kinds present, then how to read the two bars in a row; wraps when it runs out of width.
  const kinds = KIND_ORDER.filter((k) => results.some((t) => t.kind === k));
  if (results.some((t) => !KIND_ORDER.includes(t.kind))) kinds.push('other' as TunnelKind);
  let lx = PAD;
  let ly = y + 10;
  const room = (w: number) => {
    if (lx + w > WIDTH - PAD && lx > PAD) {
      lx = PAD;
      ly += 20;
    }
  };
  for (const k of kinds) {
    const label = (KIND_LABEL as Record<string, string>)[k] ?? 'other';
    room(17 + textWidth(label, 12));
    body.push(tag('rect', { x: lx, y: ly - 10, width: 12, height: 12, fill: kindColour(k), class: 'legend', 'data-kind': k }));
    body.push(text(lx + 17, ly, label, { fill: '#222222' }));
    lx += 17 + textWidth(label, 12) + 18;
  }
  const demo = kindColour(kinds[0] ?? 'weft');
  const how = 'upper, light bar: 1 TCP stream · lower, dark bar: 4 streams';
  lx += 6;
  room(28 + textWidth(how, 12));
  body.push(tag('rect', { x: lx, y: ly - 12, width: 22, height: 7, fill: mix(demo, '#ffffff', 0.55), stroke: demo, 'stroke-width': 0.8 }));
  body.push(tag('rect', { x: lx, y: ly - 4, width: 22, height: 7, fill: demo }));
  body.push(text(lx + 28, ly, fit(how, WIDTH - PAD - lx - 28, 12), { fill: '#222222' }));
  y = ly + 22;

  // Columns. Names wider than the label column are cut; the full name and description stay in
  // a <title> (a tooltip in browsers).
  const nameSize = 13;
  const labelW = Math.min(170, Math.max(80, Math.max(...results.map((t) => textWidth(String(t.tunnel), nameSize)))));
  const mtuColW = 76;
  const bValueRoom = 34;
  const bPlotW = 140;
  const bx0 = WIDTH - PAD - mtuColW - bValueRoom - bPlotW;
  const aValueRoom = 44;
  const ax0 = PAD + labelW + 12;
  const aPlotW = bx0 - 44 - aValueRoom - ax0;

  const titleY = y + 8;
  body.push(text(ax0, titleY, 'TCP throughput, Gbit/s', { 'font-size': 13, 'font-weight': 'bold', fill: '#111111' }));
  body.push(text(bx0, titleY, 'Header bytes per packet · MTU', { 'font-size': 13, 'font-weight': 'bold', fill: '#111111' }));

  const rowH = 34;
  const rowsTop = titleY + 10;
  const rowsBottom = rowsTop + results.length * rowH;

  // Throughput scale covers the largest whisker, not only the largest median, so no whisker or
  // label runs off the panel.
  const aMax = Math.max(0, ...results.flatMap((t) => [statMax(t.tcp1Bps), statMax(t.tcp4Bps)])) / 1e9;
  const aTicks = niceTicks(aMax);
  const aTop = aTicks[aTicks.length - 1];
  const ax = (bps: number) => ax0 + (bps / 1e9 / aTop) * aPlotW;

  const headers = results.map((t) => (drawable(t.headerBytes) ? t.headerBytes : 0));
  const bTicks = niceTicks(Math.max(0, ...headers));
  const bTop = bTicks[bTicks.length - 1];
  const bx = (bytes: number) => bx0 + (bytes / bTop) * bPlotW;

  // Row stripes first so grid and bars sit on top of them.
  results.forEach((_, i) => {
    if (i % 2 === 0) body.push(tag('rect', { x: PAD, y: rowsTop + i * rowH, width: WIDTH - 2 * PAD, height: rowH, fill: '#f4f6f8' }));
  });

  const grid = (x: number) => tag('line', { x1: x, y1: rowsTop, x2: x, y2: rowsBottom, stroke: '#d5d9de', 'stroke-width': 1, class: 'grid' });
  const tickText = (x: number, s: string) => text(x, rowsBottom + 15, s, { 'text-anchor': 'middle', 'font-size': 11, fill: '#444444', class: 'tick' });
  for (const t of aTicks) {
    body.push(grid(ax(t * 1e9)), tickText(ax(t * 1e9), tickLabel(t)));
  }
  for (const t of bTicks) {
    body.push(grid(bx(t)), tickText(bx(t), tickLabel(t)));
  }
  const axisLine = (x0: number, x1: number) =>
    tag('line', { x1: x0, y1: rowsBottom, x2: x1, y2: rowsBottom, stroke: '#555555', 'stroke-width': 1, class: 'axis' });
  body.push(axisLine(ax0, ax0 + aPlotW), axisLine(bx0, bx0 + bPlotW));
  body.push(text(ax0 + aPlotW / 2, rowsBottom + 32, 'Gbit/s received (linear, from 0)', { 'text-anchor': 'middle', 'font-size': 11, fill: '#444444' }));
  body.push(text(bx0 + bPlotW / 2, rowsBottom + 32, 'bytes', { 'text-anchor': 'middle', 'font-size': 11, fill: '#444444' }));

  const barH = 12;
  results.forEach((t, i) => {
    const top = rowsTop + i * rowH;
    const colour = kindColour(t.kind);
    const name = String(t.tunnel);
    body.push(
      tag(
        'g',
        { class: 'row', 'data-tunnel': name },
        tag('title', {}, escapeXml(`${name} (${t.kind}): ${t.description ?? ''}`)) +
          text(PAD + labelW, top + rowH / 2 + 4.5, fit(name, labelW, nameSize), {
            'text-anchor': 'end',
            'font-size': nameSize,
            fill: '#111111',
            class: 'label',
          }),
      ),
    );

    const series: Array<[string, Stat, string, string]> = [
      ['tcp1', t.tcp1Bps, mix(colour, '#ffffff', 0.55), colour],
      ['tcp4', t.tcp4Bps, colour, 'none'],
    ];
    series.forEach(([key, s, fill, stroke], j) => {
      const by = top + 4 + j * (barH + 2);
      const cy = by + barH / 2;
      const ok = drawable(s?.median);
      const med = ok ? s.median : 0;
      const common = { 'data-tunnel': name, 'data-series': key, 'data-kind': t.kind };
      body.push(
        tag('rect', {
          class: 'bar',
          ...common,
          'data-value': ok ? String(s.median) : 'NaN',
          x: ax0,
          y: by,
          width: ax(med) - ax0,
          height: barH,
          fill,
          stroke,
          'stroke-width': stroke === 'none' ? undefined : 0.8,
        }),
      );
      let labelX = ax(med);
      if (ok && drawable(s.min) && drawable(s.max)) {
        const x1 = ax(Math.min(s.min, s.max));
        const x2 = ax(Math.max(s.min, s.max));
        // Dark grey rather than the bar colour so the whisker shows over the dark 4-stream bar.
        const w = { stroke: '#222222', 'stroke-width': 1.2 };
        body.push(
          tag('line', { class: 'whisker', ...common, 'data-min': String(s.min), 'data-max': String(s.max), x1, y1: cy, x2, y2: cy, ...w }),
          tag('line', { x1, y1: cy - 3.5, x2: x1, y2: cy + 3.5, ...w }),
          tag('line', { x1: x2, y1: cy - 3.5, x2, y2: cy + 3.5, ...w }),
        );
        labelX = Math.max(labelX, x2);
      }
      body.push(text(labelX + 4, cy + 4, ok ? formatGbit(s.median) : 'n/a', { 'font-size': 11, fill: '#111111', class: 'value', ...common }));
    });

    const hb = headers[i];
    const hy = top + (rowH - 14) / 2;
    const hCommon = { 'data-tunnel': name, 'data-series': 'header', 'data-kind': t.kind };
    body.push(tag('rect', { class: 'bar', ...hCommon, 'data-value': String(hb), x: bx0, y: hy, width: bx(hb) - bx0, height: 14, fill: colour }));
    body.push(
      text(bx(hb) + 4, hy + 11, drawable(t.headerBytes) ? String(t.headerBytes) : 'n/a', { 'font-size': 11, fill: '#111111', class: 'value', ...hCommon }),
    );
    const mtu = Number.isFinite(t.mtu) && t.mtu > 0 ? `MTU ${t.mtu}` : 'MTU n/a';
    body.push(
      text(WIDTH - PAD, hy + 11, mtu, {
        'font-size': 12,
        fill: '#222222',
        'text-anchor': 'end',
        class: 'mtu',
        'data-tunnel': name,
        'data-value': String(t.mtu),
      }),
    );
  });

  return svgDoc(rowsBottom + 46, `weft bench: ${what}`, body);
}

// ---------------------------------------------------------------------------------------------
// Scaling: throughput against parallel streams

const DASHES = ['', '7 4', '2 3', '10 3 2 3', '4 2'];
// Within one kind, lines differ by dash and a shade; the end labels carry the names as well,
// so no reader has to match four blues by eye.
const SHADES: Array<[string, number]> = [
  ['#ffffff', 0],
  ['#ffffff', 0.45],
  ['#000000', 0.4],
  ['#ffffff', 0.25],
  ['#000000', 0.6],
];

interface Line {
  t: TunnelResult;
  name: string;
  colour: string;
  dash: string;
  points: Array<{ streams: number; bps: Stat }>;
  peak: number;
}

/**
 * Line chart of median TCP throughput against the number of parallel streams, one line per
 * tunnel with min–max whiskers. The y axis is linear from 0. When some tunnels never reach a
 * fifth of the fastest one, their lines would lie flat along the bottom, so a second panel
 * repeats just those with a y scale of their own (also linear from 0, and titled as a zoom).
 */
export function renderScalingSvg(r: BenchResults): string {
  const what = 'TCP throughput vs parallel streams';
  const results = r.results ?? [];
  if (results.length === 0) return emptyChart(r, what, 'no results');

  const kindSeen = new Map<string, number>();
  const lines: Line[] = results.map((t) => {
    const j = kindSeen.get(t.kind) ?? 0;
    kindSeen.set(t.kind, j + 1);
    const [towards, f] = SHADES[j % SHADES.length];
    const points = (t.scaling ?? [])
      .filter((p) => p && Number.isFinite(p.streams) && p.bps && drawable(p.bps.median))
      .slice()
      .sort((a, b) => a.streams - b.streams);
    const peak = Math.max(0, ...points.map((p) => statMax(p.bps)));
    return { t, name: String(t.tunnel), colour: mix(kindColour(t.kind), towards, f), dash: DASHES[j % DASHES.length], points, peak };
  });
  const streams = [...new Set(lines.flatMap((l) => l.points.map((p) => p.streams)))].sort((a, b) => a - b);
  if (streams.length === 0) return emptyChart(r, what, 'no scaling measurements in these results');

  const body: string[] = [];
  let y = header(r, what, body);

  // Legend, wrapped to the width.
  const legendX0 = PAD;
  let lx = legendX0;
  let ly = y + 10;
  for (const l of lines) {
    const label = l.points.length ? l.name : `${l.name} (no data)`;
    const w = 30 + Math.min(textWidth(label, 12), 220) + 18;
    if (lx + w > WIDTH - PAD && lx > legendX0) {
      lx = legendX0;
      ly += 18;
    }
    body.push(
      tag(
        'g',
        { class: 'legend', 'data-tunnel': l.name },
        tag('line', { x1: lx, y1: ly - 4, x2: lx + 24, y2: ly - 4, stroke: l.colour, 'stroke-width': 2, 'stroke-dasharray': l.dash || undefined }) +
          tag('circle', { cx: lx + 12, cy: ly - 4, r: 3, fill: l.colour }) +
          text(lx + 30, ly, fit(label, 220, 12), { fill: '#222222' }),
      ),
    );
    lx += w;
  }
  y = ly + 16;

  const globalPeak = Math.max(0, ...lines.map((l) => l.peak));
  const drawn = lines.filter((l) => l.points.length > 0);
  const low = drawn.filter((l) => l.peak < 0.2 * globalPeak);
  const zoom = low.length > 0 && low.length < drawn.length;

  const left = PAD + 48;
  const endLabelW = 170;
  const right = WIDTH - PAD - endLabelW;
  const xPad = 28;
  const xAt = (s: number) => {
    const i = streams.indexOf(s);
    return streams.length === 1 ? (left + right) / 2 : left + xPad + (i * (right - left - 2 * xPad)) / (streams.length - 1);
  };

  const panel = (panelName: 'main' | 'zoom', top: number, height: number, members: Line[], title: string, grouped: Line[]): number => {
    const bottom = top + height;
    body.push(text(left, top - 8, title, { 'font-size': 13, 'font-weight': 'bold', fill: '#111111' }));
    const ticks = niceTicks(Math.max(0, ...members.map((l) => l.peak)) / 1e9);
    const yTop = ticks[ticks.length - 1];
    const yAt = (bps: number) => bottom - (bps / 1e9 / yTop) * height;

    for (const t of ticks) {
      const ty = yAt(t * 1e9);
      body.push(
        tag('line', { x1: left, y1: ty, x2: right, y2: ty, stroke: t === 0 ? '#555555' : '#d5d9de', 'stroke-width': 1, class: t === 0 ? 'axis' : 'grid' }),
      );
      body.push(text(left - 6, ty + 4, tickLabel(t), { 'text-anchor': 'end', 'font-size': 11, fill: '#444444', class: 'tick' }));
    }
    body.push(tag('line', { x1: left, y1: top, x2: left, y2: bottom, stroke: '#555555', 'stroke-width': 1, class: 'axis' }));
    for (const s of streams) {
      body.push(tag('line', { x1: xAt(s), y1: bottom, x2: xAt(s), y2: bottom + 4, stroke: '#555555' }));
      body.push(text(xAt(s), bottom + 16, String(s), { 'text-anchor': 'middle', 'font-size': 11, fill: '#444444', class: 'tick' }));
    }
    body.push(
      text(left - 40, top + height / 2, 'Gbit/s', {
        'text-anchor': 'middle',
        'font-size': 11,
        fill: '#444444',
        transform: `rotate(-90 ${n(left - 40)} ${n(top + height / 2)})`,
      }),
    );

    for (const l of members) {
      const common = { 'data-tunnel': l.name, 'data-panel': panelName };
      const pts = l.points.map((p) => `${n(xAt(p.streams))},${n(yAt(p.bps.median))}`).join(' ');
      body.push(
        tag('polyline', {
          class: 'series',
          ...common,
          points: pts,
          fill: 'none',
          stroke: l.colour,
          'stroke-width': 2,
          'stroke-dasharray': l.dash || undefined,
          'stroke-linejoin': 'round',
        }),
      );
      for (const p of l.points) {
        const cx = xAt(p.streams);
        if (drawable(p.bps.min) && drawable(p.bps.max)) {
          const y1 = yAt(Math.max(p.bps.min, p.bps.max));
          const y2 = yAt(Math.min(p.bps.min, p.bps.max));
          const w = { stroke: l.colour, 'stroke-width': 1.2 };
          body.push(
            tag('line', {
              class: 'whisker',
              ...common,
              'data-streams': String(p.streams),
              'data-min': String(p.bps.min),
              'data-max': String(p.bps.max),
              x1: cx,
              y1,
              x2: cx,
              y2,
              ...w,
            }),
            tag('line', { x1: cx - 3, y1, x2: cx + 3, y2: y1, ...w }),
            tag('line', { x1: cx - 3, y1: y2, x2: cx + 3, y2, ...w }),
          );
        }
        body.push(
          tag('circle', {
            class: 'point',
            ...common,
            'data-streams': String(p.streams),
            'data-value': String(p.bps.median),
            cx,
            cy: yAt(p.bps.median),
            r: 3.5,
            fill: l.colour,
            stroke: '#ffffff',
            'stroke-width': 1,
          }),
        );
      }
    }

    // End labels: each line's name and last median at the right edge, pushed apart where lines
    // end close together, with a leader back to the point when moved. Lines shown in the zoom
    // panel share one label here instead of a pile-up along the axis.
    const lxText = right + 12;
    const labels: Array<{ want: number; anchorX: number; s: string; colour: string; tunnel?: string; group?: boolean }> = [];
    for (const l of members) {
      if (grouped.includes(l)) continue;
      const last = l.points[l.points.length - 1];
      // A long name is cut, never the value after it.
      const value = ' ' + formatGbit(last.bps.median);
      const s = fit(l.name, WIDTH - PAD - lxText - textWidth(value, 11), 11) + value;
      labels.push({ want: yAt(last.bps.median), anchorX: xAt(last.streams), s, colour: l.colour, tunnel: l.name });
    }
    if (grouped.length > 0) {
      const ys = grouped.map((l) => yAt(l.points[l.points.length - 1].bps.median));
      labels.push({
        want: ys.reduce((a, b) => a + b, 0) / ys.length,
        anchorX: right,
        s: `${grouped.length} more below: see zoom`,
        colour: '#444444',
        group: true,
      });
    }
    const placed = spreadLabels(
      labels.map((l) => l.want),
      13,
      top + 4,
      bottom,
    );
    labels.forEach((lab, k) => {
      const ty = placed[k];
      if (Math.abs(ty - lab.want) > 2 || lab.anchorX < right - 1) {
        body.push(
          tag('polyline', {
            points: `${n(lab.anchorX + 5)},${n(lab.want)} ${n(right + 4)},${n(lab.want)} ${n(lxText - 3)},${n(ty)}`,
            fill: 'none',
            stroke: '#999999',
            'stroke-width': 0.7,
          }),
        );
      }
      body.push(
        text(lxText, ty + 4, fit(lab.s, WIDTH - PAD - lxText, 11), {
          'font-size': 11,
          // Darkened: text in the lighter line shades is too faint to read at README size.
          fill: lab.group ? '#444444' : mix(lab.colour, '#000000', 0.3),
          'font-style': lab.group ? 'italic' : undefined,
          class: lab.group ? 'end-label group' : 'end-label',
          'data-tunnel': lab.tunnel,
          'data-panel': panelName,
        }),
      );
    });
    return bottom;
  };

  const mainTop = y + 22;
  let bottom = panel('main', mainTop, 250, drawn, 'All tunnels · Gbit/s, linear from 0', zoom ? low : []);
  if (zoom) {
    const lowPeak = Math.max(...low.map((l) => l.peak));
    bottom = panel(
      'zoom',
      bottom + 58,
      190,
      low,
      `Zoom: the ${low.length} tunnel${low.length === 1 ? '' : 's'} below 20% of the fastest · own scale, linear from 0 to ${tickLabel(niceTicks(lowPeak / 1e9).slice(-1)[0])} Gbit/s`,
      [],
    );
  }
  body.push(text((left + right) / 2, bottom + 34, 'parallel TCP streams', { 'text-anchor': 'middle', 'font-size': 12, fill: '#333333' }));

  return svgDoc(bottom + 48, `weft bench: ${what}`, body);
}

// ---------------------------------------------------------------------------------------------
// PNG

/**
 * Renders `svgFile` to `pngFile` with rsvg-convert at 2× (a 960-wide chart becomes 1920 px, sharp
 * when a README or slide scales it down). The PNG is taken from stdout and written only on
 * success, so a failed render leaves no empty or half-written file behind.
 */
export async function svgToPng(svgFile: string, pngFile: string): Promise<'written' | 'no-renderer'> {
  let png: Buffer;
  try {
    const out = await execFileAsync('rsvg-convert', ['--zoom', '2', '--format', 'png', svgFile], {
      encoding: 'buffer',
      timeout: 60_000,
      maxBuffer: 256 * 1024 * 1024,
    });
    png = out.stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer; killed?: boolean; signal?: string };
    if (err.code === 'ENOENT') return 'no-renderer';
    const why = err.killed ? `timed out or was killed (${err.signal ?? 'signal'})` : `exited with ${err.code ?? err.signal ?? 'an error'}`;
    const stderr = err.stderr ? err.stderr.toString().trim() : '';
    throw new Error(`rsvg-convert ${why} rendering ${svgFile}${stderr ? ': ' + stderr : ''}`, { cause: e });
  }
  if (png.length < 8 || png.readUInt32BE(0) !== 0x89504e47) {
    throw new Error(`rsvg-convert produced no PNG for ${svgFile} (${png.length} bytes)`);
  }
  await writeFile(pngFile, png);
  return 'written';
}
