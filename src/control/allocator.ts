// Subnet allocation, as a pure function of (config, current leases, remembered subnets, request).
// The registry owns time, persistence and events; this file only decides which subnet a node
// gets, so every rule here is unit-testable with a seeded random source.
//
// Rules (flanneld's local manager, pkg/subnet/etcd/local_manager.go tryAcquireLease):
//  0. A node with a reservation (a subnet kept for its public IP, no TTL) gets that subnet, as a
//     lease that never expires; an ordinary lease it held elsewhere is dropped. A reservation
//     that no longer fits the config is skipped (the registry warns) and the node is treated
//     as having none. Reserved subnets are never handed to another node.
//  1. A node that still holds a lease — same public IP — gets that lease back, renewed, with its
//     backend attributes updated (a restarted vxlan node has a new VTEP MAC).
//  2. A node whose lease lapsed gets its previous subnet again if nobody took it meanwhile, so
//     pods keep their addresses across a long outage. The node's own record (subnet.env's
//     FLANNEL_SUBNET, sent as `previousSubnet`, which is what flanneld consults) comes first; the
//     registry's memory of what that public IP held is the fallback.
//  3. Otherwise a free subnet between SubnetMin and SubnetMax, chosen at random: random rather
//     than lowest-free so that a node that lost its lease and comes back with stale routes is
//     unlikely to collide with whoever was handed the subnet next.
import { cidrContains, classifyIpv4, formatCidr, formatIpv4, maskOf, parseCidr, parseIpv4, type Ipv4Class } from '../route/address';
import { BACKEND_TYPES, isBackendType } from '../datapath/backends';
import { MAX_LEASES, backendDataText, checkAcquireSizes } from './limits';
import { quote } from '../util/quote';
import type { NetworkConfig } from './netconfig';
import { NEVER_EXPIRES, RegistryError, isReservation, type AcquireRequest, type Lease, type Reservation } from './registry';

export interface AllocationInput {
  config: NetworkConfig;
  /** Leases currently held; entries whose expiration is <= now are treated as already gone. */
  leases: readonly Lease[];
  /** publicIp → subnet last held, kept after a lease expires or is revoked. */
  previous: Readonly<Record<string, string>>;
  request: AcquireRequest;
  /**
   * Subnets reserved for a public IP. A reservation its node holds is also in `leases` (with
   * expiration NEVER_EXPIRES); one it does not hold yet is only here.
   */
  reservations?: readonly Reservation[];
  now: number;
  ttlMs: number;
  /** Uniform in [0, 1), like Math.random; injectable for tests. */
  random: () => number;
}

export interface Allocation {
  lease: Lease;
  /** How the subnet was chosen, for logs and tests. */
  reason: 'reserved' | 'held' | 'previous' | 'random';
  /** This node's reservation that no longer fits the config and was skipped; the registry warns. */
  skippedReservation?: Reservation;
  /**
   * A lease the same node held that no longer fits the config (the net-conf changed under it);
   * the registry removes it and announces the removal before announcing the new one.
   */
  replaced?: Lease;
}

/** Canonical dotted quad, or RegistryError('invalid'). Syntax only: enough to look a lease up. */
export function normalisePublicIp(ip: unknown): string {
  if (typeof ip !== 'string' || ip === '') throw new RegistryError('invalid', 'publicIp is required');
  checkAcquireSizes({ publicIp: ip });
  try {
    return formatIpv4(parseIpv4(ip));
  } catch {
    throw new RegistryError('invalid', `publicIp ${quote(ip)} is not an IPv4 address`);
  }
}

const NOT_A_PEER_ADDRESS: Record<Exclude<Ipv4Class, 'unicast'>, string> = {
  'this-network': 'in 0.0.0.0/8 ("this network", never a destination)',
  loopback: 'a loopback address (127.0.0.0/8): every peer would send to itself',
  'link-local': 'a link-local address (169.254.0.0/16), not routed off its own link',
  multicast: 'a multicast address (224.0.0.0/4)',
  reserved: 'a reserved address (240.0.0.0/4)',
  broadcast: 'the limited broadcast address',
};

/**
 * The publicIp a node may lease with, canonical. Every peer encapsulates to it, so it must be a
 * unicast address other hosts can reach — not one of classifyIpv4's special blocks — and must
 * lie outside the overlay network itself: the peers route that network into the overlay, so
 * encapsulated packets for the tunnel endpoint would be routed back into the tunnel.
 */
export function acquirablePublicIp(ip: unknown, config: NetworkConfig): string {
  const canonical = normalisePublicIp(ip);
  const n = parseIpv4(canonical);
  const cls = classifyIpv4(n);
  if (cls !== 'unicast') throw new RegistryError('invalid', `publicIp ${canonical} is ${NOT_A_PEER_ADDRESS[cls]}; pass the node's underlay address`);
  if (cidrContains(parseCidr(config.network), n)) {
    throw new RegistryError(
      'invalid',
      `publicIp ${canonical} is inside the overlay network ${config.network}: peers would route their tunnel to it through the tunnel; pass the node's underlay address`,
    );
  }
  return canonical;
}

export function validateBackend(
  config: NetworkConfig,
  backendType: unknown,
  backendData: unknown,
): { backendType: string; backendData: Record<string, unknown> } {
  let type = config.backend.type;
  if (backendType !== undefined && backendType !== null && backendType !== '') {
    if (!isBackendType(backendType)) {
      throw new RegistryError(
        'invalid',
        `backendType ${typeof backendType === 'string' ? quote(backendType) : typeof backendType} is not one of ${BACKEND_TYPES.join(', ')}`,
      );
    }
    type = backendType;
  }
  let data: Record<string, unknown> = {};
  if (backendData !== undefined && backendData !== null) {
    if (typeof backendData !== 'object' || Array.isArray(backendData)) {
      throw new RegistryError('invalid', 'backendData must be a JSON object');
    }
    // Round-trip through JSON: the lease is persisted and sent as JSON, so anything that does
    // not survive that (functions, cycles, BigInt) is refused here rather than lost later, and
    // the size limit applies to the text every List reply will carry.
    data = JSON.parse(backendDataText(backendData)) as Record<string, unknown>;
  }
  return { backendType: type, backendData: data };
}

/** The range of subnets a config hands out, as numbers. */
export interface SubnetRange {
  min: number;
  max: number;
  len: number;
  size: number;
  count: number;
}

export function subnetRange(config: NetworkConfig): SubnetRange {
  const min = parseIpv4(config.subnetMin) >>> 0;
  const max = parseIpv4(config.subnetMax) >>> 0;
  const size = 2 ** (32 - config.subnetLen);
  return { min, max, len: config.subnetLen, size, count: Math.floor((max - min) / size) + 1 };
}

/** Index of `subnet` in the range, or -1 when it is not one of the range's subnets. */
export function subnetIndex(range: SubnetRange, subnet: string): number {
  let c;
  try {
    c = parseCidr(subnet);
  } catch {
    return -1;
  }
  const addr = c.addr >>> 0;
  if (c.len !== range.len || addr < range.min || addr > range.max) return -1;
  const off = addr - range.min;
  return off % range.size === 0 ? off / range.size : -1;
}

export function subnetAt(range: SubnetRange, index: number): string {
  return formatCidr({ addr: (range.min + index * range.size) >>> 0, len: range.len });
}

export function allocate(input: AllocationInput): Allocation {
  const { config, now, ttlMs } = input;
  checkAcquireSizes(input.request);
  const publicIp = acquirablePublicIp(input.request.publicIp, config);
  const { backendType, backendData } = validateBackend(config, input.request.backendType, input.request.backendData);
  const range = subnetRange(config);
  const expiration = now + ttlMs;
  const live = input.leases.filter((l) => l.expiration > now);

  const reservations = input.reservations ?? [];

  // Rule 0: the node's reservation, if it fits the config and nobody else holds any of it (a
  // registry never lets that happen; an etcd key written by hand might).
  let skippedReservation: Reservation | undefined;
  for (const r of reservations) {
    if (r.publicIp !== publicIp) continue;
    const fits = subnetIndex(range, r.subnet) >= 0 && !live.some((l) => l.publicIp !== publicIp && overlaps(l.subnet, r.subnet));
    if (!fits) {
      skippedReservation = r;
      continue;
    }
    const other = live.find((l) => l.publicIp === publicIp && l.subnet !== r.subnet && !isReservation(l));
    return { reason: 'reserved', replaced: other, lease: { subnet: r.subnet, publicIp, backendType, backendData, expiration: NEVER_EXPIRES } };
  }

  // Rule 1: the node's own live lease, if it still fits the config. A reservation lease left
  // here is one rule 0 skipped: it stays, and is not this node's any more than anyone's.
  const held = live.find((l) => l.publicIp === publicIp && !isReservation(l));
  let replaced: Lease | undefined;
  if (held) {
    if (subnetIndex(range, held.subnet) >= 0) {
      return { reason: 'held', skippedReservation, lease: { subnet: held.subnet, publicIp, backendType, backendData, expiration } };
    }
    replaced = held;
  }

  // Taken = every index some other live lease overlaps. Usually that is the lease's own index;
  // after SubnetLen or SubnetMin changed in net-conf.json, old leases can straddle several of
  // the new subnets or sit off the grid, and handing out an overlapping subnet would route one
  // pod range to two nodes.
  const taken = new Set<number>();
  for (const l of live) {
    if (l === replaced) continue;
    markOverlap(range, l.subnet, taken);
  }
  for (const r of reservations) markOverlap(range, r.subnet, taken);
  // Every List reply and watch snapshot carries every lease, and limits.ts sizes the gRPC
  // messages for MAX_LEASES of them: one more could make List fail for every node.
  if (live.length - (replaced ? 1 : 0) >= MAX_LEASES) {
    throw new RegistryError('exhausted', `the registry holds ${MAX_LEASES} leases, the most weft's control plane carries in one reply`);
  }

  // Rule 2: the subnet this node held before, if it is still in range and free.
  for (const prev of [input.request.previousSubnet, input.previous[publicIp]]) {
    if (typeof prev !== 'string') continue;
    const i = subnetIndex(range, prev);
    if (i >= 0 && !taken.has(i)) {
      return { reason: 'previous', replaced, skippedReservation, lease: { subnet: subnetAt(range, i), publicIp, backendType, backendData, expiration } };
    }
  }

  // Rule 3: uniform over the free indices. Picks the r-th free index by walking the sorted taken
  // indices, so the cost is O(leases), not O(range) — a /8 cut into /30s has four million.
  const free = range.count - taken.size;
  if (free <= 0) {
    throw new RegistryError(
      'exhausted',
      `no free subnet in ${config.network} between SubnetMin ${config.subnetMin} and SubnetMax ${config.subnetMax}: ${taken.size} of ${range.count} leased`,
    );
  }
  let r = Math.floor(input.random() * free);
  if (!(r >= 0)) r = 0; // NaN from a broken random source
  if (r >= free) r = free - 1;
  const sorted = [...taken].sort((a, b) => a - b);
  let idx = r;
  for (const t of sorted) {
    if (t <= idx) idx++;
    else break;
  }
  return { reason: 'random', replaced, skippedReservation, lease: { subnet: subnetAt(range, idx), publicIp, backendType, backendData, expiration } };
}

/**
 * How many of the subnets `config` hands out no lease or reservation in `taken` overlaps: what a
 * node acquiring now could still get (weft control's /metrics, state="free"). Overlap as
 * allocate() counts it, so a lease left from an older SubnetLen blocks every subnet it covers.
 */
export function countFree(config: NetworkConfig, taken: readonly string[]): number {
  const range = subnetRange(config);
  const marked = new Set<number>();
  for (const subnet of taken) markOverlap(range, subnet, marked);
  return range.count - marked.size;
}

/** Whether two CIDRs share any address (either contains the other). */
export function overlaps(a: string, b: string): boolean {
  let x, y;
  try {
    x = parseCidr(a);
    y = parseCidr(b);
  } catch {
    return false;
  }
  const mask = maskOf(Math.min(x.len, y.len));
  return (x.addr & mask) >>> 0 === (y.addr & mask) >>> 0;
}

function markOverlap(range: SubnetRange, subnet: string, into: Set<number>): void {
  let c;
  try {
    c = parseCidr(subnet);
  } catch {
    return; // the store validates leases on load; nothing unparsable reaches here
  }
  const start = c.addr >>> 0;
  const end = start + 2 ** (32 - c.len) - 1;
  const lo = Math.max(0, Math.ceil((start - range.min - range.size + 1) / range.size));
  const hi = Math.min(range.count - 1, Math.floor((end - range.min) / range.size));
  for (let i = lo; i <= hi; i++) into.add(i);
}
