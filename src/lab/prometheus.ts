// `weft lab up --prometheus`: Debian's prometheus in the switch namespace (where control runs and
// from where every node's underlay address is routed), scraping every daemon's /metrics, weft
// control's (or etcd's), and itself; and a socat forwarder on the host's 127.0.0.1 that enters the
// switch namespace per connection, as lifecycle.ts describes for the inspector, so Prometheus is
// reachable from the root namespace while the lab keeps no link to it.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { freeLoopbackPort } from './ports';
import { probe } from './probe';
import { isAlive, sleep, spawnDetached, tail } from './process';
import {
  PROMETHEUS_PORT,
  PROMETHEUS_SCRAPE_INTERVAL_S,
  etcdEndpoints,
  mustReadState,
  prefixOf,
  writeState,
  type LabControl,
  type LabPrometheus,
  type LabRef,
  type LabState,
} from './state';

export const PROMETHEUS_BIN = '/usr/bin/prometheus';
export const SOCAT_BIN = '/usr/bin/socat';
export const PROMETHEUS_READY_TIMEOUT_MS = 30_000;

/** Scrape jobs, as the `job` label names them. */
export const PROMETHEUS_JOBS = { daemon: 'weft-daemon', control: 'weft-control', etcd: 'etcd', self: 'prometheus' } as const;

/** Refuses, before the lab makes anything, what would stop Prometheus from starting. */
export function prometheusPreflight(): void {
  if (!existsSync(PROMETHEUS_BIN)) throw new Error(`--prometheus: ${PROMETHEUS_BIN} missing: run scripts/setup.sh (Debian's prometheus)`);
  if (!existsSync(SOCAT_BIN)) throw new Error(`--prometheus: ${SOCAT_BIN} missing (it forwards the host's port into the lab): run scripts/setup.sh (socat)`);
}

/**
 * The host port for --prometheus-port: `port` when nothing listens on 127.0.0.1:port (refused in
 * one line otherwise), or any free one for 0. Checked before the lab is made, so a busy port costs
 * nothing; the forwarder is still watched as it starts, since another process may take the port between.
 */
export async function prometheusHostPort(port: number): Promise<number> {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--prometheus-port must be 0..65535, got ${String(port)}`);
  if (port === 0) return freeLoopbackPort();
  const s = net.createServer();
  try {
    await new Promise<void>((res, rej) => {
      s.once('error', rej);
      s.listen(port, '127.0.0.1', () => res());
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new Error(`--prometheus-port ${port}: 127.0.0.1:${port} is not free (${code}; another lab's Prometheus?); pick another port, or 0 for any free one`, {
      cause: e,
    });
  } finally {
    await new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()));
  }
  return port;
}

/** The record of a lab's Prometheus (pids 0: not started). */
export function prometheusFor(state: Pick<LabState, 'dir' | 'switchNs'> & { control: Pick<LabControl, 'ip'> }, hostPort: number): LabPrometheus {
  const dir = join(state.dir, 'prometheus');
  const address = `${state.control.ip}:${PROMETHEUS_PORT}`;
  const configFile = join(dir, 'prometheus.yml');
  const dataDir = join(dir, 'data');
  const logFile = join(state.dir, 'logs', 'prometheus.log');
  const forwarderLogFile = join(state.dir, 'logs', 'prometheus-forward.log');
  return {
    ns: state.switchNs,
    address,
    hostPort,
    url: `http://127.0.0.1:${hostPort}`,
    pid: 0,
    argv: [
      'ip',
      'netns',
      'exec',
      state.switchNs,
      PROMETHEUS_BIN,
      // Flag and value apart: a value that starts with the lab dir is how isLabPid knows the process.
      '--config.file',
      configFile,
      '--storage.tsdb.path',
      dataDir,
      '--web.listen-address',
      address,
      // A lab lives for minutes; a day of samples is more than it will ever hold.
      '--storage.tsdb.retention.time=1d',
    ],
    forwarderPid: 0,
    // One socat per connection, started by the listening one in the switch namespace (colons in
    // EXEC's address escaped, or socat splits on them). -lf puts the lab dir in its command line,
    // which is how `weft lab down` finds it even without state.json.
    forwarderArgv: [
      SOCAT_BIN,
      '-lf',
      forwarderLogFile,
      `TCP-LISTEN:${hostPort},bind=127.0.0.1,reuseaddr,fork`,
      `EXEC:ip netns exec ${state.switchNs} ${SOCAT_BIN} STDIO TCP\\:${state.control.ip}\\:${PROMETHEUS_PORT}`,
    ],
    configFile,
    dataDir,
    logFile,
    forwarderLogFile,
  };
}

/** "'a', 'b'" as a YAML flow sequence of single-quoted strings. */
const yamlList = (xs: string[]): string => `[${xs.map((x) => `'${x.replace(/'/g, "''")}'`).join(', ')}]`;

/**
 * prometheus.yml for the lab: every node's daemon (labelled node="nN"), control (weft control's
 * --metrics-listen, or every etcd member's client URL, where etcd serves its own /metrics) and
 * Prometheus itself, every PROMETHEUS_SCRAPE_INTERVAL_S seconds.
 */
export function prometheusConfig(state: Pick<LabState, 'prefix' | 'control' | 'nodes'>, p: Pick<LabPrometheus, 'address'>): string {
  const every = `${PROMETHEUS_SCRAPE_INTERVAL_S}s`;
  const lines = [
    `# Written by weft lab up --prometheus for lab "${state.prefix}"; goes with the lab.`,
    'global:',
    `  scrape_interval: ${every}`,
    // At most the interval (Prometheus refuses more); a target slower than that is down.
    `  scrape_timeout: ${every}`,
    `  evaluation_interval: ${every}`,
    'scrape_configs:',
    `  - job_name: ${PROMETHEUS_JOBS.daemon}`,
    '    static_configs:',
    ...state.nodes.flatMap((n) => [`      - targets: ${yamlList([`${n.publicIp}:${n.healthzPort}`])}`, `        labels: { node: '${n.name}' }`]),
  ];
  if (state.control.kind === 'etcd') {
    const hosts = etcdEndpoints(state.control).map((u) => u.replace(/^http:\/\//, ''));
    lines.push(`  - job_name: ${PROMETHEUS_JOBS.etcd}`, '    static_configs:', `      - targets: ${yamlList(hosts)}`);
  } else if (state.control.metricsAddress) {
    lines.push(`  - job_name: ${PROMETHEUS_JOBS.control}`, '    static_configs:', `      - targets: ${yamlList([state.control.metricsAddress])}`);
  }
  lines.push(`  - job_name: ${PROMETHEUS_JOBS.self}`, '    static_configs:', `      - targets: ${yamlList([p.address])}`);
  return lines.join('\n') + '\n';
}

function failWithLog(what: string, logFile: string): Error {
  return new Error(`${what}\n--- last lines of ${logFile} ---\n${tail(logFile, 30) || '(empty)'}`);
}

/**
 * Writes the config, starts Prometheus in the switch namespace and waits until it is ready
 * (/-/ready), then the forwarder, and waits until Prometheus answers through it. Records both
 * pids in state.json as soon as each is started, so a failure here is taken down with the lab.
 */
export async function startPrometheus(state: LabState, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
  const p = state.prometheus;
  if (!p) throw new Error(`lab "${state.prefix}" was not made with --prometheus`);
  const timeoutMs = opts.timeoutMs ?? PROMETHEUS_READY_TIMEOUT_MS;
  mkdirSync(p.dataDir, { recursive: true });
  writeFileSync(p.configFile, prometheusConfig(state, p));

  p.pid = await spawnDetached(p.argv, p.logFile);
  writeState(state);
  const ready = await probe(
    p.ns,
    { mode: 'http', targets: [`http://${p.address}/-/ready`], untilOk: true, deadlineMs: timeoutMs, intervalMs: 200, perTryTimeoutMs: 1000 },
    { nodeBin: state.nodeBin, signal: opts.signal },
  ).catch(() => null);
  if (opts.signal?.aborted) throw new Error('interrupted');
  if (!isAlive(p.pid)) throw failWithLog(`prometheus (pid ${p.pid}) exited before it was ready`, p.logFile);
  if (!ready?.some((r) => r.ok)) throw failWithLog(`prometheus not ready at http://${p.address}/-/ready (in ${p.ns}) after ${timeoutMs / 1000}s`, p.logFile);

  p.forwarderPid = await spawnDetached(p.forwarderArgv, p.forwarderLogFile);
  writeState(state);
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    if (opts.signal?.aborted) throw new Error('interrupted');
    if (!isAlive(p.forwarderPid)) throw failWithLog(`the forwarder to Prometheus (socat, pid ${p.forwarderPid}) exited`, p.forwarderLogFile);
    try {
      const res = await fetch(`${p.url}/-/ready`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) throw failWithLog(`Prometheus not reachable at ${p.url} after ${timeoutMs / 1000}s (${last})`, p.forwarderLogFile);
    await sleep(200);
  }
}

/** One sample of an instant query's result (resultType "vector"). */
export interface PromSample {
  metric: Record<string, string>;
  /** [unix seconds, value as text] */
  value: [number, string];
}

/**
 * GET /api/v1/<path> on the lab's Prometheus through its forwarder (as anyone on the host would
 * reach it); returns `data`, throws Prometheus's error in one line.
 */
export async function prometheusApi(lab: LabRef, path: string, params: Record<string, string> = {}): Promise<unknown> {
  const state = mustReadState(prefixOf(lab));
  if (!state.prometheus) throw new Error(`lab "${state.prefix}" was not made with --prometheus`);
  const qs = new URLSearchParams(params).toString();
  const res = await fetch(`${state.prometheus.url}/api/v1/${path}${qs ? `?${qs}` : ''}`, { signal: AbortSignal.timeout(10_000) });
  const body = (await res.json()) as { status: string; data?: unknown; error?: string; errorType?: string };
  if (body.status !== 'success') throw new Error(`Prometheus ${path} ${JSON.stringify(params)}: ${body.errorType ?? res.status}: ${body.error ?? ''}`);
  return body.data;
}

/** An instant PromQL query, at `time` (unix seconds) or now; the vector it returns. */
export async function prometheusQuery(lab: LabRef, expr: string, time?: number): Promise<PromSample[]> {
  const data = (await prometheusApi(lab, 'query', { query: expr, ...(time !== undefined ? { time: String(time) } : {}) })) as {
    resultType: string;
    result: PromSample[];
  };
  if (data.resultType !== 'vector') throw new Error(`${expr}: a ${data.resultType}, not a vector (use prometheusApi for range vectors)`);
  return data.result;
}
