// Encapsulation and decapsulation cost per packet for each weft backend, with no I/O: the
// backends' own encap()/decap() as the daemon's hot loop calls them, over batches of 64 packets
// in one slab, at 64, 512 and 1,400 bytes. The reference in the same run is copying the packet
// once (Buffer.copy of the same bytes): the cost weft avoids by writing outer headers in place,
// in the headroom in front of each packet, instead of assembling a new datagram.
//
// Timed with tinybench: per packet size, one Bench holds the copy and every backend's encap and
// decap, warmed up and then run one after the other, so all figures of a size share a run.
//
//   node dist/perf/micro-encap.js [--sizes 64,512,1400] [--ms 500] [--out perf/results]
import { parseArgs } from 'node:util';
import { describeError, writeMicroReport } from './micro-report';
import { Bench, hrtimeNow, type Task } from 'tinybench';
import { ENCAP_OK, type Backend } from '../src/datapath/backend';
import { BACKENDS as TABLE, BACKEND_TYPES } from '../src/datapath/backends';
import { PeerCounters, type Peer } from '../src/datapath/peer';
import { PacketList } from '../src/io/packet-list';
import { buildIpv4Packet } from '../src/packet/builder';
import { parseCidr, parseIpv4 } from '../src/route/address';
import { parseMs, parseSizes } from './micro-lpm';

/** Packets per PacketList, as the daemon moves them. */
const BATCH = 64;
/**
 * PacketLists per tinybench call. tinybench times every call on its own (two clock reads, ~60
 * ns on this machine's Node 20), which next to 64 udp encaps of a few ns each would be a large
 * part of the figure; over 16 lists (1,024 packets) it is a few percent at most. Every
 * per-packet figure is the per-call figure divided by the packets per call.
 */
const REPEAT = 16;
const PER_CALL = BATCH * REPEAT;
const A_PUB = parseIpv4('192.168.77.11');
const B_PUB = parseIpv4('192.168.77.12');
const A_SUB = parseCidr('10.244.1.0/24');
const B_SUB = parseCidr('10.244.2.0/24');
/** The backends that encapsulate (all that run a userspace datapath: host-gw has none). */
export type EncapType = Exclude<(typeof BACKEND_TYPES)[number], 'host-gw'>;
export const BACKENDS = BACKEND_TYPES.filter((t): t is EncapType => TABLE[t].needsTun);

/**
 * Where, in what encap() queued, the datagram a receiving node's socket returns starts: the udp
 * and vxlan backends hand their UDP sockets only what follows the UDP header (the kernel adds
 * and strips IPv4+UDP), and a protocol-4 raw socket returns ipip's outer IPv4 header along with
 * the packet.
 */
const RECV_SKIP: Record<EncapType, number> = { udp: 0, vxlan: 0, ipip: 0 };

/** Node `self`'s backend, knowing `other` as its one peer. */
function setup(type: EncapType, self: [number, typeof A_SUB], other: [number, typeof B_SUB]): { backend: Backend; peer: Peer } {
  const spec = TABLE[type];
  const backend = spec.create({ publicIp: self[0], subnet: self[1], port: spec.defaultPort, vni: 1 });
  const peer: Peer = {
    subnet: other[1],
    publicIp: other[0],
    port: spec.defaultPort,
    backendData: spec.leaseData(other[0], 1),
    local: false,
    direct: false,
    backendState: null,
    counters: new PeerCounters(),
  };
  backend.onPeerAdded(peer);
  return { backend, peer };
}

/** One task's figures, per packet. */
export interface Timing {
  /** Packets per tinybench call; every per-packet figure is a per-call figure divided by it. */
  batch: number;
  /** Calls tinybench timed. */
  samples: number;
  /** Mean nanoseconds per packet. */
  nsPerOp: number;
  /** Packets per second, from the mean call time. */
  perSec: number;
  /** tinybench's relative margin of error of the mean (95 %, Student's t), percent. */
  rmePct: number;
  /** 99th percentile of call time / batch, ns: of a batch's average packet, not of single packets. */
  p99Ns: number;
}

export interface EncapResult {
  backend: EncapType | 'copy (reference)';
  size: number;
  /** For the reference row: the copy. */
  encap: Timing;
  /** null for the reference row. */
  decap: Timing | null;
}

export interface EncapOptions {
  /** tinybench time budget per task, ms. */
  ms?: number;
  /** tinybench warm-up per task, ms; default min(ms, 100). */
  warmupMs?: number;
  /** Replaces the receiving node's backend; tests pass one with a broken decap to see the round-trip check fail. */
  receiver?: (type: EncapType, backend: Backend) => Backend;
}

function timingOf(task: Task, batch: number): Timing {
  const r = task.result;
  if (!r || r.error !== undefined) throw new Error(`task ${task.name} has no result${r?.error ? `: ${describeError(r.error)}` : ''}`);
  return { batch, samples: r.samples.length, nsPerOp: (r.mean * 1e6) / batch, perSec: r.hz * batch, rmePct: r.rme, p99Ns: (r.p99 * 1e6) / batch };
}

/**
 * Decapsulates each received datagram and requires the inner packet back, byte for byte and
 * with its length: the figures are only worth having for an encap/decap pair that round-trips.
 */
function checkRoundTrip(
  type: EncapType,
  size: number,
  inner: Buffer,
  rx: Buffer,
  rxSlot: number,
  rxLen: Int32Array,
  receiver: { backend: Backend; peer: Peer },
  replies: PacketList,
): void {
  for (let i = 0; i < BATCH; i++) {
    const start = i * rxSlot;
    const r = receiver.backend.decap(rx, start, rxLen[i], receiver.peer, replies);
    if (r < 0) throw new Error(`${type} decap refused its own ${size}-byte packet: drop ${-r}`);
    const len = start + rxLen[i] - r;
    if (len !== inner.length || inner.compare(rx, r, r + len) !== 0) {
      throw new Error(`${type} decap of its own encap does not give back the ${size}-byte packet (packet ${i}: inner at ${r - start}, ${len} bytes)`);
    }
  }
}

export async function measureEncap(sizes: number[], opts: EncapOptions = {}): Promise<EncapResult[]> {
  const ms = opts.ms ?? 500;
  const out: EncapResult[] = [];
  for (const size of sizes) {
    const inner = buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', payload: new Uint8Array(Math.max(0, size - 28)) });
    const bench = new Bench({ time: ms, warmupTime: opts.warmupMs ?? Math.min(ms, 100), now: hrtimeNow, throws: true });
    const checks: Array<() => void> = [];

    // Reference: one copy of each packet into another slab.
    const src = Buffer.alloc(BATCH * size);
    const dst = Buffer.alloc(BATCH * size);
    for (let i = 0; i < BATCH; i++) inner.copy(src, i * size);
    bench.add('copy', () => {
      for (let k = 0; k < REPEAT; k++) {
        for (let i = 0; i < BATCH; i++) src.copy(dst, i * size, i * size, i * size + size);
      }
    });

    for (const type of BACKENDS) {
      // Node A encapsulates for B; B decapsulates what A sent (vxlan checks its own VTEP MAC).
      const { backend, peer } = setup(type, [A_PUB, A_SUB], [B_PUB, B_SUB]);
      const receiver = setup(type, [B_PUB, B_SUB], [A_PUB, A_SUB]);
      if (opts.receiver) receiver.backend = opts.receiver(type, receiver.backend);
      const slot = backend.headroom + size;
      const tx = new PacketList({ capacity: BATCH, slotSize: slot, headroom: backend.headroom });
      for (let i = 0; i < BATCH; i++) inner.copy(tx.buf, i * slot + backend.headroom);
      const encapBatch = (): void => {
        tx.clear();
        for (let i = 0; i < BATCH; i++) {
          const r = backend.encap(tx.buf, i * slot + backend.headroom, size, peer, tx);
          if (r !== ENCAP_OK) throw new Error(`${type} encap refused a ${size}-byte packet: drop ${r}`);
        }
      };
      // What a receiver reads: the encapsulated datagrams, copied into a receive slab.
      encapBatch();
      if (tx.count !== BATCH) throw new Error(`${type} encap queued ${tx.count} of ${BATCH} packets`);
      const rxSlot = slot + 64;
      const rx = Buffer.alloc(BATCH * rxSlot);
      const rxLen = new Int32Array(BATCH);
      for (let i = 0; i < BATCH; i++) {
        const o = tx.offs[i] + RECV_SKIP[type];
        rxLen[i] = tx.lens[i] - RECV_SKIP[type];
        tx.buf.copy(rx, i * rxSlot, o, o + rxLen[i]);
      }
      const replies = new PacketList({ capacity: 4, slotSize: 128, headroom: 0 });
      const check = (): void => checkRoundTrip(type, size, inner, rx, rxSlot, rxLen, receiver, replies);
      check();
      // Checked again after timing: what decap was timed on must still round-trip.
      checks.push(check);

      bench.add(`${type} encap`, () => {
        for (let k = 0; k < REPEAT; k++) encapBatch();
      });
      const rb = receiver.backend;
      const rp = receiver.peer;
      bench.add(`${type} decap`, () => {
        for (let k = 0; k < REPEAT; k++) {
          for (let i = 0; i < BATCH; i++) {
            const r = rb.decap(rx, i * rxSlot, rxLen[i], rp, replies);
            if (r < 0) throw new Error(`${type} decap refused its own ${size}-byte packet: drop ${-r}`);
          }
        }
      });
    }

    await bench.warmup();
    await bench.run();
    for (const check of checks) check();
    const tasks = bench.tasks;
    out.push({ backend: 'copy (reference)', size, encap: timingOf(tasks[0], PER_CALL), decap: null });
    BACKENDS.forEach((type, j) => {
      out.push({ backend: type, size, encap: timingOf(tasks[1 + 2 * j], PER_CALL), decap: timingOf(tasks[2 + 2 * j], PER_CALL) });
    });
  }
  return out;
}

const fmtNs = (x: number): string => (x >= 100 ? Math.round(x).toLocaleString('en') : x.toFixed(1));
const withRme = (t: Timing): string => `${fmtNs(t.nsPerOp)} ±${t.rmePct.toFixed(1)}%`;

export const ENCAP_COLUMNS = ['backend', 'packet bytes', 'encap ns/packet', 'encap p99 ns', 'decap ns/packet', 'decap p99 ns'];

export function formatEncap(rs: EncapResult[]): string {
  return [
    `| ${ENCAP_COLUMNS.join(' | ')} |`,
    '|---|---:|---:|---:|---:|---:|',
    ...rs.map(
      (r) =>
        `| ${r.backend} | ${r.size} | ${withRme(r.encap)} | ${fmtNs(r.encap.p99Ns)} | ${r.decap === null ? '–' : withRme(r.decap)} | ${r.decap === null ? '–' : fmtNs(r.decap.p99Ns)} |`,
    ),
  ].join('\n');
}

export interface EncapArgs {
  sizes: number[];
  ms: number;
  out: string;
}

export function parseEncapArgs(argv: string[]): EncapArgs {
  const { values } = parseArgs({
    args: argv,
    options: { sizes: { type: 'string', default: '64,512,1400' }, ms: { type: 'string', default: '500' }, out: { type: 'string', default: 'perf/results' } },
  });
  // 28: an IPv4 header and a UDP header, the smallest packet the builder makes; 9000: jumbo frames.
  return { sizes: parseSizes(values.sizes!, 28, 9000), ms: parseMs(values.ms!), out: values.out! };
}

async function main(): Promise<void> {
  const args = parseEncapArgs(process.argv.slice(2));
  const rs = await measureEncap(args.sizes, { ms: args.ms });
  await writeMicroReport({
    name: 'micro-encap',
    title: 'Encap/decap',
    msPerTask: args.ms,
    table: formatEncap(rs),
    legend: `ns/packet from tinybench's mean call time; one call is ${REPEAT} batches of ${BATCH} packets, and every figure is per packet (per call divided by ${PER_CALL}). The copy row is one Buffer.copy of each packet. ± is the relative margin of error of the mean (95 %); p99 is the 99th percentile of call time divided by ${PER_CALL}.`,
    out: args.out,
    json: { packetsPerCall: PER_CALL, results: rs },
  });
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`micro-encap: ${e.message}\n`);
    process.exit(1);
  });
}
