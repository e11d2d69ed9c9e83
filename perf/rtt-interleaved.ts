// Idle round trips of several data planes measured in interleaved rounds, for ratios that a
// drifting machine cannot fake. `weft bench` measures its rows one after another, minutes
// apart; on a shared 2-vCPU VM the kernel's own VXLAN p50 moves by 2x in that time, so the
// busy-poll target (p50 <= 1.5x kernel-vxlan + 20 µs) can pass or fail on which minute each row
// drew. Here every data plane gets its own 2-node lab, all formed side by side before the first
// ping (idle daemons sleep; a busy-poll daemon spins only for its window after its own lab's
// packets), and each round pings through every lab in turn, the order rotating. Each round's
// target is judged against the kernel's figure of that same round.
//
//   node dist/perf/rtt-interleaved.js [--rounds 10] [--pings 200] [--warmup 50]
//        [--planes kernel-vxlan,weft-udp,weft-udp-busy-poll,weft-udp-busy-poll-unpinned]
// (root: it forms labs; they are taken down at the end, on failure and on Ctrl-C too)
//
// The planes are `weft bench` rows set up by the bench's own code (the busy-poll row pins each
// daemon to a CPU of its own), plus weft-udp-busy-poll-unpinned: the same daemons left to the
// scheduler, to show what the pinning does.
import { parseArgs } from 'node:util';
import { rtt } from '../src/bench/measure';
import { median } from '../src/bench/stats';
import { SPECS, setUp } from '../src/bench/tunnels';
import { ALL_TUNNELS, type Tunnel } from '../src/bench/types';
import { labDown, labUp, mustReadState } from '../src/lab';

const UNPINNED = 'weft-udp-busy-poll-unpinned';
type Plane = Tunnel | typeof UNPINNED;

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '10' },
    pings: { type: 'string', default: '200' },
    warmup: { type: 'string', default: '50' },
    planes: { type: 'string', default: `kernel-vxlan,weft-udp,weft-udp-busy-poll,${UNPINNED}` },
  },
});
const rounds = Number(values.rounds);
const pings = Number(values.pings);
const warmup = Number(values.warmup);
const planes = values.planes.split(',') as Plane[];
for (const p of planes) {
  if (p !== UNPINNED && !(ALL_TUNNELS as readonly string[]).includes(p)) throw new Error(`unknown plane ${p} (known: ${ALL_TUNNELS.join(', ')}, ${UNPINNED})`);
}
if (!planes.includes('kernel-vxlan')) throw new Error('--planes must include kernel-vxlan: the target is judged against it');
if (!(rounds >= 1 && pings >= 20 && warmup >= 0)) throw new Error('--rounds >= 1, --pings >= 20, --warmup >= 0');

const target = (kernelUs: number) => 1.5 * kernelUs + 20;

interface Lab {
  plane: Plane;
  prefix: string;
  dst: string;
  pids: number[];
}

const tag = process.pid.toString(36);
const labs: Lab[] = [];
const ac = new AbortController();
const teardown = async () => {
  for (const l of labs) await labDown(l.prefix).catch(() => undefined);
};
process.once('SIGINT', () => {
  ac.abort();
  void teardown().then(() => process.exit(130));
});

async function form(plane: Plane, i: number): Promise<Lab> {
  const prefix = `weft-perf-rtt-${tag}${i}-`;
  const tunnel: Tunnel = plane === UNPINNED ? 'weft-udp-busy-poll' : plane;
  const spec = SPECS[tunnel];
  const lab: Lab = { plane, prefix, dst: '', pids: [] };
  labs.push(lab);
  await labUp({ prefix, nodes: 2, pods: 1, backend: spec.labBackend, daemonArgs: spec.daemonArgs, signal: ac.signal });
  const st = mustReadState(prefix);
  lab.dst = st.pods.find((p) => p.node === 'n2')!.ip;
  lab.pids = plane === UNPINNED ? st.nodes.map((n) => n.pid) : (await setUp(tunnel, prefix)).pids;
  return lab;
}

async function main(): Promise<void> {
  try {
    for (const [i, p] of planes.entries()) await form(p, i);
    const p50: Record<string, number[]> = Object.fromEntries(planes.map((p) => [p, []]));
    const cpu: Record<string, number[]> = Object.fromEntries(planes.map((p) => [p, []]));
    const met: Record<string, number> = Object.fromEntries(planes.map((p) => [p, 0]));
    console.log(`${rounds} rounds of ${pings} pings (after ${warmup} unmeasured) through each of: ${planes.join(', ')}`);
    for (let r = 0; r < rounds; r++) {
      const order = labs.map((_, i) => labs[(i + r) % labs.length]);
      const got: Record<string, number> = {};
      for (const l of order) {
        // Unmeasured pings first, the same for every plane: a busy-poll daemon starts polling
        // at its first packet, and the series after it is what the bench's row measures.
        if (warmup > 0) await rtt(l.prefix, 'n1/p1', l.dst, warmup, []);
        const t = await rtt(l.prefix, 'n1/p1', l.dst, pings, l.pids);
        got[l.plane] = t.p50 * 1000;
        p50[l.plane].push(t.p50 * 1000);
        cpu[l.plane].push(t.tunnelCpuPct);
      }
      const goal = target(got['kernel-vxlan']);
      const cells = planes.map((p) => {
        if (p === 'kernel-vxlan') return `${p} ${got[p].toFixed(0)}`;
        const ok = got[p] <= goal;
        if (ok) met[p]++;
        return `${p} ${got[p].toFixed(0)} (${ok ? 'met' : 'missed'})`;
      });
      console.log(`round ${r + 1}: target ${goal.toFixed(0)} µs | ${cells.join(' | ')}`);
    }
    console.log(
      '\n| data plane | RTT p50 µs, median of rounds (min–max) | ratio to kernel-vxlan, median of rounds | rounds within 1.5× kernel-vxlan + 20 µs | tunnel CPU % of a CPU |',
    );
    console.log('|---|--:|--:|--:|--:|');
    for (const p of planes) {
      const v = p50[p];
      const ratios = v.map((x, i) => x / p50['kernel-vxlan'][i]);
      const within = p === 'kernel-vxlan' ? '–' : `${met[p]} of ${rounds}`;
      const c = p === 'kernel-vxlan' ? '– (kernel)' : median(cpu[p]).toFixed(1);
      console.log(
        `| ${p} | ${median(v).toFixed(0)} (${Math.min(...v).toFixed(0)}–${Math.max(...v).toFixed(0)}) | ${median(ratios).toFixed(2)} | ${within} | ${c} |`,
      );
    }
  } finally {
    await teardown();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
