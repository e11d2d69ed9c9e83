// assembleNode (src/datapath/node.ts): the one way a node is built, for the daemon and the offline
// node alike. These check what it wires from the backend table: host-gw gets kernel routes from
// its backend's peer hooks and no datapath; a tunnel backend gets a pipeline and datapath on the
// devices it is given; DirectRouting puts on-link peers on host routes and marks them direct.
import { describe, expect, it } from 'vitest';
import type { Lease } from '../../src/control/registry';
import { BACKEND_TYPES, BACKENDS } from '../../src/datapath/backends';
import { VXLAN_OFFLINE_SEND_PORTS } from '../../src/datapath/backends/vxlan';
import { HostGwBackend } from '../../src/datapath/backends/hostgw';
import { HostRoutes } from '../../src/datapath/host-routes';
import { assembleNode, tunnelMtu, usesHostRoutes } from '../../src/datapath/node';
import { MemoryTransport } from '../../src/io/memory-transport';
import { MemoryTun } from '../../src/io/memory-tun';
import { parseCidr, parseIpv4 } from '../../src/route/address';

const NETWORK = parseCidr('10.244.0.0/16');
const lease = (subnet: string, publicIp: string, backendType: string, backendData: Record<string, unknown> = {}): Lease => ({
  subnet,
  publicIp,
  backendType,
  backendData,
  expiration: 0,
});

function fakeRoutes(connected: string): { routes: HostRoutes; calls: string[] } {
  const calls: string[] = [];
  const [ip, len] = connected.split('/');
  const routes = new HostRoutes({
    iface: 'eth0',
    ifaceAddrs: [{ ip, prefixLen: Number(len) }],
    log: { info() {}, error() {} },
    ip: async (args) => {
      calls.push(args.join(' '));
      return '';
    },
  });
  return { routes, calls };
}

const settle = () => new Promise((r) => setTimeout(r, 10));

describe('assembleNode', () => {
  it('host-gw: a HostGwBackend whose peer hooks install and remove kernel routes; no pipeline, no datapath', async () => {
    const { routes, calls } = fakeRoutes('192.168.77.11/24');
    const node = assembleNode({
      backend: { type: 'host-gw' },
      network: NETWORK,
      lease: lease('10.244.1.0/24', '192.168.77.11', 'host-gw'),
      underlayMtu: 1500,
      hostRoutes: routes,
    });
    expect(node.backend).toBeInstanceOf(HostGwBackend);
    expect(node.pipeline).toBeUndefined();
    expect(node.datapath).toBeUndefined();
    expect(node.tunnelMtu).toBe(1500);
    const peer = lease('10.244.2.0/24', '192.168.77.12', 'host-gw');
    node.peers.applySnapshot([peer]);
    await settle();
    expect(calls).toEqual(['route replace 10.244.2.0/24 via 192.168.77.12 dev eth0']);
    node.peers.applySnapshot([]);
    await settle();
    expect(calls[1]).toBe('route del 10.244.2.0/24 via 192.168.77.12 dev eth0');
  });

  it('host-gw without kernel routes is refused with a clear error', () => {
    expect(() =>
      assembleNode({ backend: { type: 'host-gw' }, network: NETWORK, lease: lease('10.244.1.0/24', '192.168.77.11', 'host-gw'), underlayMtu: 1500 }),
    ).toThrow(/host-gw backend needs kernel host routes/);
  });

  it('a tunnel backend gets a pipeline and a datapath on the given devices, and refuses to build without them', () => {
    for (const type of ['udp', 'vxlan', 'ipip'] as const) {
      const base = { backend: { type }, network: NETWORK, lease: lease('10.244.1.0/24', '192.168.77.11', type), underlayMtu: 1500 };
      expect(() => assembleNode(base)).toThrow(new RegExp(`the ${type} backend needs a TUN device`));
      const node = assembleNode({ ...base, devices: { tun: new MemoryTun(), transport: new MemoryTransport('udp', parseIpv4('192.168.77.11'), 8285, 1500) } });
      expect(node.backend.type).toBe(type);
      expect(node.pipeline).toBeDefined();
      expect(node.datapath).toBeDefined();
      expect(node.tunnelMtu).toBe(1500 - BACKENDS[type].overhead);
      expect(node.hostRoutes).toBeUndefined();
    }
  });

  it('DirectRouting: an on-link peer gets a host route and is marked direct; a peer behind a router keeps the tunnel', async () => {
    const { routes, calls } = fakeRoutes('192.168.77.11/24');
    const node = assembleNode({
      backend: { type: 'vxlan', port: 8472, vni: 1, directRouting: true },
      network: NETWORK,
      lease: lease('10.244.1.0/24', '192.168.77.11', 'vxlan', BACKENDS.vxlan.leaseData(parseIpv4('192.168.77.11'), 1)),
      underlayMtu: 1500,
      devices: { tun: new MemoryTun(), transport: new MemoryTransport('udp', parseIpv4('192.168.77.11'), 8472, 1500, VXLAN_OFFLINE_SEND_PORTS, true) },
      hostRoutes: routes,
    });
    expect(node.hostRoutes).toBe(routes);
    node.peers.applySnapshot([
      lease('10.244.2.0/24', '192.168.77.12', 'vxlan', BACKENDS.vxlan.leaseData(parseIpv4('192.168.77.12'), 1)),
      lease('10.244.3.0/24', '192.168.78.13', 'vxlan', BACKENDS.vxlan.leaseData(parseIpv4('192.168.78.13'), 1)),
    ]);
    await settle();
    expect(calls).toEqual(['route replace 10.244.2.0/24 via 192.168.77.12 dev eth0']);
    const byIp = new Map(node.peers.peers().map((p) => [p.publicIp, p.direct]));
    expect(byIp.get(parseIpv4('192.168.77.12'))).toBe(true);
    expect(byIp.get(parseIpv4('192.168.78.13'))).toBe(false);
  });
});

describe('the backend table', () => {
  it('is the one list of backend names, and says which use kernel routes and what MTU each leaves', () => {
    expect(BACKEND_TYPES).toEqual(['udp', 'vxlan', 'ipip', 'host-gw']);
    expect(BACKEND_TYPES.map((t) => tunnelMtu(t, 1500))).toEqual([1472, 1450, 1480, 1500]);
    expect(usesHostRoutes({ type: 'host-gw' })).toBe(true);
    expect(usesHostRoutes({ type: 'vxlan', directRouting: true })).toBe(true);
    expect(usesHostRoutes({ type: 'vxlan' })).toBe(false);
    // udp has no DirectRouting in flannel: the flag means nothing there.
    expect(usesHostRoutes({ type: 'udp', directRouting: true })).toBe(false);
  });
});
