// The embedded registry's durable state: one JSON file, replaced atomically on every mutation.
//
// Why one file rewritten whole rather than an append-only log: the state is small (one line per
// node), and a whole-file replace has exactly two possible outcomes after a crash — the old file
// or the new one — which is the property "no granted lease is ever lost" needs. The sequence is
// the classic one (replaceFile in util/durable-file.ts): write a temp file in the same directory (rename is only atomic within a
// filesystem), fsync it (so the rename can't expose a file whose data blocks never reached the
// disk; ext4's auto_da_alloc is a heuristic, not a promise), rename over the old file, then
// fsync the directory (the rename itself is a directory-entry change that a power cut can lose).
// A SIGKILL alone never loses written page cache; the fsyncs are for power loss and kernel panics.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { formatCidr, formatIpv4, parseCidr, parseIpv4 } from '../route/address';
import { makeDirs, quotePath } from '../util/make-dirs';
import { isReservation, type Lease, type Reservation } from './registry';
import { StateLockError, releaseLock, takeLock } from './state-lock';
import { replaceFile } from '../util/durable-file';

export const STATE_FILE = 'leases.json';
export const STATE_VERSION = 1;
const TMP_PREFIX = `.${STATE_FILE}.`;
const TMP_SUFFIX = '.tmp';

export interface StoreState {
  /** Bumped once per lease event; never goes backwards, even across restarts. */
  revision: number;
  leases: Lease[];
  /** publicIp → subnet last held, so a node that comes back late can get its subnet again. */
  previous: Record<string, string>;
  /**
   * Subnets kept for a public IP (`weft control reserve`), at most one per subnet and per IP.
   * The node's lease on its reserved subnet, once it acquires it, is in `leases` with
   * expiration NEVER_EXPIRES. (Absent from files written before reservations: none.)
   */
  reservations: Reservation[];
}

export function emptyState(): StoreState {
  return { revision: 0, leases: [], previous: {}, reservations: [] };
}

export class StateFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFileError';
  }
}

export class LeaseStore {
  readonly dir: string;
  readonly file: string;
  private seq = 0;
  /** The content of our lock file while we hold it. */
  private lockClaim: string | undefined;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
    this.file = path.join(this.dir, STATE_FILE);
  }

  /**
   * Claims the state dir for this process: a second `weft control` on the same dir would keep
   * its own copy of the leases in memory and the two would overwrite each other's file, each
   * handing out subnets the other granted. The lock protocol is in state-lock.ts: atomic, and a
   * lock left by a process that is gone (SIGKILL, power loss) is taken over, so a crash never
   * needs manual cleanup.
   */
  async lock(): Promise<void> {
    if (this.lockClaim !== undefined) throw new StateFileError(`state dir ${quotePath(this.dir)} is already locked by this store`);
    try {
      await makeDirs(this.dir, 0o700);
    } catch (e) {
      throw new StateFileError(`state dir ${quotePath(this.dir)}: ${(e as Error).message}`);
    }
    try {
      this.lockClaim = await takeLock(this.dir);
    } catch (e) {
      throw e instanceof StateLockError ? new StateFileError(e.message) : e;
    }
  }

  /** Releases the lock if we hold it (synchronous: called from the registry's close()). */
  unlock(): void {
    const claim = this.lockClaim;
    if (claim === undefined) return;
    this.lockClaim = undefined;
    releaseLock(this.dir, claim);
  }

  /**
   * Reads the state, or an empty state when the file does not exist yet (first start). Any other
   * failure is fatal: starting empty over a file we could not read would hand out subnets that
   * live nodes still route, so the operator must decide.
   */
  async load(): Promise<StoreState> {
    try {
      await makeDirs(this.dir, 0o700);
    } catch (e) {
      throw new StateFileError(`state dir ${quotePath(this.dir)}: ${(e as Error).message}`);
    }
    await this.removeStaleTemps();
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') return emptyState();
      throw new StateFileError(`cannot read state file ${this.file}: ${err.message}`);
    }
    try {
      return decodeState(text);
    } catch (e) {
      throw new StateFileError(
        `state file ${this.file} is corrupt (${(e as Error).message}); refusing to start, because starting ` +
          'empty could grant subnets that nodes still use — repair the file or move it away',
      );
    }
  }

  async save(state: StoreState): Promise<void> {
    const body = encodeState(state);
    // pid + counter: unique per write even if two registries in one process share a directory.
    const tmp = path.join(this.dir, `${TMP_PREFIX}${process.pid}.${++this.seq}${TMP_SUFFIX}`);
    await replaceFile(this.file, body, tmp, 0o600);
  }

  /** A temp file left by a crash mid-write is an incomplete copy of a state that never landed. */
  private async removeStaleTemps(): Promise<void> {
    const names = await fsp.readdir(this.dir);
    for (const n of names) {
      if (n.startsWith(TMP_PREFIX) && n.endsWith(TMP_SUFFIX)) {
        await fsp.unlink(path.join(this.dir, n)).catch(() => undefined);
      }
    }
  }
}

export function encodeState(state: StoreState): string {
  const doc = {
    version: STATE_VERSION,
    revision: state.revision,
    leases: state.leases.map((l) => ({
      subnet: l.subnet,
      publicIp: l.publicIp,
      backendType: l.backendType,
      backendData: l.backendData,
      expiration: l.expiration,
    })),
    previous: state.previous,
    reservations: state.reservations.map((r) => ({ subnet: r.subnet, publicIp: r.publicIp })),
  };
  return JSON.stringify(doc, null, 2) + '\n';
}

/** Parses and checks a state file; throws with a reason naming the offending part. */
export function decodeState(text: string): StoreState {
  if (text.trim() === '') throw new Error('file is empty');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (!isObject(doc)) throw new Error('top level is not an object');
  if (doc.version !== STATE_VERSION) throw new Error(`unsupported version ${JSON.stringify(doc.version)} (expected ${STATE_VERSION})`);
  const revision = doc.revision;
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0) {
    throw new Error(`revision ${JSON.stringify(revision)} is not a non-negative integer`);
  }
  if (!Array.isArray(doc.leases)) throw new Error('leases is not an array');
  const leases: Lease[] = [];
  const subnets = new Set<string>();
  const ips = new Set<string>();
  doc.leases.forEach((v: unknown, i: number) => {
    const where = `leases[${i}]`;
    if (!isObject(v)) throw new Error(`${where} is not an object`);
    const subnet = canonicalCidr(v.subnet, `${where}.subnet`);
    const publicIp = canonicalIp(v.publicIp, `${where}.publicIp`);
    if (typeof v.backendType !== 'string') throw new Error(`${where}.backendType is not a string`);
    if (!isObject(v.backendData)) throw new Error(`${where}.backendData is not an object`);
    if (typeof v.expiration !== 'number' || !Number.isFinite(v.expiration)) throw new Error(`${where}.expiration is not a number`);
    if (subnets.has(subnet)) throw new Error(`subnet ${subnet} is leased twice`);
    if (ips.has(publicIp)) throw new Error(`publicIp ${publicIp} holds two leases`);
    subnets.add(subnet);
    ips.add(publicIp);
    leases.push({ subnet, publicIp, backendType: v.backendType, backendData: v.backendData, expiration: v.expiration });
  });
  const previous: Record<string, string> = {};
  if (doc.previous !== undefined) {
    if (!isObject(doc.previous)) throw new Error('previous is not an object');
    for (const [ip, subnet] of Object.entries(doc.previous)) {
      previous[canonicalIp(ip, `previous key ${JSON.stringify(ip)}`)] = canonicalCidr(subnet, `previous[${ip}]`);
    }
  }
  const reservations: Reservation[] = [];
  if (doc.reservations !== undefined) {
    if (!Array.isArray(doc.reservations)) throw new Error('reservations is not an array');
    const reservedSubnets = new Set<string>();
    const reservedIps = new Set<string>();
    doc.reservations.forEach((v: unknown, i: number) => {
      const where = `reservations[${i}]`;
      if (!isObject(v)) throw new Error(`${where} is not an object`);
      const subnet = canonicalCidr(v.subnet, `${where}.subnet`);
      const publicIp = canonicalIp(v.publicIp, `${where}.publicIp`);
      if (reservedSubnets.has(subnet)) throw new Error(`subnet ${subnet} is reserved twice`);
      if (reservedIps.has(publicIp)) throw new Error(`publicIp ${publicIp} holds two reservations`);
      reservedSubnets.add(subnet);
      reservedIps.add(publicIp);
      reservations.push({ subnet, publicIp });
    });
  }
  // A lease that never expires is a reservation held by its node; without the reservation
  // nothing could ever end it (revoke keeps it, unreserve finds nothing to remove).
  for (const l of leases) {
    if (isReservation(l) && !reservations.some((r) => r.subnet === l.subnet && r.publicIp === l.publicIp)) {
      throw new Error(`lease ${l.subnet} of ${l.publicIp} never expires but no reservation keeps it`);
    }
  }
  return { revision, leases, previous, reservations };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function canonicalCidr(v: unknown, where: string): string {
  if (typeof v !== 'string') throw new Error(`${where} is not a string`);
  try {
    return formatCidr(parseCidr(v));
  } catch (e) {
    throw new Error(`${where} ${JSON.stringify(v)} is not a CIDR (${(e as Error).message})`, { cause: e });
  }
}

function canonicalIp(v: unknown, where: string): string {
  if (typeof v !== 'string') throw new Error(`${where} is not a string`);
  try {
    return formatIpv4(parseIpv4(v));
  } catch (e) {
    throw new Error(`${where} ${JSON.stringify(v)} is not an IPv4 address (${(e as Error).message})`, { cause: e });
  }
}
