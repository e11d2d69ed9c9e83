// DirectRouting on real daemons over the routed underlay: n1 and n2 share 192.168.77.0/24, n3
// sits on 192.168.78.0/24 behind the router. With Backend.DirectRouting the daemon gives the
// peers on its own subnet a host-gw route (more specific than the Network's route into weft0)
// and leaves the others to the tunnel, as flannel's vxlan backend does. The datapath's
// counters show which traffic went through it: only the cross-router pings.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  daemonStatus,
  labDown,
  labExec,
  labNsPattern,
  labProcesses,
  labStatus,
  labUp,
  pingPair,
  type LabState,
  type LabStatus,
  pingMatrix,
  pingFailures,
} from '../../src/lab';
import { listNs } from '../../src/lab/netns';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

// The tunnel for the peers behind the router: flannel's vxlan and ipip backends both take DirectRouting.
const BACKENDS = ['vxlan', 'ipip'] as const;

interface DaemonStatus {
  peers: { subnet: string; publicIp: string; direct: boolean }[];
  counters: { txPackets: number; rxPackets: number; tunReadPackets: number; tunWritePackets: number };
  hostRoutes?: { routes: { subnet: string; via: string; dev: string }[]; unreachable: number; unreachablePeers: unknown[] };
}

describe.skipIf(process.getuid?.() !== 0).each(BACKENDS)('DirectRouting (%s) on the routed underlay', (BACKEND) => {
  const prefix = uniquePrefix(`dr${BACKEND[0]}`);
  let state: LabState;
  let status: LabStatus;
  const node = (name: string): LabStatus['nodes'][number] => status.nodes.find((n) => n.name === name)!;
  const pod = (n: string): string => state.pods.find((p) => p.node === n)!.ip;
  const daemon = async (n: string): Promise<DaemonStatus> => (await daemonStatus(prefix, n)) as DaemonStatus;

  /** `ip route get DST` inside node n: the kernel's actual choice, not just the table's contents. */
  async function routeGet(n: string, dst: string): Promise<string> {
    const r = await labExec(prefix, n, ['ip', 'route', 'get', dst]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.split('\n')[0];
  }

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 3, pods: 1, backend: BACKEND, topology: 'routed', directRouting: true });
    status = await labStatus(prefix);
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  });

  it('net-conf.json carries DirectRouting and the daemons run the tunnel', async () => {
    expect(status.backendConfig).toEqual({ DirectRouting: true });
    for (const n of ['n1', 'n2', 'n3']) {
      const link = await labExec(prefix, n, ['ip', 'link', 'show', 'dev', 'weft0']);
      expect(link.code, `${n} has weft0`).toBe(0);
    }
  });

  it('same-subnet peers get a host route via eth0; cross-router peers go into weft0', async () => {
    // n1 ⇄ n2: direct.
    expect(await routeGet('n1', pod('n2'))).toMatch(new RegExp(`via ${node('n2').publicIp.replace(/\./g, '\\.')} dev eth0`));
    expect(await routeGet('n2', pod('n1'))).toMatch(new RegExp(`via ${node('n1').publicIp.replace(/\./g, '\\.')} dev eth0`));
    // Anything involving n3: the tunnel.
    for (const [from, to] of [
      ['n1', 'n3'],
      ['n2', 'n3'],
      ['n3', 'n1'],
      ['n3', 'n2'],
    ]) {
      const line = await routeGet(from, pod(to));
      expect(line, `${from} → ${to}'s pod`).toMatch(/dev weft0/);
      expect(line).not.toMatch(/dev eth0/);
    }
  });

  it('/status marks which peers are direct and lists the host routes, with nothing unreachable', async () => {
    const n1 = await daemon('n1');
    expect(n1.peers.map((p) => [p.publicIp, p.direct]).sort()).toEqual([
      ['192.168.77.12', true],
      ['192.168.78.13', false],
    ]);
    expect(n1.hostRoutes?.routes).toEqual([{ subnet: node('n2').subnet, via: '192.168.77.12', dev: 'eth0' }]);
    expect(n1.hostRoutes?.unreachable).toBe(0);
    // n3 has no neighbour among the nodes: no host route at all, and that is not an error.
    const n3 = await daemon('n3');
    expect(n3.peers.every((p) => !p.direct)).toBe(true);
    expect(n3.hostRoutes?.routes).toEqual([]);
    expect(n3.hostRoutes?.unreachable).toBe(0);
  });

  it('pods on every ordered pair of nodes reach each other, direct and tunnelled alike', async () => {
    expect(pingFailures(await pingMatrix(state))).toEqual([]);
  });

  it('only the cross-router traffic goes through the datapath', async () => {
    const c = async (): Promise<Record<string, DaemonStatus['counters']>> => ({
      n1: (await daemon('n1')).counters,
      n2: (await daemon('n2')).counters,
      n3: (await daemon('n3')).counters,
    });
    const delta = (a: DaemonStatus['counters'], b: DaemonStatus['counters']): DaemonStatus['counters'] => ({
      txPackets: b.txPackets - a.txPackets,
      rxPackets: b.rxPackets - a.rxPackets,
      tunReadPackets: b.tunReadPackets - a.tunReadPackets,
      tunWritePackets: b.tunWritePackets - a.tunWritePackets,
    });
    const none = { txPackets: 0, rxPackets: 0, tunReadPackets: 0, tunWritePackets: 0 };

    // Same subnet: 10 echo requests and replies between n1 and n2, and not one packet in a datapath.
    const before = await c();
    const same = await pingPair(prefix, 'n1/p1', 'n2/p1', { count: 10, intervalS: 0.05 });
    expect(same.ok, same.output).toBe(true);
    const mid = await c();
    for (const n of ['n1', 'n2', 'n3']) expect(delta(before[n], mid[n]), `${n} during n1 ⇄ n2`).toEqual(none);

    // Across the router: each request leaves n1's TUN and is sent, each reply arrives and is written back.
    const across = await pingPair(prefix, 'n1/p1', 'n3/p1', { count: 10, intervalS: 0.05 });
    expect(across.ok, across.output).toBe(true);
    const after = await c();
    const d1 = delta(mid.n1, after.n1);
    const d3 = delta(mid.n3, after.n3);
    expect(d1.tunReadPackets).toBeGreaterThanOrEqual(10);
    expect(d1.txPackets).toBeGreaterThanOrEqual(10);
    expect(d1.rxPackets).toBeGreaterThanOrEqual(10);
    expect(d1.tunWritePackets).toBeGreaterThanOrEqual(10);
    expect(d3.rxPackets).toBeGreaterThanOrEqual(10);
    expect(d3.txPackets).toBeGreaterThanOrEqual(10);
    expect(delta(mid.n2, after.n2), 'n2 during n1 ⇄ n3').toEqual(none);
  });

  it('down leaves nothing behind', async () => {
    await labDown(prefix);
    expect((await listNs()).filter((n) => labNsPattern(prefix).test(n))).toEqual([]);
    expect(await labProcesses(prefix)).toEqual([]);
  });
});
