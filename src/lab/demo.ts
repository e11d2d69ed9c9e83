// `weft lab demo` (what `npm run lab` runs): a fresh 3-node lab, ping between pods on every
// pair of nodes, one short iperf3, a summary, and the lab left up to explore.
import { labDown } from './down';
import { table } from './status';
import { formatBps, iperf3Pair, pingMatrix, type IperfResult, type PingResult } from './traffic';
import { labUp, type LabUpOptions } from './up';
import { DEFAULT_PREFIX, type LabState } from './state';

export interface DemoResult {
  state: LabState;
  pings: PingResult[];
  iperf: IperfResult | null;
  /** Every ping pair answered and iperf3 (when run) moved data. */
  ok: boolean;
}

export async function labDemo(opts: LabUpOptions = {}): Promise<DemoResult> {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const log = opts.log ?? (() => undefined);
  await labDown(prefix, { log });
  const state = await labUp({ nodes: 3, backend: 'udp', ...opts, prefix });

  const pings = await pingMatrix(state, {
    signal: opts.signal,
    onResult: (r) => log(`ping ${r.from} → ${r.to} (${r.dst}): ${r.received}/${r.transmitted}`),
  });

  // Client and server on two different nodes, so the stream crosses the overlay.
  let iperf: IperfResult | null = null;
  const client = state.pods[0];
  const server = client && state.pods.find((p) => p.node !== client.node);
  if (client && server) {
    log(`iperf3 ${client.name} → ${server.name} (3 s, 1 TCP stream)`);
    iperf = await iperf3Pair(prefix, client.name, server.name, { seconds: 3 });
  }
  const ok = pings.every((p) => p.ok) && (iperf === null || iperf.ok);
  return { state, pings, iperf, ok };
}

export function formatDemo(r: DemoResult): string {
  const cli = 'weft lab';
  const prefixFlag = r.state.prefix === DEFAULT_PREFIX ? '' : ` --prefix ${r.state.prefix}`;
  let out = table(
    ['FROM', 'TO', 'DST', 'LOSS', 'RTT AVG', 'RESULT'],
    r.pings.map((p) => [p.from, p.to, p.dst, `${p.loss}%`, p.rttAvgMs === null ? '-' : `${p.rttAvgMs.toFixed(3)} ms`, p.ok ? 'ok' : 'FAIL']),
  );
  if (r.iperf) {
    const i = r.iperf;
    out += '\n';
    out += table(
      ['IPERF3 CLIENT', 'SERVER', 'DST', 'TIME', 'THROUGHPUT', 'RETRANSMITS', 'RESULT'],
      [
        [
          i.client,
          i.server,
          i.dst,
          `${i.seconds} s`,
          i.ok ? formatBps(i.bitsPerSecond) : '-',
          i.retransmits === null ? '-' : String(i.retransmits),
          i.ok ? 'ok' : `FAIL: ${i.error ?? ''}`,
        ],
      ],
    );
  }
  const a = r.state.pods[0];
  const b = a && r.state.pods.find((p) => p.node !== a.node);
  out += `\nThe lab stays up (state and logs in ${r.state.dir}). Explore it with (\`weft\` is \`node bin/weft.js\` or \`npx weft\`):\n`;
  out += `  ${cli} status${prefixFlag}\n`;
  if (a && b) out += `  ${cli} exec${prefixFlag} ${a.name} -- ping -c 3 ${b.ip}\n`;
  out += `  ${cli} exec${prefixFlag} n1 -- ip route        # the overlay route into the TUN, cni0, eth0\n`;
  out += `  ${cli} exec${prefixFlag} ul -- tcpdump -ni br0 udp port 8285   # encapsulated traffic on the underlay\n`;
  out += `  ${cli} down${prefixFlag}\n`;
  return out;
}
