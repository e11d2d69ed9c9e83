// `weft daemon` refuses bad flags with one line naming the problem and exit code 1, before it
// touches the machine (no TUN, no socket, no lease).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../support/build';

const WEFT = join(__dirname, '..', '..', 'bin', 'weft.js');

function weft(args: string[]): { code: number; stderr: string } {
  const r = spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status ?? -1, stderr: r.stderr ?? '' };
}

describe('weft daemon flag errors', () => {
  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);

  const cases: [string[], RegExp][] = [
    [['daemon'], /--control ADDR:PORT or --etcd-endpoints URLS is required/],
    [['daemon', '--control', '127.0.0.1:7000', '--etcd-endpoints', 'http://127.0.0.1:2379'], /give --control or --etcd-endpoints, not both/],
    [['daemon', '--etcd-endpoints', '127.0.0.1:2379'], /--etcd-endpoints: "127\.0\.0\.1:2379" (is not a URL|must be http\(s\):\/\/HOST:PORT)/],
    [['daemon', '--etcd-endpoints', 'http://127.0.0.1'], /must be http\(s\):\/\/HOST:PORT/],
    [['daemon', '--etcd-prefix', '/x', '--control', '127.0.0.1:7000'], /--etcd-prefix needs --etcd-endpoints/],
    [['daemon', '--control', '127.0.0.1:7000', '--lease-ttl', '60'], /--lease-ttl applies to --etcd-endpoints only/],
    [['daemon', '--etcd-endpoints', 'http://127.0.0.1:2379', '--lease-ttl', '0'], /--lease-ttl "0" must be a positive number of seconds/],
    [['daemon', '--etcd-endpoints', 'http://127.0.0.1:2379', '--control-cafile', '/x'], /--control-cafile applies to --control/],
    [['daemon', '--etcd-endpoints', 'http://127.0.0.1:2379', '--etcd-cafile', '/nonexistent/ca.pem', '--public-ip', '127.0.0.1'], /--etcd-cafile/],
    [['daemon', '--control', '127.0.0.1'], /--control: "127\.0\.0\.1" is not ADDR:PORT/],
    [['daemon', '--control', '127.0.0.1:7000'], /--public-ip is required/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '10.0.0.300'], /invalid IPv4 address "10\.0\.0\.300"/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--healthz-port', '70000'], /--healthz-port: "70000" is not a port number/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--tun-name', 'a-name-far-too-long'], /--tun-name/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--log-level', 'loud'], /--log-level/],
    [['daemon', '--frobnicate'], /Unknown option '--frobnicate'/],
  ];
  it.each(cases)('weft %j', (args, msg) => {
    const r = weft(args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('refuses credentials in --etcd-endpoints without printing the password', () => {
    const r = weft(['daemon', '--etcd-endpoints', 'http://root:Pa55-w0rd@127.0.0.1:2379', '--public-ip', '127.0.0.1', '--healthz-port', '0']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--etcd-endpoints: etcd endpoint "http:\/\/\*\*\*@127\.0\.0\.1:2379" has credentials in it/);
    expect(r.stderr).not.toContain('Pa55-w0rd');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it.skipIf(process.getuid?.() !== 0)('names a public IP that no interface holds', () => {
    // 192.0.2.0/24 is TEST-NET-1: never assigned here, and nothing is sent to it.
    const r = weft(['daemon', '--control', '127.0.0.1:1', '--public-ip', '192.0.2.77', '--healthz-port', '0']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--public-ip 192\.0\.2\.77 is not assigned to any interface/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
