// weft.proto loading and the mapping between Registry types and their protobuf messages,
// shared by the server and the client so both sides agree on every field and error code.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { packageRoot } from '../util/package-root';
import { MAX_CIDR_CHARS, MAX_STATUS_DETAILS_CHARS, checkBackendDataText, leaseProblem } from './limits';
import type { NetworkConfig } from './netconfig';
import { RegistryError, type Lease, type LeaseEvent, type RegistryErrorCode, type WatchBatch } from './registry';

export const PROTO_RELATIVE_PATH = path.join('src', 'control', 'proto', 'weft.proto');

export function protoPath(): string {
  return path.join(packageRoot(), PROTO_RELATIVE_PATH);
}

let cached: grpc.ServiceClientConstructor | undefined;

/** The generated Control service client class; `.service` is the server-side definition. */
export function controlService(): grpc.ServiceClientConstructor {
  if (cached) return cached;
  const def = protoLoader.loadSync(protoPath(), {
    keepCase: false, // camelCase fields on the JS side: public_ip → publicIp
    longs: Number, // revisions and ms timestamps stay far below 2^53
    enums: String,
    defaults: true, // proto3 omits zero values on the wire; fill them so readers needn't guess
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    weft: { control: { v1: { Control: grpc.ServiceClientConstructor } } };
  };
  cached = pkg.weft.control.v1.Control;
  return cached;
}

// ---- message shapes as @grpc/proto-loader presents them (camelCase, defaults filled) ----

export interface WireLease {
  subnet: string;
  publicIp: string;
  backendType: string;
  backendData: string;
  expirationMs: number;
}

export interface WireBackend {
  type: string;
  port: number;
  vni: number;
  directRouting: boolean;
}

export interface WireNetworkConfig {
  netConfJson: string;
  network: string;
  subnetLen: number;
  subnetMin: string;
  subnetMax: string;
  backend: WireBackend | null;
}

export interface WireAcquireRequest {
  publicIp: string;
  backendType: string;
  backendData: string;
  /** Empty: no hint. */
  previousSubnet: string;
}

export interface WireLeaseRef {
  subnet: string;
  publicIp: string;
}

export interface WireReservation {
  subnet: string;
  publicIp: string;
}

export interface WireListResponse {
  leases: WireLease[];
  revision: number;
}

export interface WireWatchRequest {
  fromRevision: number;
}

export interface WireLeaseEvent {
  type: 'TYPE_UNSPECIFIED' | 'ADDED' | 'REMOVED';
  lease: WireLease | null;
}

export interface WireWatchBatch {
  revision: number;
  snapshot: boolean;
  leases: WireLease[];
  events: WireLeaseEvent[];
}

export function leaseToWire(l: Lease): WireLease {
  return {
    subnet: l.subnet,
    publicIp: l.publicIp,
    backendType: l.backendType,
    backendData: JSON.stringify(l.backendData ?? {}),
    expirationMs: l.expiration,
  };
}

export function leaseFromWire(w: WireLease | null | undefined): Lease {
  if (!w) throw new RegistryError('invalid', 'lease missing from message');
  const lease: Lease = {
    subnet: w.subnet,
    publicIp: w.publicIp,
    backendType: w.backendType,
    backendData: parseBackendData(w.backendData),
    expiration: Number(w.expirationMs),
  };
  const problem = leaseProblem(lease);
  if (problem !== undefined) throw new RegistryError('invalid', problem);
  return lease;
}

/** Called for each lease a reader skips, with why; the caller logs it. */
export type SkippedLease = (why: string, lease: { subnet: string; publicIp: string }) => void;

/**
 * The usable leases of a List reply or snapshot. One that cannot be decoded or breaks limits.ts
 * (stored by an older or foreign server) is skipped and reported, so it costs the reader that
 * one peer instead of the whole list.
 */
export function leasesFromWire(ws: readonly WireLease[] | null | undefined, skipped: SkippedLease): Lease[] {
  const out: Lease[] = [];
  for (const w of ws ?? []) {
    try {
      out.push(leaseFromWire(w));
    } catch (e) {
      skipped((e as Error).message, identify(w));
    }
  }
  return out;
}

/** Enough of a bad lease to find it in a log, bounded (its fields may be the problem). */
function identify(w: WireLease | null | undefined): { subnet: string; publicIp: string } {
  const cut = (v: unknown): string => (typeof v === 'string' ? v.slice(0, 32) : '');
  return { subnet: cut(w?.subnet), publicIp: cut(w?.publicIp) };
}

/** "" means {}; anything else must be a JSON object within limits.ts' size. */
export function parseBackendData(s: string | undefined): Record<string, unknown> {
  if (s === undefined || s === '') return {};
  checkBackendDataText(s);
  let v: unknown;
  try {
    v = JSON.parse(s);
  } catch (e) {
    throw new RegistryError('invalid', `backend_data is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new RegistryError('invalid', 'backend_data must be a JSON object');
  }
  return v as Record<string, unknown>;
}

export function configToWire(c: NetworkConfig): WireNetworkConfig {
  return {
    netConfJson: JSON.stringify(c.raw),
    network: c.network,
    subnetLen: c.subnetLen,
    subnetMin: c.subnetMin,
    subnetMax: c.subnetMax,
    backend: {
      type: c.backend.type,
      port: c.backend.port ?? 0,
      vni: c.backend.vni ?? 0,
      directRouting: c.backend.directRouting ?? false,
    },
  };
}

function eventToWire(e: LeaseEvent): WireLeaseEvent {
  return { type: e.type === 'added' ? 'ADDED' : 'REMOVED', lease: leaseToWire(e.lease) };
}

function eventFromWire(e: WireLeaseEvent): LeaseEvent {
  if (e.type !== 'ADDED' && e.type !== 'REMOVED') {
    throw new RegistryError('invalid', `unknown lease event type ${String(e.type).slice(0, 32)}`);
  }
  return { type: e.type === 'ADDED' ? 'added' : 'removed', lease: leaseFromWire(e.lease) };
}

export function batchToWire(b: WatchBatch): WireWatchBatch {
  return {
    revision: b.revision,
    snapshot: b.snapshot,
    leases: b.leases.map(leaseToWire),
    events: b.events.map(eventToWire),
  };
}

/** As leasesFromWire, a bad lease in a snapshot or event is skipped and reported. */
export function batchFromWire(w: WireWatchBatch, skipped: SkippedLease): WatchBatch {
  const events: LeaseEvent[] = [];
  for (const e of w.events ?? []) {
    try {
      events.push(eventFromWire(e));
    } catch (err) {
      const subnet = e?.lease?.subnet;
      if (e?.type === 'REMOVED' && typeof subnet === 'string' && subnet.length <= MAX_CIDR_CHARS) {
        // A removal needs only the subnet; dropping it would keep routing to a peer that left.
        // The rest is blanked, as etcd's DELETE without prev_kv leaves it.
        events.push({ type: 'removed', lease: { subnet, publicIp: '', backendType: '', backendData: {}, expiration: 0 } });
        continue;
      }
      skipped((err as Error).message, identify(e?.lease));
    }
  }
  return { revision: Number(w.revision), snapshot: w.snapshot, leases: leasesFromWire(w.leases, skipped), events };
}

// ---- errors ----

const TO_STATUS: Record<RegistryErrorCode, grpc.status> = {
  exhausted: grpc.status.RESOURCE_EXHAUSTED,
  not_found: grpc.status.NOT_FOUND,
  invalid: grpc.status.INVALID_ARGUMENT,
  permission: grpc.status.PERMISSION_DENIED,
  unavailable: grpc.status.UNAVAILABLE,
};

export function errorToStatus(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof RegistryError) return { code: TO_STATUS[e.code], details: boundedDetails(e.message) };
  const msg = e instanceof Error ? e.message : String(e);
  return { code: grpc.status.INTERNAL, details: boundedDetails(msg) };
}

/**
 * Details ride in the grpc-message trailer: one over the client's HTTP/2 header list limit
 * fails its whole session, not just this call (limits.ts). The checks quote short prefixes
 * already; this is the backstop for any message that still quotes too much.
 */
function boundedDetails(msg: string): string {
  if (msg.length <= MAX_STATUS_DETAILS_CHARS) return msg;
  return `${msg.slice(0, MAX_STATUS_DETAILS_CHARS)}… (${msg.length} characters in all)`;
}

/** gRPC errors → RegistryError with the server's message (details), not grpc-js's "8 RESOURCE_EXHAUSTED: …". */
export function errorFromStatus(e: unknown): RegistryError {
  if (e instanceof RegistryError) return e;
  const se = e as Partial<grpc.ServiceError>;
  const details = se.details || (e instanceof Error ? e.message : String(e));
  switch (se.code) {
    case grpc.status.RESOURCE_EXHAUSTED:
      return new RegistryError('exhausted', details);
    case grpc.status.NOT_FOUND:
      return new RegistryError('not_found', details);
    case grpc.status.INVALID_ARGUMENT:
      return new RegistryError('invalid', details);
    case grpc.status.PERMISSION_DENIED:
    case grpc.status.UNAUTHENTICATED:
      return new RegistryError('permission', details);
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return new RegistryError('unavailable', details);
    default: {
      // INTERNAL, UNKNOWN, UNIMPLEMENTED…: the daemon can only retry, as with an outage, but
      // the code name stays in the message for whoever reads the log.
      const name = se.code !== undefined ? grpc.status[se.code] : 'error';
      return new RegistryError('unavailable', `${name}: ${details}`);
    }
  }
}
