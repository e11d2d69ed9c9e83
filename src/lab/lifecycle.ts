// Lifecycle of the programs the lab runs: `weft control` (or one or three etcd members) in the
// switch namespace and one `weft daemon` per node namespace. Exported for tests that stop, kill
// and restart them.
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { healthUrls, probe, type HttpProbe } from './probe';
import { cmdline, isAlive, signal as sendSignal, sleep, spawnDetached, tail, terminate, waitExit } from './process';
import { etcdArgv, initialCluster } from './etcd';
import {
  CONTROL_METRICS_PORT,
  ETCD_MEMBER_PORTS,
  ETCD_PEER_PORT,
  etcdEndpoints,
  findEtcdMember,
  findNode,
  mustReadState,
  prefixOf,
  writeState,
  type LabControl,
  type LabEtcdMember,
  type LabNode,
  type LabRef,
  type LabState,
} from './state';

export const DAEMON_READY_TIMEOUT_MS = 30_000;
export const CONTROL_READY_TIMEOUT_MS = 20_000;

/** Keeps the members of two labs' clusters from joining each other (etcd refuses a peer with another token). */
export const etcdClusterToken = (prefix: string): string => `weft-lab-${prefix}`;

/**
 * The members of a multi-member etcd lab (pids 0, not started): named etcd1…, on control's address
 * with the ports of ETCD_MEMBER_PORTS, each with a data dir under `c.stateDir` and a log of its own.
 * Every member's --initial-cluster lists them all, so they form one cluster from the start.
 */
export function etcdMembersFor(
  state: Pick<LabState, 'nodeBin' | 'weftJs' | 'options' | 'prefix' | 'dir'>,
  c: Pick<LabControl, 'ns' | 'ip' | 'stateDir'>,
  count: number,
): LabEtcdMember[] {
  if (count < 2 || count > ETCD_MEMBER_PORTS.length) throw new Error(`a multi-member etcd lab has 2..${ETCD_MEMBER_PORTS.length} members, not ${count}`);
  const parts = ETCD_MEMBER_PORTS.slice(0, count).map((p, k) => {
    const name = `etcd${k + 1}`;
    return {
      name,
      index: k + 1,
      address: `${c.ip}:${p.client}`,
      clientPort: p.client,
      peerPort: p.peer,
      peerUrl: `http://${c.ip}:${p.peer}`,
      dataDir: join(c.stateDir, name),
      logFile: join(state.dir, 'logs', `${name}.log`),
    };
  });
  const cluster = initialCluster(parts);
  return parts.map((m) => ({
    ...m,
    pid: 0,
    argv: [
      'ip',
      'netns',
      'exec',
      c.ns,
      ...etcdArgv({
        name: m.name,
        dataDir: m.dataDir,
        clientUrls: `http://${m.address}`,
        peerUrl: m.peerUrl,
        initialCluster: cluster,
        initialClusterToken: etcdClusterToken(state.prefix),
        extraArgs: state.options.controlArgs,
      }),
    ],
  }));
}

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
        initialClusterToken: etcdClusterToken(state.prefix),
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
    ...(o.prometheus ? ['--metrics-listen', `${c.ip}:${CONTROL_METRICS_PORT}`] : []),
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
          // Every member: the daemon's client fails over to the next when one does not answer,
          // as flanneld's does with its --etcd-endpoints list.
          '--etcd-endpoints',
          etcdEndpoints(state.control).join(','),
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
    // Prometheus scrapes from the switch namespace, through the node's underlay address; every
    // address rather than only that one, so the lab's own probes (and `weft status` run inside the
    // namespace) keep finding it on 127.0.0.1.
    ...(state.options.prometheus ? ['--healthz-ip', '0.0.0.0'] : []),
    // Every lab daemon its own (they share this host's file system); "" where none is recorded.
    '--monitor-socket',
    n.monitorSocket ?? '',
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

/**
 * Waits until an etcd member's /health says true: it sees a leader and a read through raft
 * succeeds, so a restarted member has rejoined rather than merely listening.
 */
export async function waitEtcdMemberHealthy(state: LabState, m: LabEtcdMember, timeoutMs = CONTROL_READY_TIMEOUT_MS, outer?: AbortSignal): Promise<void> {
  const url = `http://${m.address}/health`;
  const { results, died } = await probeWhileAlive(
    m.pid,
    (signal) =>
      probe(
        state.control.ns,
        { mode: 'http', targets: [url], untilOk: true, deadlineMs: timeoutMs, intervalMs: 200, perTryTimeoutMs: 1000 },
        { nodeBin: state.nodeBin, signal },
      ),
    outer,
  );
  if (outer?.aborted) throw new Error('interrupted');
  if (died) throw failWithLog(`etcd member ${m.name} (pid ${m.pid}) exited before becoming healthy`, m.logFile, 'process gone');
  if (!results?.some((r) => r.ok)) {
    throw failWithLog(`etcd member ${m.name} not healthy at ${url} after ${timeoutMs / 1000}s`, m.logFile, describeProbe(results));
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

/** killControl/startControl act on one process; a multi-member lab has several, each its own. */
function refuseMembers(state: LabState, what: string): void {
  const ms = state.control.members;
  if (ms) {
    throw new Error(`lab "${state.prefix}" runs ${ms.length} etcd members, not one control process: ${what} one with ${what}EtcdMember(lab, 1..${ms.length})`);
  }
}

/** Starts control (must not be running) and waits until it accepts connections. Updates state.json. */
export async function spawnControl(state: LabState, opts: { wait?: boolean; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
  refuseMembers(state, 'start');
  const c = state.control;
  if (isLabPid(c.pid, state.dir)) throw new Error(`weft control already running (pid ${c.pid})`);
  logStart(c.logFile, c.argv);
  c.pid = await spawnDetached(c.argv, c.logFile, daemonEnv(state));
  writeState(state);
  if (opts.wait !== false) await waitControlReady(state, opts.timeoutMs, opts.signal);
}

/** Starts one etcd member (must not be running) and by default waits until it is healthy. Updates state.json. */
export async function spawnEtcdMember(
  state: LabState,
  m: LabEtcdMember,
  opts: { wait?: boolean; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  if (isLabPid(m.pid, state.dir)) throw new Error(`etcd member ${m.name} already running (pid ${m.pid})`);
  logStart(m.logFile, m.argv);
  m.pid = await spawnDetached(m.argv, m.logFile, daemonEnv(state));
  writeState(state);
  if (opts.wait !== false) await waitEtcdMemberHealthy(state, m, opts.timeoutMs, opts.signal);
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

/**
 * Signals control (SIGKILL by default) and waits for it to exit: weft control, or a one-member
 * lab's etcd. A lab of three etcd members refuses (killEtcdMember picks the member).
 */
export async function killControl(lab: LabRef, sig: NodeJS.Signals = 'SIGKILL', graceMs = 5_000): Promise<void> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  refuseMembers(state, 'kill');
  await stopPid(state.control.pid, state.dir, sig, graceMs);
}

/**
 * Signals one member of a multi-member etcd lab (SIGKILL by default, a crash) and waits for it to
 * exit; `member` is its index (1-based) or name ("etcd2"). Its data dir stays for startEtcdMember.
 */
export async function killEtcdMember(lab: LabRef, member: number | string, sig: NodeJS.Signals = 'SIGKILL', graceMs = 5_000): Promise<LabEtcdMember> {
  const state = mustReadState(prefixOf(lab));
  const m = findEtcdMember(state, member);
  await stopPid(m.pid, state.dir, sig, graceMs);
  return m;
}

/**
 * Starts a member again with its original arguments and data dir, and by default waits until it
 * is healthy, i.e. back in the cluster following the leader. etcd ignores --initial-cluster-state
 * once the data dir holds a WAL, so the same argv that formed the cluster rejoins it.
 */
export async function startEtcdMember(lab: LabRef, member: number | string, opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<LabEtcdMember> {
  const state = mustReadState(prefixOf(lab));
  const m = findEtcdMember(state, member);
  await spawnEtcdMember(state, m, opts);
  return m;
}

/** Starts control again with its original arguments (same state dir) and waits until it listens; a multi-member etcd lab refuses. */
export async function startControl(lab: LabRef, opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<LabControl> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  await spawnControl(state, opts);
  return state.control;
}
