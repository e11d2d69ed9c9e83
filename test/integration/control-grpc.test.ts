// The gRPC control plane end to end, in one process: EmbeddedRegistry behind startControlServer
// on 127.0.0.1:<free port>, driven through GrpcRegistry. No root needed.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import { EmbeddedRegistry } from '../../src/control/embedded';
import { MAX_BACKEND_DATA_BYTES, MAX_BACKEND_TYPE_CHARS, MAX_EVENTS_PER_BATCH, MAX_LEASES } from '../../src/control/limits';
import { parseNetConfig } from '../../src/control/netconfig';
import { RegistryError, type Lease, type Registry, type RegistryLogger, type WatchBatch } from '../../src/control/registry';
import { startControlServer, type ControlServer } from '../../src/control/server';
import { controlService } from '../../src/control/wire';
import { rejection } from '../support/registry';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const NET_CONF = { Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.4.0', Backend: { Type: 'vxlan', VNI: 7 } };

async function setup(conf: unknown = NET_CONF, leaseTtlMs?: number) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-grpc-'));
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  const registry = new EmbeddedRegistry({ config: parseNetConfig(conf), stateDir: dir, leaseTtlMs });
  await registry.open();
  cleanups.push(() => registry.close());
  const server: ControlServer = await startControlServer({ listen: '127.0.0.1:0', registry, logger: pino({ level: 'silent' }) });
  cleanups.push(() => server.close());
  const client = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 3000 });
  cleanups.push(() => client.close());
  return { dir, registry, server, client };
}

function watcher(client: GrpcRegistry, from: number, waitMs = 3000) {
  const batches: WatchBatch[] = [];
  const errors: Error[] = [];
  let wake: (() => void) | undefined;
  const handle = client.watch(
    from,
    (b) => {
      batches.push(b);
      wake?.();
    },
    (e) => {
      errors.push(e);
      wake?.();
    },
  );
  cleanups.push(() => handle.close());
  let read = 0;
  const waitFor = async (pred: () => boolean, what: string) => {
    const deadline = Date.now() + waitMs;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((res) => {
        wake = res;
        setTimeout(res, 50);
      });
    }
  };
  return {
    batches,
    errors,
    handle,
    async next(): Promise<WatchBatch> {
      await waitFor(() => batches.length > read || errors.length > 0, 'a watch batch');
      if (batches.length <= read) throw errors[0];
      return batches[read++];
    },
    async error(): Promise<Error> {
      await waitFor(() => errors.length > 0, 'a watch error');
      return errors[0];
    },
  };
}

describe('control plane over gRPC', () => {
  it('GetConfig returns the same NetworkConfig the server parsed', async () => {
    const { client } = await setup();
    const cfg = await client.config();
    expect(cfg).toEqual(parseNetConfig(NET_CONF));
    expect(cfg.backend).toEqual({ type: 'vxlan', port: 8472, vni: 7, directRouting: false });
  });

  it('acquire, renew, list, revoke', async () => {
    const { client } = await setup();
    const before = Date.now();
    const a = await client.acquire({ publicIp: '192.0.2.11', backendData: { VtepMAC: '02:00:00:00:00:0b' } });
    expect(a.publicIp).toBe('192.0.2.11');
    expect(a.backendType).toBe('vxlan');
    expect(a.backendData).toEqual({ VtepMAC: '02:00:00:00:00:0b' });
    expect(a.subnet).toMatch(/^10\.244\.[1-4]\.0\/24$/);
    expect(a.expiration).toBeGreaterThanOrEqual(before + 24 * 3600 * 1000);

    const b = await client.acquire({ publicIp: '192.0.2.12', backendType: 'vxlan' });
    expect(b.subnet).not.toBe(a.subnet);

    await new Promise((r) => setTimeout(r, 5));
    const renewed = await client.renew({ subnet: a.subnet, publicIp: a.publicIp });
    expect(renewed.subnet).toBe(a.subnet);
    expect(renewed.expiration).toBeGreaterThan(a.expiration);

    const listed = await client.list();
    expect(listed.revision).toBe(3);
    expect(listed.leases.map((l) => l.subnet).sort()).toEqual([a.subnet, b.subnet].sort());
    expect(listed.leases.find((l) => l.subnet === a.subnet)).toEqual(renewed);

    await client.revoke({ subnet: b.subnet, publicIp: b.publicIp });
    expect((await client.list()).leases).toEqual([renewed]);
  });

  it('errors keep their code and message across the wire', async () => {
    const { client } = await setup();
    const leased = [];
    for (let i = 1; i <= 4; i++) leased.push(await client.acquire({ publicIp: `192.0.2.${i}` }));
    const ex = await rejection(client.acquire({ publicIp: '192.0.2.5' }));
    expect(ex.code).toBe('exhausted');
    expect(ex.message).toBe('no free subnet in 10.244.0.0/16 between SubnetMin 10.244.1.0 and SubnetMax 10.244.4.0: 4 of 4 leased');

    const nf = await rejection(client.renew({ subnet: '10.244.200.0/24', publicIp: '192.0.2.1' }));
    expect(nf.code).toBe('not_found');
    expect(nf.message).toContain('no lease on 10.244.200.0/24');

    const perm = await rejection(client.renew({ subnet: leased[0].subnet, publicIp: '192.0.2.2' }));
    expect(perm.code).toBe('permission');
    expect(perm.message).toBe(`lease ${leased[0].subnet} belongs to 192.0.2.1, not 192.0.2.2`);

    const inv = await rejection(client.acquire({ publicIp: 'not-an-ip' }));
    expect(inv.code).toBe('invalid');
    expect(inv.message).toContain('not-an-ip');
    expect((await rejection(client.revoke({ subnet: leased[0].subnet, publicIp: '192.0.2.9' }))).code).toBe('permission');
  });

  it('watch: snapshot, live events, then resume from a revision', async () => {
    const { client } = await setup();
    const a = await client.acquire({ publicIp: '192.0.2.1' });
    const w = watcher(client, 0);
    const snap = await w.next();
    expect(snap).toEqual({ revision: 1, snapshot: true, leases: [a], events: [] });

    const b = await client.acquire({ publicIp: '192.0.2.2', backendData: { k: [1, 2] } });
    expect(await w.next()).toEqual({ revision: 2, snapshot: false, leases: [], events: [{ type: 'added', lease: b }] });
    await client.revoke(a);
    expect(await w.next()).toEqual({ revision: 3, snapshot: false, leases: [], events: [{ type: 'removed', lease: a }] });
    w.handle.close();

    const c = await client.acquire({ publicIp: '192.0.2.3' });
    const d = await client.acquire({ publicIp: '192.0.2.4' });
    // A client that saw revision 3 reconnects: it gets exactly what it missed, as events.
    const resumed = watcher(client, 3);
    expect(await resumed.next()).toEqual({
      revision: 5,
      snapshot: false,
      leases: [],
      events: [
        { type: 'added', lease: c },
        { type: 'added', lease: d },
      ],
    });
    // …and one that claims a future revision gets a snapshot.
    const future = await watcher(client, 1000).next();
    expect(future.snapshot).toBe(true);
    expect(future.revision).toBe(5);
    expect(future.leases.map((l) => l.publicIp).sort()).toEqual(['192.0.2.2', '192.0.2.3', '192.0.2.4']);
    expect(w.errors).toEqual([]); // our own close() is not reported as an error
  });

  it('expiry reaches watchers as removed events', async () => {
    const { client } = await setup(NET_CONF, 300);
    const w = watcher(client, 0);
    expect((await w.next()).snapshot).toBe(true);
    const a = await client.acquire({ publicIp: '192.0.2.1' });
    expect((await w.next()).events).toEqual([{ type: 'added', lease: a }]);
    expect((await w.next()).events).toEqual([{ type: 'removed', lease: a }]);
    expect((await rejection(client.renew(a))).code).toBe('not_found');
  });

  it('server shutdown ends watches with unavailable; calls to a dead server are unavailable', async () => {
    const { client, server } = await setup();
    const w = watcher(client, 0);
    await w.next();
    await server.close();
    const e = await w.error();
    expect(e).toBeInstanceOf(RegistryError);
    expect((e as RegistryError).code).toBe('unavailable');
    expect((await rejection(client.list())).code).toBe('unavailable');
  });

  it('a client pointed at nothing fails fast with unavailable', async () => {
    const { server } = await setup();
    const port = server.port;
    await server.close();
    const c = new GrpcRegistry(`127.0.0.1:${port}`, { deadlineMs: 1000 });
    cleanups.push(() => c.close());
    const e = await rejection(c.config());
    expect(e.code).toBe('unavailable');
  });
});

/** A grpc-js client of the Control service with no GrpcRegistry in between: what a hostile client sends. */
function rawClient(
  port: number,
): grpc.Client & Record<string, (req: unknown, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void> {
  const Control = controlService();
  const c = new Control(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  cleanups.push(() => c.close());
  return c as never;
}

function rawCall(c: ReturnType<typeof rawClient>, method: string, req: unknown): Promise<{ err: grpc.ServiceError | null; res: unknown; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => c[method](req, { deadline: Date.now() + 3000 }, (err, res) => resolve({ err, res, ms: Date.now() - t0 })));
}

describe('control plane over gRPC: hostile input', () => {
  it('a 100 KB publicIp gets INVALID_ARGUMENT with a short message, and the same channel answers the next call', async () => {
    const { server } = await setup();
    const c = rawClient(server.port);
    for (const [method, req] of [
      ['Acquire', { publicIp: 'x'.repeat(100_000) }],
      ['Renew', { subnet: '10.244.1.0/24', publicIp: '1'.repeat(100_000) }],
      ['Revoke', { subnet: '9'.repeat(100_000), publicIp: '192.0.2.1' }],
    ] as const) {
      const { err } = await rawCall(c, method, req);
      expect(err?.code, method).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.details, method).toMatch(/is 100000 characters long/);
      expect(err!.details.length, method).toBeLessThan(300);
      const next = await rawCall(c, 'List', {});
      expect(next.err, `List after ${method}`).toBeNull();
    }
    const ok = await rawCall(c, 'Acquire', { publicIp: '192.0.2.1' });
    expect(ok.err).toBeNull();
    expect((ok.res as { publicIp: string }).publicIp).toBe('192.0.2.1');
  });

  it('a 4 MiB backendData acquire is refused; other nodes go on listing and watching', async () => {
    const { server, client } = await setup();
    const a = await client.acquire({ publicIp: '192.0.2.1' });
    const other = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 3000 });
    cleanups.push(() => other.close());
    const w = watcher(other, 0);
    expect((await w.next()).leases).toEqual([a]);

    const { err } = await rawCall(rawClient(server.port), 'Acquire', {
      publicIp: '192.0.2.2',
      backendData: JSON.stringify({ VtepMAC: 'a'.repeat(4 * 1024 * 1024 - 4096) }),
    });
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(new RegExp(`^backendData is \\d+ bytes of JSON, more than the ${MAX_BACKEND_DATA_BYTES} allowed`));
    expect(err!.details.length).toBeLessThan(300);

    expect((await other.list()).leases).toEqual([a]);
    const b = await client.acquire({ publicIp: '192.0.2.3' });
    expect((await w.next()).events).toEqual([{ type: 'added', lease: b }]);
    const fresh = await watcher(other, 0).next();
    expect(fresh.leases.map((l) => l.subnet).sort()).toEqual([a.subnet, b.subnet].sort());
    expect(w.errors).toEqual([]);
  });
});

/** A registry that serves fixed leases: lets a test put on the wire what no real registry would store. */
function fixedRegistry(leases: Lease[], events: Lease[] = []): Registry {
  return {
    config: () => Promise.resolve(parseNetConfig(NET_CONF)),
    acquire: () => Promise.reject(new RegistryError('invalid', 'fixed')),
    renew: () => Promise.reject(new RegistryError('invalid', 'fixed')),
    revoke: () => Promise.reject(new RegistryError('invalid', 'fixed')),
    list: () => Promise.resolve({ leases, revision: 1 }),
    watch(_from, onBatch) {
      queueMicrotask(() => {
        onBatch({ revision: 1, snapshot: true, leases, events: [] });
        if (events.length > 0) onBatch({ revision: 2, snapshot: false, leases: [], events: events.map((lease) => ({ type: 'added', lease })) });
      });
      return { close() {} };
    },
    close() {},
  };
}

async function serve(registry: Registry, logger?: RegistryLogger) {
  const server = await startControlServer({ listen: '127.0.0.1:0', registry, logger: pino({ level: 'silent' }), shutdownGraceMs: 500 });
  cleanups.push(() => server.close());
  const client = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 10_000, logger });
  cleanups.push(() => client.close());
  return client;
}

describe('control plane over gRPC: message sizes', () => {
  it('the largest List and watch batch limits.ts allows reach the client (MAX_LEASES leases, every field at its limit)', async () => {
    const biggest = (i: number): Lease => ({
      subnet: `100.${100 + (i >> 8)}.${100 + ((i & 0xff) % 156)}.100/32`.padEnd(18, '0').slice(0, 18),
      publicIp: '203.203.203.203',
      backendType: 'v'.repeat(MAX_BACKEND_TYPE_CHARS),
      backendData: { k: 'a'.repeat(MAX_BACKEND_DATA_BYTES - 8) },
      expiration: -1, // int64 -1: the longest varint (10 bytes)
    });
    const leases = Array.from({ length: MAX_LEASES }, (_, i) => biggest(i));
    const events = Array.from({ length: MAX_EVENTS_PER_BATCH }, (_, i) => biggest(i));
    const client = await serve(fixedRegistry(leases, events));
    const listed = await client.list();
    expect(listed.leases).toHaveLength(MAX_LEASES);
    expect(listed.leases[0]).toEqual(leases[0]);
    // The snapshot is the List reply again; the event batch after it is the largest message.
    const w = watcher(client, 0, 20_000);
    expect((await w.next()).leases).toHaveLength(MAX_LEASES);
    expect((await w.next()).events).toHaveLength(MAX_EVENTS_PER_BATCH);
    expect(w.errors).toEqual([]);
  }, 60_000);

  it('a daemon skips a lease it cannot use (over the limits) with a log line and keeps the rest', async () => {
    const good: Lease = { subnet: '10.244.1.0/24', publicIp: '192.0.2.1', backendType: 'vxlan', backendData: { VtepMAC: '0e:00:c0:00:02:01' }, expiration: 1 };
    const fat: Lease = { ...good, subnet: '10.244.2.0/24', publicIp: '192.0.2.2', backendData: { k: 'a'.repeat(2 * MAX_BACKEND_DATA_BYTES) } };
    const longIp: Lease = { ...good, subnet: '10.244.3.0/24', publicIp: '1'.repeat(100_000) };
    const warnings: Array<{ obj: Record<string, unknown>; msg?: string }> = [];
    const logger: RegistryLogger = { info() {}, error() {}, warn: (obj, msg) => warnings.push({ obj: obj as Record<string, unknown>, msg }) };
    const client = await serve(fixedRegistry([good, fat, longIp], [fat, good]), logger);
    expect((await client.list()).leases).toEqual([good]);
    const w = watcher(client, 0);
    expect((await w.next()).leases).toEqual([good]);
    expect((await w.next()).events).toEqual([{ type: 'added', lease: good }]);
    expect(w.errors).toEqual([]);
    const skipped = warnings.filter((x) => x.msg === 'skipping a lease from the control plane that cannot be used');
    expect(skipped.map((x) => x.obj.subnet)).toEqual(['10.244.2.0/24', '10.244.3.0/24', '10.244.2.0/24', '10.244.3.0/24', '10.244.2.0/24']);
    expect(skipped[0].obj.why).toMatch(/^backendData is 2056 bytes of JSON/);
    for (const x of skipped) expect(JSON.stringify(x.obj).length).toBeLessThan(400);
  });
});
