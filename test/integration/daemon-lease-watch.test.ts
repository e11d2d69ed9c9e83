// The daemon's lease watch (LeaseWatch) against a real `weft control` server on 127.0.0.1 whose
// registry can be made to fail every watch, with the daemon's /readyz served by the real health
// server: readiness says why while the watch is down, the first failure is logged with its
// cause, and both recover with the control plane. No root needed (no TUN: the component alone).
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import { EmbeddedRegistry } from '../../src/control/embedded';
import { parseNetConfig } from '../../src/control/netconfig';
import { RegistryError, type Registry, type WatchBatch, type WatchHandle } from '../../src/control/registry';
import { startControlServer } from '../../src/control/server';
import { startHealthServer } from '../../src/daemon/health';
import { LeaseWatch } from '../../src/daemon/lease-watch';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// What a lease with an oversized backendData did to every other daemon: their watch snapshot
// no longer fit grpc-js's default 4 MiB receive limit.
const CAUSE = 'Received message larger than max (4194405 vs 4194304)';

/** The embedded registry, except that while `broken` every watch fails (open ones at once). */
class BreakableRegistry implements Registry {
  broken: Error | undefined;
  private readonly open = new Set<{ inner: WatchHandle; onError: (e: Error) => void }>();
  constructor(private readonly inner: EmbeddedRegistry) {}
  config = () => this.inner.config();
  acquire: Registry['acquire'] = (r) => this.inner.acquire(r);
  renew: Registry['renew'] = (r) => this.inner.renew(r);
  revoke: Registry['revoke'] = (r) => this.inner.revoke(r);
  list = () => (this.broken ? Promise.reject(this.broken) : this.inner.list());
  watch(from: number, onBatch: (b: WatchBatch) => void, onError: (e: Error) => void): WatchHandle {
    const err = this.broken;
    if (err) {
      queueMicrotask(() => onError(err));
      return { close() {} };
    }
    const w = { inner: this.inner.watch(from, onBatch, onError), onError };
    this.open.add(w);
    return {
      close: () => {
        this.open.delete(w);
        w.inner.close();
      },
    };
  }
  break(e: Error): void {
    this.broken = e;
    for (const w of [...this.open]) {
      this.open.delete(w);
      w.inner.close();
      w.onError(e);
    }
  }
  close(): void {}
}

async function setup() {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-lease-watch-'));
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  const embedded = new EmbeddedRegistry({ config: parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }), stateDir: dir });
  await embedded.open();
  cleanups.push(() => embedded.close());
  const control = new BreakableRegistry(embedded);
  const server = await startControlServer({ listen: '127.0.0.1:0', registry: control, logger: pino({ level: 'silent' }), shutdownGraceMs: 500 });
  cleanups.push(() => server.close());
  const registry = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 3000 });
  cleanups.push(() => registry.close());

  const logs: { level: number; msg: string; err?: string }[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(JSON.parse(chunk.toString()) as { level: number; msg: string; err?: string });
        cb();
      },
    }),
  );
  const applied: WatchBatch[] = [];
  const watch = new LeaseWatch({
    registry,
    log,
    apply: (b) => applied.push(b),
    backoffMinMs: 50,
    backoffMaxMs: 200,
    downGraceMs: 300,
  });
  cleanups.push(() => watch.stop());
  const health = await startHealthServer('127.0.0.1', 0, { healthy: () => true, notReady: () => watch.notReady(), status: () => ({}) });
  cleanups.push(() => health.close());
  const readyz = async (): Promise<{ status: number; body: string }> => {
    const res = await fetch(`http://127.0.0.1:${health.port}/readyz`);
    return { status: res.status, body: await res.text() };
  };
  return { embedded, control, watch, logs, applied, readyz };
}

async function until<T>(probe: () => Promise<T> | T, pred: (v: T) => boolean, what: string, ms = 8000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (pred(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('daemon lease watch readiness', () => {
  it('a daemon whose first watch fails is not ready and says why, logs the cause once, and is ready once control recovers', async () => {
    const { embedded, control, watch, logs, applied, readyz } = await setup();
    await embedded.acquire({ publicIp: '192.0.2.1' });
    control.break(new RegistryError('exhausted', CAUSE));
    watch.start();

    const warned = await until(
      () => logs.filter((l) => l.level === 40),
      (w) => w.length > 0,
      'a warning',
    );
    expect(warned[0].err).toContain(CAUSE);
    expect(warned[0].msg).toMatch(/lease watch/);
    const down = await readyz();
    expect(down.status).toBe(503);
    expect(down.body).toContain('peer sync');
    expect(down.body).toContain(CAUSE);

    // Retries with the same cause do not repeat the warning.
    await until(
      () => logs.filter((l) => l.err?.includes(CAUSE)).length,
      (n) => n >= 3,
      'a few retries',
    );
    expect(logs.filter((l) => l.level >= 40)).toHaveLength(1);

    control.broken = undefined;
    const up = await until(readyz, (r) => r.status === 200, '/readyz to recover');
    expect(up.body).toBe('ready\n');
    expect(applied[0].snapshot).toBe(true);
    expect(applied[0].leases.map((l) => l.publicIp)).toEqual(['192.0.2.1']);
  });

  it('a running daemon whose watch breaks keeps its routes, turns not ready with the cause after the grace, and recovers', async () => {
    const { embedded, control, watch, logs, applied, readyz } = await setup();
    await embedded.acquire({ publicIp: '192.0.2.1' });
    watch.start();
    await until(readyz, (r) => r.status === 200, 'ready');
    const before = applied.length;

    control.break(new RegistryError('unavailable', CAUSE));
    const down = await until(readyz, (r) => r.status === 503, '/readyz to say not ready');
    expect(down.body).toContain('lease watch');
    expect(down.body).toContain(CAUSE);
    expect(down.body).toContain('last-known routes');
    expect(logs.some((l) => l.level === 40 && l.err?.includes(CAUSE))).toBe(true);
    // Nothing was applied while down: the peers (routes) stay as last known.
    expect(applied).toHaveLength(before);

    // A change made during the outage arrives once the control plane is healthy again.
    const b = await embedded.acquire({ publicIp: '192.0.2.2' });
    control.broken = undefined;
    await until(readyz, (r) => r.status === 200, '/readyz to recover');
    const resumed = applied.slice(before);
    expect(resumed[0].snapshot).toBe(false);
    expect(resumed.flatMap((x) => x.events).map((e) => e.lease.subnet)).toEqual([b.subnet]);
  });
});
