// `weft control reserve|unreserve|reservations` and `--reserve`, run as an operator would: a real
// `weft control` in a network namespace this test makes (loopback plus a veth pair, one end holding
// 192.0.2.1), the CLI in the same namespace. The reservation calls are served to 127.0.0.1 and
// refused, in one line, to the same host's non-loopback address; every refusal is one line;
// reservations outlive a restart; a node acquiring over gRPC gets its reserved subnet.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NEVER_EXPIRES } from '../../src/control/registry';
import { nsRun } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { until } from '../support/until';

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'weft.js');
const NS = `weft-t-res-${randomBytes(4).toString('hex')}`;
const NET_CONF = { Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.9.0', Backend: { Type: 'vxlan' } };
const LOOPBACK = '127.0.0.1:7000';
const OTHER = '192.0.2.1:7000';

let dir: string;
let control: ChildProcess | undefined;
let controlLog = '';

const cli = (...args: string[]) => nsRun(NS, [process.execPath, BIN, 'control', ...args], { timeoutMs: 15_000 });

async function startControl(...extra: string[]): Promise<void> {
  controlLog = '';
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      NS,
      process.execPath,
      BIN,
      'control',
      '--listen',
      `0.0.0.0:7000`,
      '--state-dir',
      path.join(dir, 'state'),
      '--net-config-path',
      path.join(dir, 'net-conf.json'),
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  control = child;
  child.stdout.on('data', (d: Buffer) => (controlLog += d.toString()));
  child.stderr.on('data', (d: Buffer) => (controlLog += d.toString()));
  await until('weft control ready', () => controlLog.includes('control plane ready') || child.exitCode !== null, 15_000);
  if (child.exitCode !== null) throw new Error(`weft control exited: ${controlLog}`);
}

async function stopControl(): Promise<void> {
  const c = control;
  control = undefined;
  if (!c || c.exitCode !== null) return;
  const done = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await done;
}

/** A node acquiring through the gRPC client, run inside the namespace (prints the lease as JSON). */
async function acquire(publicIp: string): Promise<{ subnet: string; expiration: number }> {
  const js = `
    const { GrpcRegistry } = require(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'control', 'client.js'))});
    const reg = new GrpcRegistry(${JSON.stringify(OTHER)});
    reg.acquire({ publicIp: process.argv[1] }).then(
      (l) => { process.stdout.write(JSON.stringify(l)); reg.close(); },
      (e) => { process.stderr.write(e.message); reg.close(); process.exitCode = 1; });`;
  const r = await nsRun(NS, [process.execPath, '-e', js, publicIp], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`acquire ${publicIp}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { subnet: string; expiration: number };
}

function oneLine(r: { code: number; stderr: string }, re: RegExp): void {
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toMatch(re);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
}

describe.skipIf(process.getuid?.() !== 0)('weft control reservations', () => {
  beforeAll(async () => {
    await ensureBuilt();
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-reservations-'));
    await fsp.writeFile(path.join(dir, 'net-conf.json'), JSON.stringify(NET_CONF));
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, '-batch', '-'], {
      input: ['link set lo up', 'link add va type veth peer name vb', 'addr add 192.0.2.1/24 dev va', 'link set va up', 'link set vb up'].join('\n') + '\n',
    });
  }, 200_000);

  afterAll(async () => {
    await stopControl();
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      // never created
    }
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('--reserve at startup, then reserve, list and unreserve from the loopback address; a node gets its reserved subnet, which never expires', async () => {
    await startControl('--reserve', '10.244.5.0/24=192.168.77.15');
    expect((await cli('reservations', '--control', LOOPBACK)).stdout).toBe('10.244.5.0/24 192.168.77.15\n');
    const r = await cli('reserve', '--control', LOOPBACK, '10.244.6.0/24', '192.168.77.16');
    expect([r.code, r.stdout]).toEqual([0, 'reserved 10.244.6.0/24 for 192.168.77.16\n']);
    expect((await cli('reservations', '--control', LOOPBACK)).stdout).toBe('10.244.5.0/24 192.168.77.15\n10.244.6.0/24 192.168.77.16\n');

    // Node calls are served on every address; the node with the reserved IP gets its subnet.
    expect(await acquire('192.168.77.16')).toMatchObject({ subnet: '10.244.6.0/24', expiration: NEVER_EXPIRES });

    const u = await cli('unreserve', '--control', LOOPBACK, '10.244.5.0/24');
    expect([u.code, u.stdout]).toEqual([0, 'unreserved 10.244.5.0/24\n']);
    expect((await cli('reservations', '--control', LOOPBACK)).stdout).toBe('10.244.6.0/24 192.168.77.16\n');

    // Kept in the state file: still there after a restart.
    await stopControl();
    await startControl();
    expect((await cli('reservations', '--control', LOOPBACK)).stdout).toBe('10.244.6.0/24 192.168.77.16\n');
  }, 60_000);

  it('refuses the reservation calls from a non-loopback address, in one line, and changes nothing', async () => {
    if (!control) await startControl();
    for (const args of [
      ['reserve', '--control', OTHER, '10.244.7.0/24', '192.168.77.17'],
      ['unreserve', '--control', OTHER, '10.244.6.0/24'],
      ['reservations', '--control', OTHER],
    ]) {
      oneLine(await cli(...args), /^weft control: \S+ is served only to clients on this host's loopback address/);
    }
    expect((await cli('reservations', '--control', LOOPBACK)).stdout).toBe('10.244.6.0/24 192.168.77.16\n');
  }, 60_000);

  it('refuses bad input in one line each: outside the range, malformed, held by another node, unknown, wrong arguments', async () => {
    if (!control) await startControl();
    const held = await acquire('192.168.77.20');
    const cases: Array<[string[], RegExp]> = [
      [['reserve', '--control', LOOPBACK, '10.244.200.0/24', '192.168.77.17'], /^weft control: subnet 10\.244\.200\.0\/24 is not one the network hands out/],
      [['reserve', '--control', LOOPBACK, '10.244.6.0/23', '192.168.77.17'], /is not one the network hands out/],
      [['reserve', '--control', LOOPBACK, 'ten', '192.168.77.17'], /^weft control: subnet "ten" is not a CIDR/],
      [['reserve', '--control', LOOPBACK, '10.244.7.0/24', '192.168.77'], /^weft control: publicIp "192\.168\.77" is not an IPv4 address$/],
      [['reserve', '--control', LOOPBACK, held.subnet, '192.168.77.17'], /is leased to 192\.168\.77\.20/],
      [['reserve', '--control', LOOPBACK, '10.244.7.0/24', 'x'.repeat(5000)], /^weft control: publicIp is 5000 characters long/],
      [['unreserve', '--control', LOOPBACK, '10.244.8.0/24'], /^weft control: subnet 10\.244\.8\.0\/24 is not reserved$/],
      [['reserve', '--control', LOOPBACK, '10.244.7.0/24'], /^weft control: reserve takes SUBNET PUBLIC_IP, got "10\.244\.7\.0\/24"$/],
      [['reservations', '--control', LOOPBACK, 'extra'], /^weft control: reservations takes no arguments, got "extra"$/],
      [['reserve', '10.244.7.0/24', '192.168.77.17'], /^weft control: --control is required/],
    ];
    for (const [args, re] of cases) oneLine(await cli(...args), re);
    expect((await cli('reservations', '--control', LOOPBACK)).stdout).toBe('10.244.6.0/24 192.168.77.16\n');
  }, 60_000);

  it('--reserve that cannot be kept stops weft control in one line naming it; --reserve with etcd is refused', async () => {
    await stopControl();
    const base = ['control', '--listen', '127.0.0.1:0', '--state-dir', path.join(dir, 'state2'), '--net-config-path', path.join(dir, 'net-conf.json')];
    const bad = await nsRun(NS, [process.execPath, BIN, ...base, '--reserve', '10.244.99.0/24=192.168.77.1'], { timeoutMs: 15_000 });
    oneLine(bad, /^weft control: --reserve 10\.244\.99\.0\/24=192\.168\.77\.1: subnet 10\.244\.99\.0\/24 is not one the network hands out/);
    const form = await nsRun(NS, [process.execPath, BIN, ...base, '--reserve', '10.244.7.0/24'], { timeoutMs: 15_000 });
    oneLine(form, /^weft control: --reserve "10\.244\.7\.0\/24" must be SUBNET=PUBLIC_IP/);
    const etcd = await nsRun(
      NS,
      [process.execPath, BIN, 'control', '--listen', '127.0.0.1:0', '--etcd-endpoints', 'http://127.0.0.1:1', '--reserve', '10.244.7.0/24=192.168.77.1'],
      { timeoutMs: 15_000 },
    );
    oneLine(etcd, /^weft control: --reserve keeps reservations in --state-dir; on etcd/);
  }, 60_000);
});
