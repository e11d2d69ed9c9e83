// The udp backend's wire format, read by a decoder nobody here wrote: tshark, capturing on the
// lab's underlay bridge, must see flannel's udp encapsulation — an IPv4 packet as the whole
// payload of a UDP datagram from node to node on port 8285, with the pods' addresses inside.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, pingPair, type LabState } from '../../src/lab';
import { ensureBuilt } from '../support/build';
import { tsharkCapture } from '../support/capture';
import { uniquePrefix } from '../support/prefix';

describe.skipIf(process.getuid?.() !== 0)('udp backend on the wire (tshark)', () => {
  const prefix = uniquePrefix('wu');
  let state: LabState;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'udp' });
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it('is an IPv4 packet inside UDP 8285 between the nodes’ public IPs', async () => {
    const [n1, n2] = state.nodes;
    const p1 = state.pods.find((p) => p.node === 'n1')!;
    const p2 = state.pods.find((p) => p.node === 'n2')!;
    // Decode UDP 8285 as IP, as flannel's udp backend puts it there. Bounded by count and time.
    const capture = tsharkCapture(
      prefix,
      'ul',
      [
        '-n',
        '-i',
        'br0',
        '-f',
        'udp port 8285',
        '-d',
        'udp.port==8285,ip',
        '-c',
        '4',
        '-a',
        'duration:10',
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
        'udp.srcport',
        '-e',
        'udp.dstport',
        '-e',
        'ip.proto',
        '-e',
        'icmp.type',
      ],
      20_000,
    );
    await capture.started;
    const ping = await pingPair(prefix, 'n1/p1', p2.ip, { count: 4, intervalS: 0.3 });
    expect(ping.ok, ping.output).toBe(true);
    const out = await capture.done;
    const rows = out.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
    expect(rows.length, out.stderr).toBe(4);
    for (const [src, dst, sport, dport, proto, icmpType] of rows) {
      const [oSrc, iSrc] = src.split(',');
      const [oDst, iDst] = dst.split(',');
      // Either direction of the echo: outer node addresses, inner pod addresses, ICMP inside.
      const forward = oSrc === n1.publicIp;
      expect([oSrc, oDst]).toEqual(forward ? [n1.publicIp, n2.publicIp] : [n2.publicIp, n1.publicIp]);
      expect([iSrc, iDst]).toEqual(forward ? [p1.ip, p2.ip] : [p2.ip, p1.ip]);
      expect([sport, dport]).toEqual(['8285', '8285']);
      expect(proto).toBe('17,1');
      expect(icmpType).toBe(forward ? '8' : '0');
    }
  }, 30_000);
});
