// `weft control --etcd-endpoints`: the gRPC control plane with its leases in etcd, so a daemon
// on `--control` and one (or flanneld) on `--etcd-endpoints` share one set of leases.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import { EtcdRegistry } from '../../src/control/etcd/registry';
import type { WatchBatch } from '../../src/control/registry';
import { freeLoopbackPort as freePort } from '../../src/lab/ports';
import { ensureBuilt } from '../support/build';
import { until } from '../support/until';
import { startEtcdCluster, type EtcdTestCluster } from '../support/etcd';
import { mustRun } from '../../src/lab/process';

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'weft.js');
const NET_CONF = { Network: '10.33.0.0/16', Backend: { Type: 'vxlan', VNI: 1 } };

let etcd: EtcdTestCluster;
let dir: string;
const children: ChildProcess[] = [];

function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'control', ...args], { cwd: ROOT, timeout: 20_000, env }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

/** Starts `weft control` on etcd and resolves with its address once it logs "control plane ready". */
async function startControl(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ child: ChildProcess; address: string; output: () => string }> {
  const port = await freePort();
  const child = spawn(process.execPath, [BIN, 'control', '--listen', `127.0.0.1:${port}`, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
  children.push(child);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`weft control not ready: ${out}`)), 15_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('control plane ready')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`weft control exited ${code}: ${out}`));
    });
  });
  return { child, address: `127.0.0.1:${port}`, output: () => out };
}

beforeAll(async () => {
  await ensureBuilt();
  etcd = await startEtcdCluster({ members: 1 });
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-control-etcd-'));
  await fsp.writeFile(path.join(dir, 'net-conf.json'), JSON.stringify(NET_CONF));
  await fsp.writeFile(path.join(dir, 'other.json'), JSON.stringify({ Network: '10.34.0.0/16' }));
}, 120_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await etcd?.stop();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

describe('weft control --etcd-endpoints', () => {
  it('serves leases that live in etcd: a gRPC client and a direct etcd client see the same ones', async () => {
    const prefix = '/weft-ctl/a';
    const ctl = await startControl([
      '--etcd-endpoints',
      etcd.endpoints.join(','),
      '--etcd-prefix',
      prefix,
      '--net-config-path',
      path.join(dir, 'net-conf.json'),
    ]);
    const grpc = new GrpcRegistry(ctl.address);
    const direct = new EtcdRegistry({ endpoints: etcd.endpoints, prefix });
    try {
      const batches: WatchBatch[] = [];
      const h = direct.watch(
        0,
        (b) => batches.push(b),
        () => undefined,
      );
      // Established first, so the grant below arrives as an event rather than in the snapshot.
      await until('the direct watch to open', () => batches.length > 0, 5000);
      const viaGrpc = await grpc.acquire({ publicIp: '192.0.2.10', backendData: { VNI: 1, VtepMAC: '0e:00:c0:00:02:0a' } });
      const viaEtcd = await direct.acquire({ publicIp: '192.0.2.11', backendData: { VNI: 1, VtepMAC: '0e:00:c0:00:02:0b' } });
      const fromGrpc = (await grpc.list()).leases.map((l) => `${l.subnet} ${l.publicIp}`).sort();
      const fromEtcd = (await direct.list()).leases.map((l) => `${l.subnet} ${l.publicIp}`).sort();
      expect(fromGrpc).toEqual([`${viaGrpc.subnet} 192.0.2.10`, `${viaEtcd.subnet} 192.0.2.11`].sort());
      expect(fromEtcd).toEqual(fromGrpc);
      // The config control was given is the one in etcd, for flanneld-style clients to read.
      expect((await direct.config()).network).toBe('10.33.0.0/16');
      // A direct etcd watcher hears about the lease granted over gRPC.
      await until(
        'the direct watcher to hear of the gRPC grant',
        () => batches.flatMap((b) => b.events).some((e) => e.type === 'added' && e.lease.subnet === viaGrpc.subnet),
        5000,
      );
      h.close();
      // And ownership holds across the two front doors.
      await expect(grpc.revoke({ subnet: viaEtcd.subnet, publicIp: '192.0.2.10' })).rejects.toMatchObject({ code: 'permission' });
    } finally {
      grpc.close();
      direct.close();
      ctl.child.kill('SIGTERM');
    }
  });

  it('without --net-config-path uses the config already in etcd', async () => {
    const ctl = await startControl(['--etcd-endpoints', etcd.endpoints[0], '--etcd-prefix', '/weft-ctl/a']);
    const grpc = new GrpcRegistry(ctl.address);
    try {
      expect((await grpc.config()).network).toBe('10.33.0.0/16');
    } finally {
      grpc.close();
      ctl.child.kill('SIGTERM');
    }
  });

  it('refuses, in one line, a net-conf that differs from etcd, a prefix with no config, --state-dir with etcd, and an unreachable etcd', async () => {
    const differ = await runCli([
      '--listen',
      '127.0.0.1:0',
      '--etcd-endpoints',
      etcd.endpoints[0],
      '--etcd-prefix',
      '/weft-ctl/a',
      '--net-config-path',
      path.join(dir, 'other.json'),
    ]);
    expect(differ.code).toBe(1);
    expect(differ.stderr).toMatch(/10\.33\.0\.0\/16[^\n]*10\.34\.0\.0\/16|10\.34\.0\.0\/16[^\n]*10\.33\.0\.0\/16/);
    const none = await runCli(['--listen', '127.0.0.1:0', '--etcd-endpoints', etcd.endpoints[0], '--etcd-prefix', '/weft-ctl/empty']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no network config at \/weft-ctl\/empty\/config/);
    const both = await runCli(['--listen', '127.0.0.1:0', '--etcd-endpoints', etcd.endpoints[0], '--state-dir', dir]);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/--state-dir and --etcd-endpoints/);
    const port = await freePort(); // nothing listens there
    const down = await runCli([
      '--listen',
      '127.0.0.1:0',
      '--etcd-endpoints',
      `http://127.0.0.1:${port}`,
      '--net-config-path',
      path.join(dir, 'net-conf.json'),
    ]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(new RegExp(`etcd http://127\\.0\\.0\\.1:${port}`));
    for (const r of [differ, none, both, down]) expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }, 60_000);
});

describe('weft control on an etcd with authentication enabled', () => {
  const PASSWORD = 'Sw0rdfish-etcd';
  let auth: EtcdTestCluster;
  let authDir: string;
  /** The environment without any WEFT_ETCD_* the machine running the tests may have set. */
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WEFT_ETCD_')));

  beforeAll(async () => {
    auth = await startEtcdCluster({ members: 1 });
    authDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-control-etcd-auth-'));
    const etcdctl = (...args: string[]) => mustRun('etcdctl', [...auth.etcdctlFlags, ...args], { timeoutMs: 10_000, env: { ...baseEnv, ETCDCTL_API: '3' } });
    // etcd's own recipe: a root user, then `auth enable` (which gives root the root role).
    await etcdctl('user', 'add', 'root', `--new-user-password=${PASSWORD}`);
    await etcdctl('auth', 'enable');
  }, 120_000);

  afterAll(async () => {
    await auth?.stop();
    if (authDir) await fsp.rm(authDir, { recursive: true, force: true });
  });

  const listen = ['--listen', '127.0.0.1:0'];
  const conf = () => ['--net-config-path', path.join(dir, 'net-conf.json')];

  it('refuses a password in the endpoint URL without printing it', async () => {
    const url = auth.endpoints[0].replace('http://', `http://root:${PASSWORD}@`);
    const r = await runCli([...listen, '--etcd-endpoints', url, ...conf()], baseEnv);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/has credentials in it; give the endpoint without them and the credentials with --etcd-username/);
    expect(r.stdout + r.stderr).not.toContain(PASSWORD);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }, 30_000);

  it('without credentials fails in one line naming the flags', async () => {
    const r = await runCli([...listen, '--etcd-endpoints', auth.endpoints[0], ...conf()], baseEnv);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/user name is empty \(etcd authentication: check --etcd-username/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }, 30_000);

  it('authenticates with --etcd-username and WEFT_ETCD_PASSWORD, or --etcd-password-file, and logs neither password', async () => {
    const fromEnv = await startControl(['--etcd-endpoints', auth.endpoints[0], '--etcd-username', 'root', ...conf()], {
      ...baseEnv,
      WEFT_ETCD_PASSWORD: PASSWORD,
    });
    const grpc = new GrpcRegistry(fromEnv.address);
    const direct = new EtcdRegistry({ endpoints: auth.endpoints, auth: { username: 'root', password: PASSWORD } });
    try {
      const lease = await grpc.acquire({ publicIp: '192.0.2.20', backendData: { VNI: 1, VtepMAC: '0e:00:c0:00:02:14' } });
      // The lease really is in the authenticated etcd, seen by a client of its own.
      expect((await direct.list()).leases.map((l) => l.subnet)).toContain(lease.subnet);
    } finally {
      grpc.close();
      direct.close();
      fromEnv.child.kill('SIGTERM');
    }
    const file = path.join(authDir, 'etcd-password');
    await fsp.writeFile(file, `${PASSWORD}\n`, { mode: 0o600 });
    const fromFile = await startControl(['--etcd-endpoints', auth.endpoints[0], '--etcd-username', 'root', '--etcd-password-file', file], baseEnv);
    const grpc2 = new GrpcRegistry(fromFile.address);
    try {
      expect((await grpc2.config()).network).toBe('10.33.0.0/16');
    } finally {
      grpc2.close();
      fromFile.child.kill('SIGTERM');
    }
    expect(fromEnv.output()).not.toContain(PASSWORD);
    expect(fromFile.output()).not.toContain(PASSWORD);

    // A wrong password is etcd's refusal, with the flags that fix it; a password file anyone can
    // read is refused before etcd is asked.
    const wrong = await runCli([...listen, '--etcd-endpoints', auth.endpoints[0], '--etcd-username', 'root'], { ...baseEnv, WEFT_ETCD_PASSWORD: 'not-it' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/authentication failed, invalid user ID or password \(etcd authentication: check --etcd-username/);
    expect(wrong.stderr).not.toContain('not-it');
    await fsp.chmod(file, 0o644);
    const open = await runCli([...listen, '--etcd-endpoints', auth.endpoints[0], '--etcd-username', 'root', '--etcd-password-file', file], baseEnv);
    expect(open.code).toBe(1);
    expect(open.stderr.trim()).toBe(
      `weft control: --etcd-password-file ${file} has mode 0644: password files must not be readable or writable by group or others; run chmod 600 ${file}`,
    );
  }, 60_000);
});
