// The state-dir lock of the embedded registry: one `weft control` per state dir, atomically.
//
// The lock is the file `lock` in the state dir holding its owner's claim, one line:
// `PID INCARNATION TOKEN`. The claim is written and fsynced to a temp file first and then
// link(2)ed to `lock`: link fails with EEXIST when the name exists, so the lock appears whole
// under its name or not at all — a second process never reads a half-written one (creating the
// file O_EXCL and writing the pid after let a racing process read '' and take it as stale). The
// fsync keeps a power cut from leaving an empty `lock` behind, which would block the restart.
//
// A lock whose owner is dead is stale and is taken over. Removing it by name is the hard part:
// two processes that both judged it stale must not both remove "it", because by the time the
// slower one unlinks, `lock` may already be the faster one's live lock. So removal is serialised
// per lock instance: the remover first takes `lock.break.<digest of the stale content>` the same
// exclusive way, re-reads `lock`, and unlinks it only if it still holds that exact content. The
// stale instance can only leave `lock` through the holder of its break file (its owner is dead),
// so between that re-read and the unlink it cannot change; tokens make every claim's content,
// and so its break file, unique. A break file whose own holder died is stale in the same way
// and is broken by the same rule one level down. Every remover then goes back to the exclusive
// link, which exactly one of them wins.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync, unlinkSync } from 'node:fs';
import * as path from 'node:path';
import { quotePath } from '../util/make-dirs';

export const LOCK_FILE = 'lock';
const BREAK_INFIX = '.break.';
const TMP_PREFIX = `.${LOCK_FILE}.`;
const TMP_SUFFIX = '.tmp';
/** A claim is ~60 bytes; a longer file is not one of ours and is reported, not read whole. */
const MAX_CLAIM_BYTES = 128;
/** Quoted from a file that is not a claim, so a large one is never echoed back. */
const MAX_QUOTED_BYTES = 64;
/** How long to wait for another process that is in the middle of taking over a stale lock. */
const TAKEOVER_WAIT_MS = 5000;
/** Break files of break files: each level needs a process to die mid-takeover. */
const MAX_BREAK_DEPTH = 4;

export class StateLockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateLockError';
  }
}

interface Claim {
  pid: number;
  /** Which run of that pid wrote it (absent in the bare-pid files of older weft versions). */
  incarnation?: string;
}

/**
 * Takes the lock of `dir` (which must exist) and returns our claim, to hand to releaseLock.
 * Throws StateLockError when a live process holds it, naming its pid.
 */
export async function takeLock(dir: string): Promise<string> {
  const lockFile = path.join(dir, LOCK_FILE);
  const claim = newClaim();
  const deadline = Date.now() + TAKEOVER_WAIT_MS;
  for (let round = 0; ; round++) {
    if (round > 0 && Date.now() > deadline) {
      throw new StateLockError(`cannot take ${quotePath(lockFile)}: it kept changing for ${TAKEOVER_WAIT_MS / 1000} s while other processes took it over`);
    }
    if (await createExclusive(dir, lockFile, claim)) {
      await removeLeftovers(dir);
      return claim;
    }
    const seen = await readClaim(lockFile);
    if (seen === undefined) continue; // released between our link and our read
    const owner = parseClaimOrRefuse(lockFile, seen);
    if (owner.pid === process.pid && owner.incarnation === incarnation()) {
      throw new StateLockError(
        `state dir ${quotePath(dir)} is already open in this process; two registries on one state dir would overwrite each other's leases`,
      );
    }
    if (isLive(owner)) {
      throw new StateLockError(
        `state dir ${quotePath(dir)} is in use by pid ${owner.pid} (its ${quotePath(lockFile)}); two weft control processes on one state dir would overwrite each other's leases`,
      );
    }
    if ((await breakStale(dir, lockFile, seen.text, 0)) === 'busy') await sleep(Math.min(50, 2 + round));
  }
}

/**
 * Releases our lock (synchronous: the registry's close() is). Unlinks `lock` only if it still
 * holds our claim: nobody else removes a live owner's lock, so it cannot change in between.
 */
export function releaseLock(dir: string, claim: string): void {
  const lockFile = path.join(dir, LOCK_FILE);
  try {
    if (readFileSync(lockFile, 'utf8') === claim) unlinkSync(lockFile);
  } catch {
    // Already gone (state dir removed): nothing to release.
  }
}

/**
 * Removes the stale `name` if it still holds `seen`. 'busy' when another live process is
 * removing it right now; 'done' when the caller should look again.
 */
async function breakStale(dir: string, name: string, seen: string, depth: number): Promise<'done' | 'busy'> {
  if (depth > MAX_BREAK_DEPTH) {
    throw new StateLockError(`cannot take over the stale ${quotePath(name)}: ${depth} processes died in turn while taking it over`);
  }
  const breakFile = `${name}${BREAK_INFIX}${createHash('sha256').update(seen).digest('hex').slice(0, 24)}`;
  if (!(await createExclusive(dir, breakFile, newClaim()))) {
    const other = await readClaim(breakFile);
    if (other === undefined) return 'done'; // its holder finished
    const breaker = parseClaimOrRefuse(breakFile, other);
    if (isLive(breaker)) return 'busy';
    await breakStale(dir, breakFile, other.text, depth + 1);
    return 'done';
  }
  try {
    const now = await readClaim(name);
    if (now !== undefined && now.text === seen) await unlinkOrRefuse(name);
  } finally {
    await unlinkOrRefuse(breakFile);
  }
  return 'done';
}

/** Puts `content` under `name` whole, or returns false when `name` exists. */
async function createExclusive(dir: string, name: string, content: string): Promise<boolean> {
  const tmp = path.join(dir, `${TMP_PREFIX}${process.pid}.${randomBytes(8).toString('hex')}${TMP_SUFFIX}`);
  try {
    const fh = await fsp.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(content);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (e) {
    await fsp.unlink(tmp).catch(ignoreEnoent);
    throw new StateLockError(`cannot create a lock file in ${quotePath(dir)}: ${errText(e)}`);
  }
  try {
    await fsp.link(tmp, name);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    // EPERM/ENOTSUP: a filesystem without hard links (vfat, some FUSE) cannot hold this lock.
    throw new StateLockError(`cannot create ${quotePath(name)}: ${errText(e)}`);
  } finally {
    await fsp.unlink(tmp).catch(ignoreEnoent);
  }
}

interface ReadClaim {
  text: string;
  size: number;
}

/** The file's content (at most MAX_CLAIM_BYTES of it) and size, or undefined when it does not exist. */
async function readClaim(file: string): Promise<ReadClaim | undefined> {
  let fh;
  try {
    fh = await fsp.open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StateLockError(`cannot read ${quotePath(file)}: ${errText(e)}`);
  }
  try {
    const buf = Buffer.alloc(MAX_CLAIM_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const { size } = await fh.stat();
    return { text: buf.subarray(0, bytesRead).toString('utf8'), size };
  } catch (e) {
    throw new StateLockError(`cannot read ${quotePath(file)}: ${errText(e)}`);
  } finally {
    await fh.close();
  }
}

const CLAIM_RE = /^([1-9]\d{0,9})(?: ([0-9a-f]{16}) [0-9a-f]{32})?\n?$/;

function parseClaim(text: string): Claim | undefined {
  const m = CLAIM_RE.exec(text);
  if (!m) return undefined;
  return { pid: Number(m[1]), incarnation: m[2] };
}

/**
 * A file under the lock's name that is not a claim (empty, edited by hand, written by another
 * program) is refused rather than taken over: we cannot tell whether a weft control is using
 * the state dir, and guessing wrong means two registries granting the same subnets. Our own
 * files never look like that (written whole, fsynced, then linked), so only a person or another
 * program can make one, and the message tells the operator what to check and remove.
 */
function parseClaimOrRefuse(file: string, c: ReadClaim): Claim {
  const claim = c.size <= MAX_CLAIM_BYTES ? parseClaim(c.text) : undefined;
  if (claim) return claim;
  const what =
    c.size === 0
      ? 'is empty'
      : `holds ${JSON.stringify(c.text.slice(0, MAX_QUOTED_BYTES))}${c.size > MAX_QUOTED_BYTES ? ` (first ${MAX_QUOTED_BYTES} of ${c.size} bytes)` : ''}`;
  throw new StateLockError(
    `lock file ${quotePath(file)} ${what}, not a weft control's pid: refusing to guess whether the state dir is in use; remove it if no weft control runs on this state dir`,
  );
}

/** Alive, and (for our own pid) not an earlier run of this pid — a container's PID 1 restarted. */
function isLive(c: Claim): boolean {
  if (c.pid === process.pid) return c.incarnation === incarnation();
  return isAlive(c.pid);
}

/**
 * Whether `pid` is alive. A pid reused by an unrelated process after a crash reads as alive too:
 * the refusal names the lock file, and removing it by hand is safer than guessing from argv and
 * clobbering a live registry's state.
 */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let ownIncarnation: string | undefined;

/**
 * This run of this process: boot id plus the process start time (field 22 of /proc/self/stat),
 * the same in every worker thread. It tells our own live lock from one a previous run with the
 * same pid left behind (a container's weft control is PID 1 on every restart).
 */
function incarnation(): string {
  if (ownIncarnation === undefined) {
    let id: string;
    try {
      const stat = readFileSync('/proc/self/stat', 'utf8');
      const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
      id = `${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()} ${startTime}`;
    } catch {
      id = randomBytes(16).toString('hex'); // no procfs: each module instance is its own run
    }
    ownIncarnation = createHash('sha256').update(id).digest('hex').slice(0, 16);
  }
  return ownIncarnation;
}

function newClaim(): string {
  return `${process.pid} ${incarnation()} ${randomBytes(16).toString('hex')}\n`;
}

/** Temp files and break files left by processes that died mid-lock; best effort. */
async function removeLeftovers(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const file = path.join(dir, n);
    if (n.startsWith(TMP_PREFIX) && n.endsWith(TMP_SUFFIX)) {
      const pid = Number(n.slice(TMP_PREFIX.length).split('.')[0]);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !isAlive(pid)) await fsp.unlink(file).catch(ignoreEnoent);
    } else if (n.startsWith(`${LOCK_FILE}${BREAK_INFIX}`)) {
      // We hold the lock, so every break file is about a lock instance that is gone; removing
      // one whose holder is dead cannot let anyone remove ours (a breaker re-reads `lock` first).
      const c = await readClaim(file).catch(() => undefined);
      const claim = c && c.size <= MAX_CLAIM_BYTES ? parseClaim(c.text) : undefined;
      if (claim && !isLive(claim) && claim.pid !== process.pid) await fsp.unlink(file).catch(ignoreEnoent);
    }
  }
}

async function unlinkOrRefuse(file: string): Promise<void> {
  try {
    await fsp.unlink(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new StateLockError(`cannot remove ${quotePath(file)}: ${errText(e)}`);
  }
}

function ignoreEnoent(e: unknown): void {
  if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
}

function errText(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
