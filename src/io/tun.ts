// A TUN device: the kernel routes IPv4 packets into it and takes packets written to it as if
// they had arrived on a link. Opened IFF_TUN | IFF_NO_PI, so every packet starts at its IP
// header.

import { native, type PollHandle } from './native';
import type { PacketList } from './packet-list';

export interface TunOpenOptions {
  /**
   * IFF_MULTI_QUEUE: each open of the same name adds a queue, and the kernel spreads flows
   * across the queues' fds, so several readers can share one device.
   */
  multiQueue?: boolean;
}

export class TunDevice {
  /** The interface name the kernel assigned (a "tun%d" template comes back expanded). */
  readonly name: string;
  private fdValue: number;
  private poll: PollHandle | undefined;

  private constructor(fd: number, name: string) {
    this.fdValue = fd;
    this.name = name;
    this.poll = undefined;
  }

  /** Creates (or, with multiQueue, attaches another queue to) the TUN interface `name`. */
  static open(name: string, opts: TunOpenOptions = {}): TunDevice {
    const r = native.tunOpen(name, opts.multiQueue ?? false);
    return new TunDevice(r.fd, r.name);
  }

  /** The file descriptor; -1 once closed. */
  get fd(): number {
    return this.fdValue;
  }

  /**
   * Reads every packet queued (up to the list's slots) into the list's slab, from slot 0, and
   * sets list.count. A packet larger than a slot comes back with lens[i] = -1.
   */
  read(list: PacketList): number {
    const n = native.readPackets(
      this.liveFd(),
      list.buf,
      list.slotSize,
      list.headroom,
      list.slots,
      list.offs,
      list.lens,
    );
    list.count = n;
    return n;
  }

  /** Writes list's first `count` packets; returns how many the kernel took. */
  write(list: PacketList): number {
    return native.writePackets(this.liveFd(), list.buf, list.offs, list.lens, list.count);
  }

  /**
   * Calls cb whenever packets are waiting (level-triggered: read until read() returns 0, or cb
   * fires again). A second call replaces the first callback. If the device goes away under the
   * fd, cb gets the error once and is not called again.
   */
  onReadable(cb: (err?: Error) => void): void {
    const fd = this.liveFd();
    if (this.poll) this.poll.close();
    this.poll = undefined;
    this.poll = native.pollStart(fd, cb);
  }

  /** Stops polling and closes the fd (the interface disappears unless other queues hold it). Idempotent. */
  close(): void {
    if (this.poll) {
      this.poll.close();
      this.poll = undefined;
    }
    const fd = this.fdValue;
    if (fd < 0) return;
    // Forget the number first: the kernel reuses it at the next open, and a stale read would
    // then hit someone else's file.
    this.fdValue = -1;
    native.close(fd);
  }

  private liveFd(): number {
    const fd = this.fdValue;
    if (fd < 0) throw new Error(`TUN ${this.name} is closed`);
    return fd;
  }
}
