// Datapath busy polling (--busy-poll-us): after a readiness callback moved packets, the datapath
// keeps polling both sides until N µs pass without a packet, so a packet that turns up meanwhile
// is forwarded without waiting to be woken; it hands the event loop back every 2 ms of spinning,
// and then it stops, never past its bound.
import { describe, expect, it } from 'vitest';
import { UdpBackend } from '../../src/datapath/backends/udp';
import { BUSY_POLL_MAX_US, Datapath } from '../../src/datapath/datapath';
import { PeerCounters, type Peer } from '../../src/datapath/peer';
import { Pipeline } from '../../src/datapath/pipeline';
import { DatapathStats } from '../../src/datapath/stats';
import { MemoryTransport } from '../../src/io/memory-transport';
import { MemoryTun } from '../../src/io/memory-tun';
import type { PacketList } from '../../src/io/packet-list';
import { buildIpv4Packet } from '../../src/packet/builder';
import { RouteTable } from '../../src/route/route-table';
import { parseCidr, parseIpv4 } from '../../src/route/address';

const LOCAL = parseCidr('10.244.1.0/24');
const PEER_IP = parseIpv4('192.168.77.12');

/** A socket whose datagram from the peer only "arrives" on its Nth receive call (MAX_SAFE_INTEGER: never; a spin makes millions). */
class LateTransport extends MemoryTransport {
  calls = 0;
  constructor(private readonly arriveOn: number) {
    super('udp', parseIpv4('192.168.77.11'), 8285, 1500);
  }
  override recv(list: PacketList): number {
    this.calls++;
    if (this.calls === this.arriveOn) {
      const pkt = buildIpv4Packet({ src: '10.244.2.5', dst: '10.244.1.5', payload: Buffer.alloc(100) });
      this.queue.push({ payload: pkt, addr: PEER_IP, port: 8285 });
    }
    return super.recv(list);
  }
}

function datapath(busyPollUs: number, arriveOn: number) {
  const routes = new RouteTable<Peer>();
  const peer: Peer = {
    subnet: parseCidr('10.244.2.0/24'),
    publicIp: PEER_IP,
    port: 8285,
    backendData: {},
    local: false,
    direct: false,
    backendState: null,
    counters: new PeerCounters(),
  };
  routes.update((t) => {
    t.insert(LOCAL.addr, LOCAL.len, { ...peer, subnet: LOCAL, publicIp: parseIpv4('192.168.77.11'), local: true });
    t.insert(peer.subnet.addr, peer.subnet.len, peer);
  });
  const stats = new DatapathStats();
  const pipeline = new Pipeline({
    backend: new UdpBackend(),
    routes,
    peersByAddr: new Map([[PEER_IP, peer]]),
    network: parseCidr('10.244.0.0/16'),
    localSubnet: LOCAL,
    icmpSource: LOCAL.addr,
    stats,
    batchSize: 8,
    tunnelMtu: 1472,
  });
  const tun = new MemoryTun();
  const sock = new LateTransport(arriveOn);
  // Counted, not sched_yield(2): on a loaded machine a real yield can give the CPU away for a
  // whole slice, and these cases are about what is polled, not about the scheduler.
  const yields = { n: 0 };
  const dp = new Datapath(tun, sock, pipeline, { batchSize: 8, busyPollUs, yieldCpu: () => yields.n++ });
  dp.start((e) => {
    throw e;
  });
  return { tun, sock, stats, yields, dp };
}

describe('Datapath busy polling', () => {
  it('forwards a packet that arrives while it spins, in the same turn, and counts the time spun', () => {
    const { tun, sock, stats, yields } = datapath(BUSY_POLL_MAX_US, 5);
    tun.queue.push(buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.5', payload: Buffer.alloc(100) }));
    tun.ready!();
    expect(stats.txPackets).toBe(1);
    // The reply "arrived" on the 5th receive: only polling picked it up, nobody fired the socket's callback.
    expect(sock.calls).toBeGreaterThanOrEqual(5);
    expect(tun.written).toHaveLength(1);
    expect(stats.rxPackets).toBe(1);
    expect(stats.busyPollNs).toBeGreaterThan(0);
    // Between the empty polls before it, the CPU was offered to whatever else was woken.
    expect(yields.n).toBeGreaterThanOrEqual(4);
  });

  it('stops after its bound even when nothing comes, and not at all without the option', () => {
    const spin = datapath(1_000, Number.MAX_SAFE_INTEGER);
    spin.tun.queue.push(buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.5', payload: Buffer.alloc(100) }));
    const t0 = performance.now();
    spin.tun.ready!();
    // 1 ms of quiet, inside one 2 ms slice (plus slack for a slow machine).
    expect(performance.now() - t0).toBeLessThan(50);
    // The 1 ms of quiet counts from the packet, a moment before the spin's own clock starts.
    expect(spin.stats.busyPollNs).toBeGreaterThanOrEqual(900_000);
    expect(spin.sock.calls).toBeGreaterThan(1);
    // Every empty poll yielded; the one that moved the first packet was the readiness callback's.
    expect(spin.yields.n).toBe(spin.sock.calls);

    const idle = datapath(0, 2);
    idle.tun.queue.push(buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.5', payload: Buffer.alloc(100) }));
    idle.tun.ready!();
    expect(idle.sock.calls).toBe(0);
    expect(idle.stats.busyPollNs).toBe(0);
    expect(idle.stats.txPackets).toBe(1);
    expect(idle.yields.n).toBe(0);
  });

  it('spins longer than a slice by handing the event loop back between slices, then sleeps', async () => {
    const { tun, sock, stats, dp } = datapath(200_000, Number.MAX_SAFE_INTEGER);
    tun.queue.push(buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.5', payload: Buffer.alloc(100) }));
    const t0 = performance.now();
    tun.ready!();
    // The readiness callback returned after one 2 ms slice, long before the 200 ms window ends...
    expect(performance.now() - t0).toBeLessThan(100);
    const afterFirstSlice = sock.calls;
    // ...a timer set now fires (the loop gets its turns between slices), and polling goes on after it.
    const atTimer = await new Promise<number>((resolve) => setTimeout(() => resolve(sock.calls), 5));
    expect(atTimer).toBeGreaterThan(afterFirstSlice);
    await new Promise((resolve) => setTimeout(resolve, 350));
    expect(sock.calls).toBeGreaterThan(atTimer);
    // After 200 ms of quiet it went to sleep: no more polls.
    const settled = sock.calls;
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(sock.calls).toBe(settled);
    // Spun through many slices (the gaps between them, the loop's turns, are not counted).
    expect(stats.busyPollNs).toBeGreaterThanOrEqual(20_000_000);
    expect(stats.busyPollNs).toBeLessThan(1_000_000_000);
    dp.stop();
  });

  it('a packet during a long window keeps it open, and stop() ends it between slices', async () => {
    // The datagram arrives on receive call 50, somewhere in a later slice: it is forwarded by polling.
    const { tun, sock, stats, dp } = datapath(1_000_000, 50);
    tun.queue.push(buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.5', payload: Buffer.alloc(100) }));
    tun.ready!();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(stats.rxPackets).toBe(1);
    expect(tun.written).toHaveLength(1);
    dp.stop();
    const stopped = sock.calls;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sock.calls).toBe(stopped);
  });

  it('refuses a bound that is not a whole number of µs, or beyond 1 s', () => {
    expect(() => datapath(-1, 1)).toThrow(RangeError);
    expect(() => datapath(BUSY_POLL_MAX_US + 1, 1)).toThrow(/0\.\.1000000/);
    expect(() => datapath(1.5, 1)).toThrow(/busy-poll/);
  });
});
