// The control plane over TLS and mTLS, end to end on 127.0.0.1: EmbeddedRegistry behind
// startControlServer with credentials from tls.ts, GrpcRegistry clients holding various
// certificates from test/support/certs.ts, and one `weft control` process started with the TLS
// flags. No root needed; nothing leaves loopback (node "public IPs" are only lease labels).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import { EmbeddedRegistry } from '../../src/control/embedded';
import { parseNetConfig } from '../../src/control/netconfig';
import type { WatchBatch } from '../../src/control/registry';
import { startControlServer } from '../../src/control/server';
import { loadClientCredentials, loadServerTls } from '../../src/control/tls';
import { ensureBuilt } from '../support/build';
import { makePki, type CertFiles, type TestPki } from '../support/certs';
import { rejection } from '../support/registry';

const A = '192.168.77.11';
const B = '192.168.77.12';
const NET_CONF = { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } };
const WEFT = path.join(__dirname, '..', '..', 'bin', 'weft.js');

let pki: TestPki;
beforeAll(async () => {
  pki = await makePki({ nodes: { 'node-a': A, 'node-b': B } });
});
afterAll(async () => {
  await pki?.cleanup();
});

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Mode = 'plain' | 'tls' | 'mtls';

interface Warned {
  msg?: string;
  obj: Record<string, unknown>;
}

async function serve(mode: Mode, shutdownGraceMs?: number) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-tls-'));
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  const registry = new EmbeddedRegistry({ config: parseNetConfig(NET_CONF), stateDir: dir });
  await registry.open();
  cleanups.push(() => registry.close());
  const tls =
    mode === 'plain'
      ? undefined
      : loadServerTls({ certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: mode === 'mtls' ? pki.caCert : undefined });
  const warnings: Warned[] = [];
  // Records warnings (the test checks when the server warns); drops the rest.
  const logger = {
    info: () => undefined,
    error: () => undefined,
    warn: (obj: object, msg?: string) => void warnings.push({ obj: obj as Record<string, unknown>, msg }),
  };
  const server = await startControlServer({
    listen: '127.0.0.1:0',
    registry,
    logger,
    credentials: tls?.credentials,
    clientIdentity: tls?.clientCertificates,
    shutdownGraceMs,
  });
  cleanups.push(() => server.close());
  return { server, registry, warnings, target: `127.0.0.1:${server.port}` };
}

/** A client; `ca` undefined: plaintext. */
function client(target: string, ca?: string, pair?: CertFiles): GrpcRegistry {
  const credentials = loadClientCredentials({ caFile: ca, certFile: pair?.cert, keyFile: pair?.key });
  const c = new GrpcRegistry(target, { deadlineMs: 3000, credentials });
  cleanups.push(() => c.close());
  return c;
}

/** The first batch or the error of a watch from revision 0. */
function firstWatchResult(c: GrpcRegistry): Promise<WatchBatch | Error> {
  return new Promise((resolve) => {
    const h = c.watch(
      0,
      (b) => {
        h.close();
        resolve(b);
      },
      (e) => resolve(e),
    );
    cleanups.push(() => h.close());
  });
}

describe('control plane over TLS (server certificate only)', () => {
  it('acquire, renew, list, watch, revoke work end to end; the server warns that leases are unguarded', async () => {
    const { target, warnings } = await serve('tls');
    const c = client(target, pki.caCert);
    expect((await c.config()).network).toBe('10.244.0.0/16');
    const w = await firstWatchResult(c);
    expect(w).toEqual({ revision: 0, snapshot: true, leases: [], events: [] });
    const a = await c.acquire({ publicIp: A });
    // No client certificates, no identity: a client may act on any node's lease, as before TLS.
    const b = await c.acquire({ publicIp: B });
    expect((await c.renew(a)).subnet).toBe(a.subnet);
    expect((await c.list()).leases.map((l) => l.publicIp).sort()).toEqual([A, B]);
    const snap = (await firstWatchResult(c)) as WatchBatch;
    expect(snap.snapshot).toBe(true);
    expect(snap.leases.map((l) => l.subnet).sort()).toEqual([a.subnet, b.subnet].sort());
    await c.revoke(b);
    expect((await c.list()).leases.map((l) => l.publicIp)).toEqual([A]);
    expect(warnings.map((x) => x.msg)).toEqual([
      'client certificates are not verified (no --tls-client-ca-file): any client that can connect may acquire, renew or revoke any lease',
    ]);
  });

  it('a plaintext client is dropped; it stays unavailable (indistinguishable from a closing server) but says what to check', async () => {
    const { target } = await serve('tls');
    const c = client(target);
    const e = await rejection(c.config());
    expect(e.code).toBe('unavailable');
    expect(e.message).toBe(
      `control at ${target} closed the connection before gRPC started (shutting down, or serving TLS to this plaintext client: pass --control-cafile if it runs with --tls-cert-file)`,
    );
  });

  it('a client trusting another CA refuses the server: permission, naming the flags', async () => {
    const { target } = await serve('tls');
    const c = client(target, pki.otherCaCert);
    const e = await rejection(c.acquire({ publicIp: A }));
    expect(e.code).toBe('permission');
    expect(e.message).toBe(
      `TLS handshake with control at ${target} failed: the server's certificate is not trusted: unable to verify the first certificate; check --control-cafile/--control-certfile/--control-keyfile`,
    );
    // The watch path maps the same way (the daemon's first watch batch is its "connected" signal).
    const w = await firstWatchResult(c);
    expect(w).toMatchObject({ code: 'permission', message: e.message });
  });

  it('a TLS client refuses a plaintext server: permission, "does not speak TLS"', async () => {
    // A grpc-js plaintext server sometimes keeps the HTTP/2 session of a TLS client that hung up
    // mid-preface until forced (close() then takes its whole grace period): keep that short here.
    const { target } = await serve('plain', 200);
    const e = await rejection(client(target, pki.caCert).list());
    expect(e.code).toBe('permission');
    expect(e.message).toBe(
      `TLS handshake with control at ${target} failed: the server does not speak TLS (wrong version number: a weft control without --tls-cert-file?); check --control-cafile/--control-certfile/--control-keyfile`,
    );
  });

  it('a TLS client whose server is down stays unavailable (retried), not a fatal TLS error', async () => {
    const { server, target } = await serve('tls');
    await server.close();
    const e = await rejection(client(target, pki.caCert).config());
    expect(e.code).toBe('unavailable');
    expect(e.message).toContain('ECONNREFUSED');
  });
});

describe('control plane over mTLS (client certificates and per-node identity)', () => {
  it('a client without a certificate is refused: permission, "requires a client certificate"', async () => {
    const { target } = await serve('mtls');
    const c = client(target, pki.caCert);
    const e = await rejection(c.config());
    expect(e.code).toBe('permission');
    expect(e.message).toBe(
      `TLS handshake with control at ${target} failed: the server requires a client certificate and none was sent (tlsv13 alert certificate required); check --control-cafile/--control-certfile/--control-keyfile`,
    );
    expect(await firstWatchResult(c)).toMatchObject({ code: 'permission', message: e.message });
  });

  it('a client certificate from another CA is dropped: unavailable (Node sends no alert) with a hint', async () => {
    const { target } = await serve('mtls');
    const c = client(target, pki.caCert, pki.otherClient);
    const e = await rejection(c.acquire({ publicIp: A }));
    expect(e.code).toBe('unavailable');
    expect(e.message).toBe(
      `control at ${target} closed the connection before gRPC started (shutting down, or rejecting this client's certificate: check that --control-certfile/--control-keyfile are signed by its --tls-client-ca-file)`,
    );
  });

  it('a plaintext client is dropped like by a TLS-only server', async () => {
    const { target } = await serve('mtls');
    const e = await rejection(client(target).list());
    expect(e.code).toBe('unavailable');
    expect(e.message).toContain('pass --control-cafile');
  });

  it('node A acquires, renews and revokes its own lease and reads everything; the server does not warn', async () => {
    const { target, warnings } = await serve('mtls');
    const a = client(target, pki.caCert, pki.nodes['node-a']);
    expect((await a.config()).network).toBe('10.244.0.0/16');
    const lease = await a.acquire({ publicIp: A, backendData: { VtepMAC: '02:00:00:00:00:0b' } });
    expect(lease.publicIp).toBe(A);
    await new Promise((r) => setTimeout(r, 5));
    expect((await a.renew(lease)).expiration).toBeGreaterThan(lease.expiration);
    const bLease = await client(target, pki.caCert, pki.nodes['node-b']).acquire({ publicIp: B });
    // Reads are for every verified client: A sees B's lease, by List and by Watch.
    expect((await a.list()).leases.map((l) => l.publicIp).sort()).toEqual([A, B]);
    const snap = (await firstWatchResult(a)) as WatchBatch;
    expect(snap.leases.map((l) => l.subnet).sort()).toEqual([lease.subnet, bLease.subnet].sort());
    await a.revoke(lease);
    expect((await a.list()).leases.map((l) => l.publicIp)).toEqual([B]);
    expect(warnings).toEqual([]);
  });

  it("node A may not acquire as B, nor renew or revoke B's lease: PERMISSION_DENIED naming both", async () => {
    const { target, warnings } = await serve('mtls');
    const a = client(target, pki.caCert, pki.nodes['node-a']);
    const b = client(target, pki.caCert, pki.nodes['node-b']);
    const bLease = await b.acquire({ publicIp: B });
    const msg = `client certificate (CN=node-a, IP ${A}) may not act on a lease for ${B}`;
    for (const attempt of [a.acquire({ publicIp: B }), a.renew(bLease), a.revoke(bLease), a.revoke({ subnet: bLease.subnet, publicIp: B })]) {
      const e = await rejection(attempt);
      expect(e.code).toBe('permission');
      expect(e.message).toBe(msg);
    }
    // Naming its own IP does not help against B's subnet: the registry's ownership check follows.
    const own = await rejection(a.revoke({ subnet: bLease.subnet, publicIp: A }));
    expect(own.code).toBe('permission');
    expect(own.message).toBe(`lease ${bLease.subnet} belongs to ${B}, not ${A}`);
    const after = await b.list();
    expect(after.leases).toEqual([bLease]); // untouched, not even renewed
    expect(warnings.map((x) => x.msg)).toEqual(['lease action refused', 'lease action refused', 'lease action refused', 'lease action refused']);
    expect(warnings[0].obj).toMatchObject({ rpc: 'Acquire', identity: `client certificate (CN=node-a, IP ${A})`, publicIp: B });
  });

  it('with mTLS too, an oversized publicIp or backendData is INVALID_ARGUMENT before the identity check, and nothing quotes it whole', async () => {
    const { target, warnings } = await serve('mtls');
    const a = client(target, pki.caCert, pki.nodes['node-a']);
    const huge = await rejection(a.acquire({ publicIp: '1'.repeat(100_000) }));
    expect(huge.code).toBe('invalid');
    expect(huge.message).toMatch(/^publicIp is 100000 characters long/);
    const fat = await rejection(a.acquire({ publicIp: A, backendData: { VtepMAC: 'a'.repeat(4 * 1024 * 1024 - 4096) } }));
    expect(fat.code).toBe('invalid');
    expect(warnings).toEqual([]);
    // The connection is fine, and the node can still take its own lease.
    expect((await a.acquire({ publicIp: A })).publicIp).toBe(A);
  });

  it('an admin certificate (O=weft:admins) may act on any lease', async () => {
    const { target } = await serve('mtls');
    const b = client(target, pki.caCert, pki.nodes['node-b']);
    const admin = client(target, pki.caCert, pki.admin);
    const bLease = await b.acquire({ publicIp: B });
    expect((await admin.renew(bLease)).subnet).toBe(bLease.subnet);
    await admin.revoke(bLease);
    expect((await b.list()).leases).toEqual([]);
    expect((await admin.acquire({ publicIp: A })).publicIp).toBe(A);
  });
});

describe('weft control with TLS flags', () => {
  let work: string;
  let conf: string;
  beforeAll(async () => {
    await ensureBuilt();
    work = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-tls-cli-'));
    conf = path.join(work, 'net-conf.json');
    await fsp.writeFile(conf, JSON.stringify(NET_CONF));
  }, 180_000);
  afterAll(async () => {
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  const base = () => ['control', '--listen', '127.0.0.1:0', '--state-dir', path.join(work, 'state'), '--net-config-path', conf];

  it('bad flag combinations and files: one line, exit 1', async () => {
    const junk = path.join(work, 'junk.pem');
    await fsp.writeFile(junk, 'junk\n');
    const s = pki.server;
    const cases: [string[], string][] = [
      [['--tls-cert-file', s.cert], '--tls-cert-file needs --tls-key-file'],
      [['--tls-key-file', s.key], '--tls-key-file needs --tls-cert-file'],
      [['--tls-client-ca-file', pki.caCert], '--tls-client-ca-file needs --tls-cert-file and --tls-key-file (client certificates are only checked over TLS)'],
      [['--tls-cert-file', path.join(work, 'missing.pem'), '--tls-key-file', s.key], `cannot read --tls-cert-file ${path.join(work, 'missing.pem')}: ENOENT`],
      [['--tls-cert-file', junk, '--tls-key-file', s.key], `--tls-cert-file ${junk} holds no PEM certificate`],
      [['--tls-cert-file', s.cert, '--tls-key-file', pki.admin.key], `--tls-key-file ${pki.admin.key} is not the private key of --tls-cert-file ${s.cert}`],
      [['--tls-cert-file', s.cert, '--tls-key-file', s.key, '--tls-client-ca-file', junk], `--tls-client-ca-file ${junk} holds no PEM certificate`],
    ];
    for (const [flags, msg] of cases) {
      const r = spawnSync(process.execPath, [WEFT, ...base(), ...flags], { encoding: 'utf8', timeout: 20_000 });
      expect({ flags, code: r.status, stderr: r.stderr }).toEqual({ flags, code: 1, stderr: `weft control: ${msg}\n` });
    }
  });

  it('serves mTLS: a node with its certificate acquires, one without is refused', async () => {
    const child: ChildProcess = spawn(
      process.execPath,
      [WEFT, ...base(), '--tls-cert-file', pki.server.cert, '--tls-key-file', pki.server.key, '--tls-client-ca-file', pki.caCert],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    let out = '';
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`weft control not ready in 15 s; stdout: ${out} stderr: ${stderr}`)), 15_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        for (const line of out.split('\n')) {
          if (!line.includes('control plane ready')) continue;
          clearTimeout(timer);
          resolve(JSON.parse(line) as Record<string, unknown>);
        }
      });
      child.on('exit', (code) => reject(new Error(`weft control exited ${code}: ${stderr}`)));
    });
    expect(ready.tls).toBe('mutual');
    expect(out).not.toContain('any client that can connect');
    const target = `127.0.0.1:${ready.port as number}`;
    const lease = await client(target, pki.caCert, pki.nodes['node-a']).acquire({ publicIp: A });
    expect(lease.publicIp).toBe(A);
    expect((await rejection(client(target, pki.caCert, pki.nodes['node-b']).renew(lease))).code).toBe('permission');
    expect((await rejection(client(target, pki.caCert).list())).code).toBe('permission');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
