// weft control's /metrics: the figures move with the calls that should move them, the text passes
// `promtool check metrics` (Debian's prometheus package, installed by scripts/setup.sh), and the
// --metrics-listen flag fails in one line on bad input without losing state. In-process servers
// on 127.0.0.1 plus a few `weft control` processes; no root needed.
import { execFile, spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import { EmbeddedRegistry } from '../../src/control/embedded';
import { EtcdRegistry } from '../../src/control/etcd/registry';
import { ControlMetrics, RPC_RESULTS, leaseCounts, startMetricsServer } from '../../src/control/metrics';
import { parseNetConfig } from '../../src/control/netconfig';
import { startControlServer } from '../../src/control/server';
import { mustRun } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { startEtcdCluster } from '../support/etcd';
import { rejection } from '../support/registry';
import { until } from '../support/until';

const ROOT = path.join(__dirname, '..', '..');
const WEFT = path.join(ROOT, 'bin', 'weft.js');
const PROMTOOL = '/usr/bin/promtool';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// SubnetMin..SubnetMax: four /24s, so "free" is small enough to check by hand.
const NET_CONF = { Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.4.0', Backend: { Type: 'udp' } };

async function setup() {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-ctl-metrics-'));
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  const registry = new EmbeddedRegistry({ config: parseNetConfig(NET_CONF), stateDir: dir });
  await registry.open();
  cleanups.push(() => registry.close());
  const metrics = new ControlMetrics({ registry, kind: 'embedded' });
  const server = await startControlServer({ listen: '127.0.0.1:0', registry, logger: pino({ level: 'silent' }), observer: metrics, maxWatchesPerClient: 1 });
  cleanups.push(() => server.close());
  metrics.serveWatchStats(server.watchStats);
  const http = await startMetricsServer('127.0.0.1:0', metrics);
  cleanups.push(() => http.close());
  const client = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 3000 });
  cleanups.push(() => client.close());
  return { registry, client, url: `http://127.0.0.1:${http.port}` };
}

async function scrape(base: string): Promise<string> {
  const res = await fetch(`${base}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** The value of one sample, e.g. sample(text, 'weft_control_leases{state="held"}'); undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1).split(' ')[0]);
}

function promtoolCheck(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile(PROMTOOL, ['check', 'metrics'], { timeout: 10_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    );
    child.stdin!.end(text);
  });
}

describe('weft control /metrics', () => {
  it('counts calls by method and result, leases by state, and watch streams', async () => {
    const { registry, client, url } = await setup();
    let text = await scrape(url);
    // Every method × result pair from the start, at zero.
    for (const result of RPC_RESULTS) expect(sample(text, `weft_control_requests_total{method="acquire",result="${result}"}`)).toBe(0);
    expect(sample(text, 'weft_control_leases{state="free"}')).toBe(4);
    expect(sample(text, 'weft_control_registry_up')).toBe(1);
    expect(sample(text, 'weft_control_info{registry="embedded"}')).toBe(1);

    // Reservations are an operator's (loopback) call; made first, so no random acquire takes its subnet.
    await registry.reserve({ subnet: '10.244.4.0/24', publicIp: '192.168.7.9' });
    const a = await client.acquire({ publicIp: '192.168.7.1' });
    await client.acquire({ publicIp: '192.168.7.2' });
    await client.renew({ subnet: a.subnet, publicIp: a.publicIp });
    await client.revoke({ subnet: a.subnet, publicIp: a.publicIp });
    expect((await rejection(client.renew({ subnet: a.subnet, publicIp: a.publicIp }))).code).toBe('not_found');
    expect((await rejection(client.acquire({ publicIp: 'not-an-ip' }))).code).toBe('invalid');

    const w = client.watch(
      0,
      () => undefined,
      () => undefined,
    );
    cleanups.push(() => w.close());
    // The server allows one stream per client here: a second is refused as exhausted.
    let refused: Error | undefined;
    const w2 = client.watch(
      0,
      () => undefined,
      (e) => (refused = e),
    );
    cleanups.push(() => w2.close());

    text = await until('the watch stream to count', async () => {
      const t = await scrape(url);
      return sample(t, 'weft_control_watch_streams') === 1 && refused ? t : undefined;
    });
    const req = (method: string, result: string) => sample(text, `weft_control_requests_total{method="${method}",result="${result}"}`);
    expect(req('acquire', 'ok')).toBe(2);
    expect(req('acquire', 'invalid')).toBe(1);
    expect(req('renew', 'ok')).toBe(1);
    expect(req('renew', 'not_found')).toBe(1);
    expect(req('revoke', 'ok')).toBe(1);
    expect(req('watch', 'ok')).toBe(1);
    expect(req('watch', 'exhausted')).toBe(1);
    // Each unary call is timed once.
    expect(sample(text, 'weft_control_rpc_duration_seconds_count{method="acquire"}')).toBe(3);
    expect(sample(text, 'weft_control_rpc_duration_seconds_count{method="renew"}')).toBe(2);
    // One lease held (192.168.7.2), one reservation (not held), 4 - 2 subnets free.
    expect(sample(text, 'weft_control_leases{state="held"}')).toBe(1);
    expect(sample(text, 'weft_control_leases{state="reserved"}')).toBe(1);
    expect(sample(text, 'weft_control_leases{state="free"}')).toBe(2);
    // Process metrics, from this instance's own registry.
    expect(sample(text, 'process_cpu_seconds_total')).toBeGreaterThan(0);
  });

  it('reports the registry down, without stale lease counts, when the leases cannot be listed', async () => {
    const { registry, url } = await setup();
    registry.close();
    const text = await scrape(url);
    expect(sample(text, 'weft_control_registry_up')).toBe(0);
    expect(text).not.toMatch(/^weft_control_leases\{/m);
  });

  it('passes promtool check metrics', async () => {
    expect(existsSync(PROMTOOL), `${PROMTOOL} missing: run scripts/setup.sh (Debian's prometheus)`).toBe(true);
    const { client, url } = await setup();
    await client.acquire({ publicIp: '192.168.7.1' });
    const text = await scrape(url);
    const r = await promtoolCheck(text);
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
  });

  it('serves /healthz, and 404 elsewhere', async () => {
    const { url } = await setup();
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/nope`)).status).toBe(404);
  });
});

describe('weft control /metrics on etcd', () => {
  it('counts a lease key written without a lease as reserved, as the embedded registry counts a reservation', async () => {
    const c = await startEtcdCluster({ members: 1 });
    cleanups.push(() => c.stop());
    const prefix = '/tmetrics/network';
    const reg = new EtcdRegistry({ endpoints: c.endpoints, prefix });
    cleanups.push(() => reg.close());
    await reg.ensureConfig(JSON.stringify(NET_CONF));
    // flannel's reservation: the subnet key put by hand, with no etcd lease (before the acquires,
    // which would otherwise be free to pick that subnet).
    const lease = '{"PublicIP":"192.168.7.9","PublicIPv6":null,"BackendType":"udp","BackendData":null}';
    await mustRun('etcdctl', [...c.etcdctlFlags, 'put', `${prefix}/subnets/10.244.4.0-24`, lease], { env: { ...process.env, ETCDCTL_API: '3' } });
    await reg.acquire({ publicIp: '192.168.7.1' });
    await reg.acquire({ publicIp: '192.168.7.2' });
    expect(await leaseCounts(reg)).toEqual({ held: 2, reserved: 1, free: 1 });

    const metrics = new ControlMetrics({ registry: reg, kind: 'etcd', processMetrics: false });
    const text = await metrics.metrics();
    expect(sample(text, 'weft_control_leases{state="reserved"}')).toBe(1);
    expect(sample(text, 'weft_control_info{registry="etcd"}')).toBe(1);
    // Stopped etcd: the scrape still answers, in time, saying the registry is down.
    await c.stop();
    const t0 = Date.now();
    const down = await metrics.metrics();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(sample(down, 'weft_control_registry_up')).toBe(0);
    expect(down).not.toMatch(/^weft_control_leases\{/m);
  }, 60_000);
});

describe('weft control --metrics-listen', () => {
  beforeAll(ensureBuilt, 180_000);

  async function controlRun(args: string[], stateDir: string): Promise<{ code: number | null; stderr: string }> {
    const conf = path.join(stateDir, 'net-conf.json');
    await fsp.writeFile(conf, JSON.stringify(NET_CONF));
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [WEFT, 'control', '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--net-config-path', conf, ...args], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stderr });
      });
    });
  }

  async function tmp(): Promise<string> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-ctl-metrics-cli-'));
    cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
    return dir;
  }

  it('refuses a malformed address in one line', async () => {
    const r = await controlRun(['--metrics-listen', 'localhost'], await tmp());
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^weft control: --metrics-listen "localhost" must be ADDR:PORT/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('refuses a port in use in one line, and leaves the state file and its lock as they were', async () => {
    const busy = net.createServer();
    await new Promise<void>((res) => busy.listen(0, '127.0.0.1', () => res()));
    cleanups.push(() => new Promise<void>((res) => busy.close(() => res())));
    const port = (busy.address() as net.AddressInfo).port;
    const dir = await tmp();
    const r = await controlRun(['--metrics-listen', `127.0.0.1:${port}`, '--reserve', '10.244.2.0/24=192.168.7.5'], dir);
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('weft control:'));
    expect(lines).toEqual([`weft control: --metrics-listen 127.0.0.1:${port}: cannot listen: EADDRINUSE`]);
    // What the run wrote before failing is on disk, and the state dir is free for the next run.
    const again = new EmbeddedRegistry({ config: parseNetConfig(NET_CONF), stateDir: dir });
    await again.open();
    cleanups.push(() => again.close());
    expect(await again.reservations()).toEqual([{ subnet: '10.244.2.0/24', publicIp: '192.168.7.5' }]);
  });
});
