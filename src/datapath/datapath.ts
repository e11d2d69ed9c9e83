import type { PacketDevice } from '../io/packet-device';
import { PacketList } from '../io/packet-list';
import type { Transport } from '../io/transport';
import type { Pipeline } from './pipeline';
import { Drop } from './stats';

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

  constructor(
    private readonly tun: PacketDevice,
    private readonly sock: Transport,
    private readonly pipeline: Pipeline,
    batchSize = DEFAULT_BATCH,
  ) {
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
    this.tun.onReadable((err) => (err ? this.fail(err, onError) : this.onTunReadable()));
    this.sock.onReadable((err) => (err ? this.fail(err, onError) : this.onSocketReadable()));
  }

  private fail(err: Error, onError: (e: Error) => void): void {
    this.running = false;
    onError(err);
  }

  stop(): void {
    this.running = false;
  }

  /** Egress: pods → TUN → peers. */
  onTunReadable(): void {
    const rx = this.tunRx;
    const tx = this.tunTx;
    const icmp = this.pipeline.icmpOut;
    const stats = this.pipeline.stats;
    for (let round = 0; round < ROUNDS_PER_WAKEUP && this.running; round++) {
      const n = this.tun.read(rx);
      if (n === 0) break;
      stats.tunReadBatches++;
      tx.clear();
      icmp.clear();
      this.pipeline.egress(rx, tx);
      if (tx.count > 0) {
        const sent = this.sock.send(tx);
        if (sent < tx.count) {
          const lost = tx.count - sent;
          stats.drops[Drop.SendFailed] += lost;
          stats.txPackets -= lost;
        }
      }
      if (icmp.count > 0) {
        const written = this.tun.write(icmp);
        stats.icmpSent += written;
      }
      if (n < rx.capacity) break;
    }
  }

  /** Ingress: peers → socket → TUN → pods. */
  onSocketReadable(): void {
    const rx = this.sockRx;
    const out = this.toTun;
    const replies = this.pipeline.replies;
    const stats = this.pipeline.stats;
    for (let round = 0; round < ROUNDS_PER_WAKEUP && this.running; round++) {
      const n = this.sock.recv(rx);
      if (n === 0) break;
      stats.sockRecvBatches++;
      out.clear();
      replies.clear();
      this.pipeline.ingress(rx, out);
      if (out.count > 0) {
        const written = this.tun.write(out);
        stats.tunWritePackets += written;
        if (written < out.count) stats.drops[Drop.TunWriteFailed] += out.count - written;
      }
      if (replies.count > 0) this.sock.send(replies);
      if (n < rx.capacity) break;
    }
  }
}
