// A subnet lease from grant to loss, end to end in a 3-node netns lab, once on the embedded
// control plane and once on etcd: renewal ahead of expiry, a node that stops renewing falling
// out of every peer's routes and coming back with its subnet, restarts (also after the lease
// expired) keeping subnet and subnet.env, the whole control plane down while traffic flows, and
// a node whose subnet went to someone else stopping and saying why.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  daemonStatus,
  killControl,
  labDown,
  labExec,
  labUp,
  mustReadState,
  pingPair,
  startControl,
  startDaemon,
  stopDaemon,
  type LabState,
  type RegistryKind,
} from '../../src/lab';
import { nsRun } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { until } from '../support/until';

const TTL_S = 6;

interface Status {
  lease: { subnet: string; publicIp: string; expiration: number };
  leaseLost?: string;
  control: { watching: boolean; revision: number };
  peers: { subnet: string; publicIp: string }[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Acquires a lease as some other node would, from inside the switch namespace where the lab's
 * control plane listens, through the same Registry client a daemon uses for this registry kind.
 */
async function acquireAs(state: LabState, publicIp: string, previousSubnet: string): Promise<{ subnet: string }> {
  const dist = join(state.weftJs, '..', '..', 'dist', 'src', 'control');
  const js = `
    const [kind, addr, req] = process.argv.slice(1);
    const reg = kind === 'etcd'
      ? new (require(${JSON.stringify(join(dist, 'etcd', 'registry.js'))}).EtcdRegistry)({ endpoints: ['http://' + addr], leaseTtlMs: 600000 })
      : new (require(${JSON.stringify(join(dist, 'client.js'))}).GrpcRegistry)(addr);
    reg.acquire(JSON.parse(req)).then(
      (l) => { process.stdout.write(JSON.stringify(l)); reg.close(); process.exit(0); },
      (e) => { process.stderr.write(e.message); process.exit(1); });`;
  const r = await nsRun(state.control.ns, [
    state.nodeBin,
    '-e',
    js,
    state.control.kind ?? 'embedded',
    state.control.address,
    JSON.stringify({ publicIp, previousSubnet, backendType: 'udp' }),
  ]);
  if (r.code !== 0) throw new Error(`acquire as ${publicIp}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { subnet: string };
}

describe.each<RegistryKind>(['embedded', 'etcd'])('lease lifecycle on the %s registry', (registry) => {
  const prefix = registry === 'etcd' ? 'wlle-' : 'wllm-';
  const stopped = new Set<number>();
  const status = async (node: string): Promise<Status> => (await daemonStatus(prefix, node)) as Status;
  const node = (name: string) => mustReadState(prefix).nodes.find((n) => n.name === name)!;
  const pod = (name: string) => mustReadState(prefix).pods.find((p) => p.node === name)!;
  const peerSubnets = async (name: string): Promise<string[]> => (await status(name)).peers.map((p) => p.subnet).sort();

  beforeAll(async () => {
    await ensureBuilt();
    await labDown(prefix).catch(() => undefined);
    // Renew 3 s ahead of a 6 s TTL: a renewal every ~3 s, and a stopped node's lease gone within 6.
    await labUp({ prefix, nodes: 3, pods: 1, backend: 'udp', registry, leaseTtl: TTL_S, daemonArgs: ['--renew-margin', '3'] });
  }, 90_000);

  afterAll(async () => {
    for (const pid of stopped) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
    await labDown(prefix);
  }, 60_000);

  it('renews ahead of expiry, so no peer ever loses a node that is alive', async () => {
    const e0 = (await status('n1')).lease.expiration;
    const all = [await status('n1'), await status('n2'), await status('n3')].map((s) => s.lease.subnet).sort();
    const deadline = Date.now() + (TTL_S + 2) * 1000;
    while (Date.now() < deadline) {
      for (const n of ['n1', 'n2', 'n3']) {
        const s = await status(n);
        expect(s.peers.length, `${n} peers`).toBe(2);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    const s1 = await status('n1');
    expect(s1.lease.expiration).toBeGreaterThan(e0 + 2000);
    expect([s1.lease.subnet, ...s1.peers.map((p) => p.subnet)].sort()).toEqual(all);
  }, 30_000);

  it('restarted (also after its lease expired), a daemon keeps its subnet and its subnet.env byte for byte', async () => {
    const n2 = node('n2');
    const subnet = (await status('n2')).lease.subnet;
    const env = readFileSync(n2.subnetFile, 'utf8');
    await stopDaemon(prefix, 'n2', 'SIGTERM');
    await startDaemon(prefix, 'n2');
    expect((await status('n2')).lease.subnet).toBe(subnet);
    expect(readFileSync(n2.subnetFile, 'utf8')).toBe(env);
    // Down longer than the TTL: the lease expires and the peers drop it. On etcd nothing remembers
    // the subnet but the node's own subnet.env, which it sends back as its previous subnet.
    await stopDaemon(prefix, 'n2', 'SIGTERM');
    await until('n1 to drop n2 after its lease expired', async () => !(await peerSubnets('n1')).includes(subnet), (TTL_S + 6) * 1000);
    await startDaemon(prefix, 'n2');
    expect((await status('n2')).lease.subnet).toBe(subnet);
    expect(readFileSync(n2.subnetFile, 'utf8')).toBe(env);
    await until('n1 to have n2 back', async () => (await peerSubnets('n1')).includes(subnet));
    const r = await pingPair(prefix, 'n1/p1', pod('n2').ip, { count: 2, intervalS: 0.2 });
    expect(r.ok, r.output).toBe(true);
  }, 60_000);

  it('a node that stops renewing drops out of every peer when its lease expires, and rejoins with the same subnet', async () => {
    const n3 = node('n3');
    const subnet = (await status('n3')).lease.subnet;
    process.kill(n3.pid, 'SIGSTOP');
    stopped.add(n3.pid);
    try {
      await until(
        'n1 and n2 to drop n3',
        async () => !(await peerSubnets('n1')).includes(subnet) && !(await peerSubnets('n2')).includes(subnet),
        (TTL_S + 6) * 1000,
      );
      // Peers now answer traffic to n3's pods as unroutable instead of sending it to a dead node.
      const lost = await pingPair(prefix, 'n1/p1', pod('n3').ip, { count: 1, waitS: 1 });
      expect(lost.ok).toBe(false);
    } finally {
      process.kill(n3.pid, 'SIGCONT');
      stopped.delete(n3.pid);
    }
    // Its renewal (or its watch) finds the lease gone; it asks again and, the subnet being free, gets it back.
    await until('n3 back in n1 and n2', async () => (await peerSubnets('n1')).includes(subnet) && (await peerSubnets('n2')).includes(subnet), 20_000);
    expect((await status('n3')).lease.subnet).toBe(subnet);
    const r = await until('n1/p1 → n3/p1', async () => {
      const p = await pingPair(prefix, 'n1/p1', pod('n3').ip, { count: 1, waitS: 1 });
      return p.ok ? p : undefined;
    });
    expect(r.ok).toBe(true);
  }, 60_000);

  it('with the whole control plane down, traffic keeps flowing on last-known routes; daemons reconnect and resynchronise', async () => {
    const revisions = await Promise.all(['n1', 'n2', 'n3'].map(async (n) => (await status(n)).control.revision));
    await killControl(prefix, 'SIGKILL');
    try {
      await until('n1 to notice the watch is gone', async () => !(await status('n1')).control.watching, 30_000);
      for (const [a, b] of [
        ['n1', 'n2'],
        ['n2', 'n3'],
        ['n3', 'n1'],
      ]) {
        const r = await pingPair(prefix, `${a}/p1`, pod(b).ip, { count: 2, intervalS: 0.2 });
        expect(r.ok, `${a} → ${b} with the control plane down\n${r.output}`).toBe(true);
      }
    } finally {
      await startControl(prefix);
    }
    for (const [i, n] of ['n1', 'n2', 'n3'].entries()) {
      await until(
        `${n} watching again`,
        async () => {
          const s = await status(n);
          return s.control.watching && s.control.revision >= revisions[i];
        },
        30_000,
      );
      expect((await status(n)).peers).toHaveLength(2);
    }
    const r = await pingPair(prefix, 'n3/p1', pod('n1').ip, { count: 2, intervalS: 0.2 });
    expect(r.ok, r.output).toBe(true);
  }, 90_000);

  it('a node whose subnet went to another node while its lease was gone stops forwarding and says why', async () => {
    const n3 = node('n3');
    const subnet = (await status('n3')).lease.subnet;
    process.kill(n3.pid, 'SIGSTOP');
    stopped.add(n3.pid);
    let impostor: { subnet: string };
    try {
      await until('n3 lease to expire', async () => !(await peerSubnets('n1')).includes(subnet), (TTL_S + 6) * 1000);
      impostor = await acquireAs(mustReadState(prefix), '192.168.77.99', subnet);
      expect(impostor.subnet).toBe(subnet);
    } finally {
      process.kill(n3.pid, 'SIGCONT');
      stopped.delete(n3.pid);
    }
    await until('n3 daemon to exit', async () => !alive(n3.pid), 20_000);
    const log = readFileSync(n3.logFile, 'utf8');
    expect(log).toMatch(new RegExp(`lease lost: .*${subnet.replace(/\./g, '\\.').replace('/', '\\/')}`));
    expect((await labExec(prefix, 'n3', ['ip', '-o', 'link', 'show', 'weft0'])).code).not.toBe(0);
    // The others now route that subnet to its new holder.
    await until('n1 to route the subnet to the new holder', async () =>
      (await status('n1')).peers.some((p) => p.subnet === subnet && p.publicIp === '192.168.77.99'),
    );
  }, 60_000);
});
