// Kernel offloads end to end, for each encapsulating backend, in a 2-node lab with the daemons'
// defaults (offloads on): TCP crosses both ways and with 4 streams, every segment the pods
// receive has a valid checksum (TcpInCsumErrors does not move), and the daemons' counters show
// the mechanisms at work — TUN super-packets split on the sender, segments coalesced into the
// receiver's TUN, and for the udp backend UDP_SEGMENT sends and UDP_GRO receives. Then the same
// lab with --no-offload: TCP still flows, and nothing was split, coalesced or sent as a run.
import { afterAll, describe, expect, it } from 'vitest';
import { daemonStatus, iperf3Pair, labDown, labExec, labUp } from '../../src/lab';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

interface Offload {
  tun: string[];
  superPacketsRead: number;
  segmentsPerSuperPacket: number;
  coalescedWrites: number;
  segmentsPerCoalescedWrite: number;
  gsoSends: number;
  groReceives: number;
  tunReads: number;
  tunWrites: number;
  refused: Record<string, number>;
}

interface Status {
  offload: Offload;
  counters: { txPackets: number; rxPackets: number; tunReadPackets: number; tunWritePackets: number; drops: Record<string, number> };
}

const BACKENDS = ['udp', 'vxlan', 'ipip'] as const;

describe.skipIf(process.getuid?.() !== 0).each(BACKENDS)('kernel offloads, %s backend', (backend) => {
  const prefix = uniquePrefix(`off${backend[0]}`);
  const status = async (node: string) => (await daemonStatus(prefix, node)) as Status;
  const csumErrors = async (target: string): Promise<number> => {
    const r = await labExec(prefix, target, ['nstat', '-asz', 'TcpInCsumErrors'], { timeoutMs: 10_000 });
    const m = /TcpInCsumErrors\s+(\d+)/.exec(r.stdout);
    if (!m) throw new Error(`nstat in ${target}: ${r.stdout}${r.stderr}`);
    return Number(m[1]);
  };

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it('on by default: TCP both ways and with 4 streams, valid checksums, super-packets split and coalesced', async () => {
    await ensureBuilt();
    await labUp({ prefix, nodes: 2, pods: 1, backend });
    const s0 = await status('n1');
    // What the kernel granted: at least checksum offload and TCP segmentation for IPv4.
    expect(s0.offload.tun).toEqual(expect.arrayContaining(['CSUM', 'TSO4']));
    const e0 = [await csumErrors('n1/p1'), await csumErrors('n2/p1')];

    const up = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 2 });
    expect(up.ok, up.error).toBe(true);
    const down = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 2, reverse: true });
    expect(down.ok, down.error).toBe(true);
    const four = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 2, streams: 4 });
    expect(four.ok, four.error).toBe(true);
    for (const r of [up, down, four]) expect(r.receivedBytes).toBeGreaterThan(10_000_000);

    expect([await csumErrors('n1/p1'), await csumErrors('n2/p1')]).toEqual(e0);
    for (const node of ['n1', 'n2']) {
      const o = (await status(node)).offload;
      // Both nodes sent bulk TCP (the reverse run): each read super-packets and wrote coalesced ones.
      expect(o.superPacketsRead, node).toBeGreaterThan(100);
      expect(o.segmentsPerSuperPacket, node).toBeGreaterThan(2);
      expect(o.coalescedWrites, node).toBeGreaterThan(100);
      expect(o.segmentsPerCoalescedWrite, node).toBeGreaterThan(2);
      // Fewer system calls than packets, on both sides of the TUN.
      const c = (await status(node)).counters;
      expect(o.tunReads, node).toBeLessThan(c.tunReadPackets / 2);
      expect(o.tunWrites, node).toBeLessThan(c.tunWritePackets / 2);
      expect(o.refused, node).toEqual({});
      if (backend === 'udp') {
        expect(o.gsoSends, node).toBeGreaterThan(100);
        expect(o.groReceives, node).toBeGreaterThan(100);
      }
      // vxlan sends through its pool of UDP sockets: one TCP flow's segments leave through one
      // socket, so they form UDP_SEGMENT runs too.
      if (backend === 'vxlan') expect(o.gsoSends, node).toBeGreaterThan(100);
    }
  }, 120_000);

  it('--no-offload: TCP still flows, one packet per TUN read and write, no runs on the socket', async () => {
    await labDown(prefix);
    await labUp({ prefix, nodes: 2, pods: 1, backend, daemonArgs: ['--no-offload'] });
    const r = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 2 });
    expect(r.ok, r.error).toBe(true);
    const s = await status('n1');
    expect(s.offload.tun).toEqual([]);
    expect(s.offload.superPacketsRead).toBe(0);
    expect(s.offload.gsoSends).toBe(0);
    expect(s.offload.tunReads).toBe(s.counters.tunReadPackets);
    expect(s.counters.txPackets).toBeGreaterThan(1000);
    const s2 = await status('n2');
    expect(s2.offload.coalescedWrites).toBe(0);
    expect(s2.offload.groReceives).toBe(0);
  }, 120_000);
});
