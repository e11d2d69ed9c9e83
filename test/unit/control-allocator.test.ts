import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { allocate, normalisePublicIp, subnetIndex, subnetRange, type AllocationInput } from '../../src/control/allocator';
import { MAX_LEASES } from '../../src/control/limits';
import { parseNetConfig, type NetworkConfig } from '../../src/control/netconfig';
import { RegistryError, type Lease } from '../../src/control/registry';
import { cidrContainsCidr, formatCidr, formatIpv4, parseCidr } from '../../src/route/address';
import { seededRandom as seeded } from '../../src/util/seeded-random';

const NOW = 1_700_000_000_000;
const TTL = 60_000;

function input(config: NetworkConfig, over: Partial<AllocationInput> = {}): AllocationInput {
  return { config, leases: [], previous: {}, request: { publicIp: '192.0.2.1' }, now: NOW, ttlMs: TTL, random: () => 0, ...over };
}

function lease(subnet: string, publicIp: string, expiration = NOW + TTL): Lease {
  return { subnet, publicIp, backendType: 'udp', backendData: {}, expiration };
}

function catchErr(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
}

const net16 = parseNetConfig({ Network: '10.244.0.0/16' });

describe('allocate', () => {
  it('random() = 0 gives SubnetMin and random() → 1 gives SubnetMax', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetMin: '10.244.10.0', SubnetMax: '10.244.20.0' });
    expect(allocate(input(cfg, { random: () => 0 })).lease.subnet).toBe('10.244.10.0/24');
    expect(allocate(input(cfg, { random: () => 0.999999 })).lease.subnet).toBe('10.244.20.0/24');
  });

  it('a fresh lease has the request fields and expiration now + ttl', () => {
    const a = allocate(input(net16, { request: { publicIp: '192.0.2.9', backendType: 'vxlan', backendData: { VtepMAC: 'aa:bb' } } }));
    expect(a.reason).toBe('random');
    expect(a.lease).toEqual({ subnet: '10.244.1.0/24', publicIp: '192.0.2.9', backendType: 'vxlan', backendData: { VtepMAC: 'aa:bb' }, expiration: NOW + TTL });
  });

  it('backendType defaults to the configured backend', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
    expect(allocate(input(cfg)).lease.backendType).toBe('host-gw');
  });

  it('skips taken subnets: the r-th free index, not the r-th index', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.4.0' });
    const leases = [lease('10.244.1.0/24', '192.0.2.10'), lease('10.244.3.0/24', '192.0.2.11')];
    // free = [2, 4]; random 0 → 2, random 0.75 → 4
    expect(allocate(input(cfg, { leases, random: () => 0 })).lease.subnet).toBe('10.244.2.0/24');
    expect(allocate(input(cfg, { leases, random: () => 0.75 })).lease.subnet).toBe('10.244.4.0/24');
  });

  it('random pick covers the whole SubnetMin..SubnetMax range and nothing outside', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetLen: 26, SubnetMin: '10.244.3.64', SubnetMax: '10.244.5.0' });
    const range = subnetRange(cfg);
    expect(range.count).toBe(8);
    const rnd = seeded(42);
    const seen = new Map<string, number>();
    for (let i = 0; i < 4000; i++) {
      const s = allocate(input(cfg, { random: rnd })).lease.subnet;
      expect(subnetIndex(range, s)).toBeGreaterThanOrEqual(0);
      seen.set(s, (seen.get(s) ?? 0) + 1);
    }
    expect(seen.size).toBe(8);
    // Roughly uniform: each of 8 subnets ~500 times.
    for (const n of seen.values()) expect(n).toBeGreaterThan(350);
  });

  it('returns the held lease, renewed, with updated backend data', () => {
    const held = lease('10.244.77.0/24', '192.0.2.1', NOW + 5);
    const a = allocate(input(net16, { leases: [held], request: { publicIp: '192.0.2.1', backendData: { VtepMAC: 'new' } }, random: () => 0.5 }));
    expect(a.reason).toBe('held');
    expect(a.lease.subnet).toBe('10.244.77.0/24');
    expect(a.lease.expiration).toBe(NOW + TTL);
    expect(a.lease.backendData).toEqual({ VtepMAC: 'new' });
    expect(a.replaced).toBeUndefined();
  });

  it('reuses the previous subnet after expiry when it is still free', () => {
    const expired = lease('10.244.77.0/24', '192.0.2.1', NOW - 1);
    const a = allocate(input(net16, { leases: [expired], previous: { '192.0.2.1': '10.244.77.0/24' }, random: () => 0.5 }));
    expect(a.reason).toBe('previous');
    expect(a.lease.subnet).toBe('10.244.77.0/24');
  });

  it('does not reuse the previous subnet when someone else holds it', () => {
    const other = lease('10.244.77.0/24', '192.0.2.2');
    const a = allocate(input(net16, { leases: [other], previous: { '192.0.2.1': '10.244.77.0/24' }, random: () => 0 }));
    expect(a.reason).toBe('random');
    expect(a.lease.subnet).toBe('10.244.1.0/24');
  });

  it('does not reuse a previous subnet outside the configured range', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetMax: '10.244.50.0' });
    const a = allocate(input(cfg, { previous: { '192.0.2.1': '10.244.77.0/24' } }));
    expect(a.lease.subnet).toBe('10.244.1.0/24');
  });

  it("prefers the node's own previousSubnet hint (its subnet.env) over the registry's memory", () => {
    const a = allocate(input(net16, { request: { publicIp: '192.0.2.1', previousSubnet: '10.244.9.0/24' }, previous: { '192.0.2.1': '10.244.77.0/24' } }));
    expect(a.reason).toBe('previous');
    expect(a.lease.subnet).toBe('10.244.9.0/24');
  });

  it('falls back past a previousSubnet hint that is taken, malformed or off the grid', () => {
    const other = lease('10.244.9.0/24', '192.0.2.2');
    for (const hint of ['10.244.9.0/24', 'junk', '10.244.9.128/25', '10.245.1.0/24']) {
      const a = allocate(
        input(net16, { leases: [other], request: { publicIp: '192.0.2.1', previousSubnet: hint }, previous: { '192.0.2.1': '10.244.77.0/24' } }),
      );
      expect(a.lease.subnet, hint).toBe('10.244.77.0/24');
    }
  });

  it('an expired lease of another node frees its subnet', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.1.0' });
    const a = allocate(input(cfg, { leases: [lease('10.244.1.0/24', '192.0.2.2', NOW)] }));
    expect(a.lease.subnet).toBe('10.244.1.0/24');
  });

  it('replaces a held lease that no longer fits the config', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetMax: '10.244.50.0' });
    const held = lease('10.244.77.0/24', '192.0.2.1');
    const a = allocate(input(cfg, { leases: [held] }));
    expect(a.replaced).toBe(held);
    expect(a.lease.subnet).toBe('10.244.1.0/24');
  });

  it('never hands out a subnet overlapping an off-grid lease left from an older config', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetLen: 25, SubnetMin: '10.244.1.0', SubnetMax: '10.244.2.128' });
    const old = lease('10.244.1.0/24', '192.0.2.2'); // covers 10.244.1.0/25 and 10.244.1.128/25
    for (const r of [0, 0.3, 0.6, 0.99]) {
      const s = allocate(input(cfg, { leases: [old], random: () => r })).lease.subnet;
      expect(cidrContainsCidr(parseCidr('10.244.1.0/24'), parseCidr(s))).toBe(false);
    }
  });

  it('exhaustion names the network, the range and the count', () => {
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.2.0' });
    const leases = [lease('10.244.1.0/24', '192.0.2.10'), lease('10.244.2.0/24', '192.0.2.11')];
    const e = catchErr(() => allocate(input(cfg, { leases })));
    expect(e).toBeInstanceOf(RegistryError);
    expect((e as RegistryError).code).toBe('exhausted');
    expect(e.message).toBe('no free subnet in 10.244.0.0/16 between SubnetMin 10.244.1.0 and SubnetMax 10.244.2.0: 2 of 2 leased');
  });

  it('validates publicIp', () => {
    for (const bad of ['', 'x', '10.0.0', '10.0.0.256', '0.0.0.0', '224.0.0.1', '255.255.255.255', undefined]) {
      const e = catchErr(() => allocate(input(net16, { request: { publicIp: bad as string } })));
      expect((e as RegistryError).code, String(bad)).toBe('invalid');
    }
    expect(normalisePublicIp('192.0.2.1')).toBe('192.0.2.1');
  });

  it('grants no more than MAX_LEASES leases, so a List reply always fits (limits.ts); a holder still gets its own back', () => {
    // A /16 of /30s has 16,384 subnets: room is not what stops the next grant.
    const cfg = parseNetConfig({ Network: '10.244.0.0/16', SubnetLen: 30 });
    const leases = Array.from({ length: MAX_LEASES }, (_, i) =>
      lease(formatCidr({ addr: (0x0af40000 + (i + 1) * 4) >>> 0, len: 30 }), formatIpv4(0xc6120000 + i)),
    );
    const e = catchErr(() => allocate(input(cfg, { leases, request: { publicIp: '192.0.2.1' } })));
    expect((e as RegistryError).code).toBe('exhausted');
    expect(e.message).toBe(`the registry holds ${MAX_LEASES} leases, the most weft's control plane carries in one reply`);
    expect(allocate(input(cfg, { leases, request: { publicIp: leases[7].publicIp } })).reason).toBe('held');
    expect(allocate(input(cfg, { leases: leases.slice(1), request: { publicIp: '192.0.2.1' } })).reason).toBe('random');
  });

  it('validates backendType and backendData', () => {
    expect((catchErr(() => allocate(input(net16, { request: { publicIp: '192.0.2.1', backendType: 'gre' } }))) as RegistryError).code).toBe('invalid');
    expect((catchErr(() => allocate(input(net16, { request: { publicIp: '192.0.2.1', backendData: [] as never } }))) as RegistryError).code).toBe('invalid');
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    expect((catchErr(() => allocate(input(net16, { request: { publicIp: '192.0.2.1', backendData: cyc } }))) as RegistryError).code).toBe('invalid');
  });

  it('property: N distinct nodes get N distinct in-range subnets, then exhaustion', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 20, max: 26 }), // SubnetLen within a /18
        fc.integer({ min: 0, max: 2 ** 31 }),
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 0, max: 200 }),
        (len, seed, skipLo, skipHi) => {
          const base = parseNetConfig({ Network: '10.64.0.0/18', SubnetLen: len });
          const full = subnetRange(base);
          const lo = Math.min(skipLo % full.count, full.count - 1);
          const hi = Math.max(lo, full.count - 1 - (skipHi % full.count));
          const fmt = (i: number) => formatIpv4(full.min + i * full.size);
          const cfg = parseNetConfig({ Network: '10.64.0.0/18', SubnetLen: len, SubnetMin: fmt(lo), SubnetMax: fmt(hi) });
          const range = subnetRange(cfg);
          const rnd = seeded(seed);
          const leases: Lease[] = [];
          const seen = new Set<string>();
          for (let n = 0; n < range.count; n++) {
            const a = allocate(input(cfg, { leases, random: rnd, request: { publicIp: formatIpv4(0x0b000001 + n) } }));
            expect(subnetIndex(range, a.lease.subnet)).toBeGreaterThanOrEqual(0);
            expect(seen.has(a.lease.subnet)).toBe(false);
            seen.add(a.lease.subnet);
            leases.push(a.lease);
          }
          const e = catchErr(() => allocate(input(cfg, { leases, random: rnd, request: { publicIp: '198.51.100.1' } })));
          expect((e as RegistryError).code).toBe('exhausted');
          expect(e.message).toContain(`${range.count} of ${range.count} leased`);
        },
      ),
      { numRuns: 60 },
    );
  });
});
