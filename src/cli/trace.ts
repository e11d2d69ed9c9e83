// `weft trace`: one packet through an offline node (src/datapath/offline.ts: the daemon's
// PeerSet, Backend, Pipeline and Datapath loop, with TUN and socket in memory), printed as
// the decisions it meets — validation, LPM, peer, TTL, MTU, backend, send — and the bytes that
// come out.
//
// The decision log is read, not instrumented: before the packet goes in, trace asks the same
// state the pipeline will ask (validateIpv4, the route table, the peer, the tunnel MTU); after,
// it reads what the datapath did (counters, what reached the socket, what was written back
// into the TUN). The hot loop carries no hook for it. If trace's reading and the pipeline's
// verdict ever disagree — someone reordered the checks in pipeline.ts — trace says so and
// fails, and so does its test, rather than printing a story the code no longer tells.
//
// The packet walks in docs/architecture.md are this command's --markdown output (renderWalks below), and a
// unit test re-renders them, so they cannot drift from the encapsulation code.

import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { BACKEND_TYPES } from '../datapath/backends';
import { DEFAULT_HEADROOM, SLOT_SIZE } from '../datapath/datapath';
import type { OfflineNode, SentDatagram } from '../datapath/offline';
import type { Peer } from '../datapath/peer';
import { Drop, DROP_NAMES } from '../datapath/stats';
import { buildIpv4Packet } from '../packet/builder';
import { writeIcmpEcho } from '../packet/icmp';
import {
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_MIN_HEADER,
  IPV4_VERDICT_NAMES,
  Ipv4Verdict,
  ipv4Df,
  ipv4Dst,
  ipv4HeaderChecksum,
  ipv4HeaderLength,
  ipv4Id,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  ipv4Ttl,
  ipv4Version,
  validateIpv4,
} from '../packet/ipv4';
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
import { cidrContains, formatCidr, formatIpv4, parseIpv4 } from '../route/address';
import { decodeIpv4, type Layer } from '../packet/dissect';
import { layerLines, nameLayers, stackDiagram, type Span } from './layers';
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

/** "84-byte ICMP echo request 10.244.1.2 → 10.244.2.2, TTL 63, DF", from the bytes. */
function describe(pkt: Uint8Array): string {
  if (pkt.length < IPV4_MIN_HEADER || ipv4Version(pkt, 0) !== 4) return `${pkt.length} bytes, not an IPv4 packet`;
  const src = formatIpv4(ipv4Src(pkt, 0));
  const dst = formatIpv4(ipv4Dst(pkt, 0));
  const l4 = decodeIpv4(pkt, 0, pkt.length)[1];
  const ports = l4 && (l4.name === 'UDP' || l4.name === 'TCP') ? /^(\d+) → (\d+)/.exec(l4.fields) : null;
  // dissect joins the flags with commas ("flags PSH,ACK, seq …"); written here as PSH|ACK.
  const flags = l4?.name === 'TCP' ? ` ${(/flags (.*?), seq /.exec(l4.fields)?.[1] ?? '').replaceAll(',', '|')}` : '';
  const what =
    l4?.name === 'ICMP'
      ? `ICMP ${/\(([^)]*)\)/.exec(l4.fields)?.[1] ?? ''} ${src} → ${dst}`
      : ports
        ? `${l4!.name}${flags} ${src}:${ports[1]} → ${dst}:${ports[2]}`
        : `protocol ${ipv4Protocol(pkt, 0)} ${src} → ${dst}`;
  return `${pkt.length}-byte ${what}, TTL ${ipv4Ttl(pkt, 0)}${ipv4Df(pkt, 0) ? ', DF' : ''}`;
}

/**
 * Text wrapped at 100 columns, continuation lines hanging one column in from the 11-column
 * margin (so they read apart from the next note), so the walks read without scrolling.
 */
function wrap(first: string, text: string): string {
  const lines: string[] = [];
  let line = first;
  for (const word of text.split(' ')) {
    if (line.length > 11 && line.length + 1 + word.length > 100) {
      lines.push(line);
      line = ''.padEnd(12) + word;
    } else {
      line += line.length === 11 && lines.length === 0 ? word : ` ${word}`;
    }
  }
  lines.push(line);
  return lines.join('\n');
}
const STEP = (name: string, text: string) => wrap(`${name.padEnd(10)} `, text);
const MORE = (text: string) => wrap(''.padEnd(11), text);

function routeTable(node: OfflineNode, match: Peer | undefined): string[] {
  const entries = node.routeEntries().sort((a, b) => a.subnet.addr - b.subnet.addr);
  const show = entries.length <= 8 ? entries : entries.filter((e) => e.peer === match);
  const lines = show.map((e) => {
    const mark = e.peer === match ? '▶' : ' ';
    return `${''.padEnd(11)}${mark} ${formatCidr(e.subnet).padEnd(18)} ${formatIpv4(e.peer.publicIp).padEnd(15)}${e.peer.local ? ' this node' : ''}`;
  });
  if (show.length < entries.length) lines.push(`${''.padEnd(13)}(${entries.length - show.length} more entries)`);
  return lines;
}

function peerLines(node: OfflineNode, peer: Peer): string[] {
  const port = peer.port ? `, port ${peer.port}` : '';
  const lines = [STEP('peer', `${formatCidr(peer.subnet)} at ${formatIpv4(peer.publicIp)}${port}`)];
  if (Object.keys(peer.backendData).length) lines.push(MORE(`lease BackendData ${JSON.stringify(peer.backendData)}`));
  const st = node.backend.status?.();
  if (node.type === 'vxlan' && st) {
    // Read back the two tables the backend programmed for this lease, as flanneld programs flannel.1's.
    const vtep = formatIpv4(peer.subnet.addr);
    const n = (st.neighbors as { ip: string; mac: string }[]).find((e) => e.ip === vtep);
    const f = n && (st.fdb as { mac: string; dst: string }[]).find((e) => e.mac === n.mac);
    lines.push(
      n && f
        ? MORE(`neighbor ${vtep} → ${n.mac}, fdb ${f.mac} → ${f.dst} (flannel.1's ip neigh, bridge fdb)`)
        : MORE(`no neighbor/fdb entry for VTEP ${vtep}: the lease's VtepMAC was not usable`),
    );
  }
  return lines;
}

const BACKEND_TEXT: Record<string, (node: OfflineNode) => string> = {
  udp: (n) =>
    `udp: adds no header of its own; the packet is the payload of a datagram from the UDP socket bound to ` +
    `${formatIpv4(n.localIp)}:${n.port}, and the kernel adds IPv4 + UDP (overhead 28)`,
  vxlan: () =>
    "vxlan: writes VXLAN 8 + inner Ethernet 14 = 22 bytes into the slot's headroom, in front of the packet (no copy); " +
    'a hash of the inner flow picks which of the send sockets (distinct UDP source ports, RFC 7348 §5) sends it, and the kernel adds IPv4 + UDP (overhead 50)',
  ipip: () => "ipip: writes one outer IPv4 header, 20 bytes, protocol 4, into the slot's headroom; DF and TOS copied from the inner header (RFC 2003 §3.1)",
};

/** The box diagram for a datagram as it leaves: the headers in front, who wrote them, and the pod's packet. */
function diagram(node: OfflineNode, wire: Uint8Array, layers: Layer[]): string[] {
  const top = layers.filter((l) => !l.quoted);
  let innerAt = 0;
  for (let i = 0; i < top.length; i++) if (top[i].name.endsWith('IPv4')) innerAt = i;
  const cells = top.slice(0, innerAt + 1).map((l) => ({ name: l.name, bytes: l.bytes.length }));
  const outer = cells.slice(0, innerAt).reduce((a, c) => a + c.bytes, 0);
  const inner = wire.length - outer;
  const l4 = top[innerAt + 1];
  // What the pod's IPv4 header carries, as one box: "ICMP 64" is the ICMP header and its data.
  if (inner > cells[innerAt].bytes) cells.push({ name: l4 ? l4.name.replace(/^inner /, '') : 'payload', bytes: inner - cells[innerAt].bytes });
  const spans: Span[] = [];
  if (innerAt > 0 && node.type === 'vxlan' && innerAt >= 2) {
    // Outer IPv4 + UDP are the kernel's (the pool socket's), VXLAN + Ethernet weft's.
    const kernel = cells[0].bytes + cells[1].bytes;
    spans.push({ from: 0, to: 2, label: `the kernel's UDP socket: ${kernel} bytes` });
    spans.push({ from: 2, to: innerAt, label: `weft's vxlan encap: ${outer - kernel} bytes` });
  } else if (innerAt > 0) {
    const who = node.type === 'udp' ? `the kernel's UDP socket: ${outer} bytes` : `weft's ${node.type} encap: ${outer} bytes`;
    spans.push({ from: 0, to: innerAt, label: who });
  }
  spans.push({ from: innerAt, to: cells.length, label: `the pod's packet: ${inner} bytes` });
  return stackDiagram(cells, spans);
}

function counters(node: OfflineNode): string {
  const j = node.stats.toJSON();
  const parts: string[] = [];
  for (const [k, v] of Object.entries(j)) if (typeof v === 'number' && v !== 0) parts.push(`${k} ${v}`);
  for (const [k, v] of Object.entries(j.drops as Record<string, number>)) parts.push(`drops.${k} ${v}`);
  return STEP('counters', parts.join(', ') || 'none');
}

function sendLines(node: OfflineNode, d: SentDatagram): string[] {
  const to = `${formatIpv4(d.addr)}${d.port ? `:${d.port}` : ''}`;
  const ctx = { vxlanPort: node.type === 'vxlan' ? node.port : undefined, udpEncapPort: node.type === 'udp' ? node.port : undefined };
  const lines: string[] = [];
  if (node.type === 'udp' || node.type === 'vxlan') {
    const onWire = d.wire.reduce((a, w) => a + w.length, 0);
    const through = node.type === 'udp' ? 'the UDP socket' : `the send socket its flow hash picks (source port ${d.wire[0][20] * 256 + d.wire[0][21]})`;
    lines.push(
      STEP(
        'send',
        `${d.payload.length} bytes to ${to} through ${through}; the kernel adds IPv4 + UDP: ` +
          (d.wire.length === 1 ? `${onWire} bytes on the wire` : `${d.wire.length} fragments on the wire (${d.wire.map((w) => w.length).join(' + ')} bytes)`),
      ),
    );
    lines.push(
      MORE(
        node.type === 'vxlan'
          ? `(outer IPv4 and UDP are the kernel's: TTL 64, TOS 0, DF clear (IP_PMTUDISC_DONT, as the kernel's VXLAN device), UDP checksum (the device sends 0), ID left to the kernel — 0 here)`
          : `(outer IPv4 and UDP are the kernel's: TTL 64, DF when the datagram fits the MTU, ID left to the kernel — 0 here)`,
      ),
    );
  } else {
    lines.push(STEP('send', `${d.payload.length} bytes to ${to} through the IP_HDRINCL raw socket, sent as written`));
  }
  const wire = d.wire[0];
  const layers = nameLayers(decodeIpv4(wire, 0, wire.length, ctx));
  lines.push(...layerLines(layers));
  if (d.wire.length > 1) lines.push(`  (and ${d.wire.length - 1} more fragment${d.wire.length > 2 ? 's' : ''})`);
  else lines.push('', ...diagram(node, wire, layers));
  return lines;
}

function icmpLines(toTun: Buffer[], what: string): string[] {
  if (toTun.length === 0) return [MORE(`(no ICMP error: RFC 1812 §4.3.2.7 forbids one about this packet)`)];
  const lines = [MORE(`${what}, written back into weft0 toward the sender:`)];
  for (const p of toTun) lines.push(...layerLines(decodeIpv4(p, 0, p.length)));
  return lines;
}

/** Trace through weft's datapath (udp, vxlan, ipip). */
function traceWeft(node: OfflineNode, pkt: Buffer, out: string[]): void {
  const backend = node.backend;
  const room = SLOT_SIZE - Math.max(DEFAULT_HEADROOM, backend.headroom);
  // Predict where the pipeline stops, from the state it will read (order of pipeline.egress).
  let stop: number | null = null;
  const ICMP_FOR: Record<number, string> = {};
  if (pkt.length > room) {
    out.push(
      STEP('read', `${pkt.length} bytes do not fit a ${SLOT_SIZE}-byte slot after ${SLOT_SIZE - room} bytes of headroom: the TUN read marks it truncated`),
    );
    stop = Drop.Oversize;
  } else {
    const v = validateIpv4(pkt, 0, pkt.length);
    if (v !== Ipv4Verdict.Ok) {
      out.push(STEP('validate', `${IPV4_VERDICT_NAMES[v]} (RFC 1812 §5.2.2 checks: length, version, IHL, total length, header checksum)`));
      stop = v;
    } else {
      const hl = ipv4HeaderLength(pkt, 0);
      const ck = ipv4HeaderChecksum(pkt, 0);
      out.push(
        STEP(
          'validate',
          `ok: IPv4, header ${hl} bytes, total length ${ipv4TotalLength(pkt, 0)} of ${pkt.length} read, header checksum 0x${ck.toString(16).padStart(4, '0')} correct`,
        ),
      );
    }
  }
  let peer: Peer | undefined;
  if (stop === null) {
    const dst = ipv4Dst(pkt, 0);
    peer = node.peers.routes.lookup(dst);
    const n = node.routeEntries().length;
    if (peer === undefined) {
      if (cidrContains(node.network, dst)) {
        out.push(STEP('route', `LPM ${formatIpv4(dst)}: no lease covers it, though it is inside the Network ${formatCidr(node.network)} (${n} entries)`));
        out.push(...routeTable(node, undefined));
        out.push(MORE('→ ICMP net unreachable, as a router with no route answers (RFC 1812 §5.2.7.1)'));
        stop = Drop.NoRoute;
        ICMP_FOR[stop] = 'ICMP net unreachable';
      } else {
        out.push(
          STEP('route', `${formatIpv4(dst)} is outside the Network ${formatCidr(node.network)}: the kernel should never have routed it into weft0; no answer`),
        );
        stop = Drop.NotInNetwork;
      }
    } else {
      const idx =
        node
          .routeEntries()
          .sort((a, b) => a.subnet.addr - b.subnet.addr)
          .findIndex((e) => e.peer === peer) + 1;
      out.push(STEP('route', `LPM ${formatIpv4(dst)} → ${formatCidr(peer.subnet)}, entry ${idx} of ${n} in the route table (one per lease)`));
      out.push(...routeTable(node, peer));
      if (peer.local) {
        out.push(MORE("→ our own lease: the kernel's more specific route (the pods' bridge, cni0) delivers these; weft never sends them"));
        stop = Drop.LocalDestination;
      }
    }
  }
  if (stop === null && peer) {
    out.push(...peerLines(node, peer));
    const ttl = ipv4Ttl(pkt, 0);
    if (ttl <= 1) {
      out.push(STEP('TTL', `${ttl}: would leave with TTL 0 → ICMP time exceeded (RFC 1812 §5.3.1)`));
      stop = Drop.TtlExpired;
      ICMP_FOR[stop] = 'ICMP time exceeded';
    } else {
      out.push(STEP('TTL', `${ttl} > 1: forwarded as a router forwards, TTL ${ttl - 1}, header checksum patched (RFC 1624)`));
    }
  }
  if (stop === null) {
    const total = ipv4TotalLength(pkt, 0);
    const mtu = `tunnel MTU ${node.tunnelMtu} (underlay ${node.underlayMtu} − ${node.type} ${backend.mtuOverhead})`;
    if (total <= node.tunnelMtu) {
      out.push(STEP('MTU', `${total} ≤ ${mtu}: fits`));
    } else if (ipv4Df(pkt, 0)) {
      out.push(
        STEP(
          'MTU',
          `${total} > ${mtu}, DF set → ICMP fragmentation needed with next-hop MTU ${node.tunnelMtu} (RFC 1191): the sender's kernel caches it and resends smaller`,
        ),
      );
      stop = Drop.TooBig;
      ICMP_FOR[stop] = 'ICMP fragmentation needed';
    } else {
      out.push(
        STEP(
          'MTU',
          `${total} > ${mtu}, DF clear: sent on — ` +
            (node.type !== 'ipip'
              ? 'the UDP socket fragments the outer datagram'
              : 'but the IP_HDRINCL send does not fragment: over the underlay MTU it is refused'),
        ),
      );
    }
  }
  if (stop === null) out.push(STEP('backend', BACKEND_TEXT[node.type](node)));

  // Now the datapath itself: the Datapath's TUN handler, Pipeline.egress, the backend's encap.
  const r = node.egress(pkt);
  const actual = r.drops.length ? r.drops[0] : null;
  if (stop !== null) {
    if (actual !== stop || r.sent.length) {
      throw new Error(
        `trace disagrees with the pipeline: trace expected ${DROP_NAMES[stop]}, the datapath ${actual === null ? 'sent it' : `dropped it as ${DROP_NAMES[actual]}`} (has pipeline.ts changed its order of checks? update src/cli/trace.ts)`,
      );
    }
    out.push(STEP('verdict', `dropped: ${DROP_NAMES[stop]}`));
    if (ICMP_FOR[stop]) out.push(...icmpLines(r.toTun, ICMP_FOR[stop]));
  } else if (r.sent.length) {
    for (const d of r.sent) out.push(...sendLines(node, d));
  } else if (r.refused.length) {
    const d = r.refused[0];
    out.push(
      STEP(
        'send',
        `${d.payload.length} bytes to ${formatIpv4(d.addr)}: refused by the raw socket, larger than the underlay MTU ${node.underlayMtu} (EMSGSIZE)`,
      ),
    );
    out.push(STEP('verdict', `dropped: ${DROP_NAMES[r.drops[0] ?? Drop.SendFailed]}`));
  } else {
    out.push(STEP('verdict', `dropped by the backend: ${actual === null ? 'no reason counted' : DROP_NAMES[actual]}`));
  }
  out.push('', counters(node));
}

/** host-gw: weft only installs routes; the kernel forwards. Say what the kernel does with them. */
function traceHostGw(node: OfflineNode, pkt: Buffer, out: string[]): void {
  out.push(STEP('weft', 'not on this path: host-gw has no TUN and no encapsulation; the daemon only installs one kernel route per peer lease'));
  const k = node.kernelForward(pkt);
  const notForwarded = () => out.push(STEP('verdict', `not forwarded by a host-gw route (${k.verdict})`));
  if (k.verdict === 'invalid') {
    out.push(STEP('validate', k.why));
    notForwarded();
    return;
  }
  out.push(STEP('validate', "ok (the kernel's ip_rcv)"));
  if (k.verdict === 'no-route' || !k.peer) {
    out.push(STEP('route', `${formatIpv4(ipv4Dst(pkt, 0))}: ${k.verdict === 'no-route' ? k.why : 'no route'}`));
    notForwarded();
    return;
  }
  const peer = k.peer;
  out.push(
    STEP(
      'route',
      `the kernel's route ${formatCidr(peer.subnet)} via ${formatIpv4(peer.publicIp)} dev eth0, installed by weft from the lease (src/datapath/host-routes.ts)`,
    ),
  );
  out.push(...routeTable(node, peer));
  if (k.verdict === 'local') {
    out.push(MORE(`→ ${k.why}`));
    notForwarded();
    return;
  }
  out.push(
    STEP('peer', `${formatCidr(peer.subnet)} at ${formatIpv4(peer.publicIp)}: must be on-link (L2 adjacency), else weft installs no route and says why`),
  );
  const ttl = ipv4Ttl(pkt, 0);
  if (k.verdict === 'ttl') {
    out.push(STEP('TTL', `${ttl}: ${k.why}`));
    notForwarded();
    return;
  }
  out.push(STEP('TTL', `${ttl} > 1: the kernel's ip_forward lowers it to ${ttl - 1}`));
  const total = ipv4TotalLength(pkt, 0);
  if (k.verdict === 'too-big') {
    out.push(STEP('MTU', `${total}: ${k.why}`));
    notForwarded();
    return;
  }
  if (k.verdict !== 'forward') return;
  out.push(
    STEP(
      'MTU',
      total <= node.underlayMtu
        ? `${total} ≤ underlay MTU ${node.underlayMtu}: no overhead, pod MTU = underlay MTU`
        : `${total} > underlay MTU ${node.underlayMtu}, DF clear: the kernel fragments it`,
    ),
  );
  out.push(STEP('backend', `host-gw: nothing added; the packet leaves eth0 in an Ethernet frame to ${formatIpv4(peer.publicIp)}'s MAC (ARP)`));
  out.push(STEP('send', `${total} bytes to next hop ${formatIpv4(peer.publicIp)}, unchanged but for TTL and header checksum`));
  const layers = nameLayers(decodeIpv4(k.packet, 0, k.packet.length));
  out.push(...layerLines(layers), '', ...diagram(node, k.packet, layers));
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
  out.push(`packet: ${describe(pkt)}, ${origin}`, '');
  if (node.tunnel) traceWeft(node, pkt, out);
  else traceHostGw(node, pkt, out);
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
