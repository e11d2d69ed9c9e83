// The one lease-registry contract every control-plane implementation meets: the embedded
// in-process registry (embedded.ts), the gRPC client that talks to it (client.ts), and etcd in
// flannel's layout (etcd/registry.ts). Nothing here names a transport, so the daemon can be
// wired to any of them by a flag.
import type { PeerLease } from '../datapath/peer';
import type { NetworkConfig } from './netconfig';

export type { NetworkConfig } from './netconfig';

/** flanneld's subnet lease TTL (24 h): every registry's default lease lifetime. */
export const DEFAULT_LEASE_TTL_MS = 24 * 60 * 60 * 1000;

/** The subset of pino's Logger the registries and the control server use; any pino logger fits. */
export interface RegistryLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** The logger a registry uses when given none. */
export const silentLogger: RegistryLogger = { info() {}, warn() {}, error() {} };

/**
 * Lease.expiration of a reservation: a subnet kept for one public IP with no TTL (flannel: a
 * lease key in etcd without an etcd lease). The largest time a JavaScript Date holds (ECMA-262
 * §21.4.1.1), so `new Date(expiration)` still prints (+275760-09-13) and every comparison with
 * a real time says "later"; on the wire it is expiration_ms 8640000000000000.
 */
export const NEVER_EXPIRES = 8_640_000_000_000_000;

/** Whether a lease is a reservation: it never expires, is never renewed nor revoked away. */
export function isReservation(l: { expiration: number }): boolean {
  return l.expiration >= NEVER_EXPIRES;
}

/** A subnet kept for the node with this public IP, whether or not that node holds it now. */
export interface Reservation {
  subnet: string;
  publicIp: string;
}

/** A subnet lease: what the datapath routes by (PeerLease), and when it expires. */
export interface Lease extends PeerLease {
  /**
   * Milliseconds since the epoch; NEVER_EXPIRES for a reservation. 0 in watch batches from etcd, where knowing it costs a
   * TimeToLive round trip per lease and no watcher needs a peer's expiry (acquire, renew and
   * list always fill it in).
   */
  expiration: number;
}

export interface LeaseEvent {
  type: 'added' | 'removed';
  lease: Lease;
}

export interface WatchBatch {
  /** The revision the client is at once it has applied this batch. */
  revision: number;
  /** True when `leases` is the full set and replaces whatever the client held. */
  snapshot: boolean;
  /** Full set when snapshot, else []. */
  leases: Lease[];
  events: LeaseEvent[];
}

export interface AcquireRequest {
  publicIp: string;
  backendType?: string;
  backendData?: Record<string, unknown>;
  /**
   * The subnet this node last used, as its subnet.env records it (flanneld reads FLANNEL_SUBNET
   * back for the same purpose): granted again when it is still free, so pods keep their
   * addresses even after the lease itself expired. A hint: ignored when taken or out of range.
   */
  previousSubnet?: string;
}

export interface LeaseRef {
  subnet: string;
  publicIp: string;
}

export interface WatchHandle {
  close(): void;
}

export interface Registry {
  config(): Promise<NetworkConfig>;
  acquire(req: AcquireRequest): Promise<Lease>;
  renew(lease: LeaseRef): Promise<Lease>;
  revoke(lease: LeaseRef): Promise<void>;
  list(): Promise<{ leases: Lease[]; revision: number }>;
  /**
   * Stream lease changes after `fromRevision` (0: start from a snapshot). The first batch comes
   * as soon as the watch is established, so receiving it is the client's "connected" signal. It
   * is either a snapshot (always for 0, and whenever the history the client needs is gone, e.g.
   * compacted) or a delta from `fromRevision`, possibly empty; any further missed changes follow
   * as ordinary batches, in revision order. The embedded registry always catches the client up
   * in the first batch; etcd delivers the missed history as it streams it.
   */
  watch(fromRevision: number, onBatch: (b: WatchBatch) => void, onError: (e: Error) => void): WatchHandle;
  close(): void;
}

/**
 * Reservations an operator manages through the registry (the embedded one; on etcd a reservation
 * is a subnet key written without a lease, with etcdctl, as flannel's docs say). A reservation
 * is granted by acquire() to the node with its public IP, is never given to another node,
 * never expires, and survives that node's revoke.
 */
export interface ReservationRegistry {
  reserve(r: Reservation): Promise<void>;
  /** Ends a reservation; a lease on it ends too (its node re-acquires, normally the same subnet). */
  unreserve(subnet: string): Promise<void>;
  reservations(): Promise<Reservation[]>;
}

export function hasReservations(r: unknown): r is ReservationRegistry {
  const x = r as Partial<ReservationRegistry> | null;
  return typeof x?.reserve === 'function' && typeof x.unreserve === 'function' && typeof x.reservations === 'function';
}

export type RegistryErrorCode = 'exhausted' | 'not_found' | 'invalid' | 'unavailable' | 'permission';

export class RegistryError extends Error {
  readonly code: RegistryErrorCode;

  constructor(code: RegistryErrorCode, message: string) {
    super(message);
    this.name = 'RegistryError';
    this.code = code;
  }
}

export function isRegistryError(e: unknown): e is RegistryError {
  return e instanceof RegistryError;
}

/** Deep-enough copy so callers can't mutate registry state through a returned lease. */
export function cloneLease(l: Lease): Lease {
  return {
    subnet: l.subnet,
    publicIp: l.publicIp,
    backendType: l.backendType,
    backendData: JSON.parse(JSON.stringify(l.backendData)) as Record<string, unknown>,
    expiration: l.expiration,
  };
}
