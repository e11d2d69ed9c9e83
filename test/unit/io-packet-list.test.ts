import { describe, expect, it } from 'vitest';
import { PacketList } from '../../src/io/packet-list';

describe('PacketList', () => {
  it("owns one slab of capacity * slotSize bytes, outside Buffer's shared pool", () => {
    const l = new PacketList({ capacity: 8, slotSize: 256, headroom: 32 });
    expect(l.buf.length).toBe(8 * 256);
    // A pooled Buffer is a slice of a larger 8 KiB ArrayBuffer; allocUnsafeSlow is not.
    expect(l.buf.byteOffset).toBe(0);
    expect(l.buf.buffer.byteLength).toBe(8 * 256);
    expect([l.offs.length, l.lens.length, l.addrs.length, l.ports.length]).toEqual([8, 8, 8, 8]);
    expect(l.count).toBe(0);
    expect(l.slots).toBe(8);
  });

  it('push fills descriptors in order and refuses past capacity', () => {
    const l = new PacketList({ capacity: 2, slotSize: 64, headroom: 0 });
    expect(l.push(10, 20, 0x0a000001, 8285)).toBe(true);
    expect(l.push(70, 5)).toBe(true);
    expect(l.push(130, 1)).toBe(false);
    expect(l.count).toBe(2);
    expect([...l.offs]).toEqual([10, 70]);
    expect([...l.lens]).toEqual([20, 5]);
    expect([...l.addrs]).toEqual([0x0a000001, 0]);
    expect([...l.ports]).toEqual([8285, 0]);
    l.clear();
    expect(l.count).toBe(0);
    expect(l.push(1, 1)).toBe(true);
    expect(l.offs[0]).toBe(1);
  });

  it('view shares the slab but has its own, empty descriptors', () => {
    const rx = new PacketList({ capacity: 4, slotSize: 128, headroom: 16 });
    rx.push(16, 10);
    const tx = PacketList.view(rx);
    expect(tx.buf).toBe(rx.buf);
    expect(tx.count).toBe(0);
    expect([tx.capacity, tx.slotSize, tx.headroom]).toEqual([4, 128, 16]);
    tx.push(144, 3);
    expect(rx.offs[0]).toBe(16);
    expect(tx.offs[0]).toBe(144);
    tx.buf[144] = 0x45;
    expect(rx.buf[144]).toBe(0x45);

    const wide = PacketList.view(rx, 16);
    expect(wide.capacity).toBe(16);
    // A receive into the wider view can only use the slots the shared slab has.
    expect(wide.slots).toBe(4);
  });

  it('rejects impossible geometry', () => {
    expect(() => new PacketList({ capacity: 0, slotSize: 64, headroom: 0 })).toThrow(RangeError);
    expect(() => new PacketList({ capacity: 1, slotSize: 64, headroom: 64 })).toThrow(RangeError);
    expect(() => new PacketList({ capacity: 1.5, slotSize: 64, headroom: 0 })).toThrow(RangeError);
    expect(() => new PacketList({ capacity: 1 << 20, slotSize: 1 << 12, headroom: 0 })).toThrow(RangeError);
  });
});
