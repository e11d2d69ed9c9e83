// The Registry contract (src/control/registry.ts), written once and run against every
// implementation: the embedded registry, the gRPC client in front of it, etcd, and the gRPC
// client in front of `weft control` on etcd. The daemon is wired to any of them by a flag, so
// anything one of them does differently is a bug the daemon would meet in production.
import { describe, expect, it, afterEach } from 'vitest';
import type { Lease, LeaseEvent, Registry, WatchBatch, WatchHandle } from '../../src/control/registry';
import { NEVER_EXPIRES, RegistryError, isReservation } from '../../src/control/registry';
import { MAX_BACKEND_DATA_BYTES } from '../../src/control/limits';
import { cidrContainsCidr, parseCidr } from '../../src/route/address';
import { rejection } from './registry';
import { until } from './until';

export interface ContractSubject {
  /** A client of a fresh, empty registry whose network config is `netConf`. */
  registry: Registry;
  /** Another, independent client of the same registry (what a second node would hold). */
  second(): Registry;
  /**
   * Keeps `subnet` for `publicIp` the way an operator does with this registry: `weft control
   * reserve` (the embedded registry's call, or its RPC from loopback), or on etcd the key written
   * without a lease with flannel's lease value, as flannel's docs/reservations.md says.
   */
  reserve(subnet: string, publicIp: string): Promise<void>;
  close(): Promise<void>;
}

/** netConf: flannel's net-conf.json object; ttlMs: the lease lifetime the registry grants. */
export type ContractFactory = (netConf: Record<string, unknown>, ttlMs: number) => Promise<ContractSubject>;

export interface ContractOptions {
  /** A TTL short enough to watch a lease expire, long enough for the registry to honour (etcd: >= 2 s). */
  shortTtlMs: number;
  /** How late after expiry the registry may notice (etcd checks leases every 500 ms). */
  expirySlackMs: number;
}

const HOUR = 3_600_000;
const NET = { Network: '10.50.0.0/16', Backend: { Type: 'vxlan', VNI: 4 } };

/** A client's view built only from watch batches: what the daemon's PeerSet does with them. */
export class WatchView {
  readonly leases = new Map<string, Lease>();
  readonly batches: WatchBatch[] = [];
  readonly errors: Error[] = [];
  revision = 0;
  calledSynchronously = false;
  handle!: WatchHandle;

  constructor(reg: Registry, from: number) {
    let inside = true;
    this.handle = reg.watch(
      from,
      (b) => {
        if (inside) this.calledSynchronously = true;
        this.batches.push(b);
        if (b.snapshot) {
          this.leases.clear();
          for (const l of b.leases) this.leases.set(l.subnet, l);
        }
        for (const e of b.events) {
          if (e.type === 'added') this.leases.set(e.lease.subnet, e.lease);
          else this.leases.delete(e.lease.subnet);
        }
        this.revision = b.revision;
      },
      (e) => this.errors.push(e),
    );
    inside = false;
  }

  owners(): Record<string, string> {
    return Object.fromEntries([...this.leases.values()].map((l) => [l.subnet, l.publicIp]));
  }

  events(): LeaseEvent[] {
    return this.batches.flatMap((b) => b.events);
  }

  close(): void {
    this.handle.close();
  }
}

function owners(leases: Lease[]): Record<string, string> {
  return Object.fromEntries(leases.map((l) => [l.subnet, l.publicIp]));
}

export function registryContract(name: string, factory: ContractFactory, opts: ContractOptions): void {
  describe(`Registry contract: ${name}`, () => {
    const open: ContractSubject[] = [];
    const views: WatchView[] = [];
    afterEach(async () => {
      for (const v of views.splice(0)) v.close();
      for (const s of open.splice(0)) await s.close();
    });
    const subject = async (netConf: Record<string, unknown> = NET, ttlMs = HOUR): Promise<ContractSubject> => {
      const s = await factory(netConf, ttlMs);
      open.push(s);
      return s;
    };
    const watch = (reg: Registry, from: number): WatchView => {
      const v = new WatchView(reg, from);
      views.push(v);
      return v;
    };

    it('serves the network config it was given, with flannel defaults applied', async () => {
      const { registry } = await subject();
      const c = await registry.config();
      expect(c.network).toBe('10.50.0.0/16');
      expect(c.subnetLen).toBe(24);
      expect(c.subnetMin).toBe('10.50.1.0');
      expect(c.subnetMax).toBe('10.50.255.0');
      expect(c.backend.type).toBe('vxlan');
    });

    it('grants distinct subnets of the configured size inside the network, with the lease fields filled in', async () => {
      const { registry } = await subject();
      const before = Date.now();
      const a = await registry.acquire({ publicIp: '192.0.2.1', backendData: { VNI: 4, VtepMAC: '0e:00:c0:00:02:01' } });
      const b = await registry.acquire({ publicIp: '192.0.2.2', backendData: { VNI: 4, VtepMAC: '0e:00:c0:00:02:02' } });
      expect(a.subnet).not.toBe(b.subnet);
      for (const l of [a, b]) {
        const c = parseCidr(l.subnet);
        expect(c.len).toBe(24);
        expect(cidrContainsCidr(parseCidr('10.50.0.0/16'), c)).toBe(true);
        expect(l.backendType).toBe('vxlan');
        // Expiration is now + TTL, to the second (etcd leases have whole-second TTLs).
        expect(l.expiration).toBeGreaterThanOrEqual(before + HOUR - 2000);
        expect(l.expiration).toBeLessThanOrEqual(Date.now() + HOUR + 2000);
      }
      expect(a.publicIp).toBe('192.0.2.1');
      expect(a.backendData).toEqual({ VNI: 4, VtepMAC: '0e:00:c0:00:02:01' });
    });

    it('gives a node that asks again its held subnet, with its new backend data', async () => {
      const { registry, second } = await subject();
      const a = await registry.acquire({ publicIp: '192.0.2.1', backendData: { VtepMAC: 'old' } });
      const again = await second().acquire({ publicIp: '192.0.2.1', backendData: { VtepMAC: 'new' } });
      expect(again.subnet).toBe(a.subnet);
      expect(again.backendData).toEqual({ VtepMAC: 'new' });
      const { leases } = await registry.list();
      expect(leases).toHaveLength(1);
      expect(leases[0].backendData).toEqual({ VtepMAC: 'new' });
    });

    it('honours a free previousSubnet hint and ignores a taken one', async () => {
      const { registry } = await subject();
      const a = await registry.acquire({ publicIp: '192.0.2.1', previousSubnet: '10.50.77.0/24' });
      expect(a.subnet).toBe('10.50.77.0/24');
      const b = await registry.acquire({ publicIp: '192.0.2.2', previousSubnet: '10.50.77.0/24' });
      expect(b.subnet).not.toBe('10.50.77.0/24');
    });

    it('renews a lease for its holder only, and refuses unknown or malformed ones', async () => {
      const { registry, second } = await subject();
      const a = await registry.acquire({ publicIp: '192.0.2.1' });
      await new Promise((r) => setTimeout(r, 1100));
      const renewed = await second().renew({ subnet: a.subnet, publicIp: '192.0.2.1' });
      expect(renewed.subnet).toBe(a.subnet);
      expect(renewed.expiration).toBeGreaterThan(a.expiration);
      expect((await rejection(registry.renew({ subnet: a.subnet, publicIp: '192.0.2.9' }))).code).toBe('permission');
      expect((await rejection(registry.renew({ subnet: '10.50.200.0/24', publicIp: '192.0.2.1' }))).code).toBe('not_found');
      expect((await rejection(registry.renew({ subnet: 'ten.fifty', publicIp: '192.0.2.1' }))).code).toBe('invalid');
    });

    it('revokes a lease for its holder only', async () => {
      const { registry } = await subject();
      const a = await registry.acquire({ publicIp: '192.0.2.1' });
      expect((await rejection(registry.revoke({ subnet: a.subnet, publicIp: '192.0.2.9' }))).code).toBe('permission');
      expect((await registry.list()).leases.map((l) => l.subnet)).toEqual([a.subnet]);
      await registry.revoke({ subnet: a.subnet, publicIp: '192.0.2.1' });
      expect((await registry.list()).leases).toEqual([]);
      expect((await rejection(registry.revoke({ subnet: a.subnet, publicIp: '192.0.2.1' }))).code).toBe('not_found');
    });

    it('a reservation goes to the node with its public IP, never expires, survives renew and revoke, and is never handed to another node', async () => {
      const s = await subject({ ...NET, SubnetMin: '10.50.1.0', SubnetMax: '10.50.3.0' });
      await s.reserve('10.50.2.0/24', '192.0.2.50');
      // The two other subnets go to two other nodes; a third finds none, hint or not.
      const others = [await s.registry.acquire({ publicIp: '192.0.2.51' }), await s.second().acquire({ publicIp: '192.0.2.52' })];
      expect(others.map((l) => l.subnet).sort()).toEqual(['10.50.1.0/24', '10.50.3.0/24']);
      expect((await rejection(s.registry.acquire({ publicIp: '192.0.2.53', previousSubnet: '10.50.2.0/24' }))).code).toBe('exhausted');

      const mine = await s.registry.acquire({ publicIp: '192.0.2.50', backendData: { VNI: 4, VtepMAC: '0e:00:c0:00:02:32' } });
      expect(mine).toMatchObject({ subnet: '10.50.2.0/24', publicIp: '192.0.2.50', expiration: NEVER_EXPIRES });
      expect(isReservation(mine)).toBe(true);
      expect((await s.second().renew({ subnet: mine.subnet, publicIp: mine.publicIp })).expiration).toBe(NEVER_EXPIRES);
      await s.registry.revoke({ subnet: mine.subnet, publicIp: mine.publicIp });
      const listed = (await s.registry.list()).leases.find((l) => l.subnet === mine.subnet);
      expect(listed).toMatchObject({ publicIp: '192.0.2.50', expiration: NEVER_EXPIRES, backendData: { VNI: 4, VtepMAC: '0e:00:c0:00:02:32' } });
      // The node coming back (another client) gets it again; a stranger still does not.
      expect((await s.second().acquire({ publicIp: '192.0.2.50' })).subnet).toBe('10.50.2.0/24');
      expect((await rejection(s.second().renew({ subnet: mine.subnet, publicIp: '192.0.2.53' }))).code).toBe('permission');
    });

    it('refuses malformed acquire requests as invalid, granting nothing', async () => {
      const { registry } = await subject();
      for (const req of [{ publicIp: '' }, { publicIp: 'node-1' }, { publicIp: '224.0.0.1' }, { publicIp: '192.0.2.1', backendType: 'gre' }]) {
        expect((await rejection(registry.acquire(req))).code, JSON.stringify(req)).toBe('invalid');
      }
      expect((await registry.list()).leases).toEqual([]);
    });

    it('refuses fields beyond limits.ts as invalid, quoting only a short prefix, and answers the next call', async () => {
      const { registry } = await subject();
      const huge = 'x'.repeat(100_000);
      // backendData one byte over: {"k":"…"} is 8 bytes of JSON around the value.
      const over = { k: 'a'.repeat(MAX_BACKEND_DATA_BYTES - 8 + 1) };
      const cases: Array<[string, () => Promise<unknown>, RegExp]> = [
        ['publicIp', () => registry.acquire({ publicIp: huge }), /publicIp is 100000 characters long/],
        ['backendType', () => registry.acquire({ publicIp: '192.0.2.1', backendType: huge }), /backendType is 100000 characters long/],
        ['previousSubnet', () => registry.acquire({ publicIp: '192.0.2.1', previousSubnet: huge }), /previousSubnet is 100000 characters long/],
        ['backendData', () => registry.acquire({ publicIp: '192.0.2.1', backendData: over }), new RegExp(`backendData is ${MAX_BACKEND_DATA_BYTES + 1} bytes`)],
        [
          'backendData 4 MiB',
          () => registry.acquire({ publicIp: '192.0.2.1', backendData: { k: 'a'.repeat(4 * 1024 * 1024 - 4096) } }),
          /backendData is \d+ bytes/,
        ],
        ['renew subnet', () => registry.renew({ subnet: huge, publicIp: '192.0.2.1' }), /subnet is 100000 characters long/],
        ['revoke publicIp', () => registry.revoke({ subnet: '10.50.1.0/24', publicIp: huge }), /publicIp is 100000 characters long/],
      ];
      for (const [what, call, msg] of cases) {
        const e = await rejection(call());
        expect(e.code, what).toBe('invalid');
        expect(e.message, what).toMatch(msg);
        expect(e.message.length, what).toBeLessThan(300);
      }
      // The same client goes on working, and nothing was granted.
      expect((await registry.list()).leases).toEqual([]);
      const ok = await registry.acquire({ publicIp: '192.0.2.1', backendData: { k: 'a'.repeat(MAX_BACKEND_DATA_BYTES - 8) } });
      expect(ok.backendData).toEqual({ k: 'a'.repeat(MAX_BACKEND_DATA_BYTES - 8) });
    });

    it('five leases at the backendData limit are granted and listed, to every client; one byte more is refused', async () => {
      const { registry, second } = await subject();
      const data = (i: number) => ({ k: String(i).repeat(MAX_BACKEND_DATA_BYTES - 8) });
      const got = await Promise.all([1, 2, 3, 4, 5].map((i) => registry.acquire({ publicIp: `192.0.2.${i}`, backendData: data(i) })));
      // A sixth one byte over the limit is refused: the limit is what keeps List bounded.
      const sixth = await rejection(registry.acquire({ publicIp: '192.0.2.6', backendData: { k: 'x'.repeat(MAX_BACKEND_DATA_BYTES - 7) } }));
      expect(sixth.code).toBe('invalid');
      const { leases } = await second().list();
      expect(leases).toHaveLength(5);
      for (const g of got) expect(leases.find((l) => l.subnet === g.subnet)?.backendData).toEqual(g.backendData);
    });

    it('refuses a publicIp peers could not reach: special-purpose blocks and the overlay network itself', async () => {
      const { registry } = await subject();
      const refused: Array<[string, RegExp]> = [
        ['0.1.2.3', /0\.0\.0\.0\/8/],
        ['127.0.0.1', /loopback/],
        ['127.9.9.9', /loopback/],
        ['169.254.1.1', /link-local/],
        ['224.0.0.1', /multicast/],
        ['239.255.255.250', /multicast/],
        ['240.0.0.1', /reserved/],
        ['255.255.255.255', /broadcast/],
        ['10.50.3.4', /inside the overlay network 10\.50\.0\.0\/16/],
        ['10.50.0.0', /inside the overlay network/],
      ];
      for (const [ip, msg] of refused) {
        const e = await rejection(registry.acquire({ publicIp: ip }));
        expect(e.code, ip).toBe('invalid');
        expect(e.message, ip).toMatch(msg);
      }
      expect((await registry.list()).leases).toEqual([]);
      // Neighbours of each block are ordinary unicast addresses.
      for (const ip of ['1.0.0.1', '126.255.255.254', '128.0.0.1', '169.253.255.255', '169.255.0.1', '223.255.255.254', '10.51.0.1']) {
        expect((await registry.acquire({ publicIp: ip })).publicIp).toBe(ip);
      }
    });

    it('reports exhaustion when every subnet between SubnetMin and SubnetMax is held', async () => {
      // A /22 of /24s: flannel's default SubnetMin skips the first, leaving three.
      const { registry } = await subject({ Network: '10.60.0.0/22', Backend: { Type: 'udp' } });
      const got = await Promise.all([1, 2, 3].map((i) => registry.acquire({ publicIp: `192.0.2.${i}` })));
      expect(got.map((l) => l.subnet).sort()).toEqual(['10.60.1.0/24', '10.60.2.0/24', '10.60.3.0/24']);
      const e = await rejection(registry.acquire({ publicIp: '192.0.2.4' }));
      expect(e.code).toBe('exhausted');
      expect(e.message).toMatch(/no free subnet/);
    });

    it('lists leases with a revision that moves forward with every change', async () => {
      const { registry } = await subject();
      const r0 = (await registry.list()).revision;
      const a = await registry.acquire({ publicIp: '192.0.2.1' });
      const l1 = await registry.list();
      expect(l1.revision).toBeGreaterThan(r0);
      expect(owners(l1.leases)).toEqual({ [a.subnet]: '192.0.2.1' });
      await registry.revoke(a);
      const l2 = await registry.list();
      expect(l2.revision).toBeGreaterThan(l1.revision);
      expect(l2.leases).toEqual([]);
    });

    it('watch(0) opens with a snapshot, never synchronously, then streams additions and removals in order', async () => {
      const { registry, second } = await subject();
      const a = await registry.acquire({ publicIp: '192.0.2.1' });
      const v = watch(second(), 0);
      expect(v.batches).toHaveLength(0);
      await until('the opening snapshot', () => v.batches.length > 0);
      expect(v.calledSynchronously).toBe(false);
      expect(v.batches[0].snapshot).toBe(true);
      expect(owners(v.batches[0].leases)).toEqual({ [a.subnet]: '192.0.2.1' });
      const b = await registry.acquire({ publicIp: '192.0.2.2' });
      await until('b added', () => v.leases.has(b.subnet));
      await registry.revoke(a);
      await until('a removed', () => !v.leases.has(a.subnet));
      const evs = v.events();
      expect(evs.find((e) => e.type === 'added' && e.lease.subnet === b.subnet)?.lease.publicIp).toBe('192.0.2.2');
      expect(evs.some((e) => e.type === 'removed' && e.lease.subnet === a.subnet)).toBe(true);
      const revs = v.batches.map((x) => x.revision);
      expect([...revs].sort((x, y) => x - y)).toEqual(revs);
      expect(v.revision).toBeLessThanOrEqual((await registry.list()).revision);
      expect(v.errors).toEqual([]);
    });

    it('a watch resumed from an earlier revision catches up with what it missed', async () => {
      const { registry, second } = await subject();
      const a = await registry.acquire({ publicIp: '192.0.2.1' });
      const b = await registry.acquire({ publicIp: '192.0.2.2' });
      const first = watch(second(), 0);
      await until('snapshot', () => first.batches.length > 0);
      const from = first.revision;
      first.close();
      // While "disconnected": one node leaves, two join, one renews.
      await registry.revoke(a);
      const c = await registry.acquire({ publicIp: '192.0.2.3' });
      const d = await registry.acquire({ publicIp: '192.0.2.4' });
      await registry.renew(b);
      const now = await registry.list();
      const v = new WatchView(second(), from);
      views.push(v);
      // Start from what the first watch had: a resumed watch only sends what changed since.
      for (const l of first.leases.values()) v.leases.set(l.subnet, l);
      // Not `v.revision >= now.revision`: etcd's revision counts every write in the keyspace, and
      // a watch on the subnets prefix only reports revisions of changes under it.
      const want = JSON.stringify(Object.entries(owners(now.leases)).sort());
      await until('the resumed view to match list()', () => JSON.stringify(Object.entries(v.owners()).sort()) === want && v);
      expect(v.owners()).toEqual({ [b.subnet]: '192.0.2.2', [c.subnet]: '192.0.2.3', [d.subnet]: '192.0.2.4' });
      expect(v.calledSynchronously).toBe(false);
    });

    it('a watch at the current revision is confirmed with a batch although nothing changed', async () => {
      const { registry, second } = await subject();
      await registry.acquire({ publicIp: '192.0.2.1' });
      const { revision } = await registry.list();
      const v = watch(second(), revision);
      await until('the confirming batch', () => v.batches.length > 0);
      expect(v.batches[0].snapshot).toBe(false);
      expect(v.batches[0].events).toEqual([]);
      expect(v.batches[0].revision).toBe(revision);
    });

    it('a lease nobody renews expires: it leaves list() and every watch reports it removed', async () => {
      const { registry, second } = await subject(NET, opts.shortTtlMs);
      const v = watch(second(), 0);
      await until('snapshot', () => v.batches.length > 0);
      const a = await registry.acquire({ publicIp: '192.0.2.1' });
      const kept = await registry.acquire({ publicIp: '192.0.2.2' });
      await until('a seen', () => v.leases.has(a.subnet));
      // Keep one lease alive by renewing it, to show expiry is per lease.
      const renewer = setInterval(() => void registry.renew(kept).catch(() => undefined), opts.shortTtlMs / 4);
      try {
        const start = Date.now();
        await until('a to expire', async () => !(await registry.list()).leases.some((l) => l.subnet === a.subnet), opts.shortTtlMs + opts.expirySlackMs + 3000);
        expect(Date.now() - start).toBeGreaterThan(opts.shortTtlMs - 1500);
        await until('the watch to report a removed', () => !v.leases.has(a.subnet), 3000);
        expect(v.leases.has(kept.subnet)).toBe(true);
        expect((await registry.list()).leases.map((l) => l.subnet)).toEqual([kept.subnet]);
        expect((await rejection(registry.renew(a))).code).toBe('not_found');
      } finally {
        clearInterval(renewer);
      }
    }, 30_000);

    it('200 nodes acquiring at once, over independent clients, get 200 distinct subnets and none is lost', async () => {
      const { registry, second } = await subject();
      const clients = [registry, ...Array.from({ length: 4 }, () => second())];
      const grants = await Promise.all(
        Array.from({ length: 200 }, (_, i) => clients[i % clients.length].acquire({ publicIp: `192.0.${2 + (i >> 8)}.${(i & 255) + 1}` })),
      );
      const subnets = new Set(grants.map((g) => g.subnet));
      expect(subnets.size).toBe(200);
      const { leases } = await registry.list();
      expect(leases).toHaveLength(200);
      expect(owners(leases)).toEqual(owners(grants));
    }, 60_000);

    it('a closed watch delivers nothing more', async () => {
      const { registry, second } = await subject();
      const v = watch(second(), 0);
      await until('snapshot', () => v.batches.length > 0);
      v.close();
      const n = v.batches.length;
      await registry.acquire({ publicIp: '192.0.2.1' });
      await new Promise((r) => setTimeout(r, 300));
      expect(v.batches.length).toBe(n);
      expect(v.errors).toEqual([]);
    });

    it('errors are RegistryErrors with a code the daemon can act on', async () => {
      const { registry } = await subject();
      const e = await rejection(registry.renew({ subnet: '10.50.9.0/24', publicIp: '192.0.2.1' }));
      expect(e).toBeInstanceOf(RegistryError);
      expect(e.message).toMatch(/10\.50\.9\.0\/24/);
    });
  });
}
