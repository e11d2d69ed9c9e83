// `weft control --metrics-listen`: Prometheus metrics of the control plane, served over HTTP.
//
// Everything is registered on a prom-client Registry of this instance's own (never the global
// one), so two servers in one process (tests) keep their counts apart. The gRPC handlers report
// each call to an RpcObserver (server.ts declares the interface; it knows nothing of prom-client);
// lease counts and watch-stream figures are read when Prometheus scrapes, from the registry and
// the server's own WatchStats, so nothing is counted twice and nothing runs between scrapes.
import * as http from 'node:http';
import { Counter, Gauge, Histogram, Registry as PromRegistry } from 'prom-client';
import { registerProcessMetrics } from '../util/process-metrics';
import { countFree } from './allocator';
import { hasReservations, isReservation, type Registry, type RegistryErrorCode, type RegistryLogger } from './registry';
import { parseListen, type RpcObserver, type WatchStats } from './server';

/** The gRPC methods of the Control service, as the `method` label spells them. */
export const RPC_METHOD_LABELS: Readonly<Record<string, string>> = {
  GetConfig: 'get_config',
  Acquire: 'acquire',
  Renew: 'renew',
  Revoke: 'revoke',
  Reserve: 'reserve',
  Unreserve: 'unreserve',
  ListReservations: 'list_reservations',
  List: 'list',
  Watch: 'watch',
};

/** `result` label values: ok, a RegistryError code (the gRPC status it maps to), or internal (any other failure). */
export const RPC_RESULTS: readonly ('ok' | RegistryErrorCode | 'internal')[] = [
  'ok',
  'exhausted',
  'not_found',
  'invalid',
  'unavailable',
  'permission',
  'internal',
];

/** States of `weft_control_leases`; together they are every subnet the network hands out (see collectLeases). */
export const LEASE_STATES = ['held', 'reserved', 'free'] as const;

/**
 * Seconds. Most calls are a few hundred microseconds in memory; an acquire waits for the state
 * file's fsync (milliseconds) or an etcd round trip, and a loaded server queues them: the buckets
 * span 0.5 ms to 5 s.
 */
export const RPC_DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * How long a scrape waits for the registry's lease list. On etcd that is a range read plus a
 * TimeToLive per lease; a cluster that does not answer in this time is reported as
 * weft_control_registry_up 0 rather than making the whole scrape (process metrics included) time
 * out at Prometheus (the labs scrape every second).
 */
export const LEASE_LIST_TIMEOUT_MS = 750;

export interface ControlMetricsOptions {
  registry: Registry;
  /** Where the leases are kept: the `registry` label of weft_control_info. */
  kind: 'embedded' | 'etcd';
  /** Process metrics (CPU, memory, event loop lag, ...): on by default. */
  processMetrics?: boolean;
}

export class ControlMetrics implements RpcObserver {
  readonly register = new PromRegistry();
  private readonly requests: Counter<'method' | 'result'>;
  private readonly duration: Histogram<'method'>;
  private watchStats: (() => WatchStats) | undefined;

  constructor(opts: ControlMetricsOptions) {
    const register = this.register;
    const registry = opts.registry;
    if (opts.processMetrics !== false) {
      registerProcessMetrics(register);
    }

    new Gauge({
      name: 'weft_control_info',
      help: 'Always 1; registry says where the leases are kept (embedded: --state-dir, etcd: --etcd-endpoints)',
      labelNames: ['registry'],
      registers: [register],
    }).set({ registry: opts.kind }, 1);

    this.requests = new Counter({
      name: 'weft_control_requests_total',
      help: 'gRPC calls answered, by method and result (ok, or the RegistryError code the call was refused with; internal for anything else); a watch counts when its stream opens or is refused',
      labelNames: ['method', 'result'],
      registers: [register],
    });
    this.duration = new Histogram({
      name: 'weft_control_rpc_duration_seconds',
      help: 'Time from a unary gRPC call reaching the server to its answer, by method (watch streams are long-lived and not timed)',
      labelNames: ['method'],
      buckets: RPC_DURATION_BUCKETS,
      registers: [register],
    });
    // Every series present (at 0) from the start: increase() and rate() cannot see the first
    // event of a series that only appears with it.
    for (const method of Object.values(RPC_METHOD_LABELS)) {
      for (const result of RPC_RESULTS) this.requests.inc({ method, result }, 0);
      if (method !== 'watch') this.duration.zero({ method });
    }

    // One lease list per scrape, shared by the two gauges below: prom-client collects all metrics
    // at once, so both ask while the first list is still in flight.
    let inflight: Promise<LeaseCounts | undefined> | undefined;
    const scrapeLeases = (): Promise<LeaseCounts | undefined> =>
      (inflight ??= withTimeout(leaseCounts(registry), LEASE_LIST_TIMEOUT_MS)
        .catch(() => undefined)
        .finally(() => {
          inflight = undefined;
        }));
    new Gauge({
      name: 'weft_control_registry_up',
      help: `1 when this scrape could list the leases (within ${LEASE_LIST_TIMEOUT_MS} ms), else 0 and weft_control_leases is absent`,
      registers: [register],
      async collect() {
        this.set((await scrapeLeases()) ? 1 : 0);
      },
    });
    new Gauge({
      name: 'weft_control_leases',
      help:
        'Subnets of the network by state, read at scrape time: held (a live lease with a TTL), reserved (kept for one node, held by it or not), ' +
        'free (no lease or reservation overlaps it); held + reserved + free = the subnets SubnetMin..SubnetMax hold',
      labelNames: ['state'],
      registers: [register],
      async collect() {
        const counts = await scrapeLeases();
        // No stale figures: an absent series says "unknown", a number would say "still so".
        this.reset();
        if (counts) for (const state of LEASE_STATES) this.set({ state }, counts[state]);
      },
    });

    const stat = (read: (s: WatchStats) => number) => (): number => (this.watchStats ? read(this.watchStats()) : 0);
    const streams = stat((s) => s.streams);
    const queued = stat((s) => s.queuedEvents);
    const cutOff = stat((s) => s.cutOff);
    new Gauge({
      name: 'weft_control_watch_streams',
      help: 'Watch streams open (a daemon holds one)',
      registers: [register],
      collect() {
        this.set(streams());
      },
    });
    new Gauge({
      name: 'weft_control_watch_queued_events',
      help: 'Lease events waiting in the server across all watch streams, not yet flushed to a client',
      registers: [register],
      collect() {
        this.set(queued());
      },
    });
    new Counter({
      name: 'weft_control_watch_cutoffs_total',
      help: 'Watch streams ended because their client fell too far behind (it resumes from its last revision)',
      registers: [register],
      collect() {
        // The server counts; this reports its figure (a counter is only ever set this way, so it never goes down).
        this.reset();
        this.inc(cutOff());
      },
    });
  }

  /** The figures the control server keeps about its watch streams (ControlServer.watchStats). */
  serveWatchStats(read: () => WatchStats): void {
    this.watchStats = read;
  }

  rpc(method: string, result: string, seconds?: number): void {
    const m = RPC_METHOD_LABELS[method];
    // Only the service's own methods reach the handlers; anything else would be an unbounded label.
    if (m === undefined) return;
    this.requests.inc({ method: m, result });
    if (seconds !== undefined) this.duration.observe({ method: m }, seconds);
  }

  /** The text exposition format, as /metrics serves it. */
  metrics(): Promise<string> {
    return this.register.metrics();
  }
}

export type LeaseCounts = Record<(typeof LEASE_STATES)[number], number>;

/** Counts for weft_control_leases; see its help. */
export async function leaseCounts(registry: Registry): Promise<LeaseCounts> {
  const [config, { leases }] = await Promise.all([registry.config(), registry.list()]);
  // The embedded registry keeps reservations apart from leases (one may be unheld); on etcd a
  // reservation is a subnet key without a lease, so list() shows every one of them.
  const reserved = hasReservations(registry) ? (await registry.reservations()).map((r) => r.subnet) : leases.filter(isReservation).map((l) => l.subnet);
  const held = leases.filter((l) => !isReservation(l)).map((l) => l.subnet);
  return { held: held.length, reserved: reserved.length, free: countFree(config, [...held, ...reserved]) };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface MetricsServer {
  /** "ADDR:PORT" with the bound port. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * HTTP on `listen` ("ADDR:PORT", port 0 picks one): GET /metrics (Prometheus text format) and
 * /healthz (200 while the process serves). A bind failure rejects with one line naming the flag.
 */
export function startMetricsServer(listen: string, metrics: ControlMetrics, logger?: RegistryLogger): Promise<MetricsServer> {
  const { host, port } = parseListen(listen, '--metrics-listen');
  const bare = host.replace(/^\[|\]$/g, '');
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/metrics') {
      metrics.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': metrics.register.contentType });
          res.end(text);
        },
        (e: unknown) => {
          logger?.error({ err: (e as Error)?.message ?? String(e) }, '/metrics failed');
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics failed: ${(e as Error)?.message ?? String(e)}\n`);
        },
      );
    } else if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found (try /metrics or /healthz)\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`--metrics-listen ${listen}: cannot listen: ${e.code ?? e.message}`)));
    server.listen(port, bare, () => {
      const addr = server.address();
      const bound = typeof addr === 'object' && addr ? addr.port : port;
      resolve({
        port: bound,
        address: `${host}:${bound}`,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            // A Prometheus keeps its connection alive between scrapes; do not wait for it.
            server.closeAllConnections();
          }),
      });
    });
  });
}
