// What `weft wire`, `weft trace` and `weft replay` print for packets: the dissected layers
// (packet/dissect.ts) named inner and outer, one line of fields per header with its bytes in
// hex underneath, and a box diagram of the header stack.

import { hex, type Layer } from './dissect';

/**
 * Names layers as the README and the kernel's documentation do: with a tunnel in the stack,
 * what is outside it is "outer" and what it carries is "inner"; `innerOnly` names a bare
 * packet that is itself the inner one (what the udp backend hands its socket).
 */
export function nameLayers(layers: Layer[], innerOnly = false): Layer[] {
  const tunnel = layers.some((l) => l.depth > 0);
  return layers.map((l) => {
    if (l.quoted || l.name === 'data' || l.name.startsWith('fragment')) return l;
    if (tunnel) {
      if (l.depth > 0) return { ...l, name: `inner ${l.name}` };
      if (l.name === 'IPv4') return { ...l, name: 'outer IPv4' };
      return l;
    }
    if (innerOnly && (l.name === 'IPv4' || l.name === 'Ethernet')) return { ...l, name: `inner ${l.name}` };
    return l;
  });
}

/** The layers as wire.ts has always printed them: name, fields, and the bytes underneath. */
export function layerLines(layers: Layer[], indent = '  '): string[] {
  const lines: string[] = [];
  for (const l of layers) {
    const name = l.quoted ? `  ${l.name}` : l.name;
    lines.push(`${indent}${name.padEnd(15)} ${l.fields}`);
    // Payload is counted, not dumped: the headers are what a walk is about.
    if (!/data|bytes/.test(l.name)) lines.push(`${indent}${''.padEnd(15)} ${hex(l.bytes)}`);
  }
  return lines;
}

export interface Span {
  /** Index of the first and one past the last layer the bracket covers. */
  from: number;
  to: number;
  label: string;
}

/**
 * The header stack as boxes, one per layer with its size, and brackets underneath saying who
 * wrote which part — the drawing the seeds' articles make of each encapsulation, here from
 * the bytes the code produced. Layers: outermost first, the last one standing for everything
 * the innermost header carries.
 */
export function stackDiagram(cells: { name: string; bytes: number }[], spans: Span[]): string[] {
  const texts = cells.map((c) => `${c.name} ${c.bytes}`);
  const widths = texts.map((t) => t.length + 2);
  const labels = spans.map((s) => ` ${s.label} `);
  // Widen the boxes under a bracket whose label would not fit, one column at a time across them.
  spans.forEach((s, i) => {
    const need = labels[i].length + 4;
    const have = () => widths.slice(s.from, s.to).reduce((a, b) => a + b, 0) + (s.to - s.from - 1);
    for (let k = 0; have() < need; k++) widths[s.from + (k % (s.to - s.from))]++;
  });
  const center = (t: string, w: number) => ' '.repeat(Math.floor((w - t.length) / 2)) + t + ' '.repeat(Math.ceil((w - t.length) / 2));
  const line = (l: string, m: string, r: string) => l + widths.map((w) => '─'.repeat(w)).join(m) + r;
  const out = [line('┌', '┬', '┐'), '│' + texts.map((t, i) => center(t, widths[i])).join('│') + '│', line('└', '┴', '┘')];
  let under = ' ';
  spans.forEach((s, i) => {
    const w = widths.slice(s.from, s.to).reduce((a, b) => a + b, 0) + (s.to - s.from - 1);
    const dashes = w - 2 - labels[i].length;
    const left = Math.floor(dashes / 2);
    under += '◀' + '─'.repeat(left) + labels[i] + '─'.repeat(dashes - left) + '▶ ';
  });
  out.push(under.trimEnd());
  return out;
}
