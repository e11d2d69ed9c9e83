import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeerSet } from '../../src/datapath/peers';
import { formatSubnetEnv, parseSubnetEnv, writeSubnetEnv } from '../../src/daemon/subnet-env';
import type { Lease } from '../../src/control/registry';
import { parseIpv4 } from '../../src/route/address';

const lease = (subnet: string, publicIp: string, backendType = 'udp'): Lease => ({
  subnet,
  publicIp,
  backendType,
  backendData: {},
  expiration: Date.now() + 3_600_000,
});

const local = lease('10.244.1.0/24', '192.168.77.11');

describe('PeerSet', () => {
  it('routes a snapshot by longest prefix and maps senders by address', () => {
    const ps = new PeerSet('udp', 8285, local);
    ps.applySnapshot([local, lease('10.244.2.0/24', '192.168.77.12'), lease('10.244.3.0/24', '192.168.77.13')]);
    expect(ps.routes.lookup(parseIpv4('10.244.2.77'))?.publicIp).toBe(parseIpv4('192.168.77.12'));
    expect(ps.routes.lookup(parseIpv4('10.244.1.5'))?.local).toBe(true);
    expect(ps.routes.lookup(parseIpv4('10.244.9.5'))).toBeUndefined();
    expect(ps.byAddr.get(parseIpv4('192.168.77.13'))?.port).toBe(8285);
    expect(ps.byAddr.has(parseIpv4('192.168.77.11'))).toBe(false);
  });

  it('applies added/removed events and swaps a new route snapshot per batch', () => {
    const ps = new PeerSet('udp', 8285, local);
    const v0 = ps.routes.version;
    ps.apply([
      { type: 'added', lease: lease('10.244.2.0/24', '192.168.77.12') },
      { type: 'added', lease: lease('10.244.3.0/24', '192.168.77.13') },
    ]);
    expect(ps.routes.version).toBe(v0 + 1);
    ps.apply([{ type: 'removed', lease: lease('10.244.2.0/24', '192.168.77.12') }]);
    expect(ps.routes.lookup(parseIpv4('10.244.2.1'))).toBeUndefined();
    expect(ps.byAddr.has(parseIpv4('192.168.77.12'))).toBe(false);
    expect(ps.routes.lookup(parseIpv4('10.244.3.1'))).toBeDefined();
  });

  it('moves a node that re-registers with a new subnet instead of keeping both', () => {
    const ps = new PeerSet('udp', 8285, local);
    ps.apply([{ type: 'added', lease: lease('10.244.2.0/24', '192.168.77.12') }]);
    ps.apply([{ type: 'added', lease: lease('10.244.5.0/24', '192.168.77.12') }]);
    expect(ps.routes.lookup(parseIpv4('10.244.2.1'))).toBeUndefined();
    expect(ps.byAddr.get(parseIpv4('192.168.77.12'))?.subnet.addr).toBe(parseIpv4('10.244.5.0'));
  });

  it('drops peers missing from a resync snapshot and never drops its own subnet', () => {
    const ps = new PeerSet('udp', 8285, local);
    ps.applySnapshot([lease('10.244.2.0/24', '192.168.77.12')]);
    ps.applySnapshot([lease('10.244.3.0/24', '192.168.77.13')]);
    expect(ps.routes.lookup(parseIpv4('10.244.2.1'))).toBeUndefined();
    expect(ps.routes.lookup(parseIpv4('10.244.3.1'))).toBeDefined();
    expect(ps.routes.lookup(parseIpv4('10.244.1.1'))?.local).toBe(true);
  });

  it('tells its listener about added peers before routing to them and removed ones after', () => {
    const seen: string[] = [];
    let ps: PeerSet | undefined;
    const routed = (ip: string) => ps?.routes.lookup(parseIpv4(ip)) !== undefined;
    ps = new PeerSet('udp', 8285, local, (added, removed) => {
      for (const p of added) seen.push(`added ${p.publicIp} routed=${routed('10.244.2.1')}`);
      for (const p of removed) seen.push(`removed ${p.publicIp} routed=${routed('10.244.2.1')}`);
    });
    const l2 = lease('10.244.2.0/24', '192.168.77.12');
    ps.apply([{ type: 'added', lease: l2 }]);
    // A renewal (same lease announced again) changes nothing.
    const renewed = { ...l2, expiration: l2.expiration + 1000 };
    ps.apply([{ type: 'added', lease: renewed }]);
    ps.apply([{ type: 'removed', lease: l2 }]);
    const ip = parseIpv4('192.168.77.12');
    expect(seen).toEqual([`added ${ip} routed=false`, `removed ${ip} routed=false`]);
  });

  it('replaces a peer whose backend data changed (a new VTEP MAC)', () => {
    const added: unknown[] = [];
    const ps = new PeerSet('vxlan', 8472, { ...local, backendType: 'vxlan' }, (a) => added.push(...a.map((p) => p.backendData)));
    const l2 = { ...lease('10.244.2.0/24', '192.168.77.12', 'vxlan'), backendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:01' } };
    ps.apply([{ type: 'added', lease: l2 }]);
    ps.apply([{ type: 'added', lease: { ...l2, backendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:02' } } }]);
    expect(added).toEqual([
      { VNI: 1, VtepMAC: '0e:00:00:00:00:01' },
      { VNI: 1, VtepMAC: '0e:00:00:00:00:02' },
    ]);
    expect(ps.routes.lookup(parseIpv4('10.244.2.9'))?.backendData.VtepMAC).toBe('0e:00:00:00:00:02');
  });

  it('ignores leases of another backend type, and counts them', () => {
    const ps = new PeerSet('udp', 8285, local);
    ps.apply([{ type: 'added', lease: lease('10.244.2.0/24', '192.168.77.12', 'vxlan') }]);
    expect(ps.routes.lookup(parseIpv4('10.244.2.1'))).toBeUndefined();
    expect(ps.mismatched).toBe(1);
  });
});

describe('subnet.env', () => {
  const env = { network: '10.244.0.0/16', subnet: '10.244.7.1/24', mtu: 1472, ipmasq: false };

  it("is flannel's four variables and parses back", () => {
    const text = formatSubnetEnv(env);
    expect(text).toBe('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');
    expect(parseSubnetEnv(text)).toEqual(env);
  });

  it('rejects a file without a usable MTU or subnet', () => {
    expect(() => parseSubnetEnv('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1472\n')).toThrow(/FLANNEL_SUBNET missing/);
    expect(() => parseSubnetEnv(formatSubnetEnv({ ...env, mtu: 20 }))).toThrow(/FLANNEL_MTU/);
  });

  it('is written atomically, leaving no temp file behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-senv-'));
    try {
      const file = join(dir, 'run', 'subnet.env');
      await writeSubnetEnv(file, env);
      await writeSubnetEnv(file, { ...env, mtu: 1450 });
      expect(parseSubnetEnv(readFileSync(file, 'utf8')).mtu).toBe(1450);
      expect(readdirSync(join(dir, 'run'))).toEqual(['subnet.env']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
