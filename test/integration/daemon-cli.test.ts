// `weft daemon` refuses bad flags with one line naming the problem and exit code 1, before it
// touches the machine (no TUN, no socket, no lease); and where its health server listens.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { addNs, deleteNs, ipBatch } from '../../src/lab/netns';
import { probe } from '../../src/lab/probe';
import { waitExit } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

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
    [['daemon', '--control', '127.0.0.1:7000', '--iface-can-reach', '10.0.0.300'], /--iface-can-reach: "10\.0\.0\.300" is not an IPv4 address/],
    [['daemon', '--control', '127.0.0.1:7000', '--iface', 'eth0', '--iface='], /--iface is empty; give an interface name or address/],
    [['daemon', '--control', '127.0.0.1:7000', '--iface-regex', ''], /--iface-regex is empty; give a regular expression/],
    [['daemon', '--control', '127.0.0.1:7000', '--ip-masq=maybe'], /--ip-masq: "maybe" is not a boolean \(true or false\)/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '10.0.0.300'], /invalid IPv4 address "10\.0\.0\.300"/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--healthz-port', '70000'], /--healthz-port: "70000" is not a port number/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--tun-name', 'a-name-far-too-long'], /--tun-name/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--log-level', 'loud'], /--log-level/],
    [
      ['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--iptables-resync', '0'],
      /--iptables-resync: "0" is not a whole number of seconds in 1\.\.86400/,
    ],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ip', '127.0.0.1', '--iptables-resync', '5s'], /--iptables-resync: "5s" is not a whole number/],
    [['daemon', '--frobnicate'], /Unknown option '--frobnicate'/],
    // flanneld's flags weft does not implement: refused saying why, not taken without effect.
    [['daemon', '--control', '127.0.0.1:7000', '--kube-subnet-mgr'], /--kube-subnet-mgr: weft has no Kubernetes subnet manager/],
    [['daemon', '--control', '127.0.0.1:7000', '--kubeconfig-file', '/etc/k.conf'], /--kubeconfig-file: only for --kube-subnet-mgr/],
    [['daemon', '--control', '127.0.0.1:7000', '--public-ipv6', '2001:db8::1'], /--public-ipv6: weft is IPv4-only/],
    [['daemon', '--control', '127.0.0.1:7000', '--ip-blackhole-route'], /--ip-blackhole-route: not implemented/],
    [['daemon', '--control', '127.0.0.1:7000', '-v=2'], /--v: klog verbosity; .* use --log-level/],
    [
      ['daemon', '--control', '127.0.0.1:7000', '--subnet-lease-renew-margin', '1440'],
      /--subnet-lease-renew-margin: "1440" is not a whole number of minutes in 1\.\.1439/,
    ],
    [['daemon', '--control', '127.0.0.1:7000', '--renew-margin', '60', '--subnet-lease-renew-margin', '1'], /not both/],
  ];
  it.each(cases)('weft %j', (args, msg) => {
    const r = weft(args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it("weft --version and weft daemon --version (-version, as flanneld) print package.json's version and exit 0", () => {
    const { version } = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    for (const args of [['--version'], ['daemon', '--version'], ['daemon', '-version'], ['daemon', '--control', '127.0.0.1:1', '--version']]) {
      const r = spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: 20_000 });
      expect([r.status, r.stdout, r.stderr], args.join(' ')).toEqual([0, `${version}\n`, '']);
    }
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

// In a namespace of its own (a veth pair, one end holding TEST-NET-1's 192.0.2.1 as the public IP),
// so port 9090 is free and the only non-loopback address is the daemon's. The daemon's control
// address answers nothing: the health server is up before the first lease attempt, and that is
// all this needs.
describe('weft daemon health server address', () => {
  const PUBLIC_IP = '192.0.2.1';
  let ns: string | undefined;
  let dir: string | undefined;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);

  afterEach(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      if (child.pid) await waitExit([child.pid], 5000);
    }
    child = undefined;
    if (ns) await deleteNs(ns);
    ns = undefined;
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  /** /healthz on loopback and on the public IP, asked from inside the daemon's namespace. */
  async function reach(extra: string[]): Promise<{ loopback: boolean; publicIp: boolean }> {
    ns = `${uniquePrefix('hz')}n1`;
    dir = await fsp.mkdtemp(join(os.tmpdir(), 'weft-healthz-'));
    await addNs(ns);
    await ipBatch(ns, ['link add v0 type veth peer name v1', `addr add ${PUBLIC_IP}/24 dev v0`, 'link set v1 up', 'link set v0 up']);
    const argv = ['netns', 'exec', ns, process.execPath, WEFT, 'daemon', '--control', '127.0.0.1:1', '--public-ip', PUBLIC_IP];
    argv.push('--subnet-file', join(dir, 'subnet.env'), '--healthz-port', '9090', ...extra);
    child = spawn('ip', argv, { stdio: 'ignore' });
    const spec = { mode: 'http' as const, untilOk: true, deadlineMs: 15_000, intervalMs: 100, perTryTimeoutMs: 1000 };
    const up = await probe(ns, { ...spec, targets: ['http://127.0.0.1:9090/healthz', `http://${PUBLIC_IP}:9090/healthz`] });
    expect(
      up.some((r) => r.ok),
      `the health server never answered: ${JSON.stringify(up)}`,
    ).toBe(true);
    const [lo] = await probe(ns, { ...spec, untilOk: false, deadlineMs: 0, targets: ['http://127.0.0.1:9090/healthz'] });
    const [pub] = await probe(ns, { ...spec, untilOk: false, deadlineMs: 0, targets: [`http://${PUBLIC_IP}:9090/healthz`] });
    return { loopback: lo.ok, publicIp: pub.ok };
  }

  it('listens on 127.0.0.1 only by default: /status is not served to the network', async () => {
    expect(await reach([])).toEqual({ loopback: true, publicIp: false });
  }, 60_000);

  it('listens where --healthz-ip says', async () => {
    expect(await reach(['--healthz-ip', '0.0.0.0'])).toEqual({ loopback: true, publicIp: true });
  }, 60_000);

  it('--healthz-ip PUBLIC_IP: only there', async () => {
    expect(await reach(['--healthz-ip', PUBLIC_IP])).toEqual({ loopback: false, publicIp: true });
  }, 60_000);
});
