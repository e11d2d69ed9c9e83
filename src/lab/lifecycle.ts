// Lifecycle of the programs the lab runs: `weft control` in the switch namespace and one
// `weft daemon` per node namespace. Exported for tests that stop, kill and restart them.
import { appendFileSync } from 'node:fs';
import { healthUrls, probe, type HttpProbe } from './probe';
import { cmdline, isAlive, signal as sendSignal, sleep, spawnDetached, tail, terminate, waitExit } from './process';
import { etcdArgv } from './etcd';
import { ETCD_PEER_PORT, findNode, mustReadState, prefixOf, writeState, type LabControl, type LabNode, type LabRef, type LabState } from './state';

export const DAEMON_READY_TIMEOUT_MS = 30_000;
export const CONTROL_READY_TIMEOUT_MS = 20_000;

export function controlArgv(state: Pick<LabState, 'nodeBin' | 'weftJs' | 'options' | 'prefix'>, c: Omit<LabControl, 'argv' | 'pid'>): string[] {
  const o = state.options;
  if (c.kind === 'etcd') {
    // A one-member cluster in the switch namespace; the data dir is the lab's control state dir,
    // so a restart (startControl after killControl) comes back with every lease it had.
    const peerUrl = `http://${c.ip}:${ETCD_PEER_PORT}`;
    return [
      'ip',
      'netns',
      'exec',
      c.ns,
      ...etcdArgv({
        name: 'ctl',
        dataDir: c.stateDir,
        clientUrls: `http://${c.address}`,
        peerUrl,
        initialCluster: `ctl=${peerUrl}`,
        initialClusterToken: `weft-lab-${state.prefix}`,
        extraArgs: o.controlArgs,
      }),
    ];
  }
  return [
    'ip',
    'netns',
    'exec',
    c.ns,
    state.nodeBin,
    state.weftJs,
    'control',
    '--listen',
    c.address,
    '--state-dir',
    c.stateDir,
    '--net-config-path',
    c.netConfPath,
    ...(o.leaseTtl !== undefined ? ['--lease-ttl', String(o.leaseTtl)] : []),
    ...o.controlArgs,
  ];
}

/**
 * With `inspect` set the daemon runs under `node --inspect=ADDR`, listening inside the node
 * namespace only: attach from there, e.g. `weft lab exec n1 -- node inspect 127.0.0.1:9229`, or
 * bridge it to the root namespace with a forwarder that enters the namespace per connection
 * (`socat TCP-LISTEN:9229,bind=127.0.0.1,reuseaddr,fork EXEC:'ip netns exec <ns> socat STDIO TCP\:127.0.0.1\:9229'`;
 * the colons inside EXEC's address must be escaped or socat splits on them).
 */
export function daemonArgv(state: Pick<LabState, 'nodeBin' | 'weftJs' | 'options' | 'control'>, n: Omit<LabNode, 'argv' | 'pid'>): string[] {
  return [
    'ip',
    'netns',
    'exec',
    n.ns,
    state.nodeBin,
    ...(n.inspect ? [`--inspect=${n.inspect}`] : []),
    state.weftJs,
    'daemon',
    ...(state.control.kind === 'etcd'
      ? [
          '--etcd-endpoints',
          `http://${state.control.address}`,
          // With etcd each node writes its own lease, so the node picks its TTL.
          ...(state.options.leaseTtl !== undefined ? ['--lease-ttl', String(state.options.leaseTtl)] : []),
        ]
      : ['--control', state.control.address]),
    '--public-ip',
    n.publicIp,
    '--iface',
    n.iface,
    '--subnet-file',
    n.subnetFile,
    '--healthz-port',
    String(n.healthzPort),
    ...state.options.daemonArgs,
  ];
}

/** A recorded pid counts as the lab's only while its command line still refers to the lab dir (pids get reused). */
export function isLabPid(pid: number, dir: string): boolean {
  return isAlive(pid) && cmdline(pid).some((a) => a.startsWith(dir + '/'));
}

function logStart(logFile: string, argv: string[]): void {
  appendFileSync(logFile, `--- ${new Date().toISOString()} weft lab starting: ${argv.join(' ')}\n`);
}

function failWithLog(what: string, logFile: string, detail: string): Error {
  const t = tail(logFile, 30);
  return new Error(`${what}: ${detail}\n--- last lines of ${logFile} ---\n${t || '(empty)'}`);
}

/**
 * Waits for a probe to succeed while watching the process it is probing: if the process exits
 * first, there is no point waiting out the deadline.
 */
async function probeWhileAlive(
  pid: number,
  run: (signal: AbortSignal) => Promise<HttpProbe[]>,
  outer?: AbortSignal,
): Promise<{ results: HttpProbe[] | null; died: boolean }> {
  const ac = new AbortController();
  const onOuter = (): void => ac.abort();
  outer?.addEventListener('abort', onOuter, { once: true });
  let died = false;
  const watcher = (async () => {
    while (!ac.signal.aborted) {
      if (!isAlive(pid)) {
        died = true;
        ac.abort();
        return;
      }
      await sleep(100);
    }
  })();
  try {
    const results = await run(ac.signal).catch(() => null);
    return { results, died };
  } finally {
    ac.abort();
    await watcher;
    outer?.removeEventListener('abort', onOuter);
  }
}

function describeProbe(results: HttpProbe[] | null): string {
  if (!results || results.length === 0) return 'no answer';
  return results.map((r) => `${r.url} → ${r.status ? `HTTP ${r.status} ${r.body.trim().slice(0, 200)}` : (r.error ?? 'no answer')}`).join('; ');
}

export async function waitControlReady(state: LabState, timeoutMs = CONTROL_READY_TIMEOUT_MS, outer?: AbortSignal): Promise<void> {
  const c = state.control;
  const { results, died } = await probeWhileAlive(
    c.pid,
    (signal) =>
      probe(
        c.ns,
        { mode: 'tcp', targets: [c.address], untilOk: true, deadlineMs: timeoutMs, intervalMs: 100, perTryTimeoutMs: 1000 },
        { nodeBin: state.nodeBin, signal },
      ),
    outer,
  );
  if (outer?.aborted) throw new Error('interrupted');
  if (died) throw failWithLog(`weft control (pid ${c.pid}) exited before listening on ${c.address}`, c.logFile, 'process gone');
  if (!results?.some((r) => r.ok)) {
    throw failWithLog(`weft control not listening on ${c.address} after ${timeoutMs / 1000}s`, c.logFile, describeProbe(results));
  }
}

export async function waitDaemonReady(state: LabState, node: LabNode, timeoutMs = DAEMON_READY_TIMEOUT_MS, outer?: AbortSignal): Promise<void> {
  const { results, died } = await probeWhileAlive(
    node.pid,
    (signal) =>
      probe(
        node.ns,
        {
          mode: 'http',
          targets: healthUrls(node.publicIp, node.healthzPort, '/readyz'),
          untilOk: true,
          deadlineMs: timeoutMs,
          intervalMs: 200,
          perTryTimeoutMs: 1000,
        },
        { nodeBin: state.nodeBin, signal },
      ),
    outer,
  );
  if (outer?.aborted) throw new Error('interrupted');
  if (died) throw failWithLog(`weft daemon ${node.name} (pid ${node.pid}, ${node.ns}) exited before becoming ready`, node.logFile, 'process gone');
  if (!results?.some((r) => r.ok)) {
    throw failWithLog(`weft daemon ${node.name} (${node.ns}) not ready after ${timeoutMs / 1000}s`, node.logFile, `last /readyz: ${describeProbe(results)}`);
  }
}

/**
 * Waits until the daemon's /status lists every other node as a peer. /readyz says the node's own
 * side is in place; this says the overlay has converged, so the first packet a pod sends already
 * has somewhere to go. Returns false (without waiting) when /status has no recognisable `peers`.
 */
export async function waitDaemonPeers(state: LabState, node: LabNode, timeoutMs = DAEMON_READY_TIMEOUT_MS, outer?: AbortSignal): Promise<boolean> {
  const want = state.nodes.filter((n) => n !== node).map((n) => n.publicIp);
  const { results, died } = await probeWhileAlive(
    node.pid,
    (signal) =>
      probe(
        node.ns,
        {
          mode: 'http',
          targets: healthUrls(node.publicIp, node.healthzPort, '/status'),
          untilOk: true,
          deadlineMs: timeoutMs,
          intervalMs: 100,
          perTryTimeoutMs: 1000,
          peers: want,
        },
        { nodeBin: state.nodeBin, signal },
      ),
    outer,
  );
  if (outer?.aborted) throw new Error('interrupted');
  if (died) throw failWithLog(`weft daemon ${node.name} (pid ${node.pid}, ${node.ns}) exited while learning its peers`, node.logFile, 'process gone');
  const ok = results?.find((r) => r.ok);
  if (!ok) {
    const seen = results?.find((r) => r.peersSeen)?.peersSeen ?? [];
    const missing = want.filter((ip) => !seen.includes(ip));
    throw failWithLog(
      `weft daemon ${node.name} (${node.ns}) does not know its peers after ${timeoutMs / 1000}s`,
      node.logFile,
      `missing ${missing.join(', ')}; last /status: ${describeProbe(results)}`,
    );
  }
  return ok.peersSeen !== null && ok.peersSeen !== undefined;
}

function daemonEnv(state: LabState): NodeJS.ProcessEnv {
  return { ...process.env, WEFT_LAB_PREFIX: state.prefix };
}

/** Starts control (must not be running) and waits until it accepts connections. Updates state.json. */
export async function spawnControl(state: LabState, opts: { wait?: boolean; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
  const c = state.control;
  if (isLabPid(c.pid, state.dir)) throw new Error(`weft control already running (pid ${c.pid})`);
  logStart(c.logFile, c.argv);
  c.pid = await spawnDetached(c.argv, c.logFile, daemonEnv(state));
  writeState(state);
  if (opts.wait !== false) await waitControlReady(state, opts.timeoutMs, opts.signal);
}

export interface StartOptions {
  /** Wait for /readyz (default true). */
  wait?: boolean;
  /** Also wait until the daemon's /status lists every other node (default: same as wait). */
  peers?: boolean;
  timeoutMs?: number;
}

/** Starts one node's daemon (must not be running) and by default waits until it is ready and knows its peers. Updates state.json. */
export async function spawnDaemon(state: LabState, node: LabNode, opts: StartOptions = {}): Promise<void> {
  if (isLabPid(node.pid, state.dir)) throw new Error(`weft daemon ${node.name} already running (pid ${node.pid})`);
  logStart(node.logFile, node.argv);
  node.pid = await spawnDetached(node.argv, node.logFile, daemonEnv(state));
  writeState(state);
  if (opts.wait !== false) await waitDaemonReady(state, node, opts.timeoutMs);
  if (opts.wait !== false && opts.peers !== false) await waitDaemonPeers(state, node, opts.timeoutMs);
}

/**
 * Sends `sig` to a lab process and waits for it to exit; SIGKILL after graceMs if it has not.
 * SIGTERM lets a daemon remove its TUN, routes and subnet file; SIGKILL simulates a crash.
 */
async function stopPid(pid: number, dir: string, sig: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!isLabPid(pid, dir)) return;
  if (sig === 'SIGKILL') {
    sendSignal(pid, 'SIGKILL');
    await waitExit([pid], 5_000);
  } else {
    await terminate([pid], graceMs, sig);
  }
}

export async function stopDaemon(lab: LabRef, node: string, sig: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<void> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  await stopPid(findNode(state, node).pid, state.dir, sig, graceMs);
}

export async function startDaemon(lab: LabRef, node: string, opts: StartOptions = {}): Promise<LabNode> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  const n = findNode(state, node);
  await spawnDaemon(state, n, opts);
  return n;
}

/** Stops a node's daemon (SIGTERM by default, SIGKILL to simulate a crash) and starts it again, waiting for /readyz. */
export async function restartDaemon(lab: LabRef, node: string, opts: StartOptions & { signal?: NodeJS.Signals } = {}): Promise<LabNode> {
  const prefix = prefixOf(lab);
  await stopDaemon(prefix, node, opts.signal ?? 'SIGTERM');
  return startDaemon(prefix, node, opts);
}

/** Signals control (SIGKILL by default) and waits for it to exit. */
export async function killControl(lab: LabRef, sig: NodeJS.Signals = 'SIGKILL', graceMs = 5_000): Promise<void> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  await stopPid(state.control.pid, state.dir, sig, graceMs);
}

/** Starts control again with its original arguments (same state dir) and waits until it listens. */
export async function startControl(lab: LabRef, opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<LabControl> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  await spawnControl(state, opts);
  return state.control;
}
