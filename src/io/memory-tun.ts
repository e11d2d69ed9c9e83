// The in-memory double of TunDevice (tun.ts), beside the PacketDevice interface both implement.

import type { PacketDevice } from './packet-device';
import type { PacketList } from './packet-list';

/**
 * A TUN device in memory, for weft trace/replay/wire and tests: `read` fills the list the way the native
 * readPackets does (one packet per slot at slot + headroom, lens -1 if it does not fit) and
 * `write` keeps copies of what the datapath writes into the device.
 */
export class MemoryTun implements PacketDevice {
  readonly queue: Uint8Array[] = [];
  readonly written: Buffer[] = [];
  ready: ((err?: Error) => void) | null = null;

  read(list: PacketList): number {
    const room = list.slotSize - list.headroom;
    let n = 0;
    const slots = list.slots;
    while (n < slots && this.queue.length > 0) {
      const pkt = this.queue.shift()!;
      const off = n * list.slotSize + list.headroom;
      list.offs[n] = off;
      if (pkt.length > room) {
        list.lens[n] = -1;
      } else {
        list.buf.set(pkt, off);
        list.lens[n] = pkt.length;
      }
      n++;
    }
    list.count = n;
    return n;
  }

  write(list: PacketList): number {
    for (let i = 0; i < list.count; i++) {
      if (list.lens[i] <= 0) continue;
      this.written.push(Buffer.from(list.buf.subarray(list.offs[i], list.offs[i] + list.lens[i])));
    }
    return list.count;
  }

  onReadable(cb: (err?: Error) => void): void {
    this.ready = cb;
  }

  close(): void {}
}
