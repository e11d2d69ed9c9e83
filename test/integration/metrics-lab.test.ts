// The daemon's /metrics on a live 2-node udp lab: promtool accepts every node's exposition, and
// each metric moves when the traffic (or event) that should move it happens: a ping between pods
// moves both nodes' per-peer counters and the batch histograms, a datagram from an address
// holding no lease counts as unknown_peer, a packet that reaches weft with TTL 1 counts as
// ttl_expired and as a transmit drop of the peer it was routed to, bulk TCP moves the offload
// segment counters, a renewal moves the lease's expiry, and a control-plane restart is a watch
// that went down and reconnected.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonMetrics, iperf3Pair, killControl, labDown, labExec, labUp, pingPair, startControl, type LabState } from '../../src/lab';
import { formatCidr, maskOf, parseAddrPrefix } from '../../src/route/address';
import { ensureBuilt } from '../support/build';
import { addOutsideHost, inNs, OUTSIDE_IP, type OutsideHost } from '../support/outside-host';
import { uniquePrefix } from '../support/prefix';
import { findSamples, parsePromText, promtoolCheck, sampleValue, type PromText } from '../support/prom-text';
import { until } from '../support/until';

/** The names another part of the system (the labs' Prometheus, its test and the docs' queries) relies on. */
const PEER_COUNTERS = [
  'weft_peer_transmit_packets_total',
  'weft_peer_transmit_bytes_total',
  'weft_peer_receive_packets_total',
  'weft_peer_receive_bytes_total',
  'weft_peer_drops_total',
];
const UDP_PORT = 8285;

describe.skipIf(process.getuid?.() !== 0)('daemon /metrics on a 2-node udp lab', () => {
  const prefix = uniquePrefix('metrics');
  let state: LabState;
  let outside: OutsideHost | undefined;
  const scrape = async (node: string): Promise<PromText> => parsePromText(await daemonMetrics(prefix, node));
  const node = (name: string) => state.nodes.find((n) => n.name === name)!;
  const pod = (nodeName: string) => state.pods.find((p) => p.node === nodeName)!;
  /** A node's subnet, from its pod's address and prefix length ("10.244.7.2/24" → "10.244.7.0/24"). */
  const subnetOf = (nodeName: string) => {
    const c = parseAddrPrefix(pod(nodeName).cidr);
    return formatCidr({ addr: (c.addr & maskOf(c.len)) >>> 0, len: c.len });
  };
  /** The labels of the per-peer series for the node `peer`. */
  const peerLabels = (peer: string) => ({ peer: node(peer).publicIp, subnet: subnetOf(peer) });

  beforeAll(async () => {
    await ensureBuilt();
    // A 20 s lease: the daemon renews it at half its lifetime, so a renewal happens within the test.
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'udp', leaseTtl: 20 });
  }, 180_000);

  afterAll(async () => {
    await outside?.remove();
    await labDown(prefix);
  }, 60_000);

  it("passes promtool check metrics on every node's /metrics, with the fixed names, types and labels", async () => {
    for (const n of state.nodes) {
      const text = await daemonMetrics(prefix, n.name);
      const r = promtoolCheck(text);
      expect(r.output, n.name).toBe('');
      expect(r.status, n.name).toBe(0);
      const m = parsePromText(text);
      for (const name of [...PEER_COUNTERS, 'weft_drops_total']) expect(m.types.get(name), `${n.name} ${name}`).toBe('counter');
      expect(m.types.get('weft_datapath_batch_packets')).toBe('histogram');
      expect(m.types.get('weft_lease_expiry_timestamp_seconds')).toBe('gauge');
      expect(sampleValue(m, 'weft_build_info', { backend: 'udp' })).toBe(1);
      expect(sampleValue(m, 'weft_peers')).toBe(1);
      expect(sampleValue(m, 'weft_routes')).toBe(2);
      expect(sampleValue(m, 'weft_control_watch_up')).toBe(1);
      expect(findSamples(m, 'process_cpu_seconds_total')).toHaveLength(1);
      // Every drop reason from the first scrape on, so rate() works at once.
      expect(findSamples(m, 'weft_drops_total', { reason: 'unknown_peer' })).toHaveLength(1);
      expect(findSamples(m, 'weft_drops_total', { reason: 'ttl_expired' })).toHaveLength(1);
      // The one peer, labelled with its public IPv4 and its subnet.
      const other = n.name === 'n1' ? 'n2' : 'n1';
      expect(findSamples(m, 'weft_peer_transmit_packets_total').map((s) => s.labels)).toEqual([peerLabels(other)]);
      // A lease expires in the future, within its 20 s lifetime.
      const expiry = sampleValue(m, 'weft_lease_expiry_timestamp_seconds');
      expect(expiry).toBeGreaterThan(Date.now() / 1000);
      expect(expiry).toBeLessThanOrEqual(Date.now() / 1000 + 21);
    }
  });

  it("a ping pod to pod moves both nodes' per-peer counters and the batch histograms", async () => {
    const [a0, b0] = [await scrape('n1'), await scrape('n2')];
    const ping = await pingPair(prefix, 'n1/p1', pod('n2').ip, { count: 4, intervalS: 0.2 });
    expect(ping.ok, ping.output).toBe(true);
    const [a1, b1] = [await scrape('n1'), await scrape('n2')];
    const delta = (before: PromText, after: PromText, name: string, labels: Record<string, string> = {}) =>
      sampleValue(after, name, labels) - sampleValue(before, name, labels);
    const toN2 = peerLabels('n2');
    const toN1 = peerLabels('n1');
    // n1 sent 4 echo requests to n2 and got 4 replies back (more, if anything else crossed).
    expect(delta(a0, a1, 'weft_peer_transmit_packets_total', toN2)).toBeGreaterThanOrEqual(4);
    expect(delta(a0, a1, 'weft_peer_receive_packets_total', toN2)).toBeGreaterThanOrEqual(4);
    // 84 bytes each: a 20-byte IPv4 header, 8 of ICMP, ping's 56 of data.
    expect(delta(a0, a1, 'weft_peer_transmit_bytes_total', toN2)).toBeGreaterThanOrEqual(4 * 84);
    expect(delta(a0, a1, 'weft_peer_receive_bytes_total', toN2)).toBeGreaterThanOrEqual(4 * 84);
    expect(delta(b0, b1, 'weft_peer_receive_packets_total', toN1)).toBeGreaterThanOrEqual(4);
    expect(delta(b0, b1, 'weft_peer_transmit_packets_total', toN1)).toBeGreaterThanOrEqual(4);
    expect(delta(b0, b1, 'weft_peer_receive_bytes_total', toN1)).toBeGreaterThanOrEqual(4 * 84);
    expect(delta(b0, b1, 'weft_peer_transmit_bytes_total', toN1)).toBeGreaterThanOrEqual(4 * 84);
    for (const [before, after] of [
      [a0, a1],
      [b0, b1],
    ]) {
      expect(delta(before, after, 'weft_datapath_transmit_packets_total')).toBeGreaterThanOrEqual(4);
      expect(delta(before, after, 'weft_datapath_receive_packets_total')).toBeGreaterThanOrEqual(4);
      // Each packet came in some batch on each path: the histograms counted batches and packets.
      for (const path of ['tun_read', 'socket_recv']) {
        expect(delta(before, after, 'weft_datapath_batch_packets_count', { path }), path).toBeGreaterThanOrEqual(1);
        expect(delta(before, after, 'weft_datapath_batch_packets_sum', { path }), path).toBeGreaterThanOrEqual(4);
        expect(delta(before, after, 'weft_datapath_batch_packets_bucket', { path, le: '+Inf' }), path).toBe(
          delta(before, after, 'weft_datapath_batch_packets_count', { path }),
        );
      }
    }
    // Nothing was dropped on the way.
    expect(delta(a0, a1, 'weft_peer_drops_total', { ...toN2, direction: 'transmit' })).toBe(0);
    expect(delta(b0, b1, 'weft_peer_drops_total', { ...toN1, direction: 'receive' })).toBe(0);
  });

  it('a datagram from an address holding no lease moves weft_drops_total{reason="unknown_peer"}', async () => {
    outside = await addOutsideHost(state);
    const n1 = node('n1');
    const before = await scrape('n1');
    // Three flannel-udp datagrams (a bare IPv4 header's worth of zeros) from the outside host.
    const send = `const s=require('node:dgram').createSocket('udp4');let n=0;const go=()=>s.send(Buffer.alloc(28),${UDP_PORT},'${n1.publicIp}',()=>{if(++n<3)go();else s.close();});s.bind(0,'${OUTSIDE_IP}',go);`;
    await inNs(outside.ns, [state.nodeBin, '-e', send]);
    const after = await until('unknown_peer drops on n1', async () => {
      const m = await scrape('n1');
      return sampleValue(m, 'weft_drops_total', { reason: 'unknown_peer' }) - sampleValue(before, 'weft_drops_total', { reason: 'unknown_peer' }) >= 3 && m;
    });
    expect(sampleValue(after, 'weft_drops_total', { reason: 'unknown_peer' }) - sampleValue(before, 'weft_drops_total', { reason: 'unknown_peer' })).toBe(3);
    // The sender is no peer: no peer's counters were charged with it.
    const toN2 = { ...peerLabels('n2'), direction: 'receive' };
    expect(sampleValue(after, 'weft_peer_drops_total', toN2)).toBe(sampleValue(before, 'weft_peer_drops_total', toN2));
  });

  it('a packet reaching weft with TTL 1 moves ttl_expired and the peer it was routed to a transmit drop', async () => {
    const before = await scrape('n1');
    // The pod's own node routes it first: its kernel decrements TTL 2 to 1 on the way into the
    // TUN, so weft sees TTL 1, which it may not forward (RFC 1812 §5.3.1). With -t 1 the node's
    // kernel would answer time-exceeded itself and weft would never see the packet.
    const r = await labExec(prefix, 'n1/p1', ['ping', '-n', '-c', '1', '-W', '2', '-t', '2', pod('n2').ip], { timeoutMs: 10_000 });
    expect(r.stdout, r.stderr).toMatch(/Time to live exceeded/);
    const after = await scrape('n1');
    const d = (name: string, labels: Record<string, string> = {}) => sampleValue(after, name, labels) - sampleValue(before, name, labels);
    expect(d('weft_drops_total', { reason: 'ttl_expired' })).toBe(1);
    expect(d('weft_peer_drops_total', { ...peerLabels('n2'), direction: 'transmit' })).toBe(1);
    expect(d('weft_datapath_icmp_sent_total')).toBe(1);
    expect(d('weft_peer_transmit_packets_total', peerLabels('n2'))).toBe(0);
  });

  it('bulk TCP moves the offload segment counters (TUN super-packets split on the sender, coalesced on the receiver)', async () => {
    const [a0, b0] = [await scrape('n1'), await scrape('n2')];
    expect(sampleValue(a0, 'weft_offload_enabled', { offload: 'tun' })).toBe(1);
    const r = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 2 });
    expect(r.ok, r.error).toBe(true);
    const [a1, b1] = [await scrape('n1'), await scrape('n2')];
    const d = (before: PromText, after: PromText, name: string, offload: string) =>
      sampleValue(after, name, { offload }) - sampleValue(before, name, { offload });
    expect(d(a0, a1, 'weft_offload_super_packets_total', 'tun_tso')).toBeGreaterThan(0);
    // Each super-packet became several segments.
    expect(d(a0, a1, 'weft_offload_segments_total', 'tun_tso')).toBeGreaterThan(2 * d(a0, a1, 'weft_offload_super_packets_total', 'tun_tso'));
    expect(d(b0, b1, 'weft_offload_segments_total', 'tun_coalesce')).toBeGreaterThan(2 * d(b0, b1, 'weft_offload_super_packets_total', 'tun_coalesce'));
    expect(d(b0, b1, 'weft_offload_super_packets_total', 'tun_coalesce')).toBeGreaterThan(0);
  }, 60_000);

  it('a renewal moves the lease expiry and the renewal counter', async () => {
    const before = await scrape('n1');
    const renewed = await until(
      'a lease renewal on n1',
      async () => {
        const m = await scrape('n1');
        return (
          sampleValue(m, 'weft_lease_renewals_total', { result: 'success' }) > sampleValue(before, 'weft_lease_renewals_total', { result: 'success' }) && m
        );
      },
      25_000,
      500,
    );
    expect(sampleValue(renewed, 'weft_lease_expiry_timestamp_seconds')).toBeGreaterThan(sampleValue(before, 'weft_lease_expiry_timestamp_seconds'));
  }, 40_000);

  it('a control-plane restart shows as the watch going down and reconnecting', async () => {
    const before = await scrape('n1');
    expect(sampleValue(before, 'weft_control_watch_up')).toBe(1);
    await killControl(prefix);
    try {
      const down = await until('the watch down on n1', async () => {
        const m = await scrape('n1');
        return sampleValue(m, 'weft_control_watch_up') === 0 && m;
      });
      expect(sampleValue(down, 'weft_control_watch_errors_total')).toBeGreaterThan(sampleValue(before, 'weft_control_watch_errors_total'));
    } finally {
      await startControl(prefix);
    }
    const back = await until('the watch back on n1', async () => {
      const m = await scrape('n1');
      return sampleValue(m, 'weft_control_watch_up') === 1 && m;
    });
    expect(sampleValue(back, 'weft_control_watch_reconnects_total')).toBe(sampleValue(before, 'weft_control_watch_reconnects_total') + 1);
    expect(sampleValue(back, 'weft_control_watch_revision')).toBeGreaterThan(0);
  }, 60_000);
});
