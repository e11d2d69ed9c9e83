// What TunDevice and DatagramSocket (and so UdpSocket and RawSocket) share: an owned
// non-blocking fd, its readiness watcher, and a close that is safe to repeat. Each holds one
// rather than extending a common base class: a TUN device is not a socket, and the two share
// only this fd lifecycle, not their read/write calls. (The sockets do form a hierarchy of their
// own: UdpSocket and RawSocket extend DatagramSocket, which is why UdpSocket's static bind()
// is marked `override` — a class's static side inherits Function.prototype.bind.)

import { native, type PollHandle } from './native';

export class FdHandle {
  private fdValue: number;
  private poll: PollHandle | undefined;
  /** Names the handle in the error thrown when it is used after close. */
  private readonly label: string;

  constructor(fd: number, label: string) {
    this.fdValue = fd;
    this.poll = undefined;
    this.label = label;
  }

  /** The file descriptor; -1 once closed. */
  get fd(): number {
    return this.fdValue;
  }

  /** Level-triggered readiness callback (native.pollStart); a second call replaces the first. */
  onReadable(cb: (err?: Error) => void): void {
    const fd = this.live();
    if (this.poll) this.poll.close();
    this.poll = undefined;
    this.poll = native.pollStart(fd, cb);
  }

  /** Stops polling and closes the fd; idempotent. */
  close(): void {
    if (this.poll) {
      this.poll.close();
      this.poll = undefined;
    }
    const fd = this.fdValue;
    if (fd < 0) return;
    // Forget the number first: the kernel hands it out again at the next open, and a stale read
    // would then hit someone else's file.
    this.fdValue = -1;
    native.close(fd);
  }

  /** The fd, or an error naming the handle once it is closed. */
  live(): number {
    const fd = this.fdValue;
    if (fd < 0) throw new Error(`${this.label} is closed`);
    return fd;
  }
}
