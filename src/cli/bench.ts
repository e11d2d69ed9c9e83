// weft bench: every data plane side by side on labs of its own; Markdown on stdout, results.json,
// results.md and charts (SVG, PNG where rsvg-convert exists) in --out.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { checkPrefix } from '../lab/state';
import { run as runCmd } from '../lab/process';
import { Progress } from '../bench/progress';
import { formatMarkdown } from '../bench/report';
import { plannedSeconds, runBench } from '../bench/run';
import { renderOverviewSvg, renderScalingSvg, svgToPng } from '../bench/chart';
import { BENCH_BUSY_POLL_US } from '../bench/tunnels';
import { ALL_TUNNELS, OFFLOAD_COMPARE, OFFLOAD_MECHANISMS_SET, TUNNELS, type BenchOptions, type Tunnel } from '../bench/types';
import { makeDirs } from '../util/make-dirs';

/** The package's own perf/results, wherever weft is run from (dist/src/cli → the package root). */
const DEFAULT_OUT = path.resolve(__dirname, '..', '..', '..', 'perf', 'results');
const DEFAULT_PREFIX = 'weft-bench-';
/** Short names for weft's own data planes, as `weft daemon --backend` spells them. */
const ALIASES: Record<string, Tunnel> = { udp: 'weft-udp', vxlan: 'weft-vxlan', ipip: 'weft-ipip', 'host-gw': 'weft-host-gw' };

export const USAGE = `usage: weft bench [flags]    (root: it forms network namespaces)

Forms a 2-node netns lab (one pod each) per data plane and measures pod to pod: TCP throughput
(1 and 4 streams, and the scaling curve), 64-byte UDP packets delivered per second, idle RTT
p50/p99, CPU seconds per GB (tunnel processes, whole machine), header bytes per packet (from a
capture) and the effective MTU (DF pings). Markdown on stdout; results.json, results.md,
bench.svg and scaling.svg (and .png via rsvg-convert) in --out.

  --backends LIST   data planes, comma-separated (default: ${TUNNELS.join(', ')});
                    also known: ${ALL_TUNNELS.filter((t) => !TUNNELS.includes(t)).join(', ')}
                    (udp, vxlan, ipip, host-gw stand for weft-udp, weft-vxlan, ...)
  --offload-compare the default data planes plus weft's three with --no-offload and weft-udp
                    with --busy-poll-us ${BENCH_BUSY_POLL_US}, side by side
  --offload-mechanisms  weft-udp with each combination of its offloads (weft daemon
                    --offload tun,gso,gro: all, none and the six between) beside
                    kernel-vxlan and openvpn: what each mechanism pays, one at a time
  --runs N          repetitions of every measurement (3); figures are median (min–max)
  --seconds S       length of each throughput and packet-rate test (5)
  --streams LIST    parallel TCP streams of the scaling curve (1,2,4,8); must hold 1 and 4
  --pings N         echo requests per RTT sample (300)
  --quick           one run of 2 s tests, streams 1,4, 100 pings: all data planes in under 2 minutes
  --out DIR         where the files go (${path.relative(process.cwd(), DEFAULT_OUT) || '.'})
  --prefix P        namespace prefix of the bench's labs (${DEFAULT_PREFIX})
`;

function posInt(name: string, v: string, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be an integer from 1 to ${max}, got "${v}"`);
  return n;
}

export function parseTunnels(list: string): Tunnel[] {
  const out: Tunnel[] = [];
  for (const raw of list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const t = (ALL_TUNNELS as readonly string[]).includes(raw) ? (raw as Tunnel) : ALIASES[raw];
    if (!t) throw new Error(`--backends: unknown "${raw}" (known: ${ALL_TUNNELS.join(', ')})`);
    if (!out.includes(t)) out.push(t);
  }
  if (out.length === 0) throw new Error('--backends: empty list');
  // Report in the canonical order whatever order they were given in.
  return ALL_TUNNELS.filter((t) => out.includes(t));
}

export interface ParsedBench {
  options: BenchOptions;
  out: string;
  prefix: string;
}

export function parseBenchArgs(argv: string[]): ParsedBench | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      backends: { type: 'string' },
      runs: { type: 'string' },
      seconds: { type: 'string' },
      streams: { type: 'string' },
      pings: { type: 'string' },
      quick: { type: 'boolean', default: false },
      'offload-compare': { type: 'boolean', default: false },
      'offload-mechanisms': { type: 'boolean', default: false },
      out: { type: 'string', default: DEFAULT_OUT },
      prefix: { type: 'string', default: DEFAULT_PREFIX },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const quick = values.quick!;
  const streams = values.streams
    ? [...new Set(values.streams.split(',').map((s) => posInt('streams', s.trim(), 128)))].sort((a, b) => a - b)
    : quick
      ? [1, 4]
      : [1, 2, 4, 8];
  // The table's 1- and 4-stream columns come from the scaling curve's points.
  if (!streams.includes(1) || !streams.includes(4)) throw new Error(`--streams must include 1 and 4, got "${values.streams}"`);
  const sets = [values.backends !== undefined, values['offload-compare'], values['offload-mechanisms']].filter(Boolean).length;
  if (sets > 1) throw new Error('give one of --backends, --offload-compare and --offload-mechanisms');
  const set = values['offload-compare'] ? OFFLOAD_COMPARE : values['offload-mechanisms'] ? OFFLOAD_MECHANISMS_SET : TUNNELS;
  const options: BenchOptions = {
    tunnels: parseTunnels(values.backends ?? set.join(',')),
    runs: values.runs ? posInt('runs', values.runs, 100) : quick ? 1 : 3,
    seconds: values.seconds ? posInt('seconds', values.seconds, 600) : quick ? 2 : 5,
    streams,
    pings: values.pings ? posInt('pings', values.pings, 100_000) : quick ? 100 : 300,
    quick,
  };
  if (options.pings < 10) throw new Error('--pings must be at least 10 (p99 of fewer is the worst sample)');
  return { options, out: path.resolve(values.out!), prefix: checkPrefix(values.prefix!) };
}

/** Tools the bench runs, by the Debian package scripts/setup.sh installs them from. */
async function checkTools(tunnels: Tunnel[]): Promise<void> {
  const need: [string, string][] = [
    ['iperf3', 'iperf3'],
    ['tcpdump', 'tcpdump'],
    ['ping', 'iputils-ping'],
  ];
  if (tunnels.includes('openvpn')) need.push(['openvpn', 'openvpn']);
  const missing: string[] = [];
  for (const [bin, pkg] of need) {
    const r = await runCmd('sh', ['-c', `command -v ${bin}`], { timeoutMs: 5_000 });
    if (r.code !== 0) missing.push(`${bin} (Debian package ${pkg})`);
  }
  if (missing.length) throw new Error(`missing ${missing.join(', ')}: run scripts/setup.sh as root (the README's set-up)`);
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseBenchArgs(argv);
  if (parsed === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const { options, out, prefix } = parsed;
  if (process.getuid?.() !== 0) throw new Error('needs root: it creates network namespaces, TUN devices and veth pairs (run it as root)');
  await checkTools(options.tunnels);
  await makeDirs(out);

  const command = ['weft', 'bench', ...argv].join(' ');
  const progress = new Progress(plannedSeconds(options), process.stderr);
  const ac = new AbortController();
  const onSig = (): void => {
    progress.note('weft bench: interrupted; tearing the lab down');
    ac.abort();
  };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  let results;
  try {
    results = await runBench({ ...options, prefix, command }, { step: (l) => progress.step(l), advance: (w) => progress.advance(w), signal: ac.signal });
  } catch (e) {
    // Interrupted: the lab is gone (runBench tears it down on the way out), and what failed
    // because its namespace vanished under it is not worth reporting. 130 = 128 + SIGINT.
    if (ac.signal.aborted) {
      progress.finish('weft bench: interrupted; lab removed, nothing written');
      return 130;
    }
    progress.finish('weft bench: failed; lab removed');
    throw e;
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
  progress.finish(`weft bench: done in ${Math.round(results.elapsedSec)} s`);

  const md = formatMarkdown(results);
  process.stdout.write(md);
  const files = [path.join(out, 'results.json'), path.join(out, 'results.md')];
  await fs.writeFile(files[0], JSON.stringify(results, null, 2) + '\n');
  await fs.writeFile(files[1], md);
  for (const [name, svg] of [
    ['bench', renderOverviewSvg(results)],
    ['scaling', renderScalingSvg(results)],
  ] as const) {
    const f = path.join(out, `${name}.svg`);
    await fs.writeFile(f, svg);
    files.push(f);
    const png = path.join(out, `${name}.png`);
    if ((await svgToPng(f, png)) === 'written') files.push(png);
  }
  const shown = (f: string): string => {
    const rel = path.relative(process.cwd(), f);
    return rel && !rel.startsWith('..') ? rel : f;
  };
  process.stderr.write(`weft bench: wrote ${files.map(shown).join(', ')}\n`);
  return 0;
}
