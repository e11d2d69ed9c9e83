// Per-packet cost and allocation of the datapath's decisions, with no I/O: the egress and
// ingress loops of src/datapath/pipeline.ts over preloaded batches, with garbage collections
// counted while they run. Zero collections over millions of packets is the check that the
// hot path allocates nothing per packet. The reference in the same run is a bare loop that
// only reads each packet's destination (the floor any per-packet work sits on).
//
//   node dist/perf/micro-pipeline.js [--packets 10000000] [--size 1400]
import { parseArgs } from 'node:util';
import { PerformanceObserver } from 'node:perf_hooks';
import { PacketList } from '../src/io/packet-list';
import { Pipeline } from '../src/datapath/pipeline';
import { UdpBackend } from '../src/datapath/backends/udp';
import { DatapathStats } from '../src/datapath/stats';
import { PeerCounters, type Peer } from '../src/datapath/peer';
import { RouteTable } from '../src/route/route-table';
import { parseCidr, parseIpv4 } from '../src/route/address';
import { buildIpv4Packet } from '../src/packet/builder';

const { values } = parseArgs({ options: { packets: { type: 'string', default: '10000000' }, size: { type: 'string', default: '1400' } } });
const total = Number(values.packets);
const size = Number(values.size);
const BATCH = 64;

let gcs = 0;
new PerformanceObserver((l) => (gcs += l.getEntries().length)).observe({ entryTypes: ['gc'] });

const network = parseCidr('10.244.0.0/16');
const local = parseCidr('10.244.1.0/24');
const routes = new RouteTable<Peer>();
const peersByAddr = new Map<number, Peer>();
routes.update((t) => {
  t.insert(local.addr, local.len, {
    subnet: local,
    publicIp: parseIpv4('192.168.77.11'),
    port: 8285,
    backendData: {},
    local: true,
    direct: false,
    backendState: null,
    counters: new PeerCounters(),
  });
  // 100 peers, as in a mid-sized cluster.
  for (let i = 2; i < 102; i++) {
    const p: Peer = {
      subnet: parseCidr(`10.244.${i}.0/24`),
      publicIp: parseIpv4(`192.168.77.${i}`),
      port: 8285,
      backendData: {},
      local: false,
      direct: false,
      backendState: null,
      counters: new PeerCounters(),
    };
    t.insert(p.subnet.addr, p.subnet.len, p);
    peersByAddr.set(p.publicIp, p);
  }
});
const stats = new DatapathStats();
const pipeline = new Pipeline({
  backend: new UdpBackend(),
  routes,
  peersByAddr,
  network,
  localSubnet: local,
  icmpSource: local.addr,
  stats,
  batchSize: BATCH,
  tunnelMtu: 1472,
});

function fill(list: PacketList, egress: boolean): void {
  list.clear();
  for (let i = 0; i < BATCH; i++) {
    const peer = 2 + (i % 100);
    const p = egress
      ? buildIpv4Packet({ src: '10.244.1.5', dst: `10.244.${peer}.7`, ttl: 255, payload: Buffer.alloc(size - 28) })
      : buildIpv4Packet({ src: `10.244.${peer}.7`, dst: '10.244.1.5', ttl: 64, payload: Buffer.alloc(size - 28) });
    const off = i * list.slotSize + list.headroom;
    p.copy(list.buf, off);
    list.push(off, p.length, parseIpv4(`192.168.77.${peer}`), 8285);
  }
}

const rx = new PacketList({ capacity: BATCH, slotSize: 2048, headroom: 64 });
const tx = PacketList.view(rx);
const ing = new PacketList({ capacity: BATCH, slotSize: 2048, headroom: 64 });
const toTun = PacketList.view(ing);
fill(rx, true);
fill(ing, false);
const headers = Array.from({ length: BATCH }, (_, i) => Buffer.from(rx.buf.subarray(rx.offs[i], rx.offs[i] + 20)));

function run(name: string, body: () => void): void {
  const batches = Math.ceil(total / BATCH);
  for (let i = 0; i < 2000; i++) body(); // warm up: let V8 optimise before measuring
  const g0 = gcs;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) body();
  const ns = Number(process.hrtime.bigint() - t0);
  const pkts = batches * BATCH;
  process.stdout.write(`| ${name} | ${(ns / pkts).toFixed(1)} | ${((pkts / ns) * 1e3).toFixed(1)} | ${gcs - g0} |\n`);
}

process.stdout.write(`${total} packets of ${size} bytes in batches of ${BATCH}, 100 peers in the route table\n\n`);
process.stdout.write('| loop | ns/packet | Mpps | GCs during run |\n|---|---|---|---|\n');
let sink = 0;
run('reference: restore header, read destination', () => {
  for (let i = 0; i < rx.count; i++) rx.buf.set(headers[i], rx.offs[i]);
  for (let i = 0; i < rx.count; i++) sink ^= rx.buf.readUInt32BE(rx.offs[i] + 16);
});
run('egress (validate, LPM, TTL, encap)', () => {
  // Each pass decrements TTL in place: put the original headers back so packets never expire.
  for (let i = 0; i < rx.count; i++) rx.buf.set(headers[i], rx.offs[i]);
  tx.clear();
  pipeline.icmpOut.clear();
  pipeline.egress(rx, tx);
});
run('ingress (sender, validate, subnet checks)', () => {
  toTun.clear();
  pipeline.ingress(ing, toTun);
});
if (sink === 0.5) process.stdout.write('');
const drops = stats.toJSON().drops as Record<string, number>;
process.stdout.write(`\nforwarded: tx ${stats.txPackets}, rx ${stats.rxPackets}; drops: ${JSON.stringify(drops)}\n`);
