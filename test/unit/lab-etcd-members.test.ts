// `weft lab up --etcd-members`: which counts and registries it accepts, the argv of each member
// of a 3-member cluster, the endpoints the daemons get, and how status shows the members. No lab
// is formed here: labUp is handed a weft.js that does not exist, so an option that got past the
// checks would stop at the preflight instead of making namespaces.
import { describe, expect, it } from 'vitest';
import { run as labCli } from '../../src/cli/lab';
import { checkEtcdMembers, etcdEndpoints, findEtcdMember, formatStatus, labUp, type LabState, type LabStatus } from '../../src/lab';
import { daemonArgv, etcdMembersFor } from '../../src/lab/lifecycle';

const NO_WEFT = '/nonexistent/weft-lab-unit/bin/weft.js';

describe('--etcd-members', () => {
  it('accepts 1 and 3 with the etcd registry, 1 when not given', () => {
    expect(checkEtcdMembers('etcd', undefined)).toBe(1);
    expect(checkEtcdMembers('embedded', undefined)).toBe(1);
    expect(checkEtcdMembers('etcd', 1)).toBe(1);
    expect(checkEtcdMembers('etcd', 3)).toBe(3);
  });

  it('refuses other counts, and any count without --registry etcd, in one line', async () => {
    for (const n of [0, 2, 4, 5, -1, 1.5, NaN]) {
      expect(() => checkEtcdMembers('etcd', n)).toThrow(/^--etcd-members must be 1 or 3, got [-\d.NaN]+$/);
    }
    expect(() => checkEtcdMembers('embedded', 3)).toThrow(/^--etcd-members needs --registry etcd/);
    expect(() => checkEtcdMembers('embedded', 1)).toThrow(/^--etcd-members needs --registry etcd/);
    // labUp applies them before touching anything.
    await expect(labUp({ prefix: 'weft-unit-x-', registry: 'etcd', etcdMembers: 2, weftJs: NO_WEFT })).rejects.toThrow('--etcd-members must be 1 or 3, got 2');
    await expect(labUp({ prefix: 'weft-unit-x-', etcdMembers: 3, weftJs: NO_WEFT })).rejects.toThrow('--etcd-members needs --registry etcd');
  });

  it('the CLI takes the flag and refuses a non-integer without echoing all of it', async () => {
    const long = 'x'.repeat(500);
    const err = await labCli(['up', '--etcd-members', long]).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toBe(`--etcd-members must be an integer, got "${'x'.repeat(64)}"… (500 characters)`);
  });
});

const DIR = '/run/weft-lab/weft-u-';
const base = {
  prefix: 'weft-u-',
  dir: DIR,
  nodeBin: '/usr/local/bin/node',
  weftJs: '/opt/weft/bin/weft.js',
  options: {
    nodes: 2,
    pods: 1,
    backend: 'udp' as const,
    underlay: '192.168.77.0/24',
    network: '10.244.0.0/16',
    daemonArgs: [],
    controlArgs: ['--snapshot-count', '500'],
  },
};
const control = { ns: 'weft-u-ul', ip: '192.168.77.1', stateDir: `${DIR}/etcd` };

const flag = (argv: string[], name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i < 0 ? undefined : argv[i + 1];
};

describe('a 3-member lab cluster', () => {
  const members = etcdMembersFor(base, control, 3);

  it('runs each member in the switch namespace on its own ports and data dir under the lab dir, all in one cluster', () => {
    expect(members.map((m) => [m.name, m.index, m.address, m.peerUrl, m.dataDir, m.logFile])).toEqual([
      ['etcd1', 1, '192.168.77.1:2379', 'http://192.168.77.1:2380', `${DIR}/etcd/etcd1`, `${DIR}/logs/etcd1.log`],
      ['etcd2', 2, '192.168.77.1:22379', 'http://192.168.77.1:22380', `${DIR}/etcd/etcd2`, `${DIR}/logs/etcd2.log`],
      ['etcd3', 3, '192.168.77.1:32379', 'http://192.168.77.1:32380', `${DIR}/etcd/etcd3`, `${DIR}/logs/etcd3.log`],
    ]);
    const cluster = 'etcd1=http://192.168.77.1:2380,etcd2=http://192.168.77.1:22380,etcd3=http://192.168.77.1:32380';
    for (const m of members) {
      expect(m.pid).toBe(0);
      expect(m.argv.slice(0, 5)).toEqual(['ip', 'netns', 'exec', 'weft-u-ul', '/usr/bin/etcd']);
      expect(flag(m.argv, '--name')).toBe(m.name);
      expect(flag(m.argv, '--data-dir')).toBe(m.dataDir);
      expect(flag(m.argv, '--listen-client-urls')).toBe(`http://${m.address}`);
      expect(flag(m.argv, '--advertise-client-urls')).toBe(`http://${m.address}`);
      expect(flag(m.argv, '--listen-peer-urls')).toBe(m.peerUrl);
      expect(flag(m.argv, '--initial-advertise-peer-urls')).toBe(m.peerUrl);
      expect(flag(m.argv, '--initial-cluster')).toBe(cluster);
      expect(flag(m.argv, '--initial-cluster-state')).toBe('new');
      expect(flag(m.argv, '--initial-cluster-token')).toBe('weft-lab-weft-u-');
      // --control-args go to every member, last so they can override.
      expect(m.argv.slice(-2)).toEqual(['--snapshot-count', '500']);
    }
  });

  it('gives every daemon all three client URLs in member order; a one-member lab gives its one', () => {
    const state = { ...base, control: { kind: 'etcd' as const, address: '192.168.77.1:2379', members } } as unknown as LabState;
    const node = {
      name: 'n1',
      index: 1,
      ns: 'weft-u-n1',
      publicIp: '192.168.77.11',
      iface: 'eth0',
      dir: '',
      subnetFile: '',
      healthzPort: 9090,
      logFile: '',
      cniDataDir: '',
    };
    expect(flag(daemonArgv(state, node), '--etcd-endpoints')).toBe('http://192.168.77.1:2379,http://192.168.77.1:22379,http://192.168.77.1:32379');
    const one = { ...state, control: { kind: 'etcd' as const, address: '192.168.77.1:2379' } } as unknown as LabState;
    expect(flag(daemonArgv(one, node), '--etcd-endpoints')).toBe('http://192.168.77.1:2379');
    expect(etcdEndpoints(one.control)).toEqual(['http://192.168.77.1:2379']);
  });

  it('finds a member by index or name, and says why not otherwise', () => {
    const state = { ...base, control: { kind: 'etcd', address: '192.168.77.1:2379', members } } as unknown as LabState;
    expect(findEtcdMember(state, 2).name).toBe('etcd2');
    expect(findEtcdMember(state, 'etcd3').index).toBe(3);
    expect(() => findEtcdMember(state, 0)).toThrow('no etcd member 0 in lab "weft-u-" (members: 1 etcd1, 2 etcd2, 3 etcd3)');
    expect(() => findEtcdMember(state, 'e'.repeat(300))).toThrow(`no etcd member "${'e'.repeat(64)}"… (300 characters)`);
    const one = { ...state, control: { kind: 'etcd', address: '192.168.77.1:2379' } } as unknown as LabState;
    expect(() => findEtcdMember(one, 1)).toThrow(/runs one etcd member \(use killControl\/startControl\)/);
  });

  it('status prints one row per member', () => {
    const s: LabStatus = {
      prefix: 'weft-u-',
      exists: true,
      dir: DIR,
      namespaces: [],
      backend: 'udp',
      network: '10.244.0.0/16',
      underlay: '192.168.77.0/24',
      control: {
        kind: 'etcd',
        ns: 'weft-u-ul',
        address: '192.168.77.1:2379',
        pid: 0,
        alive: true,
        log: '',
        members: members.map((m, k) => ({ name: m.name, address: `http://${m.address}`, peerUrl: m.peerUrl, pid: 100 + k, alive: k !== 0, log: m.logFile })),
      },
      nodes: [],
      pods: [],
    };
    const out = formatStatus(s);
    expect(out).toMatch(/ETCD MEMBER\s+NAMESPACE\s+ADDRESS\s+PEER\s+PID\s+ALIVE\n/);
    expect(out).toMatch(/etcd1\s+weft-u-ul\s+http:\/\/192\.168\.77\.1:2379\s+http:\/\/192\.168\.77\.1:2380\s+100\s+NO\n/);
    expect(out).toMatch(/etcd3\s+weft-u-ul\s+http:\/\/192\.168\.77\.1:32379\s+http:\/\/192\.168\.77\.1:32380\s+102\s+yes\n/);
    expect(out).not.toMatch(/^CONTROL/m);
  });
});
