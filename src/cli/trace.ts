// `weft trace`: one packet through an offline node (src/datapath/offline.ts: the daemon's
// PeerSet, Backend, Pipeline and Datapath loop, with TUN and socket in memory), printed as
// the decisions it meets — validation, LPM, peer, TTL, MTU, backend, send — and the bytes that
// come out.
//
// The decisions are src/datapath/explain.ts's, which `weft monitor` shares with this command:
// how they are read (not instrumented) is told there.
//
// The packet walks in docs/architecture.md are this command's --markdown output (renderWalks below), and a
// unit test re-renders them, so they cannot drift from the encapsulation code.

import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { BACKEND_TYPES } from '../datapath/backends';
import type { OfflineNode, SentDatagram } from '../datapath/offline';
import { DROP_NAMES } from '../datapath/stats';
import { buildIpv4Packet } from '../packet/builder';
import { writeIcmpEcho } from '../packet/icmp';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ipv4Dst, ipv4HeaderLength, ipv4Id, ipv4Src, ipv4TotalLength } from '../packet/ipv4';
import { LINKTYPE_NAMES, networkLayer, PcapReader } from '../packet/pcap';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, tcpChecksum, tcpFlags } from '../packet/tcp';
import { sum16 } from '../packet/checksum';
import { TUN_COUNTER } from '../io/native';
import {
  formatVirtioNetHdr,
  readVirtioNetHdr,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO,
  VIRTIO_NET_HDR_LEN,
  writeVirtioNetHdr,
  type VirtioNetHdr,
} from '../packet/virtio';
import { formatCidr, formatIpv4, parseIpv4 } from '../route/address';
import { decodeIpv4 } from '../packet/dissect';
import { layerLines, nameLayers } from '../packet/layers';
import { counters, describePacket, explainEgress, MORE, STEP } from '../datapath/explain';
import { intFlag, nodeFromFlags, TOPOLOGY_HELP, TOPOLOGY_OPTIONS } from './topology-flags';

const HELP = `usage: weft trace [--src IP] [--dst IP] [--backend ${BACKEND_TYPES.join('|')}] [--size N]
                  [--proto icmp|udp|tcp] [--ttl N] [--df] [--markdown] [topology flags]
       weft trace --pcap FILE [--frame N] [--backend B] [topology flags]
       weft trace --super N [--src IP] [--dst IP] [--backend udp|vxlan|ipip] [topology flags]

Builds one packet (or takes frame N of a capture), hands it to an offline weft node exactly as
the kernel hands packets to the daemon through weft0, and prints every decision it meets and
the bytes that come out. No root, no TUN, no sockets.

  --src, --dst IP     pod addresses (default: .2 of this node's lease → .2 of the first peer's)
  --backend B         ${BACKEND_TYPES.join(' | ')} (default vxlan)
  --size N            IPv4 total length in bytes (default 84, a default ping; tcp 40, a SYN)
  --proto P           icmp (echo request) | udp (40000 → 9000) | tcp (40000 → 80) (default icmp)
  --ttl N             TTL as the daemon reads it (default 63: the pod sent 64, its node's kernel
                      forwarded it once into weft0)
  --df                set Don't Fragment (ping and TCP on Linux do)
  --pcap FILE         trace a captured packet instead (pcap: raw IP, Ethernet, Linux cooked)
  --frame N           which one, numbered as tshark numbers them (default 1)
  --super N           a TCP super-packet of N bytes (IPv4 total length, up to 65535), as the
                      kernel hands it to weft0 when the daemon runs with offloads: split into
                      segments by the addon, each through the pipeline, sent in runs, and
                      merged back into one super-packet by the receiving node's TUN write
  --markdown          the output as a fenced block, as docs/architecture.md holds it

${TOPOLOGY_HELP}`;

const OPTIONS = {
  src: { type: 'string' },
  dst: { type: 'string' },
  backend: { type: 'string', default: 'vxlan' },
  size: { type: 'string' },
  proto: { type: 'string' },
  ttl: { type: 'string', default: '63' },
  df: { type: 'boolean', default: false },
  pcap: { type: 'string' },
  frame: { type: 'string' },
  super: { type: 'string' },
  markdown: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h' },
  ...TOPOLOGY_OPTIONS,
} as const;

/** Inner IPv4 Identification of built packets: fixed, so the output is reproducible. */
const PACKET_ID = 0x1c46;

function ipArg(flag: string, s: string): number {
  try {
    return parseIpv4(s);
  } catch (e) {
    throw new Error(`--${flag}: ${(e as Error).message}`, { cause: e });
  }
}

function buildPacket(proto: string, src: number, dst: number, size: number, ttl: number, df: boolean): Buffer {
  switch (proto) {
    case 'icmp': {
      if (size < 28) throw new Error(`--size: ${size} is too small for ICMP echo (28: IPv4 20 + ICMP 8)`);
      const echo = Buffer.alloc(size - 20);
      writeIcmpEcho(echo, 0, 8, 0x77, 1, Buffer.alloc(size - 28));
      return buildIpv4Packet({ src, dst, protocol: IPPROTO_ICMP, ttl, id: PACKET_ID, df, payload: echo });
    }
    case 'udp':
      if (size < 28) throw new Error(`--size: ${size} is too small for UDP (28: IPv4 20 + UDP 8)`);
      return buildIpv4Packet({ src, dst, protocol: IPPROTO_UDP, ttl, id: PACKET_ID, df, payload: Buffer.alloc(size - 28), srcPort: 40000, dstPort: 9000 });
    case 'tcp': {
      if (size < 40) throw new Error(`--size: ${size} is too small for TCP (40: IPv4 20 + TCP 20)`);
      // A SYN, or with data a PSH+ACK segment: header without options, valid checksum.
      const data = size > 40;
      return buildIpv4Packet({
        src,
        dst,
        protocol: IPPROTO_TCP,
        ttl,
        id: PACKET_ID,
        df,
        payload: Buffer.alloc(size - 40),
        srcPort: 40000,
        dstPort: 80,
        tcp: { seq: 1, ack: data ? 1 : 0, flags: data ? TCP_PSH | TCP_ACK : TCP_SYN, window: 64240 },
      });
    }
    default:
      throw new Error(`--proto: "${proto}" is not one of icmp, udp, tcp`);
  }
}

function packetFromPcap(file: string, frame: number): Buffer {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`--pcap: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
  let reader: PcapReader;
  try {
    reader = new PcapReader(buf);
  } catch (e) {
    throw new Error(`--pcap: ${file}: ${(e as Error).message}`, { cause: e });
  }
  for (let r = reader.next(); r !== null; r = reader.next()) {
    if (r.number !== frame) continue;
    const l3 = networkLayer(reader.header.linktype, r.data, reader.header.fcsBytes);
    if (typeof l3 === 'string') throw new Error(`--frame ${frame}: ${l3}`);
    if (l3.ethertype !== 0x0800)
      throw new Error(`--frame ${frame} is not IPv4 (${LINKTYPE_NAMES[reader.header.linktype]}, ethertype 0x${l3.ethertype.toString(16).padStart(4, '0')})`);
    if (r.data.length < r.originalLength)
      throw new Error(`--frame ${frame} was cut to ${r.data.length} of ${r.originalLength} bytes by the capture's snaplen; recapture with -s 0`);
    return Buffer.from(r.data.subarray(l3.off, l3.off + l3.len));
  }
  throw new Error(`--frame ${frame}: ${file} has no such frame${reader.stopped ? ` (${reader.stopped})` : ''}`);
}

/** The pod's packet inside a datagram the backend sent (udp: the payload; vxlan: after VXLAN + Ethernet; ipip: after the outer header). */
function innerOf(node: OfflineNode, d: SentDatagram): Buffer {
  const at = node.type === 'ipip' ? ipv4HeaderLength(d.payload, 0) : node.type === 'vxlan' ? d.payload.length - ipv4TotalLength(d.payload, 22) : 0;
  return d.payload.subarray(at);
}

const flagNames = (f: number): string =>
  [
    [TCP_SYN, 'SYN'],
    [TCP_FIN, 'FIN'],
    [TCP_PSH, 'PSH'],
    [TCP_ACK, 'ACK'],
  ]
    .filter(([bit]) => f & (bit as number))
    .map(([, n]) => n)
    .join('|');

/**
 * One row per segment (the first three and the last when there are many), indented past the
 * 12 columns of a wrapped note's continuation so the two never read alike.
 */
function segmentRows(segs: Buffer[]): string[] {
  const pad = ''.padEnd(12);
  const row = (p: Buffer, i: number): string => {
    const tl = ipv4TotalLength(p, 0);
    const ok = tcpChecksum(p, 20, tl - 20, ipv4Src(p, 0), ipv4Dst(p, 0)) === 0 ? 'ok' : 'BAD';
    return (
      `${pad}${String(i + 1).padStart(3)}  ${String(tl).padStart(5)}  0x${ipv4Id(p, 0).toString(16).padStart(4, '0')}  ` +
      `${String(p.readUInt32BE(24)).padStart(10)}  ${flagNames(tcpFlags(p, 20)).padEnd(8)}  ${ok}`
    );
  };
  const head = `${pad}  #  bytes  IP ID          seq  flags     TCP checksum`;
  if (segs.length <= 6) return [head, ...segs.map(row)];
  return [head, ...segs.slice(0, 3).map(row), `${pad}  …`, row(segs[segs.length - 1], segs.length - 1)];
}

/**
 * Consecutive datagrams to one address and port from one source port, all the size of the
 * first but the last (which may be shorter): what the UDP socket's sendBatch sends as one
 * message with UDP_SEGMENT (native/weft.cc: at most 64 datagrams and 65,507 bytes, the largest
 * UDP payload over IPv4, per run).
 */
function gsoRuns(sent: SentDatagram[]): number[] {
  const sport = (d: SentDatagram) => d.wire[0].readUInt16BE(20);
  const runs: number[] = [];
  let i = 0;
  while (i < sent.length) {
    let j = i + 1;
    const a = sent[i];
    let bytes = a.payload.length;
    while (
      j < sent.length &&
      j - i < 64 &&
      bytes + sent[j].payload.length <= 65_507 &&
      sent[j].addr === a.addr &&
      sent[j].port === a.port &&
      sport(sent[j]) === sport(a) &&
      sent[j - 1].payload.length === a.payload.length &&
      sent[j].payload.length <= a.payload.length
    )
      bytes += sent[j++].payload.length;
    runs.push(j - i);
    i = j;
  }
  return runs;
}

/**
 * `weft trace --super N`: one TCP super-packet through two offline nodes with TUN offloads, the
 * addon's own split and coalescing code doing the work (MemoryTun with vnetHdr), the pipeline
 * seeing per-segment lists exactly as the daemon's does.
 */
type TraceValues = ReturnType<typeof parseArgs<{ args: string[]; strict: true; options: typeof OPTIONS }>>['values'];

function superText(values: TraceValues): string {
  if (values.pcap !== undefined) throw new Error('--super builds its own packet: it does not take --pcap');
  if (values.proto !== undefined && values.proto !== 'tcp')
    throw new Error(`--super: super-packets here are TCP (TSO); --proto ${values.proto} does not apply`);
  if (values.size !== undefined) throw new Error('--super N is the size; drop --size');
  const total = intFlag('super', values.super, 1, 65535)!;
  const node = nodeFromFlags(values.backend!, values, true);
  if (!node.tunnel) throw new Error('--super: host-gw has no TUN, so nothing to split: the kernel forwards its packets');
  if (total <= node.tunnelMtu) throw new Error(`--super: ${total} bytes fit the tunnel MTU ${node.tunnelMtu}; a super-packet is larger (up to 65535)`);
  const firstPeer = node.topology.peers[0];
  const src = values.src !== undefined ? ipArg('src', values.src) : node.localSubnet.addr + 2;
  const dst = values.dst !== undefined ? ipArg('dst', values.dst) : firstPeer ? firstPeer.subnet.addr + 2 : node.localSubnet.addr + 3;
  const ttl = intFlag('ttl', values.ttl, 0, 255)!;

  // The pod's TCP, trusting weft0's TSO, sent one segment of N bytes with the MSS its route
  // allows (tunnel MTU − 40) as gso_size; its kernel left the checksum field holding the
  // pseudo-header sum (CHECKSUM_PARTIAL, __tcp_v4_send_check) and tun_put_user wrote the header.
  const payload = Buffer.alloc(total - 40);
  for (let i = 0; i < payload.length; i++) payload[i] = i & 0xff;
  const pkt = buildIpv4Packet({
    src: src >>> 0,
    dst: dst >>> 0,
    protocol: IPPROTO_TCP,
    ttl,
    id: PACKET_ID,
    df: true,
    payload,
    srcPort: 40000,
    dstPort: 80,
    tcp: { seq: 1, ack: 1, flags: TCP_PSH | TCP_ACK, window: 64240 },
  });
  const pseudoSum = (p: Buffer): number => sum16(p, 12, 8, IPPROTO_TCP + ipv4TotalLength(p, 0) - 20);
  pkt.writeUInt16BE(pseudoSum(pkt), 36);
  const gsoSize = node.tunnelMtu - 40;
  const hdr: VirtioNetHdr = {
    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType: VIRTIO_NET_HDR_GSO.TCPV4,
    hdrLen: 40,
    gsoSize,
    csumStart: 20,
    csumOffset: 16,
  };
  const read = Buffer.alloc(VIRTIO_NET_HDR_LEN + pkt.length);
  writeVirtioNetHdr(read, 0, hdr);
  read.set(pkt, VIRTIO_NET_HDR_LEN);

  const out: string[] = [];
  out.push(
    `weft trace: ${node.type} with offloads, node ${formatIpv4(node.localIp)} (lease ${formatCidr(node.localSubnet)}, Network ${formatCidr(node.network)}), ` +
      `underlay MTU ${node.underlayMtu}, tunnel MTU ${node.tunnelMtu}`,
  );
  out.push(
    `packet: ${total}-byte TCP PSH|ACK super-packet ${formatIpv4(src)}:40000 → ${formatIpv4(dst)}:80, TTL ${ttl}, DF, as the kernel hands it to weft0 with TSO`,
    '',
  );
  out.push(
    STEP('read', `one read(2) of ${read.length} bytes: the virtio-net header (${formatVirtioNetHdr(hdr)}) and the ${total}-byte packet`),
    MORE(
      `(the pod's TCP sent ${payload.length} bytes in one segment, trusting weft0 to cut it at its MSS, ${gsoSize}; the TCP checksum field holds only the pseudo-header sum)`,
    ),
  );

  const r = node.egress(read);
  const tc = node.tunCounters;
  const segs = r.sent.map((d) => innerOf(node, d));
  if (tc[TUN_COUNTER.SUPER_READ] !== 1)
    throw new Error(`trace disagrees with the addon: it did not take the read as a super-packet (counters ${tc.join(',')})`);
  out.push(
    STEP(
      'split',
      `the addon (native/offload.cc, what tunReadVnet runs on every read) cuts it into ${tc[TUN_COUNTER.SEGMENTS_OUT]} packets in the batch's slots, ` +
        `as the kernel's tcp_gso_segment would: each its own total length, IP ID counting up, header checksum, sequence number (+${gsoSize} each) and ` +
        `full TCP checksum; PSH (and FIN) only on the last`,
    ),
    MORE(`as they left the pipeline (TTL ${ttl - 1}):`),
    ...segmentRows(segs),
  );
  if (r.drops.length) {
    out.push(
      STEP('verdict', `${r.drops.length} segment${r.drops.length > 1 ? 's' : ''} dropped: ${[...new Set(r.drops.map((d) => DROP_NAMES[d]))].join(', ')}`),
    );
    out.push('', counters(node));
    return finish(out, values.markdown === true);
  }
  const peer = node.peers.routes.lookup(dst)!;
  out.push(
    STEP(
      'pipeline',
      `each segment is one packet in the list pipeline.egress walks, meeting the decisions \`weft trace --proto tcp --size ${segs[0].length}\` prints: ` +
        `LPM ${formatIpv4(dst)} → ${formatCidr(peer.subnet)} at ${formatIpv4(peer.publicIp)}, TTL, MTU ${segs[0].length} ≤ ${node.tunnelMtu}, ${node.type} encapsulation`,
    ),
  );
  const runs = gsoRuns(r.sent);
  const last = r.sent[r.sent.length - 1].payload.length;
  const sizes = `${r.sent[0].payload.length} bytes${last !== r.sent[0].payload.length ? `, the last ${last}` : ''}`;
  const to = `${formatIpv4(r.sent[0].addr)}${r.sent[0].port ? `:${r.sent[0].port}` : ''}`;
  if (node.type === 'ipip') {
    out.push(
      STEP(
        'send',
        `${r.sent.length} packets (${sizes}) to ${to} in one sendmmsg batch: ipip's IP_HDRINCL raw socket cannot segment, so the gain here is the TUN side only`,
      ),
    );
  } else {
    const sport = r.sent[0].wire[0].readUInt16BE(20);
    out.push(
      STEP(
        'send',
        `${r.sent.length} datagrams (${sizes}) to ${to} from source port ${sport}` +
          (node.type === 'vxlan' ? ' (one flow: its hash picks one socket of the pool for all of them)' : '') +
          `: ${runs.length === 1 ? 'one run' : `${runs.length} runs (${runs.join(' + ')})`} of equal-sized datagrams to one peer, ` +
          `${runs.length === 1 ? 'one message' : `${runs.length} messages`} with UDP_SEGMENT ${r.sent[0].payload.length} in one sendmmsg: the kernel cuts ${runs.length === 1 ? 'it' : 'them'} into these datagrams`,
      ),
    );
  }
  const wire0 = r.sent[0].wire[0];
  const ctx = { vxlanPort: node.type === 'vxlan' ? node.port : undefined, udpEncapPort: node.type === 'udp' ? node.port : undefined };
  out.push(MORE('the first on the wire:'), ...layerLines(nameLayers(decodeIpv4(wire0, 0, wire0.length, ctx))));

  // The other node: what its socket receives, its pipeline's ingress, its TUN write.
  const rx = node.nodeAt(peer.publicIp);
  const delivered: { payload: Uint8Array; from: number; fromPort: number }[] = [];
  for (const d of r.sent) {
    const dv = rx.delivery(d.wire[0]);
    if ('skip' in dv) throw new Error(`trace: ${formatIpv4(peer.publicIp)} would not receive segment ${delivered.length + 1}: ${dv.skip}`);
    delivered.push(dv);
  }
  const r2 = rx.ingressBatch(delivered);
  out.push(
    '',
    STEP(
      'receive',
      `node ${formatIpv4(peer.publicIp)}: ` +
        (node.type === 'ipip'
          ? `the ${delivered.length} packets in one recvmmsg batch`
          : `the ${delivered.length} datagrams arrive as one UDP_GRO train (one receive) and are cut back by the segment size the kernel reports`) +
        `; pipeline.ingress decapsulates each: ${delivered.length} packets for weft0, written as one batch`,
    ),
  );
  if (r2.drops.length) {
    out.push(STEP('verdict', `dropped on ingress: ${[...new Set(r2.drops.map((d) => DROP_NAMES[d]))].join(', ')}`));
    return finish(out, values.markdown === true);
  }
  const rc = rx.tunCounters;
  const merged = r2.toTun.filter((u) => readVirtioNetHdr(u, 0).gsoType !== VIRTIO_NET_HDR_GSO.NONE);
  out.push(
    STEP(
      'merge',
      `tunWrite's coalescer (native/offload.cc) finds ${rc[TUN_COUNTER.SEGMENTS_MERGED]} segments of one flow that continue each other ` +
        `(same addresses, ports, ACK number, TOS, TTL, DF, options; ACK/PSH only; checksums valid) and writes ` +
        `${r2.toTun.length === 1 ? 'one unit' : `${r2.toTun.length} units`}: ${rc[TUN_COUNTER.COALESCED_WRITES]} super-packet${rc[TUN_COUNTER.COALESCED_WRITES] === 1 ? '' : 's'}, ` +
        `${rc[TUN_COUNTER.PLAIN_WRITES]} plain`,
    ),
  );
  for (const u of merged) {
    const h = readVirtioNetHdr(u, 0);
    const p = u.subarray(VIRTIO_NET_HDR_LEN);
    const same = p.subarray(40).equals(payload.subarray(0, p.length - 40));
    out.push(
      MORE(
        `virtio-net header ${formatVirtioNetHdr(h)}; a ${p.length}-byte packet, IP ID 0x${ipv4Id(p, 0).toString(16).padStart(4, '0')}, seq ${p.readUInt32BE(24)}, ` +
          `${flagNames(tcpFlags(p, 20))}, TCP checksum field the pseudo-header sum (${p.readUInt16BE(36) === pseudoSum(p) ? 'yes' : 'NO'}: the pod's kernel takes it as CHECKSUM_PARTIAL)`,
      ),
      MORE(`its ${p.length - 40} payload bytes ${same ? 'are' : 'are NOT'} the ${payload.length} the sending pod wrote`),
    );
  }
  out.push(
    '',
    STEP(
      'counters',
      `sender superPacketsRead ${tc[TUN_COUNTER.SUPER_READ]}, segmentsPerRead ${tc[TUN_COUNTER.SEGMENTS_OUT]}, txPackets ${node.stats.txPackets}; ` +
        `receiver rxPackets ${rx.stats.rxPackets}, coalescedWrites ${rc[TUN_COUNTER.COALESCED_WRITES]}, segmentsMerged ${rc[TUN_COUNTER.SEGMENTS_MERGED]}`,
    ),
  );
  return finish(out, values.markdown === true);
}

/** The trace as text (what `weft trace` prints). Throws on bad flags. */
export function traceText(argv: string[]): string {
  const { values } = parseArgs({ args: argv, strict: true, options: OPTIONS });
  if (values.help) return HELP;
  if (values.super !== undefined) return superText(values);
  const node = nodeFromFlags(values.backend!, values);
  let pkt: Buffer;
  let origin: string;
  if (values.pcap !== undefined) {
    const frame = intFlag('frame', values.frame ?? '1', 1, 0xffffffff)!;
    pkt = packetFromPcap(values.pcap, frame);
    origin = `frame ${frame} of ${values.pcap}`;
  } else {
    const firstPeer = node.topology.peers[0];
    const src = values.src !== undefined ? ipArg('src', values.src) : node.localSubnet.addr + 2;
    const dst = values.dst !== undefined ? ipArg('dst', values.dst) : firstPeer ? firstPeer.subnet.addr + 2 : node.localSubnet.addr + 3;
    const size = intFlag('size', values.size ?? (values.proto === 'tcp' ? '40' : '84'), 1, 65535)!;
    const ttl = intFlag('ttl', values.ttl, 0, 255)!;
    pkt = buildPacket(values.proto ?? 'icmp', src >>> 0, dst >>> 0, size, ttl, values.df === true);
    origin = 'as the kernel routes it into weft0';
  }
  const out: string[] = [];
  out.push(
    `weft trace: ${node.type}, node ${formatIpv4(node.localIp)} (lease ${formatCidr(node.localSubnet)}, Network ${formatCidr(node.network)}), ` +
      (node.tunnel ? `underlay MTU ${node.underlayMtu}, tunnel MTU ${node.tunnelMtu}` : `underlay MTU ${node.underlayMtu}`),
  );
  out.push(`packet: ${describePacket(pkt)}, ${origin}`, '');
  out.push(...explainEgress(node, pkt));
  return finish(out, values.markdown === true);
}

function finish(out: string[], markdown: boolean): string {
  const text = out.map((l) => l.trimEnd()).join('\n') + '\n';
  return markdown ? '```\n' + text + '```\n' : text;
}

export async function run(argv: string[]): Promise<number> {
  process.stdout.write(traceText(argv));
  return 0;
}

const WALK = /<!-- walks:begin ([^>]*?) -->\n[\s\S]*?<!-- walks:end -->/g;

/**
 * The document with every `<!-- walks:begin ARGS -->` … `<!-- walks:end -->` block replaced by
 * `weft trace ARGS --markdown`. Rendered in one process, in order, so the few process-wide
 * counters (ICMP error IDs) come out the same every time.
 */
export function renderWalks(readme: string): string {
  return readme.replace(
    WALK,
    (_m, args: string) => `<!-- walks:begin ${args} -->\n${traceText([...args.trim().split(/\s+/), '--markdown'])}<!-- walks:end -->`,
  );
}

/** scripts/render-walks.sh: rewrite docs/architecture.md's walks in place; returns whether anything changed. */
export function renderWalksFile(file: string): boolean {
  const before = fs.readFileSync(file, 'utf8');
  const after = renderWalks(before);
  if (after !== before) fs.writeFileSync(file, after);
  return after !== before;
}
