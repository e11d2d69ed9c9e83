import { collectDefaultMetrics, type Registry } from 'prom-client';

/**
 * prom-client's default metrics that break the Prometheus naming convention: it exports the sums
 * of its per-type gauges nodejs_active_{handles,requests,resources} as gauges ending in _total,
 * a suffix the convention (and `promtool check metrics`) reserves for counters. sum() over the
 * per-type gauges registered beside them gives the same number.
 */
const UNCONVENTIONAL_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/**
 * Node's process metrics (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...),
 * unprefixed as every Prometheus client names them, on `register`, less the ones promtool rejects.
 * One place for the daemon's /metrics and weft control's.
 */
export function registerProcessMetrics(register: Registry): void {
  collectDefaultMetrics({ register });
  for (const name of UNCONVENTIONAL_DEFAULT_METRICS) register.removeSingleMetric(name);
}
