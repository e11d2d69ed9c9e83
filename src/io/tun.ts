// A TUN device: the kernel routes IPv4 packets into it and takes packets written to it as if
// they had arrived on a link. Opened IFF_TUN | IFF_NO_PI, so every packet starts at its IP
// header.

import { FdHandle } from './fd-handle';
import { native } from './native';
import type { PacketDevice } from './packet-device';
import type { PacketList } from './packet-list';

export interface TunOpenOptions {
  /**
   * IFF_MULTI_QUEUE: each open of the same name adds a queue, and the kernel spreads flows
   * across the queues' fds, so several readers can share one device.
   */
  multiQueue?: boolean;
}

export class TunDevice implements PacketDevice {
  /** The interface name the kernel assigned (a "tun%d" template comes back expanded). */
  readonly name: string;
  private readonly handle: FdHandle;

  private constructor(fd: number, name: string) {
    this.name = name;
    this.handle = new FdHandle(fd, `TUN ${name}`);
  }

  /** Creates (or, with multiQueue, attaches another queue to) the TUN interface `name`. */
  static open(name: string, opts: TunOpenOptions = {}): TunDevice {
    const r = native.tunOpen(name, opts.multiQueue ?? false);
    return new TunDevice(r.fd, r.name);
  }

  /** The file descriptor; -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }

  /**
   * Reads every packet queued (up to the list's slots) into the list's slab, from slot 0, and
   * sets list.count. A packet larger than a slot comes back with lens[i] = -1.
   */
  read(list: PacketList): number {
    const n = native.readPackets(this.handle.live(), list.buf, list.slotSize, list.headroom, list.slots, list.offs, list.lens);
    list.count = n;
    return n;
  }

  /** Writes list's first `count` packets; returns how many the kernel took. */
  write(list: PacketList): number {
    return native.writePackets(this.handle.live(), list.buf, list.offs, list.lens, list.count);
  }

  /**
   * Calls cb whenever packets are waiting (level-triggered: read until read() returns 0, or cb
   * fires again). A second call replaces the first callback. If the device goes away under the
   * fd, cb gets the error once and is not called again.
   */
  onReadable(cb: (err?: Error) => void): void {
    this.handle.onReadable(cb);
  }

  /** Stops polling and closes the fd (the interface disappears unless other queues hold it). Idempotent. */
  close(): void {
    this.handle.close();
  }
}
