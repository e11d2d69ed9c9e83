// weft monitor on a live 2-node netns lab (udp backend): `weft lab monitor n1` attaches to
// node 1's daemon through its own socket and shows a TTL-expired ping and a datagram from an
// address that holds no lease as drops with their reasons, and a pod's ping traced with the
// decisions weft trace prints.
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labExec, labUp, pingPair, type LabState } from '../../src/lab';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

const WEFT = join(__dirname, '..', '..', 'bin', 'weft.js');

interface Ev {
  type: string;
  reason?: string;
  dir?: string;
  peer?: string;
  from?: string;
  packet?: { src: string; dst: string; protoName: string; ttl: number; icmpType?: number };
  decisions?: string[];
}

describe.skipIf(process.getuid?.() !== 0)('weft monitor on a netns lab', () => {
  const prefix = uniquePrefix('mon');
  let state: LabState;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'udp' });
  }, 180_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await labDown(prefix);
  }, 60_000);

  /** `weft lab monitor` with these flags, once it has said hello; resolves with its events when it exits. */
  async function monitor(args: string[]): Promise<{ events: Promise<Ev[]>; child: ChildProcess }> {
    const child = spawn(process.execPath, [WEFT, 'lab', 'monitor', '--prefix', prefix, 'n1', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    const hello = new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('"type":"hello"')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`weft lab monitor exited ${code} before hello: ${err}`)));
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const events = new Promise<Ev[]>((resolve) =>
      child.on('exit', () => {
        clearTimeout(timer);
        resolve(
          out
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as Ev),
        );
      }),
    );
    await hello;
    return { events, child };
  }

  it('gives each lab node a root-only socket of its own', () => {
    for (const n of state.nodes) {
      expect(n.monitorSocket).toBe(join(n.dir, 'monitor.sock'));
      expect(statSync(n.monitorSocket!).mode & 0o777).toBe(0o600);
    }
  });

  it('shows a ping that reaches weft with TTL 1 as a drop: ttl_expired, with the packet and its peer', async () => {
    const p1 = state.pods.find((p) => p.node === 'n1')!;
    const p2 = state.pods.find((p) => p.node === 'n2')!;
    const n2 = state.nodes.find((n) => n.name === 'n2')!;
    const { events } = await monitor(['--type', 'drop', '--proto', 'icmp', '--count', '1']);
    // TTL 2 from the pod: n1's kernel forwards it into weft0 with TTL 1.
    await pingPair(prefix, 'n1/p1', 'n2/p1', { count: 2, intervalS: 0.2, waitS: 1, args: ['-t', '2'] });
    const drops = (await events).filter((e) => e.type === 'drop');
    expect(drops[0]).toMatchObject({
      reason: 'ttl_expired',
      dir: 'egress',
      peer: n2.publicIp,
      packet: { src: p1.ip, dst: p2.ip, protoName: 'icmp', ttl: 1, icmpType: 8 },
    });
  }, 60_000);

  it('shows a datagram to the udp port from an address with no lease as unknown_peer, naming its sender', async () => {
    const n1 = state.nodes.find((n) => n.name === 'n1')!;
    const { events } = await monitor(['--type', 'drop', '--count', '1']);
    // From the underlay switch namespace, whose address holds no lease.
    const r = await labExec(prefix, 'ul', ['bash', '-c', `for i in 1 2 3; do echo hello > /dev/udp/${n1.publicIp}/8285; sleep 0.2; done`]);
    expect(r.code, r.stderr).toBe(0);
    const drops = (await events).filter((e) => e.type === 'drop');
    expect(drops[0]).toMatchObject({ reason: 'unknown_peer', dir: 'ingress', from: expect.stringMatching(/^\d+\.\d+\.\d+\.\d+:\d+$/) });
    expect(drops[0].from!.split(':')[0]).not.toBe(state.nodes[1].publicIp);
  }, 60_000);

  it("traces a pod's ping with weft trace's decisions", async () => {
    const p1 = state.pods.find((p) => p.node === 'n1')!;
    const p2 = state.pods.find((p) => p.node === 'n2')!;
    const n2 = state.nodes.find((n) => n.name === 'n2')!;
    const { events } = await monitor(['--type', 'trace', '--dst', p2.ip, '--proto', 'icmp', '--count', '1']);
    const ping = await pingPair(prefix, 'n1/p1', 'n2/p1', { count: 3, intervalS: 0.2 });
    expect(ping.received).toBeGreaterThan(0);
    const traces = (await events).filter((e) => e.type === 'trace');
    expect(traces[0]).toMatchObject({ dir: 'egress', peer: n2.publicIp, packet: { src: p1.ip, dst: p2.ip, protoName: 'icmp', icmpType: 8 } });
    const d = traces[0].decisions!.join('\n');
    expect(d).toMatch(/^validate +ok: IPv4/m);
    expect(d).toMatch(new RegExp(`^route +LPM ${p2.ip.replaceAll('.', '\\.')} → `, 'm'));
    expect(d).toMatch(/^TTL +\d+ > 1: forwarded/m);
    expect(d).toMatch(/^MTU +84 ≤ tunnel MTU 1472/m);
    expect(d).toMatch(new RegExp(`^send +84 bytes to ${n2.publicIp.replaceAll('.', '\\.')}:8285 through the UDP socket`, 'm'));
  }, 60_000);

  it('refuses bad filters in one line, and says so when the socket is not there', async () => {
    const bad = spawn(process.execPath, [WEFT, 'lab', 'monitor', '--prefix', prefix, 'n1', '--proto', 'sctp'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    bad.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((r) => bad.on('exit', r));
    expect(code).toBe(1);
    expect(err).toMatch(/^weft lab: --proto: "sctp" is not icmp, tcp, udp or a protocol number/m);
    const none = spawn(process.execPath, [WEFT, 'monitor', '--socket', join(state.dir, 'nope.sock')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err2 = '';
    none.stderr.on('data', (c: Buffer) => (err2 += c.toString()));
    expect(await new Promise<number | null>((r) => none.on('exit', r))).toBe(1);
    expect(err2).toMatch(/no weft daemon is listening on .*nope\.sock/);
  }, 30_000);
});
