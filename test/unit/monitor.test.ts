// weft monitor without root: MonitorTap on an offline node's real pipeline and datapath loop
// (OfflineNode: the daemon's assembly with the TUN and sockets in memory), and MonitorServer on
// a Unix socket in a temporary directory.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { explainEgress, liveExplainer } from '../../src/datapath/explain';
import {
  formatMonitorEvent,
  MAX_PENDING_BYTES,
  MonitorTap,
  parseMonitorRequest,
  RING_SLOTS,
  TRACE_BUDGET,
  type MonitorEvent,
  type MonitorRequest,
  type MonitorSink,
} from '../../src/datapath/monitor';
import { OfflineNode } from '../../src/datapath/offline';
import { Drop } from '../../src/datapath/stats';
import { MonitorServer } from '../../src/daemon/monitor-server';
import { buildIpv4Packet } from '../../src/packet/builder';
import { writeIcmpEcho } from '../../src/packet/icmp';
import { IPPROTO_ICMP } from '../../src/packet/ipv4';
import { formatIpv4, parseCidr, parseIpv4 } from '../../src/route/address';

const topology = {
  network: parseCidr('10.244.0.0/16'),
  local: { subnet: parseCidr('10.244.1.0/24'), publicIp: parseIpv4('192.168.77.11') },
  peers: [
    { subnet: parseCidr('10.244.2.0/24'), publicIp: parseIpv4('192.168.77.12') },
    { subnet: parseCidr('10.244.3.0/24'), publicIp: parseIpv4('192.168.77.13') },
  ],
};

function ping(src: string, dst: string, ttl = 63, size = 84): Buffer {
  const echo = Buffer.alloc(size - 20);
  writeIcmpEcho(echo, 0, 8, 0x77, 1, Buffer.alloc(size - 28));
  return buildIpv4Packet({ src, dst, protocol: IPPROTO_ICMP, ttl, id: 0x1c46, payload: echo });
}
const udp = (src: string, dst: string) => buildIpv4Packet({ src, dst, protocol: 17, ttl: 63, payload: Buffer.alloc(12), srcPort: 40000, dstPort: 9000 });

class Sink implements MonitorSink {
  lines: string[] = [];
  writableLength = 0;
  write(line: string): boolean {
    this.lines.push(line);
    return true;
  }
  get events(): MonitorEvent[] {
    return this.lines.map((l) => JSON.parse(l) as MonitorEvent);
  }
}

/** An offline vxlan node with a MonitorTap on its pipeline, drained and clocked by hand. */
function watched(backend = 'vxlan') {
  const node = new OfflineNode({ backend, topology });
  const pipeline = node.pipeline!;
  let t = 0;
  let pending: (() => void) | null = null;
  const explain = liveExplainer(() => ({
    backend: node.backendConfig,
    network: node.network,
    lease: { subnet: '10.244.1.0/24', publicIp: '192.168.77.11', backendType: backend, backendData: {} },
    peers: node.peers
      .peers()
      .filter((p) => !p.local)
      .map((p) => ({
        subnet: `${formatIpv4(p.subnet.addr)}/${p.subnet.len}`,
        publicIp: formatIpv4(p.publicIp),
        backendType: backend,
        backendData: p.backendData,
      })),
    underlayMtu: node.underlayMtu,
  }));
  const tap = new MonitorTap({
    backend: pipeline.backend,
    routes: node.peers.routes,
    explain,
    now: () => t,
    schedule: (fn) => {
      pending = fn;
    },
    attach: (x) => {
      pipeline.tap = x;
    },
  });
  const watch = (req: MonitorRequest) => {
    const sink = new Sink();
    const w = tap.add(parseMonitorRequest(req), sink);
    if (w instanceof Error) throw w;
    return { sink, w };
  };
  const drain = () => {
    const fn = pending;
    pending = null;
    fn?.();
  };
  return { node, pipeline, tap, watch, drain, advance: (ms: number) => (t += ms) };
}

describe('monitor request parsing', () => {
  it('takes the filters and refuses bad ones naming the flag', () => {
    expect(parseMonitorRequest({})).toMatchObject({ drops: true, traces: false, src: null, proto: -1, peer: 0, rate: 100 });
    expect(parseMonitorRequest({ type: 'all', src: '10.244.1.0/24', dst: '10.244.2.7', proto: 'UDP', peer: '192.168.77.12', rate: '5' })).toMatchObject({
      drops: true,
      traces: true,
      src: { addr: parseIpv4('10.244.1.0'), len: 24 },
      dst: { addr: parseIpv4('10.244.2.7'), len: 32 },
      proto: 17,
      peer: parseIpv4('192.168.77.12'),
      rate: 5,
    });
    expect(parseMonitorRequest({ proto: '47' }).proto).toBe(47);
    expect(() => parseMonitorRequest({ type: 'drops' })).toThrow(/^--type: "drops" is not one of drop, trace, all/);
    expect(() => parseMonitorRequest({ src: '10.244.1' })).toThrow(/^--src: /);
    expect(() => parseMonitorRequest({ dst: '10.0.0.0/33' })).toThrow(/^--dst: /);
    expect(() => parseMonitorRequest({ proto: 'sctp' })).toThrow(/^--proto: "sctp"/);
    expect(() => parseMonitorRequest({ proto: '256' })).toThrow(/^--proto/);
    expect(() => parseMonitorRequest({ peer: 'n2' })).toThrow(/^--peer: "n2"/);
    expect(() => parseMonitorRequest({ rate: '0' })).toThrow(/^--rate/);
    expect(() => parseMonitorRequest({ rate: '1e9' })).toThrow(/^--rate/);
  });
});

describe('MonitorTap on an offline node', () => {
  it('attaches the tap with the first watcher and takes it off with the last', () => {
    const { pipeline, tap, watch } = watched();
    expect(pipeline.tap).toBeNull();
    const a = watch({});
    const b = watch({ type: 'trace' });
    expect(pipeline.tap).toBe(tap);
    tap.remove(a.w);
    expect(pipeline.tap).toBe(tap);
    tap.remove(b.w);
    expect(pipeline.tap).toBeNull();
  });

  it('shows a drop with its reason, the packet, direction and peer', () => {
    const { node, watch, drain } = watched();
    const { sink } = watch({ type: 'drop' });
    node.egress(ping('10.244.1.2', '10.244.2.2', 1));
    node.egress(ping('10.244.1.2', '10.244.2.2')); // forwarded: not a drop
    drain();
    expect(sink.events).toEqual([
      expect.objectContaining({
        type: 'drop',
        reason: 'ttl_expired',
        dir: 'egress',
        peer: '192.168.77.12',
        bytes: 84,
        packet: expect.objectContaining({ src: '10.244.1.2', dst: '10.244.2.2', protoName: 'icmp', icmpType: 8, icmpCode: 0, length: 84, ttl: 1 }),
      }),
    ]);
    expect(formatMonitorEvent(sink.events[0])).toMatch(
      / DROP {2}egress {2}ttl_expired 10\.244\.1\.2 → 10\.244\.2\.2 icmp echo-request 84 bytes ttl 1 peer 192\.168\.77\.12$/,
    );
  });

  it('names the sender of a datagram from an address with no lease (unknown_peer)', () => {
    const { node, watch, drain } = watched('udp');
    const { sink } = watch({});
    node.ingress(udp('10.244.9.9', '10.244.1.2'), parseIpv4('192.168.77.99'), 40123);
    drain();
    expect(sink.events).toEqual([
      expect.objectContaining({
        type: 'drop',
        reason: 'unknown_peer',
        dir: 'ingress',
        from: '192.168.77.99:40123',
        packet: expect.objectContaining({ src: '10.244.9.9', sport: 40000, dport: 9000 }),
      }),
    ]);
    expect(formatMonitorEvent(sink.events[0])).toMatch(
      /DROP {2}ingress unknown_peer 10\.244\.9\.9:40000 → 10\.244\.1\.2:9000 udp 40 bytes ttl 63 from 192\.168\.77\.99:40123$/,
    );
  });

  it('traces a live packet with the decisions weft trace prints for it', () => {
    const { node, watch, drain } = watched();
    const { sink } = watch({ type: 'trace' });
    const pkt = ping('10.244.1.2', '10.244.3.2');
    node.egress(pkt);
    drain();
    const ev = sink.events[0];
    expect(ev).toMatchObject({ type: 'trace', dir: 'egress', peer: '192.168.77.13' });
    const fresh = new OfflineNode({ backend: 'vxlan', topology });
    const expected = explainEgress(fresh, ping('10.244.1.2', '10.244.3.2'), { detail: false });
    expect(ev.type === 'trace' && ev.decisions).toEqual(expected.join('\n').split('\n'));
    expect(expected.join('\n')).toMatch(/^validate +ok: IPv4/m);
    expect(expected.join('\n')).toMatch(/^route +LPM 10\.244\.3\.2 → 10\.244\.3\.0\/24/m);
    expect(expected.join('\n')).toMatch(/^send +\d+ bytes to 192\.168\.77\.13:8472/m);
    // The text form: the event's line, then the decisions indented under it.
    const text = formatMonitorEvent(ev).split('\n');
    expect(text[0]).toMatch(/TRACE egress {2}10\.244\.1\.2 → 10\.244\.3\.2 icmp echo-request 84 bytes ttl 63 peer 192\.168\.77\.13$/);
    expect(text.slice(1)).toEqual(
      expected
        .join('\n')
        .split('\n')
        .map((l) => `    ${l}`),
    );
  });

  it('traces ingress: sender lease, decap, checks, written to weft0', () => {
    const { node, watch, drain } = watched();
    const { sink } = watch({ type: 'trace', src: '10.244.2.0/24' });
    // What node 2 sends us: its own egress of a ping to our pod, as it leaves its socket.
    const n2 = node.nodeAt(parseIpv4('192.168.77.12'));
    const sent = n2.egress(ping('10.244.2.5', '10.244.1.2')).sent[0];
    node.ingress(sent.payload, parseIpv4('192.168.77.12'), 40000);
    drain();
    const ev = sink.events[0];
    expect(ev).toMatchObject({ type: 'trace', dir: 'ingress', peer: '192.168.77.12', packet: { src: '10.244.2.5', dst: '10.244.1.2', ttl: 62 } });
    const d = (ev.type === 'trace' && ev.decisions!.join('\n')) || '';
    expect(d).toMatch(/^peer +192\.168\.77\.12 holds 10\.244\.2\.0\/24/m);
    expect(d).toMatch(/^verdict +written to weft0 \(1 packet\)/m);
  });

  it('filters by type, src, dst, proto and peer', () => {
    const { node, watch, drain } = watched();
    const all = watch({ type: 'all' });
    const toN3 = watch({ type: 'trace', peer: '192.168.77.13' });
    const udpOnly = watch({ type: 'trace', proto: 'udp' });
    const fromPod3 = watch({ type: 'all', src: '10.244.1.3' });
    const dstNet = watch({ type: 'trace', dst: '10.244.2.0/24' });
    node.egress(ping('10.244.1.2', '10.244.2.2'));
    node.egress(ping('10.244.1.3', '10.244.3.2'));
    node.egress(udp('10.244.1.2', '10.244.2.9'));
    node.egress(ping('10.244.1.3', '10.244.3.2', 1)); // a trace (dropped in it) and a drop
    drain();
    const seen = (s: Sink) => s.events.map((e) => (e.type === 'trace' || e.type === 'drop' ? `${e.type} ${e.packet?.src}>${e.packet?.dst}` : e.type));
    expect(seen(all.sink)).toEqual([
      'trace 10.244.1.2>10.244.2.2',
      'trace 10.244.1.3>10.244.3.2',
      'trace 10.244.1.2>10.244.2.9',
      'trace 10.244.1.3>10.244.3.2',
      'drop 10.244.1.3>10.244.3.2',
    ]);
    expect(seen(toN3.sink)).toEqual(['trace 10.244.1.3>10.244.3.2', 'trace 10.244.1.3>10.244.3.2']);
    expect(seen(udpOnly.sink)).toEqual(['trace 10.244.1.2>10.244.2.9']);
    expect(seen(fromPod3.sink)).toEqual(['trace 10.244.1.3>10.244.3.2', 'trace 10.244.1.3>10.244.3.2', 'drop 10.244.1.3>10.244.3.2']);
    expect(seen(dstNet.sink)).toEqual(['trace 10.244.1.2>10.244.2.2', 'trace 10.244.1.2>10.244.2.9']);
  });

  it('rate-limits per watcher and reports what it skipped, once a second', () => {
    const { node, tap, watch, drain, advance } = watched();
    const slow = watch({ type: 'trace', rate: '5' });
    const fast = watch({ type: 'trace', rate: '1000' });
    for (let i = 0; i < 20; i++) node.egress(ping('10.244.1.2', '10.244.2.2'));
    drain();
    expect(slow.sink.events.filter((e) => e.type === 'trace')).toHaveLength(5);
    expect(fast.sink.events.filter((e) => e.type === 'trace')).toHaveLength(20);
    advance(1000);
    tap.report();
    expect(slow.sink.events.at(-1)).toMatchObject({ type: 'skipped', count: 15, rateLimited: 15, ringFull: 0, notRead: 0, sinceMs: 1000 });
    expect(formatMonitorEvent(slow.sink.events.at(-1)!)).toMatch(/SKIPPED 15 events in 1\.0 s \(15 over --rate, 0 ring full, 0 not read in time\)$/);
    // Nothing skipped: no report. And the bucket refills with time: 5 more a second later.
    expect(fast.sink.events.some((e) => e.type === 'skipped')).toBe(false);
    for (let i = 0; i < 20; i++) node.egress(ping('10.244.1.2', '10.244.2.2'));
    drain();
    expect(slow.sink.events.filter((e) => e.type === 'trace')).toHaveLength(10);
    tap.report();
    expect(slow.sink.events.at(-1)).toMatchObject({ type: 'skipped', count: 15 });
  });

  it('copies at most RING_SLOTS packets before a drain, and counts the rest as ring full', () => {
    const { node, tap, watch, drain } = watched();
    const w = watch({ type: 'drop', rate: '10000' });
    for (let i = 0; i < RING_SLOTS + 10; i++) node.egress(ping('10.244.1.2', '10.244.2.2', 1));
    drain();
    expect(w.sink.events.filter((e) => e.type === 'drop')).toHaveLength(RING_SLOTS);
    tap.report();
    expect(w.sink.events.at(-1)).toMatchObject({ type: 'skipped', count: 10, ringFull: 10 });
  });

  it('explains at most TRACE_BUDGET traces a second for the whole node, whatever the watchers ask', () => {
    const { node, tap, watch, drain, advance } = watched();
    const a = watch({ type: 'trace', rate: '10000' });
    const b = watch({ type: 'trace', rate: '10000' });
    for (let i = 0; i < TRACE_BUDGET + 50; i++) {
      node.egress(ping('10.244.1.2', '10.244.2.2'));
      if (i % 64 === 63) drain();
    }
    drain();
    // Each trace is explained once and sent to both.
    expect(a.sink.events.filter((e) => e.type === 'trace')).toHaveLength(TRACE_BUDGET);
    expect(b.sink.events.filter((e) => e.type === 'trace')).toHaveLength(TRACE_BUDGET);
    advance(1000);
    tap.report();
    expect(a.sink.events.at(-1)).toMatchObject({ type: 'skipped', count: 50, rateLimited: 50 });
  });

  it('a watcher that does not read loses events; forwarding and the other watchers do not notice', () => {
    const { node, tap, watch, drain } = watched();
    const stuck = watch({ type: 'all', rate: '10000' });
    const reading = watch({ type: 'all', rate: '10000' });
    stuck.sink.writableLength = MAX_PENDING_BYTES + 1;
    let sent = 0;
    for (let i = 0; i < 50; i++) sent += node.egress(ping('10.244.1.2', '10.244.2.2')).sent.length;
    drain();
    expect(sent).toBe(50);
    expect(stuck.sink.lines).toHaveLength(0);
    expect(reading.sink.events.filter((e) => e.type === 'trace')).toHaveLength(50);
    expect(stuck.w.notRead).toBe(50);
    // Still stuck at report time: the report waits until it can be written.
    tap.report();
    expect(stuck.sink.lines).toHaveLength(0);
    stuck.sink.writableLength = 0;
    tap.report();
    expect(stuck.sink.events).toEqual([expect.objectContaining({ type: 'skipped', count: 50, notRead: 50 })]);
  });

  it('reports send and TUN-write losses per batch, to watchers whose filter asks nothing of the packet', () => {
    const { tap, watch, drain } = watched();
    const plain = watch({});
    const filtered = watch({ src: '10.244.1.2' });
    tap.lost(Drop.SendFailed, false, 3);
    drain();
    expect(plain.sink.events).toEqual([expect.objectContaining({ type: 'drop', reason: 'send_failed', dir: 'egress', count: 3 })]);
    expect(formatMonitorEvent(plain.sink.events[0])).toMatch(/DROP {2}egress {2}send_failed 3 packets \(which ones is not known\)$/);
    expect(filtered.sink.lines).toHaveLength(0);
  });

  it('refuses a seventeenth watcher', () => {
    const { watch } = watched();
    for (let i = 0; i < 16; i++) watch({});
    expect(() => watch({})).toThrow(/16 monitors are attached already/);
  });
});

describe('MonitorServer on a Unix socket', () => {
  const dirs: string[] = [];
  const servers: MonitorServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const log = { info: () => undefined, warn: () => undefined };

  async function serve() {
    const dir = mkdtempSync(join(tmpdir(), 'weft-monitor-'));
    dirs.push(dir);
    const w = watched();
    const path = join(dir, 'run', 'monitor.sock');
    const server = new MonitorServer({
      path,
      tap: w.tap,
      hello: () => ({ node: '192.168.77.11', backend: 'vxlan', lease: '10.244.1.0/24', network: '10.244.0.0/16', tunnelMtu: 1450 }),
      log,
    });
    await server.start();
    servers.push(server);
    return { ...w, path, dir, server };
  }

  function client(path: string, request: string): Promise<{ sock: net.Socket; lines: string[]; closed: Promise<void> }> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(path);
      const lines: string[] = [];
      let buf = '';
      const closed = new Promise<void>((r) => sock.on('close', () => r()));
      sock.on('error', reject);
      sock.on('data', (c) => {
        buf += c.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          lines.push(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      });
      sock.on('connect', () => {
        sock.write(request);
        resolve({ sock, lines, closed });
      });
    });
  }
  const until = async (cond: () => boolean, ms = 3000) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it('makes the socket 0600 in a 0700 directory, and says hello with the filter in words', async () => {
    const { path, dir, tap } = await serve();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o700);
    const c = await client(path, JSON.stringify({ type: 'all', proto: 'icmp', rate: 7 }) + '\n');
    await until(() => c.lines.length > 0);
    expect(JSON.parse(c.lines[0])).toEqual({
      type: 'hello',
      node: '192.168.77.11',
      backend: 'vxlan',
      lease: '10.244.1.0/24',
      network: '10.244.0.0/16',
      tunnelMtu: 1450,
      watching: 'drops and traces of packets protocol 1, at most 7 a second',
    });
    expect(tap.watcherCount).toBe(1);
    c.sock.destroy();
    await until(() => tap.watcherCount === 0);
  });

  it('refuses a bad request with an error record and closes', async () => {
    const { path, tap } = await serve();
    const c = await client(path, JSON.stringify({ type: 'everything' }) + '\n');
    await c.closed;
    expect(JSON.parse(c.lines[0])).toEqual({ type: 'error', message: expect.stringMatching(/^--type: "everything"/) });
    const d = await client(path, 'not json\n');
    await d.closed;
    expect(JSON.parse(d.lines[0])).toMatchObject({ type: 'error', message: expect.stringMatching(/^bad request/) });
    expect(tap.watcherCount).toBe(0);
  });

  it('replaces a stale socket file, and refuses a path another server answers on or that is not a socket', async () => {
    const { path, dir } = await serve();
    const again = new MonitorServer({ path, tap: null, hello: () => ({ node: '', backend: '', lease: '', network: '', tunnelMtu: 0 }), log });
    await expect(again.start()).rejects.toThrow(/another process is listening on/);
    const file = join(dir, 'plain');
    writeFileSync(file, '');
    const onFile = new MonitorServer({ path: file, tap: null, hello: () => ({ node: '', backend: '', lease: '', network: '', tunnelMtu: 0 }), log });
    await expect(onFile.start()).rejects.toThrow(/exists and is not a socket/);
  });

  it('a connected watcher that never reads does not hold up forwarding; its socket buffer stays bounded', async () => {
    const { path, node, tap, server, drain } = await serve();
    const c = await client(path, JSON.stringify({ type: 'all', rate: 10000 }) + '\n');
    await until(() => tap.watcherCount === 1);
    c.sock.pause(); // stops reading: the kernel's buffers fill, then Node's
    let sent = 0;
    const big = ping('10.244.1.2', '10.244.2.2', 63, 1400);
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 100; i++) sent += node.egress(big).sent.length;
      drain(); // what setImmediate runs in the daemon
      await new Promise((r) => setImmediate(r));
    }
    expect(sent).toBe(4000);
    const sockets = [...(server as unknown as { sockets: Set<net.Socket> }).sockets];
    expect(sockets).toHaveLength(1);
    // Bounded: at most one record past the limit is ever queued.
    expect(sockets[0].writableLength).toBeLessThan(MAX_PENDING_BYTES + 64 * 1024);
    const w = (tap as unknown as { watchers: ({ notRead: number } | null)[] }).watchers.find((x) => x !== null)!;
    expect(w.notRead).toBeGreaterThan(0);
    c.sock.destroy();
  }, 30_000);
});
