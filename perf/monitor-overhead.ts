// Does a `weft monitor` that never reads slow forwarding? On a 2-node netns lab, iperf3 TCP
// throughput from a pod on n1 to a pod on n2 with nobody watching n1, with one monitor attached
// to n1 that sends its request and then never reads (`--type drop`, what an operator leaves
// open), and with one that asks for everything (`--type all`, every packet a candidate for a
// trace), rounds alternating so drift hits all three alike. Prints each run, the medians and
// the ratios to "none". Then a micro part with no I/O: the Datapath's TUN loop (devices that
// only copy packets in) over full batches with Pipeline.tap null — what every daemon runs
// while nobody watches — against the same with a tap that does nothing, the per-batch hook's
// whole cost when set.
//
//   node dist/perf/monitor-overhead.js [--rounds 5] [--seconds 5] [--backend udp] [--micro-batches 200000]
// (root: it forms a lab; the lab is taken down at the end, on failure too)
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { assembleNode } from '../src/datapath/node';
import type { PacketDevice } from '../src/io/packet-device';
import type { Transport } from '../src/io/transport';
import type { PacketTap } from '../src/datapath/tap';
import { iperf3Pair, labDown, labUp, type LabState } from '../src/lab';
import { buildIpv4Packet } from '../src/packet/builder';
import { parseCidr } from '../src/route/address';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '5' },
    backend: { type: 'string', default: 'udp' },
    'micro-batches': { type: 'string', default: '200000' },
    'skip-lab': { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** A monitor that asks and then never reads: its socket is paused, so the daemon's buffer fills. */
function stuckMonitor(path: string, type: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('error', reject);
    s.once('connect', () => {
      s.write(JSON.stringify({ type, rate: 10_000 }) + '\n');
      s.pause();
      resolve(s);
    });
  });
}

async function lab(): Promise<void> {
  const prefix = `weft-perf-mon-${process.pid.toString(36)}-`;
  let state: LabState | undefined;
  try {
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: values.backend as 'udp' });
    const sock = state.nodes[0].monitorSocket!;
    const modes = ['none', 'drop', 'all'] as const;
    const results: Record<string, number[]> = { none: [], drop: [], all: [] };
    for (let r = 0; r < rounds; r++) {
      for (const mode of modes) {
        const m = mode === 'none' ? undefined : await stuckMonitor(sock, mode);
        const res = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds });
        m?.destroy();
        if (!res.ok) throw new Error(`iperf3 (${mode}): ${res.error}`);
        results[mode].push(res.bitsPerSecond / 1e9);
        process.stdout.write(`round ${r + 1} ${mode.padEnd(4)} ${(res.bitsPerSecond / 1e9).toFixed(3)} Gbit/s\n`);
      }
    }
    const base = median(results.none);
    process.stdout.write(`\n${values.backend}, ${rounds} rounds of ${seconds} s iperf3 TCP n1/p1 → n2/p1, monitor on n1 never reading:\n`);
    for (const mode of modes) {
      const med = median(results[mode]);
      process.stdout.write(
        `  ${(mode === 'none' ? 'no monitor' : `--type ${mode}`).padEnd(12)} median ${med.toFixed(3)} Gbit/s  (min ${Math.min(...results[mode]).toFixed(3)}, max ${Math.max(...results[mode]).toFixed(3)})  ratio ${(med / base).toFixed(3)}\n`,
      );
    }
  } finally {
    await labDown(prefix);
  }
}

function micro(): void {
  const batches = Number(values['micro-batches']);
  const network = parseCidr('10.244.0.0/16');
  const lease = (subnet: string, publicIp: string) => ({ subnet, publicIp, backendType: 'udp', backendData: {} });
  const pkt = buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', ttl: 64, payload: Buffer.alloc(1372), srcPort: 1, dstPort: 2, protocol: 17 });
  // A TUN that hands over the same 64 packets each read (copied into the slots, as read(2)
  // copies) and a socket that takes every batch: what is left is the datapath loop itself.
  const tun: PacketDevice = {
    read(list) {
      for (let i = 0; i < list.capacity; i++) {
        const off = i * list.slotSize + list.headroom;
        pkt.copy(list.buf, off);
        list.offs[i] = off;
        list.lens[i] = pkt.length;
      }
      list.count = list.capacity;
      return list.count;
    },
    write: (list) => list.count,
    onReadable: () => undefined,
  };
  const sock: Transport = { recv: () => 0, send: (list) => list.count, onReadable: () => undefined, close: () => undefined };
  const node = assembleNode({
    backend: { type: 'udp' },
    network,
    lease: lease('10.244.1.0/24', '192.168.77.11'),
    underlayMtu: 1500,
    devices: { tun, transport: sock },
  });
  node.peers.applySnapshot([lease('10.244.2.0/24', '192.168.77.12')]);
  const dp = node.datapath!;
  dp.start(() => undefined);
  const noop: PacketTap = { drop: () => undefined, batch: () => undefined, lost: () => undefined };
  const run = (tap: PacketTap | null): number => {
    node.pipeline!.tap = tap;
    const t0 = process.hrtime.bigint();
    for (let b = 0; b < batches; b++) dp.onTunReadable(1);
    return Number(process.hrtime.bigint() - t0) / (batches * 64);
  };
  run(null); // warm up
  const res: Record<string, number[]> = { null: [], noop: [] };
  for (let r = 0; r < 7; r++) {
    res.null.push(run(null));
    res.noop.push(run(noop));
  }
  dp.stop();
  const a = median(res.null);
  const b = median(res.noop);
  process.stdout.write(
    `\nmicro: the Datapath's TUN loop (read, pipeline.egress with udp encap, send), ${batches} batches of 64 × ${pkt.length}-byte packets, ` +
      `devices that only copy the packets in, 7 alternating runs:\n` +
      `  tap null (nobody watching)  median ${a.toFixed(1)} ns/packet  runs ${res.null.map((x) => x.toFixed(1)).join(' ')}\n` +
      `  tap set, doing nothing      median ${b.toFixed(1)} ns/packet  runs ${res.noop.map((x) => x.toFixed(1)).join(' ')}\n`,
  );
}

async function main(): Promise<void> {
  if (!values['skip-lab']) await lab();
  micro();
}

main().catch((e: unknown) => {
  process.stderr.write(`monitor-overhead: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
