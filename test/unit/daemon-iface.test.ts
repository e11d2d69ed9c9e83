// Interface discovery's selection (src/daemon/iface.ts selectUnderlay) on made-up snapshots:
// flanneld's precedence, its address rules, what is announced, and one-line failures naming
// what was tried. The same selection on a real namespace: test/integration/daemon-iface.test.ts.
import { describe, expect, it } from 'vitest';
import { selectUnderlay, usableAddrs, type UnderlaySelectors, type UnderlaySnapshot } from '../../src/daemon/iface';
import type { IfaceAddrs } from '../../src/io/iproute';

const addr = (ip: string, more: Partial<IfaceAddrs['addrs'][number]> = {}) => ({ ip, prefixLen: 24, deprecated: false, dynamic: false, ...more });
const LO: IfaceAddrs = { name: 'lo', index: 1, mtu: 65536, addrs: [addr('127.0.0.1')] };
const ETH0: IfaceAddrs = { name: 'eth0', index: 2, mtu: 1500, addrs: [addr('192.0.2.10')] };
const ETH1: IfaceAddrs = { name: 'eth1', index: 3, mtu: 9000, addrs: [addr('198.51.100.10'), addr('198.51.100.11')] };
const WAN0: IfaceAddrs = { name: 'wan0', index: 4, mtu: 1400, addrs: [addr('203.0.113.10')] };
const BARE: IfaceAddrs = { name: 'bare0', index: 5, mtu: 1500, addrs: [] };

const SNAP: UnderlaySnapshot = { ifaces: [LO, ETH0, ETH1, WAN0, BARE], defaultRoute: { dev: 'wan0' }, canReach: { dev: 'eth1', src: '198.51.100.11' } };
const sel = (s: Partial<UnderlaySelectors>): UnderlaySelectors => ({ ifaces: [], regexes: [], ...s });
const pick = (s: Partial<UnderlaySelectors>, snap: UnderlaySnapshot = SNAP) => {
  const u = selectUnderlay(sel(s), snap);
  return { iface: u.iface, addr: u.addr, publicIp: u.publicIp };
};
const refusal = (s: Partial<UnderlaySelectors>, snap: UnderlaySnapshot = SNAP): string => {
  try {
    selectUnderlay(sel(s), snap);
  } catch (e) {
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error(`selected something for ${JSON.stringify(s)}`);
};

describe('interface selection precedence', () => {
  it('with no selector and no --public-ip: the default route interface and its first address', () => {
    expect(pick({})).toEqual({ iface: 'wan0', addr: '203.0.113.10', publicIp: '203.0.113.10' });
    expect(selectUnderlay(sel({}), SNAP).mtu).toBe(1400);
  });

  it('with only --public-ip: the interface holding it, never the default route', () => {
    expect(pick({ publicIp: '198.51.100.11' })).toEqual({ iface: 'eth1', addr: '198.51.100.11', publicIp: '198.51.100.11' });
  });

  it('--iface by name (first usable address) or by address (that address)', () => {
    expect(pick({ ifaces: ['eth1'] })).toEqual({ iface: 'eth1', addr: '198.51.100.10', publicIp: '198.51.100.10' });
    expect(pick({ ifaces: ['198.51.100.11'] })).toEqual({ iface: 'eth1', addr: '198.51.100.11', publicIp: '198.51.100.11' });
  });

  it('repeated --iface: the first that works wins, the ones before it noted', () => {
    const u = selectUnderlay(sel({ ifaces: ['eth9', 'bare0', '10.9.9.9', 'eth0', 'eth1'] }), SNAP);
    expect([u.iface, u.addr, u.how]).toEqual(['eth0', '192.0.2.10', '--iface eth0']);
    expect(u.skipped).toEqual([
      '--iface "eth9": no such interface',
      '--iface bare0: bare0 has no usable IPv4 address',
      '--iface 10.9.9.9: no interface holds this address',
    ]);
  });

  it('every --iface before any --iface-regex, every regex before --iface-can-reach; the default route is never used then', () => {
    expect(pick({ ifaces: ['eth0'], regexes: ['^eth1$'], canReach: '198.51.100.99' }).iface).toBe('eth0');
    expect(pick({ ifaces: ['eth9'], regexes: ['^eth1$'], canReach: '192.0.2.99' }).iface).toBe('eth1');
    expect(pick({ ifaces: ['eth9'], regexes: ['^nope'], canReach: '198.51.100.99' })).toEqual({
      iface: 'eth1',
      addr: '198.51.100.11',
      publicIp: '198.51.100.11',
    });
    expect(refusal({ ifaces: ['eth9'] })).not.toMatch(/wan0 has|default route/);
  });

  it('--iface-regex matches addresses of every interface before any name', () => {
    expect(pick({ regexes: ['^198\\.51'] })).toEqual({ iface: 'eth1', addr: '198.51.100.10', publicIp: '198.51.100.10' });
    expect(pick({ regexes: ['\\.11$'] })).toEqual({ iface: 'eth1', addr: '198.51.100.11', publicIp: '198.51.100.11' });
    // "wan" matches no address: then the names.
    expect(pick({ regexes: ['wan'] }).iface).toBe('wan0');
    // "1" matches eth1's name, but first 192.0.2.10 (eth0's address) in ifindex order.
    expect(pick({ regexes: ['1'] }).iface).toBe('eth0');
    // Loopback addresses are never matched (not usable), so "127" falls through to the names and fails.
    expect(refusal({ regexes: ['^127\\.'] })).toMatch(/^no interface matches --iface-regex "\^127\\\\\."/);
  });

  it('repeated --iface-regex: in order, a bad pattern skipped with its reason', () => {
    const u = selectUnderlay(sel({ regexes: ['(', '^zz', '^lo$', '^eth'] }), SNAP);
    expect(u.iface).toBe('eth0');
    expect(u.skipped).toEqual([
      expect.stringMatching(/^--iface-regex "\(" is not a valid regular expression \(/),
      'no interface matches --iface-regex "^zz"',
      '--iface-regex "^lo$" matches lo, which has no usable IPv4 address',
    ]);
  });

  it("--iface-can-reach: the route's device and source address, else the device's first address", () => {
    expect(pick({ canReach: '198.51.100.99' })).toEqual({ iface: 'eth1', addr: '198.51.100.11', publicIp: '198.51.100.11' });
    expect(pick({ canReach: '198.51.100.99' }, { ...SNAP, canReach: { dev: 'eth1' } }).addr).toBe('198.51.100.10');
  });

  it('announces --public-ip when given, and sends from the interface address (behind a NAT)', () => {
    expect(pick({ ifaces: ['eth0'], publicIp: '203.0.113.77' })).toEqual({ iface: 'eth0', addr: '192.0.2.10', publicIp: '203.0.113.77' });
    // Where the interface holds --public-ip, that address is the one sent from.
    expect(pick({ ifaces: ['eth1'], publicIp: '198.51.100.11' })).toEqual({ iface: 'eth1', addr: '198.51.100.11', publicIp: '198.51.100.11' });
  });
});

describe('addresses discovery sends from', () => {
  it('skips loopback, multicast, deprecated; prefers global to link-local and permanent to dynamic', () => {
    const i: IfaceAddrs = {
      name: 'x',
      index: 9,
      mtu: 1500,
      addrs: [
        addr('127.0.0.2'),
        addr('169.254.1.1'),
        addr('10.0.0.1', { dynamic: true }),
        addr('224.0.0.5'),
        addr('10.0.0.2', { deprecated: true }),
        addr('10.0.0.3'),
      ],
    };
    expect(usableAddrs(i)).toEqual(['10.0.0.3', '10.0.0.1', '169.254.1.1']);
  });
});

describe('one-line failures naming what was tried', () => {
  const tried = '(tried lo 127.0.0.1, eth0 192.0.2.10, eth1 198.51.100.10 198.51.100.11, wan0 203.0.113.10, bare0 (no IPv4))';

  it('--iface-regex matching nothing', () => {
    expect(refusal({ regexes: ['^eth9'] })).toBe(`no interface matches --iface-regex "^eth9" ${tried}`);
  });

  it('--iface names and addresses that match nothing', () => {
    expect(refusal({ ifaces: ['eth9'] })).toBe(`--iface "eth9": no such interface ${tried}`);
    expect(refusal({ ifaces: ['10.1.2.3'] })).toBe(`--iface 10.1.2.3: no interface holds this address ${tried}`);
    expect(refusal({ ifaces: ['lo'] })).toBe(`--iface lo: lo has no usable IPv4 address ${tried}`);
  });

  it('--iface-can-reach without a route', () => {
    expect(refusal({ canReach: '10.0.0.1' }, { ...SNAP, canReach: { error: 'RTNETLINK answers: Network is unreachable' } })).toBe(
      `--iface-can-reach 10.0.0.1: no route (RTNETLINK answers: Network is unreachable) ${tried}`,
    );
  });

  it('no default route, or one with no single interface', () => {
    expect(refusal({}, { ...SNAP, defaultRoute: undefined })).toMatch(/^no IPv4 default route to take the interface from; give --iface/);
    expect(refusal({}, { ...SNAP, defaultRoute: { type: 'blackhole' } })).toMatch(/^the IPv4 default route \(blackhole\) has no single interface/);
  });

  it('--public-ip no interface holds', () => {
    expect(refusal({ publicIp: '192.0.2.77' })).toMatch(/^--public-ip 192\.0\.2\.77 is not assigned to any interface here; give --iface/);
  });

  it('several selectors: each reason, in order, then the interfaces', () => {
    expect(refusal({ ifaces: ['eth9', '10.1.2.3'], regexes: ['^zz'] })).toBe(
      `--iface "eth9": no such interface; --iface 10.1.2.3: no interface holds this address; no interface matches --iface-regex "^zz" ${tried}`,
    );
  });
});
