// What TunDevice and UdpSocket share: an owned non-blocking fd, its readiness watcher, and a
// close that is safe to repeat. They hold one rather than extend it: as a subclass, UdpSocket's
// static bind() would have to be marked `override` (of Function.prototype.bind, inherited
// through the base's static side), which says something untrue.

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
