// Encapsulation and decapsulation cost per packet for each weft backend, with no I/O: the
// backends' own encap()/decap() as the daemon's hot loop calls them, over batches of 64 packets
// in one slab, at 64, 512 and 1,400 bytes. The reference in the same run is copying the packet
// once (Buffer.copy of the same bytes): the cost weft avoids by writing outer headers in place,
// in the headroom in front of each packet, instead of assembling a new datagram.
//
//   node dist/perf/micro-encap.js [--sizes 64,512,1400] [--ms 500] [--out perf/results]
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ENCAP_OK, type Backend } from '../src/datapath/backend';
import { createBackend, leaseDataFor } from '../src/datapath/backends';
import type { Peer } from '../src/datapath/peer';
import { parseNetConfig } from '../src/control/netconfig';
import { PacketList } from '../src/io/packet-list';
import { buildIpv4Packet } from '../src/packet/builder';
import { parseCidr, parseIpv4 } from '../src/route/cidr';

const BATCH = 64;
const A_PUB = parseIpv4('192.168.77.11');
const B_PUB = parseIpv4('192.168.77.12');
const A_SUB = parseCidr('10.244.1.0/24');
const B_SUB = parseCidr('10.244.2.0/24');
const TYPES = ['udp', 'vxlan', 'ipip'] as const;
type Encap = (typeof TYPES)[number];

/**
 * Where, in what encap() queued, the datagram a receiving node's socket returns starts: the udp
 * backend sends only the inner packet (the kernel adds IPv4+UDP), vxlan's raw socket output
 * carries outer IPv4 (20) + UDP (8) that a UDP receive socket strips, and a protocol-4 raw
 * socket returns ipip's outer IPv4 header along with the packet.
 */
const RECV_SKIP: Record<Encap, number> = { udp: 0, vxlan: 28, ipip: 0 };

/** Node `self`'s backend, knowing `other` as its one peer. */
function setup(type: Encap, self: [number, typeof A_SUB], other: [number, typeof B_SUB]): { backend: Backend; peer: Peer } {
  const config = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: type } });
  const s = createBackend(config, { publicIp: self[0], subnet: self[1] });
  const backend = s.backend!;
  const peer: Peer = { subnet: other[1], publicIp: other[0], port: s.port, backendData: leaseDataFor(config, other[0]), local: false, direct: false, backendState: null };
  backend.onPeerAdded(peer);
  return { backend, peer };
}

function nsPer(packets: number, t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / packets;
}

/** Repeats `batch` (which handles BATCH packets) for at least `ms`, returns ns per packet. */
function time(batch: () => void, ms: number): number {
  for (let i = 0; i < 2000; i++) batch(); // warm up: let the JIT settle on the hot path
  let n = 0;
  const t0 = process.hrtime.bigint();
  const until = t0 + BigInt(ms) * 1_000_000n;
  do {
    for (let i = 0; i < 256; i++) batch();
    n += 256 * BATCH;
  } while (process.hrtime.bigint() < until);
  return nsPer(n, t0);
}

export interface EncapResult {
  backend: Encap | 'copy (reference)';
  size: number;
  encapNs: number;
  decapNs: number | null;
}

export function measureEncap(sizes: number[], ms: number): EncapResult[] {
  const out: EncapResult[] = [];
  for (const size of sizes) {
    const inner = buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', payload: new Uint8Array(Math.max(0, size - 28)) });
    // Reference: one copy of each packet into another slab.
    const src = Buffer.alloc(BATCH * size);
    const dst = Buffer.alloc(BATCH * size);
    for (let i = 0; i < BATCH; i++) inner.copy(src, i * size);
    out.push({
      backend: 'copy (reference)',
      size,
      encapNs: time(() => {
        for (let i = 0; i < BATCH; i++) src.copy(dst, i * size, i * size, i * size + size);
      }, ms),
      decapNs: null,
    });
    for (const type of TYPES) {
      // Node A encapsulates for B; B decapsulates what A sent (vxlan checks its own VTEP MAC).
      const { backend, peer } = setup(type, [A_PUB, A_SUB], [B_PUB, B_SUB]);
      const receiver = setup(type, [B_PUB, B_SUB], [A_PUB, A_SUB]);
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
      const encapNs = time(encapBatch, ms);
      // What a receiver reads: the encapsulated datagrams, copied into a receive slab.
      encapBatch();
      const rxSlot = slot + 64;
      const rx = Buffer.alloc(BATCH * rxSlot);
      const rxLen = new Int32Array(BATCH);
      for (let i = 0; i < BATCH; i++) {
        const o = tx.offs[i] + RECV_SKIP[type];
        rxLen[i] = tx.lens[i] - RECV_SKIP[type];
        tx.buf.copy(rx, i * rxSlot, o, o + rxLen[i]);
      }
      const replies = new PacketList({ capacity: 4, slotSize: 128, headroom: 0 });
      const decapNs = time(() => {
        for (let i = 0; i < BATCH; i++) {
          const r = receiver.backend.decap(rx, i * rxSlot, rxLen[i], receiver.peer, replies);
          if (r < 0) throw new Error(`${type} decap refused its own ${size}-byte packet: drop ${-r}`);
        }
      }, ms);
      out.push({ backend: type, size, encapNs, decapNs });
    }
  }
  return out;
}

export function formatEncap(rs: EncapResult[]): string {
  return [
    '| backend | packet bytes | encap ns/packet | decap ns/packet |',
    '|---|---:|---:|---:|',
    ...rs.map((r) => `| ${r.backend} | ${r.size} | ${r.encapNs.toFixed(1)} | ${r.decapNs === null ? '–' : r.decapNs.toFixed(1)} |`),
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { sizes: { type: 'string', default: '64,512,1400' }, ms: { type: 'string', default: '500' }, out: { type: 'string', default: 'perf/results' } },
  });
  const sizes = values.sizes!.split(',').map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 28 || n > 9000)) throw new Error(`--sizes: ${values.sizes} must be integers 28..9000`);
  const rs = measureEncap(sizes, Number(values.ms));
  const md = `Encap/decap, ${new Date().toISOString().slice(0, 10)}, \`node dist/perf/micro-encap.js --sizes ${values.sizes}\` (${os.cpus().length} CPUs, one thread, batches of ${BATCH})\n\n${formatEncap(rs)}`;
  process.stdout.write(md + '\n');
  await fs.mkdir(values.out!, { recursive: true });
  await fs.writeFile(path.join(values.out!, 'micro-encap.md'), md + '\n');
  await fs.writeFile(path.join(values.out!, 'micro-encap.json'), JSON.stringify(rs, null, 2) + '\n');
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`micro-encap: ${e.message}\n`);
    process.exit(1);
  });
}
