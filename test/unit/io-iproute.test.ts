import { describe, expect, it } from 'vitest';
import { IpCommandError, ifaceForAddress, ifaceInfo, ip, ipJson, linkExists } from '../../src/io/iproute';

const failedToFail = (): Error => new Error('ip unexpectedly succeeded');
const asError = (e: unknown): Error => e as Error;

// Read-only queries of the loopback device: no root, no changes to the machine.
describe('iproute wrappers (read-only)', () => {
  it('runs ip and returns stdout', async () => {
    const out = await ip(['link', 'show', 'dev', 'lo']);
    expect(out).toMatch(/^1: lo: <LOOPBACK/);
  });

  it('parses ip -j output', async () => {
    const links = await ipJson<{ ifname: string; mtu: number }[]>(['link', 'show', 'dev', 'lo']);
    expect(links).toHaveLength(1);
    expect(links[0].ifname).toBe('lo');
    expect(links[0].mtu).toBeGreaterThan(0);
  });

  it("puts the command line and ip's stderr in the error", async () => {
    const err = await ip(['link', 'show', 'dev', 'weft-nosuch0']).then(failedToFail, asError);
    expect(err).toBeInstanceOf(IpCommandError);
    expect((err as Error).message).toBe('ip link show dev weft-nosuch0: Device "weft-nosuch0" does not exist.');
    expect((err as IpCommandError).exitCode).toBe(1);
    const bad = await ip(['route', 'frobnicate']).then(failedToFail, asError);
    expect(bad.message).toMatch(/^ip route frobnicate: .+/);
  });

  it('reports a missing netns as an error naming it', async () => {
    const err = await ip(['link', 'show'], { netns: 'weft-t-io-nonexistent' }).then(failedToFail, asError);
    expect(err.message).toMatch(/^ip -n weft-t-io-nonexistent link show: .*weft-t-io-nonexistent/);
    await expect(linkExists('lo', { netns: 'weft-t-io-nonexistent' })).rejects.toThrow(/weft-t-io-nonexistent/);
  });

  it('answers link and address questions about lo', async () => {
    expect(await linkExists('lo')).toBe(true);
    expect(await linkExists('weft-nosuch0')).toBe(false);
    const info = await ifaceInfo('lo');
    expect(info?.name).toBe('lo');
    expect(info?.addrs).toContainEqual({ ip: '127.0.0.1', prefixLen: 8 });
    expect(info?.addrs.every((a) => !a.ip.includes(':'))).toBe(true);
    expect(await ifaceInfo('weft-nosuch0')).toBeUndefined();
    const lo = await ifaceForAddress('127.0.0.1');
    expect(lo).toEqual({ name: 'lo', mtu: info?.mtu, prefixLen: 8 });
    expect(await ifaceForAddress('198.51.100.254')).toBeUndefined();
  });
});
