// The packet walks in docs/architecture.md are `weft trace` output, rendered into it by
// scripts/render-walks.sh. This renders them again from the code as it is now and fails if the
// document says anything else: change an encapsulation (or what trace prints) without re-running
// the script and CI fails here, with the first line that differs.
//
// Rendered once per file, in document order, in a fresh module graph (vitest isolates test
// files), exactly as the script renders them in one fresh process: the process-wide ICMP
// error ID counter then starts from the same place both times.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { renderWalks } from '../../src/cli/trace';

const DOC = 'docs/architecture.md';

let doc: string;
let rendered: string;
beforeAll(() => {
  doc = fs.readFileSync(path.join(__dirname, '..', '..', DOC), 'utf8');
  rendered = renderWalks(doc);
});

function blocks(text: string): { args: string; body: string }[] {
  return [...text.matchAll(/<!-- walks:begin ([^>]*?) -->\n([\s\S]*?)<!-- walks:end -->/g)].map((m) => ({ args: m[1], body: m[2] }));
}

describe(`${DOC}: packet walks`, () => {
  it('are exactly what weft trace prints today (else: bash scripts/render-walks.sh)', () => {
    if (rendered !== doc) {
      const a = doc.split('\n');
      const b = rendered.split('\n');
      const i = a.findIndex((l, k) => l !== b[k]);
      expect.fail(
        `${DOC}'s packet walks differ from \`weft trace\` output — run bash scripts/render-walks.sh and commit ${DOC}.\n` +
          `first difference, line ${i + 1}:\n  doc:   ${a[i]}\n  trace: ${b[i]}`,
      );
    }
  });

  it('walk a pod-to-pod packet from node 1 to node 2 for every backend, as a fenced block each', () => {
    const walks = blocks(doc);
    const backends = walks.map((w) => /--backend (\S+)/.exec(w.args)?.[1]);
    for (const b of ['udp', 'vxlan', 'ipip', 'host-gw']) expect(backends).toContain(b);
    for (const w of walks) {
      expect(w.body.startsWith('```\nweft trace: ')).toBe(true);
      expect(w.body.endsWith('```\n')).toBe(true);
    }
    const vxlan = walks.find((w) => w.args === '--backend vxlan --df')!.body;
    expect(vxlan).toMatch(/^ {2}VXLAN {11}flags 0x08 \(I\), VNI 1$/m);
    // Outer IPv4 + UDP are the send socket's, VXLAN + inner Ethernet weft's.
    expect(vxlan).toMatch(/the kernel's UDP socket: 28 bytes.*weft's vxlan encap: 22 bytes/);
  });

  it('live only there: README.md carries no walk block of its own to go stale', () => {
    const readme = fs.readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8');
    expect(readme.includes('<!-- walks:begin'), 'README.md has a <!-- walks:begin --> block').toBe(false);
  });
});
