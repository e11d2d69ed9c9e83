// The decisions a packet meets in a weft node, as lines of text: what `weft trace` prints for the
// packet it builds, and what `weft monitor` prints for a live packet it copied off the daemon's
// datapath. One place for both, below the CLI, so the daemon can use it (src/cli is the top
// layer; nothing under it may import from there).
//
// The decision log is read, not instrumented: before the packet goes in, this asks the same
// state the pipeline will ask (validateIpv4, the route table, the peer, the tunnel MTU); after,
// it reads what the datapath did (counters, what reached the socket, what was written back
// into the TUN). The hot loop carries no hook for it. If this reading and the pipeline's
// verdict ever disagree — someone reordered the checks in pipeline.ts — it says so and throws,
// and so does trace's test, rather than printing a story the code no longer tells.

import { decodeIpv4, type Layer } from '../packet/dissect';
import {
  IPV4_MIN_HEADER,
  IPV4_VERDICT_NAMES,
  Ipv4Verdict,
  ipv4Df,
  ipv4Dst,
  ipv4HeaderChecksum,
  ipv4HeaderLength,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  ipv4Ttl,
  ipv4Version,
  validateIpv4,
} from '../packet/ipv4';
import { layerLines, nameLayers, stackDiagram, type Span } from '../packet/layers';
import { cidrContains, formatCidr, formatIpv4, parseCidr, parseIpv4, type Cidr } from '../route/address';
import { DEFAULT_HEADROOM, SLOT_SIZE } from './datapath';
import type { BackendConfig } from './backends';
import { OfflineNode, type SentDatagram } from './offline';
import type { Peer, PeerLease } from './peer';
import { Drop, DROP_NAMES } from './stats';

export interface ExplainOptions {
  /**
   * The bytes too: each header's fields and hex under a send and an ICMP error, the box
   * diagram, the node's counters afterwards (weft trace, default). Without: the decisions
   * alone, a dozen lines a packet (weft monitor, where many packets go by).
   */
  detail?: boolean;
}

/**
 * The decisions `pkt`, as the kernel routes it into weft0 (or, host-gw, into eth0), meets in
 * `node`: validation, route, peer, TTL, MTU, backend, send or the drop and its ICMP error. The
 * packet goes through the node's real datapath, so the node's counters move. Throws if what it
 * predicted and what the pipeline did disagree.
 */
export function explainEgress(node: OfflineNode, pkt: Buffer, opts: ExplainOptions = {}): string[] {
  const out: string[] = [];
  const detail = opts.detail ?? true;
  if (node.tunnel) traceWeft(node, pkt, out, detail);
  else traceHostGw(node, pkt, out, detail);
  return out;
}

/** "84-byte ICMP echo request 10.244.1.2 → 10.244.2.2, TTL 63, DF", from the bytes. */
export function describePacket(pkt: Uint8Array): string {
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
/** A decision: its name in a 10-column margin, then what it found. */
export const STEP = (name: string, text: string) => wrap(`${name.padEnd(10)} `, text);
/** More about the decision above, under its text. */
export const MORE = (text: string) => wrap(''.padEnd(11), text);

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

export function counters(node: OfflineNode): string {
  const j = node.stats.toJSON();
  const parts: string[] = [];
  for (const [k, v] of Object.entries(j)) if (typeof v === 'number' && v !== 0) parts.push(`${k} ${v}`);
  for (const [k, v] of Object.entries(j.drops as Record<string, number>)) parts.push(`drops.${k} ${v}`);
  return STEP('counters', parts.join(', ') || 'none');
}

function sendLines(node: OfflineNode, d: SentDatagram, detail: boolean): string[] {
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
  if (!detail) return lines;
  const wire = d.wire[0];
  const layers = nameLayers(decodeIpv4(wire, 0, wire.length, ctx));
  lines.push(...layerLines(layers));
  if (d.wire.length > 1) lines.push(`  (and ${d.wire.length - 1} more fragment${d.wire.length > 2 ? 's' : ''})`);
  else lines.push('', ...diagram(node, wire, layers));
  return lines;
}

function icmpLines(toTun: Buffer[], what: string, detail: boolean): string[] {
  if (toTun.length === 0) return [MORE(`(no ICMP error: RFC 1812 §4.3.2.7 forbids one about this packet)`)];
  const lines = [MORE(`${what}, written back into weft0 toward the sender${detail ? ':' : ''}`)];
  if (detail) for (const p of toTun) lines.push(...layerLines(decodeIpv4(p, 0, p.length)));
  return lines;
}

/** Trace through weft's datapath (udp, vxlan, ipip). */
function traceWeft(node: OfflineNode, pkt: Buffer, out: string[], detail: boolean): void {
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
        `trace disagrees with the pipeline: trace expected ${DROP_NAMES[stop]}, the datapath ${actual === null ? 'sent it' : `dropped it as ${DROP_NAMES[actual]}`} (has pipeline.ts changed its order of checks? update src/datapath/explain.ts)`,
      );
    }
    out.push(STEP('verdict', `dropped: ${DROP_NAMES[stop]}`));
    if (ICMP_FOR[stop]) out.push(...icmpLines(r.toTun, ICMP_FOR[stop], detail));
  } else if (r.sent.length) {
    for (const d of r.sent) out.push(...sendLines(node, d, detail));
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
  if (detail) out.push('', counters(node));
}

/** host-gw: weft only installs routes; the kernel forwards. Say what the kernel does with them. */
function traceHostGw(node: OfflineNode, pkt: Buffer, out: string[], detail: boolean): void {
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
  if (!detail) return;
  const layers = nameLayers(decodeIpv4(k.packet, 0, k.packet.length));
  out.push(...layerLines(layers), '', ...diagram(node, k.packet, layers));
}

/**
 * The decisions a datagram from the underlay meets: the sender's lease, the backend's decap,
 * the inner packet's checks, and where it went. The datagram goes through the node's real
 * datapath (OfflineNode.ingress), so the verdict is the pipeline's own.
 */
export function explainIngress(node: OfflineNode, payload: Buffer, from: number, fromPort: number): string[] {
  const out: string[] = [];
  const sender = `${formatIpv4(from)}${fromPort ? `:${fromPort}` : ''}`;
  out.push(STEP('receive', `${payload.length} bytes from ${sender} on the ${node.type} socket`));
  const peer = node.peers.byAddr.get(from);
  if (peer === undefined || peer.local) out.push(STEP('peer', `${formatIpv4(from)} holds no lease: not a node of this network`));
  else out.push(STEP('peer', `${formatIpv4(from)} holds ${formatCidr(peer.subnet)}: its pods' packets must come from there`));
  const r = node.ingress(payload, from, fromPort);
  if (r.drops.length) {
    out.push(STEP('verdict', `dropped: ${DROP_NAMES[r.drops[0]]}`));
    return out;
  }
  if (r.sent.length) {
    out.push(STEP('verdict', `answered on the underlay (${r.sent.length} reply of ${r.sent[0].payload.length} bytes: an ARP request for our VTEP)`));
    return out;
  }
  for (const p of r.toTun) {
    out.push(STEP('decap', `${node.type}: ${describePacket(p.subarray(0, ipv4TotalLength(p, 0)))}`));
    out.push(
      STEP(
        'check',
        `source ${formatIpv4(ipv4Src(p, 0))} inside ${peer ? formatCidr(peer.subnet) : '?'}, destination ${formatIpv4(ipv4Dst(p, 0))} inside our lease ${formatCidr(node.localSubnet)}`,
      ),
    );
  }
  out.push(
    STEP('verdict', r.toTun.length ? `written to weft0 (${r.toTun.length} packet${r.toTun.length > 1 ? 's' : ''})` : 'nothing written, nothing counted'),
  );
  return out;
}

/** What a running node is, as the daemon knows it: enough to build an OfflineNode like it. */
export interface LiveNodeState {
  backend: BackendConfig;
  network: Cidr;
  lease: PeerLease;
  peers: PeerLease[];
  underlayMtu: number;
}

/**
 * Explains live packets by running a copy through an OfflineNode built like the running node
 * (backend, Network, our lease, the peers' leases as the watch delivered them, the underlay
 * MTU), rebuilt when the peers change. `state` is asked at each explanation, off the hot path.
 */
export function liveExplainer(state: () => LiveNodeState): (ingress: boolean, pkt: Buffer, from: number, fromPort: number) => string[] {
  let key = '';
  let node: OfflineNode | undefined;
  return (ingress, pkt, from, fromPort) => {
    const s = state();
    const k = JSON.stringify([s.backend, formatCidr(s.network), s.lease, s.peers, s.underlayMtu]);
    if (node === undefined || k !== key) {
      const spec = (l: PeerLease) => ({ subnet: parseCidr(l.subnet), publicIp: parseIpv4(l.publicIp) });
      node = new OfflineNode({
        backend: s.backend.type,
        vni: s.backend.vni,
        port: s.backend.port,
        underlayMtu: s.underlayMtu,
        topology: { network: s.network, local: spec(s.lease), peers: s.peers.map(spec) },
        leases: { local: s.lease, peers: s.peers },
      });
      key = k;
    }
    return ingress ? explainIngress(node, pkt, from, fromPort) : explainEgress(node, pkt, { detail: false });
  };
}
