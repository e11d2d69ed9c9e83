// Crash safety of `weft control`: the compiled CLI runs as a child process, gets SIGKILLed —
// between calls and in the middle of a burst of acquires — and is restarted on the same state
// dir. Every acquire that returned success must still be there with the same subnet, and no
// subnet may ever be granted to two nodes. Loopback only; no root needed.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GrpcRegistry } from '../../src/control/client';
import type { Lease } from '../../src/control/registry';
import { formatIpv4 } from '../../src/route/address';
import { ensureBuilt } from '../support/build';

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'weft.js');

let dir: string;
const children = new Set<ChildProcess>();
const clients = new Set<GrpcRegistry>();

beforeAll(async () => {
  await ensureBuilt();
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-sigkill-'));
  await fsp.writeFile(path.join(dir, 'net-conf.json'), JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } }));
});

afterEach(() => {
  for (const c of clients) c.close();
  clients.clear();
  for (const ch of children) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGKILL');
  children.clear();
});

afterAll(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

interface Running {
  child: ChildProcess;
  client: GrpcRegistry;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startControl(): Promise<Running> {
  const child = spawn(
    process.execPath,
    [BIN, 'control', '--listen', '127.0.0.1:0', '--state-dir', path.join(dir, 'state'), '--net-config-path', path.join(dir, 'net-conf.json')],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`weft control not ready within 20s; stderr: ${stderr}`)), 20_000);
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      let rec: { msg?: string; port?: number };
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (rec.msg === 'control plane ready' && typeof rec.port === 'number') {
        clearTimeout(timer);
        resolve(rec.port);
      }
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`weft control exited early (code ${code}, signal ${signal}); stderr: ${stderr}`));
    });
  });
  const client = new GrpcRegistry(`127.0.0.1:${port}`, { deadlineMs: 5000 });
  clients.add(client);
  return { child, client, exited };
}

async function kill(r: Running): Promise<void> {
  r.child.kill('SIGKILL');
  const { signal } = await r.exited;
  expect(signal).toBe('SIGKILL');
  r.client.close();
  clients.delete(r.client);
}

/** Every lease that was confirmed must be present, with the same subnet, and subnets unique. */
function checkState(confirmed: Map<string, string>, leases: Lease[]): void {
  const byIp = new Map(leases.map((l) => [l.publicIp, l.subnet]));
  for (const [ip, subnet] of confirmed) expect(byIp.get(ip), `lease of ${ip}`).toBe(subnet);
  const subnets = leases.map((l) => l.subnet);
  expect(new Set(subnets).size).toBe(subnets.length);
  const ips = leases.map((l) => l.publicIp);
  expect(new Set(ips).size).toBe(ips.length);
}

describe('weft control survives SIGKILL', () => {
  it('keeps every confirmed lease across kills, including mid-burst', async () => {
    const confirmed = new Map<string, string>(); // publicIp → subnet
    let nextHost = 1;
    const ip = () => formatIpv4(0xc6120100 + nextHost++); // 198.18.1.x (RFC 2544 benchmarking range)

    // Quiet kill: leases granted one by one, then SIGKILL.
    let run = await startControl();
    for (let i = 0; i < 8; i++) {
      const l = await run.client.acquire({ publicIp: ip(), backendData: { n: i } });
      confirmed.set(l.publicIp, l.subnet);
    }
    await kill(run);

    // Kill while a burst of acquires is in flight, at different points of the burst.
    const killAfter = [0, 1, 5, 15];
    for (const after of killAfter) {
      run = await startControl();
      checkState(confirmed, (await run.client.list()).leases);
      const burst = Array.from({ length: 40 }, () => ip());
      let succeeded = 0;
      let killed: Promise<void> | undefined;
      const r = run;
      const triggerKill = () => {
        killed ??= kill(r);
      };
      if (after === 0) setImmediate(triggerKill);
      const results = await Promise.allSettled(
        burst.map((p) =>
          r.client.acquire({ publicIp: p }).then((l) => {
            // Record before anything else runs: this reply is the promise we must keep.
            confirmed.set(l.publicIp, l.subnet);
            if (++succeeded === after) triggerKill();
            return l;
          }),
        ),
      );
      triggerKill();
      await killed;
      const failures = results.filter((x) => x.status === 'rejected').map((x) => (x as PromiseRejectedResult).reason as Error & { code?: string });
      for (const f of failures) expect(f.code, f.message).toBe('unavailable');
      // The kill must really have interrupted the burst for the later rounds to mean anything.
      if (after > 0) expect(succeeded).toBeGreaterThanOrEqual(after);
    }

    // Final restart: everything confirmed is there; each node gets its own subnet back.
    run = await startControl();
    const { leases } = await run.client.list();
    checkState(confirmed, leases);
    for (const [p, subnet] of [...confirmed].slice(0, 10)) {
      expect((await run.client.acquire({ publicIp: p })).subnet).toBe(subnet);
    }
    // And new nodes never get a subnet that is already leased.
    const taken = new Set(leases.map((l) => l.subnet));
    for (let i = 0; i < 5; i++) {
      const l = await run.client.acquire({ publicIp: ip() });
      expect(taken.has(l.subnet)).toBe(false);
      taken.add(l.subnet);
    }
    expect(confirmed.size).toBeGreaterThan(8);
    await kill(run);
  });

  it('a graceful SIGTERM exits 0 and keeps state', async () => {
    const run = await startControl();
    const before = await run.client.list();
    run.child.kill('SIGTERM');
    const { code, signal } = await run.exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    const again = await startControl();
    expect((await again.client.list()).leases).toEqual(before.leases);
    await kill(again);
  });
});

describe('weft control state-dir lock', () => {
  it('a second weft control on the same state dir refuses to start, naming the first; after a SIGKILL the next one takes over', async () => {
    const first = await startControl();
    const second = spawn(
      process.execPath,
      [BIN, 'control', '--listen', '127.0.0.1:0', '--state-dir', path.join(dir, 'state'), '--net-config-path', path.join(dir, 'net-conf.json')],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    children.add(second);
    let stderr = '';
    second.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((res) => second.once('exit', (c) => res(c)));
    expect(code).toBe(1);
    expect(stderr).toMatch(new RegExp(`in use by pid ${first.child.pid}`));
    expect(stderr.trim().split('\n')).toHaveLength(1);
    await kill(first);
    const again = await startControl();
    await kill(again);
  });
});

describe('weft control flag and config errors', () => {
  function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [BIN, 'control', ...args], { cwd: ROOT, timeout: 15_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
      });
    });
  }
  const base = () => ['--listen', '127.0.0.1:0', '--state-dir', path.join(dir, 'state-errors')];

  it('missing net-conf file: one line, exit 1', async () => {
    const r = await runCli([...base(), '--net-config-path', path.join(dir, 'absent.json')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^weft control: cannot read --net-config-path .*absent\.json: ENOENT\n$/);
  });

  it('bad net-conf: the field is named, exit 1', async () => {
    const f = path.join(dir, 'bad.json');
    await fsp.writeFile(f, JSON.stringify({ Network: '10.244.0.0/16', SubnetMin: '10.245.1.0' }));
    const r = await runCli([...base(), '--net-config-path', f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('weft control: net-conf.json: SubnetMin 10.245.1.0 is outside Network 10.244.0.0/16\n');
  });

  it('unknown flag and missing flags: one line, exit 1', async () => {
    const unknown = await runCli(['--bogus']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^weft control: .*'--bogus'.*\n$/);
    const missing = await runCli(['--listen', '127.0.0.1:0']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('weft control: --state-dir is required (see weft control --help)\n');
  });

  it('a state dir that cannot be made (under /proc, through a file): one line naming it and why, exit 1, no hang', async () => {
    const file = path.join(dir, 'plain-file');
    await fsp.writeFile(file, 'x');
    const conf = ['--net-config-path', path.join(dir, 'net-conf.json')];
    // Node's recursive mkdir spun forever at 100% CPU on procfs's ENOENT; runCli's 15 s timeout
    // would kill it and report code null.
    const proc = await runCli(['--listen', '127.0.0.1:0', '--state-dir', '/proc/weft-control-test/state', ...conf]);
    expect(proc.code).toBe(1);
    expect(proc.stderr).toBe(
      'weft control: state dir /proc/weft-control-test/state: cannot create /proc/weft-control-test: ENOENT although /proc exists ' +
        '(a filesystem that does not allow new directories, such as /proc or /sys)\n',
    );
    const through = await runCli(['--listen', '127.0.0.1:0', '--state-dir', path.join(file, 'state'), ...conf]);
    expect(through.code).toBe(1);
    expect(through.stderr).toMatch(/^weft control: state dir .*plain-file\/state: cannot create .*plain-file\/state: ENOTDIR .*\n$/);
  });

  it('a corrupt state file refuses to start', async () => {
    const sd = path.join(dir, 'state-corrupt');
    await fsp.mkdir(sd, { recursive: true });
    await fsp.writeFile(path.join(sd, 'leases.json'), '{"version":1,"revision":4,"leases":[');
    const r = await runCli(['--listen', '127.0.0.1:0', '--state-dir', sd, '--net-config-path', path.join(dir, 'net-conf.json')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^weft control: state file .*leases\.json is corrupt .*refusing to start.*\n$/);
  });
});
