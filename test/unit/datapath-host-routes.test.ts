// HostRoutes: the on-link rule, the ip commands it issues, their order, and its bookkeeping of
// installed routes and unreachable peers. The ip runner is injected: the fake records argv and
// can fail or stall chosen commands. test/integration/host-routes-kernel.test.ts runs the same
// class against a real kernel inside a namespace it makes.
import { describe, expect, it } from 'vitest';
import { HostRoutes } from '../../src/datapath/host-routes';
import { PeerCounters, type Peer } from '../../src/datapath/peer';
import { parseCidr, parseIpv4 } from '../../src/route/address';

const peer = (subnet: string, publicIp: string, local = false): Peer => ({
  subnet: parseCidr(subnet),
  publicIp: parseIpv4(publicIp),
  port: 0,
  backendData: {},
  local,
  direct: false,
  backendState: null,
  counters: new PeerCounters(),
});

interface Logged {
  level: 'info' | 'error';
  o: object;
  m: string;
}

class FakeIp {
  calls: string[] = [];
  /** A command line (joined by spaces) matching this fails with the given stderr-like message. */
  failures: { re: RegExp; msg: string }[] = [];
  /** Commands matching this wait until release() before completing. */
  stall?: RegExp;
  private released?: () => void;
  private gate = new Promise<void>((r) => (this.released = r));
  run = async (args: readonly string[]): Promise<string> => {
    const line = args.join(' ');
    this.calls.push(line);
    if (this.stall?.test(line)) await this.gate;
    const f = this.failures.find((x) => x.re.test(line));
    if (f) throw new Error(`ip ${line}: ${f.msg}`);
    return '';
  };
  release(): void {
    this.released!();
  }
}

function make(addrs = [{ ip: '192.168.77.11', prefixLen: 24 }]): { hr: HostRoutes; fake: FakeIp; logs: Logged[] } {
  const fake = new FakeIp();
  const logs: Logged[] = [];
  const log = {
    info: (o: object, m: string) => logs.push({ level: 'info', o, m }),
    error: (o: object, m: string) => logs.push({ level: 'error', o, m }),
  };
  return { hr: new HostRoutes({ iface: 'eth0', ifaceAddrs: addrs, log, ip: fake.run }), fake, logs };
}

describe('HostRoutes.onLink', () => {
  it('is true exactly for addresses inside one of the interface connected subnets', () => {
    const { hr } = make([
      { ip: '192.168.77.11', prefixLen: 24 },
      { ip: '10.9.8.7', prefixLen: 30 },
    ]);
    expect(hr.onLink(parseIpv4('192.168.77.12'))).toBe(true);
    expect(hr.onLink(parseIpv4('192.168.77.0'))).toBe(true);
    expect(hr.onLink(parseIpv4('192.168.77.255'))).toBe(true);
    expect(hr.onLink(parseIpv4('192.168.78.12'))).toBe(false);
    expect(hr.onLink(parseIpv4('192.168.76.255'))).toBe(false);
    // 10.9.8.7/30 covers 10.9.8.4–7 only.
    expect(hr.onLink(parseIpv4('10.9.8.4'))).toBe(true);
    expect(hr.onLink(parseIpv4('10.9.8.8'))).toBe(false);
    expect(hr.onLink(parseIpv4('10.9.8.3'))).toBe(false);
  });

  it('handles addresses with the top bit set and /32 and /0 prefixes', () => {
    expect(make([{ ip: '200.1.2.3', prefixLen: 16 }]).hr.onLink(parseIpv4('200.1.255.1'))).toBe(true);
    const host = make([{ ip: '172.16.0.5', prefixLen: 32 }]).hr;
    expect(host.onLink(parseIpv4('172.16.0.5'))).toBe(true);
    expect(host.onLink(parseIpv4('172.16.0.6'))).toBe(false);
    expect(make([{ ip: '172.16.0.5', prefixLen: 0 }]).hr.onLink(parseIpv4('8.8.8.8'))).toBe(true);
  });

  it('with no IPv4 address on the interface nothing is on-link', () => {
    expect(make([]).hr.onLink(parseIpv4('192.168.77.12'))).toBe(false);
  });

  it('refuses a malformed interface address', () => {
    expect(() => make([{ ip: '192.168.77', prefixLen: 24 }])).toThrow(/invalid IPv4/);
    expect(() => make([{ ip: '192.168.77.1', prefixLen: 33 }])).toThrow(/prefix length/);
  });
});

describe('HostRoutes bookkeeping', () => {
  it('installs an on-link peer with ip route replace SUBNET via IP dev IFACE', async () => {
    const { hr, fake } = make();
    expect(await hr.add(peer('10.244.2.0/24', '192.168.77.12'))).toBe(true);
    expect(fake.calls).toEqual(['route replace 10.244.2.0/24 via 192.168.77.12 dev eth0']);
    expect(hr.routes()).toEqual([{ subnet: '10.244.2.0/24', via: '192.168.77.12', dev: 'eth0' }]);
    expect(hr.unreachable).toBe(0);
    expect(hr.unreachablePeers()).toEqual([]);
  });

  it('never routes our own subnet', async () => {
    const { hr, fake } = make();
    expect(await hr.add(peer('10.244.1.0/24', '192.168.77.11', true))).toBe(false);
    expect(fake.calls).toEqual([]);
    expect(hr.unreachable).toBe(0);
  });

  it('an off-link peer gets no route, one clear error, and counts as unreachable', async () => {
    const { hr, fake, logs } = make();
    expect(await hr.add(peer('10.244.3.0/24', '192.168.78.13'))).toBe(false);
    expect(fake.calls).toEqual([]);
    expect(hr.unreachable).toBe(1);
    expect(hr.unreachablePeers()).toEqual([{ subnet: '10.244.3.0/24', publicIp: '192.168.78.13' }]);
    expect(hr.routes()).toEqual([]);
    const errors = logs.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    // Names the peer, its subnet, the interface and its subnets, and what to use instead.
    for (const s of ['192.168.78.13', '10.244.3.0/24', 'eth0', '192.168.77.0/24', 'vxlan', 'DirectRouting']) {
      expect(errors[0].m).toContain(s);
    }
    expect(errors[0].o).toMatchObject({ subnet: '10.244.3.0/24', publicIp: '192.168.78.13', iface: 'eth0', ifaceSubnets: ['192.168.77.0/24'] });
  });

  it('an ip failure is logged and counted, never thrown', async () => {
    const { hr, fake, logs } = make();
    fake.failures.push({ re: /10\.244\.2\.0/, msg: 'RTNETLINK answers: Network is unreachable' });
    await expect(hr.add(peer('10.244.2.0/24', '192.168.77.12'))).resolves.toBe(false);
    expect(hr.unreachablePeers()).toEqual([{ subnet: '10.244.2.0/24', publicIp: '192.168.77.12' }]);
    expect(hr.routes()).toEqual([]);
    expect(logs.find((l) => l.level === 'error')?.m).toMatch(/192\.168\.77\.12.*10\.244\.2\.0\/24/);
    // A later success for the same peer clears the condition.
    fake.failures = [];
    expect(await hr.add(peer('10.244.2.0/24', '192.168.77.12'))).toBe(true);
    expect(hr.unreachable).toBe(0);
  });

  it('remove deletes the route it installed and forgets unreachable peers', async () => {
    const { hr, fake } = make();
    await hr.add(peer('10.244.2.0/24', '192.168.77.12'));
    await hr.add(peer('10.244.3.0/24', '192.168.78.13'));
    await hr.remove(peer('10.244.2.0/24', '192.168.77.12'));
    await hr.remove(peer('10.244.3.0/24', '192.168.78.13'));
    expect(fake.calls).toEqual(['route replace 10.244.2.0/24 via 192.168.77.12 dev eth0', 'route del 10.244.2.0/24 via 192.168.77.12 dev eth0']);
    expect(hr.routes()).toEqual([]);
    expect(hr.unreachable).toBe(0);
    // Removing what was never added issues nothing.
    await hr.remove(peer('10.244.9.0/24', '192.168.77.19'));
    expect(fake.calls).toHaveLength(2);
  });

  it('a route already gone from the kernel is not an error on remove; other failures are logged, not thrown', async () => {
    const { hr, fake, logs } = make();
    await hr.add(peer('10.244.2.0/24', '192.168.77.12'));
    await hr.add(peer('10.244.4.0/24', '192.168.77.14'));
    fake.failures.push({ re: /del 10\.244\.2/, msg: 'RTNETLINK answers: No such process' });
    fake.failures.push({ re: /del 10\.244\.4/, msg: 'RTNETLINK answers: Operation not permitted' });
    await expect(hr.remove(peer('10.244.2.0/24', '192.168.77.12'))).resolves.toBeUndefined();
    await expect(hr.remove(peer('10.244.4.0/24', '192.168.77.14'))).resolves.toBeUndefined();
    const errors = logs.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0].o).toMatchObject({ subnet: '10.244.4.0/24' });
    expect(hr.routes()).toEqual([]);
  });

  it('a subnet that moved to another node: replace overwrites, and the late remove of the old lease keeps the new route', async () => {
    const { hr, fake } = make();
    await hr.add(peer('10.244.2.0/24', '192.168.77.12'));
    await hr.add(peer('10.244.2.0/24', '192.168.77.22'));
    await hr.remove(peer('10.244.2.0/24', '192.168.77.12'));
    expect(fake.calls).toEqual(['route replace 10.244.2.0/24 via 192.168.77.12 dev eth0', 'route replace 10.244.2.0/24 via 192.168.77.22 dev eth0']);
    expect(hr.routes()).toEqual([{ subnet: '10.244.2.0/24', via: '192.168.77.22', dev: 'eth0' }]);
  });

  it('a subnet whose new holder is off-link loses the route to its old on-link holder', async () => {
    const { hr, fake } = make();
    await hr.add(peer('10.244.2.0/24', '192.168.77.12'));
    expect(await hr.add(peer('10.244.2.0/24', '192.168.78.12'))).toBe(false);
    expect(fake.calls).toEqual(['route replace 10.244.2.0/24 via 192.168.77.12 dev eth0', 'route del 10.244.2.0/24 via 192.168.77.12 dev eth0']);
    expect(hr.routes()).toEqual([]);
    expect(hr.unreachablePeers()).toEqual([{ subnet: '10.244.2.0/24', publicIp: '192.168.78.12' }]);
  });

  it('runs commands one at a time in call order, even when nobody awaits them', async () => {
    const { hr, fake } = make();
    fake.stall = /replace 10\.244\.2/;
    const p1 = hr.add(peer('10.244.2.0/24', '192.168.77.12'));
    const p2 = hr.remove(peer('10.244.2.0/24', '192.168.77.12'));
    const p3 = hr.add(peer('10.244.3.0/24', '192.168.77.13'));
    // Let the event loop run: nothing after the stalled replace may have started.
    await new Promise((r) => setTimeout(r, 20));
    expect(fake.calls).toEqual(['route replace 10.244.2.0/24 via 192.168.77.12 dev eth0']);
    fake.release();
    expect(await p1).toBe(true);
    await p2;
    expect(await p3).toBe(true);
    expect(fake.calls).toEqual([
      'route replace 10.244.2.0/24 via 192.168.77.12 dev eth0',
      'route del 10.244.2.0/24 via 192.168.77.12 dev eth0',
      'route replace 10.244.3.0/24 via 192.168.77.13 dev eth0',
    ]);
    expect(hr.routes().map((r) => r.subnet)).toEqual(['10.244.3.0/24']);
  });

  it('a failed command does not stop the ones queued after it', async () => {
    const { hr, fake } = make();
    fake.failures.push({ re: /10\.244\.2/, msg: 'boom' });
    const results = await Promise.all([hr.add(peer('10.244.2.0/24', '192.168.77.12')), hr.add(peer('10.244.3.0/24', '192.168.77.13'))]);
    expect(results).toEqual([false, true]);
  });

  it('removeAll deletes every route it installed and clears the unreachable list', async () => {
    const { hr, fake } = make();
    await hr.add(peer('10.244.2.0/24', '192.168.77.12'));
    await hr.add(peer('10.244.3.0/24', '192.168.77.13'));
    await hr.add(peer('10.244.4.0/24', '192.168.78.14'));
    fake.calls = [];
    await hr.removeAll();
    expect(fake.calls.sort()).toEqual(['route del 10.244.2.0/24 via 192.168.77.12 dev eth0', 'route del 10.244.3.0/24 via 192.168.77.13 dev eth0']);
    expect(hr.routes()).toEqual([]);
    expect(hr.unreachable).toBe(0);
  });
});
