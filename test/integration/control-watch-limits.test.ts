// Watch streams against a real `weft control` server on 127.0.0.1 (in process): clients that
// never read cannot make the server hold more than WATCH_MAX_QUEUED_EVENTS per stream, they are
// cut off with a status that says so and can resume, a reading client still sees every change,
// and a client past its stream cap is refused. No root needed.
import * as grpc from '@grpc/grpc-js';
import { promises as fsp } from 'node:fs';
import * as http2 from 'node:http2';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import { EmbeddedRegistry } from '../../src/control/embedded';
import { parseNetConfig } from '../../src/control/netconfig';
import { RegistryError, type Lease, type WatchBatch } from '../../src/control/registry';
import { startControlServer, type ControlServer } from '../../src/control/server';
import { loadClientCredentials, loadServerTls } from '../../src/control/tls';
import { WATCH_MAX_QUEUED_EVENTS } from '../../src/control/limits';
import { makePki } from '../support/certs';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const NET_CONF = { Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 7 } };

async function setup(maxWatchesPerClient?: number) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-watch-limits-'));
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  const registry = new EmbeddedRegistry({ config: parseNetConfig(NET_CONF), stateDir: dir });
  await registry.open();
  cleanups.push(() => registry.close());
  const server: ControlServer = await startControlServer({
    listen: '127.0.0.1:0',
    registry,
    logger: pino({ level: 'silent' }),
    maxWatchesPerClient,
    shutdownGraceMs: 500,
  });
  cleanups.push(() => server.close());
  return { registry, server };
}

/**
 * A Watch call that never reads, spoken in raw HTTP/2: a grpc-js client cannot stand in for one,
 * as it keeps reading from the connection into its own memory whether or not its stream is
 * paused. Node's HTTP/2 stream, paused, stops granting flow-control window instead, so the
 * server's writes back up — what a stopped or hostile client does.
 */
function stalledWatch(port: number) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined); // the test reads the outcome from the trailers
  cleanups.push(() => void session.destroy());
  const req = session.request({
    ':method': 'POST',
    ':path': '/weft.control.v1.Control/Watch',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  req.on('error', () => undefined);
  // One gRPC message: not compressed, 0 bytes long (a WatchRequest with fromRevision 0, the
  // proto3 default, encodes to nothing).
  req.end(Buffer.from([0, 0, 0, 0, 0]));
  req.pause();
  const status: { code?: number; message?: string } = {};
  req.on('trailers', (t) => {
    status.code = Number(t['grpc-status']);
    status.message = decodeURIComponent(String(t['grpc-message'] ?? ''));
  });
  return { req, status };
}

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('watch stream limits', () => {
  it('stalled watchers are cut off with their backlog bounded and can resume; a reading watcher sees every change', async () => {
    const STALLED = 30;
    const { registry, server } = await setup(STALLED + 2);
    const leases: Lease[] = [];
    for (let i = 1; i <= 4; i++) leases.push(await registry.acquire({ publicIp: `192.0.2.${i}`, backendData: { VtepMAC: `02:00:00:00:00:0${i}` } }));

    const reader = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 5000 });
    cleanups.push(() => reader.close());
    const seen: WatchBatch[] = [];
    const readerErrors: Error[] = [];
    const h = reader.watch(
      0,
      (b) => seen.push(b),
      (e) => readerErrors.push(e),
    );
    cleanups.push(() => h.close());
    await until(() => seen.length > 0, 'the reader snapshot');

    const stalled = Array.from({ length: STALLED }, () => stalledWatch(server.port));
    await until(() => server.watchStats().streams === STALLED + 1, 'every stalled stream to open');

    // Thousands of renewals, a few at a time (each group is one commit, one batch per watcher).
    const RENEWALS = 3000;
    let peak = 0;
    for (let done = 0; done < RENEWALS; done += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, i) => registry.renew(leases[(done + i) % leases.length])));
      const st = server.watchStats();
      peak = Math.max(peak, st.queuedEvents);
      expect(st.maxQueuedEvents).toBeLessThanOrEqual(WATCH_MAX_QUEUED_EVENTS);
    }
    const revision = (await registry.list()).revision;

    // The reader saw every one of them, in order, ending at the registry's revision.
    await until(() => seen[seen.length - 1].revision === revision, 'the reader to catch up');
    expect(readerErrors).toEqual([]);
    expect(seen.slice(1).reduce((n, b) => n + b.events.length, 0)).toBe(RENEWALS);

    const st = server.watchStats();
    expect(st.cutOff).toBe(STALLED);
    expect(st.maxQueuedEvents).toBeLessThanOrEqual(WATCH_MAX_QUEUED_EVENTS);
    expect(peak).toBeLessThanOrEqual(STALLED * WATCH_MAX_QUEUED_EVENTS);
    expect(peak).toBeGreaterThan(0);

    // Once they read again, each stalled client gets what was flushed before the cut, then the status.
    for (const s of stalled) s.req.resume();
    await until(() => stalled.every((s) => s.status.code !== undefined), 'the stalled streams to end');
    let resumeFrom = 0;
    for (const s of stalled) {
      expect(s.status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      const m = /^watcher fell behind: (\d+) events queued \(limit (\d+)\); resume from revision (\d+)$/.exec(s.status.message!);
      expect(m, s.status.message).not.toBeNull();
      expect(Number(m![1])).toBeGreaterThan(WATCH_MAX_QUEUED_EVENTS);
      expect(Number(m![2])).toBe(WATCH_MAX_QUEUED_EVENTS);
      resumeFrom = Number(m![3]);
    }
    await until(() => server.watchStats().streams === 1, 'the cut-off streams to close');
    expect(server.watchStats().queuedEvents).toBe(0);

    // Resuming from the revision the status names: the missed changes as one delta, no snapshot.
    expect(resumeFrom).toBeGreaterThan(0);
    const again: WatchBatch[] = [];
    const h2 = reader.watch(
      resumeFrom,
      (b) => again.push(b),
      (e) => readerErrors.push(e),
    );
    cleanups.push(() => h2.close());
    await until(() => again.length > 0, 'the resumed watch');
    expect(again[0].snapshot).toBe(false);
    expect(again[0].revision).toBe(revision);
    expect(again[0].events.length).toBe(revision - resumeFrom);
  }, 60_000);

  it('a client over the stream cap is refused with RESOURCE_EXHAUSTED; a closed stream frees its slot', async () => {
    const { server } = await setup(2);
    const client = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 5000 });
    cleanups.push(() => client.close());
    const open = (): { batches: WatchBatch[]; errors: Error[]; close(): void } => {
      const batches: WatchBatch[] = [];
      const errors: Error[] = [];
      const h = client.watch(
        0,
        (b) => batches.push(b),
        (e) => errors.push(e),
      );
      cleanups.push(() => h.close());
      return { batches, errors, close: () => h.close() };
    };
    const a = open();
    const b = open();
    await until(() => a.batches.length > 0 && b.batches.length > 0, 'two watches');
    const c = open();
    await until(() => c.errors.length > 0, 'the third watch to be refused');
    expect(c.batches).toEqual([]);
    expect(c.errors[0]).toBeInstanceOf(RegistryError);
    expect((c.errors[0] as RegistryError).code).toBe('exhausted');
    expect(c.errors[0].message).toBe('too many watch streams for client 127.0.0.1: 2 open, limit 2');
    expect(server.watchStats().refused).toBe(1);

    a.close();
    await until(() => server.watchStats().streams === 1, 'the closed stream to be released');
    const d = open();
    await until(() => d.batches.length > 0 || d.errors.length > 0, 'a watch after one closed');
    expect(d.errors).toEqual([]);
    expect(d.batches[0].snapshot).toBe(true);
  });

  it('under mTLS the cap is per certificate: a second node on the same address is not refused', async () => {
    const pki = await makePki({ nodes: { 'node-a': '192.168.77.11', 'node-b': '192.168.77.12' } });
    cleanups.push(() => pki.cleanup());
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-watch-limits-'));
    cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
    const registry = new EmbeddedRegistry({ config: parseNetConfig(NET_CONF), stateDir: dir });
    await registry.open();
    cleanups.push(() => registry.close());
    const tls = loadServerTls({ certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: pki.caCert })!;
    const server = await startControlServer({
      listen: '127.0.0.1:0',
      registry,
      logger: pino({ level: 'silent' }),
      credentials: tls.credentials,
      clientIdentity: tls.clientCertificates,
      maxWatchesPerClient: 1,
    });
    cleanups.push(() => server.close());
    const watchAs = (name: 'node-a' | 'node-b') => {
      const pair = pki.nodes[name];
      const c = new GrpcRegistry(`127.0.0.1:${server.port}`, {
        deadlineMs: 5000,
        credentials: loadClientCredentials({ caFile: pki.caCert, certFile: pair.cert, keyFile: pair.key }),
      });
      cleanups.push(() => c.close());
      const got = { batches: 0, errors: [] as Error[] };
      const h = c.watch(
        0,
        () => got.batches++,
        (e) => got.errors.push(e),
      );
      cleanups.push(() => h.close());
      return got;
    };
    const a1 = watchAs('node-a');
    await until(() => a1.batches > 0, "node A's watch");
    const a2 = watchAs('node-a');
    await until(() => a2.errors.length > 0, "node A's second watch to be refused");
    expect(a2.errors[0].message).toBe('too many watch streams for client certificate (CN=node-a, IP 192.168.77.11): 1 open, limit 1');
    const b1 = watchAs('node-b');
    await until(() => b1.batches > 0 || b1.errors.length > 0, "node B's watch");
    expect(b1.errors).toEqual([]);
    expect(server.watchStats()).toMatchObject({ streams: 2, refused: 1 });
  });
});
