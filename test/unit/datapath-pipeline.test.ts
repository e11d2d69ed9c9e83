import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PacketList } from '../../src/io/packet-list';
import { Pipeline } from '../../src/datapath/pipeline';
import { UdpBackend } from '../../src/datapath/backends/udp';
import { DatapathStats, Drop } from '../../src/datapath/stats';
import { PeerCounters, type Peer } from '../../src/datapath/peer';
import { RouteTable } from '../../src/route/route-table';
import { parseCidr, parseIpv4 } from '../../src/route/address';
import { buildIpv4Packet } from '../../src/packet/builder';
import { checksum } from '../../src/packet/checksum';

const NETWORK = parseCidr('10.244.0.0/16');
const LOCAL = parseCidr('10.244.1.0/24');
const REMOTE = parseCidr('10.244.2.0/24');
const REMOTE_IP = parseIpv4('192.168.77.12');

function peer(subnet: typeof LOCAL, publicIp: number, local: boolean): Peer {
  return { subnet, publicIp, port: 8285, backendData: {}, local, direct: false, backendState: null, counters: new PeerCounters() };
}

function setup() {
  const stats = new DatapathStats();
  const routes = new RouteTable<Peer>();
  const localPeer = peer(LOCAL, parseIpv4('192.168.77.11'), true);
  const remotePeer = peer(REMOTE, REMOTE_IP, false);
  routes.update((t) => {
    t.insert(LOCAL.addr, LOCAL.len, localPeer);
    t.insert(REMOTE.addr, REMOTE.len, remotePeer);
  });
  const peersByAddr = new Map<number, Peer>([[REMOTE_IP, remotePeer]]);
  const pipeline = new Pipeline({
    backend: new UdpBackend(),
    routes,
    peersByAddr,
    network: NETWORK,
    localSubnet: LOCAL,
    icmpSource: LOCAL.addr,
    stats,
    batchSize: 16,
    tunnelMtu: 1472,
  });
  const rx = new PacketList({ capacity: 16, slotSize: 2048, headroom: 64 });
  const tx = PacketList.view(rx);
  return { stats, pipeline, rx, tx };
}

function load(rx: PacketList, pkts: Uint8Array[], addr = 0): void {
  rx.clear();
  for (const p of pkts) {
    const off = rx.count * rx.slotSize + rx.headroom;
    rx.buf.set(p, off);
    rx.push(off, p.length, addr, 8285);
  }
}

describe('egress', () => {
  it('sends a packet for a leased subnet to the peer, TTL decremented, checksum still valid', () => {
    const { pipeline, rx, tx, stats } = setup();
    const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 63, payload: Buffer.from('hello') });
    load(rx, [pkt]);
    pipeline.egress(rx, tx);
    expect(tx.count).toBe(1);
    expect(tx.addrs[0]).toBe(REMOTE_IP);
    expect(tx.ports[0]).toBe(8285);
    const out = rx.buf.subarray(tx.offs[0], tx.offs[0] + tx.lens[0]);
    expect(out.length).toBe(pkt.length);
    expect(out[8]).toBe(62);
    expect(checksum(out, 0, 20)).toBe(0);
    // Everything but TTL and checksum unchanged: the udp backend carries the packet as is.
    expect(Buffer.from(out.subarray(20)).equals(Buffer.from(pkt.subarray(20)))).toBe(true);
    expect(stats.txPackets).toBe(1);
  });

  it('answers an unleased destination inside the Network with ICMP net-unreachable', () => {
    const { pipeline, rx, tx, stats } = setup();
    const pkt = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.99.1', ttl: 63 });
    load(rx, [pkt]);
    pipeline.egress(rx, tx);
    expect(tx.count).toBe(0);
    expect(stats.dropCount(Drop.NoRoute)).toBe(1);
    const icmp = pipeline.icmpOut;
    expect(icmp.count).toBe(1);
    const r = icmp.buf.subarray(icmp.offs[0], icmp.offs[0] + icmp.lens[0]);
    expect(r[9]).toBe(1); // ICMP
    expect(r.readUInt32BE(12)).toBe(LOCAL.addr); // from the TUN address
    expect(r.readUInt32BE(16)).toBe(parseIpv4('10.244.1.5'));
    expect(r[20]).toBe(3);
    expect(r[21]).toBe(0);
  });

  it('drops a destination outside the Network without ICMP', () => {
    const { pipeline, rx, tx, stats } = setup();
    load(rx, [buildIpv4Packet({ src: '10.244.1.5', dst: '172.16.0.1' })]);
    pipeline.egress(rx, tx);
    expect(tx.count + pipeline.icmpOut.count).toBe(0);
    expect(stats.dropCount(Drop.NotInNetwork)).toBe(1);
  });

  it('answers TTL 1 with time-exceeded and does not forward it', () => {
    const { pipeline, rx, tx, stats } = setup();
    load(rx, [buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 1 })]);
    pipeline.egress(rx, tx);
    expect(tx.count).toBe(0);
    expect(stats.dropCount(Drop.TtlExpired)).toBe(1);
    const icmp = pipeline.icmpOut;
    expect(icmp.count).toBe(1);
    expect(icmp.buf[icmp.offs[0] + 20]).toBe(11);
  });

  it('drops packets for the local subnet (the bridge route should have taken them)', () => {
    const { pipeline, rx, tx, stats } = setup();
    load(rx, [buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.1.9' })]);
    pipeline.egress(rx, tx);
    expect(tx.count).toBe(0);
    expect(stats.dropCount(Drop.LocalDestination)).toBe(1);
  });

  it('counts malformed packets by reason and keeps going with the rest of the batch', () => {
    const { pipeline, rx, tx, stats } = setup();
    const good = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7' });
    const v6 = Buffer.from(good);
    v6[0] = 0x60;
    const badIhl = Buffer.from(good);
    badIhl[0] = 0x44;
    load(rx, [good.subarray(0, 10), v6, badIhl, good]);
    pipeline.egress(rx, tx);
    expect(tx.count).toBe(1);
    expect(stats.dropCount(Drop.Truncated)).toBe(1);
    expect(stats.dropCount(Drop.NotIpv4)).toBe(1);
    expect(stats.dropCount(Drop.BadIhl)).toBe(1);
  });

  it('answers a DF packet larger than the tunnel MTU with fragmentation-needed carrying that MTU (RFC 1191)', () => {
    const { pipeline, rx, tx, stats } = setup();
    load(rx, [buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', df: true, payload: Buffer.alloc(1472 - 28 + 1) })]);
    pipeline.egress(rx, tx);
    expect(tx.count).toBe(0);
    expect(stats.dropCount(Drop.TooBig)).toBe(1);
    const icmp = pipeline.icmpOut;
    expect(icmp.count).toBe(1);
    const r = icmp.buf.subarray(icmp.offs[0], icmp.offs[0] + icmp.lens[0]);
    expect(r[20]).toBe(3);
    expect(r[21]).toBe(4);
    expect(r.readUInt16BE(26)).toBe(1472);
  });

  it('forwards a packet exactly at the tunnel MTU, and an oversized one without DF', () => {
    const { pipeline, rx, tx } = setup();
    load(rx, [
      buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', df: true, payload: Buffer.alloc(1472 - 28) }),
      buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', df: false, payload: Buffer.alloc(1600) }),
    ]);
    pipeline.egress(rx, tx);
    expect(tx.count).toBe(2);
    expect(tx.lens[0]).toBe(1472);
  });

  it('counts a TUN read larger than its slot as oversize', () => {
    const { pipeline, rx, tx, stats } = setup();
    rx.clear();
    rx.push(64, -1);
    pipeline.egress(rx, tx);
    expect(stats.dropCount(Drop.Oversize)).toBe(1);
  });

  it('never throws and accounts for every packet on random input', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 0, maxLength: 200 }), { maxLength: 16 }), (pkts) => {
        const { pipeline, rx, tx, stats } = setup();
        load(rx, pkts);
        pipeline.egress(rx, tx);
        let dropped = 0;
        for (const n of stats.drops) dropped += n;
        expect(tx.count + dropped).toBe(pkts.length);
      }),
    );
  });
});

describe('ingress', () => {
  it('delivers a packet from a leased peer for a local pod', () => {
    const { pipeline, rx, tx, stats } = setup();
    const pkt = buildIpv4Packet({ src: '10.244.2.7', dst: '10.244.1.5' });
    load(rx, [pkt], REMOTE_IP);
    pipeline.ingress(rx, tx);
    expect(tx.count).toBe(1);
    expect(Buffer.from(rx.buf.subarray(tx.offs[0], tx.offs[0] + tx.lens[0])).equals(Buffer.from(pkt))).toBe(true);
    expect(stats.rxPackets).toBe(1);
  });

  it('drops datagrams from an address that holds no lease', () => {
    const { pipeline, rx, tx, stats } = setup();
    load(rx, [buildIpv4Packet({ src: '10.244.2.7', dst: '10.244.1.5' })], parseIpv4('192.168.77.99'));
    pipeline.ingress(rx, tx);
    expect(tx.count).toBe(0);
    expect(stats.dropCount(Drop.UnknownPeer)).toBe(1);
  });

  it('drops inner sources outside the sender subnet and destinations outside ours', () => {
    const { pipeline, rx, tx, stats } = setup();
    load(rx, [buildIpv4Packet({ src: '10.244.3.7', dst: '10.244.1.5' }), buildIpv4Packet({ src: '10.244.2.7', dst: '10.244.3.5' })], REMOTE_IP);
    pipeline.ingress(rx, tx);
    expect(tx.count).toBe(0);
    expect(stats.dropCount(Drop.SrcNotInPeerSubnet)).toBe(1);
    expect(stats.dropCount(Drop.DstNotLocal)).toBe(1);
  });

  it('counts truncated datagrams (MSG_TRUNC) as oversize', () => {
    const { pipeline, rx, tx, stats } = setup();
    rx.clear();
    rx.push(64, -1, REMOTE_IP, 8285);
    pipeline.ingress(rx, tx);
    expect(stats.dropCount(Drop.Oversize)).toBe(1);
  });
});

describe('per-peer counters and the drop tap', () => {
  function withTap() {
    const s = setup();
    const seen: { reason: number; ingress: boolean; bytes: Buffer; peer: Peer | undefined }[] = [];
    s.pipeline.tap = {
      drop: (reason, ingress, buf, off, len, peer) => seen.push({ reason, ingress, bytes: Buffer.from(buf.subarray(off, off + len)), peer }),
      batch: () => undefined,
      lost: () => undefined,
    };
    const remote = s.pipeline['peersByAddr'].get(REMOTE_IP)!;
    return { ...s, seen, remote };
  }

  it('counts what went to and came from each peer, in packets and inner bytes', () => {
    const { pipeline, rx, tx, remote } = withTap();
    const out = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', payload: Buffer.alloc(100) });
    load(rx, [out, out]);
    pipeline.egress(rx, tx);
    const back = buildIpv4Packet({ src: '10.244.2.7', dst: '10.244.1.5', payload: Buffer.alloc(30) });
    load(rx, [back], REMOTE_IP);
    tx.clear();
    pipeline.ingress(rx, tx);
    expect(remote.counters).toMatchObject({ txPackets: 2, txBytes: 2 * out.length, rxPackets: 1, rxBytes: back.length, rxDrops: 0, txDrops: 0 });
  });

  it('hands each drop to the tap with its reason, direction, bytes and peer, and charges the peer when known', () => {
    const { pipeline, rx, tx, stats, seen, remote } = withTap();
    const ttl1 = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', ttl: 1 });
    load(rx, [ttl1]);
    pipeline.egress(rx, tx);
    const stranger = buildIpv4Packet({ src: '10.244.2.7', dst: '10.244.1.5' });
    load(rx, [stranger], parseIpv4('192.168.77.99'));
    tx.clear();
    pipeline.ingress(rx, tx);
    const spoofed = buildIpv4Packet({ src: '10.244.3.7', dst: '10.244.1.5' });
    load(rx, [spoofed], REMOTE_IP);
    tx.clear();
    pipeline.ingress(rx, tx);
    expect(seen.map((d) => [d.reason, d.ingress, d.peer === remote])).toEqual([
      [Drop.TtlExpired, false, true],
      [Drop.UnknownPeer, true, false],
      [Drop.SrcNotInPeerSubnet, true, true],
    ]);
    expect(seen[0].bytes.equals(Buffer.from(ttl1))).toBe(true);
    expect(seen[2].bytes.equals(Buffer.from(spoofed))).toBe(true);
    expect(remote.counters).toMatchObject({ txDrops: 1, rxDrops: 1, txPackets: 0, rxPackets: 0 });
    expect(stats.dropCount(Drop.TtlExpired) + stats.dropCount(Drop.UnknownPeer) + stats.dropCount(Drop.SrcNotInPeerSubnet)).toBe(3);
  });
});
