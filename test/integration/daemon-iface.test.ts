// The real `weft daemon` (bin/weft.js) finding its interface and address as flanneld does, in a
// namespace of its own with three veth links d0-d2 (192.0.2.1, 198.51.100.1 + .2, 203.0.113.1:
// TEST-NET-1..3; their peers p0-p2 up beside them) and a default route via d2, against a
// `weft control` in the same namespace: with no --public-ip, with each selector, and from
// FLANNELD_* variables. The daemon must become ready (lease acquired for the address it found,
// TUN up, socket bound), and its /status says what it chose. Then, in a second namespace with
// the same links and no default route, every selector that matches nothing is one line and exit
// code 1, before the daemon contacts anything.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addNs, deleteNs, ipBatch } from '../../src/lab/netns';
import { probe } from '../../src/lab/probe';
import { mustNsRun, waitExit } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

const WEFT = join(__dirname, '..', '..', 'bin', 'weft.js');
const LINKS = [
  'link set lo up',
  'link add d0 type veth peer name p0',
  'link add d1 type veth peer name p1',
  'link add d2 type veth peer name p2',
  'addr add 192.0.2.1/24 dev d0',
  'addr add 198.51.100.1/24 dev d1',
  'addr add 198.51.100.2/24 dev d1',
  'addr add 203.0.113.1/24 dev d2',
  'link set d0 up',
  'link set p0 up',
  'link set d1 up',
  'link set p1 up',
  'link set d2 up',
  'link set p2 up',
];
const CONTROL_PORT = 7000;
const HEALTHZ = 'http://127.0.0.1:9090';

// Only the variables a case sets: the test runner's own environment must not choose for it.
const baseEnv = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FLANNELD_')));

interface Status {
  publicIp: string;
  iface: string;
  underlayIp: string;
  ready: boolean;
  lease?: { publicIp: string; subnet: string };
}

const children: ChildProcess[] = [];
async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    if (child.pid && (await waitExit([child.pid], 5000)).length > 0) child.kill('SIGKILL');
  }
}

describe('weft daemon interface discovery (netns, real CLI)', () => {
  const prefix = uniquePrefix('if');
  const ns = `${prefix}a`;
  const bare = `${prefix}b`;
  let dir = '';
  let control: ChildProcess | undefined;
  let caseNo = 0;

  beforeAll(async () => {
    await ensureBuilt();
    dir = await fsp.mkdtemp(join(os.tmpdir(), 'weft-iface-'));
    await addNs(ns);
    await ipBatch(ns, [...LINKS, 'route add default via 203.0.113.254 dev d2']);
    await addNs(bare);
    await ipBatch(bare, LINKS);
    const netConf = join(dir, 'net-conf.json');
    await fsp.writeFile(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } }));
    const argv = ['netns', 'exec', ns, process.execPath, WEFT, 'control', '--listen', `127.0.0.1:${CONTROL_PORT}`];
    argv.push('--state-dir', join(dir, 'control'), '--net-config-path', netConf, '--log-level', 'warn');
    control = spawn('ip', argv, { stdio: 'ignore' });
    children.push(control);
  }, 180_000);

  afterAll(async () => {
    for (const c of children.splice(0)) await kill(c);
    for (const n of [ns, bare]) await deleteNs(n).catch(() => undefined);
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  /** Runs the daemon in `ns` until ready, returns its /status and subnet.env; always stops it. */
  async function runDaemon(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: Status; subnetEnv: string; udp: string }> {
    const subnetFile = join(dir, `subnet-${++caseNo}.env`);
    const argv = ['netns', 'exec', ns, process.execPath, WEFT, 'daemon', '--control', `127.0.0.1:${CONTROL_PORT}`];
    argv.push('--subnet-file', subnetFile, '--healthz-port', '9090', '--log-level', 'warn', ...args);
    let stderr = '';
    const child = spawn('ip', argv, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...baseEnv(), ...env } });
    children.push(child);
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const spec = { mode: 'http' as const, untilOk: true, deadlineMs: 20_000, intervalMs: 100, perTryTimeoutMs: 1000 };
      const [ready] = await probe(ns, { ...spec, targets: [`${HEALTHZ}/readyz`] });
      expect(ready!.ok, `daemon ${args.join(' ')} never ready: ${ready!.body || ready!.error}; stderr: ${stderr}`).toBe(true);
      const [st] = await probe(ns, { ...spec, targets: [`${HEALTHZ}/status`] });
      const udp = (await mustNsRun(ns, ['ss', '-Hnlu'])).stdout;
      return { status: JSON.parse(st!.body) as Status, subnetEnv: readFileSync(subnetFile, 'utf8'), udp };
    } finally {
      await kill(child);
    }
  }

  const finds: [string, string[], NodeJS.ProcessEnv, string, string][] = [
    ['no flags at all: the default route', [], {}, 'd2', '203.0.113.1'],
    ['--iface NAME: its first address', ['--iface', 'd1'], {}, 'd1', '198.51.100.1'],
    ['--iface ADDR: that address', ['--iface', '198.51.100.2'], {}, 'd1', '198.51.100.2'],
    ['repeated --iface, the first missing', ['--iface', 'nosuch0', '--iface', '10.9.9.9', '--iface', 'd0'], {}, 'd0', '192.0.2.1'],
    ['--iface-regex matching an address', ['--iface-regex', '^d9', '--iface-regex', '^198\\.51\\.100\\.2$'], {}, 'd1', '198.51.100.2'],
    ['--iface-regex matching a name', ['-iface-regex=^d0$'], {}, 'd0', '192.0.2.1'],
    ['--iface-can-reach', ['--iface-can-reach', '192.0.2.200'], {}, 'd0', '192.0.2.1'],
    ['FLANNELD_IFACE', [], { FLANNELD_IFACE: 'd1' }, 'd1', '198.51.100.1'],
    [
      'FLANNELD_IFACE_REGEX, the command line winning over FLANNELD_IFACE',
      ['--iface', 'd0'],
      { FLANNELD_IFACE: 'd1', FLANNELD_IFACE_REGEX: '^d2$' },
      'd0',
      '192.0.2.1',
    ],
  ];
  it.each(finds)(
    '%s',
    async (_name, args, env, iface, addr) => {
      const { status, udp } = await runDaemon(args, env);
      expect({ iface: status.iface, underlayIp: status.underlayIp, publicIp: status.publicIp, leaseIp: status.lease?.publicIp }).toEqual({
        iface,
        underlayIp: addr,
        publicIp: addr,
        leaseIp: addr,
      });
      expect(status.ready).toBe(true);
      // udp's socket is bound to the address found.
      expect(udp).toContain(`${addr}:8285`);
    },
    60_000,
  );

  it('--public-ip not on the interface (a NAT outside address): announced in the lease, the interface address bound', async () => {
    const { status, udp } = await runDaemon(['-iface=d0', '--public-ip', '203.0.113.77']);
    expect({ iface: status.iface, underlayIp: status.underlayIp, publicIp: status.publicIp, leaseIp: status.lease?.publicIp }).toEqual({
      iface: 'd0',
      underlayIp: '192.0.2.1',
      publicIp: '203.0.113.77',
      leaseIp: '203.0.113.77',
    });
    expect(udp).toContain('192.0.2.1:8285');
  }, 60_000);

  it('Go booleans from the command line and from FLANNELD_*: --ip-masq=true, FLANNELD_IP_MASQ=false', async () => {
    expect((await runDaemon(['--iface', 'd0', '--ip-masq=true'])).subnetEnv).toContain('FLANNEL_IPMASQ=true');
    expect((await runDaemon(['--iface', 'd0'], { FLANNELD_IP_MASQ: '1' })).subnetEnv).toContain('FLANNEL_IPMASQ=true');
    expect((await runDaemon(['--iface', 'd0', '--ip-masq=false'], { FLANNELD_IP_MASQ: 'true' })).subnetEnv).toContain('FLANNEL_IPMASQ=false');
  }, 90_000);

  /** The daemon in the namespace without a default route; it must refuse before contacting anything. */
  function refusal(args: string[], env: NodeJS.ProcessEnv = {}): string {
    const argv = ['netns', 'exec', bare, process.execPath, WEFT, 'daemon', '--control', '127.0.0.1:1', '--healthz-port', '0', ...args];
    const r = spawnSync('ip', argv, { encoding: 'utf8', timeout: 20_000, env: { ...baseEnv(), ...env } });
    expect(r.status, `weft daemon ${args.join(' ')}: ${r.stderr}`).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    return lines[0]!;
  }

  // Every interface in ifindex order, the veth peers (created first) with no address.
  const tried = '(tried lo 127.0.0.1, p0 (no IPv4), d0 192.0.2.1, p1 (no IPv4), d1 198.51.100.1 198.51.100.2, p2 (no IPv4), d2 203.0.113.1)';
  const fails: [string, string[], NodeJS.ProcessEnv, string][] = [
    [
      'no default route',
      [],
      {},
      'weft daemon: no IPv4 default route to take the interface from; give --iface, --iface-regex, --iface-can-reach or --public-ip',
    ],
    ['--iface NAME', ['--iface', 'eth9'], {}, `weft daemon: --iface "eth9": no such interface ${tried}`],
    ['--iface ADDR', ['--iface', '10.9.9.9'], {}, `weft daemon: --iface 10.9.9.9: no interface holds this address ${tried}`],
    ['--iface-regex', ['--iface-regex', '^eth9'], {}, `weft daemon: no interface matches --iface-regex "^eth9" ${tried}`],
    [
      '--iface-can-reach',
      ['--iface-can-reach', '10.99.0.1'],
      {},
      `weft daemon: --iface-can-reach 10.99.0.1: no route (RTNETLINK answers: Network is unreachable) ${tried}`,
    ],
    ['--public-ip', ['--public-ip', '10.9.9.9'], {}, 'weft daemon: --public-ip 10.9.9.9 is not assigned to any interface here'],
    [
      'all of them, in order',
      ['--iface', 'eth9', '--iface-regex', '^x', '--iface-can-reach', '10.99.0.1'],
      {},
      `weft daemon: --iface "eth9": no such interface; no interface matches --iface-regex "^x"; --iface-can-reach 10.99.0.1: no route (RTNETLINK answers: Network is unreachable) ${tried}`,
    ],
    ['FLANNELD_IFACE', [], { FLANNELD_IFACE: 'eth9' }, `weft daemon: --iface "eth9": no such interface ${tried} (--iface from FLANNELD_IFACE)`],
    ['a bad FLANNELD_ boolean', [], { FLANNELD_IP_MASQ: 'yes' }, 'weft daemon: FLANNELD_IP_MASQ: "yes" is not a boolean (true or false, 1 or 0)'],
  ];
  it.each(fails)(
    'one line when nothing matches: %s',
    (_name, args, env, line) => {
      const got = refusal(args, env);
      if (line.endsWith(')')) expect(got).toBe(line);
      else expect(got.startsWith(line), got).toBe(true);
    },
    30_000,
  );
});
