import { afterEach, describe, expect, it, vi } from 'vitest';
import { run } from '../../src/cli/wire';

function capture(argv: string[]): Promise<string> {
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  return run(argv).then(() => {
    spy.mockRestore();
    return out;
  });
}

describe('weft wire', () => {
  afterEach(() => vi.restoreAllMocks());

  it('shows vxlan as outer IPv4/UDP 8472/VXLAN VNI 1/Ethernet between the nodes’ VTEP MACs, 50 bytes in front (28 of them the kernel’s)', async () => {
    const out = await capture(['--backend', 'vxlan', '--size', '84']);
    expect(out).toMatch(/handed to the underlay socket: 106 bytes to 192\.168\.77\.12:8472 \(VXLAN \+ Ethernet \+ packet; .*134 bytes on the wire\)/);
    expect(out).toMatch(/outer IPv4 +IPv4 192\.168\.77\.11 → 192\.168\.77\.12, proto 17, TTL 64, len 134/);
    // The socket's checksum (the kernel's VXLAN device would send 0).
    expect(out).toMatch(/UDP +\d+ → 8472, len 114, checksum 0x(?!0000)[0-9a-f]{4}/);
    expect(out).toMatch(/VXLAN +flags 0x08 \(I\), VNI 1/);
    expect(out).toMatch(/inner Ethernet +0e:00:c0:a8:4d:0b → 0e:00:c0:a8:4d:0c, type 0x0800/);
    // The pipeline forwarded it: TTL one lower than the 63 the TUN handed over.
    expect(out).toMatch(/inner IPv4 +IPv4 10\.244\.1\.2 → 10\.244\.2\.2, proto 1, TTL 62/);
  });

  it('shows ipip as one outer IPv4 header, protocol 4, DF copied', async () => {
    const out = await capture(['--backend', 'ipip']);
    expect(out).toMatch(/104 bytes to 192\.168\.77\.12 /);
    expect(out).toMatch(/outer IPv4 +IPv4 192\.168\.77\.11 → 192\.168\.77\.12, proto 4, TTL 64, len 104, id 0x[0-9a-f]{4}, DF 1/);
  });

  it('shows udp as the bare inner packet handed to a UDP socket on 8285', async () => {
    const out = await capture(['--backend', 'udp']);
    expect(out).toMatch(/84 bytes to 192\.168\.77\.12:8285 \(the kernel's UDP socket adds/);
    expect(out).not.toMatch(/outer IPv4 +IPv4/);
  });

  it('refuses backends without an encapsulation and nonsense sizes with a clear error', async () => {
    await expect(run(['--backend', 'host-gw'])).rejects.toThrow(/host-gw sends the pod's packet as is/);
    await expect(run(['--size', '9000'])).rejects.toThrow(/--size/);
  });
});
