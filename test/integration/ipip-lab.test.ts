// The ipip backend end to end in a 3-node netns lab: pods on every node reach pods on every
// other node, TCP flows, and tshark (a decoder nobody here wrote) reads RFC 2003 on the underlay
// bridge: an outer IPv4 header, protocol 4, between the nodes' public IPs, around the pods'
// own IPv4 packet, with TOS and DF copied from the inner header (RFC 2003 §3.1) and a header
// checksum tshark verifies. This kernel has no ipip module: every packet here went through
// weft's raw sockets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonStatus, iperf3Pair, labDown, labUp, pingPair, readSubnetEnv, type LabState, pingMatrix, pingFailures } from '../../src/lab';
import { ensureBuilt } from '../support/build';
import { tsharkCapture } from '../support/capture';
import { uniquePrefix } from '../support/prefix';

interface Counters {
  txPackets: number;
  rxPackets: number;
  drops: Record<string, number>;
}

describe.skipIf(process.getuid?.() !== 0)('ipip backend in a 3-node lab', () => {
  const prefix = uniquePrefix('ipip');
  let state: LabState;
  const pod = (node: string) => state.pods.find((p) => p.node === node)!;
  const counters = async (node: string) => ((await daemonStatus(prefix, node)) as { counters: Counters }).counters;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 3, pods: 1, backend: 'ipip' });
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it('gives pods a TUN MTU 20 bytes below the underlay (the outer IPv4 header)', () => {
    for (const n of state.nodes) expect(readSubnetEnv(n.subnetFile)?.mtu).toBe(1480);
  });

  it('carries ping between pods on every ordered pair of nodes', async () => {
    const names = state.nodes.map((n) => n.name);
    expect(pingFailures(await pingMatrix(state, { intervalS: 0.2 }))).toEqual([]);
    // Nothing the daemons received was refused as bad encapsulation or from a stranger.
    for (const n of names) {
      const c = await counters(n);
      expect(c.txPackets, n).toBeGreaterThan(0);
      expect(c.rxPackets, n).toBeGreaterThan(0);
      expect(c.drops.bad_encap ?? 0, n).toBe(0);
      expect(c.drops.unknown_peer ?? 0, n).toBe(0);
    }
  }, 60_000);

  it('carries TCP (iperf3) across nodes', async () => {
    const r = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 3 });
    expect(r.ok, r.error).toBe(true);
    expect(r.bitsPerSecond).toBeGreaterThan(0);
  }, 60_000);

  it('is RFC 2003 on the wire: outer node addresses, protocol 4, inner pod packet, TOS and DF copied', async () => {
    const [n1, n2] = state.nodes;
    const p1 = pod('n1');
    const p2 = pod('n2');
    // Every IPv4 packet on the underlay between n1 and n2, not only protocol 4: an ICMP
    // protocol-unreachable from a kernel that found no ipip handler would show up here too.
    // Bounded by count (4 echo requests + 4 replies) and time.
    const capture = tsharkCapture(
      prefix,
      'ul',
      [
        '-n',
        '-i',
        'br0',
        '-f',
        `ip and host ${n1.publicIp} and host ${n2.publicIp}`,
        '-c',
        '8',
        '-a',
        'duration:15',
        '-o',
        'ip.check_checksum:TRUE',
        '-T',
        'fields',
        '-E',
        'occurrence=a',
        '-E',
        'aggregator=,',
        '-e',
        'ip.src',
        '-e',
        'ip.dst',
        '-e',
        'ip.proto',
        '-e',
        'ip.ttl',
        '-e',
        'ip.dsfield',
        '-e',
        'ip.flags.df',
        '-e',
        'ip.checksum.status',
        '-e',
        'icmp.type',
      ],
      25_000,
    );
    await capture.started;
    // -Q 0x10: a TOS the outer header must copy; -M do: DF on the requests (the kernel's echo
    // replies go without it), so both values of the DF rule are on the wire.
    const ping = await pingPair(prefix, 'n1/p1', p2.ip, { count: 4, intervalS: 0.3, args: ['-Q', '0x10', '-M', 'do'] });
    expect(ping.ok, ping.output).toBe(true);
    const out = await capture.done;
    const rows = out.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
    expect(rows.length, `${out.stdout}\n${out.stderr}`).toBe(8);

    let requests = 0;
    let replies = 0;
    for (const [src, dst, proto, ttl, ds, df, csum, icmpType] of rows) {
      // tshark decodes IPIP natively: every field has two occurrences, outer then inner.
      const [oSrc, iSrc] = src.split(',');
      const [oDst, iDst] = dst.split(',');
      const forward = oSrc === n1.publicIp;
      expect([oSrc, oDst]).toEqual(forward ? [n1.publicIp, n2.publicIp] : [n2.publicIp, n1.publicIp]);
      expect([iSrc, iDst]).toEqual(forward ? [p1.ip, p2.ip] : [p2.ip, p1.ip]);
      expect(proto).toBe('4,1');
      expect(ttl.split(',')[0]).toBe('64');
      // TOS and DF, outer equal to inner (RFC 2003 §3.1).
      const [oDs, iDs] = ds.split(',');
      expect(Number(oDs)).toBe(Number(iDs));
      expect(Number(iDs)).toBe(0x10);
      const [oDf, iDf] = df.split(',');
      expect(oDf).toBe(iDf);
      // 1 = good, for the outer header weft wrote and the inner one it forwarded.
      expect(csum).toBe('1,1');
      expect(icmpType).toBe(forward ? '8' : '0');
      if (forward) {
        requests++;
        expect(iDf).toBe('1');
      } else {
        replies++;
      }
    }
    expect([requests, replies]).toEqual([4, 4]);
  }, 40_000);
});
