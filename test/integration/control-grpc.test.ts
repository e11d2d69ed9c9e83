// The gRPC control plane end to end, in one process: EmbeddedRegistry behind startControlServer
// on 127.0.0.1:<free port>, driven through GrpcRegistry. No root needed.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import { EmbeddedRegistry } from '../../src/control/embedded';
import { parseNetConfig } from '../../src/control/netconfig';
import { RegistryError, type WatchBatch } from '../../src/control/registry';
import { startControlServer, type ControlServer } from '../../src/control/server';
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

function watcher(client: GrpcRegistry, from: number) {
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
    const deadline = Date.now() + 3000;
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
    const a = await client.acquire({ publicIp: '127.0.0.11', backendData: { VtepMAC: '02:00:00:00:00:0b' } });
    expect(a.publicIp).toBe('127.0.0.11');
    expect(a.backendType).toBe('vxlan');
    expect(a.backendData).toEqual({ VtepMAC: '02:00:00:00:00:0b' });
    expect(a.subnet).toMatch(/^10\.244\.[1-4]\.0\/24$/);
    expect(a.expiration).toBeGreaterThanOrEqual(before + 24 * 3600 * 1000);

    const b = await client.acquire({ publicIp: '127.0.0.12', backendType: 'vxlan' });
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
    for (let i = 1; i <= 4; i++) leased.push(await client.acquire({ publicIp: `127.0.0.${i}` }));
    const ex = await rejection(client.acquire({ publicIp: '127.0.0.5' }));
    expect(ex.code).toBe('exhausted');
    expect(ex.message).toBe('no free subnet in 10.244.0.0/16 between SubnetMin 10.244.1.0 and SubnetMax 10.244.4.0: 4 of 4 leased');

    const nf = await rejection(client.renew({ subnet: '10.244.200.0/24', publicIp: '127.0.0.1' }));
    expect(nf.code).toBe('not_found');
    expect(nf.message).toContain('no lease on 10.244.200.0/24');

    const perm = await rejection(client.renew({ subnet: leased[0].subnet, publicIp: '127.0.0.2' }));
    expect(perm.code).toBe('permission');
    expect(perm.message).toBe(`lease ${leased[0].subnet} belongs to 127.0.0.1, not 127.0.0.2`);

    const inv = await rejection(client.acquire({ publicIp: 'not-an-ip' }));
    expect(inv.code).toBe('invalid');
    expect(inv.message).toContain('not-an-ip');
    expect((await rejection(client.revoke({ subnet: leased[0].subnet, publicIp: '127.0.0.9' }))).code).toBe('permission');
  });

  it('watch: snapshot, live events, then resume from a revision', async () => {
    const { client } = await setup();
    const a = await client.acquire({ publicIp: '127.0.0.1' });
    const w = watcher(client, 0);
    const snap = await w.next();
    expect(snap).toEqual({ revision: 1, snapshot: true, leases: [a], events: [] });

    const b = await client.acquire({ publicIp: '127.0.0.2', backendData: { k: [1, 2] } });
    expect(await w.next()).toEqual({ revision: 2, snapshot: false, leases: [], events: [{ type: 'added', lease: b }] });
    await client.revoke(a);
    expect(await w.next()).toEqual({ revision: 3, snapshot: false, leases: [], events: [{ type: 'removed', lease: a }] });
    w.handle.close();

    const c = await client.acquire({ publicIp: '127.0.0.3' });
    const d = await client.acquire({ publicIp: '127.0.0.4' });
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
    expect(future.leases.map((l) => l.publicIp).sort()).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    expect(w.errors).toEqual([]); // our own close() is not reported as an error
  });

  it('expiry reaches watchers as removed events', async () => {
    const { client } = await setup(NET_CONF, 300);
    const w = watcher(client, 0);
    expect((await w.next()).snapshot).toBe(true);
    const a = await client.acquire({ publicIp: '127.0.0.1' });
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
