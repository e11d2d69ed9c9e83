// Route lookups per second: weft's multibit-trie LpmTable (src/route/lpm.ts) against a linear
// scan over the same prefixes in the same run. The linear scan is what flannel's udp proxy does
// (proxy.c walks its route array for every packet), written here over typed arrays so the
// reference is as fast as a scan can be, and with longest-match semantics so both return the
// same answer (checked before timing).
//
//   node dist/perf/micro-lpm.js [--sizes 10,1000,100000] [--lookups 2000000] [--out perf/results]
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { LpmTable } from '../src/route/lpm';
import { maskOf } from '../src/route/cidr';
import { seededRandom as rng } from '../src/util/seeded-random';


interface Prefixes {
  addrs: Uint32Array;
  masks: Uint32Array;
  lens: Uint8Array;
}

/**
 * n distinct prefixes inside 10.0.0.0/8: mostly /24 pod subnets (a cluster's leases), some
 * shorter and longer ones so longest-match actually has to choose.
 */
function makePrefixes(n: number, rand: () => number): Prefixes {
  const seen = new Set<string>();
  const addrs = new Uint32Array(n);
  const masks = new Uint32Array(n);
  const lens = new Uint8Array(n);
  let i = 0;
  while (i < n) {
    const r = rand();
    const len = r < 0.8 ? 24 : r < 0.9 ? 16 + Math.floor(rand() * 8) : 25 + Math.floor(rand() * 6);
    const addr = ((0x0a000000 | Math.floor(rand() * 0x1000000)) & maskOf(len)) >>> 0;
    const key = `${addr}/${len}`;
    if (seen.has(key)) continue;
    seen.add(key);
    addrs[i] = addr;
    masks[i] = maskOf(len) >>> 0;
    lens[i] = len;
    i++;
  }
  return { addrs, masks, lens };
}

/** Longest match by scanning every prefix; -1 when none matches. */
function linearLookup(p: Prefixes, addr: number): number {
  let best = -1;
  let bestLen = -1;
  const n = p.addrs.length;
  for (let i = 0; i < n; i++) {
    if (((addr & p.masks[i]) >>> 0) === p.addrs[i] && p.lens[i] > bestLen) {
      best = i;
      bestLen = p.lens[i];
    }
  }
  return best;
}

/** Half the lookups hit a known prefix (a random host inside it), half a random 10/8 address. */
function makeQueries(p: Prefixes, count: number, rand: () => number): Uint32Array {
  const q = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    if (rand() < 0.5) {
      const k = Math.floor(rand() * p.addrs.length);
      q[i] = (p.addrs[k] | (Math.floor(rand() * 0xffffffff) & ~p.masks[k])) >>> 0;
    } else {
      q[i] = (0x0a000000 | Math.floor(rand() * 0x1000000)) >>> 0;
    }
  }
  return q;
}

/** Runs `fn` over the queries until at least minMs passed; returns lookups per second. */
function rate(queries: Uint32Array, fn: (a: number) => number, minMs: number): number {
  let sink = 0;
  let done = 0;
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  do {
    for (let i = 0; i < queries.length; i++) sink += fn(queries[i]);
    done += queries.length;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e6;
  } while (elapsed < minMs);
  if (sink === 0.5) process.stdout.write(''); // keep `sink` live so the loop is not optimised away
  return (done / elapsed) * 1000;
}

export interface LpmResult {
  prefixes: number;
  lpmLookupsPerSec: number;
  linearLookupsPerSec: number;
  speedup: number;
}

export function measureLpm(sizes: number[], lookups: number, minMs = 1000): LpmResult[] {
  const out: LpmResult[] = [];
  for (const n of sizes) {
    const rand = rng(n);
    const p = makePrefixes(n, rand);
    const table = new LpmTable<number>();
    for (let i = 0; i < n; i++) table.insert(p.addrs[i], p.lens[i], i);
    // The linear scan costs O(n) per lookup: fewer queries for big tables keep the run bounded.
    const q = makeQueries(p, Math.max(1000, Math.min(lookups, Math.floor(2e8 / n))), rand);
    for (let i = 0; i < Math.min(q.length, 20_000); i++) {
      const a = table.lookup(q[i]) ?? -1;
      const b = linearLookup(p, q[i]);
      if (a !== b) throw new Error(`LpmTable and the linear scan disagree on ${q[i]} with ${n} prefixes: ${a} vs ${b}`);
    }
    const lpm = rate(q, (a) => table.lookup(a) ?? -1, minMs);
    const lin = rate(q, (a) => linearLookup(p, a), minMs);
    out.push({ prefixes: n, lpmLookupsPerSec: lpm, linearLookupsPerSec: lin, speedup: lpm / lin });
  }
  return out;
}

const fmt = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(1)} M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)} k` : x.toFixed(0));

export function formatLpm(rs: LpmResult[]): string {
  return [
    '| prefixes | LpmTable lookups/s | linear scan lookups/s | LpmTable / linear |',
    '|---:|---:|---:|---:|',
    ...rs.map((r) => `| ${r.prefixes.toLocaleString('en')} | ${fmt(r.lpmLookupsPerSec)} | ${fmt(r.linearLookupsPerSec)} | ${r.speedup.toFixed(1)}× |`),
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '10,1000,100000' },
      lookups: { type: 'string', default: '2000000' },
      out: { type: 'string', default: 'perf/results' },
    },
  });
  const sizes = values.sizes!.split(',').map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 1_000_000)) throw new Error(`--sizes: ${values.sizes} must be integers 1..1000000`);
  const lookups = Number(values.lookups);
  const rs = measureLpm(sizes, lookups);
  const md = `Route lookups, ${new Date().toISOString().slice(0, 10)}, \`node dist/perf/micro-lpm.js --sizes ${values.sizes}\` (${os.cpus().length} CPUs, one thread)\n\n${formatLpm(rs)}`;
  process.stdout.write(md + '\n');
  await fs.mkdir(values.out!, { recursive: true });
  await fs.writeFile(path.join(values.out!, 'micro-lpm.md'), md + '\n');
  await fs.writeFile(path.join(values.out!, 'micro-lpm.json'), JSON.stringify(rs, null, 2) + '\n');
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`micro-lpm: ${e.message}\n`);
    process.exit(1);
  });
}
