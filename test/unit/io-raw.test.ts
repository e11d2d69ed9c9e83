import { describe, expect, it } from 'vitest';
import { loadNative } from '../../src/io/native';
import { PacketList } from '../../src/io/packet-list';
import { IPPROTO_RAW, RawSocket } from '../../src/io/raw';
import { SplitTransport } from '../../src/io/split-transport';
import type { Transport } from '../../src/io/transport';

// Opening a raw socket needs CAP_NET_RAW (test/integration/io-raw.test.ts does it in namespaces);
// argument checks happen before socket(), so they are testable anywhere.
describe('RawSocket.open argument checks', () => {
  const rawOpen = (loadNative() as unknown as { rawOpen: (...a: unknown[]) => number }).rawOpen;

  it('refuses protocols outside 1..255 and non-integers before any syscall', () => {
    expect(() => RawSocket.open(0)).toThrow(new RangeError('protocol out of range [1, 255]: 0'));
    expect(() => RawSocket.open(256)).toThrow(RangeError);
    expect(() => RawSocket.open(-4)).toThrow(RangeError);
    expect(() => RawSocket.open(4.5)).toThrow(new RangeError('protocol must be an integer'));
    expect(() => RawSocket.open(Number.NaN)).toThrow(RangeError);
  });

  it('checks every native argument by type and range', () => {
    expect(() => rawOpen('4', false, 0, 0, 0)).toThrow(new TypeError('protocol must be a number'));
    expect(() => rawOpen(4, 1, 0, 0, 0)).toThrow(new TypeError('hdrincl must be a boolean'));
    expect(() => rawOpen(4, false)).toThrow(new TypeError('bindAddr must be a number'));
    expect(() => rawOpen(4, false, 2 ** 32, 0, 0)).toThrow(RangeError);
    expect(() => rawOpen(4, false, 0, -1, 0)).toThrow(RangeError);
    expect(() => rawOpen(4, false, 0, 0, 2 ** 31)).toThrow(RangeError);
  });

  it('names IPPROTO_RAW', () => {
    expect(IPPROTO_RAW).toBe(255);
  });
});

/** A Transport that records what reaches it. */
class Recorder implements Transport {
  calls: string[] = [];
  cb: ((err?: Error) => void) | undefined;
  constructor(
    private readonly name: string,
    private readonly closeThrows = false,
  ) {}
  recv(list: PacketList): number {
    this.calls.push(`${this.name}.recv`);
    list.count = 0;
    list.push(0, 7, 0x0a000001, 0);
    return 1;
  }
  send(list: PacketList): number {
    this.calls.push(`${this.name}.send`);
    return list.count;
  }
  onReadable(cb: (err?: Error) => void): void {
    this.calls.push(`${this.name}.onReadable`);
    this.cb = cb;
  }
  close(): void {
    this.calls.push(`${this.name}.close`);
    if (this.closeThrows) throw new Error(`${this.name} close failed`);
  }
}

describe('SplitTransport', () => {
  it('receives and waits on one transport and sends on the other', () => {
    const rx = new Recorder('rx');
    const tx = new Recorder('tx');
    const t = new SplitTransport(rx, tx);
    const list = new PacketList({ capacity: 4, slotSize: 64, headroom: 0 });
    expect(t.recv(list)).toBe(1);
    expect(list.lens[0]).toBe(7);
    expect(t.send(list)).toBe(1);
    let fired = 0;
    t.onReadable(() => fired++);
    rx.cb?.();
    expect(fired).toBe(1);
    expect(rx.calls).toEqual(['rx.recv', 'rx.onReadable']);
    expect(tx.calls).toEqual(['tx.send']);
    t.close();
    expect(rx.calls.at(-1)).toBe('rx.close');
    expect(tx.calls.at(-1)).toBe('tx.close');
  });

  it('closes the sender even when closing the receiver throws', () => {
    const rx = new Recorder('rx', true);
    const tx = new Recorder('tx');
    expect(() => new SplitTransport(rx, tx).close()).toThrow('rx close failed');
    expect(tx.calls).toEqual(['tx.close']);
  });
});
