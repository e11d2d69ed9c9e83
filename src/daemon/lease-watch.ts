// The daemon's lease watch: one registry watch at a time, resumed from the last revision applied
// whenever it ends (an outage, a server cutting off a watcher that fell behind, a batch that
// could not be applied), with backoff between attempts. What the batches mean for routes and for
// our own lease is the daemon's business (`apply`).
import type { Logger } from 'pino';
import type { Registry, WatchBatch, WatchHandle } from '../control/registry';

export interface LeaseWatchOptions {
  registry: Registry;
  log: Pick<Logger, 'info' | 'warn' | 'debug'>;
  /** Applies one batch (snapshot or events) to the datapath; a throw ends the stream as a failure. */
  apply(b: WatchBatch): void;
  backoffMinMs: number;
  backoffMaxMs: number;
}

export class LeaseWatch {
  /** The revision of the last batch applied; a new stream resumes from it (0: snapshot). */
  revision = 0;
  /** A stream is open and has delivered its first batch. */
  connected = false;
  /** Some batch has been applied: the peers reflect the control plane as of `revision`. */
  synced = false;
  private handle?: WatchHandle;
  private retry?: NodeJS.Timeout;
  private backoff: number;
  private stopped = false;

  constructor(private readonly opts: LeaseWatchOptions) {
    this.backoff = opts.backoffMinMs;
  }

  start(): void {
    if (this.stopped) return;
    this.handle = this.opts.registry.watch(
      this.revision,
      (b) => this.onBatch(b),
      (e) => this.onError(e),
    );
  }

  /** What /readyz reports for the watch (empty when fine). */
  notReady(): string[] {
    return this.synced ? [] : ['peer sync'];
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.handle?.close();
    this.handle = undefined;
  }

  private onBatch(b: WatchBatch): void {
    if (!this.connected) {
      this.connected = true;
      this.backoff = this.opts.backoffMinMs;
      this.opts.log.info({ fromRevision: this.revision, snapshot: b.snapshot }, 'watching leases');
    }
    this.opts.apply(b);
    this.revision = b.revision;
    this.synced = true;
  }

  private onError(e: Error): void {
    if (this.stopped) return;
    this.handle?.close();
    this.handle = undefined;
    if (this.connected) {
      this.opts.log.warn({ err: e.message }, 'lease watch lost; forwarding with last-known routes');
    }
    this.connected = false;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.opts.backoffMaxMs);
    this.retry = setTimeout(() => this.start(), delay);
  }
}
