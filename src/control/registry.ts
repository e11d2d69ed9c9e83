// The one lease-registry contract every control-plane implementation meets: the embedded
// in-process registry, the gRPC client that talks to it, and (later) etcd. Nothing here names a
// transport, so the daemon can be wired to any of them by a flag.
import type { NetworkConfig } from './netconfig';

export type { NetworkConfig } from './netconfig';

export interface Lease {
  /** The node's subnet in CIDR form, e.g. "10.244.3.0/24". */
  subnet: string;
  /** The node's underlay address; peers send encapsulated traffic here. */
  publicIp: string;
  backendType: string;
  /** Backend-specific attributes (e.g. vxlan's VtepMAC), opaque to the registry. */
  backendData: Record<string, unknown>;
  /** Milliseconds since the epoch. */
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
   * Stream lease changes after `fromRevision`. The first batch always comes at once and brings
   * the client to the current revision (a snapshot, the missed events, or none at all when it is
   * already current), so receiving it means the watch is established.
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
