// `mkdir -p` that always ends. Node's own `fs.mkdir(dir, { recursive: true })` (v24 included)
// reads every ENOENT as "the parent is missing": it creates the parent, which reports EEXIST,
// and retries the child — forever, at 100% CPU, on a filesystem that answers ENOENT for a
// child it will never create (procfs: `mkdir /proc/x` is ENOENT although /proc exists). This
// walk goes up at most once per component and takes a second ENOENT, after its parent was
// made or found, as the filesystem's final answer, as coreutils' mkdir -p does.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** Paths from flags are quoted whole up to this length; longer ones are cut and their length given. */
export const MAX_QUOTED_PATH = 256;

export class MakeDirError extends Error {
  /** The errno code of the mkdir that failed (ENOENT, ENOTDIR, EACCES, EROFS, ...). */
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.name = 'MakeDirError';
    this.code = code;
  }
}

/** A path for an error message: whole when short, else its first MAX_QUOTED_PATH characters and its length. */
export function quotePath(p: string): string {
  return p.length <= MAX_QUOTED_PATH ? p : `${p.slice(0, MAX_QUOTED_PATH)}… (${p.length} chars)`;
}

/**
 * Creates `dir` and any missing parents with `mode`, or finds it already a directory. Throws a
 * MakeDirError with one line naming the component that could not be made and why.
 */
export async function makeDirs(dir: string, mode = 0o777): Promise<void> {
  await makeOne(path.resolve(dir), mode);
}

async function makeOne(dir: string, mode: number): Promise<void> {
  const err = await tryMkdir(dir, mode);
  if (err === undefined) return;
  if (err.code === 'EEXIST') return mustBeDir(dir);
  const parent = path.dirname(dir);
  if (err.code !== 'ENOENT' || parent === dir) throw failure(dir, err);
  await makeOne(parent, mode);
  const again = await tryMkdir(dir, mode);
  if (again === undefined) return;
  if (again.code === 'EEXIST') return mustBeDir(dir); // made by someone else in between
  if (again.code === 'ENOENT') {
    throw new MakeDirError(
      `cannot create ${quotePath(dir)}: ENOENT although ${quotePath(parent)} exists (a filesystem that does not allow new directories, such as /proc or /sys)`,
      'ENOENT',
    );
  }
  throw failure(dir, again);
}

async function tryMkdir(dir: string, mode: number): Promise<NodeJS.ErrnoException | undefined> {
  try {
    await fsp.mkdir(dir, { mode });
    return undefined;
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
}

async function mustBeDir(dir: string): Promise<void> {
  let st;
  try {
    st = await fsp.stat(dir);
  } catch (e) {
    // EEXIST from mkdir, then nothing behind the name: a symlink to nowhere.
    throw new MakeDirError(`cannot create ${quotePath(dir)}: it exists but cannot be followed (${(e as NodeJS.ErrnoException).code ?? 'error'})`, 'ENOTDIR');
  }
  if (!st.isDirectory()) throw new MakeDirError(`cannot create ${quotePath(dir)}: it exists and is not a directory`, 'ENOTDIR');
}

function failure(dir: string, e: NodeJS.ErrnoException): MakeDirError {
  const code = e.code ?? 'EIO';
  const why: Record<string, string> = {
    ENOTDIR: 'a component of the path is a file, not a directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only filesystem',
    ENOSPC: 'no space left on the device',
    ENAMETOOLONG: 'name too long',
    ELOOP: 'too many symbolic links',
  };
  return new MakeDirError(`cannot create ${quotePath(dir)}: ${code}${why[code] ? ` (${why[code]})` : ''}`, code);
}
