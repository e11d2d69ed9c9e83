// One watch() on the etcd registry: a raw Watch stream on the subnets prefix, turned into the
// Registry contract's batches. It reaches the registry only through WatchSource, so this module
// and registry.ts do not import each other.
import type { IWatchResponse } from 'etcd3';
import { RegistryError, type Lease, type LeaseEvent, type WatchBatch, type WatchHandle } from '../registry';
import { prefixEnd } from './codec';
import { describe, num, type WatchStream } from './endpoints';

/** What a watch needs from its registry (EtcdRegistry). */
export interface WatchSource {
  /** "etcd ENDPOINTS", to start error messages with. */
  readonly description: string;
  /** PREFIX/subnets/, the range the stream watches. */
  readonly subnetsKeyPrefix: string;
  /** The registry's call deadline; also how long etcd has to confirm a new stream. */
  readonly watchDeadlineMs: number;
  openWatchStream(): Promise<WatchStream>;
  /** list() without the per-lease expiry lookups, under the registry's call deadline. */
  snapshot(what: string): Promise<{ leases: Lease[]; revision: number }>;
  /** One watch response's events as lease events. */
  eventsOf(res: IWatchResponse): Promise<LeaseEvent[]>;
  warnWatch(msg: string, extra: object): void;
  /** The watch has ended; the registry stops tracking it. */
  forget(w: EtcdWatch): void;
}

/**
 * One watch(): optionally a snapshot from list(), then a raw etcd Watch stream on the subnets
 * prefix. Responses are handled strictly in arrival order on one promise chain (a PUT needs a
 * lease TTL lookup before its batch can go out). The stream is never re-opened behind the
 * caller's back, except to recover from compaction, which the stream itself reports while healthy.
 */
export class EtcdWatch implements WatchHandle {
  private done = false;
  private stream: WatchStream | undefined;
  private generation = 0;
  private chain: Promise<void> = Promise.resolve();
  private createdTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly reg: WatchSource,
    private readonly fromRevision: number,
    private readonly onBatch: (b: WatchBatch) => void,
    private readonly onError: (e: Error) => void,
  ) {}

  start(): void {
    if (this.fromRevision === 0) this.enqueue(() => this.resync('watch snapshot'));
    else this.enqueue(() => this.open(this.fromRevision + 1, this.fromRevision));
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
  }

  /** Reports `e` once, asynchronously, and stops; nothing is delivered afterwards. */
  fail(e: Error): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
    queueMicrotask(() => this.onError(e));
  }

  private teardown(): void {
    this.reg.forget(this);
    this.generation++;
    if (this.createdTimer) clearTimeout(this.createdTimer);
    this.createdTimer = undefined;
    const s = this.stream;
    this.stream = undefined;
    // The 'error' (CANCELLED) this raises is swallowed: the listeners check the generation.
    s?.cancel();
  }

  private enqueue(step: () => Promise<void> | void): void {
    this.chain = this.chain.then(() => (this.done ? undefined : step())).catch((e: unknown) => this.fail(e instanceof Error ? e : new Error(String(e))));
  }

  private emit(b: WatchBatch): void {
    if (this.done) return;
    try {
      this.onBatch(b);
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Full list at revision R, then a stream from R+1: what a new watch and a compacted one both need. */
  private async resync(what: string): Promise<void> {
    const snap = await this.reg.snapshot(what);
    if (this.done) return;
    this.emit({ revision: snap.revision, snapshot: true, leases: snap.leases, events: [] });
    await this.open(snap.revision + 1, undefined);
  }

  /**
   * Opens a stream from `startRevision`. `confirm` is the revision the caller is at: once etcd
   * says the watch is created, an empty batch at that revision tells the caller it is connected.
   */
  private async open(startRevision: number, confirm: number | undefined): Promise<void> {
    const gen = ++this.generation;
    let stream: WatchStream;
    try {
      stream = await this.reg.openWatchStream();
    } catch (e) {
      throw this.unavailable(e);
    }
    if (this.done || gen !== this.generation) {
      stream.on('error', () => undefined);
      stream.cancel();
      return;
    }
    this.stream = stream;
    if (this.createdTimer) clearTimeout(this.createdTimer);
    const mine = (): boolean => !this.done && gen === this.generation;
    stream.on('data', (res: IWatchResponse) => {
      if (mine()) this.enqueue(() => (mine() ? this.handle(res, confirm) : undefined));
    });
    stream.on('error', (e: Error) => {
      if (mine()) this.fail(this.unavailable(e));
    });
    stream.on('end', () => {
      if (mine()) this.fail(new RegistryError('unavailable', `${this.reg.description}: watch stream ended`));
    });
    const base = this.reg.subnetsKeyPrefix;
    stream.write({
      create_request: { key: Buffer.from(base), range_end: prefixEnd(base), start_revision: startRevision, prev_kv: true },
    });
    const ms = this.reg.watchDeadlineMs;
    this.createdTimer = setTimeout(() => {
      if (mine()) this.fail(new RegistryError('unavailable', `${this.reg.description}: watch not established within ${ms} ms`));
    }, ms);
  }

  private unavailable(e: unknown): RegistryError {
    if (e instanceof RegistryError) return e;
    return new RegistryError('unavailable', `${this.reg.description}: watch: ${describe(e)}`);
  }

  private async handle(res: IWatchResponse, confirm: number | undefined): Promise<void> {
    if (res.created) {
      if (this.createdTimer) clearTimeout(this.createdTimer);
      this.createdTimer = undefined;
      if (confirm === undefined) return;
      if (num(res.header.revision) < confirm) {
        // etcd is behind the caller: its data was restored from an older backup or it is a
        // different cluster. Events from here on would not line up with what the caller holds.
        await this.restart('etcd revision is behind the watcher', { etcdRevision: res.header.revision, fromRevision: confirm });
        return;
      }
      this.emit({ revision: confirm, snapshot: false, leases: [], events: [] });
      return;
    }
    if (res.canceled) {
      if (num(res.compact_revision) > 0) {
        // The history between the caller's revision and now is gone; flanneld re-lists in this
        // case too (leasesWatchReset). The snapshot replaces whatever the caller holds.
        await this.restart('watch history compacted; re-listing', { compactRevision: res.compact_revision });
        return;
      }
      throw new RegistryError('unavailable', `${this.reg.description}: etcd cancelled the watch${res.cancel_reason ? `: ${res.cancel_reason}` : ''}`);
    }
    if (res.events.length === 0) return; // progress notification
    const events = await this.reg.eventsOf(res);
    // etcd never splits one revision's events across responses, so after this batch the
    // caller is at the last event's revision.
    let revision = 0;
    for (const ev of res.events) revision = Math.max(revision, num(ev.kv.mod_revision));
    this.emit({ revision, snapshot: false, leases: [], events });
  }

  private async restart(msg: string, extra: object): Promise<void> {
    this.reg.warnWatch(msg, extra);
    const old = this.stream;
    this.stream = undefined;
    this.generation++;
    old?.cancel();
    await this.resync(msg);
  }
}
