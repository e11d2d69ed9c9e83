// Control-plane scale, side by side in one run: the embedded registry (a real `weft control`
// process, reached over gRPC as daemons reach it) and etcd (a real etcd member, reached directly
// as `weft daemon --etcd-endpoints` does), each with N simulated nodes.
//
//   node dist/perf/registry-scale.js [--nodes 1000] [--rounds 5] [--registries embedded,etcd] [--out perf/results]
//
// Per registry:
//  - acquisition: N nodes, each its own client connection, acquire at once; the wall time until
//    the last lease is granted and each acquire's latency.
//  - watch set-up: every node opens its watch from revision 0 (what a daemon does at start); the
//    time until all N have their opening snapshot.
//  - fan-out: one more node joins (or leaves); the time from the call until each of the N
//    watchers has the event, per round. All N clients live in this one Node process, so the tail
//    includes this process draining N messages: it is an upper bound on what each node sees.
//  - the server process's RSS with N watches open.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { GrpcRegistry } from '../src/control/client';
import { ensureNetworkConfig } from '../src/control/etcd/netconf';
import { EtcdRegistry } from '../src/control/etcd/registry';
import type { Lease, Registry, WatchHandle } from '../src/control/registry';
import { etcdArgv, waitEtcdReady } from '../src/lab/etcd';
import { freeLoopbackPort as freePort } from '../src/lab/ports';
import { rssBytes } from '../src/lab/process';

const REGISTRIES = ['embedded', 'etcd'] as const;
type Kind = (typeof REGISTRIES)[number];
// A /8 cut into /24s: 65,534 subnets, so N nodes never run the range dry.
const NET_CONF = JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'udp' } });

interface Result {
  registry: Kind;
  nodes: number;
  acquireWallMs: number;
  acquireP50Ms: number;
  acquireP99Ms: number;
  acquireMaxMs: number;
  distinct: number;
  watchSetupMs: number;
  fanoutP50Ms: number[];
  fanoutP99Ms: number[];
  fanoutMaxMs: number[];
  serverRssMiB: number;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

const rssMiB = (pid: number): number => rssBytes(pid) / 2 ** 20;

interface Server {
  pid: number;
  client(): Registry;
  stop(): Promise<void>;
}

async function waitPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
}

async function startServer(kind: Kind, dir: string, nodes: number): Promise<Server> {
  const port = await freePort();
  if (kind === 'embedded') {
    const conf = path.join(dir, 'net-conf.json');
    await fs.writeFile(conf, NET_CONF);
    const weft = path.join(__dirname, '..', '..', 'bin', 'weft.js');
    const child = spawn(
      process.execPath,
      [
        weft,
        'control',
        '--listen',
        `127.0.0.1:${port}`,
        '--state-dir',
        path.join(dir, 'state'),
        '--net-config-path',
        conf,
        '--log-level',
        'warn',
        // Every simulated node watches from this one address, which the per-client cap would
        // otherwise count as one client.
        '--max-watches-per-client',
        String(nodes + 1),
      ],
      {
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    await waitPort(port, 20_000);
    return { pid: child.pid!, client: () => new GrpcRegistry(`127.0.0.1:${port}`, { deadlineMs: 60_000 }), stop: () => stopChild(child) };
  }
  const peer = await freePort();
  const argv = etcdArgv({
    name: 'perf',
    dataDir: path.join(dir, 'etcd'),
    clientUrls: `http://127.0.0.1:${port}`,
    peerUrl: `http://127.0.0.1:${peer}`,
    initialCluster: `perf=http://127.0.0.1:${peer}`,
    initialClusterToken: `weft-perf-${process.pid}`,
  });
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'ignore'] });
  const endpoint = `http://127.0.0.1:${port}`;
  await waitEtcdReady(endpoint, 20_000);
  await ensureNetworkConfig({ endpoints: [endpoint] }, NET_CONF);
  return { pid: child.pid!, client: () => new EtcdRegistry({ endpoints: [endpoint], deadlineMs: 60_000 }), stop: () => stopChild(child) };
}

/** Simulated node i's underlay address: 172.16.0.0/12 has room for a million. */
function nodeIp(i: number): string {
  const n = (172 << 24) | (16 << 16) | (i + 1);
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

async function measure(kind: Kind, nodes: number, rounds: number, log: (m: string) => void): Promise<Result> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `weft-scale-${kind}-`));
  const server = await startServer(kind, dir, nodes);
  const clients: Registry[] = [];
  const watches: WatchHandle[] = [];
  try {
    for (let i = 0; i <= nodes; i++) clients.push(server.client());
    // Connections up before the clock starts: the figure is the registry's, not TCP set-up's.
    await Promise.all(clients.map((c) => c.config()));

    log(`${kind}: ${nodes} nodes acquiring at once`);
    const lat: number[] = [];
    const t0 = performance.now();
    const grants = await Promise.all(
      clients.slice(0, nodes).map(async (c, i) => {
        const s = performance.now();
        const l = await c.acquire({ publicIp: nodeIp(i) });
        lat.push(performance.now() - s);
        return l;
      }),
    );
    const acquireWallMs = performance.now() - t0;
    const distinct = new Set(grants.map((g: Lease) => g.subnet)).size;
    if (distinct !== nodes) throw new Error(`${kind}: ${nodes} acquires gave only ${distinct} distinct subnets`);

    log(`${kind}: ${nodes} watches from revision 0`);
    // Each watcher's view: subnet → holder; `pending` resolves when a watched subnet changes.
    const seen: Array<Map<string, number>> = [];
    let snapshots = 0;
    let allSnap: () => void = () => undefined;
    const snapDone = new Promise<void>((r) => (allSnap = r));
    const w0 = performance.now();
    for (let i = 0; i < nodes; i++) {
      const m = new Map<string, number>();
      seen.push(m);
      let first = true;
      watches.push(
        clients[i].watch(
          0,
          (b) => {
            const now = performance.now();
            if (first) {
              first = false;
              if (++snapshots === nodes) allSnap();
            }
            for (const e of b.events) m.set(`${e.type} ${e.lease.subnet}`, now);
          },
          (e) => log(`${kind}: watch ${i} failed: ${e.message}`),
        ),
      );
    }
    await snapDone;
    const watchSetupMs = performance.now() - w0;
    const serverRssMiB = rssMiB(server.pid);

    const p50: number[] = [];
    const p99: number[] = [];
    const max: number[] = [];
    const joiner = clients[nodes];
    for (let r = 0; r < rounds; r++) {
      // Alternate a join and a leave: both are one key change every watcher must hear about.
      const s = performance.now();
      let key: string;
      if (r % 2 === 0) {
        const l = await joiner.acquire({ publicIp: nodeIp(nodes) });
        key = `added ${l.subnet}`;
      } else {
        const { leases } = await joiner.list();
        const l = leases.find((x) => x.publicIp === nodeIp(nodes))!;
        await joiner.revoke(l);
        key = `removed ${l.subnet}`;
      }
      const deadline = Date.now() + 60_000;
      while (seen.some((m) => !m.has(key))) {
        if (Date.now() > deadline) throw new Error(`${kind}: round ${r}: not every watcher saw ${key}`);
        await new Promise((res) => setTimeout(res, 5));
      }
      const d = seen.map((m) => m.get(key)! - s);
      for (const m of seen) m.delete(key);
      p50.push(quantile(d, 0.5));
      p99.push(quantile(d, 0.99));
      max.push(Math.max(...d));
      log(`${kind}: fan-out round ${r + 1}/${rounds}: p50 ${quantile(d, 0.5).toFixed(1)} ms, max ${Math.max(...d).toFixed(1)} ms`);
    }
    return {
      registry: kind,
      nodes,
      acquireWallMs,
      acquireP50Ms: quantile(lat, 0.5),
      acquireP99Ms: quantile(lat, 0.99),
      acquireMaxMs: Math.max(...lat),
      distinct,
      watchSetupMs,
      fanoutP50Ms: p50,
      fanoutP99Ms: p99,
      fanoutMaxMs: max,
      serverRssMiB,
    };
  } finally {
    for (const w of watches) w.close();
    for (const c of clients) c.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const f1 = (x: number): string => x.toFixed(1);
const range = (xs: number[]): string => `${f1(median(xs))} (${f1(Math.min(...xs))}–${f1(Math.max(...xs))})`;

export function formatTable(results: Result[], rounds: number): string {
  const rows = results.map(
    (r) =>
      `| ${r.registry === 'embedded' ? 'embedded (weft control, gRPC)' : 'etcd 3.4 (direct)'} | ${r.nodes} | ${f1(r.acquireWallMs)} | ${f1(r.acquireP50Ms)} / ${f1(r.acquireP99Ms)} | ${f1(r.watchSetupMs)} | ${range(r.fanoutP50Ms)} | ${range(r.fanoutP99Ms)} | ${range(r.fanoutMaxMs)} | ${f1(r.serverRssMiB)} |`,
  );
  return [
    `| registry | nodes | all acquired, ms | acquire p50 / p99, ms | all watching, ms | fan-out p50, ms | fan-out p99, ms | fan-out max, ms | server RSS, MiB |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|---:|`,
    ...rows,
    '',
    `Fan-out: median of ${rounds} rounds (min–max), one lease joining or leaving per round, time from the call to each watcher's receipt.`,
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string', default: '1000' },
      rounds: { type: 'string', default: '5' },
      registries: { type: 'string', default: REGISTRIES.join(',') },
      out: { type: 'string', default: 'perf/results' },
    },
  });
  const nodes = Number(values.nodes);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 60_000) throw new Error(`--nodes must be 1..60000, got ${values.nodes}`);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${values.rounds}`);
  const kinds = values.registries!.split(',').map((k) => {
    if (!(REGISTRIES as readonly string[]).includes(k)) throw new Error(`--registries: unknown registry "${k}" (${REGISTRIES.join(', ')})`);
    return k as Kind;
  });
  const log = (m: string): void => void process.stderr.write(`registry-scale: ${m}\n`);
  const results: Result[] = [];
  for (const k of kinds) results.push(await measure(k, nodes, rounds, log));
  const date = new Date().toISOString().slice(0, 10);
  const md = `Registry scale, ${date}, \`node dist/perf/registry-scale.js --nodes ${nodes} --rounds ${rounds}\` on this machine (${os.cpus().length} CPUs)\n\n${formatTable(results, rounds)}`;
  process.stdout.write(md + '\n');
  await fs.mkdir(values.out!, { recursive: true });
  await fs.writeFile(path.join(values.out!, 'registry-scale.md'), md + '\n');
  await fs.writeFile(path.join(values.out!, 'registry-scale.json'), JSON.stringify({ date, nodes, rounds, results }, null, 2) + '\n');
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (e: Error) => {
      process.stderr.write(`registry-scale: ${e.message}\n`);
      process.exit(1);
    },
  );
}
