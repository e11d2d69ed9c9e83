// The lab's own plumbing (namespaces, underlay, CNI attach, process lifecycle, teardown) tested
// against a stand-in for `weft control` / `weft daemon` that routes with plain kernel routes
// (host-gw style). That separates lab bugs from datapath bugs, and lets the failure paths (a
// daemon dying at start, a lost state.json) be provoked on purpose. lab-netns.test.ts runs the
// real programs.
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as labCli } from '../../src/cli/lab';
import {
  contains,
  killControl,
  labDir,
  labDown,
  labExec,
  labProcesses,
  labStatus,
  labUp,
  parseIperf3,
  parsePing,
  pingPair,
  readState,
  restartDaemon,
  startControl,
  targetNs,
  labNsPattern,
  type LabState,
} from '../../src/lab';
import { listNs } from '../../src/lab/netns';
import { probe } from '../../src/lab/probe';
import { formatStatus, underlaySide } from '../../src/lab';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

// Speaks the lab's contract: control listens on --listen; a daemon gets a /24 from control, writes
// subnet.env, routes peers' /24s via their public IPs, answers /readyz once its own side is done
// (like the real one: before it has necessarily heard of every peer), lists peers in /status, and
// undoes it on SIGTERM. `--standin-exit-on IP` makes the daemon with that public IP die at start.
// Like host-gw, it can only route to peers that are L2 neighbours: in a routed lab the kernel
// refuses a next hop behind the router, and the stand-in leaves that peer unrouted (its
// /status lists it under `unrouted`).
const STANDIN = String.raw`
const { parseArgs } = require('node:util'), http = require('node:http'), fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const [cmd, ...rest] = process.argv.slice(2);
const opt = (names) => Object.fromEntries(names.map((n) => [n, { type: 'string' }]));
if (cmd === 'control') {
  const { values } = parseArgs({ args: rest, options: opt(['listen', 'state-dir', 'net-config-path', 'lease-ttl']) });
  const conf = JSON.parse(fs.readFileSync(values['net-config-path'], 'utf8'));
  const [host, port] = values.listen.split(':');
  // Node i sits at .10+i: deriving its subnet from that, not from request order, keeps the
  // lease independent of which stand-in daemon happens to start first.
  const leases = {};
  http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/acquire') { const ip = u.searchParams.get('ip'); leases[ip] ??= '10.244.' + (Number(ip.split('.')[3]) - 10); res.end(JSON.stringify({ subnet: leases[ip], network: conf.Network })); }
    else res.end(JSON.stringify(leases));
  }).listen(Number(port), host);
  process.on('SIGTERM', () => process.exit(0));
} else if (cmd === 'daemon') {
  const { values } = parseArgs({ args: rest, options: opt(['control', 'public-ip', 'iface', 'subnet-file', 'healthz-port', 'tun-name', 'monitor-socket', 'standin-exit-on']) });
  if (values['standin-exit-on'] === values['public-ip']) { console.error('stand-in: exiting on purpose'); process.exit(3); }
  const get = (p) => new Promise((ok, ko) => http.get('http://' + values.control + p, (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => ok(JSON.parse(b))); }).on('error', ko));
  let ready = false, mine = null; const peers = new Map(), routes = new Set(), unrouted = new Set();
  const loop = async () => {
    try {
      if (!mine) {
        const a = await get('/acquire?ip=' + values['public-ip']); mine = a.subnet;
        fs.writeFileSync(values['subnet-file'], 'FLANNEL_NETWORK=' + a.network + '\nFLANNEL_SUBNET=' + mine + '.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');
      }
      for (const [ip, s] of Object.entries(await get('/leases'))) {
        if (s === mine || peers.has(s + '.0/24')) continue;
        peers.set(s + '.0/24', ip);
        try { execFileSync('ip', ['route', 'replace', s + '.0/24', 'via', ip, 'dev', values.iface], { stdio: 'pipe' }); routes.add(s + '.0/24'); }
        catch (e) { unrouted.add(s + '.0/24'); console.error('stand-in: no host route to ' + s + '.0/24 via ' + ip + ': ' + String(e.stderr).trim()); }
      }
      ready = true;
    } catch (e) { console.error('stand-in:', e.message); }
  };
  loop(); setInterval(loop, 200);
  http.createServer((req, res) => {
    if (req.url === '/readyz') { res.statusCode = ready ? 200 : 503; return res.end(ready ? 'ok' : 'waiting'); }
    if (req.url === '/status') return res.end(JSON.stringify({ lease: mine, peers: [...peers].map(([subnet, publicIp]) => ({ subnet, publicIp })), unrouted: [...unrouted], counters: {} }));
    res.end('ok');
  }).listen(Number(values['healthz-port']), '127.0.0.1'); // where weft daemon listens by default
  process.on('SIGTERM', () => {
    for (const r of routes) { try { execFileSync('ip', ['route', 'del', r]); } catch {} }
    try { fs.unlinkSync(values['subnet-file']); } catch {}
    process.exit(0);
  });
}
`;

describe('lab output parsers', () => {
  it('reads iputils ping summaries', () => {
    const out = '3 packets transmitted, 3 received, 0% packet loss, time 402ms\nrtt min/avg/max/mdev = 0.061/0.079/0.102/0.017 ms\n';
    expect(parsePing(out)).toEqual({ transmitted: 3, received: 3, loss: 0, rttMinMs: 0.061, rttAvgMs: 0.079, rttMaxMs: 0.102 });
    const lost = '3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2030ms\n';
    expect(parsePing(lost)).toMatchObject({ transmitted: 3, received: 0, loss: 100, rttAvgMs: null });
  });

  it('reads iperf3 -J summaries', () => {
    const tcp = JSON.stringify({ end: { sum_sent: { bits_per_second: 2e9, retransmits: 4 }, sum_received: { bits_per_second: 1.9e9, bytes: 237_500_000 } } });
    expect(parseIperf3(tcp)).toMatchObject({ bitsPerSecond: 1.9e9, sentBitsPerSecond: 2e9, receivedBytes: 237_500_000, retransmits: 4 });
    expect(parseIperf3(JSON.stringify({ error: 'unable to connect to server' })).error).toBe('unable to connect to server');
  });

  it('maps targets to namespaces and matches only its own prefix', () => {
    expect(targetNs('weft-', 'n2')).toBe('weft-n2');
    expect(targetNs('weft-', 'n2/p3')).toBe('weft-n2p3');
    expect(targetNs('weft-', 'ul')).toBe('weft-ul');
    expect(() => targetNs('weft-', 'pod1')).toThrow(/bad lab target/);
    expect(targetNs('weft-', 'rt')).toBe('weft-rt');
    const p = labNsPattern('weft-');
    expect(['weft-ul', 'weft-rt', 'weft-n1', 'weft-n12p3'].every((n) => p.test(n))).toBe(true);
    expect(['weft-t-lab-x-n1', 'weft-t-lab-x-rt', 'weft-n1x', 'weft-nx', 'weft-rtx'].some((n) => p.test(n))).toBe(false);
  });

  it('routed topology: the first half of the nodes on subnet A, the rest on B', () => {
    expect([1, 2, 3].map((i) => underlaySide('routed', i, 3))).toEqual([0, 0, 1]);
    expect([1, 2, 3, 4].map((i) => underlaySide('routed', i, 4))).toEqual([0, 0, 1, 1]);
    expect(underlaySide('routed', 1, 1)).toBe(0);
    expect([1, 2, 3].map((i) => underlaySide('flat', i, 3))).toEqual([0, 0, 0]);
  });

  it('refuses routed layouts that cannot work before touching anything', async () => {
    const prefix = 'weft-t-labv-';
    await expect(labUp({ prefix, topology: 'routed', underlayB: '192.168.77.128/25' })).rejects.toThrow(/overlap/);
    await expect(labUp({ prefix, topology: 'routed', underlayB: '10.244.9.0/24' })).rejects.toThrow(/overlaps --underlay-b/);
    await expect(labUp({ prefix, nodes: 4, topology: 'routed', underlayB: '192.168.78.0/28' })).rejects.toThrow(/too small/);
    await expect(labUp({ prefix, topology: 'mesh' as 'flat' })).rejects.toThrow(/--topology/);
    expect(readState(prefix)).toBeNull();
  });
});

describe.skipIf(process.getuid?.() !== 0)('lab plumbing (stand-in control/daemon)', () => {
  const prefix = uniquePrefix('labp');
  let tmp: string;
  let weftJs: string;
  let state: LabState;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'weft-lab-standin-'));
    weftJs = join(tmp, 'weft.js');
    writeFileSync(weftJs, STANDIN);
    // The stand-in replaces weft control and weft daemon only: pods still attach through the
    // real weft-cni, which runs the compiled dist/.
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 2, pods: 2, weftJs });
  }, 240_000);

  afterAll(async () => {
    await labDown(prefix);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('lays out the underlay, the nodes and pods as documented', async () => {
    expect(state.control.address).toBe('192.168.77.1:7000');
    expect(state.nodes.map((n) => n.publicIp)).toEqual(['192.168.77.11', '192.168.77.12']);
    expect(state.pods.map((p) => p.name)).toEqual(['n1/p1', 'n1/p2', 'n2/p1', 'n2/p2']);
    const names = (await listNs()).filter((n) => n.startsWith(prefix)).sort();
    expect(names).toEqual([`${prefix}n1`, `${prefix}n1p1`, `${prefix}n1p2`, `${prefix}n2`, `${prefix}n2p1`, `${prefix}n2p2`, `${prefix}ul`]);
    // Node sysctls that forwarding through the TUN depends on.
    const sys = await labExec(prefix, 'n1', ['sysctl', '-n', 'net.ipv4.ip_forward', 'net.ipv4.conf.all.rp_filter', 'net.ipv4.conf.eth0.rp_filter']);
    expect(sys.stdout.split('\n').filter(Boolean)).toEqual(['1', '0', '0']);
    // Each node has its own host-local dataDir, and the CNI bridge carries the lease's gateway.
    for (const n of state.nodes) expect(existsSync(n.cniDataDir)).toBe(true);
    const br = await labExec(prefix, 'n1', ['ip', '-4', '-o', 'addr', 'show', 'dev', 'cni0']);
    expect(br.stdout).toContain('10.244.1.1/24');
  });

  it('attaches pods through weft-cni (delegating to the CNI bridge plugin) inside their lease', async () => {
    // As a runtime would: the plugin config comes from the node's conflist, and weft-cni, found
    // in the lab's CNI bin dir, saved the bridge config it built for DEL.
    for (const p of state.pods) {
      const node = state.nodes.find((n) => n.name === p.node)!;
      expect(p.cniConfig.type).toBe('weft-cni');
      const conflist = JSON.parse(readFileSync(join(node.dir, '10-weft.conflist'), 'utf8')) as { plugins: { type: string }[] };
      expect(conflist.plugins[0].type).toBe('weft-cni');
      const saved = JSON.parse(readFileSync(join(node.dir, 'weft-cni', `${p.containerId}@eth0`), 'utf8')) as Record<string, unknown>;
      expect(saved).toMatchObject({ type: 'bridge', bridge: 'cni0', ipMasq: false, ipam: { type: 'host-local', dataDir: node.cniDataDir } });
    }
    const s = await labStatus(prefix);
    for (const p of s.pods) {
      const node = s.nodes.find((n) => n.name === p.node)!;
      expect(contains(node.subnet!, p.ip)).toBe(true);
      const r = await labExec(prefix, p.name, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      expect(r.stdout).toContain(p.cidr);
      const routes = await labExec(prefix, p.name, ['ip', 'route']);
      expect(routes.stdout).toContain(`10.244.0.0/16 via ${node.lease!.split('/')[0]}`);
    }
    expect(new Set(s.pods.map((p) => p.ip)).size).toBe(4);
  });

  it('carries ping between pods on different nodes and reports status', async () => {
    const r = await pingPair(prefix, 'n1/p2', 'n2/p1');
    expect(r.ok, r.output).toBe(true);
    const s = await labStatus(prefix);
    expect(s.control?.alive).toBe(true);
    expect(s.nodes.every((n) => n.alive && n.ready)).toBe(true);
    expect(s.nodes[0].daemon).toMatchObject({ lease: '10.244.1' });
  });

  it('the underlay bridge keeps its MAC when a port with a lower one joins: nodes still reach control at once', async () => {
    // A bridge without a MAC of its own takes its lowest port's, and changes it when a lower one
    // joins (an outside host added by a test did this); nodes' ARP entries for control then held a
    // MAC the bridge no longer answered to, and their packets were dropped for 10-30 s.
    const ul = state.switchNs;
    const macOf = async (): Promise<string> => (await labExec(prefix, 'ul', ['cat', `/sys/class/net/${state.bridge}/address`])).stdout.trim();
    const controlIp = state.control.address.split(':')[0];
    expect((await labExec(prefix, 'n1', ['ping', '-c1', '-W2', controlIp])).code).toBe(0);
    const before = await macOf();
    expect((await labExec(prefix, 'ul', ['ip', 'link', 'add', 'vlow', 'address', '02:00:00:00:00:01', 'type', 'veth', 'peer', 'name', 'vlowp'])).code).toBe(0);
    try {
      expect((await labExec(prefix, 'ul', ['ip', 'link', 'set', 'vlow', 'master', state.bridge, 'up'])).code).toBe(0);
      expect(await macOf()).toBe(before);
      const r = await labExec(prefix, 'n1', ['ping', '-c3', '-i0.2', '-W1', controlIp]);
      expect(r.stdout, `ping from n1 to control in ${ul}`).toContain(' 0% packet loss');
    } finally {
      await labExec(prefix, 'ul', ['ip', 'link', 'del', 'vlow']);
    }
  });

  it('refuses a second up with the same prefix', async () => {
    await expect(labUp({ prefix, nodes: 1, weftJs })).rejects.toThrow(/already exists/);
    expect(readState(prefix)?.nodes.length).toBe(2);
  });

  it('exec returns the command exit code (CLI and API)', async () => {
    expect(await labCli(['exec', '--prefix', prefix, 'n2/p1', '--', 'sh', '-c', 'exit 5'])).toBe(5);
    expect(await labCli(['exec', '--prefix', prefix, 'n1', 'true'])).toBe(0);
    const r = await labExec(prefix, 'n1/p1', ['sh', '-c', 'echo out; echo err >&2; exit 2']);
    expect(r).toMatchObject({ code: 2, stdout: 'out\n', stderr: 'err\n', timedOut: false });
    const t = await labExec(prefix, 'n1', ['sleep', '5'], { timeoutMs: 200 });
    expect(t).toMatchObject({ code: 124, timedOut: true });
  });

  it('restarts a daemon and control', async () => {
    const before = readState(prefix)!.nodes[0].pid;
    const n = await restartDaemon(prefix, 'n1');
    expect(n.pid).not.toBe(before);
    expect(readState(prefix)!.nodes[0].pid).toBe(n.pid);
    await killControl(prefix, 'SIGKILL');
    expect((await labStatus(prefix)).control?.alive).toBe(false);
    await startControl(prefix);
    expect((await labStatus(prefix)).control?.alive).toBe(true);
  });
});

describe.skipIf(process.getuid?.() !== 0)('lab failure paths (stand-in)', () => {
  let tmp: string;
  let weftJs: string;
  const prefixes: string[] = [];
  const fresh = (): string => {
    const p = uniquePrefix('labf');
    prefixes.push(p);
    return p;
  };

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'weft-lab-standin-'));
    weftJs = join(tmp, 'weft.js');
    writeFileSync(weftJs, STANDIN);
  });

  afterAll(async () => {
    for (const p of prefixes) await labDown(p);
    rmSync(tmp, { recursive: true, force: true });
  });

  async function expectGone(prefix: string): Promise<void> {
    expect((await listNs()).filter((n) => labNsPattern(prefix).test(n))).toEqual([]);
    expect(await labProcesses(prefix)).toEqual([]);
    expect(existsSync(labDir(prefix))).toBe(false);
  }

  it('a daemon dying at start fails up with its log and leaves nothing behind', async () => {
    const prefix = fresh();
    const err = await labUp({ prefix, nodes: 2, weftJs, daemonArgs: ['--standin-exit-on', '192.168.77.12'] }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/wait for daemons to become ready/);
    expect((err as Error).message).toMatch(/daemon n2 .* exited before becoming ready/);
    expect((err as Error).message).toContain('stand-in: exiting on purpose');
    await expectGone(prefix);
  });

  it('down works without state.json', async () => {
    const prefix = fresh();
    await labUp({ prefix, nodes: 2, pods: 1, weftJs });
    unlinkSync(join(labDir(prefix), 'state.json'));
    expect((await labProcesses(prefix)).length).toBeGreaterThanOrEqual(3);
    await labDown(prefix);
    await expectGone(prefix);
    await labDown(prefix); // idempotent
  });
});

// The routed underlay: subnet A (192.168.77.0/24, br0, control) and B (192.168.78.0/24, br1)
// joined only by the router namespace. The stand-in routes host-gw style, so it also shows the
// L2 limit host-gw has: pods on one subnet reach each other, pods across the router do not.
describe.skipIf(process.getuid?.() !== 0)('lab plumbing, routed topology (stand-in)', () => {
  const prefix = uniquePrefix('labr');
  let tmp: string;
  let weftJs: string;
  let state: LabState;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'weft-lab-standin-'));
    weftJs = join(tmp, 'weft.js');
    writeFileSync(weftJs, STANDIN);
    await ensureBuilt(); // pods attach through the real weft-cni
    state = await labUp({ prefix, nodes: 3, pods: 1, weftJs, topology: 'routed' });
  }, 240_000);

  afterAll(async () => {
    await labDown(prefix);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('lays out two subnets, a router and the nodes as documented', async () => {
    expect(state.control.address).toBe('192.168.77.1:7000');
    expect(state.nodes.map((n) => [n.publicIp, n.underlay, n.underlayGateway])).toEqual([
      ['192.168.77.11', '192.168.77.0/24', '192.168.77.254'],
      ['192.168.77.12', '192.168.77.0/24', '192.168.77.254'],
      ['192.168.78.13', '192.168.78.0/24', '192.168.78.254'],
    ]);
    expect(state.router).toEqual({
      ns: `${prefix}rt`,
      legs: [
        { iface: 'eth0', ip: '192.168.77.254', underlay: '192.168.77.0/24', bridge: 'br0' },
        { iface: 'eth1', ip: '192.168.78.254', underlay: '192.168.78.0/24', bridge: 'br1' },
      ],
    });
    const names = (await listNs()).filter((n) => n.startsWith(prefix)).sort();
    expect(names).toEqual([`${prefix}n1`, `${prefix}n1p1`, `${prefix}n2`, `${prefix}n2p1`, `${prefix}n3`, `${prefix}n3p1`, `${prefix}rt`, `${prefix}ul`]);
    // Which bridge each node's switch port hangs off.
    const ports = await labExec(prefix, 'ul', ['ip', '-o', 'link', 'show', 'type', 'veth']);
    expect(ports.stdout).toMatch(/vn1@\S+.* master br0 /);
    expect(ports.stdout).toMatch(/vn2@\S+.* master br0 /);
    expect(ports.stdout).toMatch(/vn3@\S+.* master br1 /);
    expect(ports.stdout).toMatch(/vrt0@\S+.* master br0 /);
    expect(ports.stdout).toMatch(/vrt1@\S+.* master br1 /);
  });

  it('each node reaches the other subnet through its router leg and has no default route', async () => {
    const a = await labExec(prefix, 'n1', ['ip', 'route']);
    expect(a.stdout).toContain('192.168.78.0/24 via 192.168.77.254 dev eth0');
    const b = await labExec(prefix, 'n3', ['ip', 'route']);
    expect(b.stdout).toContain('192.168.77.0/24 via 192.168.78.254 dev eth0');
    for (const t of ['n1', 'n2', 'n3', 'rt', 'ul']) {
      expect((await labExec(prefix, t, ['ip', 'route', 'show', 'default'])).stdout, `${t} default route`).toBe('');
    }
    // The router forwards; the switch namespace, which holds both bridges, must not.
    expect((await labExec(prefix, 'rt', ['sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('1');
    expect((await labExec(prefix, 'ul', ['sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
  });

  it('a node on A pings a node on B (and back) through the router: one hop, TTL 63', async () => {
    for (const [from, to] of [
      ['n1', 'n3'],
      ['n3', 'n1'],
      ['n3', 'n2'],
    ]) {
      const r = await pingPair(prefix, from, to, { count: 2 });
      expect(r.ok, r.output).toBe(true);
      // Linux answers with TTL 64; one routed hop on the way back makes it 63.
      expect(r.output, `${from} → ${to}`).toMatch(/ttl=63/);
    }
    // Same subnet: no router in between.
    const same = await pingPair(prefix, 'n1', 'n2', { count: 1 });
    expect(same.output).toMatch(/ttl=64/);
    // The router itself answers on both legs.
    expect((await pingPair(prefix, 'n3', '192.168.77.254', { count: 1 })).ok).toBe(true);
  });

  it('control is reachable from nodes on both subnets', async () => {
    for (const n of ['n1', 'n3']) {
      const r = await probe(`${prefix}${n}`, {
        mode: 'tcp',
        targets: [state.control.address],
        untilOk: true,
        deadlineMs: 3000,
        intervalMs: 100,
        perTryTimeoutMs: 1000,
      });
      expect(
        r.some((x) => x.ok),
        `${n}: ${JSON.stringify(r)}`,
      ).toBe(true);
    }
    // And every node, B included, got its lease from it.
    const s = await labStatus(prefix);
    expect(s.nodes.every((n) => n.alive && n.ready && n.subnet !== null)).toBe(true);
  });

  it('status reports the topology, the router and each node underlay subnet', async () => {
    const s = await labStatus(prefix);
    expect(s.topology).toBe('routed');
    expect(s.underlays).toEqual(['192.168.77.0/24', '192.168.78.0/24']);
    expect(s.router).toMatchObject({ ns: `${prefix}rt`, present: true });
    expect(s.nodes.map((n) => n.underlay)).toEqual(['192.168.77.0/24', '192.168.77.0/24', '192.168.78.0/24']);
    const text = formatStatus(s);
    expect(text).toContain('routed underlay 192.168.77.0/24 + 192.168.78.0/24');
    expect(text).toMatch(/ROUTER\s+NAMESPACE/);
    expect(text).toMatch(/n3\s+\S+\s+192\.168\.78\.13\s+192\.168\.78\.0\/24/);
  });

  it('host-gw style routes work between pods on one subnet and not across the router', async () => {
    expect((await pingPair(prefix, 'n1/p1', 'n2/p1')).ok).toBe(true);
    const across = await pingPair(prefix, 'n1/p1', 'n3/p1', { count: 1, waitS: 1 });
    expect(across.ok).toBe(false);
    // The kernel refused n3 as a next hop on n1: it is not a neighbour.
    const st = (await labStatus(prefix)).nodes[0].daemon as { unrouted: string[] };
    const n3Subnet = (await labStatus(prefix)).nodes[2].subnet;
    expect(st.unrouted).toEqual([n3Subnet]);
  });

  it('down removes the router with everything else', async () => {
    await labDown(prefix);
    expect((await listNs()).filter((n) => labNsPattern(prefix).test(n))).toEqual([]);
    expect(await labProcesses(prefix)).toEqual([]);
    expect(existsSync(labDir(prefix))).toBe(false);
  });
});
