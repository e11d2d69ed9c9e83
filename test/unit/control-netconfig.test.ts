import { describe, expect, it } from 'vitest';
import { BACKEND_KEYS, parseNetConfig, subnetCount, TOP_KEYS } from '../../src/control/netconfig';
import { tunnelMtu, underlayMtuFor } from '../../src/datapath/node';

describe('parseNetConfig defaults', () => {
  it('fills flannel defaults for a bare Network', () => {
    const c = parseNetConfig('{"Network": "10.244.0.0/16"}');
    expect(c).toEqual({
      network: '10.244.0.0/16',
      subnetLen: 24,
      subnetMin: '10.244.1.0', // the first subnet is skipped
      subnetMax: '10.244.255.0',
      backend: { type: 'udp', port: 8285 }, // flanneld's code (pkg/subnet/config.go); its docs say vxlan
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
    expect(parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } }).backend).toEqual({ type: 'host-gw' });
  });

  it('Backend absent is udp, as flanneld decides; Backend without a Type is refused, as flanneld refuses it', () => {
    expect(parseNetConfig({ Network: '10.244.0.0/16' }).backend).toEqual({ type: 'udp', port: 8285 });
    for (const backend of [{}, { Type: '' }, { VNI: 3, MTU: 1400 }]) {
      expect(() => parseNetConfig({ Network: '10.244.0.0/16', Backend: backend })).toThrow(
        /^net-conf\.json: Backend\.Type is required when Backend is given \(one of udp, vxlan, ipip, host-gw\), as flanneld requires it$/,
      );
    }
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

/** The one error line parseNetConfig gives for `input` (fails the test if it accepts it). */
function refusal(input: unknown): string {
  try {
    parseNetConfig(input);
  } catch (e) {
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

const NET = '10.244.0.0/16';

describe('net-conf keys: every flannel key is honoured or refused by name, never ignored', () => {
  it('every top-level key of the table is either accepted with its default or refused naming it', () => {
    for (const k of TOP_KEYS) {
      if (k.rule === 'refused')
        expect(refusal({ Network: NET, [k.key]: k.key === 'IPv6SubnetLen' ? 64 : 'fd00::/56' })).toContain(`${k.key} is not supported by weft`);
    }
    expect(TOP_KEYS.map((k) => k.key)).toEqual(
      expect.arrayContaining(['Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'Backend', 'EnableIPv4', 'EnableIPv6', 'EnableNFTables', 'IPv6Network']),
    );
  });

  it('EnableIPv4: true (the default) accepted, false refused, non-boolean refused', () => {
    expect(parseNetConfig({ Network: NET, EnableIPv4: true }).network).toBe(NET);
    expect(refusal({ Network: NET, EnableIPv4: false })).toBe(
      'net-conf.json: EnableIPv4 false (an IPv6-only network) is not supported by weft, which is IPv4-only',
    );
    expect(refusal({ Network: NET, EnableIPv4: 1 })).toBe('net-conf.json: EnableIPv4 1 must be true or false');
  });

  it('EnableIPv6: false accepted, true refused', () => {
    expect(parseNetConfig({ Network: NET, EnableIPv6: false }).network).toBe(NET);
    expect(parseNetConfig({ Network: NET, enableipv6: null }).network).toBe(NET);
    expect(refusal({ Network: NET, EnableIPv6: true })).toBe('net-conf.json: EnableIPv6 true is not supported by weft (weft is IPv4-only: true is refused)');
    expect(refusal({ Network: NET, EnableIPv6: 'no' })).toBe('net-conf.json: EnableIPv6 "no" must be true or false');
  });

  it('IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax are refused, each by name', () => {
    expect(refusal({ Network: NET, IPv6Network: 'fd00:10::/56' })).toBe('net-conf.json: IPv6Network is not supported by weft (weft is IPv4-only); remove it');
    expect(refusal({ Network: NET, IPv6SubnetLen: 64 })).toMatch(/^net-conf\.json: IPv6SubnetLen is not supported/);
    expect(refusal({ Network: NET, IPv6SubnetMin: 'fd00:10:0:1::' })).toMatch(/^net-conf\.json: IPv6SubnetMin is not supported/);
    expect(refusal({ Network: NET, ipv6subnetmax: 'fd00:10:0:ff::' })).toMatch(/^net-conf\.json: IPv6SubnetMax is not supported/);
    // null is Go's "not given"
    expect(parseNetConfig({ Network: NET, IPv6Network: null }).network).toBe(NET);
  });

  it('a key flannel does not have is refused by name (typos)', () => {
    expect(refusal({ Network: NET, SubnetLength: 24 })).toBe('net-conf.json: SubnetLength is not a flannel net-conf.json key');
    expect(refusal({ Network: NET, BackendType: 'vxlan' })).toBe('net-conf.json: BackendType is not a flannel net-conf.json key');
    expect(refusal({ Network: NET, 'Subnet Len': 24 })).toBe('net-conf.json: "Subnet Len" is not a flannel net-conf.json key');
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', VIN: 1 } })).toBe('net-conf.json: Backend.VIN is not a flannel Backend key');
  });

  it('a key given twice in different case is refused (Go would let the later one win)', () => {
    expect(refusal({ Network: NET, network: '10.1.0.0/16' })).toBe(
      'net-conf.json: Network is given twice (Network and network); keys match case-insensitively, keep one',
    );
  });

  it('a key of another backend is refused, naming the backends that take it', () => {
    expect(refusal({ Network: NET, Backend: { Type: 'host-gw', Port: 1 } })).toBe(
      'net-conf.json: Backend.Port is not a key of the host-gw backend (udp, vxlan take it); remove it',
    );
    expect(refusal({ Network: NET, Backend: { Type: 'udp', VNI: 1 } })).toBe(
      'net-conf.json: Backend.VNI is not a key of the udp backend (vxlan takes it); remove it',
    );
    expect(refusal({ Network: NET, Backend: { Type: 'udp', DirectRouting: true } })).toMatch(
      /Backend\.DirectRouting is not a key of the udp backend \(vxlan, ipip take it\)/,
    );
    expect(refusal({ Network: NET, Backend: { Type: 'ipip', MTU: 1400 } })).toMatch(/Backend\.MTU is not a key of the ipip backend \(vxlan takes it\)/);
  });

  it('backends weft lacks are refused naming Backend.Type', () => {
    for (const t of ['wireguard', 'alloc', 'ipsec', 'extension', 'tencent-vpc', 'VXLAN']) {
      expect(refusal({ Network: NET, Backend: { Type: t } })).toBe(`net-conf.json: Backend.Type "${t}" is not supported; use one of udp, vxlan, ipip, host-gw`);
    }
  });

  it('vxlan GBP and Learning: false accepted, true refused by name', () => {
    expect(parseNetConfig({ Network: NET, Backend: { Type: 'vxlan', GBP: false, Learning: false } }).backend.type).toBe('vxlan');
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', GBP: true } })).toMatch(
      /^net-conf\.json: Backend\.GBP true is not supported by weft \(VXLAN Group Based Policy/,
    );
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', learning: true } })).toMatch(/^net-conf\.json: Backend\.Learning true is not supported by weft/);
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', GBP: 'off' } })).toBe('net-conf.json: Backend.GBP "off" must be true or false');
  });

  it("vxlan MacPrefix and Name (flannel's Windows backend) are refused by name", () => {
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', MacPrefix: '0E-2A' } })).toBe(
      "net-conf.json: Backend.MacPrefix is not supported by weft (flannel's Windows backend only); remove it",
    );
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', Name: 'flannel.4096' } })).toMatch(/^net-conf\.json: Backend\.Name is not supported by weft/);
  });

  it("vxlan Port 0 is the kernel's default (8472), as in flanneld; udp Port 0 is refused", () => {
    expect(parseNetConfig({ Network: NET, Backend: { Type: 'vxlan', Port: 0 } }).backend.port).toBe(8472);
    expect(refusal({ Network: NET, Backend: { Type: 'udp', Port: 0 } })).toBe('net-conf.json: Backend.Port 0 must be an integer from 1 to 65535');
  });

  it('vxlan MTU: an integer from 576 to 65535, kept as given', () => {
    expect(parseNetConfig({ Network: NET, Backend: { Type: 'vxlan', MTU: 1400 } }).backend.mtu).toBe(1400);
    expect(parseNetConfig({ Network: NET, Backend: { Type: 'vxlan', mtu: 9000 } }).backend.mtu).toBe(9000);
    expect(parseNetConfig({ Network: NET, Backend: { Type: 'vxlan' } }).backend.mtu).toBeUndefined();
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', MTU: 500 } })).toBe('net-conf.json: Backend.MTU 500 must be an integer from 576 to 65535');
    expect(refusal({ Network: NET, Backend: { Type: 'vxlan', MTU: '1400' } })).toMatch(/Backend\.MTU "1400" must be an integer/);
  });

  it('the per-backend key table covers what each Linux flannel backend reads', () => {
    const keys = (t: keyof typeof BACKEND_KEYS) => BACKEND_KEYS[t].map((k) => k.key);
    expect(keys('udp')).toEqual(['Port']);
    expect(keys('vxlan')).toEqual(['VNI', 'Port', 'MTU', 'DirectRouting', 'GBP', 'Learning', 'MacPrefix', 'Name']);
    expect(keys('ipip')).toEqual(['DirectRouting']);
    expect(keys('host-gw')).toEqual([]);
  });
});

describe('underlayMtuFor: Backend.MTU at daemon start', () => {
  const eth0 = { name: 'eth0', mtu: 1500 };
  it("absent: the interface's MTU; at or below it: as given", () => {
    expect(underlayMtuFor({ type: 'vxlan' }, eth0)).toBe(1500);
    expect(underlayMtuFor({ type: 'vxlan', mtu: 1400 }, eth0)).toBe(1400);
    expect(underlayMtuFor({ type: 'vxlan', mtu: 1500 }, eth0)).toBe(1500);
    // flannel: the vxlan device (here the TUN) and FLANNEL_MTU get MTU - 50
    expect(tunnelMtu('vxlan', underlayMtuFor({ type: 'vxlan', mtu: 1400 }, eth0))).toBe(1350);
  });
  it('above the interface: one line naming Backend.MTU and the largest that fits', () => {
    expect(() => underlayMtuFor({ type: 'vxlan', mtu: 9000 }, eth0)).toThrow(
      /^net-conf\.json: Backend\.MTU 9000 is larger than the MTU of eth0, the underlay interface: at most 1500$/,
    );
  });
});
