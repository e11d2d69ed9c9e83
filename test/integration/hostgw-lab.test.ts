// host-gw on real daemons: no tunnel, only kernel routes `SUBNET via PEER dev eth0`. On the flat
// underlay every node is every other node's neighbour and everything works; on the routed
// underlay the nodes behind the router cannot be a next hop, so their pods stay unreachable and
// the daemon says so (a log line naming peer, subnet, interface subnets and the alternative;
// /status listing the unreachable peers).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  daemonStatus,
  iperf3Pair,
  labDown,
  labExec,
  labNsPattern,
  labProcesses,
  labStatus,
  labUp,
  pingPair,
  startDaemon,
  stopDaemon,
  type LabState,
  type LabStatus,
  pingMatrix,
  pingFailures,
} from '../../src/lab';
import { listNs } from '../../src/lab/netns';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

interface HostRoutesStatus {
  routes: { subnet: string; via: string; dev: string }[];
  unreachable: number;
  unreachablePeers: { subnet: string; publicIp: string }[];
}

interface RouteJson {
  dst: string;
  gateway?: string;
  dev: string;
}

async function kernelRoutes(prefix: string, node: string): Promise<RouteJson[]> {
  const r = await labExec(prefix, node, ['ip', '-j', 'route', 'show', 'table', 'main']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as RouteJson[];
}

async function hostRoutesOf(prefix: string, node: string): Promise<HostRoutesStatus> {
  const st = (await daemonStatus(prefix, node)) as { hostRoutes?: HostRoutesStatus };
  expect(st.hostRoutes, `${node} /status has hostRoutes`).toBeDefined();
  return st.hostRoutes!;
}

describe.skipIf(process.getuid?.() !== 0)('host-gw, flat underlay (3 nodes on one bridge)', () => {
  const prefix = uniquePrefix('hgf');
  let state: LabState;
  let status: LabStatus;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 3, pods: 1, backend: 'host-gw' });
    status = await labStatus(prefix);
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  });

  it('every node routes each peer subnet via the peer public IP on eth0, with no TUN and the underlay MTU', async () => {
    expect(status.nodes.every((n) => n.ready && n.subnet !== null)).toBe(true);
    for (const n of status.nodes) {
      expect(n.mtu, `${n.name} FLANNEL_MTU`).toBe(1500);
      const routes = await kernelRoutes(prefix, n.name);
      for (const peer of status.nodes.filter((p) => p !== n)) {
        const r = routes.find((x) => x.dst === peer.subnet);
        expect(r, `${n.name}: route to ${peer.name}'s ${peer.subnet}`).toMatchObject({ gateway: peer.publicIp, dev: 'eth0' });
      }
      // Nothing sends the cluster network into a tunnel device.
      expect(routes.find((x) => x.dst === '10.244.0.0/16')).toBeUndefined();
      const link = await labExec(prefix, n.name, ['ip', 'link', 'show', 'dev', 'weft0']);
      expect(link.code, `${n.name} has no weft0`).not.toBe(0);
      expect(link.stderr).toMatch(/does not exist/);
      const hr = await hostRoutesOf(prefix, n.name);
      expect(hr.unreachable).toBe(0);
      expect(hr.routes.map((r) => r.subnet).sort()).toEqual(
        status.nodes
          .filter((p) => p !== n)
          .map((p) => p.subnet)
          .sort(),
      );
    }
  });

  it('pods on every ordered pair of nodes reach each other', async () => {
    expect(pingFailures(await pingMatrix(state))).toEqual([]);
  });

  it('iperf3 moves data between pods on two nodes', async () => {
    const r = await iperf3Pair(prefix, 'n1/p1', 'n3/p1', { seconds: 2 });
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.bitsPerSecond).toBeGreaterThan(0);
  });

  it('a daemon stopped with SIGTERM removes its routes; started again, it puts them back', async () => {
    const peerSubnets = status.nodes.filter((n) => n.name !== 'n2').map((n) => n.subnet);
    await stopDaemon(prefix, 'n2', 'SIGTERM');
    const after = (await kernelRoutes(prefix, 'n2')).map((r) => r.dst);
    for (const s of peerSubnets) expect(after, `n2 still routes ${s}`).not.toContain(s);
    await startDaemon(prefix, 'n2');
    const back = await kernelRoutes(prefix, 'n2');
    for (const s of peerSubnets)
      expect(
        back.find((r) => r.dst === s),
        `n2 routes ${s} again`,
      ).toBeDefined();
    expect((await pingPair(prefix, 'n2/p1', 'n1/p1')).ok).toBe(true);
  });
});

describe.skipIf(process.getuid?.() !== 0)('host-gw, routed underlay (n1, n2 on 192.168.77.0/24; n3 on 192.168.78.0/24 behind the router)', () => {
  const prefix = uniquePrefix('hgr');
  let state: LabState;
  let status: LabStatus;
  const node = (name: string): LabStatus['nodes'][number] => status.nodes.find((n) => n.name === name)!;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 3, pods: 1, backend: 'host-gw', topology: 'routed' });
    status = await labStatus(prefix);
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  });

  it('pods on the same underlay subnet reach each other', async () => {
    for (const [a, b] of [
      ['n1/p1', 'n2/p1'],
      ['n2/p1', 'n1/p1'],
    ]) {
      const r = await pingPair(prefix, a, b, { count: 3, waitS: 2 });
      expect(r.ok, `${a} → ${b}\n${r.output}`).toBe(true);
    }
  });

  it('pods across the router do not, and their node answers net-unreachable', async () => {
    for (const [a, b] of [
      ['n1/p1', 'n3/p1'],
      ['n3/p1', 'n2/p1'],
    ]) {
      const r = await pingPair(prefix, a, b, { count: 2, waitS: 1 });
      expect(r.received, `${a} → ${b} must not get through\n${r.output}`).toBe(0);
      // No route for the peer's subnet on the node: the kernel refuses at once (ICMP type 3 code 0).
      expect(r.output).toMatch(/Destination Net Unreachable/);
    }
    const n1Routes = await kernelRoutes(prefix, 'n1');
    expect(n1Routes.find((r) => r.dst === node('n3').subnet)).toBeUndefined();
    expect(n1Routes.find((r) => r.dst === node('n2').subnet)).toMatchObject({ gateway: node('n2').publicIp, dev: 'eth0' });
  });

  it('the daemon logs why: the peer, its subnet, the interface subnets and what to use instead', () => {
    const n1 = state.nodes.find((n) => n.name === 'n1')!;
    const lines = readFileSync(n1.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('host-gw cannot reach'));
    expect(lines).toHaveLength(1);
    const rec = JSON.parse(lines[0]) as { level: number; msg: string; subnet: string; publicIp: string; ifaceSubnets: string[] };
    expect(rec.level).toBe(50); // pino's error
    expect(rec).toMatchObject({ subnet: node('n3').subnet, publicIp: '192.168.78.13', ifaceSubnets: ['192.168.77.0/24'] });
    for (const s of ['192.168.78.13', node('n3').subnet!, 'eth0', '192.168.77.0/24', 'vxlan', 'DirectRouting']) expect(rec.msg).toContain(s);
  });

  it('/status reports the unreachable peers on both sides of the router', async () => {
    const n1 = await hostRoutesOf(prefix, 'n1');
    expect(n1.unreachable).toBe(1);
    expect(n1.unreachablePeers).toEqual([{ subnet: node('n3').subnet, publicIp: '192.168.78.13' }]);
    expect(n1.routes).toEqual([{ subnet: node('n2').subnet, via: '192.168.77.12', dev: 'eth0' }]);
    const n3 = await hostRoutesOf(prefix, 'n3');
    expect(n3.unreachable).toBe(2);
    expect(n3.unreachablePeers.map((p) => p.publicIp).sort()).toEqual(['192.168.77.11', '192.168.77.12']);
    expect(n3.routes).toEqual([]);
  });

  it('down leaves nothing behind', async () => {
    await labDown(prefix);
    expect((await listNs()).filter((n) => labNsPattern(prefix).test(n))).toEqual([]);
    expect(await labProcesses(prefix)).toEqual([]);
  });
});
