import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  cidrContains,
  cidrContainsCidr,
  cidrLast,
  classifyIpv4,
  formatCidr,
  formatIpv4,
  maskOf,
  parseAddrPrefix,
  parseCidr,
  parseIpv4,
} from '../../src/route/address';

const u32 = fc.integer({ min: 0, max: 0xffffffff });

describe('parseIpv4 / formatIpv4', () => {
  it('parses dotted quads into host-order uint32', () => {
    expect(parseIpv4('0.0.0.0')).toBe(0);
    expect(parseIpv4('10.244.1.5')).toBe(0x0af40105);
    expect(parseIpv4('192.168.0.1')).toBe(0xc0a80001);
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff);
    expect(parseIpv4('128.0.0.0')).toBe(2 ** 31);
  });

  it('rejects anything but a strict dotted quad', () => {
    for (const s of [
      '',
      '1.2.3',
      '1.2.3.4.5',
      '256.0.0.1',
      '1.2.3.999',
      '01.2.3.4',
      '1.2.3.04',
      ' 1.2.3.4',
      '1.2.3.4 ',
      '1..2.3',
      '+1.2.3.4',
      '-1.2.3.4',
      '0x1.2.3.4',
      '1e1.2.3.4',
      'a.b.c.d',
      '1.2.3.4/32',
      '10',
      '::1',
    ]) {
      expect(() => parseIpv4(s), s).toThrow(`invalid IPv4 address "${s}"`);
    }
  });

  it('formats and round-trips every address (fast-check)', () => {
    expect(formatIpv4(0xc0a80001)).toBe('192.168.0.1');
    expect(formatIpv4(0xffffffff)).toBe('255.255.255.255');
    expect(formatIpv4(-1)).toBe('255.255.255.255');
    fc.assert(
      fc.property(u32, (n) => {
        expect(parseIpv4(formatIpv4(n))).toBe(n);
      }),
    );
    fc.assert(
      fc.property(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)), (q) => {
        expect(formatIpv4(parseIpv4(q.join('.')))).toBe(q.join('.'));
      }),
    );
  });
});

describe('maskOf', () => {
  it('covers the ends and the middle', () => {
    expect(maskOf(0)).toBe(0);
    expect(maskOf(1)).toBe(0x80000000);
    expect(maskOf(8)).toBe(0xff000000);
    expect(maskOf(16)).toBe(0xffff0000);
    expect(maskOf(24)).toBe(0xffffff00);
    expect(maskOf(31)).toBe(0xfffffffe);
    expect(maskOf(32)).toBe(0xffffffff);
    for (let len = 0; len <= 32; len++) {
      expect(maskOf(len)).toBeGreaterThanOrEqual(0);
      expect(maskOf(len)).toBe(len === 0 ? 0 : 2 ** 32 - 2 ** (32 - len));
    }
  });
});

describe('parseCidr / formatCidr', () => {
  it('parses flannel-style networks', () => {
    expect(parseCidr('10.244.0.0/16')).toEqual({ addr: 0x0af40000, len: 16 });
    expect(parseCidr('10.244.3.0/24')).toEqual({ addr: 0x0af40300, len: 24 });
    expect(parseCidr('0.0.0.0/0')).toEqual({ addr: 0, len: 0 });
    expect(parseCidr('255.255.255.255/32')).toEqual({ addr: 0xffffffff, len: 32 });
    expect(formatCidr({ addr: 0x0af40300, len: 24 })).toBe('10.244.3.0/24');
  });

  it('names what is wrong', () => {
    expect(() => parseCidr('10.244.1.0/16')).toThrow('invalid CIDR "10.244.1.0/16": host bits set');
    expect(() => parseCidr('0.0.0.1/0')).toThrow('host bits set');
    expect(() => parseCidr('10.244.0.0')).toThrow(/invalid CIDR "10.244.0.0": missing/);
    expect(() => parseCidr('10.244.0/16')).toThrow(/invalid CIDR "10.244.0\/16": bad address/);
    for (const len of ['33', '-1', '', '08', '1.5', '16/16', ' 16', 'x']) {
      expect(() => parseCidr(`10.0.0.0/${len}`), len).toThrow(/bad prefix length/);
    }
  });

  it('reads an address with its prefix length, host bits kept, and otherwise checks as parseCidr does', () => {
    expect(parseAddrPrefix('10.244.7.1/24')).toEqual({ addr: 0x0af40701, len: 24 });
    expect(parseAddrPrefix('10.244.0.0/16')).toEqual(parseCidr('10.244.0.0/16'));
    expect(() => parseAddrPrefix('10.244.7.1')).toThrow(/missing/);
    expect(() => parseAddrPrefix('10.244.7.01/24')).toThrow(/bad address/);
    expect(() => parseAddrPrefix('10.244.7.1/33')).toThrow(/bad prefix length/);
  });

  it('round-trips canonical prefixes (fast-check)', () => {
    fc.assert(
      fc.property(u32, fc.nat(32), (a, len) => {
        const c = { addr: (a & maskOf(len)) >>> 0, len };
        expect(parseCidr(formatCidr(c))).toEqual(c);
      }),
    );
  });
});

describe('containment', () => {
  const net = parseCidr('10.244.0.0/16');

  it('cidrContains and cidrLast at the edges', () => {
    expect(cidrContains(net, parseIpv4('10.244.0.0'))).toBe(true);
    expect(cidrContains(net, parseIpv4('10.244.255.255'))).toBe(true);
    expect(cidrContains(net, parseIpv4('10.245.0.0'))).toBe(false);
    expect(cidrContains(net, parseIpv4('10.243.255.255'))).toBe(false);
    expect(cidrLast(net)).toBe(parseIpv4('10.244.255.255'));
    expect(cidrLast(parseCidr('0.0.0.0/0'))).toBe(0xffffffff);
    expect(cidrLast(parseCidr('192.168.1.7/32'))).toBe(parseIpv4('192.168.1.7'));
    expect(cidrContains(parseCidr('0.0.0.0/0'), 0xffffffff)).toBe(true);
    expect(cidrContains(parseCidr('128.0.0.0/1'), 0xffffffff)).toBe(true);
    expect(cidrContains(parseCidr('128.0.0.0/1'), 0x7fffffff)).toBe(false);
  });

  it('cidrContainsCidr', () => {
    expect(cidrContainsCidr(net, parseCidr('10.244.3.0/24'))).toBe(true);
    expect(cidrContainsCidr(net, net)).toBe(true);
    expect(cidrContainsCidr(parseCidr('10.244.3.0/24'), net)).toBe(false);
    expect(cidrContainsCidr(net, parseCidr('10.245.0.0/24'))).toBe(false);
    expect(cidrContainsCidr(parseCidr('0.0.0.0/0'), net)).toBe(true);
  });

  it('agree with interval arithmetic (fast-check)', () => {
    fc.assert(
      fc.property(u32, fc.nat(32), u32, fc.nat(32), (a, len, x, len2) => {
        const c = { addr: (a & maskOf(len)) >>> 0, len };
        const first = c.addr;
        const last = first + 2 ** (32 - len) - 1;
        expect(cidrLast(c)).toBe(last);
        expect(cidrContains(c, x)).toBe(x >= first && x <= last);
        const d = { addr: (x & maskOf(len2)) >>> 0, len: len2 };
        const dLast = d.addr + 2 ** (32 - len2) - 1;
        expect(cidrContainsCidr(c, d)).toBe(d.addr >= first && dLast <= last);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('classifyIpv4', () => {
  it('names each special-purpose block at both of its edges, and the unicast addresses around them', () => {
    const cases: Array<[string, string]> = [
      ['0.0.0.0', 'this-network'],
      ['0.255.255.255', 'this-network'],
      ['1.0.0.0', 'unicast'],
      ['126.255.255.255', 'unicast'],
      ['127.0.0.0', 'loopback'],
      ['127.255.255.255', 'loopback'],
      ['128.0.0.0', 'unicast'],
      ['169.253.255.255', 'unicast'],
      ['169.254.0.0', 'link-local'],
      ['169.254.255.255', 'link-local'],
      ['169.255.0.0', 'unicast'],
      ['10.0.0.1', 'unicast'],
      ['192.168.1.1', 'unicast'],
      ['223.255.255.255', 'unicast'],
      ['224.0.0.0', 'multicast'],
      ['239.255.255.255', 'multicast'],
      ['240.0.0.0', 'reserved'],
      ['255.255.255.254', 'reserved'],
      ['255.255.255.255', 'broadcast'],
    ];
    for (const [ip, cls] of cases) expect(classifyIpv4(parseIpv4(ip)), ip).toBe(cls);
  });
});
