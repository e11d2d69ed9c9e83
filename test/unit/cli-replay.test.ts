// weft replay: captures through the daemon's own datapath code (Datapath loop, Pipeline,
// Backend) with no root, the output checked by tshark as a user would check it, drops counted
// by reason, and every kind of bad input ending in one line rather than a stack trace.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main';
import { Pipeline } from '../../src/datapath/pipeline';
import { VxlanBackend } from '../../src/datapath/backends/vxlan';
import { IpipBackend } from '../../src/datapath/backends/ipip';
import { buildIpv4Packet } from '../../src/packet/builder';
import { tcpChecksum } from '../../src/packet/tcp';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapReader, PcapWriter } from '../../src/packet/pcap';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'pcap');
const ETH = path.join(FIXTURES, 'eth.pcap');
const SLL2 = path.join(FIXTURES, 'any-sll2.pcap');
const KERNEL_VXLAN = path.join(FIXTURES, 'vxlan-kernel.pcap');
const HAS_TSHARK = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).status === 0;
// Only where tshark is missing are its checks skipped, and the test's name then says why.
const NO_TSHARK = HAS_TSHARK ? '' : ' — SKIPPED: tshark is not installed (scripts/setup.sh installs it)';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-replay-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const tmp = (name: string) => path.join(dir, name);

interface Run {
  code: number;
  out: string;
  err: string;
}

async function replay(...argv: string[]): Promise<Run> {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    err += String(s);
    return true;
  });
  try {
    process.exitCode = undefined;
    await main(['replay', ...argv]);
    return { code: Number(process.exitCode ?? 0), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
    process.exitCode = undefined;
  }
}

/** tshark's fields for every packet of a file, one array per packet. */
function tshark(file: string, fields: string[], extra: string[] = []): string[][] {
  const r = spawnSync('tshark', ['-r', file, ...extra, '-T', 'fields', '-E', 'separator=;', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(';'));
}

function records(file: string): Buffer[] {
  const reader = new PcapReader(fs.readFileSync(file));
  const out: Buffer[] = [];
  for (let r = reader.next(); r !== null; r = reader.next()) out.push(Buffer.from(r.data));
  return out;
}

afterEach(() => vi.restoreAllMocks());

describe('weft replay, egress: pod packets in, what goes on the wire out', () => {
  it('runs the daemon’s own code: Pipeline.egress and the backend’s encap, once per packet', async () => {
    const egress = vi.spyOn(Pipeline.prototype, 'egress');
    const encap = vi.spyOn(VxlanBackend.prototype, 'encap');
    const r = await replay(ETH, '--backend', 'vxlan', '--out', tmp('spy.pcap'));
    expect(r.code).toBe(0);
    // 9 records: 8 IPv4 into the pipeline (the IPv6 one never reaches a TUN), 3 encapsulated.
    expect(egress).toHaveBeenCalledTimes(8);
    expect(encap).toHaveBeenCalledTimes(3);
  });

  it('counts what it skipped, sent and dropped, by reason, with the ICMP errors the pipeline answered', async () => {
    const r = await replay(ETH, '--backend', 'vxlan', '--out', tmp('vx.pcap'), '--replies', tmp('vx-icmp.pcap'));
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    expect(r.out).toContain(
      'weft replay: ' +
        ETH +
        ' (Ethernet), vxlan egress as node 192.168.77.11 (lease 10.244.1.0/24; peers 192.168.77.12 → 10.244.2.0/24, 192.168.77.13 → 10.244.3.0/24)',
    );
    for (const line of [
      /^ +9 {2}records read$/,
      /^ +1 {2}skipped, not IPv4 \(ethertype 0x86dd\)$/,
      /^ +8 {2}into the pipeline$/,
      /^ +3 {2}sent to the underlay: 192\.168\.77\.12:8472 ×2, 192\.168\.77\.13:8472 ×1$/,
      /^ +5 {2}dropped$/,
      /^ +1 {2}too_big$/,
      /^ +1 {2}ttl_expired$/,
      /^ +1 {2}no_route$/,
      /^ +1 {2}local_destination$/,
      /^ +1 {2}not_in_network$/,
      /^ +3 {2}ICMP errors written back into weft0: fragmentation needed ×1, time exceeded in transit ×1, net unreachable ×1$/,
      /^wrote .*vx\.pcap: 3 packets, raw IPv4 \(outer IPv4 \/ UDP 8472 \/ VXLAN \/ Ethernet \/ pod packet\)$/,
      /^wrote .*vx-icmp\.pcap: 3 packets$/,
    ]) {
      expect(r.out).toMatch(new RegExp(line.source, 'm'));
    }
    // Timestamps carried over from the capture, packet by packet.
    const inTimes = new PcapReader(fs.readFileSync(ETH));
    const first = inTimes.next()!;
    const outFirst = new PcapReader(fs.readFileSync(tmp('vx.pcap'))).next()!;
    expect([outFirst.tsSec, outFirst.tsFrac]).toEqual([first.tsSec, first.tsFrac]);
  });

  it.skipIf(!HAS_TSHARK)(`vxlan output opens in tshark: UDP 8472, VNI 1, the VTEP MACs, the inner packet with TTL − 1${NO_TSHARK}`, async () => {
    await replay(SLL2, '--backend', 'vxlan', '--out', tmp('vx2.pcap'));
    const rows = tshark(
      tmp('vx2.pcap'),
      ['udp.dstport', 'vxlan.vni', 'vxlan.flags', 'eth.src', 'eth.dst', 'ip.src', 'ip.dst', 'ip.ttl'],
      ['-d', 'udp.port==8472,vxlan'],
    );
    // tcpdump -i any saw every packet twice (both veth ends): 3 encapsulated, twice.
    expect(rows).toHaveLength(6);
    for (const [dport, vni, flags, esrc, edst, ipsrc, ipdst, ttl] of rows) {
      expect(dport.split(',')[0]).toBe('8472');
      expect(vni).toBe('1');
      expect(flags).toBe('0x0800');
      expect(esrc).toBe('0e:00:c0:a8:4d:0b');
      expect(edst).toMatch(/^0e:00:c0:a8:4d:0[cd]$/);
      expect(ipsrc).toBe('192.168.77.11,10.244.1.2');
      expect(ipdst).toMatch(/^192\.168\.77\.1[23],10\.244\.[23]\.\d+$/);
      expect(ttl).toBe('64,63');
    }
  });

  it.skipIf(!HAS_TSHARK)(`ipip output opens in tshark: IP protocol 4, DF and TOS copied, inner packet intact${NO_TSHARK}`, async () => {
    const encap = vi.spyOn(IpipBackend.prototype, 'encap');
    const r = await replay(ETH, '--backend', 'ipip', '--out', tmp('ipip.pcap'));
    expect(r.out).toMatch(/^wrote .*ipip\.pcap: 3 packets, raw IPv4 \(outer IPv4, protocol 4 \/ pod packet\)$/m);
    expect(encap).toHaveBeenCalledTimes(3);
    const rows = tshark(tmp('ipip.pcap'), ['ip.proto', 'ip.flags.df', 'ip.dst', 'ip.checksum.status'], ['-o', 'ip.check_checksum:TRUE']);
    expect(rows.map((r) => r[0])).toEqual(['4,1', '4,17', '4,6']);
    expect(rows.map((r) => r[1])).toEqual(['1,1', '1,1', '1,1']);
    expect(rows.map((r) => r[2])).toEqual(['192.168.77.12,10.244.2.2', '192.168.77.13,10.244.3.3', '192.168.77.12,10.244.2.9']);
    // Both headers' checksums verified by tshark: the outer written by encap, the inner patched for TTL.
    for (const row of rows) expect(row[3]).toBe('1,1');
  });

  it.skipIf(!HAS_TSHARK)(`udp output is what the kernel's UDP socket sends: IPv4 + UDP 8285 → 8285 + the packet${NO_TSHARK}`, async () => {
    await replay(ETH, '--backend', 'udp', '--out', tmp('udp.pcap'));
    const rows = tshark(
      tmp('udp.pcap'),
      ['ip.src', 'ip.dst', 'udp.srcport', 'udp.dstport', 'udp.length', 'udp.checksum.status'],
      ['-o', 'udp.check_checksum:TRUE'],
    );
    expect(rows).toEqual([
      ['192.168.77.11', '192.168.77.12', '8285', '8285', '92', '1'],
      ['192.168.77.11', '192.168.77.13', '8285', '8285', '55', '1'],
      ['192.168.77.11', '192.168.77.12', '8285', '8285', '68', '1'],
    ]);
    // The UDP payload is the pod's packet, TTL lowered by one and its checksum patched.
    const inner = records(tmp('udp.pcap')).map((w) => w.subarray(28));
    expect(inner[0].subarray(12, 20)).toEqual(Buffer.from([10, 244, 1, 2, 10, 244, 2, 2]));
    expect(inner[0][8]).toBe(63);
  });

  it.skipIf(!HAS_TSHARK)(`--replies gets the ICMP errors the pipeline wrote back into weft0, which tshark decodes${NO_TSHARK}`, async () => {
    await replay(ETH, '--backend', 'udp', '--replies', tmp('icmp.pcap'));
    const rows = tshark(tmp('icmp.pcap'), ['ip.src', 'ip.dst', 'icmp.type', 'icmp.code', 'icmp.mtu']);
    // Each error quotes the packet it answers (header + 8 bytes: the echo request, type 8).
    expect(rows).toEqual([
      ['10.244.1.0,10.244.1.2', '10.244.1.2,10.244.3.7', '3,8', '4,0', '1472'],
      ['10.244.1.0,10.244.1.2', '10.244.1.2,10.244.2.2', '11,8', '0,0', ''],
      ['10.244.1.0,10.244.1.2', '10.244.1.2,10.244.77.2', '3,8', '0,0', ''],
    ]);
  });

  it('host-gw: no weft code runs; says so, and writes the packets as the kernel forwards them by host-gw routes', async () => {
    const egress = vi.spyOn(Pipeline.prototype, 'egress');
    const r = await replay(ETH, '--backend', 'host-gw', '--out', tmp('hostgw.pcap'));
    expect(r.code).toBe(0);
    expect(egress).not.toHaveBeenCalled();
    expect(r.out).toMatch(/^host-gw: weft is not on this path; the kernel forwards by the routes weft installs/m);
    expect(r.out).toMatch(/^ +4 {2}forwarded by host-gw routes: 10\.244\.2\.0\/24 via 192\.168\.77\.12 ×2, 10\.244\.3\.0\/24 via 192\.168\.77\.13 ×2$/m);
    expect(r.out).toMatch(/^ +2 {2}not forwarded: no host-gw route covers it/m);
    const input = records(ETH)
      .filter((f) => f.readUInt16BE(12) === 0x0800)
      .map((f) => f.subarray(14));
    const out = records(tmp('hostgw.pcap'));
    expect(out).toHaveLength(4);
    // Same packet, TTL one lower (ip_forward).
    const twin = input.find((p) => p.subarray(12, 20).equals(out[0].subarray(12, 20)) && p.readUInt16BE(4) === out[0].readUInt16BE(4))!;
    expect(out[0][8]).toBe(twin[8] - 1);
    expect(out[0].subarray(20)).toEqual(twin.subarray(20, twin.readUInt16BE(2)));
  });
});

describe('weft replay, ingress: underlay packets in, what the daemon writes into weft0 out', () => {
  it('decapsulates what the kernel’s own VXLAN device sent, and answers its ARP for our VTEP', async () => {
    const decap = vi.spyOn(VxlanBackend.prototype, 'decap');
    const r = await replay(KERNEL_VXLAN, '--backend', 'vxlan', '--direction', 'ingress', '--out', tmp('in.pcap'), '--replies', tmp('arp.pcap'));
    expect(r.code).toBe(0);
    expect(decap).toHaveBeenCalledTimes(11);
    expect(r.out).toMatch(/^ +11 {2}received by the socket$/m);
    expect(r.out).toMatch(/^ +4 {2}written into weft0$/m);
    // IPv6 router solicitations and MLD reports over the tunnel: this datapath carries IPv4.
    expect(r.out).toMatch(/^ +5 {2}wrong_ethertype$/m);
    expect(r.out).toMatch(/^ +2 {2}answered on the underlay: ARP reply ×2$/m);
    const inner = records(tmp('in.pcap'));
    expect(inner.map((p) => `${p.subarray(12, 16).join('.')}>${p.subarray(16, 20).join('.')}/${p[9]}`)).toEqual([
      '10.244.2.0>10.244.1.2/1',
      '10.244.2.0>10.244.1.2/1',
      '10.244.2.0>10.244.1.2/1',
      '10.244.2.0>10.244.1.2/17',
    ]);
    if (HAS_TSHARK) {
      const arp = tshark(
        tmp('arp.pcap'),
        ['udp.dstport', 'arp.opcode', 'arp.src.hw_mac', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4'],
        ['-d', 'udp.port==8472,vxlan'],
      );
      expect(arp).toEqual([
        ['8472', '2', '0e:00:c0:a8:4d:0b', '10.244.1.0', '10.244.2.0'],
        ['8472', '2', '0e:00:c0:a8:4d:0b', '10.244.1.0', '10.244.2.0'],
      ]);
    }
  });

  it('egress on node 1, then ingress on node 2, gives back node 2’s pod packets (TTL − 1) for every backend', async () => {
    for (const backend of ['udp', 'vxlan', 'ipip']) {
      const wire = tmp(`rt-${backend}.pcap`);
      const back = tmp(`rt-${backend}-in.pcap`);
      await replay(ETH, '--backend', backend, '--out', wire);
      const r = await replay(wire, '--backend', backend, '--direction', 'ingress', '--local-ip', '192.168.77.12', '--out', back);
      expect(r.code, r.err).toBe(0);
      // One of the three went to node 3: not for node 2's socket.
      expect(r.out).toMatch(/^ +1 {2}skipped, addressed to 192\.168\.77\.13, not to this node \(192\.168\.77\.12\)$/m);
      const sent = records(ETH)
        .filter((f) => f.readUInt16BE(12) === 0x0800 && f[14 + 16 + 2] === 2 && f[14 + 8] > 1 && f.length - 14 <= 1400)
        .map((f) => {
          const p = Buffer.from(f.subarray(14));
          p[8]--;
          // The capture was taken on a sending pod's veth with the kernel's checksum offload, so
          // its TCP checksum holds only the pseudo-header sum; the daemon's TUN write finishes
          // it (as a NIC would), and replay shows what the daemon writes: expect a full sum.
          if (p[9] === 6) {
            const ihl = (p[0] & 0x0f) * 4;
            const len = p.readUInt16BE(2) - ihl;
            p.writeUInt16BE(0, ihl + 16);
            p.writeUInt16BE(tcpChecksum(p, ihl, len, p.readUInt32BE(12), p.readUInt32BE(16)), ihl + 16);
          }
          return p.subarray(8, 9).toString('hex') + p.subarray(12).toString('hex');
        });
      expect(records(back).map((p) => p.subarray(8, 9).toString('hex') + p.subarray(12).toString('hex'))).toEqual(sent);
    }
  });
});

describe('weft replay: bad packets are counted drops, bad files are one line', () => {
  it('malformed, non-IPv4 and oversized packets inside a raw capture become drops by reason, never a crash', async () => {
    const w = new PcapWriter({ linktype: LINKTYPE_RAW });
    const good = buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', ttl: 64 });
    const badSum = Buffer.from(good);
    badSum[10] ^= 0xff;
    const v6 = Buffer.from([0x60, 0, 0, 0, 0, 0, 17, 64, ...new Array(32).fill(0)]);
    const longTotal = Buffer.from(good);
    longTotal.writeUInt16BE(200, 2);
    w.add(good);
    w.add(badSum);
    w.add(v6);
    w.add(good.subarray(0, 12));
    w.add(longTotal);
    w.add(Buffer.from([0x4f, 1, 2]));
    w.add(buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', payload: Buffer.alloc(3000) }));
    fs.writeFileSync(tmp('bad.pcap'), w.toBuffer());
    const r = await replay(tmp('bad.pcap'), '--backend', 'vxlan', '-v');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^#1 {2}10\.244\.1\.2 → 10\.244\.2\.2 UDP 28 B {2}sent 78 B to 192\.168\.77\.12:8472$/m);
    expect(r.out).toMatch(/^#2 .* {2}dropped: bad_checksum$/m);
    for (const [n, reason] of [
      ['1', 'bad_checksum'],
      ['1', 'not_ipv4'],
      ['2', 'truncated'],
      ['1', 'bad_total_length'],
      ['1', 'oversize'],
    ]) {
      expect(r.out).toMatch(new RegExp(`^ +${n} {2}${reason}$`, 'm'));
    }
  });

  it('random records never crash it', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 120 }), { maxLength: 12 }),
        fc.constantFrom('udp', 'vxlan', 'ipip', 'host-gw'),
        async (pkts, backend) => {
          const w = new PcapWriter({ linktype: LINKTYPE_ETHERNET });
          for (const p of pkts) w.add(p);
          fs.writeFileSync(tmp('fuzz.pcap'), w.toBuffer());
          const r = await replay(tmp('fuzz.pcap'), '--backend', backend);
          expect(r.code, r.err).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('a capture cut short replays what it holds and warns; a corrupt one replays what came before and fails', async () => {
    const eth = fs.readFileSync(ETH);
    fs.writeFileSync(tmp('short.pcap'), eth.subarray(0, eth.length - 10));
    const short = await replay(tmp('short.pcap'), '--backend', 'ipip');
    expect(short.code).toBe(0);
    expect(short.out).toMatch(/^ +8 {2}records read$/m);
    expect(short.err).toMatch(/^weft replay: warning: .*short\.pcap: the file ends inside record 9 .* it was cut short; replayed the 8 records before it\n$/);
    const corrupt = Buffer.from(eth);
    corrupt.writeUInt32LE(0x40000000, 24 + 8);
    fs.writeFileSync(tmp('corrupt.pcap'), corrupt);
    const bad = await replay(tmp('corrupt.pcap'), '--backend', 'ipip');
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^weft replay: .*corrupt\.pcap: record 1 \(at byte 24\) claims 1073741824 captured bytes.*the file is corrupt from here\n$/);
  });

  it('unreadable or garbage files, unknown backends, bad flags: one line each, exit 1', async () => {
    fs.writeFileSync(tmp('garbage.pcap'), 'this is not a capture at all, just text\n');
    const cases: [string[], RegExp][] = [
      [[tmp('missing.pcap'), '--backend', 'vxlan'], /^weft replay: cannot read .*missing\.pcap: no such file$/],
      [[tmp('garbage.pcap'), '--backend', 'vxlan'], /^weft replay: .*garbage\.pcap: not a pcap file: magic 0x74686973 /],
      [
        [path.join(FIXTURES, 'eth.pcapng'), '--backend', 'vxlan'],
        /^weft replay: .*eth\.pcapng: pcapng is not supported; convert with editcap -F pcap IN\.pcapng OUT\.pcap$/,
      ],
      [[ETH, '--backend', 'wireguard'], /^weft replay: --backend: "wireguard" is not one of udp, vxlan, ipip, host-gw$/],
      [[ETH], /^weft replay: --backend is required: udp, vxlan, ipip or host-gw$/],
      [['--backend', 'vxlan'], /^weft replay: which capture\? weft replay IN\.pcap --backend B \(see --help\)$/],
      [[ETH, '--backend', 'vxlan', '--direction', 'sideways'], /^weft replay: --direction: "sideways" is not egress or ingress$/],
      [[ETH, '--backend', 'host-gw', '--direction', 'ingress'], /^weft replay: --direction ingress with host-gw: nothing to replay/],
      [[ETH, '--backend', 'vxlan', '--local-ip', '300.1.1.1'], /^weft replay: --local-ip: invalid IPv4 address "300\.1\.1\.1"$/],
      [[ETH, '--backend', 'vxlan', '--peer', 'x=y'], /^weft replay: --peer: invalid CIDR "x": missing/],
      [[ETH, '--backend', 'vxlan', '--mtu', '100'], /^weft replay: --mtu: "100" is not a whole number in 576\.\.9000$/],
    ];
    for (const [argv, want] of cases) {
      const r = await replay(...argv);
      expect(r.code, argv.join(' ')).toBe(1);
      expect(r.err.trimEnd().split('\n'), argv.join(' ')).toHaveLength(1);
      expect(r.err.trimEnd()).toMatch(want);
    }
  });
});
