// weft runs on a maintained Node LTS: package.json's engines say >= 22, and scripts/setup.sh
// installs Node 24 where the machine's node is older (scripts/node.sh). Both the node running
// these tests and the `node` on PATH, the one `npm run lab` (scripts/lab.sh) and every spawned
// `node` would run, must be that new, whichever node started `npm test`.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const MIN_MAJOR = 22;
const major = (version: string): number => Number(/^v?(\d+)\./.exec(version)?.[1] ?? NaN);

describe('Node runtime', () => {
  it(`package.json's engines ask for Node >= ${MIN_MAJOR}`, () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { engines?: { node?: string } };
    expect(pkg.engines?.node).toBe(`>=${MIN_MAJOR}`);
  });

  it(`the tests run on Node >= ${MIN_MAJOR}`, () => {
    expect(major(process.versions.node), `process.versions.node = ${process.versions.node} (${process.execPath})`).toBeGreaterThanOrEqual(MIN_MAJOR);
  });

  it(`the node on PATH, which the lab and scripts spawn, is >= ${MIN_MAJOR}`, () => {
    const r = spawnSync('node', ['-p', 'process.versions.node + " " + process.execPath'], { encoding: 'utf8', timeout: 10_000 });
    expect(r.status, r.stderr).toBe(0);
    const [version = '', path = ''] = r.stdout.trim().split(' ');
    expect(major(version), `node on PATH is ${version} (${path}); PATH=${process.env.PATH}`).toBeGreaterThanOrEqual(MIN_MAJOR);
  });

  it('npm children are told about that same node (NODE / npm_node_execpath, when set, are >= 22 too)', () => {
    for (const name of ['NODE', 'npm_node_execpath'] as const) {
      const bin = process.env[name];
      if (!bin) continue;
      const r = spawnSync(bin, ['-p', 'process.versions.node'], { encoding: 'utf8', timeout: 10_000 });
      expect(r.status, `${name}=${bin}: ${r.stderr}`).toBe(0);
      expect(major(r.stdout.trim()), `${name}=${bin} is ${r.stdout.trim()}`).toBeGreaterThanOrEqual(MIN_MAJOR);
    }
  });
});
