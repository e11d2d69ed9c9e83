// The in-process registry behind `weft control`: leases in memory, every change written to the
// LeaseStore before the caller hears about it, watchers fed from a bounded event log.
//
// Ordering guarantees the daemon relies on:
//  - Mutations run one at a time, in arrival order, so two acquires never see the same free set;
//    those that queue up while the state file is being written are committed together with one
//    write (group commit), each caller answered only once its change is durable.
//  - A mutation's in-memory effect, its event-log entries and its watcher notifications happen
//    together, synchronously, after the state file is durable. A watch() registered at any
//    moment therefore sees either the state before a change plus that change as an event, or
//    the state after it — never a gap or a duplicate.
//  - Each watcher has its own FIFO drained in a microtask, so onBatch never runs re-entrantly
//    inside acquire() or inside watch() itself, and batches arrive in revision order.
import { acquirablePublicIp, allocate, normalisePublicIp, overlaps, subnetIndex, subnetRange } from './allocator';
import { MAX_EVENTS_PER_BATCH, MAX_LEASES, MAX_MUTATIONS_PER_COMMIT, checkAcquireRequest, checkLeaseRef, checkSubnetSize } from './limits';
import { quote } from '../util/quote';
import type { NetworkConfig } from './netconfig';
import {
  DEFAULT_LEASE_TTL_MS,
  NEVER_EXPIRES,
  RegistryError,
  cloneLease,
  isReservation,
  silentLogger,
  type AcquireRequest,
  type Lease,
  type LeaseEvent,
  type LeaseRef,
  type Registry,
  type RegistryLogger,
  type Reservation,
  type ReservationRegistry,
  type WatchBatch,
  type WatchHandle,
} from './registry';
import { LeaseStore, type StoreState } from './store';
import { formatCidr, parseCidr } from '../route/address';

export const DEFAULT_EVENT_LOG_SIZE = 10_000;
/** setTimeout's delay is a signed 32-bit millisecond count; longer delays fire immediately. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface EmbeddedRegistryOptions {
  config: NetworkConfig;
  stateDir: string;
  leaseTtlMs?: number;
  now?: () => number;
  random?: () => number;
  eventLogSize?: number;
  logger?: RegistryLogger;
}

interface LoggedEvent {
  revision: number;
  event: LeaseEvent;
}

interface PendingMutation {
  fn: (s: StoreState, now: number, events: LeaseEvent[], swept: number) => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Watcher {
  queue: WatchBatch[];
  scheduled: boolean;
  closed: boolean;
  onBatch: (b: WatchBatch) => void;
  onError: (e: Error) => void;
}

export class EmbeddedRegistry implements Registry, ReservationRegistry {
  private readonly cfg: NetworkConfig;
  private readonly store: LeaseStore;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly logSize: number;
  private readonly log: RegistryLogger;

  private state: StoreState | undefined;
  private events: LoggedEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private pending: PendingMutation[] = [];
  private draining = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(opts: EmbeddedRegistryOptions) {
    this.cfg = opts.config;
    this.store = new LeaseStore(opts.stateDir);
    this.ttlMs = opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    if (!(this.ttlMs > 0)) throw new RegistryError('invalid', `lease TTL must be positive, got ${this.ttlMs} ms`);
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.logSize = opts.eventLogSize ?? DEFAULT_EVENT_LOG_SIZE;
    this.log = opts.logger ?? silentLogger;
  }

  get stateFile(): string {
    return this.store.file;
  }

  /** Loads the state file (a corrupt one throws StateFileError) and reclaims what expired while down. */
  async open(): Promise<void> {
    if (this.state) return;
    await this.store.lock();
    try {
      this.state = await this.store.load();
    } catch (e) {
      this.store.unlock();
      throw e;
    }
    this.log.info({ stateFile: this.store.file, revision: this.state.revision, leases: this.state.leases.length }, 'lease state loaded');
    await this.sweep();
    this.scheduleSweep();
  }

  config(): Promise<NetworkConfig> {
    return Promise.resolve(this.cfg);
  }

  acquire(req: AcquireRequest): Promise<Lease> {
    // Sizes first, outside the queue: an oversized request costs no place in a commit batch.
    try {
      checkAcquireRequest(req);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.mutate((s, now, events) => {
      const alloc = allocate({
        config: this.cfg,
        leases: s.leases,
        previous: s.previous,
        request: req,
        reservations: s.reservations,
        now,
        ttlMs: this.ttlMs,
        random: this.random,
      });
      if (alloc.skippedReservation) {
        this.log.warn({ ...alloc.skippedReservation, network: this.cfg.network }, 'skipping a reservation that does not fit the network config');
      }
      if (alloc.replaced) {
        removeLease(s, alloc.replaced);
        events.push({ type: 'removed', lease: alloc.replaced });
        this.log.warn({ lease: alloc.replaced }, 'dropped lease that no longer fits the network config');
      }
      const lease = alloc.lease;
      s.leases = s.leases.filter((l) => l.subnet !== lease.subnet);
      s.leases.push(lease);
      s.previous[lease.publicIp] = lease.subnet;
      // Forget other nodes' claims on this subnet: it has a new owner, and bounding `previous`
      // by the number of subnets keeps the state file from growing with every node ever seen.
      for (const [ip, sn] of Object.entries(s.previous)) {
        if (sn === lease.subnet && ip !== lease.publicIp) delete s.previous[ip];
      }
      events.push({ type: 'added', lease });
      this.log.info({ subnet: lease.subnet, publicIp: lease.publicIp, reason: alloc.reason }, 'lease granted');
      return lease;
    });
  }

  renew(ref: LeaseRef): Promise<Lease> {
    try {
      checkLeaseRef(ref);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.mutate((s, now, events) => {
      const held = findOwned(s, ref);
      // A reservation has no TTL to extend: nothing changes, nothing is written or announced.
      if (isReservation(held)) return cloneLease(held);
      const lease: Lease = { ...held, expiration: now + this.ttlMs };
      s.leases = s.leases.map((l) => (l === held ? lease : l));
      // A renewal is announced as 'added' (an update), as flannel's etcd watch reports any put.
      events.push({ type: 'added', lease });
      return lease;
    });
  }

  revoke(ref: LeaseRef): Promise<void> {
    try {
      checkLeaseRef(ref);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.mutate((s, _now, events) => {
      const held = findOwned(s, ref);
      if (isReservation(held)) {
        // flannel: a reservation is kept for its node whatever that node does; only the
        // operator ends it (weft control unreserve).
        this.log.info({ subnet: held.subnet, publicIp: held.publicIp }, 'revoke of a reserved subnet: reservation kept');
        return;
      }
      removeLease(s, held);
      s.previous[held.publicIp] = held.subnet;
      events.push({ type: 'removed', lease: held });
      this.log.info({ subnet: held.subnet, publicIp: held.publicIp }, 'lease revoked');
    });
  }

  /**
   * Keeps `r.subnet` for the node at `r.publicIp`. Refused (one line) when the subnet is not one
   * the config hands out, is held by another node's live lease or reserved for another IP, or
   * when the IP already has a reservation elsewhere. The IP's live lease on that subnet, if it
   * holds it already, becomes the reservation at once (announced as an update).
   */
  reserve(r: Reservation): Promise<void> {
    let subnet: string;
    let publicIp: string;
    try {
      checkLeaseRef(r);
      subnet = this.reservableSubnet(r.subnet);
      publicIp = acquirablePublicIp(r.publicIp, this.cfg);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.mutate((s, _now, events) => {
      const same = s.reservations.find((x) => x.subnet === subnet);
      if (same && same.publicIp === publicIp) return; // already so
      if (same) throw new RegistryError('invalid', `subnet ${subnet} is already reserved for ${same.publicIp}; unreserve it first`);
      const mine = s.reservations.find((x) => x.publicIp === publicIp);
      if (mine) throw new RegistryError('invalid', `publicIp ${publicIp} already has subnet ${mine.subnet} reserved; unreserve it first`);
      const holder = s.leases.find((l) => l.publicIp !== publicIp && overlaps(l.subnet, subnet));
      if (holder) throw new RegistryError('invalid', `subnet ${subnet} is leased to ${holder.publicIp} (${holder.subnet}); reserve it once that lease is gone`);
      if (s.reservations.length >= MAX_LEASES) throw new RegistryError('exhausted', `the registry holds ${MAX_LEASES} reservations, the most it keeps`);
      s.reservations = [...s.reservations, { subnet, publicIp }];
      const held = s.leases.find((l) => l.subnet === subnet && l.publicIp === publicIp);
      if (held) {
        const lease: Lease = { ...held, expiration: NEVER_EXPIRES };
        s.leases = s.leases.map((l) => (l === held ? lease : l));
        events.push({ type: 'added', lease });
      }
      this.log.info({ subnet, publicIp, held: held !== undefined }, 'subnet reserved');
    });
  }

  /**
   * Ends the reservation on `subnet`. A node holding it loses the lease (announced as removed)
   * and re-acquires at once: its subnet.env hint gives it the same subnet back, as an ordinary
   * lease with a TTL.
   */
  unreserve(subnet: string): Promise<void> {
    let canonical: string;
    try {
      checkSubnetSize(subnet);
      canonical = formatCidr(parseCidr(subnet));
    } catch (e) {
      return Promise.reject(e instanceof RegistryError ? e : new RegistryError('invalid', `subnet ${quote(subnet)} is not a CIDR (${(e as Error).message})`));
    }
    return this.mutate((s, _now, events) => {
      const r = s.reservations.find((x) => x.subnet === canonical);
      if (!r) throw new RegistryError('not_found', `subnet ${canonical} is not reserved`);
      s.reservations = s.reservations.filter((x) => x !== r);
      const held = s.leases.find((l) => l.subnet === canonical && isReservation(l));
      if (held) {
        removeLease(s, held);
        s.previous[held.publicIp] = held.subnet;
        events.push({ type: 'removed', lease: held });
      }
      this.log.info({ subnet: canonical, publicIp: r.publicIp }, 'reservation removed');
    });
  }

  reservations(): Promise<Reservation[]> {
    const s = this.state;
    if (!s || this.closed) return Promise.reject(new RegistryError('unavailable', this.closed ? 'registry is closed' : 'registry is not open'));
    return Promise.resolve(s.reservations.map((r) => ({ ...r })));
  }

  /** A subnet the config hands out, canonical; RegistryError('invalid') naming the range otherwise. */
  private reservableSubnet(subnet: string): string {
    let canonical: string;
    try {
      canonical = formatCidr(parseCidr(subnet));
    } catch (e) {
      throw new RegistryError('invalid', `subnet ${quote(subnet)} is not a CIDR (${(e as Error).message})`);
    }
    if (subnetIndex(subnetRange(this.cfg), canonical) < 0) {
      const c = this.cfg;
      throw new RegistryError(
        'invalid',
        `subnet ${canonical} is not one the network hands out: a /${c.subnetLen} of ${c.network} from SubnetMin ${c.subnetMin} to SubnetMax ${c.subnetMax}`,
      );
    }
    return canonical;
  }

  list(): Promise<{ leases: Lease[]; revision: number }> {
    // Sweep first so a lease past its expiry is never reported live; state only changes in
    // commit(), so reading it synchronously gives one durable revision.
    return this.sweep().then(() => {
      const s = this.state as StoreState;
      return { leases: s.leases.map(cloneLease), revision: s.revision };
    });
  }

  /** Reclaims expired leases now; returns how many. Runs on a timer; public for tests. */
  async sweep(): Promise<number> {
    return this.mutate((_s, _now, _events, swept) => swept);
  }

  watch(fromRevision: number, onBatch: (b: WatchBatch) => void, onError: (e: Error) => void): WatchHandle {
    const w: Watcher = { queue: [], scheduled: false, closed: false, onBatch, onError };
    const handle = {
      close: () => {
        w.closed = true;
        this.watchers.delete(w);
      },
    };
    const s = this.state;
    if (!s || this.closed) {
      this.fail(w, new RegistryError('unavailable', this.closed ? 'registry is closed' : 'registry is not open'));
      return handle;
    }
    if (typeof fromRevision !== 'number' || !Number.isSafeInteger(fromRevision) || fromRevision < 0) {
      this.fail(w, new RegistryError('invalid', `fromRevision ${String(fromRevision)} is not a non-negative integer`));
      return handle;
    }
    const first = this.catchUp(s, fromRevision);
    if (first) this.deliver(w, first);
    this.watchers.add(w);
    return handle;
  }

  /**
   * The batch that brings a client from `from` to now; for a client that is already current,
   * an empty one, so every watch opens with a batch confirming its revision (the client learns
   * the stream is established without waiting for the next change, as etcd's watch-created
   * response does). A snapshot when the client has nothing (0), when its revision is newer than
   * ours (we lost history it saw — only possible if the state dir was replaced), or when the
   * events it missed have rotated out of the log (or predate this process: the log starts empty).
   */
  private catchUp(s: StoreState, from: number): WatchBatch | undefined {
    if (from === s.revision && from !== 0) return { revision: s.revision, snapshot: false, leases: [], events: [] };
    const oldest = this.events.length > 0 ? this.events[0].revision : Infinity;
    // A client further behind than one batch may carry (limits.ts) gets the snapshot, which is
    // bounded by MAX_LEASES and no larger than the events it replaces.
    if (from === 0 || from > s.revision || oldest > from + 1 || s.revision - from > MAX_EVENTS_PER_BATCH) {
      return { revision: s.revision, snapshot: true, leases: s.leases.map(cloneLease), events: [] };
    }
    const events: LeaseEvent[] = [];
    for (const e of this.events) {
      if (e.revision > from) events.push(cloneEvent(e.event));
    }
    return { revision: s.revision, snapshot: false, leases: [], events };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.unlock();
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const w of [...this.watchers]) this.fail(w, new RegistryError('unavailable', 'registry closed'));
    this.watchers.clear();
  }

  /**
   * Queues `fn` to run on a private copy of the state, after expired leases were swept into
   * `events`, then persists and publishes. Group commit: every mutation queued while a write is
   * in flight runs in the next batch, in order, and the batch is made durable with ONE state-file
   * write — without it, 1,000 nodes acquiring at once meant 1,000 whole-file rewrites and fsyncs
   * one after another (3.5 s for the last grant). Each caller still hears only after its change
   * is on disk. If `fn` throws, its own changes are undone and the others in the batch go ahead;
   * if the write fails, nothing in the batch changes and every caller gets the error.
   */
  private mutate<T>(fn: (s: StoreState, now: number, events: LeaseEvent[], swept: number) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.draining) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      // Capped so one commit's watch batch stays within limits.ts' message size.
      while (this.pending.length > 0) await this.runBatch(this.pending.splice(0, MAX_MUTATIONS_PER_COMMIT));
    } finally {
      this.draining = false;
    }
  }

  private async runBatch(batch: PendingMutation[]): Promise<void> {
    const failAll = (e: Error): void => {
      for (const op of batch) op.reject(e);
    };
    if (this.closed) return failAll(new RegistryError('unavailable', 'registry is closed'));
    const cur = this.state;
    if (!cur) return failAll(new RegistryError('unavailable', 'registry is not open'));
    const now = this.now();
    const next: StoreState = { revision: cur.revision, leases: [...cur.leases], previous: { ...cur.previous }, reservations: cur.reservations };
    const events: LeaseEvent[] = [];
    for (const l of cur.leases) {
      if (l.expiration <= now) {
        removeLease(next, l);
        next.previous[l.publicIp] = l.subnet;
        events.push({ type: 'removed', lease: l });
        this.log.info({ subnet: l.subnet, publicIp: l.publicIp }, 'lease expired');
      }
    }
    const swept = events.length;
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    for (const op of batch) {
      const leases = [...next.leases];
      const previous = { ...next.previous };
      // Mutations replace the reservations array rather than edit it, so keeping it is a copy.
      const reservations = next.reservations;
      const mark = events.length;
      try {
        outcomes.push({ ok: true, value: op.fn(next, now, events, swept) });
      } catch (error) {
        next.leases = leases;
        next.previous = previous;
        next.reservations = reservations;
        events.length = mark;
        outcomes.push({ ok: false, error });
      }
    }
    // Reads and no-op sweeps change nothing and are not written; a reservation made or ended
    // without touching a lease is written without a new revision (watchers see no event).
    if (events.length > 0 || next.reservations !== cur.reservations) {
      next.revision = cur.revision + events.length;
      try {
        await this.store.save(next);
      } catch (e) {
        return failAll(new RegistryError('unavailable', `cannot persist lease state to ${this.store.file}: ${(e as Error).message}`));
      }
      // Durable either way; after close() nobody is listening any more.
      if (!this.closed) this.commit(cur.revision, next, events);
    }
    batch.forEach((op, i) => {
      const o = outcomes[i];
      if (o.ok) op.resolve(o.value);
      else op.reject(o.error);
    });
  }

  private commit(base: number, next: StoreState, events: LeaseEvent[]): void {
    this.state = next;
    let rev = base;
    for (const event of events) this.events.push({ revision: ++rev, event });
    if (this.events.length > this.logSize) this.events.splice(0, this.events.length - this.logSize);
    if (events.length > 0) {
      for (const w of this.watchers) {
        this.deliver(w, { revision: next.revision, snapshot: false, leases: [], events: events.map(cloneEvent) });
      }
    }
    this.scheduleSweep();
  }

  private deliver(w: Watcher, b: WatchBatch): void {
    w.queue.push(b);
    if (w.scheduled) return;
    w.scheduled = true;
    queueMicrotask(() => {
      w.scheduled = false;
      while (!w.closed && w.queue.length > 0) {
        const next = w.queue.shift() as WatchBatch;
        try {
          w.onBatch(next);
        } catch (e) {
          this.watchers.delete(w);
          this.fail(w, e instanceof Error ? e : new Error(String(e)));
          return;
        }
      }
    });
  }

  private fail(w: Watcher, e: Error): void {
    if (w.closed) return;
    w.closed = true;
    queueMicrotask(() => w.onError(e));
  }

  /** One timer for the earliest expiry, re-armed after every change. */
  private scheduleSweep(): void {
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    if (this.closed || !this.state || this.state.leases.length === 0) return;
    let next = Infinity;
    for (const l of this.state.leases) if (l.expiration < next) next = l.expiration;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, next - this.now() + 1));
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      // Re-arm even when nothing expired: the timer may have been capped at MAX_TIMER_MS, or
      // fired a hair early; a sweep that changes something re-arms from commit() as well.
      this.sweep().then(
        () => this.scheduleSweep(),
        (e: Error) => {
          // Most likely the disk: keep the leases (they are still in memory and on disk as
          // they were) and try again shortly rather than giving up on expiry altogether.
          if (this.closed) return;
          this.log.error({ err: e.message }, 'lease sweep failed; retrying in 1s');
          this.sweepTimer = setTimeout(() => this.scheduleSweep(), 1000).unref();
        },
      );
    }, delay);
    // The timer alone must not keep a process alive (tests, a daemon that closed its server).
    this.sweepTimer.unref();
  }
}

function removeLease(s: StoreState, lease: Lease): void {
  s.leases = s.leases.filter((l) => l.subnet !== lease.subnet);
}

function findOwned(s: StoreState, ref: LeaseRef): Lease {
  if (!ref || typeof ref.subnet !== 'string') throw new RegistryError('invalid', 'lease subnet is required');
  let subnet: string;
  try {
    subnet = formatCidr(parseCidr(ref.subnet));
  } catch (e) {
    // checkLeaseRef bounded ref.subnet, so parseCidr's message (which quotes it) is short too.
    throw new RegistryError('invalid', `lease subnet ${quote(ref.subnet)} is not a CIDR (${(e as Error).message})`);
  }
  const publicIp = normalisePublicIp(ref.publicIp);
  const held = s.leases.find((l) => l.subnet === subnet);
  if (!held) throw new RegistryError('not_found', `no lease on ${subnet} (expired or revoked); acquire a new one`);
  if (held.publicIp !== publicIp) {
    throw new RegistryError('permission', `lease ${subnet} belongs to ${held.publicIp}, not ${publicIp}`);
  }
  return held;
}

function cloneEvent(e: LeaseEvent): LeaseEvent {
  return { type: e.type, lease: cloneLease(e.lease) };
}
