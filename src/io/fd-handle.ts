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
  // Bumped by every onReadable and close, so a resume queued for an older callback is dropped.
  private generation = 0;
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

  /**
   * Level-triggered readiness callback (native.pollStart); a second call replaces the first.
   *
   * again: asked once after each callback whether it should run again at once. For data already
   * taken from the kernel that still waits in user space (a super-packet or GRO train only
   * partly handed out because the caller's slots ran out): the fd is then not readable, so poll
   * alone would leave it waiting for the next arrival, which a TCP sender may not send before
   * our ACKs. The callback then runs again from setImmediate.
   */
  onReadable(cb: (err?: Error) => void, again?: () => boolean): void {
    const fd = this.live();
    if (this.poll) this.poll.close();
    this.poll = undefined;
    const gen = ++this.generation;
    let queued = false;
    const fire =
      again === undefined
        ? cb
        : (err?: Error): void => {
            cb(err);
            if (err || queued || gen !== this.generation || this.fdValue < 0 || !again()) return;
            queued = true;
            setImmediate(() => {
              queued = false;
              if (gen === this.generation && this.fdValue >= 0) fire();
            });
          };
    this.poll = native.pollStart(fd, fire);
  }

  /** Stops polling and closes the fd; idempotent. */
  close(): void {
    this.generation++;
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
