import { describe, expect, it } from 'vitest';
import { parseNetConfig, subnetCount } from '../../src/control/netconfig';

describe('parseNetConfig defaults', () => {
  it('fills flannel defaults for a bare Network', () => {
    const c = parseNetConfig('{"Network": "10.244.0.0/16"}');
    expect(c).toEqual({
      network: '10.244.0.0/16',
      subnetLen: 24,
      subnetMin: '10.244.1.0', // the first subnet is skipped
      subnetMax: '10.244.255.0',
      backend: { type: 'udp', port: 8285 },
      enableNftables: false,
      raw: { Network: '10.244.0.0/16' },
    });
    expect(subnetCount(c)).toBe(255);
  });

  it('accepts an already-parsed object and keeps it as raw', () => {
    const obj = { Network: '10.1.0.0/16', SubnetLen: 28, SubnetMin: '10.1.10.0', SubnetMax: '10.1.50.0' };
    const c = parseNetConfig(obj);
    expect(c.raw).toBe(obj);
    expect([c.subnetLen, c.subnetMin, c.subnetMax]).toEqual([28, '10.1.10.0', '10.1.50.0']);
    expect(subnetCount(c)).toBe((0x3200 - 0x0a00) / 16 + 1);
  });

  it('vxlan defaults: port 8472, VNI 1, no direct routing', () => {
    const c = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    expect(c.backend).toEqual({ type: 'vxlan', port: 8472, vni: 1, directRouting: false });
  });

  it('keeps explicit backend values', () => {
    const c = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', Port: 4789, VNI: 42, DirectRouting: true } });
    expect(c.backend).toEqual({ type: 'vxlan', port: 4789, vni: 42, directRouting: true });
    expect(parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'udp', Port: 9000 } }).backend).toEqual({ type: 'udp', port: 9000 });
  });

  it('ipip and host-gw have no port or VNI; ipip takes DirectRouting as flannel does', () => {
    expect(parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'ipip' } }).backend).toEqual({ type: 'ipip', directRouting: false });
    expect(parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'ipip', DirectRouting: true } }).backend).toEqual({ type: 'ipip', directRouting: true });
    expect(parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw', Port: 1 } }).backend).toEqual({ type: 'host-gw' });
  });

  it('Backend without Type is udp', () => {
    expect(parseNetConfig({ Network: '10.244.0.0/16', Backend: {} }).backend.type).toBe('udp');
  });

  it('SubnetLen defaults to a quarter of networks smaller than /22 (flanneld)', () => {
    const c = parseNetConfig({ Network: '192.168.0.0/24' });
    expect(c.subnetLen).toBe(26);
    expect([c.subnetMin, c.subnetMax]).toEqual(['192.168.0.64', '192.168.0.192']);
    expect(parseNetConfig({ Network: '10.0.0.0/22' }).subnetLen).toBe(24);
  });

  it('SubnetLen 0 means default, as in flanneld (Go zero value)', () => {
    expect(parseNetConfig({ Network: '10.244.0.0/16', SubnetLen: 0 }).subnetLen).toBe(24);
  });

  it('matches keys case-insensitively like Go encoding/json', () => {
    const c = parseNetConfig({ network: '10.244.0.0/16', Subnetlen: 26, backend: { type: 'vxlan', vni: 7 } });
    expect(c.network).toBe('10.244.0.0/16');
    expect(c.subnetLen).toBe(26);
    expect(c.backend.vni).toBe(7);
  });

  it('SubnetMin == SubnetMax is a one-subnet range', () => {
    const c = parseNetConfig({ Network: '10.244.0.0/16', SubnetMin: '10.244.7.0', SubnetMax: '10.244.7.0' });
    expect(subnetCount(c)).toBe(1);
  });
});

describe('EnableNFTables', () => {
  it('is read as a boolean and refused as anything else', () => {
    expect(parseNetConfig({ Network: '10.1.0.0/16', EnableNFTables: true }).enableNftables).toBe(true);
    expect(parseNetConfig({ Network: '10.1.0.0/16', EnableNFTables: false }).enableNftables).toBe(false);
    expect(() => parseNetConfig({ Network: '10.1.0.0/16', EnableNFTables: 'yes' })).toThrow(/EnableNFTables "yes" must be true or false/);
  });
});

describe('parseNetConfig errors: one line naming the field', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['invalid JSON', '{"Network": ', /^net-conf\.json: not valid JSON/],
    ['not an object', '[1]', /^net-conf\.json: must be a JSON object/],
    ['missing Network', '{}', /^net-conf\.json: Network is required/],
    ['Network not a string', { Network: 5 }, /^net-conf\.json: Network 5 must be a CIDR string/],
    ['Network garbage', { Network: 'ten/8' }, /^net-conf\.json: Network "ten\/8" is not a valid IPv4 CIDR/],
    ['Network host bits', { Network: '10.244.1.0/16' }, /^net-conf\.json: Network "10\.244\.1\.0\/16" is not a valid IPv4 CIDR: host bits set$/],
    ['Network too small', { Network: '10.0.0.0/29' }, /^net-conf\.json: Network 10\.0\.0\.0\/29 is too small/],
    ['SubnetLen > 30', { Network: '10.244.0.0/16', SubnetLen: 31 }, /^net-conf\.json: SubnetLen 31 is too long: at most 30$/],
    [
      'SubnetLen not > prefix',
      { Network: '10.244.0.0/16', SubnetLen: 16 },
      /^net-conf\.json: SubnetLen 16 is too short for Network 10\.244\.0\.0\/16: at least 18/,
    ],
    ['SubnetLen < prefix+2', { Network: '10.244.0.0/16', SubnetLen: 17 }, /SubnetLen 17 is too short/],
    ['SubnetLen not integer', { Network: '10.244.0.0/16', SubnetLen: 24.5 }, /^net-conf\.json: SubnetLen 24\.5 must be an integer/],
    ['SubnetLen string', { Network: '10.244.0.0/16', SubnetLen: '24' }, /^net-conf\.json: SubnetLen "24" must be an integer/],
    [
      'SubnetMin outside',
      { Network: '10.244.0.0/16', SubnetMin: '10.245.1.0' },
      /^net-conf\.json: SubnetMin 10\.245\.1\.0 is outside Network 10\.244\.0\.0\/16$/,
    ],
    [
      'SubnetMax outside',
      { Network: '10.244.0.0/16', SubnetMax: '10.243.255.0' },
      /^net-conf\.json: SubnetMax 10\.243\.255\.0 is outside Network 10\.244\.0\.0\/16$/,
    ],
    [
      'SubnetMin unaligned',
      { Network: '10.244.0.0/16', SubnetMin: '10.244.1.5' },
      /^net-conf\.json: SubnetMin 10\.244\.1\.5 is not on a SubnetLen boundary \(\/24\)$/,
    ],
    [
      'SubnetMax unaligned',
      { Network: '10.244.0.0/16', SubnetMax: '10.244.1.128' },
      /^net-conf\.json: SubnetMax 10\.244\.1\.128 is not on a SubnetLen boundary/,
    ],
    ['SubnetMin bad address', { Network: '10.244.0.0/16', SubnetMin: '10.244.1' }, /^net-conf\.json: SubnetMin "10\.244\.1" is not an IPv4 address$/],
    ['SubnetMin not string', { Network: '10.244.0.0/16', SubnetMin: 1 }, /^net-conf\.json: SubnetMin 1 must be an IPv4 address string/],
    [
      'SubnetMin above SubnetMax',
      { Network: '10.244.0.0/16', SubnetMin: '10.244.9.0', SubnetMax: '10.244.5.0' },
      /^net-conf\.json: SubnetMin 10\.244\.9\.0 is above SubnetMax 10\.244\.5\.0$/,
    ],
    ['Backend not object', { Network: '10.244.0.0/16', Backend: 'vxlan' }, /^net-conf\.json: Backend "vxlan" must be an object/],
    [
      'unknown Backend.Type',
      { Network: '10.244.0.0/16', Backend: { Type: 'wireguard' } },
      /^net-conf\.json: Backend\.Type "wireguard" is not supported; use one of udp, vxlan, ipip, host-gw$/,
    ],
    [
      'Backend.Port out of range',
      { Network: '10.244.0.0/16', Backend: { Type: 'udp', Port: 70000 } },
      /^net-conf\.json: Backend\.Port 70000 must be an integer from 1 to 65535$/,
    ],
    [
      'Backend.VNI out of range',
      { Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 16777216 } },
      /^net-conf\.json: Backend\.VNI 16777216 must be an integer from 0 to 16777215$/,
    ],
    [
      'Backend.DirectRouting not bool',
      { Network: '10.244.0.0/16', Backend: { Type: 'vxlan', DirectRouting: 'yes' } },
      /^net-conf\.json: Backend\.DirectRouting "yes" must be true or false$/,
    ],
  ];
  for (const [name, input, re] of cases) {
    it(name, () => {
      let err: Error | undefined;
      try {
        parseNetConfig(input);
      } catch (e) {
        err = e as Error;
      }
      expect(err, 'expected an error').toBeInstanceOf(Error);
      expect(err!.message).toMatch(re);
      expect(err!.message).not.toContain('\n');
    });
  }
});
