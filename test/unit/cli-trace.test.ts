// weft trace: the decisions a packet meets in the daemon's datapath, in order, with the bytes
// that come out — for every verdict the pipeline can reach — and a property that trace's
// reading of the state never disagrees with what the pipeline then does.

import * as path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { traceText as rawTrace } from '../../src/cli/trace';
import { main } from '../../src/cli/main';

const ETH = path.join(__dirname, '..', 'fixtures', 'pcap', 'eth.pcap');

/**
 * trace wraps its prose at 100 columns, continuation lines indented 12; the assertions read it
 * unwrapped.
 */
function traceText(argv: string[]): string {
  return rawTrace(argv).replace(/\n {12}(?=\S)/g, ' ');
}

/** Asserts each pattern matches a line, each after the previous one's line. */
function inOrder(text: string, patterns: RegExp[]): void {
  const lines = text.split('\n');
  let at = -1;
  for (const p of patterns) {
    const i = lines.findIndex((l, k) => k > at && p.test(l));
    expect(i, `${p} after line ${at}:\n${text}`).toBeGreaterThan(at);
    at = i;
  }
}

describe('weft trace: a packet to a pod on another node', () => {
  it('vxlan: validation, LPM entry, peer with its neighbor and FDB entries, TTL, MTU, encap, the bytes and who wrote them', () => {
    const out = traceText(['--backend', 'vxlan', '--df']);
    inOrder(out, [
      /^weft trace: vxlan, node 192\.168\.77\.11 \(lease 10\.244\.1\.0\/24, Network 10\.244\.0\.0\/16\), underlay MTU 1500, tunnel MTU 1450$/,
      /^packet: 84-byte ICMP echo request 10\.244\.1\.2 → 10\.244\.2\.2, TTL 63, DF, as the kernel routes it into weft0$/,
      /^validate +ok: IPv4, header 20 bytes, total length 84 of 84 read, header checksum 0x0678 correct$/,
      /^route +LPM 10\.244\.2\.2 → 10\.244\.2\.0\/24, entry 2 of 3 in the route table/,
      /^ +10\.244\.1\.0\/24 +192\.168\.77\.11 +this node$/,
      /^ +▶ 10\.244\.2\.0\/24 +192\.168\.77\.12$/,
      /^peer +10\.244\.2\.0\/24 at 192\.168\.77\.12, port 8472$/,
      /^ +lease BackendData \{"VNI":1,"VtepMAC":"0e:00:c0:a8:4d:0c"\}$/,
      /^ +neighbor 10\.244\.2\.0 → 0e:00:c0:a8:4d:0c, fdb 0e:00:c0:a8:4d:0c → 192\.168\.77\.12 \(flannel\.1's ip neigh, bridge fdb\)$/,
      /^TTL +63 > 1: forwarded as a router forwards, TTL 62/,
      /^MTU +84 ≤ tunnel MTU 1450 \(underlay 1500 − vxlan 50\): fits$/,
      /^backend +vxlan: writes VXLAN 8 \+ inner Ethernet 14 = 22 bytes/,
      /^send +106 bytes to 192\.168\.77\.12:8472 through the send socket its flow hash picks \(source port 327\d\d\); the kernel adds IPv4 \+ UDP: 134 bytes on the wire$/,
      /outer IPv4 and UDP are the kernel's: .*DF clear \(IP_PMTUDISC_DONT, as the kernel's VXLAN device\), UDP checksum \(the device sends 0\)/,
      /^ +outer IPv4 +IPv4 192\.168\.77\.11 → 192\.168\.77\.12, proto 17, TTL 64, len 134, id 0x0000, DF 0, TOS 0x00, checksum 0x5eff$/,
      /^ +45 00 00 86 00 00 00 00 40 11 5e ff c0 a8 4d 0b c0 a8 4d 0c$/,
      /^ +UDP +327\d\d → 8472, len 114, checksum 0x(?!0000)[0-9a-f]{4}$/,
      /^ +VXLAN +flags 0x08 \(I\), VNI 1$/,
      /^ +inner Ethernet +0e:00:c0:a8:4d:0b → 0e:00:c0:a8:4d:0c, type 0x0800$/,
      /^ +inner IPv4 +IPv4 10\.244\.1\.2 → 10\.244\.2\.2, proto 1, TTL 62, len 84, id 0x1c46, DF 1/,
      /^ +inner ICMP +type 8 \(echo request\), id 119, seq 1/,
      /^│ +outer IPv4 20 +│ +UDP 8 +│ +VXLAN 8 +│ +inner Ethernet 14 +│ +inner IPv4 20 +│ +ICMP 64 +│$/,
      /◀─+ the kernel's UDP socket: 28 bytes ─+▶ ◀─+ weft's vxlan encap: 22 bytes ─+▶ ◀─+ the pod's packet: 84 bytes ─+▶/,
      /^counters +txPackets 1, txBytes 84, tunReadPackets 1, tunReadBatches 1$/,
    ]);
  });

  it('udp: the packet is the datagram; the outer IPv4 + UDP 8285 are the kernel socket’s, and labelled so', () => {
    const out = traceText(['--backend', 'udp', '--df']);
    inOrder(out, [
      /tunnel MTU 1472/,
      /^peer +10\.244\.2\.0\/24 at 192\.168\.77\.12, port 8285$/,
      /^backend +udp: adds no header of its own/,
      /^send +84 bytes to 192\.168\.77\.12:8285 through the UDP socket; the kernel adds IPv4 \+ UDP: 112 bytes on the wire$/,
      /outer IPv4 and UDP are the kernel's/,
      /^ +outer IPv4 +IPv4 192\.168\.77\.11 → 192\.168\.77\.12, proto 17, TTL 64, len 112, id 0x0000, DF 1/,
      /^ +UDP +8285 → 8285, len 92/,
      /^ +inner IPv4 +IPv4 10\.244\.1\.2 → 10\.244\.2\.2, proto 1, TTL 62/,
      /◀─+ the kernel's UDP socket: 28 bytes ─+▶/,
    ]);
  });

  it('ipip: one outer header, protocol 4, DF copied; IDs start at 1 so the bytes are the same every run', () => {
    const out = traceText(['--backend', 'ipip', '--df']);
    expect(out).toMatch(/^ +outer IPv4 +IPv4 192\.168\.77\.11 → 192\.168\.77\.12, proto 4, TTL 64, len 104, id 0x0001, DF 1, TOS 0x00, checksum 0x1f29$/m);
    expect(out).toMatch(/weft's ipip encap: 20 bytes/);
    expect(traceText(['--backend', 'ipip', '--df'])).toBe(out);
  });

  it('host-gw: says weft is not on the path and shows what the kernel forwards, TTL lowered, nothing added', () => {
    const out = traceText(['--backend', 'host-gw']);
    inOrder(out, [
      /underlay MTU 1500$/,
      /^weft +not on this path: host-gw has no TUN and no encapsulation/,
      /^route +the kernel's route 10\.244\.2\.0\/24 via 192\.168\.77\.12 dev eth0, installed by weft from the lease/,
      /^TTL +63 > 1: the kernel's ip_forward lowers it to 62$/,
      /^MTU +84 ≤ underlay MTU 1500: no overhead/,
      /^send +84 bytes to next hop 192\.168\.77\.12/,
      /^ +IPv4 +IPv4 10\.244\.1\.2 → 10\.244\.2\.2, proto 1, TTL 62/,
    ]);
    expect(out).not.toMatch(/outer/);
  });
});

describe('weft trace: where the pipeline stops, and what it answers', () => {
  it('our own subnet: local delivery, never the tunnel', () => {
    const out = traceText(['--dst', '10.244.1.9']);
    inOrder(out, [
      /^ +▶ 10\.244\.1\.0\/24 +192\.168\.77\.11 +this node$/,
      /our own lease: the kernel's more specific route/,
      /^verdict +dropped: local_destination$/,
      /drops\.local_destination 1/,
    ]);
    expect(out).not.toMatch(/^send/m);
  });

  it('inside the Network but no lease: ICMP net unreachable from our TUN address, quoting the packet', () => {
    const out = traceText(['--dst', '10.244.77.2', '--backend', 'udp']);
    inOrder(out, [
      /^route +LPM 10\.244\.77\.2: no lease covers it, though it is inside the Network 10\.244\.0\.0\/16/,
      /RFC 1812 §5\.2\.7\.1/,
      /^verdict +dropped: no_route$/,
      /ICMP net unreachable, written back into weft0 toward the sender:/,
      /^ +IPv4 +IPv4 10\.244\.1\.0 → 10\.244\.1\.2, proto 1, TTL 64, len 56/,
      /^ +ICMP +type 3 code 0 \(net unreachable\)/,
      /^ +quoted IPv4 +IPv4 10\.244\.1\.2 → 10\.244\.77\.2/,
      /icmpSent 1, drops\.no_route 1/,
    ]);
  });

  it('outside the Network: dropped without an answer', () => {
    const out = traceText(['--dst', '172.16.0.9']);
    inOrder(out, [/172\.16\.0\.9 is outside the Network 10\.244\.0\.0\/16/, /^verdict +dropped: not_in_network$/]);
    expect(out).not.toMatch(/ICMP type/);
  });

  it('TTL 1: time exceeded', () => {
    const out = traceText(['--ttl', '1', '--backend', 'ipip']);
    inOrder(out, [
      /^TTL +1: would leave with TTL 0 → ICMP time exceeded \(RFC 1812 §5\.3\.1\)$/,
      /^verdict +dropped: ttl_expired$/,
      /^ +ICMP +type 11 code 0 \(time exceeded in transit\)/,
    ]);
  });

  it('DF and larger than the tunnel MTU: fragmentation needed carrying each backend’s tunnel MTU', () => {
    for (const [backend, mtu] of [
      ['vxlan', 1450],
      ['udp', 1472],
      ['ipip', 1480],
    ] as const) {
      const out = traceText(['--backend', backend, '--size', String(mtu + 1), '--df']);
      inOrder(out, [
        new RegExp(`^MTU +${mtu + 1} > tunnel MTU ${mtu} .*DF set → ICMP fragmentation needed with next-hop MTU ${mtu} \\(RFC 1191\\)`),
        /^verdict +dropped: too_big$/,
        new RegExp(`^ +ICMP +type 3 code 4 \\(fragmentation needed\\), next-hop MTU ${mtu},`),
      ]);
      expect(traceText(['--backend', backend, '--size', String(mtu), '--df'])).toMatch(new RegExp(`^MTU +${mtu} ≤ tunnel MTU ${mtu}`, 'm'));
    }
  });

  it('without DF and too large: the UDP sockets (udp, vxlan) fragment, the raw socket (ipip) refuses (EMSGSIZE → send_failed)', () => {
    const udp = traceText(['--backend', 'udp', '--size', '1488', '--proto', 'udp']);
    expect(udp).toMatch(
      /^send +1488 bytes to 192\.168\.77\.12:8285 through the UDP socket; the kernel adds IPv4 \+ UDP: 2 fragments on the wire \(1500 \+ 36 bytes\)$/m,
    );
    expect(udp).toMatch(/^ +outer IPv4 +IPv4 .* len 1500, id 0x0000, DF 0, fragment offset 0, MF 1/m);
    const vxlan = traceText(['--backend', 'vxlan', '--size', '1488']);
    inOrder(vxlan, [
      /DF clear: sent on — the UDP socket fragments the outer datagram/,
      /^send +1510 bytes to 192\.168\.77\.12:8472 through the send socket .*: 2 fragments on the wire \(1500 \+ 58 bytes\)$/,
    ]);
    expect(vxlan).toMatch(/^ +outer IPv4 +IPv4 .* len 1500, id 0x0000, DF 0, fragment offset 0, MF 1/m);
    const ipip = traceText(['--backend', 'ipip', '--size', '1488']);
    inOrder(ipip, [
      /DF clear: sent on — but the IP_HDRINCL send does not fragment/,
      /^send +1508 bytes to 192\.168\.77\.12: refused by the raw socket.*\(EMSGSIZE\)$/,
      /^verdict +dropped: send_failed$/,
    ]);
  });

  it('a packet larger than a slab slot is marked truncated by the TUN read: oversize', () => {
    const out = traceText(['--size', '3000']);
    inOrder(out, [/^read +3000 bytes do not fit a 2048-byte slot after 64 bytes of headroom/, /^verdict +dropped: oversize$/]);
  });

  it('tcp and udp packets, with their ports', () => {
    expect(traceText(['--proto', 'tcp'])).toMatch(/^packet: 40-byte TCP SYN 10\.244\.1\.2:40000 → 10\.244\.2\.2:80, TTL 63,/m);
    // A data segment carries PSH and ACK: both named, not the first alone.
    expect(traceText(['--proto', 'tcp', '--size', '100'])).toMatch(/^packet: 100-byte TCP PSH\|ACK 10\.244\.1\.2:40000/m);
    expect(traceText(['--proto', 'tcp'])).toMatch(/^ +inner TCP +40000 → 80, flags SYN, seq 1, ack 0, window 64240/m);
    expect(traceText(['--proto', 'udp', '--backend', 'ipip'])).toMatch(/^ +inner UDP +40000 → 9000, len 64/m);
  });
});

describe('weft trace: topology and captured packets', () => {
  it('--local-ip naming a default node makes it this node; --peer replaces the peers', () => {
    const two = traceText(['--local-ip', '192.168.77.12', '--dst', '10.244.1.2', '--src', '10.244.2.2']);
    expect(two).toMatch(/^weft trace: vxlan, node 192\.168\.77\.12 \(lease 10\.244\.2\.0\/24/m);
    expect(two).toMatch(/^send +106 bytes to 192\.168\.77\.11:8472/m);
    const custom = traceText([
      '--local-subnet',
      '10.244.8.0/24',
      '--local-ip',
      '10.0.0.8',
      '--peer',
      '10.244.9.0/24=10.0.0.9',
      '--dst',
      '10.244.9.5',
      '--vni',
      '42',
      '--mtu',
      '9000',
    ]);
    expect(custom).toMatch(/^route +LPM 10\.244\.9\.5 → 10\.244\.9\.0\/24, entry 2 of 2/m);
    expect(custom).toMatch(/^ +VXLAN +flags 0x08 \(I\), VNI 42$/m);
    expect(custom).toMatch(/tunnel MTU 8950/);
  });

  it('--pcap --frame traces a captured packet (frame 4 of the capture: a ping to 10.244.77.2)', () => {
    const out = traceText(['--pcap', ETH, '--frame', '4']);
    expect(out).toMatch(/^packet: 84-byte ICMP echo request 10\.244\.1\.2 → 10\.244\.77\.2, TTL 64, DF, frame 4 of /m);
    expect(out).toMatch(/^verdict +dropped: no_route$/m);
    expect(() => traceText(['--pcap', ETH, '--frame', '8'])).toThrow(/--frame 8 is not IPv4 \(Ethernet, ethertype 0x86dd\)/);
    expect(() => traceText(['--pcap', ETH, '--frame', '99'])).toThrow(/--frame 99: .* has no such frame/);
  });

  it('--markdown fences the same text', () => {
    expect(rawTrace(['--markdown'])).toBe('```\n' + rawTrace([]) + '```\n');
  });
});

describe('weft trace --super: a TSO super-packet split, sent in runs, and merged on the other node', () => {
  it('vxlan: 14520 bytes → 11 segments of MSS 1410 with IDs and sequence numbers counting up, one GSO run, one merged write carrying the same bytes', () => {
    const t = traceText(['--super', '14520']);
    inOrder(t, [
      /^packet: 14520-byte TCP PSH\|ACK super-packet 10\.244\.1\.2:40000 → 10\.244\.2\.2:80/,
      /^read .*virtio-net header \(NEEDS_CSUM, gso_type TCPV4, hdr_len 40, gso_size 1410, csum_start 20, csum_offset 16\)/,
      /^split .*cuts it into 11 packets/,
      /^ +1 +1450 +0x1c46 +1 +ACK +ok$/,
      /^ +2 +1450 +0x1c47 +1411 +ACK +ok$/,
      /^ +11 +420 +0x1c50 +14101 +PSH\|ACK +ok$/,
      /^pipeline .*LPM 10\.244\.2\.2 → 10\.244\.2\.0\/24 at 192\.168\.77\.12/,
      /^send +11 datagrams \(1472 bytes, the last 442\) to 192\.168\.77\.12:8472 from source port \d+ .*one run .*UDP_SEGMENT 1472/,
      /^ {2}VXLAN +flags 0x08 \(I\), VNI 1/,
      /^receive +node 192\.168\.77\.12: the 11 datagrams/,
      /^merge .*finds 11 segments .*one unit: 1 super-packet, 0 plain/,
      /virtio-net header NEEDS_CSUM, gso_type TCPV4, hdr_len 40, gso_size 1410, .*a 14520-byte packet, IP ID 0x1c46, seq 1, PSH\|ACK, TCP checksum field the pseudo-header sum \(yes/,
      /its 14480 payload bytes are the 14480 the sending pod wrote/,
      /^counters +sender superPacketsRead 1, segmentsPerRead 11, txPackets 11; receiver rxPackets 11, coalescedWrites 1, segmentsMerged 11/,
    ]);
    expect(t).not.toMatch(/BAD|NOT|disagree/);
  });

  it('udp sends one GSO run too; ipip cannot segment on its raw socket and says so; both merge on the other side', () => {
    const u = traceText(['--super', '3000', '--backend', 'udp']);
    expect(u).toMatch(/^send +3 datagrams \(1472 bytes, the last 136\) to 192\.168\.77\.12:8285 .*one run/m);
    expect(u).toMatch(/one unit: 1 super-packet, 0 plain/);
    const i = traceText(['--super', '3000', '--backend', 'ipip']);
    expect(i).toMatch(/^send +3 packets \(1500 bytes, the last 140\) to 192\.168\.77\.12 in one sendmmsg batch: ipip's IP_HDRINCL raw socket cannot segment/m);
    expect(i).toMatch(/gso_size 1440, .*a 3000-byte packet/);
    expect(i).toMatch(/payload bytes are the 2960 the sending pod wrote/);
  });

  it('the largest super-packet: 65535 bytes is 47 segments, sent as two runs (65,507 bytes per message at most), merged back into one write', () => {
    const t = traceText(['--super', '65535']);
    expect(t).toMatch(/cuts it into 47 packets/);
    expect(t).toMatch(/2 runs \(44 \+ 3\) of\s+equal-sized datagrams/);
    expect(t).toMatch(/segmentsMerged 47/);
    expect(t).toMatch(/a 65535-byte packet/);
  });

  it('refuses what is not a super-packet, and host-gw', () => {
    expect(() => rawTrace(['--super', '1450'])).toThrow('--super: 1450 bytes fit the tunnel MTU 1450; a super-packet is larger (up to 65535)');
    expect(() => rawTrace(['--super', '70000'])).toThrow('--super: "70000" is not a whole number in 1..65535');
    expect(() => rawTrace(['--super', '3000', '--backend', 'host-gw'])).toThrow(/host-gw has no TUN/);
    expect(() => rawTrace(['--super', '3000', '--proto', 'icmp'])).toThrow(/super-packets here are TCP/);
  });
});

describe('weft trace: errors are one line, exit 1', () => {
  afterEach(() => {
    vi.restoreAllMocks();
    process.exitCode = undefined;
  });

  async function fails(argv: string[]): Promise<string> {
    let err = '';
    vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
      err += String(s);
      return true;
    });
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    await main(['trace', ...argv]);
    expect(process.exitCode).toBe(1);
    expect(err.trimEnd().split('\n')).toHaveLength(1);
    return err;
  }

  it('names the flag and the problem', async () => {
    expect(await fails(['--backend', 'geneve'])).toBe('weft trace: --backend: "geneve" is not one of udp, vxlan, ipip, host-gw\n');
    expect(await fails(['--dst', '10.244.2'])).toBe('weft trace: --dst: invalid IPv4 address "10.244.2"\n');
    expect(await fails(['--proto', 'sctp'])).toBe('weft trace: --proto: "sctp" is not one of icmp, udp, tcp\n');
    expect(await fails(['--ttl', '300'])).toBe('weft trace: --ttl: "300" is not a whole number in 0..255\n');
    expect(await fails(['--peer', '10.244.2.0/24'])).toMatch(/--peer: "10\.244\.2\.0\/24" is not SUBNET=IP/);
    expect(await fails(['--peer', '10.244.1.0/25=10.0.0.2'])).toMatch(/subnets 10\.244\.1\.0\/24 and 10\.244\.1\.0\/25 overlap/);
    expect(await fails(['--peer', '10.99.0.0/24=10.0.0.2'])).toMatch(/subnet 10\.99\.0\.0\/24 is outside the Network 10\.244\.0\.0\/16/);
    expect(await fails(['--pcap', '/nonexistent/x.pcap'])).toMatch(/--pcap: cannot read \/nonexistent\/x\.pcap: ENOENT/);
    expect(await fails(['--size', '10'])).toMatch(/--size: 10 is too small for ICMP echo/);
    expect(await fails(['--bogus'])).toMatch(/Unknown option '--bogus'/);
  });
});

describe('weft trace reads the state the pipeline reads, and agrees with it', () => {
  // Any packet, any backend: trace predicts where the pipeline stops from the route table, the
  // peer and the MTU, then runs the packet through the datapath and throws if the pipeline
  // did something else. If pipeline.ts changes its order of checks, this fails.
  it('never disagrees with the pipeline', () => {
    const dst = fc.constantFrom('10.244.2.7', '10.244.3.1', '10.244.1.4', '10.244.200.1', '172.16.0.1', '224.0.0.5', '10.244.2.255');
    fc.assert(
      fc.property(
        fc.record({
          backend: fc.constantFrom('udp', 'vxlan', 'ipip', 'host-gw'),
          dst,
          src: fc.constantFrom('10.244.1.2', '0.0.0.0', '10.244.9.9'),
          size: fc.integer({ min: 40, max: 2100 }),
          ttl: fc.integer({ min: 0, max: 255 }),
          df: fc.boolean(),
          proto: fc.constantFrom('icmp', 'udp', 'tcp'),
        }),
        (p) => {
          const argv = ['--backend', p.backend, '--dst', p.dst, '--src', p.src, '--size', String(p.size), '--ttl', String(p.ttl), '--proto', p.proto];
          if (p.df) argv.push('--df');
          const out = traceText(argv);
          // A verdict, or the bytes sent.
          expect(out).toMatch(/^(verdict|send) /m);
        },
      ),
      { numRuns: 300 },
    );
  });
});
