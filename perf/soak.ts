// Control-plane soak: a 3-node lab carries iperf3 for --minutes while the control plane is killed
// and brought back over and over and the daemons are restarted one at a time, and reports what a
// cluster operator cares about afterwards:
//  - leases lost (a node whose subnet changed across a restart, or that a peer stopped seeing) or
//    granted twice (two nodes holding one subnet at once): both must be 0;
//  - the forwarding gap around each daemon restart (p50/p99), from pings 20 ms apart in a ring of
//    pods, and the largest gap away from daemon restarts (control-plane churn alone must not stop
//    forwarding: the data plane keeps its last-known routes);
//  - the RSS of the daemons and of the control plane at start and end;
//  - iperf3's throughput over the whole soak, per interval.
//
//   node dist/perf/soak.js [--minutes 10] [--registry embedded|etcd] [--backend udp]
//                          [--control-every 20] [--daemon-every 60] [--out perf/results]
//
// embedded: `weft control` is SIGKILLed every --control-every seconds and started again from its
// state dir. etcd: a 3-member etcd cluster, one member SIGKILLed and brought back in turn.
// Not a test (it takes minutes and needs root); the figures go in docs/benchmarks.md.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { BACKEND_TYPES, type BackendType } from '../src/datapath/backends';
import { daemonStatus, killControl, killEtcdMember, labDown, labExec, labUp, mustReadState, restartDaemon, startControl, startEtcdMember } from '../src/lab';
import { isAlive, rssBytes, sleep } from '../src/lab/process';
import { REGISTRIES, type RegistryKind } from '../src/lab/state';

const PING_INTERVAL_S = 0.02;
const NODES = 3;
/** How often the lease views and the RSS are sampled. */
const SAMPLE_EVERY_MS = 2_000;
/** An etcd member stays down this long before it is brought back: long enough for a leader election. */
const ETCD_MEMBER_DOWN_MS = 5_000;

interface Options {
  minutes: number;
  registry: RegistryKind;
  backend: BackendType;
  controlEvery: number;
  daemonEvery: number;
  out: string;
  prefix: string;
}

interface Event {
  /** ms since the soak started */
  t: number;
  kind: 'control-restart' | 'etcd-member-restart' | 'daemon-restart';
  target: string;
  /** How long the restart took until ready (the daemon: /readyz and its peers). */
  ms: number;
  error?: string;
}

interface RssSample {
  t: number;
  role: string;
  pid: number;
  bytes: number;
}

function parse(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      minutes: { type: 'string', default: '10' },
      registry: { type: 'string', default: 'embedded' },
      backend: { type: 'string', default: 'udp' },
      'control-every': { type: 'string', default: '20' },
      'daemon-every': { type: 'string', default: '60' },
      out: { type: 'string', default: 'perf/results' },
      prefix: { type: 'string', default: 'weft-soak-' },
    },
    strict: true,
  });
  const num = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: "${v}" is not a number ≥ ${min}`);
    return n;
  };
  if (!(REGISTRIES as readonly string[]).includes(values.registry!)) throw new Error(`--registry: "${values.registry}" is not one of ${REGISTRIES.join(', ')}`);
  if (!(BACKEND_TYPES as readonly string[]).includes(values.backend!))
    throw new Error(`--backend: "${values.backend}" is not one of ${BACKEND_TYPES.join(', ')}`);
  return {
    minutes: num('minutes', values.minutes!, 0.5),
    registry: values.registry as RegistryKind,
    backend: values.backend as BackendType,
    controlEvery: num('control-every', values['control-every']!, 5),
    daemonEvery: num('daemon-every', values['daemon-every']!, 10),
    out: values.out!,
    prefix: values.prefix!,
  };
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/** Reply times (ms since the epoch) from `ping -D` output: "[1733131234.123456] 64 bytes from …". */
export function replyTimes(out: string): number[] {
  return [...out.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from /gm)].map((m) => Number(m[1]) * 1000);
}

/** The longest silence between consecutive replies that overlaps [from, to] (ms since the epoch). */
export function longestGap(replies: readonly number[], from: number, to: number): number {
  let worst = 0;
  for (let i = 1; i < replies.length; i++) {
    const a = replies[i - 1];
    const b = replies[i];
    if (b >= from && a <= to) worst = Math.max(worst, b - a);
  }
  return worst;
}

interface LeaseView {
  t: number;
  node: string;
  subnet: string | null;
  peers: { subnet: string; publicIp: string }[];
}

interface StatusShape {
  lease?: { subnet: string } | null;
  peers?: { subnet: string; publicIp: string }[];
}

/** What the lease views say went wrong: subnets held twice, and nodes whose lease changed or went missing. */
export function leaseFindings(views: readonly LeaseView[], publicIps: ReadonlyMap<string, string>): { grantedTwice: string[]; lost: string[] } {
  const grantedTwice = new Set<string>();
  const lost = new Set<string>();
  const first = new Map<string, string>();
  // Every node's own lease over time: it must keep the subnet it started with (a restarted
  // daemon renews the lease it holds, as flanneld does from its subnet file).
  for (const v of views) {
    if (!v.subnet) continue;
    const had = first.get(v.node);
    if (had === undefined) first.set(v.node, v.subnet);
    else if (had !== v.subnet) lost.add(`${v.node}: ${had} → ${v.subnet}`);
  }
  // Within one sampling round, no subnet may belong to two nodes, by anyone's view.
  const rounds = new Map<number, LeaseView[]>();
  for (const v of views) rounds.set(v.t, [...(rounds.get(v.t) ?? []), v]);
  for (const round of rounds.values()) {
    const holder = new Map<string, string>();
    const claim = (subnet: string, ip: string, seenBy: string): void => {
      const h = holder.get(subnet);
      if (h !== undefined && h !== ip) grantedTwice.add(`${subnet}: ${h} and ${ip} (seen by ${seenBy})`);
      else holder.set(subnet, ip);
    };
    for (const v of round) {
      if (v.subnet) claim(v.subnet, publicIps.get(v.node)!, v.node);
      for (const p of v.peers) claim(p.subnet, p.publicIp, v.node);
    }
  }
  // At the end every node must see every other node with the subnet that node holds.
  const last = new Map<string, LeaseView>();
  for (const v of views) if (v.subnet) last.set(v.node, v);
  for (const [node, v] of last) {
    for (const [other, ov] of last) {
      if (other === node) continue;
      const ip = publicIps.get(other)!;
      if (!v.peers.some((p) => p.publicIp === ip && p.subnet === ov.subnet)) lost.add(`${node} no longer sees ${other} (${ov.subnet}) at the end`);
    }
  }
  return { grantedTwice: [...grantedTwice], lost: [...lost] };
}

const mib = (b: number): string => (b / 2 ** 20).toFixed(1);

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const ac = new AbortController();
  const onSignal = (): void => ac.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const log = (m: string): void => void process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const seconds = Math.round(o.minutes * 60);
  log(`forming a ${NODES}-node ${o.backend} lab on the ${o.registry} registry (${o.prefix})`);
  await labUp({
    prefix: o.prefix,
    nodes: NODES,
    pods: 1,
    backend: o.backend,
    registry: o.registry,
    ...(o.registry === 'etcd' ? { etcdMembers: 3 } : {}),
    force: true,
    signal: ac.signal,
  });
  try {
    const state = mustReadState(o.prefix);
    const pods = state.nodes.map((n) => state.pods.find((p) => p.node === n.name)!);
    const publicIps = new Map(state.nodes.map((n) => [n.name, n.publicIp]));
    const t0 = Date.now();
    const deadline = t0 + seconds * 1000;

    // Traffic for the whole soak: iperf3 from the first pod to the second, and a ring of pings
    // (pod i → pod i+1) whose replies time every outage.
    log(`iperf3 ${pods[0].name} → ${pods[1].name} and a ping ring for ${seconds} s`);
    const iperfServer = labExec(o.prefix, pods[1].name, ['iperf3', '-s', '-1', '-p', '5201'], { timeoutMs: (seconds + 60) * 1000, signal: ac.signal });
    await sleep(500);
    const iperf = labExec(
      o.prefix,
      pods[0].name,
      ['iperf3', '-c', pods[1].ip, '-p', '5201', '-t', String(seconds), '-i', '5', '-J', '--connect-timeout', '5000'],
      {
        timeoutMs: (seconds + 60) * 1000,
        signal: ac.signal,
        maxOutput: 16 << 20,
      },
    );
    const pings = pods.map((from, i) =>
      // Stopped by the timeout, not by a deadline (-w): with a deadline iputils ping exits at the
      // first ICMP error, and a restarting node's pod gets "network unreachable" while its TUN is
      // gone. The count only bounds it; what was printed until the kill is kept.
      labExec(
        o.prefix,
        from.name,
        [
          'ping',
          '-D',
          '-n',
          '-i',
          String(PING_INTERVAL_S),
          '-W',
          '1',
          '-c',
          String(Math.round((2 * seconds) / PING_INTERVAL_S)),
          pods[(i + 1) % pods.length].ip,
        ],
        {
          timeoutMs: (seconds + 1) * 1000,
          signal: ac.signal,
          maxOutput: 32 << 20,
        },
      ),
    );

    // Sampling: every daemon's own lease and its view of the others, and every process's RSS.
    const views: LeaseView[] = [];
    const rss: RssSample[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling && !ac.signal.aborted) {
        const t = Date.now() - t0;
        const s = mustReadState(o.prefix);
        for (const n of s.nodes) {
          if (isAlive(n.pid)) rss.push({ t, role: n.name, pid: n.pid, bytes: rssBytes(n.pid) });
          try {
            const st = (await daemonStatus(o.prefix, n.name)) as StatusShape;
            views.push({ t, node: n.name, subnet: st.lease?.subnet ?? null, peers: (st.peers ?? []).map((p) => ({ subnet: p.subnet, publicIp: p.publicIp })) });
          } catch {
            // Restarting: no view this round.
          }
        }
        const planes = s.control.members ?? [{ name: 'control', pid: s.control.pid }];
        for (const c of planes) if (isAlive(c.pid)) rss.push({ t, role: c.name, pid: c.pid, bytes: rssBytes(c.pid) });
        await sleep(SAMPLE_EVERY_MS);
      }
    })();

    // The churn, one action at a time (each rewrites the lab's state file): the control plane
    // every --control-every s, a daemon every --daemon-every s, in turn.
    const events: Event[] = [];
    let nextControl = t0 + o.controlEvery * 1000;
    let nextDaemon = t0 + o.daemonEvery * 1000 + 3_000;
    let controlTurn = 0;
    let daemonTurn = 0;
    while (!ac.signal.aborted) {
      const next = Math.min(nextControl, nextDaemon);
      if (next > deadline - 10_000) break;
      await sleep(Math.max(0, next - Date.now()));
      const t = Date.now() - t0;
      if (next === nextControl) {
        nextControl += o.controlEvery * 1000;
        const start = Date.now();
        try {
          if (o.registry === 'etcd') {
            const member = (controlTurn++ % 3) + 1;
            await killEtcdMember(o.prefix, member, 'SIGKILL');
            await sleep(ETCD_MEMBER_DOWN_MS);
            await startEtcdMember(o.prefix, member);
            events.push({ t, kind: 'etcd-member-restart', target: `member ${member}`, ms: Date.now() - start });
          } else {
            await killControl(o.prefix, 'SIGKILL');
            await startControl(o.prefix);
            events.push({ t, kind: 'control-restart', target: 'weft control', ms: Date.now() - start });
          }
        } catch (e) {
          events.push({ t, kind: o.registry === 'etcd' ? 'etcd-member-restart' : 'control-restart', target: '?', ms: Date.now() - start, error: String(e) });
        }
      } else {
        nextDaemon += o.daemonEvery * 1000;
        const node = state.nodes[daemonTurn++ % state.nodes.length].name;
        const start = Date.now();
        try {
          await restartDaemon(o.prefix, node, { signal: 'SIGTERM' });
          events.push({ t, kind: 'daemon-restart', target: node, ms: Date.now() - start });
        } catch (e) {
          events.push({ t, kind: 'daemon-restart', target: node, ms: Date.now() - start, error: String(e) });
        }
      }
      log(`${events.at(-1)!.kind} ${events.at(-1)!.target}: ${events.at(-1)!.ms} ms${events.at(-1)!.error ? ` (${events.at(-1)!.error})` : ''}`);
    }

    log('waiting for the traffic to finish');
    const [iperfOut, ...pingOuts] = await Promise.all([iperf, ...pings]);
    await iperfServer;
    sampling = false;
    await sampler;

    // Forwarding gaps: a restart of node k is timed on the ring's stream into k's pod (its
    // requests enter through k's daemon and its replies leave through it).
    const replies = pingOuts.map((r) => replyTimes(r.stdout));
    const restartGaps: { node: string; gapMs: number }[] = [];
    const busy: [number, number][] = [];
    for (const e of events.filter((x) => x.kind === 'daemon-restart')) {
      const k = state.nodes.findIndex((n) => n.name === e.target);
      const stream = replies[(k - 1 + NODES) % NODES];
      const from = t0 + e.t;
      const to = from + e.ms + 10_000;
      busy.push([from - 1_000, to]);
      restartGaps.push({ node: e.target, gapMs: longestGap(stream, from, to) });
    }
    // Away from daemon restarts: the largest silence in any stream, control-plane churn included.
    let quietWorst = 0;
    for (const stream of replies) {
      for (let i = 1; i < stream.length; i++) {
        const a = stream[i - 1];
        const b = stream[i];
        if (busy.some(([f, t]) => b >= f && a <= t)) continue;
        quietWorst = Math.max(quietWorst, b - a);
      }
    }
    const findings = leaseFindings(views, publicIps);

    let intervals: number[] = [];
    let totalBps = 0;
    let iperfError: string | undefined;
    try {
      const j = JSON.parse(iperfOut.stdout) as {
        error?: string;
        intervals?: { sum: { bits_per_second: number } }[];
        end?: { sum_received?: { bits_per_second?: number } };
      };
      intervals = (j.intervals ?? []).map((x) => x.sum.bits_per_second);
      totalBps = j.end?.sum_received?.bits_per_second ?? 0;
      iperfError = j.error;
    } catch {
      iperfError = `iperf3 exit ${iperfOut.code}: ${(iperfOut.stderr || iperfOut.stdout).trim().slice(0, 300)}`;
    }

    const roles = [...new Set(rss.map((r) => r.role))];
    const rssRows = roles.map((role) => {
      const xs = rss.filter((r) => r.role === role);
      return {
        role,
        startBytes: xs[0].bytes,
        endBytes: xs.at(-1)!.bytes,
        maxBytes: Math.max(...xs.map((r) => r.bytes)),
        instances: new Set(xs.map((r) => r.pid)).size,
      };
    });
    const gaps = restartGaps.map((g) => g.gapMs);
    const result = {
      date: new Date(t0).toISOString(),
      command: ['node', path.relative(process.cwd(), process.argv[1]), ...process.argv.slice(2)].join(' '),
      machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model.trim(), kernel: os.release(), node: process.version },
      options: o,
      leasesGrantedTwice: findings.grantedTwice,
      leasesLost: findings.lost,
      restartGapP50Ms: quantile(gaps, 0.5),
      restartGapP99Ms: quantile(gaps, 0.99),
      restartGaps,
      largestGapAwayFromDaemonRestartsMs: quietWorst,
      events,
      rss: rssRows,
      iperf: { totalBps, minIntervalBps: intervals.length ? Math.min(...intervals) : 0, intervals: intervals.length, error: iperfError },
      pingsReceived: replies.map((r) => r.length),
    };

    const churn = events.filter((e) => e.kind !== 'daemon-restart');
    const md = [
      `Soak, ${result.date.slice(0, 10)}: \`${result.command}\` (${result.machine.cpus} CPUs, ${result.machine.cpu}, Linux ${result.machine.kernel}, Node ${result.machine.node}); a ${NODES}-node ${o.backend} lab on the ${o.registry} registry for ${o.minutes} min`,
      '',
      '| what | result |',
      '|---|---|',
      `| leases granted twice | ${findings.grantedTwice.length}${findings.grantedTwice.length ? `: ${findings.grantedTwice.slice(0, 3).join('; ')}` : ''} |`,
      `| leases lost | ${findings.lost.length}${findings.lost.length ? `: ${findings.lost.slice(0, 3).join('; ')}` : ''} |`,
      `| ${o.registry === 'etcd' ? 'etcd member restarts (SIGKILL, 5 s down)' : 'weft control restarts (SIGKILL)'} | ${churn.length} (${churn.filter((e) => e.error).length} failed), median ${quantile(
        churn.map((e) => e.ms),
        0.5,
      )} ms until ready |`,
      `| daemon restarts (SIGTERM, one at a time) | ${restartGaps.length} (${events.filter((e) => e.kind === 'daemon-restart' && e.error).length} failed), median ${quantile(
        events.filter((e) => e.kind === 'daemon-restart').map((e) => e.ms),
        0.5,
      )} ms until ready with peers |`,
      `| forwarding gap around a daemon restart, p50 / p99 | ${result.restartGapP50Ms.toFixed(0)} / ${result.restartGapP99Ms.toFixed(0)} ms (pings ${PING_INTERVAL_S * 1000} ms apart) |`,
      `| largest forwarding gap away from daemon restarts | ${quietWorst.toFixed(0)} ms |`,
      `| iperf3 over the soak | ${(totalBps / 1e9).toFixed(2)} Gbit/s; lowest 5 s interval ${(result.iperf.minIntervalBps / 1e9).toFixed(2)}${iperfError ? `; error: ${iperfError}` : ''} |`,
      ...rssRows.map(
        (r) =>
          `| RSS ${r.role} (start → end, max; ${r.instances} process${r.instances === 1 ? '' : 'es'}) | ${mib(r.startBytes)} → ${mib(r.endBytes)} MiB, max ${mib(r.maxBytes)} |`,
      ),
      '',
    ].join('\n');
    process.stdout.write(md);
    await fs.mkdir(o.out, { recursive: true });
    await fs.writeFile(path.join(o.out, `soak-${o.registry}.md`), md);
    await fs.writeFile(path.join(o.out, `soak-${o.registry}.json`), JSON.stringify(result, null, 2) + '\n');
    if (findings.grantedTwice.length || findings.lost.length) process.exitCode = 1;
  } finally {
    log('removing the lab');
    await labDown(o.prefix);
  }
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`soak: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  });
}
