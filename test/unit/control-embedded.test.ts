import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EmbeddedRegistry, type EmbeddedRegistryOptions } from '../../src/control/embedded';
import { parseNetConfig } from '../../src/control/netconfig';
import { NEVER_EXPIRES, isReservation, type RegistryError, type WatchBatch } from '../../src/control/registry';
import { decodeState } from '../../src/control/store';
import { rejection } from '../support/registry';

const T0 = 1_700_000_000_000;
const TTL = 60_000;

let dir: string;
let clock: number;
const opened: EmbeddedRegistry[] = [];

beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-embedded-'));
  clock = T0;
});
afterEach(async () => {
  for (const r of opened.splice(0)) r.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function open(over: Partial<EmbeddedRegistryOptions> = {}, conf: unknown = { Network: '10.244.0.0/16' }): Promise<EmbeddedRegistry> {
  const r = new EmbeddedRegistry({
    config: parseNetConfig(conf),
    stateDir: dir,
    leaseTtlMs: TTL,
    now: () => clock,
    random: () => 0,
    ...over,
  });
  await r.open();
  opened.push(r);
  return r;
}

/** Collects batches; `next()` resolves with the next one (or one already queued). */
/** A watch from the current revision, past the empty batch that confirms it. */
async function collectCurrent(r: EmbeddedRegistry, rev: number) {
  const w = collect(r, rev);
  expect(await w.next()).toEqual({ revision: rev, snapshot: false, leases: [], events: [] });
  return w;
}

function collect(r: EmbeddedRegistry, from: number) {
  const batches: WatchBatch[] = [];
  const errors: Error[] = [];
  let waiter: (() => void) | undefined;
  const handle = r.watch(
    from,
    (b) => {
      batches.push(b);
      waiter?.();
    },
    (e) => {
      errors.push(e);
      waiter?.();
    },
  );
  let read = 0;
  return {
    batches,
    errors,
    handle,
    async next(): Promise<WatchBatch> {
      while (batches.length <= read) {
        await new Promise<void>((res, rej) => {
          waiter = res;
          setTimeout(() => rej(new Error('no batch within 2s')), 2000).unref();
        });
      }
      return batches[read++];
    },
  };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('EmbeddedRegistry', () => {
  it('acquire grants, persists before answering, and bumps the revision', async () => {
    const r = await open();
    // No Backend in the net-conf: udp, flanneld's default, is the lease's backend type.
    const l = await r.acquire({ publicIp: '192.0.2.1', backendData: { VtepMAC: '02:aa' } });
    expect(l).toEqual({ subnet: '10.244.1.0/24', publicIp: '192.0.2.1', backendType: 'udp', backendData: { VtepMAC: '02:aa' }, expiration: T0 + TTL });
    const onDisk = decodeState(await fsp.readFile(path.join(dir, 'leases.json'), 'utf8'));
    expect(onDisk.leases).toEqual([l]);
    expect(onDisk.revision).toBe(1);
    expect(await r.list()).toEqual({ leases: [l], revision: 1 });
  });

  it('the same node acquiring again keeps its subnet (a renewal)', async () => {
    const r = await open({ random: Math.random });
    const a = await r.acquire({ publicIp: '192.0.2.1' });
    clock += 1000;
    const b = await r.acquire({ publicIp: '192.0.2.1' });
    expect(b.subnet).toBe(a.subnet);
    expect(b.expiration).toBe(T0 + 1000 + TTL);
    expect((await r.list()).leases).toHaveLength(1);
  });

  it('state survives reopening (leases, revision, previous)', async () => {
    const r1 = await open({ random: Math.random });
    const a = await r1.acquire({ publicIp: '192.0.2.1' });
    const b = await r1.acquire({ publicIp: '192.0.2.2' });
    await r1.revoke(b);
    r1.close();
    const r2 = await open({ random: () => 0.99 });
    expect(await r2.list()).toEqual({ leases: [a], revision: 3 });
    // previous survived too: .2 gets its revoked subnet back although random() points elsewhere
    expect((await r2.acquire({ publicIp: '192.0.2.2' })).subnet).toBe(b.subnet);
  });

  it('renew extends the expiration', async () => {
    const r = await open();
    const l = await r.acquire({ publicIp: '192.0.2.1' });
    clock += TTL - 1;
    const renewed = await r.renew(l);
    expect(renewed.expiration).toBe(clock + TTL);
    expect(renewed.subnet).toBe(l.subnet);
    clock += TTL - 1; // past the original expiry, before the renewed one
    expect(await r.sweep()).toBe(0);
    expect((await r.list()).leases.map((x) => x.subnet)).toEqual([l.subnet]);
  });

  it("renew of an unknown lease → not_found; of another node's lease → permission", async () => {
    const r = await open();
    const l = await r.acquire({ publicIp: '192.0.2.1' });
    const nf = await rejection(r.renew({ subnet: '10.244.99.0/24', publicIp: '192.0.2.1' }));
    expect(nf.code).toBe('not_found');
    expect(nf.message).toContain('10.244.99.0/24');
    const perm = await rejection(r.renew({ subnet: l.subnet, publicIp: '192.0.2.2' }));
    expect(perm.code).toBe('permission');
    expect(perm.message).toBe(`lease ${l.subnet} belongs to 192.0.2.1, not 192.0.2.2`);
    expect((await rejection(r.renew({ subnet: 'bogus', publicIp: '192.0.2.1' }))).code).toBe('invalid');
  });

  it('an expired lease is swept, announced as removed, and renewing it is not_found', async () => {
    const r = await open();
    const l = await r.acquire({ publicIp: '192.0.2.1' });
    const w = await collectCurrent(r, 1);
    clock = l.expiration; // expiration is exclusive: at that instant the lease is gone
    expect(await r.sweep()).toBe(1);
    const b = await w.next();
    expect(b).toEqual({ revision: 2, snapshot: false, leases: [], events: [{ type: 'removed', lease: l }] });
    expect(await r.list()).toEqual({ leases: [], revision: 2 });
    expect((await rejection(r.renew(l))).code).toBe('not_found');
  });

  it('after expiry the node gets its previous subnet back when still free', async () => {
    const r = await open({ random: Math.random });
    const l = await r.acquire({ publicIp: '192.0.2.1' });
    clock += TTL * 2;
    await r.sweep();
    expect((await r.acquire({ publicIp: '192.0.2.1' })).subnet).toBe(l.subnet);
  });

  it('an expired lease is reclaimed by a later acquire even before a sweep runs', async () => {
    const r = await open({}, { Network: '10.244.0.0/16', SubnetMin: '10.244.5.0', SubnetMax: '10.244.5.0' });
    await r.acquire({ publicIp: '192.0.2.1' });
    expect((await rejection(r.acquire({ publicIp: '192.0.2.2' }))).code).toBe('exhausted');
    clock += TTL;
    const w = await collectCurrent(r, 1);
    const l2 = await r.acquire({ publicIp: '192.0.2.2' });
    expect(l2.subnet).toBe('10.244.5.0/24');
    const b = await w.next();
    expect(b.revision).toBe(3);
    expect(b.events.map((e) => `${e.type} ${e.lease.publicIp}`)).toEqual(['removed 192.0.2.1', 'added 192.0.2.2']);
  });

  it('the sweep timer reclaims leases without any call (real clock)', async () => {
    const r = await open({ now: Date.now, leaseTtlMs: 150 });
    const w = collect(r, 0);
    expect((await w.next()).snapshot).toBe(true);
    const l = await r.acquire({ publicIp: '192.0.2.1' });
    expect((await w.next()).events).toEqual([{ type: 'added', lease: l }]);
    const removed = await w.next();
    expect(removed.events).toEqual([{ type: 'removed', lease: l }]);
    expect(Date.now()).toBeGreaterThanOrEqual(l.expiration);
  });

  it('revoke removes, announces and remembers; revoking again is not_found', async () => {
    const r = await open();
    const l = await r.acquire({ publicIp: '192.0.2.1' });
    const w = await collectCurrent(r, 1);
    await r.revoke({ subnet: l.subnet, publicIp: '192.0.2.1' });
    expect(await w.next()).toEqual({ revision: 2, snapshot: false, leases: [], events: [{ type: 'removed', lease: l }] });
    expect((await r.list()).leases).toEqual([]);
    expect((await rejection(r.revoke(l))).code).toBe('not_found');
    const other = await r.acquire({ publicIp: '192.0.2.2' });
    expect((await rejection(r.revoke({ subnet: other.subnet, publicIp: '192.0.2.1' }))).code).toBe('permission');
  });

  describe('watch', () => {
    it('from 0: a snapshot of the full set, then live batches', async () => {
      const r = await open({ random: Math.random });
      const a = await r.acquire({ publicIp: '192.0.2.1' });
      const b = await r.acquire({ publicIp: '192.0.2.2' });
      const w = collect(r, 0);
      const snap = await w.next();
      expect(snap.snapshot).toBe(true);
      expect(snap.revision).toBe(2);
      expect(snap.events).toEqual([]);
      expect(new Set(snap.leases.map((l) => l.subnet))).toEqual(new Set([a.subnet, b.subnet]));
      const c = await r.acquire({ publicIp: '192.0.2.3' });
      expect(await w.next()).toEqual({ revision: 3, snapshot: false, leases: [], events: [{ type: 'added', lease: c }] });
    });

    it('resume replays only the events after the given revision', async () => {
      const r = await open({ random: Math.random });
      const ls = [];
      for (let i = 1; i <= 5; i++) ls.push(await r.acquire({ publicIp: `192.0.2.${i}` }));
      await r.revoke(ls[0]); // revision 6
      const w = collect(r, 3);
      const b = await w.next();
      expect(b.snapshot).toBe(false);
      expect(b.revision).toBe(6);
      expect(b.events).toEqual([
        { type: 'added', lease: ls[3] },
        { type: 'added', lease: ls[4] },
        { type: 'removed', lease: ls[0] },
      ]);
      await flush();
      expect(w.batches).toHaveLength(1);
    });

    it('from the current revision: an empty batch confirming it, then the next change', async () => {
      const r = await open();
      await r.acquire({ publicIp: '192.0.2.1' });
      const w = collect(r, 1);
      expect(await w.next()).toEqual({ revision: 1, snapshot: false, leases: [], events: [] });
      const l = await r.acquire({ publicIp: '192.0.2.2' });
      expect(await w.next()).toEqual({ revision: 2, snapshot: false, leases: [], events: [{ type: 'added', lease: l }] });
    });

    it('a revision older than the event log → snapshot', async () => {
      const r = await open({ eventLogSize: 3, random: Math.random });
      for (let i = 1; i <= 6; i++) await r.acquire({ publicIp: `192.0.2.${i}` });
      // log holds revisions 4..6: resuming from 3 still works, from 2 does not
      const ok = await collect(r, 3).next();
      expect(ok.snapshot).toBe(false);
      expect(ok.events.map((e) => e.lease.publicIp)).toEqual(['192.0.2.4', '192.0.2.5', '192.0.2.6']);
      const old = await collect(r, 2).next();
      expect(old.snapshot).toBe(true);
      expect(old.revision).toBe(6);
      expect(old.leases).toHaveLength(6);
    });

    it("a revision newer than the server's → snapshot", async () => {
      const r = await open();
      await r.acquire({ publicIp: '192.0.2.1' });
      const b = await collect(r, 99).next();
      expect(b).toMatchObject({ snapshot: true, revision: 1 });
      expect(b.leases).toHaveLength(1);
    });

    it('after a restart the log is empty: any older revision → snapshot', async () => {
      const r1 = await open();
      await r1.acquire({ publicIp: '192.0.2.1' });
      await r1.acquire({ publicIp: '192.0.2.2' });
      r1.close();
      const r2 = await open();
      const b = await collect(r2, 1).next();
      expect(b).toMatchObject({ snapshot: true, revision: 2 });
      expect(b.leases).toHaveLength(2);
    });

    it('batches arrive in revision order and a watch opened mid-stream misses nothing', async () => {
      const r = await open({ random: Math.random });
      const w = collect(r, 0);
      const pending = [];
      for (let i = 1; i <= 20; i++) pending.push(r.acquire({ publicIp: `192.0.2.${i}` }));
      await pending[9];
      const late = collect(r, 0);
      await Promise.all(pending);
      await flush();
      // Rebuild the set from each stream: both must end with the same 20 leases.
      for (const s of [w, late]) {
        const set = new Map<string, string>();
        let rev = -1;
        for (const b of s.batches) {
          expect(b.revision).toBeGreaterThan(rev);
          rev = b.revision;
          if (b.snapshot) {
            set.clear();
            for (const l of b.leases) set.set(l.subnet, l.publicIp);
          }
          for (const e of b.events) {
            if (e.type === 'added') set.set(e.lease.subnet, e.lease.publicIp);
            else set.delete(e.lease.subnet);
          }
        }
        expect(rev).toBe(20);
        expect(set.size).toBe(20);
      }
    });

    it('close() stops delivery; closing the registry reports unavailable to watchers', async () => {
      const r = await open();
      await r.acquire({ publicIp: '192.0.2.1' });
      const closed = collect(r, 1);
      closed.handle.close();
      const live = collect(r, 1);
      await r.acquire({ publicIp: '192.0.2.2' });
      await flush();
      expect(closed.batches).toEqual([]);
      // The batch confirming revision 1, then the change.
      expect(live.batches.map((b) => b.revision)).toEqual([1, 2]);
      r.close();
      await flush();
      expect(live.errors).toHaveLength(1);
      expect((live.errors[0] as RegistryError).code).toBe('unavailable');
    });

    it('a negative revision is refused', async () => {
      const r = await open();
      const w = collect(r, -1);
      await flush();
      expect((w.errors[0] as RegistryError).code).toBe('invalid');
    });
  });

  it('concurrent acquires are serialised: distinct subnets, then exhaustion', async () => {
    const r = await open({ random: Math.random }, { Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.40.0' });
    const results = await Promise.allSettled(Array.from({ length: 45 }, (_, i) => r.acquire({ publicIp: `192.0.2.${i + 1}` })));
    const ok = results.filter((x) => x.status === 'fulfilled').map((x) => (x as PromiseFulfilledResult<{ subnet: string }>).value.subnet);
    const failed = results.filter((x) => x.status === 'rejected').map((x) => (x as PromiseRejectedResult).reason as RegistryError);
    expect(ok).toHaveLength(40);
    expect(new Set(ok).size).toBe(40);
    expect(failed.map((e) => e.code)).toEqual(['exhausted', 'exhausted', 'exhausted', 'exhausted', 'exhausted']);
    expect(failed[0].message).toBe('no free subnet in 10.244.0.0/16 between SubnetMin 10.244.1.0 and SubnetMax 10.244.40.0: 40 of 40 leased');
    const onDisk = decodeState(await fsp.readFile(path.join(dir, 'leases.json'), 'utf8'));
    expect(onDisk.leases.map((l) => l.subnet).sort()).toEqual([...ok].sort());
  });

  it('a failed write rejects with unavailable and changes nothing', async () => {
    const r = await open();
    const l = await r.acquire({ publicIp: '192.0.2.1' });
    const w = await collectCurrent(r, 1);
    // Pull the directory out from under the store: the temp file can no longer be created.
    await fsp.rm(dir, { recursive: true });
    await fsp.writeFile(dir, 'not a directory');
    const e = await rejection(r.acquire({ publicIp: '192.0.2.2' }));
    expect(e.code).toBe('unavailable');
    expect(e.message).toMatch(/cannot persist lease state/);
    expect(await r.list()).toEqual({ leases: [l], revision: 1 });
    await flush();
    expect(w.batches).toHaveLength(1); // only the batch that confirmed revision 1: nothing announced
    await fsp.rm(dir);
  });

  it('a corrupt state file makes open() fail', async () => {
    await fsp.writeFile(path.join(dir, 'leases.json'), '{"version":1,');
    const r = new EmbeddedRegistry({ config: parseNetConfig({ Network: '10.244.0.0/16' }), stateDir: dir });
    await expect(r.open()).rejects.toThrow(/corrupt.*refusing to start/);
  });
});

describe('EmbeddedRegistry group commit', () => {
  it('acquires queued during a write share the next one: every grant durable and announced, far fewer writes than grants', async () => {
    const r = await open({ random: Math.random });
    const w = collect(r, 0);
    await w.next(); // the opening snapshot
    const grants = await Promise.all(Array.from({ length: 100 }, (_, i) => r.acquire({ publicIp: `192.0.2.${i + 1}` })));
    expect(new Set(grants.map((g) => g.subnet)).size).toBe(100);
    await flush();
    // Each state-file write is one watch batch; all 100 events arrive, in revision order.
    const batches = w.batches.slice(1);
    expect(batches.flatMap((b) => b.events)).toHaveLength(100);
    expect(batches.length).toBeLessThan(20);
    expect(batches.map((b) => b.revision)).toEqual([...batches.map((b) => b.revision)].sort((a, b) => a - b));
    expect(batches.at(-1)!.revision).toBe(100);
    // What the callers were told is what a reopened registry reads back from disk.
    r.close();
    opened.splice(opened.indexOf(r), 1);
    const again = await open();
    expect((await again.list()).leases.map((l) => `${l.subnet} ${l.publicIp}`).sort()).toEqual(grants.map((g) => `${g.subnet} ${g.publicIp}`).sort());
  });

  it('a refused mutation in a batch changes nothing and does not sink the others', async () => {
    const r = await open({ random: Math.random });
    const held = await r.acquire({ publicIp: '192.0.2.1' });
    const results = await Promise.allSettled([
      r.acquire({ publicIp: '192.0.2.2' }),
      r.renew({ subnet: held.subnet, publicIp: '192.0.2.99' }), // not the holder: permission
      r.acquire({ publicIp: 'not-an-ip' }), // invalid
      r.revoke(held),
      r.acquire({ publicIp: '192.0.2.3' }),
    ]);
    expect(results.map((x) => x.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'permission' });
    expect((results[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'invalid' });
    const { leases, revision } = await r.list();
    expect(leases.map((l) => l.publicIp).sort()).toEqual(['192.0.2.2', '192.0.2.3']);
    expect(revision).toBe(4); // acquire .1, acquire .2, revoke .1, acquire .3
  });
});

describe('EmbeddedRegistry reservations', () => {
  const SMALL = { Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.3.0' };

  it('a reserved subnet goes to its public IP, never expires, is not renewed, and survives revoke and restart', async () => {
    let r = await open({}, SMALL);
    await r.reserve({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' });
    expect(await r.reservations()).toEqual([{ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' }]);
    // random: () => 0 would pick 10.244.1.0; the reservation wins.
    const l = await r.acquire({ publicIp: '192.0.2.9', backendData: { VtepMAC: '02:09' } });
    expect(l).toMatchObject({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9', expiration: NEVER_EXPIRES });
    expect(isReservation(l)).toBe(true);
    clock += 10 * TTL;
    expect(await r.sweep()).toBe(0);
    expect(await r.renew({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' })).toEqual(l);
    await r.revoke({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' });
    expect((await r.list()).leases).toEqual([l]);
    r.close();
    opened.length = 0;
    r = await open({}, SMALL);
    expect((await r.list()).leases).toEqual([l]);
    expect(await r.reservations()).toEqual([{ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' }]);
  });

  it('a reserved subnet is never handed to another node, even when it is the last one free', async () => {
    const r = await open({}, SMALL);
    await r.reserve({ subnet: '10.244.2.0/24', publicIp: '192.0.2.9' });
    expect((await r.acquire({ publicIp: '192.0.2.1' })).subnet).toBe('10.244.1.0/24');
    // the previousSubnet hint does not get it either
    expect((await r.acquire({ publicIp: '192.0.2.2', previousSubnet: '10.244.2.0/24' })).subnet).toBe('10.244.3.0/24');
    expect((await rejection(r.acquire({ publicIp: '192.0.2.3' }))).code).toBe('exhausted');
  });

  it("reserving the node's own live lease turns it into a reservation at once, announced as an update", async () => {
    const r = await open({}, SMALL);
    const l = await r.acquire({ publicIp: '192.0.2.5' });
    const w = await collectCurrent(r, (await r.list()).revision);
    await r.reserve({ subnet: l.subnet, publicIp: '192.0.2.5' });
    const b = await w.next();
    expect(b.events).toEqual([{ type: 'added', lease: { ...l, expiration: NEVER_EXPIRES } }]);
    w.handle.close();
  });

  it('a node with an ordinary lease elsewhere moves to its reservation at its next acquire; the old lease is dropped', async () => {
    const r = await open({}, SMALL);
    const old = await r.acquire({ publicIp: '192.0.2.5' });
    expect(old.subnet).toBe('10.244.1.0/24');
    await r.reserve({ subnet: '10.244.3.0/24', publicIp: '192.0.2.5' });
    const now = await r.acquire({ publicIp: '192.0.2.5', previousSubnet: old.subnet });
    expect(now.subnet).toBe('10.244.3.0/24');
    expect((await r.list()).leases.map((x) => x.subnet)).toEqual(['10.244.3.0/24']);
  });

  it('unreserve ends the reservation and the lease on it; the node gets the subnet back as an ordinary lease', async () => {
    const r = await open({}, SMALL);
    await r.reserve({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' });
    const l = await r.acquire({ publicIp: '192.0.2.9' });
    const w = await collectCurrent(r, (await r.list()).revision);
    await r.unreserve('10.244.3.0/24');
    expect((await w.next()).events).toEqual([{ type: 'removed', lease: l }]);
    expect(await r.reservations()).toEqual([]);
    const again = await r.acquire({ publicIp: '192.0.2.9', previousSubnet: l.subnet });
    expect(again).toMatchObject({ subnet: '10.244.3.0/24', expiration: clock + TTL });
    expect((await rejection(r.unreserve('10.244.3.0/24'))).message).toBe('subnet 10.244.3.0/24 is not reserved');
    w.handle.close();
  });

  it('refuses, in one line each: outside the range, malformed, held by another node, reserved for another IP, a second reservation for one IP, an unreachable IP', async () => {
    const r = await open({}, SMALL);
    await r.acquire({ publicIp: '192.0.2.1' }); // 10.244.1.0/24
    await r.reserve({ subnet: '10.244.2.0/24', publicIp: '192.0.2.9' });
    const cases: Array<[Promise<unknown>, string, RegExp]> = [
      [
        r.reserve({ subnet: '10.244.9.0/24', publicIp: '192.0.2.7' }),
        'invalid',
        /^subnet 10\.244\.9\.0\/24 is not one the network hands out: a \/24 of 10\.244\.0\.0\/16 from SubnetMin 10\.244\.1\.0 to SubnetMax 10\.244\.3\.0$/,
      ],
      [r.reserve({ subnet: '10.244.2.0/25', publicIp: '192.0.2.7' }), 'invalid', /is not one the network hands out/],
      [r.reserve({ subnet: 'ten', publicIp: '192.0.2.7' }), 'invalid', /^subnet "ten" is not a CIDR/],
      [r.reserve({ subnet: '10.244.3.0/24', publicIp: 'nope' }), 'invalid', /^publicIp "nope" is not an IPv4 address$/],
      [r.reserve({ subnet: '10.244.3.0/24', publicIp: '127.0.0.1' }), 'invalid', /loopback/],
      [
        r.reserve({ subnet: '10.244.1.0/24', publicIp: '192.0.2.7' }),
        'invalid',
        /^subnet 10\.244\.1\.0\/24 is leased to 192\.0\.2\.1 \(10\.244\.1\.0\/24\); reserve it once that lease is gone$/,
      ],
      [
        r.reserve({ subnet: '10.244.2.0/24', publicIp: '192.0.2.7' }),
        'invalid',
        /^subnet 10\.244\.2\.0\/24 is already reserved for 192\.0\.2\.9; unreserve it first$/,
      ],
      [
        r.reserve({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' }),
        'invalid',
        /^publicIp 192\.0\.2\.9 already has subnet 10\.244\.2\.0\/24 reserved; unreserve it first$/,
      ],
      [r.reserve({ subnet: '1'.repeat(100), publicIp: '192.0.2.7' }), 'invalid', /^subnet is 100 characters long/],
      [r.unreserve('x'.repeat(100)), 'invalid', /^subnet is 100 characters long/],
    ];
    for (const [p, code, re] of cases) {
      const e = await rejection(p);
      expect(e.code).toBe(code);
      expect(e.message).toMatch(re);
      expect(e.message).not.toContain('\n');
    }
    // the same reservation again is no change, and no error
    await r.reserve({ subnet: '10.244.2.0/24', publicIp: '192.0.2.9' });
    expect(await r.reservations()).toEqual([{ subnet: '10.244.2.0/24', publicIp: '192.0.2.9' }]);
  });

  it('a reservation that no longer fits the config is skipped with a warning; the node gets another subnet and the reserved one stays out of use', async () => {
    const r = await open({}, SMALL);
    await r.reserve({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' });
    r.close();
    opened.length = 0;
    const warnings: object[] = [];
    const logger = { info() {}, error() {}, warn: (o: object, m?: string) => warnings.push({ ...o, m }) };
    const narrower = await open({ logger }, { ...SMALL, SubnetMax: '10.244.2.0' });
    const l = await narrower.acquire({ publicIp: '192.0.2.9' });
    expect(l.subnet).toBe('10.244.1.0/24');
    expect(isReservation(l)).toBe(false);
    expect(warnings).toContainEqual(
      expect.objectContaining({ subnet: '10.244.3.0/24', publicIp: '192.0.2.9', m: 'skipping a reservation that does not fit the network config' }),
    );
    expect(await narrower.reservations()).toEqual([{ subnet: '10.244.3.0/24', publicIp: '192.0.2.9' }]);
  });
});
