// UDP_SEGMENT sends and UDP_GRO receives on loopback (which keeps GSO datagrams whole up to
// the receiving socket): runs are grouped as promised, trains are cut back into the datagrams
// that were sent, and nothing changes for receivers without GRO.

import { afterEach, describe, expect, it } from 'vitest';
import { UDP_COUNTER } from '../../src/io/native';
import { PacketList } from '../../src/io/packet-list';
import { UdpSocket, type UdpBindOptions } from '../../src/io/udp';

const LOOPBACK = 0x7f000001;
const open: UdpSocket[] = [];
function bind(opts: UdpBindOptions = {}): UdpSocket {
  const s = UdpSocket.bind(LOOPBACK, 0, opts);
  open.push(s);
  return s;
}
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

function pattern(i: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let j = 0; j < len; j++) b[j] = (i * 37 + j * 11) & 0xff;
  return b;
}

interface Dgram {
  port: number;
  data: Buffer;
}

/** Fills list with the given datagrams (to LOOPBACK:port), one per slot. */
function batch(list: PacketList, items: { port: number; len: number }[]): Buffer[] {
  list.clear();
  return items.map((it, i) => {
    const off = i * list.slotSize + list.headroom;
    const p = pattern(i, it.len);
    p.copy(list.buf, off);
    list.push(off, it.len, LOOPBACK, it.port);
    return p;
  });
}

/** Receives until `want` datagrams arrived or 2 s passed, a few slots at a time. */
async function recvAll(s: UdpSocket, want: number, slots = 7): Promise<Dgram[]> {
  const rx = new PacketList({ capacity: slots, slotSize: 2048, headroom: 16 });
  const got: Dgram[] = [];
  const deadline = Date.now() + 2000;
  while (got.length < want && Date.now() < deadline) {
    const n = s.recv(rx);
    if (n === 0) {
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    for (let i = 0; i < n; i++) {
      expect(rx.addrs[i]).toBe(LOOPBACK);
      got.push({ port: rx.ports[i], data: Buffer.from(rx.buf.subarray(rx.offs[i], rx.offs[i] + rx.lens[i])) });
    }
  }
  return got;
}

describe('UDP segmentation offload on loopback', () => {
  it('sends a run as one UDP_SEGMENT message that a GRO receiver cuts back', async () => {
    const tx = bind({ gso: true });
    const rx = bind({ gro: true, groRegions: 2 });
    const list = new PacketList({ capacity: 64, slotSize: 2048, headroom: 0 });
    const sent = batch(list, [...Array.from({ length: 30 }, () => ({ port: rx.port, len: 1200 })), { port: rx.port, len: 7 }]);
    expect(tx.send(list)).toBe(31);
    expect(tx.counters[UDP_COUNTER.GSO_MESSAGES]).toBe(1);
    expect(tx.counters[UDP_COUNTER.GSO_SEGMENTS]).toBe(31);
    const got = await recvAll(rx, 31);
    expect(got.map((g) => g.data)).toEqual(sent);
    expect(got.every((g) => g.port === tx.port)).toBe(true);
    expect(rx.counters[UDP_COUNTER.GRO_DATAGRAMS]).toBe(1);
    expect(rx.counters[UDP_COUNTER.GRO_SEGMENTS]).toBe(31);
    expect(rx.pending).toBe(false);
  });

  it('groups only consecutive equal-size datagrams to one peer, at most 64 per message', async () => {
    const tx = bind({ gso: true });
    const a = bind();
    const b = bind();
    const list = new PacketList({ capacity: 128, slotSize: 2048, headroom: 0 });
    const items = [
      ...Array.from({ length: 3 }, () => ({ port: a.port, len: 100 })), // run of 3
      ...Array.from({ length: 2 }, () => ({ port: b.port, len: 100 })), // run of 2 (other peer)
      { port: a.port, len: 100 },
      { port: a.port, len: 50 }, // shorter last ends the run of 2
      { port: a.port, len: 200 }, // larger: alone, plain
      ...Array.from({ length: 70 }, () => ({ port: b.port, len: 64 })), // 64 + 6
    ];
    const sent = batch(list, items);
    expect(tx.send(list)).toBe(items.length);
    expect(tx.counters[UDP_COUNTER.GSO_MESSAGES]).toBe(5);
    expect(tx.counters[UDP_COUNTER.GSO_SEGMENTS]).toBe(3 + 2 + 2 + 64 + 6);
    // Receivers without GRO see each datagram as it was sent, in order.
    const gotA = await recvAll(a, 6);
    const gotB = await recvAll(b, 72, 64);
    expect(gotA.map((g) => g.data)).toEqual(sent.filter((_, i) => items[i].port === a.port));
    expect(gotB.map((g) => g.data)).toEqual(sent.filter((_, i) => items[i].port === b.port));
  });

  it('sends plain datagrams without gso, and skips empty entries in runs', async () => {
    const tx = bind({ gso: true });
    const rx = bind({ gro: true });
    const list = new PacketList({ capacity: 8, slotSize: 2048, headroom: 0 });
    const sent = batch(
      list,
      Array.from({ length: 6 }, () => ({ port: rx.port, len: 300 })),
    );
    list.lens[2] = 0;
    expect(tx.send(list)).toBe(5);
    expect(tx.counters[UDP_COUNTER.GSO_MESSAGES]).toBe(2);
    const got = await recvAll(rx, 5);
    expect(got.map((g) => g.data)).toEqual([sent[0], sent[1], sent[3], sent[4], sent[5]]);
    const plain = bind();
    expect(plain.gso).toBe(false);
    expect(plain.gro).toBe(false);
    const l2 = new PacketList({ capacity: 4, slotSize: 2048, headroom: 0 });
    batch(
      l2,
      Array.from({ length: 4 }, () => ({ port: rx.port, len: 10 })),
    );
    expect(plain.send(l2)).toBe(4);
    expect(Array.from(plain.counters).every((c) => c === 0)).toBe(true);
  });

  it('checks the offload options', () => {
    expect(() => bind({ gro: true, groRegions: 0 })).toThrow(RangeError);
    expect(() => bind({ gro: true, groRegions: 1.5 })).toThrow(RangeError);
    expect(() => bind({ gro: true, groTunnelHeader: -2 })).toThrow(RangeError);
    expect(() => bind({ gro: true, groTunnelMtu: 70000 })).toThrow(RangeError);
  });
});

describe('GRO datagrams waiting in user space', () => {
  it('are handed out by further callbacks, and a callback that stops reading is not spun', async () => {
    const tx = bind({ gso: true });
    const rx = bind({ gro: true, groRegions: 1 });
    const list = new PacketList({ capacity: 64, slotSize: 2048, headroom: 0 });
    const sent = batch(
      list,
      Array.from({ length: 40 }, () => ({ port: rx.port, len: 1000 })),
    );
    const few = new PacketList({ capacity: 5, slotSize: 2048, headroom: 0 });
    const got: Buffer[] = [];
    let calls = 0;
    const done = new Promise<void>((resolve) => {
      rx.onReadable(() => {
        calls++;
        const n = rx.recv(few);
        for (let i = 0; i < n; i++) got.push(Buffer.from(few.buf.subarray(few.offs[i], few.offs[i] + few.lens[i])));
        if (got.length >= 40) resolve();
      });
    });
    expect(tx.send(list)).toBe(40);
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000))]);
    // One train, one readiness: the other 7 batches came from re-runs of the callback.
    expect(got).toEqual(sent);
    expect(calls).toBe(8);
    expect(rx.pending).toBe(false);

    // A callback that takes one batch and then stops reading: one more call finds it idle,
    // and then nothing until the next arrival (no setImmediate loop).
    let idleCalls = 0;
    rx.onReadable(() => {
      idleCalls++;
      if (idleCalls === 1) rx.recv(few);
    });
    batch(
      list,
      Array.from({ length: 40 }, () => ({ port: rx.port, len: 1000 })),
    );
    tx.send(list);
    await new Promise((r) => setTimeout(r, 200));
    expect(rx.pending).toBe(true);
    expect(idleCalls).toBe(2);
  });
});
