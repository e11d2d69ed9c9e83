// Route lookups per second: weft's multibit-trie LpmTable (src/route/lpm.ts) against a linear
// scan over the same prefixes in the same run. The linear scan is what flannel's udp proxy does
// (proxy.c walks its route array for every packet), written here over typed arrays so the
// reference is as fast as a scan can be, and with longest-match semantics so both return the
// same answer (checked before timing).
//
// Timed with tinybench: per table size, one Bench holds both tasks, warmed up and then run
// one after the other, so each LpmTable figure has its linear-scan figure from the same run.
//
//   node dist/perf/micro-lpm.js [--sizes 10,1000,100000] [--ms 1000] [--out perf/results]
import { parseArgs } from 'node:util';
import { describeError, writeMicroReport } from './micro-report';
import { Bench, hrtimeNow, type Task } from 'tinybench';
import { LpmTable } from '../src/route/lpm';
import { maskOf } from '../src/route/address';
import { seededRandom as rng } from '../src/util/seeded-random';

/**
 * Lookups per tinybench call for LpmTable. tinybench times every call on its own (two clock
 * reads around it, ~60 ns on this machine's Node 20), which would swamp a ~20 ns lookup; over
 * 1,024 lookups that overhead is well under 1 %. Every per-lookup figure reported is the
 * per-call figure divided by the batch.
 */
const LPM_BATCH = 1024;
/**
 * The linear scan costs O(prefixes) per lookup, so fewer lookups per call keep a call in the
 * tens of microseconds to a millisecond at every size: 1,024 at 10 prefixes, 65 at 1,000, 1 at
 * 100,000 (where one scan alone is far above the per-call overhead).
 */
const linearBatch = (n: number): number => Math.max(1, Math.min(LPM_BATCH, Math.floor(65_536 / n)));
/** Queries both tasks cycle through; a power of two so the cursor wraps with a mask. */
const POOL = 1 << 16;

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
    if ((addr & p.masks[i]) >>> 0 === p.addrs[i] && p.lens[i] > bestLen) {
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

/** What the benchmark needs of a route table; LpmTable<number> is one. */
export interface LpmLike {
  insert(addr: number, len: number, value: number): void;
  lookup(addr: number): number | undefined;
}

/** One task's figures, per lookup. */
export interface Timing {
  /** Lookups per tinybench call; every per-lookup figure is a per-call figure divided by it. */
  batch: number;
  /** Calls tinybench timed. */
  samples: number;
  /** Lookups per second, from the mean call time. */
  perSec: number;
  /** Mean nanoseconds per lookup. */
  nsPerOp: number;
  /** tinybench's relative margin of error of the mean (95 %, Student's t), percent. */
  rmePct: number;
  /** 99th percentile of call time / batch, ns: of a batch's average lookup, not of single lookups. */
  p99Ns: number;
}

export interface LpmResult {
  prefixes: number;
  lpm: Timing;
  linear: Timing;
  /** LpmTable lookups/s over linear-scan lookups/s. */
  speedup: number;
}

export interface LpmOptions {
  /** tinybench time budget per task, ms. */
  ms?: number;
  /** tinybench warm-up per task, ms; default min(ms, 100). */
  warmupMs?: number;
  /** The table under test; LpmTable unless a test substitutes a broken one to see the cross-check fail. */
  makeTable?: () => LpmLike;
}

function timingOf(task: Task, batch: number): Timing {
  const r = task.result;
  if (!r || r.error !== undefined) throw new Error(`task ${task.name} has no result${r?.error ? `: ${describeError(r.error)}` : ''}`);
  return { batch, samples: r.samples.length, perSec: r.hz * batch, nsPerOp: (r.mean * 1e6) / batch, rmePct: r.rme, p99Ns: (r.p99 * 1e6) / batch };
}

export async function measureLpm(sizes: number[], opts: LpmOptions = {}): Promise<LpmResult[]> {
  const ms = opts.ms ?? 1000;
  const makeTable = opts.makeTable ?? ((): LpmLike => new LpmTable<number>());
  const out: LpmResult[] = [];
  for (const n of sizes) {
    const rand = rng(n);
    const p = makePrefixes(n, rand);
    const table = makeTable();
    for (let i = 0; i < n; i++) table.insert(p.addrs[i], p.lens[i], i);
    const q = makeQueries(p, POOL, rand);
    // Both must give the same answer before either is timed. Up to 20,000 queries, fewer for big
    // tables (each check is a full scan): about 2e8 prefix comparisons at most, 2,000 at 100,000.
    const checks = Math.min(POOL, 20_000, Math.max(1000, Math.floor(2e8 / n)));
    for (let i = 0; i < checks; i++) {
      const a = table.lookup(q[i]) ?? -1;
      const b = linearLookup(p, q[i]);
      if (a !== b) throw new Error(`LpmTable and the linear scan disagree on ${q[i]} with ${n} prefixes: ${a} vs ${b}`);
    }

    const linBatch = linearBatch(n);
    let sink = 0;
    let lpmAt = 0;
    let linAt = 0;
    const bench = new Bench({ time: ms, warmupTime: opts.warmupMs ?? Math.min(ms, 100), now: hrtimeNow, throws: true });
    // Two separate closures, each calling its lookup directly, so neither call site is shared
    // (a shared `fn(addr)` call would be polymorphic and cost both sides an indirect call).
    bench.add('LpmTable', () => {
      let s = 0;
      for (let i = 0; i < LPM_BATCH; i++) s += table.lookup(q[(lpmAt + i) & (POOL - 1)]) ?? -1;
      lpmAt = (lpmAt + LPM_BATCH) & (POOL - 1);
      sink += s;
    });
    bench.add('linear scan', () => {
      let s = 0;
      for (let i = 0; i < linBatch; i++) s += linearLookup(p, q[(linAt + i) & (POOL - 1)]);
      linAt = (linAt + linBatch) & (POOL - 1);
      sink += s;
    });
    await bench.warmup();
    await bench.run();
    if (sink === 0.5) process.stdout.write(''); // keep `sink` live so the lookups are not optimised away
    const lpm = timingOf(bench.tasks[0], LPM_BATCH);
    const linear = timingOf(bench.tasks[1], linBatch);
    out.push({ prefixes: n, lpm, linear, speedup: lpm.perSec / linear.perSec });
  }
  return out;
}

const fmt = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(1)} M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)} k` : x.toFixed(0));
const fmtNs = (x: number): string => (x >= 100 ? Math.round(x).toLocaleString('en') : x.toFixed(1));
const withRme = (t: Timing): string => `${fmt(t.perSec)} ±${t.rmePct.toFixed(1)}%`;

export const LPM_COLUMNS = [
  'prefixes',
  'LpmTable lookups/s',
  'LpmTable p99 ns/lookup',
  'linear scan lookups/s',
  'linear scan p99 ns/lookup',
  'LpmTable / linear',
];

export function formatLpm(rs: LpmResult[]): string {
  return [
    `| ${LPM_COLUMNS.join(' | ')} |`,
    '|---:|---:|---:|---:|---:|---:|',
    ...rs.map(
      (r) =>
        `| ${r.prefixes.toLocaleString('en')} | ${withRme(r.lpm)} | ${fmtNs(r.lpm.p99Ns)} | ${withRme(r.linear)} | ${fmtNs(r.linear.p99Ns)} | ${r.speedup >= 100 ? Math.round(r.speedup).toLocaleString('en') : r.speedup.toFixed(1)}× |`,
    ),
  ].join('\n');
}

/** A comma-separated list of integers in [min, max], or an Error that says which item is wrong. */
export function parseSizes(text: string, min: number, max: number): number[] {
  const items = text.split(',').map((s) => s.trim());
  const sizes: number[] = [];
  for (const s of items) {
    if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) {
      throw new Error(
        `--sizes ${JSON.stringify(text)}: ${JSON.stringify(s)} is not an integer in ${min}..${max} (expected a comma-separated list of integers)`,
      );
    }
    sizes.push(Number(s));
  }
  return sizes;
}

/** A time budget in milliseconds: a positive number, at most ten minutes. */
export function parseMs(text: string): number {
  const ms = Number(text);
  if (text.trim() === '' || !Number.isFinite(ms) || ms <= 0 || ms > 600_000)
    throw new Error(`--ms ${JSON.stringify(text)}: not a number of milliseconds in (0, 600000]`);
  return ms;
}

export interface LpmArgs {
  sizes: number[];
  ms: number;
  out: string;
}

export function parseLpmArgs(argv: string[]): LpmArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string', default: '10,1000,100000' },
      ms: { type: 'string', default: '1000' },
      out: { type: 'string', default: 'perf/results' },
    },
  });
  return { sizes: parseSizes(values.sizes!, 1, 1_000_000), ms: parseMs(values.ms!), out: values.out! };
}

async function main(): Promise<void> {
  const args = parseLpmArgs(process.argv.slice(2));
  const rs = await measureLpm(args.sizes, { ms: args.ms });
  await writeMicroReport({
    name: 'micro-lpm',
    title: 'Route lookups',
    msPerTask: args.ms,
    table: formatLpm(rs),
    legend: `Lookups/s from tinybench's mean call time. One call is a batch of ${LPM_BATCH.toLocaleString('en')} LpmTable lookups, or of linear scans: ${args.sizes.map((n) => `${linearBatch(n).toLocaleString('en')} at ${n.toLocaleString('en')} prefixes`).join(', ')}; every figure is per lookup (per call divided by the batch). ± is the relative margin of error of the mean (95 %); p99 is the 99th percentile of call time divided by the batch.`,
    out: args.out,
    json: { results: rs },
  });
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`micro-lpm: ${e.message}\n`);
    process.exit(1);
  });
}
