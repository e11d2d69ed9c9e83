// The daemon's lease watch: one registry watch at a time, resumed from the last revision applied
// whenever it ends (an outage, a server cutting off a watcher that fell behind, a batch that
// could not be applied), with backoff between attempts. What the batches mean for routes and for
// our own lease is the daemon's business (`apply`); this module only knows whether the peers it
// fed are current, and says so to /readyz and the log. Routes are never cleared when the watch is
// down: forwarding on the last-known ones is what flanneld does too, and beats dropping traffic
// to nodes that are most likely still there.
import type { Logger } from 'pino';
import type { Registry, WatchBatch, WatchHandle } from '../control/registry';

/**
 * How long the watch may be down, once peers were synced, before /readyz says so. A watch that
 * ends is retried after 0.5 s (doubling to 10 s); a control-plane restart, or a server cutting
 * off a stream that fell behind, is over within a couple of seconds, and a node should not drop
 * out of readiness for that. Longer, and its routes may be missing nodes that joined or still
 * hold ones that left: it is the operator's business to know.
 */
export const WATCH_DOWN_GRACE_MS = 5_000;

/** How much of an error message readiness and the log repeat (they come from the network). */
const CAUSE_MAX_CHARS = 200;

export interface LeaseWatchOptions {
  registry: Registry;
  log: Pick<Logger, 'info' | 'warn' | 'debug'>;
  /** Applies one batch (snapshot or events) to the datapath; a throw ends the stream as a failure. */
  apply(b: WatchBatch): void;
  backoffMinMs: number;
  backoffMaxMs: number;
  /** WATCH_DOWN_GRACE_MS outside tests. */
  downGraceMs: number;
  now?: () => number;
}

export class LeaseWatch {
  /** The revision of the last batch applied; a new stream resumes from it (0: snapshot). */
  revision = 0;
  /** A stream is open and has delivered its first batch. */
  connected = false;
  /** Some batch has been applied: the peers reflect the control plane as of `revision`. */
  synced = false;
  /** Streams that connected after an earlier one had (a resumed watch), for /metrics. */
  reconnects = 0;
  /** Attempts and streams that ended in an error, for /metrics. */
  errors = 0;
  private everConnected = false;
  /** Why the last attempt failed, while no stream is connected. */
  private lastError?: string;
  /** When the watch was last connected-and-then-failed (or first failed); unset while connected. */
  private downSince?: number;
  /** The cause last warned about, so retries failing the same way are not logged at warn again. */
  private warnedCause?: string;
  private handle?: WatchHandle;
  private retry?: NodeJS.Timeout;
  private backoff: number;
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly opts: LeaseWatchOptions) {
    this.backoff = opts.backoffMinMs;
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    if (this.stopped) return;
    this.handle = this.opts.registry.watch(
      this.revision,
      (b) => this.onBatch(b),
      (e) => this.onError(e),
    );
  }

  /**
   * What /readyz reports for the watch (empty when fine): no peer sync yet, with the reason when
   * attempts are failing; or, once synced, a watch that has been down longer than downGraceMs.
   * A connected stream counts as current however quiet it is: leases change rarely, and a dead
   * connection is ended by gRPC keepalive (client.ts), which then counts as down.
   */
  notReady(): string[] {
    if (!this.synced) return [this.lastError === undefined ? 'peer sync' : `peer sync (lease watch failing: ${cause(this.lastError)})`];
    if (this.connected || this.downSince === undefined) return [];
    const downMs = this.now() - this.downSince;
    if (downMs < this.opts.downGraceMs) return [];
    return [
      `lease watch down for ${Math.round(downMs / 1000)} s (${cause(this.lastError ?? 'no stream yet')}); forwarding on last-known routes of revision ${this.revision}`,
    ];
  }

  /** For /status. */
  status(): { watching: boolean; revision: number; error?: string; downForMs?: number } {
    return {
      watching: this.connected,
      revision: this.revision,
      error: this.lastError === undefined ? undefined : cause(this.lastError),
      downForMs: this.downSince === undefined ? undefined : this.now() - this.downSince,
    };
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
      if (this.everConnected) this.reconnects++;
      this.everConnected = true;
      this.backoff = this.opts.backoffMinMs;
      const downForMs = this.downSince === undefined ? undefined : this.now() - this.downSince;
      this.opts.log.info({ fromRevision: this.revision, snapshot: b.snapshot, downForMs }, 'watching leases');
      this.lastError = undefined;
      this.downSince = undefined;
      this.warnedCause = undefined;
    }
    this.opts.apply(b);
    this.revision = b.revision;
    this.synced = true;
  }

  private onError(e: Error): void {
    if (this.stopped) return;
    this.handle?.close();
    this.handle = undefined;
    const wasConnected = this.connected;
    this.connected = false;
    this.errors++;
    this.lastError = e.message;
    this.downSince ??= this.now();
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.opts.backoffMaxMs);
    const fields = { err: cause(e.message), revision: this.revision, retryInMs: delay };
    if (wasConnected) {
      this.opts.log.warn(fields, 'lease watch lost; forwarding with last-known routes');
    } else if (e.message !== this.warnedCause) {
      // Also the very first attempt: a daemon that never gets its peers must say why, not only
      // sit at "not ready: peer sync".
      this.opts.log.warn(
        fields,
        this.synced ? 'lease watch still failing; forwarding with last-known routes' : 'lease watch failed before the first peer sync; retrying',
      );
    } else {
      this.opts.log.debug(fields, 'lease watch failed again; retrying');
    }
    this.warnedCause = e.message;
    this.retry = setTimeout(() => this.start(), delay);
  }
}

/** An error message as readiness and the log repeat it: at most CAUSE_MAX_CHARS, saying how long it was. */
function cause(msg: string): string {
  return msg.length <= CAUSE_MAX_CHARS ? msg : `${msg.slice(0, CAUSE_MAX_CHARS)}… (${msg.length} chars)`;
}
