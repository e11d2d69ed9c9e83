// The udp datapath in a real 3-node netns lab: the router behaviour weft owes pods (ICMP
// net-unreachable, TTL expiry), drops of traffic from addresses without a lease, and the
// control-plane faults a node must ride out (control SIGKILLed and restarted, a daemon
// restarted on the same public IP).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  daemonStatus,
  iperf3Pair,
  killControl,
  labDown,
  labExec,
  labUp,
  mustReadState,
  pingPair,
  readSubnetEnv,
  restartDaemon,
  startControl,
  startDaemon,
  stopDaemon,
  type LabState,
} from '../../src/lab';
import { formatCidr, maskOf, parseCidr, parseIpv4 } from '../../src/route/address';
import { ensureBuilt } from '../support/build';
import { until } from '../support/until';
import { uniquePrefix } from '../support/prefix';

interface Status {
  lease: { subnet: string };
  control: { watching: boolean; revision: number };
  peers: { subnet: string; publicIp: string }[];
  counters: { txPackets: number; rxPackets: number; icmpSent: number; drops: Record<string, number> };
}

async function status(prefix: string, node: string): Promise<Status> {
  return (await daemonStatus(prefix, node)) as Status;
}

/** The node's lease as a network ("10.244.7.0/24"), read from the subnet.env its daemon wrote ("10.244.7.1/24"). */
function subnetOf(state: LabState, node: string): string {
  const env = readSubnetEnv(state.nodes.find((n) => n.name === node)!.subnetFile);
  if (!env) throw new Error(`${node}: no subnet.env`);
  const [ip, len] = env.subnet.split('/');
  return formatCidr({ addr: (parseIpv4(ip) & maskOf(Number(len))) >>> 0, len: Number(len) });
}

/** The .0 address flannel (and weft) gives the tunnel device: the source of ICMP errors weft originates. */
function tunAddress(state: LabState, node: string): string {
  return subnetOf(state, node).split('/')[0];
}

const escape = (s: string) => s.replace(/\./g, '\\.');

describe.skipIf(process.getuid?.() !== 0)('udp datapath in a 3-node lab', () => {
  const prefix = uniquePrefix('dp');
  let state: LabState;
  const pod = (node: string) => state.pods.find((p) => p.node === node)!;

  beforeAll(async () => {
    // `npm test` builds dist/ first; this keeps a bare `vitest run` honest too.
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 3, pods: 1, backend: 'udp' });
  }, 180_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it('answers a destination inside the Network that no node leases with ICMP net-unreachable', async () => {
    const leased = state.nodes.map((n) => parseCidr(subnetOf(state, n.name)));
    let dst = '';
    for (let x = 250; x > 0; x--) {
      const a = parseCidr(`10.244.${x}.0/24`);
      if (!leased.some((l) => l.addr === a.addr)) {
        dst = `10.244.${x}.9`;
        break;
      }
    }
    const before = (await status(prefix, 'n1')).counters;
    const r = await pingPair(prefix, 'n1/p1', dst, { count: 1, waitS: 2 });
    expect(r.ok).toBe(false);
    expect(r.output).toMatch(new RegExp(`From ${escape(tunAddress(state, 'n1'))}.*Destination Net Unreachable`));
    const after = (await status(prefix, 'n1')).counters;
    expect(after.drops.no_route ?? 0).toBeGreaterThan(before.drops.no_route ?? 0);
    expect(after.icmpSent).toBeGreaterThan(before.icmpSent);
  });

  it('answers a packet whose TTL expires in the tunnel with ICMP time-exceeded, and forwards it with one more hop', async () => {
    // TTL 2 from the pod: the node's kernel forwards it into weft0 with TTL 1, and weft,
    // as the next router, must not send it on.
    const expired = await pingPair(prefix, 'n1/p1', pod('n2').ip, { count: 1, waitS: 2, args: ['-t', '2'] });
    expect(expired.ok).toBe(false);
    expect(expired.output).toMatch(new RegExp(`From ${escape(tunAddress(state, 'n1'))}.*Time to live exceeded`));
    expect((await status(prefix, 'n1')).counters.drops.ttl_expired ?? 0).toBeGreaterThan(0);
    // Hops: n1 kernel, weft on n1, n2 kernel: TTL 4 arrives with 1 left.
    const ok = await pingPair(prefix, 'n1/p1', pod('n2').ip, { count: 1, waitS: 2, args: ['-t', '4'] });
    expect(ok.ok).toBe(true);
  });

  it('answers DF packets larger than the tunnel MTU with fragmentation-needed, and TCP then fits', async () => {
    // The kernel never hands weft more than the TUN MTU, which normally is the tunnel MTU. Raise
    // weft0's MTU on n1 so the node's own packets exceed what the tunnel carries: weft must
    // answer with fragmentation-needed carrying 1472 (RFC 1191), and the kernel's PMTU cache
    // must then make TCP fit.
    const dst = pod('n2').ip;
    const mtu = await labExec(prefix, 'n1', ['ip', 'link', 'set', 'dev', 'weft0', 'mtu', '1500']);
    expect(mtu.code, mtu.stderr).toBe(0);
    try {
      const before = (await status(prefix, 'n1')).counters.drops.too_big ?? 0;
      const big = await labExec(prefix, 'n1', ['ping', '-n', '-c', '2', '-i', '0.3', '-W', '1', '-M', 'do', '-s', String(1500 - 28), dst]);
      expect(big.code).not.toBe(0);
      expect(big.stdout + big.stderr).toMatch(/mtu\s*=\s*1472/i);
      expect((await status(prefix, 'n1')).counters.drops.too_big ?? 0).toBeGreaterThan(before);
      const route = await labExec(prefix, 'n1', ['ip', 'route', 'get', dst]);
      expect(route.stdout).toMatch(/mtu 1472/);
      // A packet that fits still goes through.
      const fits = await labExec(prefix, 'n1', ['ping', '-n', '-c', '1', '-W', '2', '-M', 'do', '-s', String(1472 - 28), dst]);
      expect(fits.code, fits.stdout).toBe(0);
      const tcp = await iperf3Pair(prefix, 'n1', 'n2/p1', { seconds: 2 });
      expect(tcp.ok, tcp.error).toBe(true);
    } finally {
      await labExec(prefix, 'n1', ['ip', 'link', 'set', 'dev', 'weft0', 'mtu', '1472']);
      await labExec(prefix, 'n1', ['ip', 'route', 'flush', 'cache']);
    }
  }, 60_000);

  it('drops and counts datagrams from an underlay address that holds no lease', async () => {
    const n1 = state.nodes[0];
    const before = (await status(prefix, 'n1')).counters.drops.unknown_peer ?? 0;
    // The switch namespace (192.168.77.1, the control plane's address) holds no lease.
    const send =
      `const d=require('dgram').createSocket('udp4');const b=Buffer.alloc(60);b[0]=0x45;` +
      `d.send(b,8285,'${n1.publicIp}',()=>d.send(b,8285,'${n1.publicIp}',()=>d.close()))`;
    const r = await labExec(prefix, 'ul', [process.execPath, '-e', send], { timeoutMs: 10_000 });
    expect(r.code).toBe(0);
    await until('unknown_peer drops', async () => ((await status(prefix, 'n1')).counters.drops.unknown_peer ?? 0) >= before + 2);
  });

  it('keeps forwarding while weft control is SIGKILLed, and everyone resynchronises with the same leases after restart', async () => {
    const leasesBefore = state.nodes.map((n) => subnetOf(state, n.name));
    const stateFile = readFileSync(join(state.control.stateDir, 'leases.json'), 'utf8');
    await killControl(prefix, 'SIGKILL');
    // Data plane on last-known routes: still every pair.
    for (const [a, b] of [
      ['n1', 'n2'],
      ['n3', 'n1'],
    ]) {
      const r = await pingPair(prefix, `${a}/p1`, pod(b).ip, { count: 2, intervalS: 0.2 });
      expect(r.ok, r.output).toBe(true);
    }
    await until('daemons to notice the watch is gone', async () => !(await status(prefix, 'n1')).control.watching);
    await startControl(prefix);
    const st = mustReadState(prefix);
    expect(st.nodes.map((n) => subnetOf(st, n.name))).toEqual(leasesBefore);
    const persisted = JSON.parse(readFileSync(join(state.control.stateDir, 'leases.json'), 'utf8')) as { leases: { subnet: string }[] };
    const before = JSON.parse(stateFile) as { leases: { subnet: string }[] };
    expect(persisted.leases.map((l) => l.subnet).sort()).toEqual(before.leases.map((l) => l.subnet).sort());
    for (const n of state.nodes) {
      await until(`${n.name} to resume its watch`, async () => (await status(prefix, n.name)).control.watching, 30_000);
      const s = await status(prefix, n.name);
      expect(s.peers.map((p) => p.subnet).sort()).toEqual(leasesBefore.filter((_, i) => state.nodes[i].name !== n.name).sort());
    }
    const r = await pingPair(prefix, 'n2/p1', pod('n3').ip, { count: 2, intervalS: 0.2 });
    expect(r.ok, r.output).toBe(true);
  }, 90_000);

  it('on SIGTERM, a daemon removes its TUN device and its route into it, and keeps subnet.env unchanged across the restart', async () => {
    const n3 = state.nodes.find((n) => n.name === 'n3')!;
    const link = await labExec(prefix, 'n3', ['ip', '-o', 'link', 'show', 'weft0']);
    expect(link.code).toBe(0);
    const envBefore = readFileSync(n3.subnetFile, 'utf8');
    await stopDaemon(prefix, 'n3', 'SIGTERM');
    expect((await labExec(prefix, 'n3', ['ip', '-o', 'link', 'show', 'weft0'])).code).not.toBe(0);
    expect((await labExec(prefix, 'n3', ['ip', 'route', 'show', '10.244.0.0/16'])).stdout.trim()).toBe('');
    // As flanneld: the lease is not revoked on shutdown and the file that pods were configured from stays.
    expect(readFileSync(n3.subnetFile, 'utf8')).toBe(envBefore);
    await startDaemon(prefix, 'n3');
    expect(readFileSync(n3.subnetFile, 'utf8')).toBe(envBefore);
    const r = await until('ping n1/p1 → n3/p1 after n3 came back', async () => {
      const p = await pingPair(prefix, 'n1/p1', pod('n3').ip, { count: 1, waitS: 1 });
      return p.ok ? p : undefined;
    });
    expect(r.ok).toBe(true);
  }, 60_000);

  it('exits with a clear error, instead of idling, when its TUN device is deleted under it', async () => {
    const n3 = mustReadState(prefix).nodes.find((n) => n.name === 'n3')!;
    const del = await labExec(prefix, 'n3', ['ip', 'link', 'del', 'weft0']);
    expect(del.code, del.stderr).toBe(0);
    await until(
      'n3 daemon to exit',
      async () => {
        try {
          process.kill(n3.pid, 0);
          return false;
        } catch {
          return true;
        }
      },
      10_000,
    );
    expect(readFileSync(n3.logFile, 'utf8')).toMatch(/datapath stopped: poll fd \d+/);
    await startDaemon(prefix, 'n3');
    const r = await until('ping n1/p1 → n3/p1 after n3 came back', async () => {
      const p = await pingPair(prefix, 'n1/p1', pod('n3').ip, { count: 1, waitS: 1 });
      return p.ok ? p : undefined;
    });
    expect(r.ok).toBe(true);
  }, 60_000);

  it('gives a daemon restarted on the same public IP its subnet back, and traffic recovers', async () => {
    const before = subnetOf(state, 'n2');
    await restartDaemon(prefix, 'n2', { signal: 'SIGKILL' });
    const st = mustReadState(prefix);
    expect(subnetOf(st, 'n2')).toBe(before);
    const r = await until('ping n1/p1 → n2/p1 after restart', async () => {
      const p = await pingPair(prefix, 'n1/p1', pod('n2').ip, { count: 1, waitS: 1 });
      return p.ok ? p : undefined;
    });
    expect(r.ok).toBe(true);
    const back = await pingPair(prefix, 'n2/p1', pod('n3').ip, { count: 2, intervalS: 0.2 });
    expect(back.ok, back.output).toBe(true);
  }, 60_000);
});
