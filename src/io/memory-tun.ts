// The in-memory double of TunDevice (tun.ts), beside the PacketDevice interface both implement.

import { VIRTIO_NET_HDR_LEN } from '../packet/virtio';
import { native, TUN_COUNTER } from './native';
import type { PacketDevice } from './packet-device';
import type { PacketList } from './packet-list';

/**
 * A TUN device in memory, for weft trace/replay/wire and tests: `read` fills the list the way the native
 * readPackets does (one packet per slot at slot + headroom, lens -1 if it does not fit) and
 * `write` keeps copies of what the datapath writes into the device, after the addon's tunWrite
 * work (native.tcpCoalesce: partial checksums finished, and with vnetHdr segments merged).
 *
 * With vnetHdr it stands for a TUN opened with IFF_VNET_HDR and offloads granted, and runs the
 * addon's own offload code on both sides, as TunDevice does: each queued item is one read(2)'s
 * worth (virtio-net header + packet, possibly a 64 KiB GSO super-packet) and `read` splits it
 * with native.gsoSplit (the split tunReadVnet runs); `write` hands the batch to
 * native.tcpCoalesce (tunWrite's coalescer without the fd) and keeps each write unit, virtio-net
 * header first, as writev would hand it to the kernel. `counters` are TUN_COUNTER's.
 */
export class MemoryTun implements PacketDevice {
  readonly queue: Uint8Array[] = [];
  readonly written: Buffer[] = [];
  readonly counters = new Float64Array(TUN_COUNTER.COUNT);
  ready: ((err?: Error) => void) | null = null;
  // A super-packet cut across reads when the slots ran out: where gsoSplit resumes.
  private readonly splitState = new Int32Array(2);

  constructor(readonly vnetHdr = false) {}

  read(list: PacketList): number {
    if (this.vnetHdr) return this.readVnet(list);
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

  private readVnet(list: PacketList): number {
    let n = 0;
    while (n < list.slots && this.queue.length > 0) {
      const src = this.queue[0];
      // gsoSplit fills from slot 0 of what it is given: hand it the slab from slot n on.
      const base = n * list.slotSize;
      const offs = list.offs.subarray(n);
      const lens = list.lens.subarray(n);
      const c = native.gsoSplit(
        src,
        src.length,
        list.buf.subarray(base),
        list.slotSize,
        list.headroom,
        list.slots - n,
        offs,
        lens,
        this.splitState,
        this.counters,
      );
      for (let i = 0; i < c; i++) offs[i] += base;
      n += c;
      // A split left unfinished (slots ran out) resumes from the same item on the next read.
      if (this.splitState[0] !== 0) break;
      this.queue.shift();
    }
    list.count = n;
    return n;
  }

  write(list: PacketList): number {
    // Through the addon either way, as TunDevice.write goes through tunWrite: it finishes
    // pseudo-header-only checksums on every write; with vnetHdr it also coalesces and puts a
    // virtio-net header first. Without, each unit is one packet, as one write(2) would take it.
    const vnet = this.vnetHdr;
    let bytes = 0;
    for (let i = 0; i < list.count; i++) bytes += Math.max(0, list.lens[i]) + (vnet ? VIRTIO_NET_HDR_LEN : 0);
    const out = Buffer.alloc(bytes);
    const outOffs = new Int32Array(list.count);
    const outLens = new Int32Array(list.count);
    const units = native.tcpCoalesce(list.buf, list.offs, list.lens, list.count, vnet, out, outOffs, outLens, this.counters);
    for (let u = 0; u < units; u++) this.written.push(Buffer.from(out.subarray(outOffs[u], outOffs[u] + outLens[u])));
    return list.count;
  }

  onReadable(cb: (err?: Error) => void): void {
    this.ready = cb;
  }

  close(): void {}
}
