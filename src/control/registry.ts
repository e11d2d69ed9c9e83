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

/** A subnet lease: what the datapath routes by (PeerLease), and when it expires. */
export interface Lease extends PeerLease {
  /**
   * Milliseconds since the epoch. 0 in watch batches from etcd, where knowing it costs a
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
