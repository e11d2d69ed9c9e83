// HostRoutes against a real kernel (root only): a namespace this test makes, holding a veth pair
// whose one end plays the underlay interface. Checks that the routes it installs are the ones
// the kernel shows, that the kernel's own refusal (a gateway that is not a neighbour) ends up
// counted as unreachable rather than thrown, and that removeAll leaves no route behind.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostRoutes } from '../../src/datapath/host-routes';
import { PeerCounters, type Peer } from '../../src/datapath/peer';
import { ip, ipJson } from '../../src/io/iproute';
import { parseCidr, parseIpv4 } from '../../src/route/address';

const NS = `weft-t-hr-${randomBytes(4).toString('hex')}`;
const nsIp = (args: readonly string[]): Promise<string> => ip(args, { netns: NS });

const peer = (subnet: string, publicIp: string): Peer => ({
  subnet: parseCidr(subnet),
  publicIp: parseIpv4(publicIp),
  port: 0,
  backendData: {},
  local: false,
  direct: false,
  backendState: null,
  counters: new PeerCounters(),
});

interface RouteJson {
  dst: string;
  gateway?: string;
  dev: string;
}

const routesIn = async (): Promise<RouteJson[]> =>
  (await ipJson<RouteJson[]>(['route', 'show', 'table', 'main'], { netns: NS })).filter((r) => r.dst.startsWith('10.244.'));

function quietLog(): { log: { info(o: object, m: string): void; error(o: object, m: string): void }; errors: string[] } {
  const errors: string[] = [];
  return { log: { info: () => undefined, error: (_o, m) => errors.push(m) }, errors };
}

describe.skipIf(process.getuid?.() !== 0)('HostRoutes in a network namespace', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, '-batch', '-'], {
      input: ['link add va type veth peer name vb', 'addr add 192.168.77.11/24 dev va', 'link set va up', 'link set vb up'].join('\n') + '\n',
    });
  });
  afterAll(() => {
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      // never created
    }
  });

  it('installs, reports and removes SUBNET via PEER dev IFACE', async () => {
    const { log, errors } = quietLog();
    const hr = new HostRoutes({ iface: 'va', ifaceAddrs: [{ ip: '192.168.77.11', prefixLen: 24 }], log, ip: nsIp });
    expect(await hr.add(peer('10.244.2.0/24', '192.168.77.12'))).toBe(true);
    expect(await hr.add(peer('10.244.3.0/24', '192.168.77.13'))).toBe(true);
    expect(await hr.add(peer('10.244.4.0/24', '192.168.78.14'))).toBe(false);
    expect(errors).toHaveLength(1);
    expect(await routesIn()).toEqual([
      expect.objectContaining({ dst: '10.244.2.0/24', gateway: '192.168.77.12', dev: 'va' }),
      expect.objectContaining({ dst: '10.244.3.0/24', gateway: '192.168.77.13', dev: 'va' }),
    ]);
    expect(hr.unreachablePeers()).toEqual([{ subnet: '10.244.4.0/24', publicIp: '192.168.78.14' }]);

    await hr.remove(peer('10.244.2.0/24', '192.168.77.12'));
    expect((await routesIn()).map((r) => r.dst)).toEqual(['10.244.3.0/24']);

    // Someone else removed our route: removeAll still completes and reports nothing.
    await nsIp(['route', 'del', '10.244.3.0/24']);
    await hr.removeAll();
    expect(await routesIn()).toEqual([]);
    expect(hr.routes()).toEqual([]);
    expect(errors).toHaveLength(1);
  });

  it('the kernel refusing a gateway that is not a neighbour is counted unreachable, not thrown', async () => {
    const { log, errors } = quietLog();
    // Claims a subnet the interface does not really have, so the on-link check passes and the
    // kernel's nexthop check (fib_check_nh) is what refuses.
    const hr = new HostRoutes({ iface: 'va', ifaceAddrs: [{ ip: '192.168.99.11', prefixLen: 24 }], log, ip: nsIp });
    expect(await hr.add(peer('10.244.5.0/24', '192.168.99.12'))).toBe(false);
    expect(hr.unreachablePeers()).toEqual([{ subnet: '10.244.5.0/24', publicIp: '192.168.99.12' }]);
    expect(errors).toHaveLength(1);
    expect(await routesIn()).toEqual([]);
  });

  it('a missing interface is an ip failure, logged and counted', async () => {
    const { log, errors } = quietLog();
    const hr = new HostRoutes({ iface: 'nosuch0', ifaceAddrs: [{ ip: '192.168.77.11', prefixLen: 24 }], log, ip: nsIp });
    await expect(hr.add(peer('10.244.6.0/24', '192.168.77.16'))).resolves.toBe(false);
    expect(hr.unreachable).toBe(1);
    expect(errors).toHaveLength(1);
  });
});
