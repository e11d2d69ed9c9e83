import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addrAdd, ifaceForAddress, ifaceInfo, ipJson, linkDel, linkExists, linkSetUpMtu, routeDel, routeReplace } from '../../src/io/iproute';

// Every change happens inside a namespace this test creates, on a veth pair that lives
// entirely inside it.
const NS = `weft-t-io-${randomBytes(4).toString('hex')}`;
const opts = { netns: NS };

interface RouteJson {
  dst: string;
  gateway?: string;
  dev: string;
  flags: string[];
}

describe.skipIf(process.getuid?.() !== 0)('iproute wrappers in a network namespace', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb']);
  });
  afterAll(() => {
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      // never created
    }
  });

  it('configures a link, its address and routes, and reads them back', async () => {
    expect(await linkExists('va', opts)).toBe(true);
    expect(await linkExists('va')).toBe(false); // not in the root namespace

    await linkSetUpMtu('va', 1450, opts);
    await addrAdd('va', '10.98.0.1/24', opts);
    await addrAdd('va', '10.98.0.1/24', opts); // idempotent, as a restarted daemon needs
    const info = await ifaceInfo('va', opts);
    expect(info).toEqual({ name: 'va', mtu: 1450, addrs: [{ ip: '10.98.0.1', prefixLen: 24 }] });
    expect(await ifaceForAddress('10.98.0.1', opts)).toEqual({ name: 'va', mtu: 1450, prefixLen: 24 });
    expect(await ifaceForAddress('10.98.0.1')).toBeUndefined();
    const links = await ipJson<{ ifname: string; flags: string[] }[]>(['link', 'show', 'dev', 'va'], opts);
    expect(links[0].flags).toContain('UP');

    await routeReplace('10.97.1.0/24', 'va', { ...opts, via: '10.98.0.2' });
    await routeReplace('10.97.2.0/24', 'va', { ...opts, via: '10.96.0.9', onlink: true });
    await routeReplace('10.97.3.0/24', 'va', opts);
    // replace over an existing route rewrites it rather than failing with "File exists".
    await routeReplace('10.97.1.0/24', 'va', { ...opts, via: '10.98.0.3' });
    let routes = await ipJson<RouteJson[]>(['route', 'show', 'dev', 'va'], opts);
    const byDst = new Map(routes.map((r) => [r.dst, r]));
    expect(byDst.get('10.97.1.0/24')?.gateway).toBe('10.98.0.3');
    expect(byDst.get('10.97.2.0/24')?.gateway).toBe('10.96.0.9');
    // (also "linkdown": the veth peer is down, which onlink lets the route ignore)
    expect(byDst.get('10.97.2.0/24')?.flags).toContain('onlink');
    expect(byDst.get('10.97.3.0/24')?.gateway).toBeUndefined();

    await routeDel('10.97.3.0/24', 'va', opts);
    routes = await ipJson<RouteJson[]>(['route', 'show', 'dev', 'va'], opts);
    expect(routes.map((r) => r.dst)).not.toContain('10.97.3.0/24');
    await expect(routeDel('10.97.3.0/24', 'va', opts)).rejects.toThrow(new RegExp(`^ip -n ${NS} route del 10\\.97\\.3\\.0/24 dev va: .*No such process`));

    await expect(linkSetUpMtu('va', 10, opts)).rejects.toThrow(RangeError);
    await linkDel('va', opts); // takes its veth peer with it
    expect(await linkExists('va', opts)).toBe(false);
    expect(await linkExists('vb', opts)).toBe(false);
    expect(await ifaceInfo('va', opts)).toBeUndefined();
    await expect(linkDel('va', opts)).rejects.toThrow(/ip -n .* link del dev va: .*(Cannot find device|does not exist)/);
  });
});
