// Replacing a file so that readers see the old content or the new, never a torn one, and the new
// one survives a power cut once this returns: write a temp file in the same directory (rename is
// only atomic within a filesystem), fsync it (so the rename cannot expose a file whose data blocks
// never reached the disk; ext4's auto_da_alloc is a heuristic, not a promise), rename it over the
// target, then fsync the directory (the rename is a directory-entry change a power cut can lose).
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** Puts `data` at `file` through `tmp` (same directory; the caller names it so it can find leftovers). */
export async function replaceFile(file: string, data: string, tmp: string, mode: number): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'w', mode);
    await fh.writeFile(data, 'utf8');
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, file);
  } catch (e) {
    // A half-written temp file is no one's: remove it rather than leave it beside the target.
    if (fh) await fh.close().catch(() => undefined);
    await fsp.unlink(tmp).catch(() => undefined);
    throw e;
  }
  await syncDir(path.dirname(file));
}

export async function syncDir(dir: string): Promise<void> {
  const dh = await fsp.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
