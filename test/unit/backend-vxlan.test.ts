import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PerformanceObserver } from 'node:perf_hooks';
import {
  VXLAN_ARP_REPLY_LEN,
  VXLAN_DEFAULT_PORT,
  VXLAN_DEFAULT_VNI,
  VXLAN_OFFLINE_SEND_PORTS,
  VXLAN_SRC_PORT_MAX,
  VXLAN_SRC_PORT_MIN,
  VxlanBackend,
  flowSrcPort,
  portFromHash,
  vtepMacFor,
} from '../../src/datapath/backends/vxlan';
import { Pipeline } from '../../src/datapath/pipeline';
import { DatapathStats, Drop } from '../../src/datapath/stats';
import { ENCAP_OK } from '../../src/datapath/backend';
import { PeerCounters, type Peer } from '../../src/datapath/peer';
import { MemoryTransport, udpSocketFrames } from '../../src/io/memory-transport';
import { PacketList } from '../../src/io/packet-list';
import { ARP_LEN, writeArpRequest } from '../../src/packet/arp';
import { buildIpv4Packet } from '../../src/packet/builder';
import { checksum } from '../../src/packet/checksum';
import { formatMac, parseMac, writeEthernetHeader } from '../../src/packet/ethernet';
import { IPPROTO_ICMP, IPPROTO_TCP, ipv4UpdateChecksum, writeIpv4Header } from '../../src/packet/ipv4';
import { writeUdpHeader } from '../../src/packet/udp';
import { writeVxlanHeader } from '../../src/packet/vxlan';
import { RouteTable } from '../../src/route/route-table';
import { parseCidr, parseIpv4, type Cidr } from '../../src/route/address';

const NETWORK = parseCidr('10.244.0.0/16');
const A = { pub: parseIpv4('192.168.77.11'), subnet: parseCidr('10.244.1.0/24') };
const B = { pub: parseIpv4('192.168.77.12'), subnet: parseCidr('10.244.2.0/24') };
const KERNEL_MAC = parseMac('6a:3f:1d:00:9c:02');
const HEADROOM = 64;

interface Warn {
  o: object;
  m: string;
}

function backendFor(node: typeof A, warns: Warn[] = [], vni = 1): VxlanBackend {
  return new VxlanBackend({
    vni,
    port: VXLAN_DEFAULT_PORT,
    localPublicIp: node.pub,
    localVtepIp: node.subnet.addr,
    vtepMac: vtepMacFor(node.pub),
    log: { warn: (o, m) => warns.push({ o, m }) },
  });
}

function peerOf(subnet: Cidr, publicIp: number, backendData: Record<string, unknown>, local = false): Peer {
  return { subnet, publicIp, port: VXLAN_DEFAULT_PORT, backendData, local, direct: false, backendState: null, counters: new PeerCounters() };
}

/** A slab with one inner packet at HEADROOM, as TUN reads leave it. */
function slab(pkt: Uint8Array): Buffer {
  const buf = Buffer.alloc(2048, 0xee);
  buf.set(pkt, HEADROOM);
  return buf;
}

function hex(b: Uint8Array, off = 0, len = b.length - off): string {
  return Buffer.from(b.buffer, b.byteOffset + off, len).toString('hex');
}

describe('constants and identity', () => {
  it('uses flannel defaults and 50 bytes of overhead', () => {
    expect(VXLAN_DEFAULT_PORT).toBe(8472);
    expect(VXLAN_DEFAULT_VNI).toBe(1);
    const b = backendFor(A);
    expect(b.type).toBe('vxlan');
    expect(b.mtuOverhead).toBe(50);
    // encap writes VXLAN + inner Ethernet; the kernel's UDP socket adds outer IPv4 + UDP.
    expect(b.headroom).toBe(22);
  });

  it('derives a locally administered unicast VTEP MAC from the public IP, the same every time', () => {
    const m = vtepMacFor(A.pub);
    expect(formatMac(m)).toBe('0e:00:c0:a8:4d:0b');
    expect(m[0] & 0x01).toBe(0); // I/G: unicast
    expect(m[0] & 0x02).toBe(2); // U/L: locally administered
    expect(vtepMacFor(A.pub).equals(m)).toBe(true);
    expect(vtepMacFor(B.pub).equals(m)).toBe(false);
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), (x, y) => {
        const mx = vtepMacFor(x);
        expect(mx[0] & 3).toBe(2);
        expect(mx.equals(vtepMacFor(y))).toBe(x === y);
      }),
    );
  });

  it("publishes flannel's BackendData keys", () => {
    expect(backendFor(A).leaseData()).toEqual({ VNI: 1, VtepMAC: '0e:00:c0:a8:4d:0b' });
  });

  it('refuses a VNI outside 24 bits, a bad port and a group VTEP MAC', () => {
    const base = { vni: 1, port: 8472, localPublicIp: A.pub, localVtepIp: A.subnet.addr, vtepMac: vtepMacFor(A.pub) };
    expect(() => new VxlanBackend({ ...base, vni: 1 << 24 })).toThrow(/VNI/);
    expect(() => new VxlanBackend({ ...base, vni: -1 })).toThrow(/VNI/);
    expect(() => new VxlanBackend({ ...base, port: 0 })).toThrow(/port/);
    expect(() => new VxlanBackend({ ...base, vtepMac: parseMac('01:00:5e:00:00:01') })).toThrow(/unicast/);
    expect(() => new VxlanBackend({ ...base, vtepMac: Buffer.alloc(5) })).toThrow(/6-byte/);
  });
});

describe('neighbor and forwarding tables', () => {
  it('programs both from the peer lease and precomputes the inner Ethernet header', () => {
    const b = backendFor(A);
    const p = peerOf(B.subnet, B.pub, { VNI: 1, VtepMAC: formatMac(KERNEL_MAC) });
    b.onPeerAdded(p);
    expect(b.neighbors()).toEqual([{ ip: '10.244.2.0', mac: '6a:3f:1d:00:9c:02' }]);
    expect(b.fdb()).toEqual([{ mac: '6a:3f:1d:00:9c:02', dst: '192.168.77.12' }]);
    const st = p.backendState as { eth: Buffer; dst: number };
    expect(st.eth.toString('hex')).toBe('6a3f1d009c02' + '0e00c0a84d0b' + '0800');
    expect(st.dst).toBe(B.pub);
    b.onPeerRemoved(p);
    expect(b.neighbors()).toEqual([]);
    expect(b.fdb()).toEqual([]);
    expect(p.backendState).toBeNull();
  });

  it.each([
    [{ VNI: 1 }, /no usable VtepMAC/],
    [{ VNI: 1, VtepMAC: 'zz:00:00:00:00:00' }, /no usable VtepMAC/],
    [{ VNI: 1, VtepMAC: 42 }, /no usable VtepMAC/],
    [{ VNI: 1, VtepMAC: 'ff:ff:ff:ff:ff:ff' }, /group address/],
    [{ VNI: 2, VtepMAC: '6a:3f:1d:00:9c:02' }, /another VNI/],
  ])('warns about %j and leaves the peer without state', (data, why) => {
    const warns: Warn[] = [];
    const b = backendFor(A, warns);
    const p = peerOf(B.subnet, B.pub, data);
    p.backendState = 'stale';
    b.onPeerAdded(p);
    expect(p.backendState).toBeNull();
    expect(b.neighbors()).toEqual([]);
    expect(b.fdb()).toEqual([]);
    expect(warns.length).toBe(1);
    expect(warns[0].m).toMatch(why);
    expect(warns[0].o).toMatchObject({ subnet: '10.244.2.0/24', publicIp: '192.168.77.12' });
    // encap refuses and says why.
    const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7' });
    const tx = new PacketList({ capacity: 4, slotSize: 2048, headroom: 0 });
    expect(b.encap(slab(pkt), HEADROOM, pkt.length, p, tx)).toBe(Drop.NoNeighbor);
    expect(tx.count).toBe(0);
    expect(b.noNeighbor).toBe(1);
    b.onPeerRemoved(p);
  });

  it('accepts a lease without VNI (flannel itself never reads it) and the VNI as a string', () => {
    const b = backendFor(A);
    const p1 = peerOf(B.subnet, B.pub, { VtepMAC: '6a:3f:1d:00:9c:02' });
    const p2 = peerOf(parseCidr('10.244.3.0/24'), parseIpv4('192.168.77.13'), { VNI: '1', VtepMAC: '6a:3f:1d:00:9c:03' });
    b.onPeerAdded(p1);
    b.onPeerAdded(p2);
    expect(p1.backendState).not.toBeNull();
    expect(p2.backendState).not.toBeNull();
    expect(b.neighbors().length).toBe(2);
  });

  it('a lease update (added new, then removed old, same subnet) keeps the new entries and drops the old MAC', () => {
    const b = backendFor(A);
    const old = peerOf(B.subnet, B.pub, { VNI: 1, VtepMAC: '6a:3f:1d:00:9c:02' });
    const neu = peerOf(B.subnet, B.pub, { VNI: 1, VtepMAC: '6a:3f:1d:00:9c:99' });
    b.onPeerAdded(old);
    b.onPeerAdded(neu);
    b.onPeerRemoved(old);
    expect(b.neighbors()).toEqual([{ ip: '10.244.2.0', mac: '6a:3f:1d:00:9c:99' }]);
    expect(b.fdb()).toEqual([{ mac: '6a:3f:1d:00:9c:99', dst: '192.168.77.12' }]);
    expect(neu.backendState).not.toBeNull();
  });

  it('a renewal with the same MAC keeps it after the old peer object goes', () => {
    const b = backendFor(A);
    const data = { VNI: 1, VtepMAC: '6a:3f:1d:00:9c:02' };
    const old = peerOf(B.subnet, B.pub, data);
    const neu = peerOf(B.subnet, B.pub, { ...data });
    b.onPeerAdded(old);
    b.onPeerAdded(neu);
    b.onPeerRemoved(old);
    expect(b.fdb()).toEqual([{ mac: '6a:3f:1d:00:9c:02', dst: '192.168.77.12' }]);
    expect(b.neighbors()).toEqual([{ ip: '10.244.2.0', mac: '6a:3f:1d:00:9c:02' }]);
  });
});

describe('encap', () => {
  function encapOne(pkt: Uint8Array) {
    const b = backendFor(A);
    const p = peerOf(B.subnet, B.pub, backendFor(B).leaseData());
    b.onPeerAdded(p);
    const buf = slab(pkt);
    // The transmit list describes the slab the packet is in, as the pipeline's view does.
    const tx = new PacketList({ capacity: 4, slotSize: 2048, headroom: 0 }, buf);
    expect(b.encap(buf, HEADROOM, pkt.length, p, tx)).toBe(ENCAP_OK);
    return { b, p, buf, tx };
  }

  it('writes VXLAN and inner Ethernet, field by field, in front of the untouched packet, and the flow hash as its lane', () => {
    const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', protocol: IPPROTO_TCP, payload: Buffer.from('0401005000000000', 'hex') });
    const { buf, tx } = encapOne(pkt);
    expect(tx.count).toBe(1);
    expect(tx.offs[0]).toBe(HEADROOM - 22);
    expect(tx.lens[0]).toBe(pkt.length + 22);
    expect(tx.addrs[0]).toBe(B.pub);
    expect(tx.ports[0]).toBe(8472);
    // The lane (which send socket, hence which source port) is the flow hash.
    const lane = tx.lanes[0];
    expect(lane).toBeGreaterThanOrEqual(VXLAN_SRC_PORT_MIN);
    expect(lane).toBeLessThan(VXLAN_SRC_PORT_MAX);
    expect(lane).toBe(flowSrcPort(pkt, 0, pkt.length));
    const o = HEADROOM - 22;
    // VXLAN: I flag, VNI 1, reserved zero.
    expect(hex(buf, o, 8)).toBe('0800000000000100');
    // Inner Ethernet: the peer's VTEP MAC, ours, IPv4.
    expect(hex(buf, o + 8, 14)).toBe('0e00c0a84d0c' + '0e00c0a84d0b' + '0800');
    expect(hex(buf, HEADROOM, pkt.length)).toBe(hex(pkt));
    // Nothing in front of it is touched: the outer headers are the kernel's.
    expect(hex(buf, o - 28, 28)).toBe('ee'.repeat(28));
  });

  it('on the wire (what the pool socket the lane picks sends): outer IPv4 and UDP, then VXLAN and Ethernet', () => {
    const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', payload: Buffer.alloc(100, 7) });
    const { tx } = encapOne(pkt);
    const sock = new MemoryTransport('udp', A.pub, 8472, 1500, VXLAN_OFFLINE_SEND_PORTS, true);
    expect(sock.send(tx)).toBe(1);
    const [frame] = sock.sent[0].wire;
    const total = pkt.length + 50;
    expect(frame.length).toBe(total);
    const sport = VXLAN_OFFLINE_SEND_PORTS[flowSrcPort(pkt, 0, pkt.length) % VXLAN_OFFLINE_SEND_PORTS.length];
    const expected = Buffer.alloc(50);
    // The pool socket: TOS 0, DF clear (IP_PMTUDISC_DONT, as the kernel's VXLAN device), TTL 64, the kernel's ID (0 here).
    writeIpv4Header(expected, 0, A.pub, B.pub, 17, 64, total, 0, false);
    writeUdpHeader(expected, 20, sport, 8472, pkt.length + 30, frame.readUInt16BE(26));
    writeVxlanHeader(expected, 28, 1);
    writeEthernetHeader(expected, 36, vtepMacFor(B.pub), vtepMacFor(A.pub), 0x0800);
    expect(hex(frame, 0, 50)).toBe(expected.toString('hex'));
    expect(checksum(frame, 0, 20)).toBe(0);
    // The socket computes the UDP checksum (the kernel's VXLAN device sends 0; both are valid, RFC 7348 §5).
    expect(frame.readUInt16BE(26)).not.toBe(0);
    expect(hex(frame, 50)).toBe(hex(pkt));
  });

  it('leaves the outer TOS/ECN to the socket (not-ECT, RFC 6040 §4.2): a per-packet TOS would break GSO runs', () => {
    for (const inner of [0, 1, 2, 3]) {
      const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7' });
      pkt[1] = 0xb8 | inner;
      ipv4UpdateChecksum(pkt, 0);
      const { buf, tx } = encapOne(pkt);
      // The inner header, ECN included, is carried unchanged.
      expect(buf[HEADROOM + 1]).toBe(0xb8 | inner);
      const sock = new MemoryTransport('udp', A.pub, 8472, 1500, VXLAN_OFFLINE_SEND_PORTS, true);
      sock.send(tx);
      expect(sock.sent[0].wire[0][1]).toBe(0);
    }
  });

  it('refuses when the headroom is too small', () => {
    const b = backendFor(A);
    const p = peerOf(B.subnet, B.pub, backendFor(B).leaseData());
    b.onPeerAdded(p);
    const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7' });
    const buf = Buffer.alloc(256);
    buf.set(pkt, 10);
    const tx = new PacketList({ capacity: 4, slotSize: 256, headroom: 0 });
    expect(b.encap(buf, 10, pkt.length, p, tx)).toBe(Drop.SendFailed);
  });
});

describe('UDP source port (RFC 7348 §5 ECMP entropy, udp_flow_src_port mapping)', () => {
  const tcp = (src: string, dst: string, sp: number, dp: number, extra: Partial<{ frag: number; mf: boolean }> = {}) => {
    const l4 = Buffer.alloc(20);
    l4.writeUInt16BE(sp, 0);
    l4.writeUInt16BE(dp, 2);
    const p = buildIpv4Packet({ src, dst, protocol: IPPROTO_TCP, payload: l4 });
    if (extra.frag !== undefined || extra.mf) {
      p.writeUInt16BE(((extra.mf ? 0x2000 : 0) | (extra.frag ?? 0)) & 0xffff, 6);
      ipv4UpdateChecksum(p, 0);
    }
    return p;
  };
  const port = (p: Buffer): number => flowSrcPort(p, 0, p.length);

  it('same flow, same port; both directions of a flow alike; payload and TTL do not matter', () => {
    const a = tcp('10.244.1.5', '10.244.2.7', 40000, 5201);
    const a2 = tcp('10.244.1.5', '10.244.2.7', 40000, 5201);
    a2[8] = 3;
    a2[30] = 0x55;
    expect(port(a)).toBe(port(a2));
    expect(port(tcp('10.244.2.7', '10.244.1.5', 5201, 40000))).toBe(port(a));
  });

  it('different flows spread over the range', () => {
    const seen = new Set<number>();
    const buckets = new Array<number>(16).fill(0);
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const p = port(tcp('10.244.1.5', '10.244.2.7', 32768 + i, 5201));
      seen.add(p);
      buckets[Math.floor(((p - VXLAN_SRC_PORT_MIN) * 16) / (VXLAN_SRC_PORT_MAX - VXLAN_SRC_PORT_MIN))]++;
    }
    // 4000 draws from 28231 ports: ~270 collisions expected if uniform.
    expect(seen.size).toBeGreaterThan(3500);
    for (const c of buckets) expect(c).toBeGreaterThan((n / 16) * 0.7);
    // Addresses alone also spread (ping between different pods).
    const byAddr = new Set<number>();
    for (let i = 2; i < 202; i++) byAddr.add(port(buildIpv4Packet({ src: `10.244.1.${i}`, dst: '10.244.2.7', protocol: IPPROTO_ICMP })));
    expect(byAddr.size).toBeGreaterThan(190);
  });

  it('uses ports only where the transport header is: first fragments yes, later fragments and ICMP no', () => {
    const first1 = tcp('10.244.1.5', '10.244.2.7', 40000, 5201, { mf: true });
    const first2 = tcp('10.244.1.5', '10.244.2.7', 40001, 5201, { mf: true });
    expect(port(first1)).toBe(port(tcp('10.244.1.5', '10.244.2.7', 40000, 5201)));
    expect(port(first1)).not.toBe(port(first2));
    const later1 = tcp('10.244.1.5', '10.244.2.7', 40000, 5201, { frag: 185 });
    const later2 = tcp('10.244.1.5', '10.244.2.7', 40001, 5201, { frag: 185 });
    expect(port(later1)).toBe(port(later2));
    expect(port(later1)).toBe(port(tcp('10.244.1.5', '10.244.2.7', 0, 0)));
    const icmp1 = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', protocol: IPPROTO_ICMP, payload: Buffer.from('0800aaaa00010001', 'hex') });
    const icmp2 = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', protocol: IPPROTO_ICMP, payload: Buffer.from('0800bbbb00020002', 'hex') });
    expect(port(icmp1)).toBe(port(icmp2));
  });

  it('always lands in [32768, 60999), for any hash and any packet', () => {
    expect(portFromHash(0)).toBe(VXLAN_SRC_PORT_MIN);
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), (h) => {
        const p = portFromHash(h);
        expect(Number.isInteger(p)).toBe(true);
        expect(p).toBeGreaterThanOrEqual(VXLAN_SRC_PORT_MIN);
        expect(p).toBeLessThan(VXLAN_SRC_PORT_MAX);
      }),
      { numRuns: 5000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 20, maxLength: 40 }), (bytes) => {
        const p = flowSrcPort(bytes, 0, bytes.length);
        expect(p).toBeGreaterThanOrEqual(VXLAN_SRC_PORT_MIN);
        expect(p).toBeLessThan(VXLAN_SRC_PORT_MAX);
      }),
    );
  });
});

/** A VXLAN payload as the kernel's UDP socket hands it to us: VXLAN header + Ethernet + body. */
function vxlanFrame(opts: { vni?: number; flags?: number; dstMac?: Buffer; srcMac?: Buffer; type?: number; body: Uint8Array }): Buffer {
  const f = Buffer.alloc(8 + 14 + opts.body.length);
  writeVxlanHeader(f, 0, opts.vni ?? 1);
  if (opts.flags !== undefined) f[0] = opts.flags;
  writeEthernetHeader(f, 8, opts.dstMac ?? vtepMacFor(A.pub), opts.srcMac ?? KERNEL_MAC, opts.type ?? 0x0800);
  f.set(opts.body, 22);
  return f;
}

function arpRequest(targetIp: string, senderIp = '10.244.2.0', senderMac = KERNEL_MAC): Buffer {
  const a = Buffer.alloc(ARP_LEN);
  writeArpRequest(a, 0, senderMac, parseIpv4(senderIp), parseIpv4(targetIp));
  return a;
}

describe('decap', () => {
  const inner = buildIpv4Packet({ src: '10.244.2.7', dst: '10.244.1.5', payload: Buffer.from('hi') });
  const peer = peerOf(B.subnet, B.pub, { VNI: 1, VtepMAC: formatMac(KERNEL_MAC) });

  function decapOne(frame: Buffer, b = backendFor(A), replies = new PacketList({ capacity: 4, slotSize: 128, headroom: 0 })) {
    const buf = Buffer.alloc(2048, 0xee);
    frame.copy(buf, HEADROOM);
    return { r: b.decap(buf, HEADROOM, frame.length, peer, replies), replies, b };
  }

  it('accepts IPv4 for our VTEP MAC: the inner packet starts 22 bytes in', () => {
    expect(decapOne(vxlanFrame({ body: inner })).r).toBe(HEADROOM + 22);
  });

  it('ignores reserved bits and other flags when I is set (RFC 7348 §5)', () => {
    const f = vxlanFrame({ body: inner });
    f[0] = 0xff;
    f[1] = f[2] = f[3] = f[7] = 0xff;
    expect(decapOne(f).r).toBe(HEADROOM + 22);
  });

  it.each([
    ['shorter than VXLAN + Ethernet', vxlanFrame({ body: inner }).subarray(0, 21), Drop.BadEncap],
    ['I flag clear', vxlanFrame({ body: inner, flags: 0x00 }), Drop.BadEncap],
    ['another VNI', vxlanFrame({ body: inner, vni: 2 }), Drop.WrongVni],
    ['another VNI and no I flag (I is checked first)', vxlanFrame({ body: inner, vni: 2, flags: 0 }), Drop.BadEncap],
    ['IPv4 to another MAC', vxlanFrame({ body: inner, dstMac: KERNEL_MAC }), Drop.WrongMac],
    ['IPv4 to broadcast', vxlanFrame({ body: inner, dstMac: parseMac('ff:ff:ff:ff:ff:ff') }), Drop.WrongMac],
    ['IPv6', vxlanFrame({ body: inner, type: 0x86dd }), Drop.WrongEthertype],
    ['802.1Q tag', vxlanFrame({ body: inner, type: 0x8100 }), Drop.WrongEthertype],
    [
      'ARP request for another address',
      vxlanFrame({ body: arpRequest('10.244.1.1'), dstMac: parseMac('ff:ff:ff:ff:ff:ff'), type: 0x0806 }),
      Drop.WrongEthertype,
    ],
    ['ARP reply', vxlanFrame({ body: Buffer.from(arpRequest('10.244.1.0').fill(2, 7, 8)), type: 0x0806 }), Drop.WrongEthertype],
    ['truncated ARP', vxlanFrame({ body: arpRequest('10.244.1.0').subarray(0, 27), dstMac: parseMac('ff:ff:ff:ff:ff:ff'), type: 0x0806 }), Drop.WrongEthertype],
    ['ARP request unicast to another station', vxlanFrame({ body: arpRequest('10.244.1.0'), dstMac: KERNEL_MAC, type: 0x0806 }), Drop.WrongMac],
  ])('refuses %s', (_why, frame, reason) => {
    const { r, replies } = decapOne(frame);
    expect(r).toBe(-reason);
    expect(replies.count).toBe(0);
  });
});

describe('ARP responder', () => {
  const peer = peerOf(B.subnet, B.pub, { VNI: 1, VtepMAC: formatMac(KERNEL_MAC) });

  it('answers a broadcast request for our VTEP IP with a byte-exact reply to the requester', () => {
    const b = backendFor(A);
    const replies = new PacketList({ capacity: 4, slotSize: 128, headroom: 0 });
    replies.push(0, 0); // one slot already used: the reply goes into the next
    const frame = vxlanFrame({ body: arpRequest('10.244.1.0'), dstMac: parseMac('ff:ff:ff:ff:ff:ff'), type: 0x0806 });
    const buf = Buffer.alloc(512);
    frame.copy(buf, 30);
    const before = Buffer.from(buf);
    expect(b.decap(buf, 30, frame.length, peer, replies)).toBe(-Drop.Consumed);
    expect(buf.equals(before)).toBe(true); // the request is not modified
    expect(b.arpReplies).toBe(1);
    expect(replies.count).toBe(2);
    expect(replies.offs[1]).toBe(128);
    expect(replies.lens[1]).toBe(VXLAN_ARP_REPLY_LEN);
    expect(VXLAN_ARP_REPLY_LEN).toBe(50);
    expect(replies.addrs[1]).toBe(B.pub);
    expect(replies.ports[1]).toBe(8472);
    // The lane (source port entropy) is a hash of the ARP exchange, in the kernel's range.
    const lane = replies.lanes[1];
    expect(lane).toBeGreaterThanOrEqual(VXLAN_SRC_PORT_MIN);
    expect(lane).toBeLessThan(VXLAN_SRC_PORT_MAX);
    const out = replies.buf.subarray(128, 128 + 50);
    const body =
      '0800000000000100' +
      '6a3f1d009c02' +
      '0e00c0a84d0b' +
      '0806' +
      '0001' +
      '0800' +
      '06' +
      '04' +
      '0002' +
      '0e00c0a84d0b' +
      '0af40100' +
      '6a3f1d009c02' +
      '0af40200';
    expect(out.toString('hex')).toBe(body);
    // On the wire: the kernel's IPv4 + UDP (78 bytes) to the requester's VXLAN port.
    const sock = new MemoryTransport('udp', A.pub, 8472, 1500, VXLAN_OFFLINE_SEND_PORTS, true);
    replies.lens[0] = 0; // the used slot is skipped
    expect(sock.send(replies)).toBe(1);
    const wire = sock.sent[0].wire[0];
    expect(wire.length).toBe(78);
    const expected = Buffer.alloc(28);
    writeIpv4Header(expected, 0, A.pub, B.pub, 17, 64, 78, 0, false);
    writeUdpHeader(expected, 20, VXLAN_OFFLINE_SEND_PORTS[lane % VXLAN_OFFLINE_SEND_PORTS.length], 8472, 58, wire.readUInt16BE(26));
    expect(wire.toString('hex')).toBe(expected.toString('hex') + body);
  });

  it('answers a unicast re-validation (NUD probe) to our MAC as well, and the same request gets the same source port', () => {
    const b = backendFor(A);
    const replies = new PacketList({ capacity: 4, slotSize: 128, headroom: 0 });
    const f1 = vxlanFrame({ body: arpRequest('10.244.1.0'), dstMac: vtepMacFor(A.pub), type: 0x0806 });
    const f2 = vxlanFrame({ body: arpRequest('10.244.1.0'), dstMac: parseMac('ff:ff:ff:ff:ff:ff'), type: 0x0806 });
    expect(b.decap(f1, 0, f1.length, peer, replies)).toBe(-Drop.Consumed);
    expect(b.decap(f2, 0, f2.length, peer, replies)).toBe(-Drop.Consumed);
    expect(replies.count).toBe(2);
    expect(replies.lanes[0]).toBe(replies.lanes[1]);
    expect(replies.buf.subarray(0, 50).equals(replies.buf.subarray(128, 128 + 50))).toBe(true);
  });

  it('accepts a padded (60-byte) ARP frame', () => {
    const b = backendFor(A);
    const replies = new PacketList({ capacity: 4, slotSize: 128, headroom: 0 });
    const f = vxlanFrame({ body: Buffer.concat([arpRequest('10.244.1.0'), Buffer.alloc(18)]), dstMac: parseMac('ff:ff:ff:ff:ff:ff'), type: 0x0806 });
    expect(b.decap(f, 0, f.length, peer, replies)).toBe(-Drop.Consumed);
  });

  it('counts send_failed when the reply list is full or its slots are too small', () => {
    const b = backendFor(A);
    const f = vxlanFrame({ body: arpRequest('10.244.1.0'), dstMac: parseMac('ff:ff:ff:ff:ff:ff'), type: 0x0806 });
    const full = new PacketList({ capacity: 1, slotSize: 128, headroom: 0 });
    full.push(0, 0);
    expect(b.decap(f, 0, f.length, peer, full)).toBe(-Drop.SendFailed);
    const small = new PacketList({ capacity: 4, slotSize: 48, headroom: 0 });
    expect(b.decap(f, 0, f.length, peer, small)).toBe(-Drop.SendFailed);
    expect(small.count).toBe(0);
  });
});

/** One node's pipeline, as the daemon builds it, with the other node as its peer. */
function node(me: typeof A, other: typeof A, batchSize = 16) {
  const backend = backendFor(me);
  const otherBackend = backendFor(other);
  const stats = new DatapathStats();
  const routes = new RouteTable<Peer>();
  const local = peerOf(me.subnet, me.pub, backend.leaseData(), true);
  const remote = peerOf(other.subnet, other.pub, otherBackend.leaseData());
  backend.onPeerAdded(remote);
  routes.update((t) => {
    t.insert(me.subnet.addr, me.subnet.len, local);
    t.insert(other.subnet.addr, other.subnet.len, remote);
  });
  const pipeline = new Pipeline({
    backend,
    routes,
    peersByAddr: new Map([[other.pub, remote]]),
    network: NETWORK,
    localSubnet: me.subnet,
    icmpSource: me.subnet.addr,
    stats,
    batchSize,
    tunnelMtu: 1450,
  });
  const tunRx = new PacketList({ capacity: batchSize, slotSize: 2048, headroom: HEADROOM });
  const tx = PacketList.view(tunRx);
  const sockRx = new PacketList({ capacity: batchSize, slotSize: 2048, headroom: HEADROOM });
  const toTun = PacketList.view(sockRx);
  return { backend, remote, stats, pipeline, tunRx, tx, sockRx, toTun };
}

/**
 * The underlay between two nodes: the sending kernel's pool socket (by lane) adds outer IPv4 +
 * UDP, the receiving kernel strips them and reports the sender.
 */
function deliver(from: PacketList, to: PacketList, srcIp: number): void {
  to.clear();
  for (let i = 0; i < from.count; i++) {
    const o = from.offs[i];
    const payload = from.buf.subarray(o, o + from.lens[i]);
    const sport = VXLAN_OFFLINE_SEND_PORTS[from.lanes[i] % VXLAN_OFFLINE_SEND_PORTS.length];
    const [pkt] = udpSocketFrames(payload, srcIp, sport, from.addrs[i], from.ports[i], 1500, true);
    expect(pkt[6] & 0x40).toBe(0); // DF clear
    expect(checksum(pkt, 0, 20)).toBe(0);
    expect(pkt[9]).toBe(17);
    expect(pkt.readUInt16BE(2)).toBe(pkt.length);
    expect(pkt.readUInt16BE(22)).toBe(8472);
    expect(pkt.readUInt16BE(24)).toBe(pkt.length - 20);
    const slot = to.count * to.slotSize + to.headroom;
    pkt.copy(to.buf, slot, 28);
    to.push(slot, pkt.length - 28, pkt.readUInt32BE(12), pkt.readUInt16BE(20));
  }
}

function loadTun(rx: PacketList, pkts: Uint8Array[]): void {
  rx.clear();
  for (const p of pkts) {
    const off = rx.count * rx.slotSize + rx.headroom;
    rx.buf.set(p, off);
    rx.push(off, p.length);
  }
}

describe('egress → wire → ingress through two pipelines', () => {
  it('delivers packets both ways, byte for byte but for the TTL', () => {
    const a = node(A, B);
    const b = node(B, A);
    const there = [
      buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 64, payload: Buffer.alloc(1400, 1) }),
      buildIpv4Packet({ src: '10.244.1.6', dst: '10.244.2.8', ttl: 9, protocol: IPPROTO_TCP, payload: Buffer.alloc(40, 2) }),
    ];
    loadTun(a.tunRx, there);
    a.pipeline.egress(a.tunRx, a.tx);
    expect(a.tx.count).toBe(2);
    deliver(a.tx, b.sockRx, A.pub);
    b.pipeline.ingress(b.sockRx, b.toTun);
    expect(b.toTun.count).toBe(2);
    for (let i = 0; i < 2; i++) {
      const got = Buffer.from(b.toTun.buf.subarray(b.toTun.offs[i], b.toTun.offs[i] + b.toTun.lens[i]));
      const want = Buffer.from(there[i]);
      expect(got[8]).toBe(want[8] - 1);
      expect(checksum(got, 0, 20)).toBe(0);
      got[8] = want[8];
      got[10] = want[10];
      got[11] = want[11];
      expect(got.equals(want)).toBe(true);
    }
    expect(b.stats.rxPackets).toBe(2);
    expect(Object.keys(b.stats.toJSON().drops as object)).toEqual([]);

    const back = buildIpv4Packet({ src: '10.244.2.7', dst: '10.244.1.5', payload: Buffer.from('pong') });
    loadTun(b.tunRx, [back]);
    b.pipeline.egress(b.tunRx, b.tx);
    deliver(b.tx, a.sockRx, B.pub);
    a.pipeline.ingress(a.sockRx, a.toTun);
    expect(a.toTun.count).toBe(1);
    expect(a.stats.rxPackets).toBe(1);
  });

  it('drops on the receiving side what the peer must not send: wrong subnet, wrong VNI', () => {
    const a = node(A, B);
    const b = node(B, A);
    // A packet A's pipeline would never send (source outside A's subnet): B checks anyway.
    loadTun(a.tunRx, [buildIpv4Packet({ src: '10.244.9.5', dst: '10.244.2.7' })]);
    a.pipeline.egress(a.tunRx, a.tx);
    deliver(a.tx, b.sockRx, A.pub);
    b.sockRx.buf[b.sockRx.offs[0] + 6] = 0; // and make a second copy with VNI 0
    b.pipeline.ingress(b.sockRx, b.toTun);
    expect(b.stats.dropCount(Drop.WrongVni)).toBe(1);
    deliver(a.tx, b.sockRx, A.pub);
    b.pipeline.ingress(b.sockRx, b.toTun);
    expect(b.stats.dropCount(Drop.SrcNotInPeerSubnet)).toBe(1);
    expect(b.toTun.count).toBe(0);
  });

  it("answers an ARP request on the underlay from the pipeline's reply list", () => {
    const a = node(A, B);
    const frame = vxlanFrame({
      body: arpRequest('10.244.1.0', '10.244.2.0', vtepMacFor(B.pub)),
      dstMac: parseMac('ff:ff:ff:ff:ff:ff'),
      srcMac: vtepMacFor(B.pub),
      type: 0x0806,
    });
    a.sockRx.clear();
    frame.copy(a.sockRx.buf, HEADROOM);
    a.sockRx.push(HEADROOM, frame.length, B.pub, 40000);
    a.pipeline.replies.clear();
    a.pipeline.ingress(a.sockRx, a.toTun);
    expect(a.toTun.count).toBe(0);
    expect(a.stats.dropCount(Drop.Consumed)).toBe(1);
    expect(a.pipeline.replies.count).toBe(1);
    const r = a.pipeline.replies;
    const out = r.buf.subarray(r.offs[0], r.offs[0] + r.lens[0]);
    expect(r.addrs[0]).toBe(B.pub);
    expect(r.ports[0]).toBe(8472);
    expect(formatMac(out, 8)).toBe(formatMac(vtepMacFor(B.pub)));
    expect(out.readUInt16BE(22 + 6)).toBe(2);
  });

  it('allocates nothing per packet: 200k packets through egress/encap and decap, and ARP answers, without a garbage collection', async () => {
    const a = node(A, B, 64);
    const b = node(B, A, 64);
    const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', protocol: IPPROTO_TCP, payload: Buffer.alloc(1000) });
    const arp = vxlanFrame({ body: arpRequest('10.244.2.0'), dstMac: parseMac('ff:ff:ff:ff:ff:ff'), type: 0x0806 });
    loadTun(a.tunRx, new Array<Buffer>(64).fill(pkt));
    let gcs = 0;
    const obs = new PerformanceObserver((l) => (gcs += l.getEntries().length));
    obs.observe({ entryTypes: ['gc'] });
    const rounds = Math.ceil(200_000 / 64);
    try {
      // The first pass warms up the JIT; the second is measured.
      for (let pass = 0; pass < 2; pass++) {
        const g0 = gcs;
        for (let r = 0; r < rounds; r++) {
          // Restore TTL and checksum (egress decrements them in place).
          for (let i = 0; i < 64; i++) {
            const s = i * 2048 + HEADROOM;
            a.tunRx.buf[s + 8] = pkt[8];
            a.tunRx.buf[s + 10] = pkt[10];
            a.tunRx.buf[s + 11] = pkt[11];
          }
          a.tx.clear();
          a.pipeline.egress(a.tunRx, a.tx);
          // B decapsulates in A's slab (the kernels add and strip outer IPv4 + UDP in between).
          for (let i = 0; i < a.tx.count; i++) {
            const off = a.tx.offs[i];
            if (b.backend.decap(a.tunRx.buf, off, a.tx.lens[i], b.remote, b.pipeline.replies) !== off + 22) throw new Error('decap refused');
          }
          b.pipeline.replies.clear();
          if (b.backend.decap(arp, 0, arp.length, b.remote, b.pipeline.replies) !== -Drop.Consumed) throw new Error('ARP not answered');
        }
        await new Promise((res) => setTimeout(res, 20));
        if (pass === 1) expect(gcs - g0).toBe(0);
      }
    } finally {
      obs.disconnect();
    }
    expect(a.stats.txPackets).toBe(2 * rounds * 64);
    expect(b.backend.arpReplies).toBe(2 * rounds);
  });
});
