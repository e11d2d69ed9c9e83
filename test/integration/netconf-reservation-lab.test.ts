// net-conf.json's vxlan MTU and an etcd reservation, end to end in a 2-node netns lab of weft
// daemons on etcd, as flannel's docs tell users to use them:
//  - "Backend": {"Type": "vxlan", "MTU": 1400}: the TUN and the pods' FLANNEL_MTU are 1350
//    (flannel's device gets MTU - 50), a 1350-byte DF ping crosses, a 1351-byte one does not;
//    a Backend.MTU above the underlay's stops a daemon at start, in one line, before any lease.
//  - a node's lease turned into a reservation with etcdctl (the key put again without --lease):
//    the restarted daemon acquires it, the key stays without a lease past several TTLs (so
//    neither acquire nor renew attached one), the daemon reports it as never expiring and
//    schedules no renewal, and the peer keeps routing to it.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonStatus, etcdEndpoints, labDown, labUp, pingPair, readSubnetEnv, restartDaemon, type LabState } from '../../src/lab';
import { NEVER_EXPIRES } from '../../src/control/registry';
import { mustNsRun, nsRun } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';
import { until } from '../support/until';

const TTL_S = 3;
const SUBNETS = '/coreos.com/network/subnets';

interface Status {
  mtu: number;
  lease: { subnet: string; publicIp: string; expiration: number };
  peers: { subnet: string; publicIp: string }[];
}

describe.skipIf(process.getuid?.() !== 0)('net-conf vxlan MTU and an etcd reservation in a 2-node lab', () => {
  const prefix = uniquePrefix('ncr');
  let state: LabState;
  const status = async (node: string) => (await daemonStatus(prefix, node)) as Status;
  const etcdctl = (...args: string[]) =>
    mustNsRun(state.control.ns, ['etcdctl', '--endpoints', etcdEndpoints(state.control).join(','), ...args], {
      timeoutMs: 10_000,
      env: { ...process.env, ETCDCTL_API: '3' },
    });
  const keyOf = (subnet: string) => `${SUBNETS}/${subnet.replace('/', '-')}`;
  /** The etcd lease ID of a key, decimal; '0' when it has none. */
  const keyLease = async (key: string): Promise<string> => {
    const m = /"Lease" : (\d+)/.exec((await etcdctl('get', key, '-w', 'fields')).stdout);
    if (!m) throw new Error(`no such key ${key}`);
    return m[1];
  };

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'vxlan', registry: 'etcd', leaseTtl: TTL_S, backendConfig: { MTU: 1400 } });
  }, 240_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it('Backend.MTU 1400: TUN and FLANNEL_MTU 1350; a 1350-byte DF packet crosses, 1351 does not', async () => {
    for (const n of state.nodes) {
      expect(readSubnetEnv(n.subnetFile)?.mtu, n.name).toBe(1350);
      expect((await status(n.name)).mtu, n.name).toBe(1350);
    }
    // ICMP echo: 20 IPv4 + 8 ICMP + payload.
    expect((await pingPair(prefix, 'n1/p1', 'n2/p1', { count: 2, args: ['-s', '1322', '-M', 'do'] })).received).toBe(2);
    expect((await pingPair(prefix, 'n1/p1', 'n2/p1', { count: 2, waitS: 1, args: ['-s', '1323', '-M', 'do'] })).received).toBe(0);
  }, 60_000);

  it('a Backend.MTU larger than the underlay stops the daemon at start in one line, before it takes a lease', async () => {
    const n = state.nodes[0];
    // A second network config under its own prefix, so the lab's own stays as it is.
    const cfg = JSON.stringify({ Network: '10.99.0.0/16', Backend: { Type: 'vxlan', MTU: 9000 } });
    await etcdctl('put', '/mtu-test/network/config', cfg);
    const r = await nsRun(
      n.ns,
      [
        state.nodeBin,
        state.weftJs,
        'daemon',
        '--etcd-endpoints',
        etcdEndpoints(state.control).join(','),
        '--etcd-prefix',
        '/mtu-test/network',
        '--public-ip',
        n.publicIp,
        '--iface',
        n.iface,
        '--subnet-file',
        `${n.subnetFile}.mtu-test`,
        '--tun-name',
        'weftmtu0',
        '--healthz-port',
        '0',
      ],
      { timeoutMs: 20_000 },
    );
    expect(r.code).toBe(1);
    const err = r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('weft daemon:'));
    expect(err).toEqual([`weft daemon: net-conf.json: Backend.MTU 9000 is larger than the MTU of ${n.iface}, the underlay interface: at most 1500`]);
    expect((await etcdctl('get', '--prefix', '/mtu-test/network/subnets', '--keys-only')).stdout.trim()).toBe('');
  }, 60_000);

  it('a lease made a reservation with etcdctl stays one: the restarted daemon holds it without a TTL, never renews it, the peer keeps its route', async () => {
    const n2 = state.nodes[1];
    const s2 = await status('n2');
    const key = keyOf(s2.lease.subnet);
    expect(await keyLease(key)).not.toBe('0');
    // flannel's docs/reservations.md: put the value back without --lease.
    const value = (await etcdctl('get', key, '--print-value-only')).stdout.trim();
    await etcdctl('put', key, value);
    expect(await keyLease(key)).toBe('0');

    await restartDaemon(prefix, 'n2');
    const after = await until('n2 holding its reserved subnet', async () => {
      const s = await status('n2');
      return s.lease?.subnet === s2.lease.subnet && s.lease.expiration === NEVER_EXPIRES && s;
    });
    expect(after.lease.publicIp).toBe(n2.publicIp);
    expect(await keyLease(key)).toBe('0');

    // Past three TTLs: a renewal, had one run, would have put the key on a lease, and an
    // ordinary lease left unrenewed would be gone.
    await new Promise((r) => setTimeout(r, 3 * TTL_S * 1000 + 500));
    expect(await keyLease(key)).toBe('0');
    expect((await status('n2')).lease.expiration).toBe(NEVER_EXPIRES);
    expect((await status('n1')).peers.map((p) => p.subnet)).toContain(s2.lease.subnet);
    expect((await pingPair(prefix, 'n1/p1', 'n2/p1', { count: 2 })).received).toBe(2);

    const log = readFileSync(n2.logFile, 'utf8');
    // setTimeout with a delay past 2^31-1 ms fires at once (and Node warns): the renew loop
    // would spin on a reservation's "never".
    expect(log).not.toContain('TimeoutOverflowWarning');
    expect(log).toContain('the subnet is reserved for this node: never expires, not renewed');
  }, 120_000);
});
