// `weft lab up --prometheus`: a real Prometheus (Debian's) in the lab's switch namespace scrapes
// every daemon and weft control, is reachable from the root namespace through the lab's
// forwarder, and what it reports matches what happened: the leases control holds, and the
// packets one node sent to another, counted by the daemons and read back through PromQL.
// Root only (namespaces); every namespace and process is removed in afterAll, on failure too.
import { execFile } from 'node:child_process';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PROMETHEUS_JOBS,
  formatStatus,
  labDown,
  labExec,
  labProcesses,
  labStatus,
  labUp,
  labNsPattern,
  parsePing,
  prometheusApi,
  prometheusQuery,
  readSubnetEnv,
  networkOf,
  type LabState,
} from '../../src/lab';
import { listNs } from '../../src/lab/netns';
import { sleep } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';
import { until } from '../support/until';

interface Target {
  labels: Record<string, string>;
  health: string;
  lastError: string;
  scrapeUrl: string;
}

const targets = async (prefix: string): Promise<Target[]> =>
  ((await prometheusApi(prefix, 'targets', { state: 'active' })) as { activeTargets: Target[] }).activeTargets;

/** The one sample of an instant query, as a number (fails when there is not exactly one). */
async function one(prefix: string, expr: string, time?: number): Promise<number> {
  const r = await prometheusQuery(prefix, expr, time);
  expect(r, `${expr} → ${JSON.stringify(r)}`).toHaveLength(1);
  return Number(r[0].value[1]);
}

function promtoolCheck(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('/usr/bin/promtool', ['check', 'metrics'], { timeout: 10_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    );
    child.stdin!.end(text);
  });
}

const listLabNamespaces = async (prefix: string): Promise<string[]> => (await listNs()).filter((n) => labNsPattern(prefix).test(n));

/** Whether something accepts connections on 127.0.0.1:port (the forwarder). */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe.skipIf(process.getuid?.() !== 0)('weft lab up --prometheus', () => {
  const prefix = uniquePrefix('prom');
  let state: LabState;
  let port: number;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'udp', prometheus: true, prometheusPort: 0 });
    port = state.prometheus!.hostPort;
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it('is reachable from the root namespace, and weft lab status says where', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/-/ready`);
    expect(res.status).toBe(200);
    const s = await labStatus(prefix);
    expect(s.prometheus).toMatchObject({ url: `http://127.0.0.1:${port}`, alive: true, forwarderAlive: true });
    expect(formatStatus(s)).toContain(`Prometheus: http://127.0.0.1:${port} from this host`);
    // Its storage lives under the lab dir.
    expect(state.prometheus!.dataDir.startsWith(state.dir + '/')).toBe(true);
  });

  it('finds every daemon and control as targets, and scrapes control', async () => {
    const ts = await until('every target scraped once', async () => {
      const t = await targets(prefix);
      return t.length === 4 && t.every((x) => x.health !== 'unknown') ? t : undefined;
    });
    const daemons = ts.filter((t) => t.labels.job === PROMETHEUS_JOBS.daemon);
    expect(daemons.map((t) => [t.labels.node, t.labels.instance]).sort()).toEqual(state.nodes.map((n) => [n.name, `${n.publicIp}:${n.healthzPort}`]).sort());
    for (const t of daemons) expect(t.scrapeUrl).toMatch(/\/metrics$/);
    const control = ts.find((t) => t.labels.job === PROMETHEUS_JOBS.control);
    expect(control, JSON.stringify(ts)).toMatchObject({ health: 'up', labels: { instance: state.control.metricsAddress } });
    // The daemons' health servers answer from the switch namespace: /readyz through the same address.
    for (const n of state.nodes) {
      const r = await labExec(prefix, 'ul', [
        state.nodeBin,
        '-e',
        `fetch('http://${n.publicIp}:${n.healthzPort}/readyz').then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(2))`,
      ]);
      expect(r.code, `${n.name} /readyz from the switch namespace: ${r.stderr}`).toBe(0);
    }
  }, 30_000);

  it("reports control's leases and watch streams as the lab has them", async () => {
    const held = await until('weft_control_leases scraped', () => one(prefix, 'weft_control_leases{state="held"}'));
    expect(held).toBe(state.nodes.length);
    expect(await one(prefix, 'weft_control_leases{state="reserved"}')).toBe(0);
    // 10.244.0.0/16 in /24s: 256 subnets, of which SubnetMin..SubnetMax (flannel's defaults) hand out 255.
    expect(await one(prefix, 'sum(weft_control_leases)')).toBe(255);
    expect(await one(prefix, 'weft_control_watch_streams')).toBe(state.nodes.length);
    expect(await one(prefix, 'weft_control_requests_total{method="acquire",result="ok"}')).toBeGreaterThanOrEqual(state.nodes.length);
    expect(await one(prefix, 'weft_control_registry_up')).toBe(1);
    expect(await one(prefix, `up{job="${PROMETHEUS_JOBS.control}"}`)).toBe(1);
  }, 30_000);

  it("control's /metrics in the lab passes promtool check metrics", async () => {
    const r = await labExec(prefix, 'ul', ['curl', '-sf', `http://${state.control.metricsAddress}/metrics`]);
    expect(r.code, r.stderr).toBe(0);
    const check = await promtoolCheck(r.stdout);
    expect(check.out).toBe('');
    expect(check.code).toBe(0);
  });

  // Needs the daemon's /metrics (issue 15's metrics branch): until it is merged every daemon
  // target answers 404 and is down, and these fail.
  it("every daemon's /metrics passes promtool check metrics [daemon /metrics]", async () => {
    for (const n of state.nodes) {
      const r = await labExec(prefix, 'ul', ['curl', '-sf', `http://${n.publicIp}:${n.healthzPort}/metrics`]);
      expect(r.code, `${n.name} /metrics: curl exit ${r.code}`).toBe(0);
      const check = await promtoolCheck(r.stdout);
      expect(check.out, n.name).toBe('');
      expect(check.code, n.name).toBe(0);
    }
  });

  it('counts the packets one node sent another: PromQL increase() matches the pings sent [daemon /metrics]', async () => {
    const [n1, n2] = state.nodes;
    const dst = state.pods.find((p) => p.node === n2.name)!;
    const n2Subnet = networkOf(readSubnetEnv(n2.subnetFile)!.subnet);
    const tx = `weft_peer_transmit_packets_total{job="${PROMETHEUS_JOBS.daemon}",node="${n1.name}",peer="${n2.publicIp}"}`;
    const rx = `weft_peer_receive_packets_total{job="${PROMETHEUS_JOBS.daemon}",node="${n2.name}",peer="${n1.publicIp}"}`;
    const txBytes = `weft_peer_transmit_bytes_total{job="${PROMETHEUS_JOBS.daemon}",node="${n1.name}",peer="${n2.publicIp}"}`;
    await until(`${n1.name}'s daemon target up`, async () => (await one(prefix, `up{job="${PROMETHEUS_JOBS.daemon}",node="${n1.name}"}`)) === 1, 10_000);
    // The series exists (the peer is known from the lease watch) with n2's lease as its subnet.
    const series = await until(`${tx} scraped`, async () => {
      const r = await prometheusQuery(prefix, tx);
      return r.length === 1 ? r : undefined;
    });
    expect(series[0].metric.subnet).toBe(n2Subnet);

    // Two scrapes with the counters at rest, then the traffic, then two scrapes after it: the
    // window below holds samples from before and after, so its raw difference is the traffic.
    const WINDOW_S = 20;
    const t0 = Date.now() / 1000;
    await sleep(2_500);
    const tBefore = Date.now() / 1000;
    const COUNT = 200;
    const ping = await labExec(prefix, `${n1.name}/p1`, ['ping', '-n', '-q', '-c', String(COUNT), '-i', '0.01', '-W', '2', dst.ip], { timeoutMs: 30_000 });
    const p = parsePing(ping.stdout);
    expect(p.transmitted, ping.stdout).toBe(COUNT);
    await sleep(2_500);
    // The window must reach back before the traffic; the lab has been up long enough for that.
    const t1 = Math.max(Date.now() / 1000, t0 + WINDOW_S - 2.5);
    await sleep(Math.max(0, t1 * 1000 - Date.now()) + 100);

    // Exact: the counter's value after minus before, as Prometheus stored them. Every echo
    // request n1's pod sent crossed n1's daemon to n2 (transmit) and reached n2's (receive);
    // nothing else in the lab sends pod traffic between them. A little slack for anything the
    // daemon counts besides pods' packets (none expected), none below.
    const delta = (await one(prefix, tx, t1)) - (await one(prefix, tx, tBefore));
    expect(delta).toBeGreaterThanOrEqual(COUNT);
    expect(delta).toBeLessThanOrEqual(COUNT + 5);
    const rxDelta = (await one(prefix, rx, t1)) - (await one(prefix, rx, tBefore));
    expect(rxDelta).toBeGreaterThanOrEqual(p.received);
    expect(rxDelta).toBeLessThanOrEqual(COUNT + 5);
    // Every request is at least its 84-byte IPv4 packet (20 IP + 8 ICMP + 56 data) on the way out.
    const bytes = (await one(prefix, txBytes, t1)) - (await one(prefix, txBytes, tBefore));
    expect(bytes).toBeGreaterThanOrEqual(84 * COUNT);

    // What a dashboard asks: increase() over the window. Prometheus extrapolates the difference
    // between the first and last samples in the window to the window's edges (never beyond), so
    // the result is delta × (at most WINDOW_S) / (last - first): at least delta, and at most that
    // ratio above it, which this computes from the samples Prometheus actually holds (1 s scrapes
    // on a busy machine are not exactly 1 s apart).
    const range = (await prometheusApi(prefix, 'query', { query: `${tx}[${WINDOW_S}s]`, time: String(t1) })) as {
      result: { values: [number, string][] }[];
    };
    const vs = range.result[0].values;
    const span = vs[vs.length - 1][0] - vs[0][0];
    expect(span).toBeGreaterThan(WINDOW_S / 2);
    const inc = await one(prefix, `increase(${tx}[${WINDOW_S}s])`, t1);
    expect(inc).toBeGreaterThanOrEqual(delta - 1e-6);
    expect(inc).toBeLessThanOrEqual((delta * WINDOW_S) / span + 1e-6);
    const rate = await one(prefix, `rate(${tx}[${WINDOW_S}s])`, t1);
    expect(rate).toBeCloseTo(inc / WINDOW_S, 6);
  }, 90_000);

  it('weft lab down stops Prometheus and its forwarder and leaves nothing behind', async () => {
    const pids = [state.prometheus!.pid, state.prometheus!.forwarderPid];
    await labDown(prefix);
    expect(await labProcesses(prefix)).toEqual([]);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(await listening(port)).toBe(false);
    expect(await listLabNamespaces(prefix)).toEqual([]);
  }, 60_000);
});

describe.skipIf(process.getuid?.() !== 0)('weft lab up --prometheus, failing', () => {
  beforeAll(ensureBuilt, 180_000);

  it('takes Prometheus and its forwarder down with the lab when up fails after starting them', async () => {
    const prefix = uniquePrefix('promfail');
    try {
      // Prometheus starts before the daemons; a flag every daemon refuses fails the up there.
      const err = await labUp({ prefix, nodes: 1, pods: 0, prometheus: true, prometheusPort: 0, daemonArgs: ['--no-such-flag'], readyTimeoutMs: 10_000 }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).toMatch(/lab up failed at "wait for daemons to become ready"/);
      expect(await labProcesses(prefix)).toEqual([]);
      expect(await listLabNamespaces(prefix)).toEqual([]);
    } finally {
      await labDown(prefix);
    }
  }, 60_000);

  it('refuses a host port in use in one line, before making anything', async () => {
    const busy = net.createServer();
    await new Promise<void>((res) => busy.listen(0, '127.0.0.1', () => res()));
    const port = (busy.address() as net.AddressInfo).port;
    const prefix = uniquePrefix('promport');
    try {
      await expect(labUp({ prefix, nodes: 1, pods: 0, prometheus: true, prometheusPort: port })).rejects.toThrow(
        new RegExp(`^--prometheus-port ${port}: 127\\.0\\.0\\.1:${port} is not free \\(EADDRINUSE`),
      );
      expect(await listLabNamespaces(prefix)).toEqual([]);
    } finally {
      await new Promise<void>((res) => busy.close(() => res()));
      await labDown(prefix);
    }
  }, 30_000);
});
