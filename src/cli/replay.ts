// `weft replay IN.pcap --backend B`: push captured packets through an offline node — the
// daemon's Datapath loop, Pipeline and Backend, with TUN and socket in memory — and write what
// would go on the wire to a pcap. No root, no TUN, no sockets: a breakpoint in pipeline.ts or
// in a backend's encap is one command away from any capture.
//
// Egress (the default) reads pod packets, as `tcpdump -i weft0` / `-i cni0` / `-i any` saw
// them, and writes the underlay packets: for udp the kernel's IPv4 + UDP 8285 around the
// packet, for vxlan the kernel's IPv4 + UDP 8472 (from the send socket the flow hash picks)
// around the VXLAN + Ethernet + packet the backend built, for ipip the IP_HDRINCL packet. Ingress reads underlay
// packets (`tcpdump -i eth0 udp port 8472`, or a kernel flannel.1's traffic) and writes what
// the daemon would write into weft0. Decisions:
//   - one packet per TUN (or socket) wakeup, so every output keeps its input's timestamp;
//   - ICMP errors the pipeline originates go back into weft0, not onto the wire: they are
//     counted, and written to --replies if asked; so are vxlan's ARP replies on ingress;
//   - host-gw runs no weft code at all: replay says where the kernel's host-gw routes send
//     each packet and writes the packets as the kernel forwards them (TTL − 1).

import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { BACKEND_TYPES } from '../datapath/backends';
import type { StepOutcome } from '../datapath/offline';
import { Drop, DROP_NAMES } from '../datapath/stats';
import { icmpCode, icmpType } from '../packet/icmp';
import {
  IPPROTO_ICMP,
  IPPROTO_IPIP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_MIN_HEADER,
  ipv4Dst,
  ipv4HeaderLength,
  ipv4Protocol,
  ipv4Src,
  ipv4Version,
} from '../packet/ipv4';
import { LINKTYPE_NAMES, LINKTYPE_RAW, networkLayer, PcapReader, PcapWriter } from '../packet/pcap';
import { formatCidr, formatIpv4 } from '../route/address';
import { icmpName } from '../packet/dissect';
import { nodeFromFlags, TOPOLOGY_HELP, TOPOLOGY_OPTIONS } from './topology-flags';

const HELP = `usage: weft replay IN.pcap --backend ${BACKEND_TYPES.join('|')} [--out OUT.pcap]
                   [--direction egress|ingress] [--replies R.pcap] [-v] [topology flags]

Pushes every packet of IN.pcap through weft's datapath — the daemon's Datapath loop, Pipeline
and Backend, with the TUN device and the socket in memory — and writes what would go on the
wire to OUT.pcap (raw IPv4; open it with tshark or Wireshark). Drops are counted by reason.
No root, no TUN, no sockets.

  --direction egress     (default) IN holds pod packets as the kernel routes them into weft0
                         (capture with tcpdump -i weft0, -i cni0 or -i any); OUT gets the
                         underlay packets: udp = IPv4 + UDP 8285 + packet, vxlan = IPv4 + UDP
                         8472 + VXLAN + Ethernet + packet, ipip = IPv4 (protocol 4) + packet
  --direction ingress    IN holds underlay packets (tcpdump -i eth0); OUT gets what the daemon
                         writes into weft0 after decapsulation
  --replies R.pcap       what weft sends back instead of forward: ICMP errors into weft0
                         (egress), vxlan ARP replies on the underlay (ingress)
  -v, --verbose          one line per packet: what happened to it
  host-gw                no weft code handles packets: replay prints where the kernel's host-gw
                         routes send them and writes them as the kernel forwards them

Breakpoints: src/datapath/pipeline.ts (Pipeline.egress / ingress), src/datapath/backends/*.ts
(encap / decap); run under node --inspect-brk bin/weft.js replay …, or .vscode/launch.json.

${TOPOLOGY_HELP}`;

const OPTIONS = {
  backend: { type: 'string' },
  out: { type: 'string', short: 'o' },
  direction: { type: 'string', default: 'egress' },
  replies: { type: 'string' },
  verbose: { type: 'boolean', short: 'v', default: false },
  help: { type: 'boolean', short: 'h' },
  ...TOPOLOGY_OPTIONS,
} as const;

/** Counts by label, in first-seen order. */
class Tally {
  readonly m = new Map<string, number>();
  add(k: string, n = 1): void {
    this.m.set(k, (this.m.get(k) ?? 0) + n);
  }
  get total(): number {
    let t = 0;
    for (const v of this.m.values()) t += v;
    return t;
  }
  text(): string {
    return [...this.m].map(([k, v]) => `${k} ×${v}`).join(', ');
  }
}

function brief(p: Uint8Array): string {
  if (p.length < IPV4_MIN_HEADER || ipv4Version(p, 0) !== 4) return `${p.length} bytes, not IPv4`;
  const n = ipv4Protocol(p, 0);
  const proto = n === IPPROTO_ICMP ? 'ICMP' : n === IPPROTO_TCP ? 'TCP' : n === IPPROTO_UDP ? 'UDP' : n === IPPROTO_IPIP ? 'IPIP' : `proto ${n}`;
  return `${formatIpv4(ipv4Src(p, 0))} → ${formatIpv4(ipv4Dst(p, 0))} ${proto} ${p.length} B`;
}

function icmpKind(p: Uint8Array): string {
  const hl = ipv4HeaderLength(p, 0);
  return p.length >= hl + 2 ? icmpName(icmpType(p, hl), icmpCode(p, hl)) : 'ICMP';
}

function readInput(file: string): PcapReader {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`cannot read ${file}: ${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)}`, { cause: e });
  }
  try {
    return new PcapReader(buf);
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`, { cause: e });
  }
}

const WIRE_SHAPE: Record<string, string> = {
  udp: 'outer IPv4 / UDP 8285 / pod packet',
  vxlan: 'outer IPv4 / UDP 8472 / VXLAN / Ethernet / pod packet',
  ipip: 'outer IPv4, protocol 4 / pod packet',
  'host-gw': 'the pod packets as the kernel forwards them, no encapsulation',
};

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, strict: true, allowPositionals: true, options: OPTIONS });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length !== 1)
    throw new Error(
      positionals.length
        ? `one input file, got ${positionals.length}: ${positionals.join(' ')}`
        : 'which capture? weft replay IN.pcap --backend B (see --help)',
    );
  if (values.backend === undefined)
    throw new Error(`--backend is required: ${BACKEND_TYPES.slice(0, -1).join(', ')} or ${BACKEND_TYPES[BACKEND_TYPES.length - 1]}`);
  const direction = values.direction!;
  if (direction !== 'egress' && direction !== 'ingress') throw new Error(`--direction: "${direction}" is not egress or ingress`);
  const node = nodeFromFlags(values.backend, values);
  if (direction === 'ingress' && !node.tunnel) {
    throw new Error('--direction ingress with host-gw: nothing to replay, the kernel delivers arriving packets by its own routes (no weft code runs)');
  }
  const file = positionals[0];
  const reader = readInput(file);
  const { header } = reader;
  const nano = header.nanosecond;
  const out = values.out !== undefined ? new PcapWriter({ linktype: LINKTYPE_RAW, nanosecond: nano }) : null;
  const replies = values.replies !== undefined ? new PcapWriter({ linktype: LINKTYPE_RAW, nanosecond: nano }) : null;

  const say = (s: string) => process.stdout.write(s + '\n');
  let records = 0;
  let fed = 0;
  let written = 0;
  const skipped = new Tally();
  const drops = new Tally();
  const sentTo = new Tally();
  const back = new Tally();
  const kernel = new Tally();
  let refused = 0;
  let delivered = 0;

  const account = (r: StepOutcome, ts: [number, number], line: string[]) => {
    for (const d of r.sent) {
      const to = `${formatIpv4(d.addr)}${d.port ? `:${d.port}` : ''}`;
      if (direction === 'egress') sentTo.add(to);
      else back.add('ARP reply');
      for (const w of d.wire) {
        if (direction === 'egress') {
          out?.add(w, ts[0], ts[1]);
          written++;
        } else replies?.add(w, ts[0], ts[1]);
      }
      line.push(
        direction === 'egress' ? `sent ${d.wire.reduce((a, w) => a + w.length, 0)} B to ${to}` : `answered on the underlay to ${to} (${d.payload.length} B)`,
      );
    }
    for (const t of r.toTun) {
      if (direction === 'egress') {
        const k = icmpKind(t);
        back.add(k);
        replies?.add(t, ts[0], ts[1]);
        line.push(`ICMP ${k} back into weft0`);
      } else {
        delivered++;
        out?.add(t, ts[0], ts[1]);
        written++;
        line.push(`into weft0: ${brief(t)}`);
      }
    }
    refused += r.refused.length;
    for (const d of r.drops) {
      // `consumed` is the datapath's count of ARP requests vxlan answered: not a drop.
      if (d === Drop.Consumed) continue;
      drops.add(DROP_NAMES[d]);
      line.push(`dropped: ${DROP_NAMES[d]}`);
    }
  };

  for (let rec = reader.next(); rec !== null; rec = reader.next()) {
    records++;
    const ts: [number, number] = [rec.tsSec, rec.tsFrac];
    const line = [`#${rec.number}`];
    const skip = (why: string) => {
      skipped.add(why);
      if (values.verbose) say(`${line[0]}  skipped: ${why}`);
    };
    if (rec.data.length < rec.originalLength) {
      skip("cut short by the capture's snaplen (recapture with -s 0)");
      continue;
    }
    const l3 = networkLayer(header.linktype, rec.data, header.fcsBytes);
    if (typeof l3 === 'string') {
      skip(l3);
      continue;
    }
    // A TUN device carries only IP, so a link-layer frame of another protocol never reaches
    // weft; raw-IP records go in as they are and the pipeline judges them.
    if (header.linktype !== LINKTYPE_RAW && l3.ethertype !== 0x0800) {
      skip(`not IPv4 (ethertype 0x${l3.ethertype.toString(16).padStart(4, '0')})`);
      continue;
    }
    const pkt = rec.data.subarray(l3.off, l3.off + l3.len);
    line.push(brief(pkt));
    if (direction === 'egress') {
      fed++;
      if (node.tunnel) {
        account(node.egress(pkt), ts, line);
      } else {
        const k = node.kernelForward(pkt);
        if (k.verdict === 'forward') {
          const via = `${formatCidr(k.peer.subnet)} via ${formatIpv4(k.peer.publicIp)}`;
          sentTo.add(via);
          out?.add(k.packet, ts[0], ts[1]);
          written++;
          line.push(`kernel: ${via}`);
        } else {
          kernel.add(k.why);
          line.push(`kernel: ${k.why}`);
        }
      }
    } else {
      const d = node.delivery(pkt);
      if ('skip' in d) {
        skip(d.skip);
        continue;
      }
      fed++;
      account(node.ingress(d.payload, d.from, d.fromPort), ts, line);
    }
    if (values.verbose) say(`${line[0]}  ${line.slice(1).join('  ')}`);
  }

  if (out) fs.writeFileSync(values.out!, out.toBuffer());
  if (replies) fs.writeFileSync(values.replies!, replies.toBuffer());

  // Counts first, so long reasons never push them out of line.
  const row = (n: number, label: string, more = '', indent = 0) => say(`${String(n).padStart(8 + indent)}  ${label}${more ? `: ${more}` : ''}`);
  say(
    `weft replay: ${file} (${LINKTYPE_NAMES[header.linktype]}), ${node.type} ${direction} as node ` +
      `${formatIpv4(node.localIp)} (lease ${formatCidr(node.localSubnet)}; peers ${node.topology.peers.map((p) => `${formatIpv4(p.publicIp)} → ${formatCidr(p.subnet)}`).join(', ') || 'none'})`,
  );
  if (!node.tunnel) say('host-gw: weft is not on this path; the kernel forwards by the routes weft installs (SUBNET via PEER dev IFACE)');
  row(records, 'records read');
  for (const [k, v] of skipped.m) row(v, `skipped, ${k}`);
  if (direction === 'egress') {
    row(fed, node.tunnel ? 'into the pipeline' : 'routed by the kernel');
    row(sentTo.total, node.tunnel ? 'sent to the underlay' : 'forwarded by host-gw routes', sentTo.text());
    if (refused) row(refused, 'refused by the raw socket: larger than the underlay MTU (EMSGSIZE)', '', 4);
    for (const [k, v] of kernel.m) row(v, `not forwarded: ${k}`);
  } else {
    row(fed, 'received by the socket');
    row(delivered, 'written into weft0');
  }
  if (drops.total) {
    row(drops.total, 'dropped');
    for (const [k, v] of drops.m) row(v, k, '', 4);
  }
  if (back.total) {
    const where = direction === 'egress' ? 'ICMP errors written back into weft0' : 'answered on the underlay';
    row(back.total, where, `${back.text()}${replies ? '' : ' (--replies FILE keeps them)'}`);
  }
  if (out) {
    const shape = direction === 'egress' ? WIRE_SHAPE[node.type] : 'the decapsulated pod packets';
    say(`wrote ${values.out}: ${written} packets, raw IPv4 (${shape})`);
    if (direction === 'egress' && node.type === 'vxlan' && node.port !== 4789) {
      say(`  tshark decodes VXLAN on 4789; for ${node.port}: tshark -r ${values.out} -d udp.port==${node.port},vxlan`);
    }
  }
  if (replies) say(`wrote ${values.replies}: ${replies.count} packets`);
  if (reader.stopped) {
    if (reader.cutShort) {
      process.stderr.write(`weft replay: warning: ${file}: ${reader.stopped}; replayed the ${records} records before it\n`);
    } else {
      process.stderr.write(`weft replay: ${file}: ${reader.stopped}\n`);
      return 1;
    }
  }
  return 0;
}
