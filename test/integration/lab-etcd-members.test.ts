// `weft lab up --registry etcd --etcd-members 3`: a 2-node lab on a 3-member etcd cluster in the
// switch namespace. One member is SIGKILLed (the first, whose URL heads every daemon's
// --etcd-endpoints, so a daemon must fail over to the next); the other two keep quorum, so a
// restarted daemon still gets its lease and pods still reach each other. The member comes back on
// its data dir, healthy and caught up with what was written while it was down; `lab down` then
// leaves no namespace and no etcd process.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  daemonStatus,
  killControl,
  killEtcdMember,
  labDir,
  labDown,
  labNsPattern,
  labProcesses,
  labUp,
  mustReadState,
  pingFailures,
  pingMatrix,
  restartDaemon,
  startEtcdMember,
  type LabState,
  type LabStatus,
} from '../../src/lab';
import { listNs } from '../../src/lab/netns';
import { isAlive, nsRun, pidsWithCmdline, type RunResult } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

const WEFT = join(__dirname, '..', '..', 'bin', 'weft.js');

function weft(args: string[], timeoutMs = 60_000): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

describe.skipIf(process.getuid?.() !== 0)('netns lab on a 3-member etcd cluster', () => {
  const prefix = uniquePrefix('etcd3');
  let state: LabState;

  /** etcdctl inside the switch namespace, where the members listen. */
  const etcdctl = (endpoints: string, ...args: string[]): Promise<RunResult> =>
    nsRun(state.switchNs, ['etcdctl', '--endpoints', endpoints, '--command-timeout=3s', ...args], {
      timeoutMs: 10_000,
      env: { ...process.env, ETCDCTL_API: '3' },
    });
  const subnetOf = async (node: string): Promise<string> => ((await daemonStatus(prefix, node)) as { lease: { subnet: string } }).lease.subnet;

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'udp', registry: 'etcd', etcdMembers: 3 });
  }, 60_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 30_000);

  it('records three members on distinct ports, gives every daemon all three, and status (another process) lists them alive', async () => {
    const ms = state.control.members!;
    expect(ms.map((m) => [m.name, m.address, m.peerUrl])).toEqual([
      ['etcd1', '192.168.77.1:2379', 'http://192.168.77.1:2380'],
      ['etcd2', '192.168.77.1:22379', 'http://192.168.77.1:22380'],
      ['etcd3', '192.168.77.1:32379', 'http://192.168.77.1:32380'],
    ]);
    for (const m of ms) expect(m.dataDir.startsWith(state.dir + '/')).toBe(true);
    const endpoints = 'http://192.168.77.1:2379,http://192.168.77.1:22379,http://192.168.77.1:32379';
    for (const n of state.nodes) expect(n.argv[n.argv.indexOf('--etcd-endpoints') + 1]).toBe(endpoints);

    const members = (await etcdctl(endpoints, 'member', 'list')).stdout.trim().split('\n');
    expect(members.map((l) => l.split(', ')[2]).sort()).toEqual(['etcd1', 'etcd2', 'etcd3']);
    expect(members.every((l) => l.split(', ')[1] === 'started')).toBe(true);

    const r = weft(['lab', 'status', '--prefix', prefix, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as LabStatus;
    expect(s.control?.members?.map((m) => [m.name, m.address, m.pid, m.alive])).toEqual(ms.map((m) => [m.name, `http://${m.address}`, m.pid, true]));
    expect(s.nodes.every((n) => n.alive && n.ready)).toBe(true);
    const text = weft(['lab', 'status', '--prefix', prefix]).stdout;
    for (const m of ms) expect(text).toMatch(new RegExp(`${m.name}\\s+${state.switchNs}\\s+http://${m.address}\\s+${m.peerUrl}\\s+${m.pid}\\s+yes`));

    // One process per member: killControl would not know which, so it says what to use instead.
    await expect(killControl(prefix)).rejects.toThrow(/runs 3 etcd members.*killEtcdMember/);
  });

  it('pods ping across the nodes', async () => {
    expect(pingFailures(await pingMatrix(state, { count: 2 }))).toEqual([]);
  });

  it('with one member SIGKILLed, a restarted daemon gets its lease back and pods still ping; the member rejoins healthy and caught up', async () => {
    const before = await subnetOf('n1');
    const killed = await killEtcdMember(prefix, 1);
    expect(isAlive(killed.pid)).toBe(false);
    const st = JSON.parse(weft(['lab', 'status', '--prefix', prefix, '--json']).stdout) as LabStatus;
    expect(st.control?.members?.map((m) => m.alive)).toEqual([false, true, true]);
    expect(st.control?.alive).toBe(true); // 2 of 3: quorum

    // etcd1 heads n1's --etcd-endpoints: the daemon's client has to move on to etcd2.
    await restartDaemon(prefix, 'n1');
    expect(await subnetOf('n1')).toBe(before);
    expect(readFileSync(mustReadState(prefix).nodes[0].subnetFile, 'utf8')).toContain(`FLANNEL_SUBNET=${before.replace('.0/', '.1/')}`);
    expect(pingFailures(await pingMatrix(prefix, { count: 2 }))).toEqual([]);

    // Written while etcd1 is down, through the two that are up.
    const put = await etcdctl('http://192.168.77.1:22379', 'put', '/weft-test/while-down', 'yes');
    expect(put.code, put.stderr).toBe(0);

    const back = await startEtcdMember(prefix, 'etcd1');
    expect(back.pid).not.toBe(killed.pid);
    expect(mustReadState(prefix).control.members![0].pid).toBe(back.pid);
    const health = await etcdctl('http://192.168.77.1:2379', 'endpoint', 'health');
    expect(health.code, health.stderr).toBe(0);
    expect(health.stdout + health.stderr).toMatch(/http:\/\/192\.168\.77\.1:2379 is healthy/);
    // A serializable read answers from etcd1's own copy, so this shows it took in the write it missed.
    const got = await etcdctl('http://192.168.77.1:2379', 'get', '/weft-test/while-down', '--consistency=s', '--print-value-only');
    expect(got.stdout.trim()).toBe('yes');
  }, 45_000);

  it('down stops every member and leaves no namespace, etcd process or state behind', async () => {
    // As last recorded: etcd1's pid changed on its restart.
    const pids = mustReadState(prefix).control.members!.map((m) => m.pid);
    expect(pids.every(isAlive)).toBe(true);
    const r = weft(['lab', 'down', '--prefix', prefix]);
    expect(r.code, r.stderr).toBe(0);
    expect(pids.filter(isAlive)).toEqual([]);
    expect((await listNs()).filter((n) => labNsPattern(prefix).test(n))).toEqual([]);
    expect(await labProcesses(prefix)).toEqual([]);
    expect(pidsWithCmdline(labDir(prefix) + '/')).toEqual([]);
    expect(existsSync(labDir(prefix))).toBe(false);
  });
});
