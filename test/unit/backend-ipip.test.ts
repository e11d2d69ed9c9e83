import fc from 'fast-check';
import { BACKENDS } from '../../src/datapath/backends';
import { describe, expect, it } from 'vitest';
import { IpipBackend, IPIP_OUTER_TTL } from '../../src/datapath/backends/ipip';
import { PeerCounters, type Peer } from '../../src/datapath/peer';
import { Pipeline } from '../../src/datapath/pipeline';
import { DatapathStats, Drop } from '../../src/datapath/stats';
import { ENCAP_OK } from '../../src/datapath/backend';
import { PacketList } from '../../src/io/packet-list';
import { buildIpv4Packet } from '../../src/packet/builder';
import { sum16 } from '../../src/packet/checksum';
import { Ipv4Verdict, validateIpv4 } from '../../src/packet/ipv4';
import { parseCidr, parseIpv4, type Cidr } from '../../src/route/address';
import { RouteTable } from '../../src/route/route-table';
import { fence } from '../support/fence';

const NETWORK = parseCidr('10.244.0.0/16');
const SUBNET_A = parseCidr('10.244.1.0/24');
const SUBNET_B = parseCidr('10.244.2.0/24');
const IP_A = parseIpv4('192.168.77.11');
const IP_B = parseIpv4('192.168.77.12');
const HEADROOM = 64;
const SLOT = 2048;

function peer(subnet: Cidr, publicIp: number, local: boolean): Peer {
  return { subnet, publicIp, port: 0, backendData: {}, local, direct: false, backendState: null, counters: new PeerCounters() };
}

/** A TUN-read-shaped list holding `pkts`, each at its slot's headroom. */
function load(pkts: Uint8Array[], addr = 0): PacketList {
  const rx = new PacketList({ capacity: 16, slotSize: SLOT, headroom: HEADROOM });
  for (const p of pkts) {
    const off = rx.count * SLOT + HEADROOM;
    rx.buf.set(p, off);
    rx.push(off, p.length, addr, 0);
  }
  return rx;
}

/** Sets TOS on a built packet and fixes its header checksum. */
function withTos(pkt: Buffer, tos: number): Buffer {
  const p = Buffer.from(pkt);
  p[1] = tos;
  p.writeUInt16BE(0, 10);
  p.writeUInt16BE(~sum16(p, 0, 20) & 0xffff, 10);
  return p;
}

function encapOne(backend: IpipBackend, inner: Buffer, to: Peer) {
  const rx = load([inner]);
  const tx = PacketList.view(rx);
  const ok = backend.encap(rx.buf, rx.offs[0], inner.length, to, tx);
  return { ok, rx, tx, outer: Buffer.from(rx.buf.subarray(tx.offs[0], tx.offs[0] + tx.lens[0])) };
}

describe('IpipBackend', () => {
  it('declares itself: type, 20 bytes of overhead and headroom, no lease data', () => {
    const b = new IpipBackend(IP_A);
    expect(b.type).toBe('ipip');
    expect(b.mtuOverhead).toBe(20);
    expect(b.headroom).toBe(20);
    expect(BACKENDS.ipip.leaseData(IP_A, 0)).toEqual({});
  });

  it('numbers outer Identifications from the first ID it was given, wrapping at 16 bits; refuses a non-16-bit one', () => {
    const b = new IpipBackend(IP_A, 0xfffe);
    const to = peer(SUBNET_B, IP_B, false);
    const inner = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 64, id: 7, payload: Buffer.from('x') });
    const ids = [0, 1, 2].map(() => encapOne(b, inner, to).outer.readUInt16BE(4));
    expect(ids).toEqual([0xfffe, 0xffff, 0]);
    expect(() => new IpipBackend(IP_A, 0x10000)).toThrow(/16-bit/);
    expect(() => new IpipBackend(IP_A, -1)).toThrow(/16-bit/);
  });
});

describe('IpipBackend.encap (RFC 2003 §3.1)', () => {
  it('writes every outer header field in front of the untouched inner packet', () => {
    const b = new IpipBackend(IP_A);
    const inner = withTos(buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 62, id: 0x1234, df: true, payload: Buffer.from('hello ipip') }), 0xb8);
    const { ok, rx, tx, outer } = encapOne(b, inner, peer(SUBNET_B, IP_B, false));
    expect(ok).toBe(ENCAP_OK);
    expect(tx.count).toBe(1);
    expect(tx.offs[0]).toBe(rx.offs[0] - 20);
    expect(tx.lens[0]).toBe(inner.length + 20);
    expect(tx.addrs[0]).toBe(IP_B);
    expect(tx.ports[0]).toBe(0);

    expect(outer[0]).toBe(0x45); // version 4, IHL 5
    expect(outer[1]).toBe(0xb8); // TOS copied from the inner header
    expect(outer.readUInt16BE(2)).toBe(inner.length + 20);
    expect(outer.readUInt16BE(6)).toBe(0x4000); // DF copied, fragment offset 0
    expect(outer[8]).toBe(IPIP_OUTER_TTL);
    expect(outer[8]).toBe(64);
    expect(outer[9]).toBe(4);
    expect(outer.readUInt32BE(12)).toBe(IP_A);
    expect(outer.readUInt32BE(16)).toBe(IP_B);
    expect(sum16(outer, 0, 20)).toBe(0xffff);
    expect(validateIpv4(outer, 0, outer.length)).toBe(Ipv4Verdict.Ok);
    expect(outer.subarray(20).equals(inner)).toBe(true);
  });

  it('leaves DF clear and TOS 0 when the inner header has them so', () => {
    const b = new IpipBackend(IP_A);
    const inner = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', df: false });
    const { outer } = encapOne(b, inner, peer(SUBNET_B, IP_B, false));
    expect(outer[1]).toBe(0);
    expect(outer.readUInt16BE(6)).toBe(0);
    expect(validateIpv4(outer, 0, outer.length)).toBe(Ipv4Verdict.Ok);
  });

  it('gives consecutive packets consecutive IDs, wrapping at 16 bits', () => {
    const b = new IpipBackend(IP_A);
    const to = peer(SUBNET_B, IP_B, false);
    const rx = load([buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7' })]);
    const tx = PacketList.view(rx, 1);
    const ids: number[] = [];
    for (let i = 0; i <= 0x10000; i++) {
      tx.clear();
      b.encap(rx.buf, rx.offs[0], rx.lens[0], to, tx);
      ids.push(rx.buf.readUInt16BE(tx.offs[0] + 4));
    }
    for (let i = 1; i < ids.length; i++) expect(ids[i]).toBe((ids[i - 1] + 1) & 0xffff);
    expect(ids[0x10000]).toBe(ids[0]);
  });

  it('refuses an inner packet whose outer Total Length would not fit 16 bits, and reports a full list', () => {
    const b = new IpipBackend(IP_A);
    const to = peer(SUBNET_B, IP_B, false);
    const big = Buffer.alloc(0x10000 + 64);
    const tx = new PacketList({ capacity: 1, slotSize: big.length, headroom: 0 }, big);
    expect(b.encap(big, 64, 0xffff - 19, to, tx)).toBe(Drop.Oversize);
    expect(b.encap(big, 64, 0xffff - 20, to, tx)).toBe(ENCAP_OK);
    expect(big.readUInt16BE(64 - 20 + 2)).toBe(0xffff);
    expect(b.encap(big, 64, 100, to, tx)).toBe(Drop.SendFailed); // list full
  });

  it('always produces a valid outer header carrying the inner TOS and DF (property)', () => {
    const b = new IpipBackend(IP_A);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 1400 }),
        fc.integer({ min: 1, max: 0xfffffffe }),
        (tos, df, n, dst) => {
          const inner = withTos(buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', df, payload: Buffer.alloc(n, 7) }), tos);
          const { outer } = encapOne(b, inner, peer(SUBNET_B, dst, false));
          expect(validateIpv4(outer, 0, outer.length)).toBe(Ipv4Verdict.Ok);
          expect(outer[1]).toBe(tos);
          expect((outer[6] & 0x40) !== 0).toBe(df);
          expect(outer.readUInt32BE(16)).toBe(dst);
          expect(outer.subarray(20).equals(inner)).toBe(true);
        },
      ),
    );
  });
});

describe('IpipBackend.decap', () => {
  const b = new IpipBackend(IP_B);
  const from = peer(SUBNET_A, IP_A, false);
  const replies = new PacketList({ capacity: 1, slotSize: 128, headroom: 0 });
  const inner = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', payload: Buffer.from('x') });

  /** A received outer packet, as the raw socket hands it over: at the slot's headroom. */
  function wire(mutate?: (p: Buffer) => void, fixChecksum = true): { buf: Buffer; off: number; len: number } {
    const sender = new IpipBackend(IP_A);
    const { outer } = encapOne(sender, inner, peer(SUBNET_B, IP_B, false));
    if (mutate) {
      mutate(outer);
      if (fixChecksum) {
        const hlen = (outer[0] & 15) * 4;
        if (hlen >= 20 && hlen <= outer.length) {
          outer.writeUInt16BE(0, 10);
          outer.writeUInt16BE(~sum16(outer, 0, hlen) & 0xffff, 10);
        }
      }
    }
    const buf = Buffer.alloc(SLOT);
    outer.copy(buf, HEADROOM);
    return { buf, off: HEADROOM, len: outer.length };
  }

  it('returns the offset of the inner packet', () => {
    const w = wire();
    expect(b.decap(w.buf, w.off, w.len, from, replies)).toBe(HEADROOM + 20);
  });

  /** An outer header with a 24-byte header: one 4-byte option word (End of Option List, RFC 791 §3.1). */
  function withOption(): { buf: Buffer; off: number; len: number } {
    const sender = new IpipBackend(IP_A);
    const { outer } = encapOne(sender, inner, peer(SUBNET_B, IP_B, false));
    const withOpt = Buffer.concat([outer.subarray(0, 20), Buffer.alloc(4), outer.subarray(20)]);
    withOpt[0] = 0x46;
    withOpt.writeUInt16BE(withOpt.length, 2);
    withOpt.writeUInt16BE(0, 10);
    withOpt.writeUInt16BE(~sum16(withOpt, 0, 24) & 0xffff, 10);
    return { buf: withOpt, off: 0, len: withOpt.length };
  }

  it('skips outer header options (IHL > 5)', () => {
    const w = withOption();
    expect(b.decap(w.buf, w.off, w.len, from, replies)).toBe(24);
  });

  const refusals: [string, () => { buf: Buffer; off: number; len: number }][] = [
    ['another protocol (UDP)', () => wire((p) => (p[9] = 17))],
    ['a destination other than our public IP', () => wire((p) => p.writeUInt32BE(parseIpv4('192.168.77.13'), 16))],
    ['a packet shorter than an IPv4 header', () => ({ ...wire(), len: 19 })],
    ['a Total Length beyond what was received', () => ({ ...wire(), len: 30 })],
    ['IHL below 5', () => wire((p) => (p[0] = 0x44))],
    ['IHL past the received bytes', () => wire((p) => (p[0] = 0x4f), false)],
    ['not IPv4', () => wire((p) => (p[0] = 0x65))],
    ['a bad header checksum', () => wire((p) => (p[10] ^= 0xff), false)],
    ['an outer fragment (MF set)', () => wire((p) => (p[6] |= 0x20))],
    ['an outer fragment (offset set)', () => wire((p) => (p[7] = 1))],
  ];
  for (const [what, make] of refusals) {
    it(`refuses ${what} as bad encapsulation`, () => {
      const w = make();
      expect(b.decap(w.buf, w.off, w.len, from, replies)).toBe(-Drop.BadEncap);
    });
  }

  it('moves a CE mark from the outer header to an ECN-capable inner one (RFC 6040 §4.2)', () => {
    for (const ect of [0x01, 0x02]) {
      const ectInner = withTos(inner, 0x28 | ect);
      const sender = new IpipBackend(IP_A);
      const { outer } = encapOne(sender, ectInner, peer(SUBNET_B, IP_B, false));
      expect(outer[1]).toBe(0x28 | ect); // ECN copied on the way in (normal mode)
      // A router on the underlay marks congestion experienced.
      outer[1] = 0x28 | 0x03;
      outer.writeUInt16BE(0, 10);
      outer.writeUInt16BE(~sum16(outer, 0, 20) & 0xffff, 10);
      expect(b.decap(outer, 0, outer.length, from, replies)).toBe(20);
      expect(outer[21]).toBe(0x28 | 0x03);
      expect(validateIpv4(outer, 20, outer.length - 20)).toBe(Ipv4Verdict.Ok);
      // Only the ECN bits and the checksum patched for them changed.
      const got = Buffer.from(outer.subarray(20));
      got[1] = ectInner[1];
      got.writeUInt16BE(ectInner.readUInt16BE(10), 10);
      expect(got.equals(ectInner)).toBe(true);
    }
  });

  it('drops a CE-marked outer header around a Not-ECT inner packet (RFC 6040 §4.2)', () => {
    const w = wire((p) => (p[1] = 0x03));
    expect(b.decap(w.buf, w.off, w.len, from, replies)).toBe(-Drop.BadEncap);
  });

  it('innerOffset names the offset decap returns whenever decap accepts, options included, and never writes', () => {
    const cases = [wire(), wire((p) => (p[1] = 0x02)), withOption(), ...refusals.map(([, make]) => make())];
    let accepted = 0;
    fc.assert(
      fc.property(fc.constantFrom(...cases), fc.uint8Array({ maxLength: 60 }), fc.nat({ max: 80 }), (c, noise, cut) => {
        // The cases as built, or with random bytes over their start and a random length.
        const buf = Buffer.from(c.buf);
        if (noise.length > 0) buf.set(noise, c.off);
        const len = noise.length > 0 ? Math.min(c.len, cut) : c.len;
        const at = b.innerOffset(fence(buf, c.off, c.off + len, 0, 0), c.off, len);
        const r = b.decap(Buffer.from(buf), c.off, len, from, replies);
        if (r >= 0) {
          accepted++;
          expect(at).toBe(r);
        } else {
          // Refused by decap's checks, but a layout is a layout: never past the datagram.
          expect(at === -1 || (at >= c.off + 20 && at < c.off + len)).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
    expect(accepted).toBeGreaterThan(0);
  });

  it('leaves the inner header alone when the outer is not CE-marked', () => {
    const w = wire((p) => (p[1] = 0x02));
    const before = Buffer.from(w.buf.subarray(w.off + 20, w.off + w.len));
    expect(b.decap(w.buf, w.off, w.len, from, replies)).toBe(w.off + 20);
    expect(w.buf.subarray(w.off + 20, w.off + w.len).equals(before)).toBe(true);
  });
});

describe('ipip through two pipelines', () => {
  function node(localSubnet: Cidr, localIp: number, remoteSubnet: Cidr, remoteIp: number) {
    const stats = new DatapathStats();
    const routes = new RouteTable<Peer>();
    const self = peer(localSubnet, localIp, true);
    const remote = peer(remoteSubnet, remoteIp, false);
    routes.update((t) => {
      t.insert(localSubnet.addr, localSubnet.len, self);
      t.insert(remoteSubnet.addr, remoteSubnet.len, remote);
    });
    const backend = new IpipBackend(localIp);
    const pipeline = new Pipeline({
      backend,
      routes,
      peersByAddr: new Map([[remoteIp, remote]]),
      network: NETWORK,
      localSubnet,
      icmpSource: localSubnet.addr,
      stats,
      batchSize: 16,
      tunnelMtu: 1500 - backend.mtuOverhead,
    });
    return { pipeline, stats };
  }

  /** What the raw socket on the other side receives: each sent entry, whole, from `src`. */
  function overTheWire(tx: PacketList, src: number): PacketList {
    const rx = new PacketList({ capacity: 16, slotSize: SLOT, headroom: HEADROOM });
    for (let i = 0; i < tx.count; i++) {
      const off = rx.count * SLOT + HEADROOM;
      tx.buf.copy(rx.buf, off, tx.offs[i], tx.offs[i] + tx.lens[i]);
      rx.push(off, tx.lens[i], src, 0);
    }
    return rx;
  }

  it('round-trips a batch byte for byte, except the TTL the egress router decremented', () => {
    const a = node(SUBNET_A, IP_A, SUBNET_B, IP_B);
    const b = node(SUBNET_B, IP_B, SUBNET_A, IP_A);
    const sent = [
      buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 64, id: 1, df: true, payload: Buffer.from('first') }),
      withTos(buildIpv4Packet({ src: '10.244.1.6', dst: '10.244.2.8', ttl: 2, id: 2, payload: Buffer.alloc(1400, 0x5a) }), 0x10),
      buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 30, id: 3, protocol: 1, payload: Buffer.from([8, 0, 0xf7, 0xff, 0, 0, 0, 0]) }),
    ];
    const tunRx = load(sent);
    const tx = PacketList.view(tunRx);
    a.pipeline.egress(tunRx, tx);
    expect(tx.count).toBe(3);
    expect(a.stats.txPackets).toBe(3);

    const wire = overTheWire(tx, IP_A);
    for (let i = 0; i < wire.count; i++) {
      const o = wire.buf.subarray(wire.offs[i], wire.offs[i] + wire.lens[i]);
      expect(o[9]).toBe(4);
      expect(o.readUInt32BE(12)).toBe(IP_A);
      expect(o.readUInt32BE(16)).toBe(IP_B);
      expect(o.readUInt16BE(2)).toBe(sent[i].length + 20);
    }

    const toTun = PacketList.view(wire);
    b.pipeline.ingress(wire, toTun);
    expect(toTun.count).toBe(3);
    expect(b.stats.rxPackets).toBe(3);
    for (let i = 0; i < 3; i++) {
      const got = Buffer.from(toTun.buf.subarray(toTun.offs[i], toTun.offs[i] + toTun.lens[i]));
      const want = Buffer.from(sent[i]);
      expect(got[8]).toBe(want[8] - 1);
      expect(validateIpv4(got, 0, got.length)).toBe(Ipv4Verdict.Ok);
      // Apart from TTL and the header checksum it patched, identical.
      got[8] = want[8];
      got.writeUInt16BE(want.readUInt16BE(10), 10);
      expect(got.equals(want)).toBe(true);
    }
  });

  it('counts what the far pipeline refuses: unknown sender, bad encapsulation, spoofed inner source', () => {
    const a = node(SUBNET_A, IP_A, SUBNET_B, IP_B);
    const b = node(SUBNET_B, IP_B, SUBNET_A, IP_A);
    const tunRx = load([
      buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7' }),
      // The kernel routed it into TUN from a pod using an address outside node A's subnet.
      buildIpv4Packet({ src: '10.244.9.9', dst: '10.244.2.7' }),
    ]);
    const tx = PacketList.view(tunRx);
    a.pipeline.egress(tunRx, tx);
    expect(tx.count).toBe(2);

    const fromA = overTheWire(tx, IP_A);
    const fromStranger = overTheWire(tx, parseIpv4('192.168.77.99'));
    const corrupted = overTheWire(tx, IP_A);
    corrupted.buf[corrupted.offs[0] + 9] = 17; // not protocol 4 (and the checksum no longer holds)

    b.pipeline.ingress(fromA, PacketList.view(fromA));
    b.pipeline.ingress(fromStranger, PacketList.view(fromStranger));
    b.pipeline.ingress(corrupted, PacketList.view(corrupted));
    expect(b.stats.rxPackets).toBe(1 + 0 + 0);
    // The spoofed packet, once from A and once more in the corrupted copy (only its first entry was corrupted).
    expect(b.stats.dropCount(Drop.SrcNotInPeerSubnet)).toBe(2);
    expect(b.stats.dropCount(Drop.UnknownPeer)).toBe(2);
    expect(b.stats.dropCount(Drop.BadEncap)).toBe(1);
  });
});
