// How big each field of a control-plane request or lease may be, and the gRPC message sizes
// that follow from them: the one place these numbers live. The gRPC server checks its wire
// requests with these before any work, the embedded and etcd registries check their
// AcquireRequest/LeaseRef the same way (so a caller that bypasses the server meets the same
// rules), and the client and the etcd registry skip a lease someone else stored that breaks them.
// The server's bounds on watch streams (backlog per stream, streams per client) are here too.
//
// Why every field needs one: a lease is copied into every List reply and watch snapshot, to
// every node. One lease with 4 MiB of backendData pushed every List reply past grpc-js's 4 MiB
// receive limit, so every other daemon's List and Watch failed; a 100 KB publicIp came back
// quoted in the error's grpc-message trailer, larger than the client's HTTP/2 header list limit
// (64 KiB in Node), which killed the client's whole HTTP/2 session instead of the one call.
import type { AcquireRequest, Lease, LeaseRef } from './registry';
import { RegistryError } from './registry';
import { quote } from '../util/quote';

/** "255.255.255.255". */
export const MAX_IPV4_CHARS = 15;
/** "255.255.255.255/32". */
export const MAX_CIDR_CHARS = 18;
/**
 * A lease's backend type. weft's own are at most 7 characters ("host-gw"); flannel's longest
 * is "tencentvpc", and etcd leases written by flanneld are read too, so leave room.
 */
export const MAX_BACKEND_TYPE_CHARS = 32;
/**
 * backendData as JSON text, in UTF-8 bytes. flannel's backends write a few dozen bytes —
 * vxlan's {"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"} is 40, wireguard's {"PublicKey":"<44 base64>"}
 * about 60 — so 1 KiB is generous and still keeps the whole lease around 1 KiB.
 */
export const MAX_BACKEND_DATA_BYTES = 1024;
/**
 * The most leases one registry holds. Kubernetes supports clusters of up to 5,000 nodes (one
 * lease each); 8,192 leaves room and bounds every List reply and watch snapshot (below).
 */
export const MAX_LEASES = 8192;
/**
 * The embedded registry commits at most this many queued mutations at once, so one commit's
 * watch batch (every lease swept as expired, plus at most two events — removed, added — per
 * mutation) never holds more than MAX_EVENTS_PER_BATCH events.
 */
export const MAX_MUTATIONS_PER_COMMIT = MAX_LEASES / 2;
/**
 * A lease value in etcd (flannel's LeaseAttrs JSON, etcd/codec.ts): backendData plus room for
 * the other attributes, PublicIPv6 included. Read before JSON parsing, so a huge value written
 * by someone else costs no parse.
 */
export const MAX_LEASE_VALUE_BYTES = MAX_BACKEND_DATA_BYTES + 256;
/** Events in one watch batch; a client further behind than this gets a snapshot instead. */
export const MAX_EVENTS_PER_BATCH = 2 * MAX_LEASES;

/**
 * The protobuf encoding of one Lease at the limits above, as an element of a repeated field
 * (weft.proto): per string field a tag byte, a length varint (2 bytes for backend_data's
 * 1024) and the text; expiration_ms a tag byte and up to 10 varint bytes; then the element's
 * own tag and length varint (3), and LeaseEvent's type field and wrapper (2 + 3) when it
 * travels in a watch event. test/unit/control-limits.test.ts encodes the worst case to check.
 */
export const MAX_LEASE_WIRE_BYTES = 2 + MAX_CIDR_CHARS + (2 + MAX_IPV4_CHARS) + (2 + MAX_BACKEND_TYPE_CHARS) + (3 + MAX_BACKEND_DATA_BYTES) + 11 + 3 + (2 + 3);

const MIB = 1024 * 1024;
/**
 * The largest reply (List, a watch batch, GetConfig) the server sends and the client accepts:
 * MAX_EVENTS_PER_BATCH leases at their largest plus 64 KiB for the rest (revision, flags, the
 * net-conf text), rounded up to whole MiB — 18 MiB. Both sides use this one number, so a reply
 * the server is willing to send is never one the client refuses, and no lease a registry
 * accepts can make a List or Watch fail for anyone.
 */
export const MAX_REPLY_BYTES = Math.ceil((MAX_EVENTS_PER_BATCH * MAX_LEASE_WIRE_BYTES + 64 * 1024) / MIB) * MIB;
/**
 * The largest request the server reads. A valid one is about 1 KiB; grpc-js's default 4 MiB is
 * kept so that anything up to it is read and refused with INVALID_ARGUMENT naming the field,
 * while larger ones are refused by grpc-js itself (RESOURCE_EXHAUSTED) before a handler runs.
 */
export const MAX_REQUEST_BYTES = 4 * MIB;
/**
 * gRPC status details travel in the grpc-message trailer, inside the peer's HTTP/2 header list
 * limit; longer details are cut so no error can take the connection down with it.
 */
export const MAX_STATUS_DETAILS_CHARS = 1024;

// Watch streams.
// How much of `weft control` one watch stream, and one client, may hold. The server only sends
// watch batches; what a client does not read piles up in the server's memory (grpc-js buffers
// every write it is given, without limit), so without these a few stalled or hostile clients
// could grow the control plane until the kernel kills it — taking every node's lease renewals
// with it.

/**
 * Lease events (a snapshot's leases count one each) a single watch stream may have waiting in
 * the server: handed to grpc-js but not yet flushed to HTTP/2, plus queued behind a write that
 * said "wait for 'drain'". A daemon applies a batch in microseconds, so it only gets near this
 * when it stopped reading (a stopped process, a link that is down but whose keepalive has not
 * expired yet) — or when it never meant to read. A wire lease is ~200 bytes, so 1024 of them is
 * ~200 KB per stream: 100 stalled streams cost ~20 MB, not the unbounded growth they caused
 * before. It is still far above any burst a live daemon sees between two reads. Two kinds of
 * batch go out whole whatever their size, so the bound is this plus one batch: a stream's first
 * (which may be a whole snapshot) and one that finds the stream drained (a sweep of expired
 * leases can hold up to MAX_EVENTS_PER_BATCH events). A stream past it is ended with
 * RESOURCE_EXHAUSTED; the client resumes from the revision it last applied, and the registry's
 * event log (DEFAULT_EVENT_LOG_SIZE, 10,000 events) still holds what it missed, so it catches up
 * with one delta rather than a full snapshot.
 */
export const WATCH_MAX_QUEUED_EVENTS = 1024;

/**
 * Watch streams one client may hold open at once. The client is its certificate under mTLS,
 * else its IP address. A daemon holds one, and briefly two while a cut-off or broken stream is
 * being torn down as its replacement opens; 8 leaves room for a few operator tools watching from
 * the same host. Several nodes behind one NAT address without
 * mTLS share the limit: raise it with `weft control --max-watches-per-client`.
 */
export const DEFAULT_MAX_WATCHES_PER_CLIENT = 8;

function invalid(msg: string): RegistryError {
  return new RegistryError('invalid', msg);
}

/** Refuses a string field longer than `max` characters (type checks stay with the parsers). */
function checkLength(field: string, v: unknown, max: number, what: string): void {
  if (typeof v === 'string' && v.length > max) {
    throw invalid(`${field} is ${v.length} characters long, longer than ${what} (${max}): ${quote(v)}`);
  }
}

/** Refuses backendData JSON text over MAX_BACKEND_DATA_BYTES; cheap, so it runs before parsing. */
export function checkBackendDataText(text: string): void {
  // Each UTF-16 unit is at most 3 UTF-8 bytes: counting exactly only when it could matter
  // keeps a 4 MiB string from being walked twice.
  if (text.length * 3 <= MAX_BACKEND_DATA_BYTES) return;
  const bytes = text.length > MAX_BACKEND_DATA_BYTES ? text.length : Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_BACKEND_DATA_BYTES) {
    throw invalid(
      `backendData is ${bytes} bytes of JSON, more than the ${MAX_BACKEND_DATA_BYTES} allowed (flannel's backends write a few dozen): ${quote(text)}`,
    );
  }
}

/** The JSON text a lease's backendData is stored and sent as, checked against MAX_BACKEND_DATA_BYTES. */
export function backendDataText(data: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(data ?? {});
  } catch (e) {
    throw invalid(`backendData is not JSON-serialisable: ${(e as Error).message}`);
  }
  checkBackendDataText(text ?? '');
  return text ?? '{}';
}

/** Field sizes of an acquire, wire or API form: throws RegistryError('invalid'). */
export function checkAcquireSizes(req: { publicIp?: unknown; backendType?: unknown; previousSubnet?: unknown }): void {
  checkLength('publicIp', req.publicIp, MAX_IPV4_CHARS, 'an IPv4 address');
  checkLength('backendType', req.backendType, MAX_BACKEND_TYPE_CHARS, 'any backend name');
  checkLength('previousSubnet', req.previousSubnet, MAX_CIDR_CHARS, 'an IPv4 CIDR');
}

/** An AcquireRequest within the limits, as the registries take it. */
export function checkAcquireRequest(req: AcquireRequest): void {
  if (!req || typeof req !== 'object') throw invalid('acquire request is missing');
  checkAcquireSizes(req);
  if (req.backendData !== undefined && req.backendData !== null) backendDataText(req.backendData);
}

/** A LeaseRef (renew, revoke) within the limits. */
export function checkLeaseRef(ref: LeaseRef): void {
  if (!ref || typeof ref !== 'object') throw invalid('lease subnet is required');
  checkLength('subnet', ref.subnet, MAX_CIDR_CHARS, 'an IPv4 CIDR');
  checkLength('publicIp', ref.publicIp, MAX_IPV4_CHARS, 'an IPv4 address');
}

/**
 * Why a lease someone else stored (another writer to etcd, an older server) cannot be used, or
 * undefined when it is within the limits. Readers skip such a lease rather than fail: one bad
 * lease must not cost a node every other peer.
 */
/** A subnet given alone (weft control unreserve). */
export function checkSubnetSize(subnet: unknown): void {
  checkLength('subnet', subnet, MAX_CIDR_CHARS, 'an IPv4 CIDR');
}

export function leaseProblem(l: Pick<Lease, 'subnet' | 'publicIp' | 'backendType' | 'backendData'>): string | undefined {
  try {
    checkLength('subnet', l.subnet, MAX_CIDR_CHARS, 'an IPv4 CIDR');
    checkLength('publicIp', l.publicIp, MAX_IPV4_CHARS, 'an IPv4 address');
    checkLength('backendType', l.backendType, MAX_BACKEND_TYPE_CHARS, 'any backend name');
    backendDataText(l.backendData);
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}
