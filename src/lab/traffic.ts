// Running commands and test traffic inside lab namespaces: exec, ping between pods, iperf3.
import { nsExists } from './netns';
import { run, sleep, type RunOptions } from './process';
import { addressOf, mustReadState, prefixOf, targetNs, type LabRef } from './state';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs argv inside a lab namespace ("n1", "n1/p1", "ul") and captures its output. Bounded by
 * opts.timeoutMs (default 30 s); a timeout gives code 124.
 */
export async function labExec(lab: LabRef, target: string, argv: string[], opts: RunOptions = {}): Promise<ExecResult> {
  const prefix = prefixOf(lab);
  const ns = targetNs(prefix, target);
  if (!nsExists(ns)) throw new Error(`lab target ${target}: namespace ${ns} does not exist`);
  if (argv.length === 0) throw new Error('labExec: empty command');
  return run('ip', ['netns', 'exec', ns, ...argv], opts);
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** A target's address, or the argument itself when it already is an IPv4 address. */
export function resolveAddress(lab: LabRef, target: string): string {
  const prefix = prefixOf(lab);
  return IPV4.test(target) ? target : addressOf(mustReadState(prefix), target);
}

export interface PingOptions {
  count?: number;
  /** Seconds between echo requests (ping -i; below 0.2 needs root, which the lab has). */
  intervalS?: number;
  /** Seconds to wait for each reply (ping -W). */
  waitS?: number;
  /** Extra ping flags, e.g. ['-s', '1400', '-M', 'do'] or ['-t', '1']. */
  args?: string[];
}

export interface PingResult {
  from: string;
  to: string;
  dst: string;
  transmitted: number;
  received: number;
  /** Percent, 0..100. */
  loss: number;
  rttMinMs: number | null;
  rttAvgMs: number | null;
  rttMaxMs: number | null;
  ok: boolean;
  code: number;
  output: string;
}

/** Parses iputils ping's summary lines. */
export function parsePing(out: string): Pick<PingResult, 'transmitted' | 'received' | 'loss' | 'rttMinMs' | 'rttAvgMs' | 'rttMaxMs'> {
  const s = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(out);
  const l = /([\d.]+)% packet loss/.exec(out);
  const r = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/[\d.]+ ms/.exec(out);
  const transmitted = s ? Number(s[1]) : 0;
  const received = s ? Number(s[2]) : 0;
  return {
    transmitted,
    received,
    loss: l ? Number(l[1]) : 100,
    rttMinMs: r ? Number(r[1]) : null,
    rttAvgMs: r ? Number(r[2]) : null,
    rttMaxMs: r ? Number(r[3]) : null,
  };
}

/**
 * Pings `to` (a target such as "n2/p1", or an IPv4 address) from inside `from`. ok means every
 * request got a reply.
 */
export async function pingPair(lab: LabRef, from: string, to: string, opts: PingOptions = {}): Promise<PingResult> {
  const prefix = prefixOf(lab);
  const count = opts.count ?? 3;
  const intervalS = opts.intervalS ?? 0.2;
  const waitS = opts.waitS ?? 2;
  const dst = resolveAddress(prefix, to);
  // -w bounds the whole run even if replies trickle in.
  const deadlineS = Math.ceil(count * intervalS + waitS + 1);
  const argv = ['ping', '-n', '-c', String(count), '-i', String(intervalS), '-W', String(waitS), '-w', String(deadlineS), ...(opts.args ?? []), dst];
  const r = await labExec(prefix, from, argv, { timeoutMs: (deadlineS + 5) * 1000 });
  const p = parsePing(r.stdout);
  return { from, to, dst, ...p, ok: r.code === 0 && p.received === count, code: r.code, output: (r.stdout + r.stderr).trim() };
}

/**
 * Pings from every pod to every pod on another node (every ordered pair of nodes crosses the
 * overlay), one pair at a time. `onResult` sees each result as it comes (progress lines).
 */
export async function pingMatrix(lab: LabRef, opts: PingOptions & { signal?: AbortSignal; onResult?: (r: PingResult) => void } = {}): Promise<PingResult[]> {
  const state = mustReadState(prefixOf(lab));
  const results: PingResult[] = [];
  for (const a of state.pods) {
    for (const b of state.pods) {
      if (a.node === b.node) continue;
      if (opts.signal?.aborted) throw new Error(`interrupted (the lab stays up: weft lab down --prefix ${state.prefix})`);
      const r = await pingPair(state.prefix, a.name, b.name, { count: 3, waitS: 2, ...opts });
      opts.onResult?.(r);
      results.push(r);
    }
  }
  return results;
}

/** The failed pairs of a ping matrix, one readable line (and ping's output) each. */
export function pingFailures(results: readonly PingResult[]): string[] {
  return results.filter((r) => !r.ok).map((r) => `${r.from} → ${r.to} (${r.dst}): ${r.received}/${r.transmitted}\n${r.output}`);
}

export interface IperfOptions {
  seconds?: number;
  port?: number;
  /** Parallel streams (-P). */
  streams?: number;
  /** Server sends, client receives (-R). */
  reverse?: boolean;
  /** UDP at this target bitrate (e.g. "1G") instead of TCP. */
  udpBitrate?: string;
  /** Extra client flags. */
  args?: string[];
}

export interface IperfResult {
  client: string;
  server: string;
  dst: string;
  seconds: number;
  protocol: 'tcp' | 'udp';
  /** Receiver-side throughput in bits per second (what arrived). */
  bitsPerSecond: number;
  sentBitsPerSecond: number;
  /** Bytes the receiver got (TCP); for UDP, what the client's summary reports. */
  receivedBytes: number;
  /** TCP retransmissions (sender side), null for UDP. */
  retransmits: number | null;
  /** UDP loss percent, null for TCP. */
  lostPercent: number | null;
  ok: boolean;
  error?: string;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bits_per_second?: number; retransmits?: number };
    sum_received?: { bits_per_second?: number; bytes?: number };
    sum?: { bits_per_second?: number; bytes?: number; lost_percent?: number };
  };
}

/** Reads the summary of `iperf3 -J` client output. */
export function parseIperf3(
  json: string,
): Pick<IperfResult, 'bitsPerSecond' | 'sentBitsPerSecond' | 'receivedBytes' | 'retransmits' | 'lostPercent'> & { error?: string } {
  const j = JSON.parse(json) as IperfJson;
  const end = j.end ?? {};
  if (end.sum_received) {
    return {
      bitsPerSecond: end.sum_received.bits_per_second ?? 0,
      sentBitsPerSecond: end.sum_sent?.bits_per_second ?? 0,
      receivedBytes: end.sum_received.bytes ?? 0,
      retransmits: end.sum_sent?.retransmits ?? null,
      lostPercent: null,
      error: j.error,
    };
  }
  // UDP tests report one "sum" (receiver-side figures merged in by the server's reply).
  return {
    bitsPerSecond: end.sum?.bits_per_second ?? 0,
    sentBitsPerSecond: end.sum?.bits_per_second ?? 0,
    receivedBytes: end.sum?.bytes ?? 0,
    retransmits: null,
    lostPercent: end.sum?.lost_percent ?? null,
    error: j.error,
  };
}

/**
 * Waits until something in namespace `ns` listens on TCP `port` (an iperf3 server listens there
 * for its control connection, UDP tests included); false after `timeoutMs`.
 */
export async function waitTcpListening(ns: string, port: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ss = await run('ip', ['netns', 'exec', ns, 'ss', '-Hltn', 'sport', '=', `:${port}`], { timeoutMs: 5_000 });
    if (ss.stdout.trim()) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

/**
 * One iperf3 run from `client` to `server` (targets such as "n1/p1", "n2/p1"). The server runs
 * with -1 (one test, then exit) and is killed if the client never reaches it; both ends are
 * bounded by timeouts.
 */
export async function iperf3Pair(lab: LabRef, client: string, server: string, opts: IperfOptions = {}): Promise<IperfResult> {
  const prefix = prefixOf(lab);
  const seconds = opts.seconds ?? 3;
  const port = opts.port ?? 5201;
  const dst = resolveAddress(prefix, server);
  const base = { client, server, dst, seconds, protocol: (opts.udpBitrate ? 'udp' : 'tcp') as 'tcp' | 'udp' };
  const fail = (error: string): IperfResult => ({
    ...base,
    bitsPerSecond: 0,
    sentBitsPerSecond: 0,
    receivedBytes: 0,
    retransmits: null,
    lostPercent: null,
    ok: false,
    error,
  });

  const serverNs = targetNs(prefix, server);
  const ac = new AbortController();
  const serverRun = labExec(prefix, server, ['iperf3', '-s', '-1', '-p', String(port)], { timeoutMs: (seconds + 30) * 1000, signal: ac.signal });
  try {
    // Wait for the listening socket rather than for the server's banner, which stdio buffering can delay.
    if (!(await waitTcpListening(serverNs, port))) return fail(`iperf3 server in ${server} not listening on ${port} after 5 s`);
    const argv = [
      'iperf3',
      '-c',
      dst,
      '-p',
      String(port),
      '-t',
      String(seconds),
      '-J',
      '--connect-timeout',
      '3000',
      ...(opts.streams ? ['-P', String(opts.streams)] : []),
      ...(opts.reverse ? ['-R'] : []),
      ...(opts.udpBitrate ? ['-u', '-b', opts.udpBitrate] : []),
      ...(opts.args ?? []),
    ];
    const r = await labExec(prefix, client, argv, { timeoutMs: (seconds + 20) * 1000 });
    let parsed: ReturnType<typeof parseIperf3>;
    try {
      parsed = parseIperf3(r.stdout);
    } catch {
      return fail(`iperf3 client exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
    }
    if (parsed.error || r.code !== 0) return { ...base, ...parsed, ok: false, error: parsed.error ?? `iperf3 client exit ${r.code}` };
    return { ...base, ...parsed, ok: parsed.bitsPerSecond > 0 };
  } finally {
    // Normally the -1 server has already exited; this covers the paths where the client never connected.
    const done = await Promise.race([serverRun.then(() => true), sleep(2_000).then(() => false)]);
    if (!done) ac.abort();
    await serverRun;
  }
}

export function formatBps(bps: number): string {
  if (bps >= 1e9) return `${(bps / 1e9).toFixed(2)} Gbit/s`;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(1)} kbit/s`;
  return `${bps.toFixed(0)} bit/s`;
}
