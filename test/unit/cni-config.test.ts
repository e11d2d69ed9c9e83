// weft-cni's delegate config, built as flannel's CNI plugin builds it (flannel_linux.go doCmdAdd,
// getDelegateIPAM), and its config checks.
import { describe, expect, it } from 'vitest';
import { buildDelegate, parseConf } from '../../src/cni/config';
import { CniError } from '../../src/cni/errors';

const ENV = { network: '10.244.0.0/16', subnet: '10.244.3.1/24', mtu: 1450, ipmasq: false };

function codeOf(text: string): number {
  try {
    parseConf(text);
  } catch (e) {
    if (e instanceof CniError) return e.code;
    throw e;
  }
  return 0;
}

describe('weft-cni delegate config', () => {
  it("fills flannel's defaults: bridge, isGateway, ipMasq = !FLANNEL_IPMASQ, mtu, host-local over the lease", () => {
    const conf = parseConf(JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'weft-cni' }));
    expect(conf.subnetFile).toBe('/run/flannel/subnet.env');
    expect(conf.dataDir).toBe('/var/lib/cni/weft');
    expect(buildDelegate(conf, ENV)).toEqual({
      cniVersion: '1.0.0',
      name: 'cbr0',
      type: 'bridge',
      ipMasq: true,
      mtu: 1450,
      isGateway: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.3.0/24' }]], routes: [{ dst: '10.244.0.0/16', gw: '10.244.3.1' }] },
    });
    expect(buildDelegate(conf, { ...ENV, ipmasq: true }).ipMasq).toBe(false);
  });

  it("lets the user's delegate fields win, keeps their ipam keys and routes, passes runtimeConfig", () => {
    const conf = parseConf(
      JSON.stringify({
        cniVersion: '0.3.1',
        name: 'n',
        type: 'weft-cni',
        delegate: { type: 'ipvlan', master: 'eth0', ipMasq: false, mtu: 1400, hairpinMode: true },
        ipam: { dataDir: '/x', routes: [{ dst: '192.168.0.0/16' }] },
        runtimeConfig: { bandwidth: { ingressRate: 1 } },
      }),
    );
    const d = buildDelegate(conf, { ...ENV, network: '10.244.0.0/16,10.245.0.0/16' });
    expect(d).toMatchObject({ cniVersion: '0.3.1', name: 'n', type: 'ipvlan', master: 'eth0', ipMasq: false, mtu: 1400, hairpinMode: true });
    expect(d.isGateway).toBeUndefined(); // bridge only
    expect(d.runtimeConfig).toEqual({ bandwidth: { ingressRate: 1 } });
    expect(d.ipam).toEqual({
      type: 'host-local',
      dataDir: '/x',
      ranges: [[{ subnet: '10.244.3.0/24' }]],
      routes: [{ dst: '192.168.0.0/16' }, { dst: '10.244.0.0/16', gw: '10.244.3.1' }, { dst: '10.245.0.0/16', gw: '10.244.3.1' }],
    });
  });

  it('refuses configs it cannot honour, with the spec codes', () => {
    const base = { cniVersion: '1.0.0', name: 'n', type: 'weft-cni' };
    const code = (over: Record<string, unknown>): number => codeOf(JSON.stringify({ ...base, ...over }));
    expect(codeOf('not json')).toBe(6);
    expect(codeOf('null')).toBe(6);
    expect(code({ cniVersion: '2.0.0' })).toBe(1);
    expect(code({ cniVersion: 1 })).toBe(7);
    expect(code({ name: '' })).toBe(7);
    expect(code({ delegate: 'bridge' })).toBe(7);
    expect(code({ delegate: { type: 3 } })).toBe(7);
    expect(code({ delegate: { ipam: {} } })).toBe(7);
    expect(code({ ipam: { subnet: '10.0.0.0/24' } })).toBe(2);
    expect(code({ ipam: { routes: {} } })).toBe(7);
    expect(code({ dataDir: 'var/lib' })).toBe(7);
    expect(code({})).toBe(0);
  });
});
