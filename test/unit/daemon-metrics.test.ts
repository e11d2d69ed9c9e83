// The daemon's /metrics exposition (daemon/metrics.ts) against known counter values: names,
// types and labels, the packets-per-batch histogram built from DatapathStats' log2 counts,
// values read when scraped (not copied at registration), and promtool's verdict on the text.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Registry as ControlRegistry, WatchBatch } from '../../src/control/registry';
import { startHealthServer } from '../../src/daemon/health';
import { LeaseWatch } from '../../src/daemon/lease-watch';
import { BATCH_BUCKETS, createDaemonMetrics, LeaseCounts, type DaemonMetricsSource } from '../../src/daemon/metrics';
import { PeerSet } from '../../src/datapath/peers';
import { DatapathStats, Drop, DROP_NAMES, batchSizeBucket } from '../../src/datapath/stats';
import type { TunOffloadStats } from '../../src/io/tun';
import { findSamples, parsePromText, promtoolCheck, sampleValue } from '../support/prom-text';

const LOCAL = { subnet: '10.244.1.0/24', publicIp: '192.168.50.1', backendType: 'udp', backendData: {} };
const PEER2 = { subnet: '10.244.2.0/24', publicIp: '192.168.50.2', backendType: 'udp', backendData: {} };
const PEER3 = { subnet: '10.244.3.0/24', publicIp: '192.168.50.3', backendType: 'udp', backendData: {} };

function tunStats(over: Partial<TunOffloadStats> = {}): TunOffloadStats {
  return {
    superRead: 0,
    segmentsOut: 0,
    csumCompleted: 0,
    packetsRead: 0,
    refused: {},
    coalescedWrites: 0,
    segmentsMerged: 0,
    plainWrites: 0,
    partialFixed: 0,
    writeErrors: 0,
    truncatedReads: 0,
    ...over,
  };
}

function fixture(over: Partial<DaemonMetricsSource> = {}) {
  const stats = new DatapathStats();
  const peers = new PeerSet('udp', 8285, LOCAL);
  peers.apply([
    { type: 'added', lease: PEER2 },
    { type: 'added', lease: PEER3 },
  ]);
  const src: DaemonMetricsSource = {
    version: '9.9.9',
    backend: () => 'udp',
    stats,
    peers: () => peers.peers(),
    routes: () => peers.routes.size,
    hostRoutes: () => undefined,
    tun: () => undefined,
    udpOffload: () => undefined,
    socketOffloads: () => ({ gso: true, gro: true }),
    lease: () => ({ subnet: LOCAL.subnet, expiration: 1_700_000_000_500, reserved: false }),
    leaseCounts: new LeaseCounts(),
    watch: () => ({ connected: true, revision: 42, reconnects: 2, errors: 3 }),
    trafficRules: () => ({ checks: 7, resyncs: 1, errors: 0 }),
    ...over,
  };
  const register = createDaemonMetrics(src, { processMetrics: false });
  const scrape = async () => parsePromText(await register.metrics());
  const peer = (ip: string) => peers.peers().find((p) => p.publicIp === ip2n(ip))!;
  return { stats, peers, src, register, scrape, peer };
}

const ip2n = (ip: string) => ip.split('.').reduce((a, b) => a * 256 + Number(b), 0);

describe('daemon /metrics exposition', () => {
  it('exposes per-peer counters with peer and subnet labels, read when scraped, our own subnet excluded', async () => {
    const f = fixture();
    const c2 = f.peer('192.168.50.2').counters;
    c2.txPackets = 10;
    c2.txBytes = 840;
    c2.rxPackets = 9;
    c2.rxBytes = 756;
    c2.txDrops = 2;
    c2.rxDrops = 1;
    let m = await f.scrape();
    const l2 = { peer: '192.168.50.2', subnet: '10.244.2.0/24' };
    const l3 = { peer: '192.168.50.3', subnet: '10.244.3.0/24' };
    for (const name of [
      'weft_peer_transmit_packets_total',
      'weft_peer_transmit_bytes_total',
      'weft_peer_receive_packets_total',
      'weft_peer_receive_bytes_total',
    ]) {
      expect(m.types.get(name), name).toBe('counter');
      // Two peers; the local lease (10.244.1.0/24) is not one.
      expect(
        findSamples(m, name)
          .map((s) => s.labels.subnet)
          .sort(),
        name,
      ).toEqual(['10.244.2.0/24', '10.244.3.0/24']);
    }
    expect(sampleValue(m, 'weft_peer_transmit_packets_total', l2)).toBe(10);
    expect(sampleValue(m, 'weft_peer_transmit_bytes_total', l2)).toBe(840);
    expect(sampleValue(m, 'weft_peer_receive_packets_total', l2)).toBe(9);
    expect(sampleValue(m, 'weft_peer_receive_bytes_total', l2)).toBe(756);
    expect(sampleValue(m, 'weft_peer_transmit_packets_total', l3)).toBe(0);
    expect(m.types.get('weft_peer_drops_total')).toBe('counter');
    expect(sampleValue(m, 'weft_peer_drops_total', { ...l2, direction: 'transmit' })).toBe(2);
    expect(sampleValue(m, 'weft_peer_drops_total', { ...l2, direction: 'receive' })).toBe(1);
    expect(sampleValue(m, 'weft_peer_drops_total', { ...l3, direction: 'receive' })).toBe(0);

    // The pipeline goes on counting into the same objects; the next scrape sees it with nothing
    // re-registered or copied in between.
    c2.txPackets += 5;
    f.peer('192.168.50.3').counters.rxBytes = 1234;
    m = await f.scrape();
    expect(sampleValue(m, 'weft_peer_transmit_packets_total', l2)).toBe(15);
    expect(sampleValue(m, 'weft_peer_receive_bytes_total', l3)).toBe(1234);

    // A peer gone from the table is gone from the exposition.
    f.peers.apply([{ type: 'removed', lease: PEER3 }]);
    m = await f.scrape();
    expect(findSamples(m, 'weft_peer_transmit_packets_total').map((s) => s.labels.peer)).toEqual(['192.168.50.2']);
    expect(sampleValue(m, 'weft_peers')).toBe(1);
    expect(sampleValue(m, 'weft_routes')).toBe(2);
  });

  it('lists every drop reason, zeros included, and the node-wide counters', async () => {
    const f = fixture();
    f.stats.drops[Drop.UnknownPeer] = 4;
    f.stats.drops[Drop.TtlExpired] = 1;
    f.stats.txPackets = 100;
    f.stats.txBytes = 8400;
    f.stats.rxPackets = 90;
    f.stats.rxBytes = 7560;
    f.stats.icmpSent = 3;
    f.stats.busyPollNs = 2.5e9;
    const m = await f.scrape();
    expect(m.types.get('weft_drops_total')).toBe('counter');
    const reasons = findSamples(m, 'weft_drops_total').map((s) => s.labels.reason);
    expect(reasons).toEqual(DROP_NAMES.slice(1));
    expect(reasons).toContain('unknown_peer');
    expect(reasons).toContain('ttl_expired');
    expect(sampleValue(m, 'weft_drops_total', { reason: 'unknown_peer' })).toBe(4);
    expect(sampleValue(m, 'weft_drops_total', { reason: 'ttl_expired' })).toBe(1);
    expect(sampleValue(m, 'weft_drops_total', { reason: 'bad_checksum' })).toBe(0);
    expect(sampleValue(m, 'weft_datapath_transmit_packets_total')).toBe(100);
    expect(sampleValue(m, 'weft_datapath_transmit_bytes_total')).toBe(8400);
    expect(sampleValue(m, 'weft_datapath_receive_packets_total')).toBe(90);
    expect(sampleValue(m, 'weft_datapath_receive_bytes_total')).toBe(7560);
    expect(sampleValue(m, 'weft_datapath_icmp_sent_total')).toBe(3);
    expect(sampleValue(m, 'weft_datapath_busy_poll_seconds_total')).toBe(2.5);
    expect(sampleValue(m, 'weft_build_info', { version: '9.9.9', backend: 'udp' })).toBe(1);
  });

  it('turns the log2 batch-size counts into a cumulative packets-per-batch histogram', async () => {
    const f = fixture();
    const s = f.stats;
    // TUN reads: 5 batches of 1, 1 of 2, 2 of 3 (bucket 3..4), 2 of 64 (a full batch: the top of le=64).
    const tunBatches = [1, 1, 1, 1, 1, 2, 3, 3, 64, 64];
    for (const n of tunBatches) {
      s.tunReadBatchSizes[batchSizeBucket(n)]++;
      s.tunReadBatches++;
      s.tunReadPackets += n;
    }
    // Socket: one batch of 5000, beyond the last finite bucket: only +Inf holds it.
    s.sockRecvBatchSizes[batchSizeBucket(5000)]++;
    s.sockRecvBatchSizes[batchSizeBucket(8)]++;
    s.sockRecvPackets = 5008;
    const m = await f.scrape();
    const name = 'weft_datapath_batch_packets';
    expect(m.types.get(name)).toBe('histogram');
    const buckets = (path: string) => Object.fromEntries(findSamples(m, `${name}_bucket`, { path }).map((b) => [b.labels.le, b.value] as const));
    const les = Array.from({ length: BATCH_BUCKETS + 1 }, (_, i) => String(2 ** i));
    expect(Object.keys(buckets('tun_read'))).toEqual([...les, '+Inf']);
    expect(buckets('tun_read')).toMatchObject({ '1': 5, '2': 6, '4': 8, '8': 8, '16': 8, '32': 8, '64': 10, '128': 10, '1024': 10, '+Inf': 10 });
    expect(sampleValue(m, `${name}_count`, { path: 'tun_read' })).toBe(10);
    expect(sampleValue(m, `${name}_count`, { path: 'tun_read' })).toBe(s.tunReadBatches);
    expect(sampleValue(m, `${name}_sum`, { path: 'tun_read' })).toBe(tunBatches.reduce((a, b) => a + b, 0));
    expect(buckets('socket_recv')).toMatchObject({ '4': 0, '8': 1, '1024': 1, '+Inf': 2 });
    expect(sampleValue(m, `${name}_count`, { path: 'socket_recv' })).toBe(2);
    expect(sampleValue(m, `${name}_sum`, { path: 'socket_recv' })).toBe(5008);
    // Cumulative: never decreasing along le.
    for (const path of ['tun_read', 'socket_recv']) {
      const v = Object.values(buckets(path));
      expect(v, path).toEqual([...v].sort((a, b) => a - b));
    }
  });

  it('exposes offload segments only where a TUN exists, and the lease, watch, routes and traffic rules', async () => {
    const without = await fixture().scrape();
    expect(findSamples(without, 'weft_offload_segments_total')).toEqual([]);
    expect(findSamples(without, 'weft_offload_enabled')).toEqual([]);

    const refused: Record<string, number> = { gsoType: 2 };
    const f = fixture({
      tun: () => ({ vnetHdr: true, stats: tunStats({ superRead: 3, segmentsOut: 120, coalescedWrites: 4, segmentsMerged: 40, refused }) }),
      udpOffload: () => ({
        gsoMessages: 5,
        gsoSegments: 50,
        gsoDisabled: 0,
        gsoFallbacks: 1,
        groDatagrams: 6,
        groSegments: 60,
        tunnelSupers: 0,
        tunnelSegments: 0,
      }),
      socketOffloads: () => ({ gso: true, gro: false }),
      lease: () => ({ subnet: LOCAL.subnet, expiration: 8_640_000_000_000_000, reserved: true }),
      hostRoutes: () => ({ installed: 2, unreachable: 1 }),
    });
    f.src.leaseCounts.renewSuccess = 3;
    f.src.leaseCounts.renewFailure = 1;
    const m = await f.scrape();
    expect(sampleValue(m, 'weft_offload_super_packets_total', { offload: 'tun_tso' })).toBe(3);
    expect(sampleValue(m, 'weft_offload_segments_total', { offload: 'tun_tso' })).toBe(120);
    expect(sampleValue(m, 'weft_offload_segments_total', { offload: 'tun_coalesce' })).toBe(40);
    expect(sampleValue(m, 'weft_offload_segments_total', { offload: 'udp_gso' })).toBe(50);
    expect(sampleValue(m, 'weft_offload_super_packets_total', { offload: 'udp_gro' })).toBe(6);
    expect(sampleValue(m, 'weft_offload_tun_refused_total', { reason: 'gso_type' })).toBe(2);
    expect(sampleValue(m, 'weft_offload_tun_refused_total', { reason: 'slot_too_small' })).toBe(0);
    expect(sampleValue(m, 'weft_offload_gso_fallbacks_total')).toBe(1);
    expect(sampleValue(m, 'weft_offload_enabled', { offload: 'tun' })).toBe(1);
    expect(sampleValue(m, 'weft_offload_enabled', { offload: 'gro' })).toBe(0);
    // A reservation never expires.
    expect(sampleValue(m, 'weft_lease_expiry_timestamp_seconds')).toBe(Infinity);
    expect(sampleValue(m, 'weft_lease_renewals_total', { result: 'success' })).toBe(3);
    expect(sampleValue(m, 'weft_lease_renewals_total', { result: 'failure' })).toBe(1);
    expect(sampleValue(m, 'weft_host_routes', { state: 'unreachable' })).toBe(1);

    const d = await fixture().scrape();
    expect(d.types.get('weft_lease_expiry_timestamp_seconds')).toBe('gauge');
    expect(sampleValue(d, 'weft_lease_expiry_timestamp_seconds')).toBe(1_700_000_000.5);
    expect(sampleValue(d, 'weft_lease_info', { subnet: '10.244.1.0/24', reserved: 'false' })).toBe(1);
    expect(sampleValue(d, 'weft_control_watch_up')).toBe(1);
    expect(sampleValue(d, 'weft_control_watch_revision')).toBe(42);
    expect(sampleValue(d, 'weft_control_watch_reconnects_total')).toBe(2);
    expect(sampleValue(d, 'weft_control_watch_errors_total')).toBe(3);
    expect(sampleValue(d, 'weft_traffic_rules_checks_total')).toBe(7);
    expect(findSamples(d, 'weft_host_routes')).toEqual([]);
  });

  it('passes promtool check metrics, process metrics included, with a registry per daemon', async () => {
    const f = fixture();
    f.stats.tunReadBatchSizes[batchSizeBucket(2)] = 3;
    f.stats.tunReadPackets = 6;
    // Two daemons' registries in one process, both with process metrics: no name collides.
    const a = createDaemonMetrics(f.src);
    const b = createDaemonMetrics(f.src);
    const text = await a.metrics();
    expect(await b.metrics()).toContain('process_cpu_seconds_total');
    expect(text).toContain('nodejs_heap_size_used_bytes');
    const r = promtoolCheck(text);
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
    // The check can fail: promtool refuses a counter without _total.
    const bad = promtoolCheck('# HELP weft_x Bad.\n# TYPE weft_x counter\nweft_x 1\n');
    expect(bad.status).not.toBe(0);
    expect(bad.output).toMatch(/counter metrics should have "_total" suffix/);
  });

  it('is documented: every weft_ metric the daemon exposes is named in docs/observability.md', async () => {
    const doc = readFileSync(join(__dirname, '..', '..', 'docs', 'observability.md'), 'utf8');
    const f = fixture({
      tun: () => ({ vnetHdr: true, stats: tunStats() }),
      udpOffload: () => ({ gsoMessages: 0 }),
      hostRoutes: () => ({ installed: 0, unreachable: 0 }),
    });
    const names = [...(await f.scrape()).types.keys()].filter((n) => n.startsWith('weft_'));
    expect(names.length).toBeGreaterThan(30);
    expect(names.filter((n) => !doc.includes(`\`${n}\``))).toEqual([]);
  });

  it('is served at /metrics with the registry content type; 404 when the daemon gives none', async () => {
    const f = fixture();
    f.stats.drops[Drop.NoRoute] = 6;
    const base = { healthy: () => true, notReady: () => [], status: () => ({}) };
    const srv = await startHealthServer('127.0.0.1', 0, {
      ...base,
      metrics: async () => ({ contentType: f.register.contentType, body: await f.register.metrics() }),
    });
    const bare = await startHealthServer('127.0.0.1', 0, base);
    try {
      const res = await fetch(`http://127.0.0.1:${srv.port}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      expect(sampleValue(parsePromText(await res.text()), 'weft_drops_total', { reason: 'no_route' })).toBe(6);
      expect((await fetch(`http://127.0.0.1:${bare.port}/metrics`)).status).toBe(404);
    } finally {
      await srv.close();
      await bare.close();
    }
  });
});

describe('LeaseWatch counts for /metrics', () => {
  it('counts errors and the streams that connected after an earlier one', () => {
    const streams: { onBatch: (b: WatchBatch) => void; onError: (e: Error) => void }[] = [];
    const registry = {
      watch: (_rev: number, onBatch: (b: WatchBatch) => void, onError: (e: Error) => void) => {
        streams.push({ onBatch, onError });
        return { close: () => undefined };
      },
    } as unknown as ControlRegistry;
    const log = { info: () => undefined, warn: () => undefined, debug: () => undefined };
    const w = new LeaseWatch({ registry, log, apply: () => undefined, backoffMinMs: 1_000_000, backoffMaxMs: 1_000_000, downGraceMs: 0 });
    const batch = (revision: number): WatchBatch => ({ revision, snapshot: revision === 1, leases: [], events: [] });
    try {
      w.start();
      streams[0].onError(new Error('unreachable')); // never connected: an error, not a reconnect
      expect([w.errors, w.reconnects]).toEqual([1, 0]);
      w.start();
      streams[1].onBatch(batch(1));
      streams[1].onBatch(batch(2));
      expect([w.errors, w.reconnects, w.connected]).toEqual([1, 0, true]);
      streams[1].onError(new Error('stream reset'));
      w.start();
      streams[2].onBatch(batch(3));
      expect([w.errors, w.reconnects, w.revision]).toEqual([2, 1, 3]);
    } finally {
      w.stop();
    }
  });
});
