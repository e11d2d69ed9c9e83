// EtcdRegistry against real etcd members on loopback (Debian's etcd 3.4): flannel's key layout
// and JSON as etcdctl shows them, flannel-written leases seen as peers, compare-and-swap under
// concurrent clients, compaction recovery, a member SIGKILLed during lease churn, etcd hanging
// and down, lease expiry, garbage under the prefix, and client-certificate TLS. Each test works
// under its own key prefix so they share one cluster without seeing each other.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_ETCD_PREFIX } from '../../src/control/etcd/codec';
import { ensureNetworkConfig } from '../../src/control/etcd/netconf';
import { EtcdRegistry, type EtcdRegistryOptions } from '../../src/control/etcd/registry';
import { NEVER_EXPIRES, isRegistryError, type Lease, type Registry, type RegistryLogger, type WatchBatch } from '../../src/control/registry';
import { mustRun, sleep } from '../../src/lab/process';
import { startEtcdCluster, type EtcdTestCluster } from '../support/etcd';
import { rejection } from '../support/registry';

const VXLAN_NET = JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
const UDP_NET = JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } });

const open = new Set<EtcdRegistry>();
const clusters = new Set<EtcdTestCluster>();

function registry(opts: EtcdRegistryOptions): EtcdRegistry {
  const r = new EtcdRegistry(opts);
  open.add(r);
  return r;
}

async function cluster(members: 1 | 3, tls?: { clientCertAuth?: boolean }): Promise<EtcdTestCluster> {
  const c = await startEtcdCluster({ members, tls });
  clusters.add(c);
  return c;
}

afterEach(() => {
  for (const r of open) r.close();
  open.clear();
});

afterAll(async () => {
  for (const r of open) r.close();
  await Promise.all([...clusters].map((c) => c.stop()));
});

async function etcdctl(c: EtcdTestCluster, ...args: string[]): Promise<string> {
  return (await mustRun('etcdctl', [...c.etcdctlFlags, ...args], { timeoutMs: 10_000, env: { ...process.env, ETCDCTL_API: '3' } })).stdout;
}

/** The etcd lease a key is attached to, in the hex form etcdctl's lease commands take. */
async function leaseOfKey(c: EtcdTestCluster, key: string): Promise<string> {
  // -w json would print the 64-bit ID as a JSON number, which JavaScript cannot hold exactly.
  const out = await etcdctl(c, 'get', key, '-w', 'fields');
  const m = /"Lease" : (\d+)/.exec(out);
  if (!m) throw new Error(`no lease in: ${out}`);
  return BigInt(m[1]).toString(16).padStart(16, '0'); // etcdctl prints IDs as %016x
}

/** The etcd lease ID a key is attached to, in decimal; '0' for a key written without one (a reservation). */
async function keyLease(c: EtcdTestCluster, key: string): Promise<string> {
  const out = await etcdctl(c, 'get', key, '-w', 'fields');
  const m = /"Lease" : (\d+)/.exec(out);
  if (!m) throw new Error(`no lease field in: ${out}`);
  return m[1];
}

async function leaseTtl(c: EtcdTestCluster, hexId: string): Promise<{ granted: number; remaining: number }> {
  const out = await etcdctl(c, 'lease', 'timetolive', hexId);
  if (/already expired/.test(out)) return { granted: 0, remaining: -1 }; // expired or revoked
  const m = /granted with TTL\((\d+)s\), remaining\((-?\d+)s\)/.exec(out);
  if (!m) throw new Error(`unexpected lease timetolive output: ${out}`);
  return { granted: Number(m[1]), remaining: Number(m[2]) };
}

async function grantLease(c: EtcdTestCluster, ttlSeconds: number): Promise<string> {
  const out = await etcdctl(c, 'lease', 'grant', String(ttlSeconds));
  const m = /lease ([0-9a-f]+) granted/.exec(out);
  if (!m) throw new Error(`unexpected lease grant output: ${out}`);
  return m[1];
}

function keyOf(prefix: string, subnet: string): string {
  return `${prefix}/subnets/${subnet.replace('/', '-')}`;
}

interface Collector {
  batches: WatchBatch[];
  error: Error | undefined;
  close(): void;
  until(pred: (bs: WatchBatch[]) => boolean, ms: number, what: string): Promise<void>;
}

function collect(reg: Registry, from: number): Collector {
  const c: Collector = {
    batches: [],
    error: undefined,
    close: () => h.close(),
    async until(pred, ms, what) {
      const deadline = Date.now() + ms;
      while (!pred(c.batches)) {
        if (c.error) throw new Error(`watch failed while waiting for ${what}: ${c.error.message}`);
        if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms; batches: ${JSON.stringify(c.batches)}`);
        await sleep(20);
      }
    },
  };
  const h = reg.watch(
    from,
    (b) => {
      if (c.error) throw new Error('onBatch after onError');
      c.batches.push(b);
    },
    (e) => {
      if (c.error) throw new Error('onError twice');
      c.error = e;
    },
  );
  return c;
}

const events = (bs: WatchBatch[]) => bs.flatMap((b) => b.events);
const lastRevision = (bs: WatchBatch[]) => (bs.length ? bs[bs.length - 1].revision : 0);

/** Retries while the registry says 'unavailable', as the daemon does. */
async function untilAvailable<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (!isRegistryError(e) || e.code !== 'unavailable' || Date.now() > deadline) throw e;
      await sleep(100);
    }
  }
}

function recordingLogger(): RegistryLogger & { warnings: string[] } {
  const warnings: string[] = [];
  return {
    warnings,
    info() {},
    warn(obj, msg) {
      warnings.push(`${msg ?? ''} ${JSON.stringify(obj)}`);
    },
    error(obj, msg) {
      warnings.push(`${msg ?? ''} ${JSON.stringify(obj)}`);
    },
  };
}

describe('EtcdRegistry on a single member', () => {
  let c: EtcdTestCluster;

  beforeAll(async () => {
    c = await cluster(1);
  });

  it('writes flannel keys and JSON, each key on its own etcd lease with the configured TTL', async () => {
    const reg = registry({ endpoints: c.endpoints }); // default prefix and flannel's 24 h TTL
    await ensureNetworkConfig(reg, VXLAN_NET);
    const vx = await reg.acquire({ publicIp: '192.168.77.11', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0e:00:c0:a8:4d:0b' } });
    const udp = await reg.acquire({ publicIp: '192.168.77.12', backendType: 'udp' });
    expect(vx.subnet).not.toBe(udp.subnet);
    expect(vx.expiration).toBeGreaterThan(Date.now() + 86_390_000);

    const out = await etcdctl(c, 'get', '--prefix', `${DEFAULT_ETCD_PREFIX}/subnets`);
    const lines = out.trim().split('\n');
    const kv = new Map<string, string>();
    for (let i = 0; i + 1 < lines.length; i += 2) kv.set(lines[i], lines[i + 1]);
    expect(kv.size).toBe(2);
    expect(vx.subnet).toMatch(/^10\.244\.\d+\.0\/24$/);
    expect(kv.get(`/coreos.com/network/subnets/${vx.subnet.replace('/', '-')}`)).toBe(
      '{"PublicIP":"192.168.77.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:c0:a8:4d:0b"}}',
    );
    // flannel omits an empty BackendData (json:",omitempty" on a nil RawMessage).
    expect(kv.get(`/coreos.com/network/subnets/${udp.subnet.replace('/', '-')}`)).toBe('{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"udp"}');
    expect((await etcdctl(c, 'get', `${DEFAULT_ETCD_PREFIX}/config`, '--print-value-only')).trim()).toBe(VXLAN_NET);

    const ids: string[] = [];
    for (const l of [vx, udp]) {
      const id = await leaseOfKey(c, keyOf(DEFAULT_ETCD_PREFIX, l.subnet));
      ids.push(id);
      const ttl = await leaseTtl(c, id);
      expect(ttl.granted).toBe(86_400);
      expect(ttl.remaining).toBeGreaterThan(86_390);
    }
    expect(ids[0]).not.toBe(ids[1]); // one etcd lease per subnet key, as flannel grants them

    // Renewal moves the key to a fresh lease and revokes the old one (no day-long orphans).
    await sleep(1100);
    const renewed = await reg.renew(vx);
    expect(renewed.expiration).toBeGreaterThan(vx.expiration);
    const newId = await leaseOfKey(c, keyOf(DEFAULT_ETCD_PREFIX, vx.subnet));
    expect(newId).not.toBe(ids[0]);
    await expect.poll(async () => (await leaseTtl(c, ids[0])).remaining, { timeout: 3000 }).toBe(-1);
    await reg.revoke(udp);
    await expect.poll(async () => (await leaseTtl(c, ids[1])).remaining, { timeout: 3000 }).toBe(-1);
    expect(await etcdctl(c, 'get', keyOf(DEFAULT_ETCD_PREFIX, udp.subnet))).toBe('');
    const leases = (await etcdctl(c, 'lease', 'list')).trim().split('\n').slice(1);
    expect(leases).toEqual([newId]);
  });

  it("a reservation (a key etcdctl wrote without a lease, as flannel's docs say) goes to its node and stays leaseless through acquire, renew and revoke; never to another node", async () => {
    const prefix = '/tres/network';
    const reg = registry({ endpoints: c.endpoints, prefix });
    await ensureNetworkConfig(reg, JSON.stringify({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.2.0', Backend: { Type: 'vxlan' } }));
    const key = keyOf(prefix, '10.244.2.0/24');
    const written = '{"PublicIP":"192.168.77.50","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:50"}}';
    await etcdctl(c, 'put', key, written);

    // Another node gets the other subnet; a third finds none: the reserved one is not free.
    const other = await reg.acquire({ publicIp: '192.168.77.51' });
    expect(other.subnet).toBe('10.244.1.0/24');
    expect((await rejection(reg.acquire({ publicIp: '192.168.77.52', previousSubnet: '10.244.2.0/24' }))).code).toBe('exhausted');

    const mine = await reg.acquire({ publicIp: '192.168.77.50', backendData: { VNI: 1, VtepMAC: '0e:00:c0:a8:4d:32' } });
    expect(mine).toMatchObject({ subnet: '10.244.2.0/24', expiration: NEVER_EXPIRES, backendData: { VNI: 1, VtepMAC: '0e:00:c0:a8:4d:32' } });
    expect(await keyLease(c, key)).toBe('0');
    expect((await etcdctl(c, 'get', key, '--print-value-only')).trim()).toBe(
      '{"PublicIP":"192.168.77.50","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:c0:a8:4d:32"}}',
    );
    expect(await reg.renew(mine)).toEqual(mine);
    expect(await keyLease(c, key)).toBe('0');
    await reg.revoke(mine);
    expect(await keyLease(c, key)).toBe('0');
    const listed = (await reg.list()).leases.find((l) => l.subnet === mine.subnet);
    expect(listed?.expiration).toBe(NEVER_EXPIRES);
    // A restarted node (same public IP, a fresh client) gets it again, still without a lease.
    const again = await registry({ endpoints: c.endpoints, prefix }).acquire({ publicIp: '192.168.77.50' });
    expect(again).toMatchObject({ subnet: '10.244.2.0/24', expiration: NEVER_EXPIRES });
    expect(await keyLease(c, key)).toBe('0');
  });

  it('a reservation outside the network config is skipped with a warning and left as written; its node gets an ordinary lease', async () => {
    const prefix = '/tres2/network';
    const warnings: Array<Record<string, unknown>> = [];
    const logger: RegistryLogger = { info() {}, error() {}, warn: (o, m) => warnings.push({ ...o, m }) };
    const reg = registry({ endpoints: c.endpoints, prefix, logger });
    await ensureNetworkConfig(reg, JSON.stringify({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.2.0', Backend: { Type: 'vxlan' } }));
    const key = keyOf(prefix, '10.244.9.0/24');
    const written = '{"PublicIP":"192.168.77.60","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:60"}}';
    await etcdctl(c, 'put', key, written);
    const l = await reg.acquire({ publicIp: '192.168.77.60' });
    expect(['10.244.1.0/24', '10.244.2.0/24']).toContain(l.subnet);
    expect(l.expiration).toBeLessThan(NEVER_EXPIRES);
    expect(await keyLease(c, keyOf(prefix, l.subnet))).not.toBe('0');
    expect(warnings).toContainEqual(
      expect.objectContaining({ subnet: '10.244.9.0/24', publicIp: '192.168.77.60', m: 'skipping a reservation that does not fit the network config' }),
    );
    expect((await etcdctl(c, 'get', key, '--print-value-only')).trim()).toBe(written);
    expect(await keyLease(c, key)).toBe('0');
  });

  it('network config: missing is unavailable with the etcdctl command to fix it, junk is invalid, ensure refuses a different one', async () => {
    const reg = registry({ endpoints: c.endpoints, prefix: '/cfg/network' });
    const missing = await rejection(reg.config());
    expect(missing.code).toBe('unavailable');
    expect(missing.message).toContain('no network config at /cfg/network/config');
    expect(missing.message).toContain('etcdctl put /cfg/network/config');
    expect((await rejection(reg.acquire({ publicIp: '10.1.0.1' }))).code).toBe('unavailable');

    await etcdctl(c, 'put', '/cfg/network/config', '{"Network": "10.244.0.0/33"}');
    const junk = await rejection(reg.config());
    expect(junk.code).toBe('invalid');
    expect(junk.message).toContain('/cfg/network/config');

    await etcdctl(c, 'del', '/cfg/network/config');
    await ensureNetworkConfig({ endpoints: c.endpoints, prefix: '/cfg/network/' }, UDP_NET);
    // The same config spelled differently is the same config.
    await ensureNetworkConfig(reg, '{ "Backend": {"Type": "udp"},\n  "Network": "10.244.0.0/16" }\n');
    const other = await rejection(ensureNetworkConfig(reg, VXLAN_NET));
    expect(other.code).toBe('invalid');
    expect(other.message).toContain(UDP_NET);
    expect(other.message).toContain(VXLAN_NET);
    expect((await rejection(ensureNetworkConfig(reg, '{"Network": 5}'))).code).toBe('invalid');
    expect((await reg.config()).backend.type).toBe('udp');
  });

  it('sees a lease that flanneld wrote (raw etcdctl put on its own lease) as a peer, in list() and watch()', async () => {
    const prefix = '/t2/network';
    const reg = registry({ endpoints: c.endpoints, prefix });
    await ensureNetworkConfig(reg, VXLAN_NET);
    const w = collect(reg, 0);
    expect(w.batches).toHaveLength(0); // never delivered from inside watch()
    await w.until((bs) => bs.length > 0, 3000, 'snapshot');
    expect(w.batches[0]).toMatchObject({ snapshot: true, leases: [] });

    const id = await grantLease(c, 600);
    const flannelVxlan = '{"PublicIP":"192.168.77.99","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}';
    await etcdctl(c, 'put', `--lease=${id}`, `${prefix}/subnets/10.244.9.0-24`, flannelVxlan);
    // flanneld's udp backend writes no BackendType at all.
    await etcdctl(c, 'put', `--lease=${id}`, `${prefix}/subnets/10.244.10.0-24`, '{"PublicIP":"192.168.77.98","PublicIPv6":null}');

    await w.until((bs) => events(bs).length >= 2, 3000, 'two added events');
    const added = events(w.batches);
    expect(added.map((e) => e.type)).toEqual(['added', 'added']);
    expect(added[0].lease).toMatchObject({
      subnet: '10.244.9.0/24',
      publicIp: '192.168.77.99',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:01' },
    });
    expect(added[1].lease).toMatchObject({ subnet: '10.244.10.0/24', publicIp: '192.168.77.98', backendType: 'udp', backendData: {} });
    // Watches skip the TimeToLive lookup (0); list() computes it from the etcd lease's remaining
    // TTL, as flanneld does.
    expect(added[0].lease.expiration).toBe(0);

    const { leases, revision } = await reg.list();
    const listed = leases.find((l) => l.subnet === '10.244.9.0/24')!;
    expect(listed.expiration).toBeGreaterThan(Date.now() + 590_000);
    expect(listed.expiration).toBeLessThan(Date.now() + 601_000);
    expect(revision).toBe(lastRevision(w.batches));
    expect(leases.map((l) => l.subnet).sort()).toEqual(['10.244.10.0/24', '10.244.9.0/24']);

    // Taken is taken: not even the node's own previousSubnet hint gets it.
    const mine = await reg.acquire({ publicIp: '192.168.77.11', previousSubnet: '10.244.9.0/24' });
    expect(mine.subnet).not.toBe('10.244.9.0/24');
    // …and a free hinted subnet is honoured. The first acquire took a random free subnet, so the
    // hint must avoid it (it was 10.244.42.0/24 once in 254 runs, and the hint then lost).
    const hint = mine.subnet === '10.244.42.0/24' ? '10.244.43.0/24' : '10.244.42.0/24';
    const back = await reg.acquire({ publicIp: '192.168.77.12', previousSubnet: hint });
    expect(back.subnet).toBe(hint);
    // flanneld's node revoking (deleting) its key is a 'removed' with the lease from prev_kv.
    await etcdctl(c, 'del', `${prefix}/subnets/10.244.9.0-24`);
    await w.until((bs) => events(bs).some((e) => e.type === 'removed'), 3000, 'removed event');
    expect(events(w.batches).find((e) => e.type === 'removed')?.lease).toMatchObject({
      subnet: '10.244.9.0/24',
      publicIp: '192.168.77.99',
      backendType: 'vxlan',
    });
    w.close();
  });

  it('hands out distinct subnets to 4 independent clients acquiring 50 nodes each at once', async () => {
    const prefix = '/t3/network';
    // 255 /24s: 200 nodes fill most of it, so late acquires collide on stale lists and must retry.
    const net = JSON.stringify({ Network: '10.50.0.0/16', Backend: { Type: 'udp' } });
    let casRetries = 0;
    const logger: RegistryLogger = {
      info(_o, msg) {
        if (msg?.includes('retrying')) casRetries++;
      },
      warn() {},
      error() {},
    };
    const clients = Array.from({ length: 4 }, () => registry({ endpoints: c.endpoints, prefix, logger }));
    await ensureNetworkConfig(clients[0], net);
    const granted: Lease[] = [];
    let retries = 0;
    await Promise.all(
      clients.map(async (reg, ci) => {
        // Ten in flight per client, so the four clients interleave continuously.
        const ips = Array.from({ length: 50 }, (_, i) => `192.168.${ci + 1}.${i + 1}`);
        const worker = async (): Promise<void> => {
          for (let ip = ips.shift(); ip; ip = ips.shift()) {
            const l = await untilAvailable(async () => {
              try {
                return await reg.acquire({ publicIp: ip });
              } catch (e) {
                retries++;
                throw e;
              }
            }, 10_000);
            granted.push(l);
          }
        };
        await Promise.all(Array.from({ length: 10 }, worker));
      }),
    );
    expect(granted).toHaveLength(200);
    expect(new Set(granted.map((l) => l.subnet)).size).toBe(200);
    const { leases } = await clients[3].list();
    expect(leases).toHaveLength(200);
    expect(new Map(leases.map((l) => [l.subnet, l.publicIp]))).toEqual(new Map(granted.map((l) => [l.subnet, l.publicIp])));
    // The compare-and-create really was contended, and rarely needed more than the call's own retries.
    expect(casRetries).toBeGreaterThan(0);
    expect(retries).toBeLessThan(20);
  });

  it('recovers a watch whose history was compacted with a snapshot, then streams live events', async () => {
    const prefix = '/t4/network';
    const reg = registry({ endpoints: c.endpoints, prefix });
    await ensureNetworkConfig(reg, UDP_NET);
    const a = await reg.acquire({ publicIp: '10.9.0.1' });
    const from = (await reg.list()).revision;
    const b = await reg.acquire({ publicIp: '10.9.0.2' });
    await reg.revoke(a);
    const cut = (await reg.list()).revision;
    await etcdctl(c, 'compact', String(cut));

    const w = collect(reg, from);
    await w.until((bs) => bs.some((x) => x.snapshot), 3000, 'snapshot after compaction');
    const snap = w.batches.find((x) => x.snapshot) as WatchBatch;
    expect(snap.revision).toBeGreaterThanOrEqual(cut);
    expect(snap.leases.map((l) => l.subnet)).toEqual([b.subnet]);
    // Anything before the snapshot can only be the "connected" confirmation at `from`.
    for (const x of w.batches.slice(0, w.batches.indexOf(snap))) expect(x).toEqual({ revision: from, snapshot: false, leases: [], events: [] });

    const d = await reg.acquire({ publicIp: '10.9.0.4' });
    await w.until((bs) => events(bs).some((e) => e.lease.subnet === d.subnet), 3000, 'live event after recovery');
    const live = w.batches[w.batches.length - 1];
    expect(live.revision).toBeGreaterThan(snap.revision);
    expect(live.events).toEqual([{ type: 'added', lease: expect.objectContaining({ subnet: d.subnet, publicIp: '10.9.0.4' }) }]);
    expect(w.error).toBeUndefined();
    w.close();
  });

  it('lets an unrenewed lease expire: gone from list(), reported removed by the watch; a renewed one stays', async () => {
    const prefix = '/t7/network';
    // etcd's minimum lease TTL is 1.5 election timeouts rounded up to a second: 1 s with the
    // 500 ms election timeout these members run with, so 2 s is honoured as asked.
    const reg = registry({ endpoints: c.endpoints, prefix, leaseTtlMs: 2000 });
    await ensureNetworkConfig(reg, UDP_NET);
    const w = collect(reg, 0);
    await w.until((bs) => bs.length > 0, 3000, 'snapshot');
    const lapsing = await reg.acquire({ publicIp: '10.7.0.1' });
    const kept = await reg.acquire({ publicIp: '10.7.0.2' });
    expect(kept.expiration - Date.now()).toBeLessThanOrEqual(2000);
    const t0 = Date.now();
    const renewer = (async () => {
      while (Date.now() - t0 < 4000) {
        await sleep(600);
        await reg.renew(kept);
      }
    })();
    await w.until((bs) => events(bs).some((e) => e.type === 'removed'), 5000, 'expiry');
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThan(1500);
    expect(events(w.batches).filter((e) => e.type === 'removed')).toEqual([
      { type: 'removed', lease: expect.objectContaining({ subnet: lapsing.subnet, publicIp: '10.7.0.1' }) },
    ]);
    expect((await reg.list()).leases.map((l) => l.subnet)).toEqual([kept.subnet]);
    expect((await rejection(reg.renew(lapsing))).code).toBe('not_found');
    await renewer;
    expect((await reg.list()).leases.map((l) => l.subnet)).toEqual([kept.subnet]);
    w.close();
  });

  it('skips garbage under the subnets prefix (bad key, bad JSON, foreign subnet) without failing', async () => {
    const prefix = '/t8/network';
    const log = recordingLogger();
    const reg = registry({ endpoints: c.endpoints, prefix, logger: log });
    await ensureNetworkConfig(reg, UDP_NET);
    const good = '{"PublicIP":"192.168.77.50","PublicIPv6":null,"BackendType":"udp"}';
    await etcdctl(c, 'put', `${prefix}/subnets/not-a-subnet`, good);
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.5.0-24`, '{"PublicIP": "192.168.77.51"'); // truncated
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.6.0-24`, '{"PublicIP": 5}');
    await etcdctl(c, 'put', `${prefix}/subnets/10.99.0.0-24`, good.replace('.50', '.52')); // outside the network
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.7.0-24`, good);

    const { leases } = await reg.list();
    expect(leases.map((l) => l.subnet)).toEqual(['10.244.7.0/24']);
    for (const bad of ['not-a-subnet', '10.244.5.0-24', '10.244.6.0-24', '10.99.0.0-24']) {
      expect(log.warnings.some((m) => m.includes(bad))).toBe(true);
    }
    const w = collect(reg, 0);
    await w.until((bs) => bs.length > 0, 3000, 'snapshot');
    expect(w.batches[0].leases.map((l) => l.subnet)).toEqual(['10.244.7.0/24']);

    // A key that exists is taken even when its value is junk: claiming it could never succeed.
    const mine = await reg.acquire({ publicIp: '192.168.77.60', previousSubnet: '10.244.5.0/24' });
    expect(mine.subnet).not.toBe('10.244.5.0/24');
    expect((await rejection(reg.renew({ subnet: '10.244.5.0/24', publicIp: '192.168.77.51' }))).code).toBe('permission');
    expect((await rejection(reg.renew({ subnet: '10.244.7.0/24', publicIp: '192.168.77.60' }))).code).toBe('permission');

    // Garbage arriving on the watch is skipped; the stream carries on.
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.8.0-24`, 'null');
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.200.0-99`, good);
    const late = await reg.acquire({ publicIp: '192.168.77.61' });
    await w.until((bs) => events(bs).some((e) => e.lease.subnet === late.subnet), 3000, 'event after garbage');
    expect(events(w.batches).map((e) => e.lease.subnet)).toEqual([mine.subnet, late.subnet]);
    expect(w.error).toBeUndefined();
    w.close();
  });

  it('skips a lease value someone else wrote beyond limits.ts (oversized backendData, 100 KB PublicIP) with a short log line', async () => {
    const prefix = '/t9/network';
    const log = recordingLogger();
    const reg = registry({ endpoints: c.endpoints, prefix, logger: log });
    await ensureNetworkConfig(reg, VXLAN_NET);
    // etcdctl takes the value as one argument (at most 128 KiB on Linux), enough to be far over.
    const fat = JSON.stringify({ PublicIP: '192.168.77.70', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VtepMAC: 'a'.repeat(64 * 1024) } });
    const longIp = JSON.stringify({ PublicIP: '1'.repeat(100_000), PublicIPv6: null, BackendType: 'vxlan' });
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.10.0-24`, fat);
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.11.0-24`, longIp);
    const mine = await reg.acquire({ publicIp: '192.168.77.71', backendData: { VtepMAC: '0e:00:c0:a8:4d:47' } });
    expect((await reg.list()).leases.map((l) => l.subnet)).toEqual([mine.subnet]);
    for (const bad of ['10.244.10.0-24', '10.244.11.0-24']) {
      const lines = log.warnings.filter((m) => m.includes(bad));
      expect(lines.length, bad).toBeGreaterThan(0);
      for (const m of lines) expect(m.length, bad).toBeLessThan(500);
    }

    const w = collect(reg, 0);
    await w.until((bs) => bs.length > 0, 3000, 'snapshot');
    expect(w.batches[0].leases.map((l) => l.subnet)).toEqual([mine.subnet]);
    await etcdctl(c, 'put', `${prefix}/subnets/10.244.12.0-24`, fat);
    const late = await reg.acquire({ publicIp: '192.168.77.72' });
    await w.until((bs) => events(bs).some((e) => e.lease.subnet === late.subnet), 3000, 'event after the oversized one');
    expect(events(w.batches).map((e) => e.lease.subnet)).toEqual([late.subnet]);
    expect(w.error).toBeUndefined();
    w.close();
  });
});

describe('EtcdRegistry when etcd hangs or goes down', () => {
  let c: EtcdTestCluster;

  beforeAll(async () => {
    c = await cluster(1);
  });

  it('fails calls with unavailable within the deadline, fails the watch, and resumes from the last revision after a restart', async () => {
    const prefix = '/t6/network';
    const DEADLINE = 1000;
    const SLACK = 750;
    const reg = registry({ endpoints: c.endpoints, prefix, deadlineMs: DEADLINE });
    await ensureNetworkConfig(reg, UDP_NET);
    const a = await reg.acquire({ publicIp: '10.6.0.1' });
    const m = c.members[0];

    const timed = async (p: Promise<unknown>): Promise<{ code: string; ms: number; message: string }> => {
      const t0 = Date.now();
      const e = await rejection(p);
      return { code: e.code, ms: Date.now() - t0, message: e.message };
    };

    // Hanging (SIGSTOP): the connection stays up and nothing answers; only a deadline helps.
    m.signal('SIGSTOP');
    try {
      for (const call of [() => reg.list(), () => reg.renew(a), () => reg.acquire({ publicIp: '10.6.0.9' })]) {
        const r = await timed(call());
        expect(r.code).toBe('unavailable');
        expect(r.ms).toBeLessThan(DEADLINE + SLACK);
        expect(r.message).toContain(c.endpoints[0]);
      }
    } finally {
      m.signal('SIGCONT');
    }
    await untilAvailable(() => reg.list(), 5000);

    const w = collect(reg, 0);
    await w.until((bs) => bs.length > 0, 3000, 'snapshot');
    const b = await reg.acquire({ publicIp: '10.6.0.2' });
    await w.until((bs) => events(bs).some((e) => e.lease.subnet === b.subnet), 3000, 'added event');
    const seen = lastRevision(w.batches);

    // Down (SIGKILL): refused connections fail fast, and the open watch is told once.
    await m.kill('SIGKILL');
    await w.until(() => w.error !== undefined, 3000, 'watch error').catch(() => undefined);
    expect(w.error).toBeDefined();
    expect(isRegistryError(w.error) && w.error.code).toBe('unavailable');
    const after = w.batches.length;
    for (const call of [() => reg.list(), () => reg.acquire({ publicIp: '10.6.0.3' }), () => reg.revoke(a)]) {
      const r = await timed(call());
      expect(r.code).toBe('unavailable');
      expect(r.ms).toBeLessThan(DEADLINE + SLACK);
    }
    const failed = collect(reg, seen);
    await failed.until(() => failed.error !== undefined, DEADLINE + SLACK, 'watch error on a down etcd').catch(() => undefined);
    expect(isRegistryError(failed.error) && failed.error.code).toBe('unavailable');
    expect(failed.batches).toEqual([]);

    await m.start();
    const writer = registry({ endpoints: c.endpoints, prefix });
    const d = await untilAvailable(() => writer.acquire({ publicIp: '10.6.0.4' }), 5000);
    await untilAvailable(() => writer.revoke(b), 5000);

    // The daemon's reconnect: a new watch from the last revision it applied.
    let resumed: Collector | undefined;
    const deadline = Date.now() + 5000;
    for (;;) {
      resumed = collect(reg, seen);
      try {
        await resumed.until((bs) => bs.length > 0, 3000, 'resumed watch');
        break;
      } catch (e) {
        resumed.close();
        if (Date.now() > deadline) throw e;
        await sleep(200);
      }
    }
    expect(resumed.batches[0]).toEqual({ revision: seen, snapshot: false, leases: [], events: [] });
    await resumed.until((bs) => events(bs).length >= 2, 3000, 'missed events');
    expect(events(resumed.batches).map((e) => [e.type, e.lease.subnet])).toEqual([
      ['added', d.subnet],
      ['removed', b.subnet],
    ]);
    expect(w.batches.length).toBe(after); // nothing after onError
    resumed.close();
  });
});

describe('EtcdRegistry on a 3-member cluster', () => {
  let c: EtcdTestCluster;

  beforeAll(async () => {
    c = await cluster(3);
  });

  it('loses no lease and grants none twice during churn while the leader is SIGKILLed and restarted', async () => {
    const prefix = '/t5/network';
    const regs = Array.from({ length: 6 }, () => registry({ endpoints: c.endpoints, prefix, leaseTtlMs: 120_000, deadlineMs: 2000 }));
    await untilAvailable(() => ensureNetworkConfig(regs[0], UDP_NET), 5000);

    const holder = new Map<string, string>(); // subnet → public IP, as grants told us
    const held = new Map<string, string>(); // public IP → subnet
    const violations: string[] = [];
    // Subnets whose holder is inside a revoke call. A revoke whose first try reports
    // 'unavailable' may still have committed (the leader died after the write), so until the
    // holder's retries end the subnet may rightly be granted to someone else already.
    const releasing = new Set<string>();
    let unavailable = 0;
    let opsDuringOutage = 0;
    let outage = false;
    const stopAt = Date.now() + 6000;

    const retry = async <T>(fn: () => Promise<T>): Promise<T> => {
      for (;;) {
        try {
          const r = await fn();
          if (outage) opsDuringOutage++;
          return r;
        } catch (e) {
          if (!isRegistryError(e) || e.code !== 'unavailable' || Date.now() > stopAt + 20_000) throw e;
          unavailable++;
          await sleep(50);
        }
      }
    };
    const granted = (ip: string, l: Lease): void => {
      const h = holder.get(l.subnet);
      if (h !== undefined && h !== ip && !releasing.has(l.subnet)) violations.push(`${l.subnet} granted to ${ip} while ${h} holds it`);
      const mine = held.get(ip);
      if (mine !== undefined && mine !== l.subnet) violations.push(`${ip} moved from ${mine} to ${l.subnet}`);
      holder.set(l.subnet, ip);
      held.set(ip, l.subnet);
    };

    const node = async (i: number): Promise<void> => {
      const ip = `192.168.5.${i + 1}`;
      const reg = regs[i % regs.length];
      while (Date.now() < stopAt) {
        const subnet = held.get(ip);
        if (subnet === undefined) {
          granted(ip, await retry(() => reg.acquire({ publicIp: ip })));
        } else if (Math.random() < 0.75) {
          granted(ip, await retry(() => reg.renew({ subnet, publicIp: ip })));
        } else {
          let tries = 0;
          releasing.add(subnet);
          for (;;) {
            tries++;
            try {
              await reg.revoke({ subnet, publicIp: ip });
              break;
            } catch (e) {
              // not_found after an 'unavailable' try: that try had committed. So had it when the
              // retry finds the subnet already granted to another node ('permission': nothing but
              // our revoke could have freed it within the 120 s TTL); the subnet is in `releasing`.
              if (isRegistryError(e) && (e.code === 'not_found' || e.code === 'permission') && tries > 1) break;
              if (!isRegistryError(e) || e.code !== 'unavailable') throw e;
              unavailable++;
              await sleep(50);
            }
          }
          releasing.delete(subnet);
          // Someone may hold it already (granted while we were releasing): theirs now.
          if (holder.get(subnet) === ip) holder.delete(subnet);
          held.delete(ip);
        }
        await sleep(Math.random() * 30);
      }
    };

    const leaderIndex = async (): Promise<number> => {
      const table = await etcdctl(c, 'endpoint', 'status', '-w', 'table');
      const i = c.members.findIndex((m) => table.split('\n').some((row) => row.includes(m.clientUrl) && /\|\s*true\s*\|/.test(row)));
      return i < 0 ? 0 : i;
    };
    const chaos = async (): Promise<string> => {
      await sleep(1500);
      const victim = c.members[await leaderIndex()];
      outage = true;
      await victim.kill('SIGKILL');
      await sleep(2000);
      outage = false;
      await victim.start();
      return victim.name;
    };

    const [victim] = await Promise.all([chaos(), ...Array.from({ length: 30 }, (_, i) => node(i))]);
    expect(violations).toEqual([]);
    expect(opsDuringOutage).toBeGreaterThan(20);

    const { leases } = await retry(() => regs[1].list());
    const inEtcd = new Map(leases.map((l) => [l.publicIp, l.subnet]));
    expect(new Set(leases.map((l) => l.subnet)).size).toBe(leases.length);
    expect(inEtcd.size).toBe(leases.length); // no node holds two subnets
    expect(inEtcd).toEqual(held); // every lease still held is there, nothing else is
    // The restarted member caught up: a read served by it alone agrees.
    const solo = registry({ endpoints: [c.members.find((m) => m.name === victim)!.clientUrl], prefix });
    expect((await untilAvailable(() => solo.list(), 5000)).leases.length).toBe(leases.length);
    console.log(`churn: ${leases.length} leases held at the end, ${unavailable} 'unavailable' retries, ${opsDuringOutage} ops during the outage`);
  });
});

describe('EtcdRegistry over TLS with client certificates', () => {
  let c: EtcdTestCluster;

  beforeAll(async () => {
    c = await cluster(1, { clientCertAuth: true });
  });

  it('works with the CA and a client cert, fails clearly and quickly without one', async () => {
    const certs = c.certs!;
    expect(c.endpoints[0]).toMatch(/^https:/);
    const prefix = '/tls/network';
    const good = registry({ endpoints: c.endpoints, prefix, tls: { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile } });
    await ensureNetworkConfig(good, UDP_NET);
    const l = await good.acquire({ publicIp: '10.8.0.1' });
    expect((await good.list()).leases).toEqual([expect.objectContaining({ subnet: l.subnet })]);

    for (const tls of [{ caFile: certs.caFile }, { caFile: certs.caFile, certFile: certs.strangerCertFile, keyFile: certs.strangerKeyFile }]) {
      const bad = registry({ endpoints: c.endpoints, prefix, tls, deadlineMs: 2000 });
      const t0 = Date.now();
      const e = await rejection(bad.list());
      expect(e.code).toBe('unavailable');
      expect(Date.now() - t0).toBeLessThan(2750);
      expect(e.message).toContain(c.endpoints[0]);
      expect(e.message).toMatch(/TLS/);
    }

    expect(
      () => new EtcdRegistry({ endpoints: c.endpoints, tls: { caFile: certs.caFile, certFile: '/nonexistent/client.crt', keyFile: certs.clientKeyFile } }),
    ).toThrow(/--etcd-certfile \/nonexistent\/client\.crt/);
    expect(() => new EtcdRegistry({ endpoints: c.endpoints, tls: { caFile: '/nonexistent/ca.crt' } })).toThrow(/--etcd-cafile/);
  });
});
