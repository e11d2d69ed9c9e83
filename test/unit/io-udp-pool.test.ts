// UdpSocketPool, vxlan's sender: each packet leaves through the socket its lane names (so its
// source port is that socket's), order is kept within a socket, and the kernel's sockets set DF
// as asked (IP_PMTUDISC_DONT with dfClear).
import { afterEach, describe, expect, it } from 'vitest';
import { PacketList } from '../../src/io/packet-list';
import { UdpSocket } from '../../src/io/udp';
import { UdpSocketPool } from '../../src/io/udp-pool';

const LOOPBACK = 0x7f000001;
const closers: { close(): void }[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c.close();
});

async function recvSome(s: UdpSocket, want: number): Promise<{ port: number; data: Buffer }[]> {
  const rx = new PacketList({ capacity: 64, slotSize: 2048, headroom: 0 });
  const got: { port: number; data: Buffer }[] = [];
  const deadline = Date.now() + 2000;
  while (got.length < want && Date.now() < deadline) {
    const n = s.recv(rx);
    for (let i = 0; i < n; i++) got.push({ port: rx.ports[i], data: Buffer.from(rx.buf.subarray(rx.offs[i], rx.offs[i] + rx.lens[i])) });
    if (n === 0) await new Promise((r) => setTimeout(r, 5));
  }
  return got;
}

describe('UdpSocketPool', () => {
  it('binds distinct kernel-picked ports and sends each packet from the socket its lane picks, in order per socket', async () => {
    const pool = UdpSocketPool.open(LOOPBACK, 4, { dfClear: true });
    closers.push(pool);
    expect(new Set(pool.ports).size).toBe(4);
    for (const p of pool.ports) expect(p).toBeGreaterThan(0);
    const rx = UdpSocket.bind(LOOPBACK, 0);
    closers.push(rx);
    const tx = new PacketList({ capacity: 16, slotSize: 64, headroom: 0 });
    const lanes = [0, 5, 2, 1, 4, 9, 3, 33000, 7, 6];
    for (let i = 0; i < lanes.length; i++) {
      tx.buf.fill(i, i * 64, i * 64 + 10);
      tx.push(i * 64, 10, LOOPBACK, rx.port, lanes[i]);
    }
    expect(pool.send(tx)).toBe(lanes.length);
    const got = await recvSome(rx, lanes.length);
    expect(got.length).toBe(lanes.length);
    const byPort = new Map<number, number[]>();
    for (const g of got) {
      const i = g.data[0];
      expect(g.port, `packet ${i}`).toBe(pool.ports[lanes[i] % 4]);
      byPort.set(g.port, [...(byPort.get(g.port) ?? []), i]);
    }
    for (const seq of byPort.values()) expect(seq).toEqual([...seq].sort((a, b) => a - b));
    // A second, smaller batch reuses the preallocated per-socket descriptors.
    tx.clear();
    tx.push(0, 10, LOOPBACK, rx.port, 2);
    expect(pool.send(tx)).toBe(1);
    expect((await recvSome(rx, 1))[0].port).toBe(pool.ports[2]);
  });

  it('refuses a size outside [1, 256]; with gso one flow’s equal-size run is one message, counted in the summed stats', async () => {
    expect(() => UdpSocketPool.open(LOOPBACK, 0)).toThrow(RangeError);
    expect(() => UdpSocketPool.open(LOOPBACK, 257)).toThrow(RangeError);
    const pool = UdpSocketPool.open(LOOPBACK, 2, { gso: true, dfClear: true });
    closers.push(pool);
    const rx = UdpSocket.bind(LOOPBACK, 0);
    closers.push(rx);
    const empty = new PacketList({ capacity: 1, slotSize: 64, headroom: 0 });
    expect(pool.send(empty)).toBe(0);
    expect(pool.recv(empty)).toBe(0);
    const tx = new PacketList({ capacity: 8, slotSize: 256, headroom: 0 });
    for (let i = 0; i < 4; i++) tx.push(i * 256, 200, LOOPBACK, rx.port, 1);
    tx.push(4 * 256, 100, LOOPBACK, rx.port, 0);
    expect(pool.send(tx)).toBe(5);
    const got = await recvSome(rx, 5);
    expect(got.length).toBe(5);
    expect(got.filter((g) => g.port === pool.ports[1]).map((g) => g.data.length)).toEqual([200, 200, 200, 200]);
    const st = pool.offloadStats();
    expect(st.gsoMessages).toBe(1);
    expect(st.gsoSegments).toBe(4);
  });
});
