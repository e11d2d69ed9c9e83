// The daemon's /metrics: Prometheus text exposition of what the datapath and the daemon already
// count. Nothing here runs per packet. Every datapath metric is a small object whose get() reads
// the counters when Prometheus scrapes (prom-client's registerMetric accepts any object of that
// shape), so the pipeline keeps doing its plain field increments and never calls prom-client.
// The pipeline's counters are cumulative numbers that only grow, which is exactly a Prometheus
// counter; a Peer replaced on a lease change starts again from zero, which rate() treats as a
// counter reset.
import { Registry, type Metric } from 'prom-client';
import { registerProcessMetrics } from '../util/process-metrics';
import type { Peer } from '../datapath/peer';
import { DROP_NAMES, type DatapathStats } from '../datapath/stats';
import { TUN_REFUSE } from '../io/native';
import type { TunOffloadStats } from '../io/tun';
import { formatCidr, formatIpv4 } from '../route/address';

/** What /metrics reads, each when scraped. Getters return undefined for what does not exist yet (or at all). */
export interface DaemonMetricsSource {
  /** weft's version (package.json). */
  version: string;
  /** The backend type, once the network config is known. */
  backend(): string | undefined;
  stats: DatapathStats;
  /** Every peer in the datapath's table, our own subnet's (local) included; empty before the lease. */
  peers(): readonly Peer[];
  /** Entries in the datapath's route table (one per lease, our own included). */
  routes(): number;
  /** Kernel routes (host-gw, DirectRouting): installed, and peers unreachable on the underlay. */
  hostRoutes(): { installed: number; unreachable: number } | undefined;
  /** The TUN's offload counters; undefined without a TUN (host-gw). */
  tun(): { vnetHdr: boolean; stats: TunOffloadStats } | undefined;
  /** The underlay sockets' GSO/GRO counters (Transport.offloadStats); empty without socket offloads. */
  udpOffload(): Record<string, number> | undefined;
  /** The socket offloads asked for (--offload). */
  socketOffloads(): { gso: boolean; gro: boolean };
  /** Our lease: its expiry (ms since the epoch; a reservation's is NEVER_EXPIRES) and subnet. */
  lease(): { subnet: string; expiration: number; reserved: boolean } | undefined;
  /** Renewals and re-acquisitions since start, by result. */
  leaseCounts: LeaseCounts;
  /** The lease watch: a stream connected, its revision, reconnects and errors. */
  watch(): { connected: boolean; revision: number; reconnects: number; errors: number } | undefined;
  /** The traffic rules' periodic check (traffic-rules.ts). */
  trafficRules(): { checks: number; resyncs: number; errors: number } | undefined;
}

/** Counted by the daemon where it renews and re-acquires (never on the packet path). */
export class LeaseCounts {
  renewSuccess = 0;
  renewFailure = 0;
  reacquireSuccess = 0;
  reacquireFailure = 0;
}

/** One exposition sample: prom-client's value shape (metricName for a histogram's _bucket/_sum/_count). */
export interface Sample {
  labels?: Record<string, string | number>;
  value: number;
  metricName?: string;
}

type MetricKind = 'counter' | 'gauge' | 'histogram';

/**
 * A metric whose samples are produced when scraped: the object shape prom-client's Registry
 * reads (registry.js: get() for name/help/type/values, reset() from resetMetrics()). Used
 * instead of Counter/Gauge because those hold their own values, which would have to be copied
 * from ours on every scrape and cannot express a histogram whose buckets someone else counted.
 */
export function scrapeMetric(register: Registry, name: string, help: string, type: MetricKind, read: () => Sample[]): void {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: () => Promise.resolve({ name, help, type, aggregator: 'sum', values: read() }),
    reset: () => undefined,
  };
  register.registerMetric(metric as unknown as Metric);
}

/**
 * Histogram buckets of packets per batch: le = 2^k for k = 0..BATCH_BUCKETS, the upper bounds
 * of DatapathStats' log2 batch-size counts (batchSizeBucket: index k holds 2^(k-1) + 1 .. 2^k
 * packets). Fixed so every scrape has the same series, as histogram_quantile() needs; 1024 is
 * far above the datapath's batch (64 packets, a bucket bound of its own), and anything larger
 * still lands in +Inf.
 */
export const BATCH_BUCKETS = 10;

/**
 * A Prometheus histogram from log2-bucketed counts: cumulative _bucket samples, +Inf equal to
 * the batch count, _sum the packets those batches held.
 */
export function batchHistogram(name: string, labels: Record<string, string>, sizes: Float64Array, packets: number): Sample[] {
  const out: Sample[] = [];
  let acc = 0;
  let total = 0;
  for (let k = 0; k < sizes.length; k++) total += sizes[k];
  for (let k = 0; k <= BATCH_BUCKETS; k++) {
    acc += sizes[k] ?? 0;
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: 2 ** k }, value: acc });
  }
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: total });
  out.push({ metricName: `${name}_sum`, labels, value: packets });
  out.push({ metricName: `${name}_count`, labels, value: total });
  return out;
}

/** TUN_REFUSE's names as label values, by Prometheus convention in snake case (gsoType → gso_type). */
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * The registry for one daemon: its own, not prom-client's global one, so several daemons (the
 * tests run them in one process) never share or collide on metrics. Node's process metrics come
 * from registerProcessMetrics (util/process-metrics.ts).
 */
export function createDaemonMetrics(src: DaemonMetricsSource, opts: { processMetrics?: boolean } = {}): Registry {
  const register = new Registry();
  if (opts.processMetrics !== false) {
    registerProcessMetrics(register);
  }
  const s = src.stats;
  const one = (value: number): Sample[] => [{ value }];

  scrapeMetric(register, 'weft_build_info', 'Always 1: the weft version and the backend this daemon runs.', 'gauge', () => [
    { labels: { version: src.version, backend: src.backend() ?? '' }, value: 1 },
  ]);

  // Per peer. Labels: the peer's public IPv4 and its subnet, one pair per lease (bounded by the
  // network's size); our own subnet is not a peer.
  const remote = () => src.peers().filter((p) => !p.local);
  const perPeer = (name: string, help: string, read: (p: Peer) => number) =>
    scrapeMetric(register, name, help, 'counter', () =>
      remote().map((p) => ({ labels: { peer: formatIpv4(p.publicIp), subnet: formatCidr(p.subnet) }, value: read(p) })),
    );
  perPeer('weft_peer_transmit_packets_total', 'Inner packets encapsulated and sent to the peer.', (p) => p.counters.txPackets);
  perPeer('weft_peer_transmit_bytes_total', 'Bytes of those inner packets (IPv4 Total Length), without encapsulation.', (p) => p.counters.txBytes);
  perPeer('weft_peer_receive_packets_total', 'Inner packets received from the peer, decapsulated and written to the TUN.', (p) => p.counters.rxPackets);
  perPeer('weft_peer_receive_bytes_total', 'Bytes of those inner packets (IPv4 Total Length), without encapsulation.', (p) => p.counters.rxBytes);
  scrapeMetric(
    register,
    'weft_peer_drops_total',
    'Packets dropped that were routed to the peer (direction="transmit") or came from it (direction="receive"); weft_drops_total says why.',
    'counter',
    () =>
      remote().flatMap((p) => {
        const labels = { peer: formatIpv4(p.publicIp), subnet: formatCidr(p.subnet) };
        return [
          { labels: { ...labels, direction: 'transmit' }, value: p.counters.txDrops },
          { labels: { ...labels, direction: 'receive' }, value: p.counters.rxDrops },
        ];
      }),
  );

  // Every reason, zeros included, so rate() has a series from the first scrape on.
  scrapeMetric(
    register,
    'weft_drops_total',
    'Packets the datapath dropped, by reason (reason="consumed" is not a drop: an ARP request the vxlan backend answered).',
    'counter',
    () => DROP_NAMES.slice(1).map((reason, i) => ({ labels: { reason }, value: s.drops[i + 1] })),
  );

  scrapeMetric(register, 'weft_datapath_transmit_packets_total', 'Inner packets encapsulated and sent to peers, all peers.', 'counter', () => one(s.txPackets));
  scrapeMetric(register, 'weft_datapath_transmit_bytes_total', 'Bytes of those inner packets.', 'counter', () => one(s.txBytes));
  scrapeMetric(register, 'weft_datapath_receive_packets_total', 'Inner packets decapsulated and written to the TUN, all peers.', 'counter', () =>
    one(s.rxPackets),
  );
  scrapeMetric(register, 'weft_datapath_receive_bytes_total', 'Bytes of those inner packets.', 'counter', () => one(s.rxBytes));
  scrapeMetric(register, 'weft_datapath_tun_read_packets_total', 'Packets read from the TUN (pods to the network), before any drop.', 'counter', () =>
    one(s.tunReadPackets),
  );
  scrapeMetric(register, 'weft_datapath_tun_write_packets_total', 'Packets written to the TUN (the network to pods).', 'counter', () => one(s.tunWritePackets));
  scrapeMetric(register, 'weft_datapath_icmp_sent_total', 'ICMP errors weft originated (time exceeded, unreachable, fragmentation needed).', 'counter', () =>
    one(s.icmpSent),
  );
  scrapeMetric(register, 'weft_datapath_busy_poll_seconds_total', 'Time spent busy polling (--busy-poll-us): the CPU that option costs.', 'counter', () =>
    one(s.busyPollNs / 1e9),
  );
  scrapeMetric(
    register,
    'weft_datapath_batch_packets',
    'Packets per batch the datapath read: path="tun_read" from the TUN, path="socket_recv" from the underlay socket.',
    'histogram',
    () => [
      ...batchHistogram('weft_datapath_batch_packets', { path: 'tun_read' }, s.tunReadBatchSizes, s.tunReadPackets),
      ...batchHistogram('weft_datapath_batch_packets', { path: 'socket_recv' }, s.sockRecvBatchSizes, s.sockRecvPackets),
    ],
  );

  // Offloads, where the node has a TUN (not host-gw). offload= names the mechanism: tun_tso (TSO/USO
  // super-packets read from the TUN and split), tun_coalesce (segments merged into one TUN write),
  // udp_gso (UDP_SEGMENT sends), udp_gro (UDP_GRO receives), udp_gro_tunnel (vxlan GRO trains).
  const offloadPairs = (): { offload: string; supers: number; segments: number }[] => {
    const t = src.tun();
    if (!t) return [];
    const out = [
      { offload: 'tun_tso', supers: t.stats.superRead, segments: t.stats.segmentsOut },
      { offload: 'tun_coalesce', supers: t.stats.coalescedWrites, segments: t.stats.segmentsMerged },
    ];
    const u = src.udpOffload() ?? {};
    if (Object.keys(u).length > 0) {
      out.push(
        { offload: 'udp_gso', supers: u.gsoMessages ?? 0, segments: u.gsoSegments ?? 0 },
        { offload: 'udp_gro', supers: u.groDatagrams ?? 0, segments: u.groSegments ?? 0 },
        { offload: 'udp_gro_tunnel', supers: u.tunnelSupers ?? 0, segments: u.tunnelSegments ?? 0 },
      );
    }
    return out;
  };
  scrapeMetric(register, 'weft_offload_super_packets_total', 'Super-packets (one system call or message, many segments) by offload mechanism.', 'counter', () =>
    offloadPairs().map((o) => ({ labels: { offload: o.offload }, value: o.supers })),
  );
  scrapeMetric(register, 'weft_offload_segments_total', 'Segments those super-packets carried, by offload mechanism.', 'counter', () =>
    offloadPairs().map((o) => ({ labels: { offload: o.offload }, value: o.segments })),
  );
  scrapeMetric(register, 'weft_offload_tun_refused_total', 'TUN reads whose virtio-net header weft refused (dropped), by reason.', 'counter', () => {
    const t = src.tun();
    return t ? TUN_REFUSE.slice(1).map((r) => ({ labels: { reason: snake(r) }, value: t.stats.refused[r] ?? 0 })) : [];
  });
  scrapeMetric(register, 'weft_offload_gso_fallbacks_total', 'UDP_SEGMENT sends the kernel refused, resent as plain datagrams.', 'counter', () => {
    const u = src.udpOffload() ?? {};
    return src.tun() && Object.keys(u).length > 0 ? one(u.gsoFallbacks ?? 0) : [];
  });
  scrapeMetric(
    register,
    'weft_offload_enabled',
    '1 when the offload is in use: tun (virtio-net headers granted), gso and gro (asked for, and gso not refused).',
    'gauge',
    () => {
      const t = src.tun();
      if (!t) return [];
      const asked = src.socketOffloads();
      const gsoDisabled = (src.udpOffload()?.gsoDisabled ?? 0) > 0;
      return [
        { labels: { offload: 'tun' }, value: t.vnetHdr ? 1 : 0 },
        { labels: { offload: 'gso' }, value: asked.gso && !gsoDisabled ? 1 : 0 },
        { labels: { offload: 'gro' }, value: asked.gro ? 1 : 0 },
      ];
    },
  );

  // The lease. A reservation never expires: its expiry is +Inf, so "expiry - time()" needs no special case.
  scrapeMetric(register, 'weft_lease_expiry_timestamp_seconds', 'When our lease expires unless renewed (Unix time; +Inf for a reservation).', 'gauge', () => {
    const l = src.lease();
    return l ? one(l.reserved ? Infinity : l.expiration / 1000) : [];
  });
  scrapeMetric(register, 'weft_lease_info', 'Always 1: the subnet this node holds.', 'gauge', () => {
    const l = src.lease();
    return l ? [{ labels: { subnet: l.subnet, reserved: String(l.reserved) }, value: 1 }] : [];
  });
  const lc = src.leaseCounts;
  scrapeMetric(register, 'weft_lease_renewals_total', 'Lease renewals, by result.', 'counter', () => [
    { labels: { result: 'success' }, value: lc.renewSuccess },
    { labels: { result: 'failure' }, value: lc.renewFailure },
  ]);
  scrapeMetric(register, 'weft_lease_reacquisitions_total', 'Re-acquisitions of our subnet after the lease was found gone, by result.', 'counter', () => [
    { labels: { result: 'success' }, value: lc.reacquireSuccess },
    { labels: { result: 'failure' }, value: lc.reacquireFailure },
  ]);

  // The lease watch that keeps the routes current.
  scrapeMetric(register, 'weft_control_watch_up', '1 while a lease watch stream is connected to the control plane.', 'gauge', () =>
    one(src.watch()?.connected ? 1 : 0),
  );
  scrapeMetric(register, 'weft_control_watch_revision', 'The control-plane revision of the last lease batch applied.', 'gauge', () =>
    one(src.watch()?.revision ?? 0),
  );
  scrapeMetric(register, 'weft_control_watch_reconnects_total', 'Lease watch streams established after an earlier one ended.', 'counter', () =>
    one(src.watch()?.reconnects ?? 0),
  );
  scrapeMetric(register, 'weft_control_watch_errors_total', 'Lease watch attempts and streams that ended in an error.', 'counter', () =>
    one(src.watch()?.errors ?? 0),
  );

  scrapeMetric(register, 'weft_peers', 'Other nodes this node routes to (leases of our backend type).', 'gauge', () => one(remote().length));
  scrapeMetric(register, 'weft_routes', "Entries in the datapath's route table: one per lease, our own subnet's included.", 'gauge', () => one(src.routes()));
  scrapeMetric(
    register,
    'weft_host_routes',
    'Kernel routes to peers (host-gw, DirectRouting): state="installed", or "unreachable" (peer not on the underlay).',
    'gauge',
    () => {
      const h = src.hostRoutes();
      return h
        ? [
            { labels: { state: 'installed' }, value: h.installed },
            { labels: { state: 'unreachable' }, value: h.unreachable },
          ]
        : [];
    },
  );

  scrapeMetric(register, 'weft_traffic_rules_checks_total', 'Periodic checks that the masquerade and forward rules are still in place.', 'counter', () =>
    one(src.trafficRules()?.checks ?? 0),
  );
  scrapeMetric(register, 'weft_traffic_rules_resyncs_total', 'Checks that found rules missing or changed and put them back.', 'counter', () =>
    one(src.trafficRules()?.resyncs ?? 0),
  );
  scrapeMetric(register, 'weft_traffic_rules_errors_total', 'Rule installs and checks that failed.', 'counter', () => one(src.trafficRules()?.errors ?? 0));
  return register;
}
