import type { PacketDevice } from '../io/packet-device';
import { PacketList } from '../io/packet-list';
import { yieldCpu } from '../io/sched';
import type { Transport } from '../io/transport';
import type { Pipeline } from './pipeline';
import { batchSizeBucket, Drop } from './stats';

/** Slab slot: room for a 1500-byte underlay packet plus headroom, rounded to a cache-friendly size. */
export const SLOT_SIZE = 2048;
export const DEFAULT_HEADROOM = 64;
export const DEFAULT_BATCH = 64;
/**
 * Batches handled per readiness callback before yielding to the event loop. libuv's poll is
 * level-triggered, so whatever is left makes the callback fire again on the next loop turn;
 * yielding keeps the other direction (and the control plane's timers) from starving.
 */
const ROUNDS_PER_WAKEUP = 8;
/**
 * With busy polling, the longest the datapath spins before it hands the event loop back (the
 * control plane's timers, the gRPC watch and the health server run there). If the quiet window
 * has not ended by then, the spin resumes from setImmediate once the loop has had its turn:
 * level-triggered readiness brings packets that came meanwhile straight back too.
 */
const BUSY_POLL_SLICE_MS = 2;
/**
 * The largest `busyPollUs` (1 s). A window longer than the gap between a conversation's packets
 * keeps the datapath out of sleep for that conversation, which is what an idle round trip needs
 * on a machine whose wake-ups are slow (docs/benchmarks.md, "Idle latency"); beyond a second it
 * is a spinning daemon under another name.
 */
export const BUSY_POLL_MAX_US = 1_000_000;

export interface DatapathOptions {
  batchSize?: number;
  /**
   * Busy polling (`weft daemon --busy-poll-us N`): after handling packets, keep polling both
   * descriptors for up to N µs of quiet before going back to sleep in the event loop. An idle
   * round trip then skips the scheduler's wake-up of a sleeping process on every hop, at the
   * price of a CPU spinning for N µs after each burst. 0 (the default): sleep when idle.
   */
  busyPollUs?: number;
  /**
   * What busy polling calls between empty polls: sched_yield(2) by default (io/sched.ts).
   * Tests pass their own to count calls without giving the CPU away.
   */
  yieldCpu?: () => void;
}

/**
 * The I/O loop around the pipeline: TUN readable → read a batch → pipeline.egress → one
 * batched send on the backend's transport; transport readable → receive a batch →
 * pipeline.ingress → write the batch to TUN (and send any replies the backend wrote).
 * All lists are allocated here once; nothing on this path allocates per packet.
 */
export class Datapath {
  private readonly tunRx: PacketList;
  private readonly tunTx: PacketList;
  private readonly sockRx: PacketList;
  private readonly toTun: PacketList;
  private running = false;
  private readonly busyPollMs: number;
  /** A spin is under way (possibly between slices, waiting for its setImmediate). */
  private spinning = false;
  /** performance.now() when the last packet moved: the quiet window counts from here. */
  private lastMoved = 0;
  private nextSlice: NodeJS.Immediate | null = null;
  private readonly yieldCpu: () => void;

  constructor(
    private readonly tun: PacketDevice,
    private readonly sock: Transport,
    private readonly pipeline: Pipeline,
    opts: DatapathOptions = {},
  ) {
    const batchSize = opts.batchSize ?? DEFAULT_BATCH;
    const us = opts.busyPollUs ?? 0;
    if (!Number.isInteger(us) || us < 0 || us > BUSY_POLL_MAX_US)
      throw new RangeError(`busy-poll must be an integer number of µs in 0..${BUSY_POLL_MAX_US}: ${us}`);
    this.busyPollMs = us / 1000;
    this.yieldCpu = opts.yieldCpu ?? yieldCpu;
    const headroom = Math.max(DEFAULT_HEADROOM, pipeline.backend.headroom);
    this.tunRx = new PacketList({ capacity: batchSize, slotSize: SLOT_SIZE, headroom });
    this.tunTx = PacketList.view(this.tunRx);
    this.sockRx = new PacketList({ capacity: batchSize, slotSize: SLOT_SIZE, headroom });
    this.toTun = PacketList.view(this.sockRx);
  }

  /**
   * `onError` hears about a descriptor libuv stopped polling (POLLERR: e.g. the TUN device was
   * deleted under us). Forwarding cannot continue on it, so the daemon treats it as fatal.
   */
  start(onError: (e: Error) => void): void {
    if (this.running) return;
    this.running = true;
    this.tun.onReadable((err) => (err ? this.fail(err, onError) : this.woken(this.onTunReadable())));
    this.sock.onReadable((err) => (err ? this.fail(err, onError) : this.woken(this.onSocketReadable())));
  }

  /** After a readiness callback moved `moved` packets: with busy polling, spin until quiet. */
  private woken(moved: number): void {
    if (this.busyPollMs === 0 || moved === 0) return;
    this.lastMoved = performance.now();
    if (!this.spinning) this.spin();
  }

  /** One slice of a spin: poll until `busyPollMs` of quiet or BUSY_POLL_SLICE_MS, whichever first. */
  private spin(): void {
    this.spinning = true;
    this.nextSlice = null;
    const start = performance.now();
    let quiet = false;
    for (;;) {
      const now = performance.now();
      if (!this.running || now - this.lastMoved > this.busyPollMs) {
        quiet = true;
        break;
      }
      if (now - start > BUSY_POLL_SLICE_MS) break;
      // One batch each way per turn, so neither direction waits on the other's burst.
      if (this.onTunReadable(1) + this.onSocketReadable(1) > 0) this.lastMoved = performance.now();
      // Nothing moved: step aside for whatever was woken on this CPU (the pod that just got
      // its packet, ksoftirqd, the other node's daemon on a small box) instead of spinning
      // through it until the scheduler's tick preempts us.
      else this.yieldCpu();
    }
    this.pipeline.stats.busyPollNs += Math.round((performance.now() - start) * 1e6);
    // Still inside the window: let the event loop run its timers and callbacks, then go on.
    if (quiet) this.spinning = false;
    else this.nextSlice = setImmediate(() => this.spin());
  }

  private fail(err: Error, onError: (e: Error) => void): void {
    this.running = false;
    onError(err);
  }

  stop(): void {
    this.running = false;
    if (this.nextSlice) clearImmediate(this.nextSlice);
    this.nextSlice = null;
    this.spinning = false;
  }

  /** Egress: pods → TUN → peers. Returns the packets read. */
  onTunReadable(rounds = ROUNDS_PER_WAKEUP): number {
    let moved = 0;
    const rx = this.tunRx;
    const tx = this.tunTx;
    const icmp = this.pipeline.icmpOut;
    const stats = this.pipeline.stats;
    for (let round = 0; round < rounds && this.running; round++) {
      const n = this.tun.read(rx);
      if (n === 0) break;
      moved += n;
      stats.tunReadBatches++;
      stats.tunReadBatchSizes[batchSizeBucket(n)]++;
      tx.clear();
      icmp.clear();
      // weft monitor (tap.ts): one null test per batch while nobody is attached.
      const tap = this.pipeline.tap;
      if (tap !== null) tap.batch(false, rx);
      this.pipeline.egress(rx, tx);
      if (tx.count > 0) {
        const sent = this.sock.send(tx);
        if (sent < tx.count) {
          const lost = tx.count - sent;
          stats.drops[Drop.SendFailed] += lost;
          stats.txPackets -= lost;
          if (tap !== null) tap.lost(Drop.SendFailed, false, lost);
        }
      }
      if (icmp.count > 0) {
        const written = this.tun.write(icmp);
        stats.icmpSent += written;
      }
      if (n < rx.capacity) break;
    }
    return moved;
  }

  /** Ingress: peers → socket → TUN → pods. Returns the datagrams received. */
  onSocketReadable(rounds = ROUNDS_PER_WAKEUP): number {
    let moved = 0;
    const rx = this.sockRx;
    const out = this.toTun;
    const replies = this.pipeline.replies;
    const stats = this.pipeline.stats;
    for (let round = 0; round < rounds && this.running; round++) {
      const n = this.sock.recv(rx);
      if (n === 0) break;
      moved += n;
      stats.sockRecvBatches++;
      stats.sockRecvPackets += n;
      stats.sockRecvBatchSizes[batchSizeBucket(n)]++;
      out.clear();
      replies.clear();
      const tap = this.pipeline.tap;
      if (tap !== null) tap.batch(true, rx);
      this.pipeline.ingress(rx, out);
      if (out.count > 0) {
        const written = this.tun.write(out);
        stats.tunWritePackets += written;
        if (written < out.count) {
          stats.drops[Drop.TunWriteFailed] += out.count - written;
          if (tap !== null) tap.lost(Drop.TunWriteFailed, true, out.count - written);
        }
      }
      if (replies.count > 0) this.sock.send(replies);
      if (n < rx.capacity) break;
    }
    return moved;
  }
}
