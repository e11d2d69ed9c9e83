// The netns lab with the real `weft control` and `weft daemon` (udp backend): three nodes, one
// pod each, attached through the CNI bridge plugin; traffic between every pair of nodes; the CLI's
// status/exec/down; and nothing left behind afterwards.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  contains,
  iperf3Pair,
  labDir,
  labDown,
  labNsPattern,
  labProcesses,
  labUp,
  pingPair,
  within,
  type LabState,
  type LabStatus,
  pingMatrix,
  pingFailures,
} from '../../src/lab';
import { listNs } from '../../src/lab/netns';
import { run } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

const ROOT = join(__dirname, '..', '..');
const WEFT = join(ROOT, 'bin', 'weft.js');

/** The compiled CLI, as a user runs it; bounded so a hung command fails the test instead of the run. */
function weft(args: string[], timeoutMs = 60_000): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

describe.skipIf(process.getuid?.() !== 0)('netns lab with the real daemon (udp)', () => {
  const prefix = uniquePrefix('lab');
  let state: LabState;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 3, pods: 1, backend: 'udp' });
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  });

  it('status --json: three nodes with distinct /24 leases in 10.244.0.0/16, pods inside them', () => {
    const r = weft(['lab', 'status', '--prefix', prefix, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as LabStatus;
    expect(s.exists).toBe(true);
    expect(s.backend).toBe('udp');
    expect(s.control?.alive).toBe(true);
    expect(s.nodes).toHaveLength(3);
    for (const n of s.nodes) {
      expect(n.alive && n.ready, `${n.name} alive/ready`).toBe(true);
      expect(n.subnet).toMatch(/\/24$/);
      expect(within('10.244.0.0/16', n.subnet!)).toBe(true);
      expect(n.mtu).toBe(1472);
    }
    expect(new Set(s.nodes.map((n) => n.subnet)).size).toBe(3);
    expect(s.pods).toHaveLength(3);
    for (const p of s.pods) {
      const node = s.nodes.find((n) => n.name === p.node)!;
      expect(contains(node.subnet!, p.ip), `${p.name} ${p.ip} in ${node.subnet}`).toBe(true);
    }
  });

  it('ping crosses the overlay between pods on every ordered pair of nodes', async () => {
    expect(pingFailures(await pingMatrix(state))).toEqual([]);
  });

  it('iperf3 moves data between pods on two nodes', async () => {
    const r = await iperf3Pair(prefix, 'n1/p1', 'n3/p1', { seconds: 2 });
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.bitsPerSecond).toBeGreaterThan(0);
  });

  it('exec runs commands in node and pod namespaces and returns their exit code', () => {
    const dst = state.pods.find((p) => p.node === 'n2')!.ip;
    const ping = weft(['lab', 'exec', '--prefix', prefix, 'n1/p1', '--', 'ping', '-c', '1', '-W', '2', dst]);
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    expect(ping.stdout).toContain('1 received');
    expect(weft(['lab', 'exec', '--prefix', prefix, 'n2', '--', 'sh', '-c', 'exit 3']).code).toBe(3);
    // The daemon's TUN and the overlay route into it live in the node namespace.
    const route = weft(['lab', 'exec', '--prefix', prefix, 'n1', '--', 'ip', 'route', 'show', '10.244.0.0/16']);
    expect(route.stdout).toContain('dev weft0');
  });

  it('weft status inside a node shows its lease, its peers and counters that moved with the traffic', () => {
    const r = weft(['lab', 'exec', '--prefix', prefix, 'n1', '--', process.execPath, WEFT, 'status']);
    expect(r.code, r.stderr).toBe(0);
    const j = weft(['lab', 'exec', '--prefix', prefix, 'n1', '--', process.execPath, WEFT, 'status', '--json']);
    const s = JSON.parse(j.stdout) as { lease: { subnet: string }; peers: { subnet: string; publicIp: string }[]; counters: { txPackets: number } };
    expect(r.stdout).toContain(`lease ${s.lease.subnet}`);
    expect(s.peers).toHaveLength(2);
    for (const p of s.peers) expect(r.stdout).toContain(`${p.subnet.padEnd(18)} via ${p.publicIp}`);
    expect(s.counters.txPackets).toBeGreaterThan(0);
    expect(r.stdout).toMatch(new RegExp(`txPackets\\s+${s.counters.txPackets}|txPackets\\s+\\d+`));
    const none = weft(['lab', 'exec', '--prefix', prefix, 'n1', '--', process.execPath, WEFT, 'status', '--healthz', '127.0.0.1:9']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no weft daemon answering on 127\.0\.0\.1:9/);
  });

  it('down leaves no namespace, process or state behind', async () => {
    const r = weft(['lab', 'down', '--prefix', prefix]);
    expect(r.code, r.stderr).toBe(0);
    expect((await listNs()).filter((n) => labNsPattern(prefix).test(n))).toEqual([]);
    expect(await labProcesses(prefix)).toEqual([]);
    expect(existsSync(labDir(prefix))).toBe(false);
  });
});

// The same real daemons on the routed underlay: an overlay (udp here) does not care that the
// nodes sit on two subnets behind a router, since it only needs the peers' public IPs to be
// routable. (host-gw does care: test/integration/hostgw-lab.test.ts.)
describe.skipIf(process.getuid?.() !== 0)('netns lab with the real daemon (udp), routed topology', () => {
  const prefix = uniquePrefix('labrt');
  let state: LabState;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 3, pods: 1, backend: 'udp', topology: 'routed' });
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  });

  it('status --json: each node with its underlay subnet, all ready with leases', () => {
    const r = weft(['lab', 'status', '--prefix', prefix, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as LabStatus;
    expect(s.topology).toBe('routed');
    expect(s.nodes.map((n) => [n.publicIp, n.underlay])).toEqual([
      ['192.168.77.11', '192.168.77.0/24'],
      ['192.168.77.12', '192.168.77.0/24'],
      ['192.168.78.13', '192.168.78.0/24'],
    ]);
    expect(s.nodes.every((n) => n.alive && n.ready && n.subnet !== null)).toBe(true);
  });

  it('pods on every ordered pair of nodes reach each other, across the router too', async () => {
    const failures: string[] = [];
    for (const a of state.pods) {
      for (const b of state.pods) {
        if (a.node === b.node) continue;
        const r = await pingPair(prefix, a.name, b.name, { count: 2, waitS: 2 });
        if (!r.ok) failures.push(`${a.name} → ${b.name} (${b.ip}): ${r.received}/${r.transmitted}\n${r.output}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('the encapsulated packets cross the router: its forwarding counters grow', async () => {
    const fwd = async (): Promise<number> => {
      const r = await run('ip', ['netns', 'exec', `${prefix}rt`, 'cat', '/proc/net/snmp'], { timeoutMs: 5_000 });
      // "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams ...": header line then values.
      const lines = r.stdout.split('\n').filter((l) => l.startsWith('Ip:'));
      const keys = lines[0].split(/\s+/);
      return Number(lines[1].split(/\s+/)[keys.indexOf('ForwDatagrams')]);
    };
    const before = await fwd();
    const r = await pingPair(prefix, 'n1/p1', 'n3/p1', { count: 5 });
    expect(r.ok, r.output).toBe(true);
    // 5 requests and 5 replies, each one udp datagram between n1 and n3.
    expect((await fwd()) - before).toBeGreaterThanOrEqual(10);
  });

  it('down removes the router too', async () => {
    await labDown(prefix);
    expect((await listNs()).filter((n) => labNsPattern(prefix).test(n))).toEqual([]);
    expect(await labProcesses(prefix)).toEqual([]);
  });
});
