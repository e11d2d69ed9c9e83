import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * The repository/package root: the nearest ancestor of `from` holding package.json. Files tsc
 * does not copy (the .proto, package.json itself) are found from it, so the same lookup works
 * from src/ (tests, vitest) and from dist/src/ (the compiled CLI).
 */
export function packageRoot(from: string = __dirname): string {
  let dir = from;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find package.json above ${from}`);
    dir = up;
  }
}

/** package.json's version: what `weft --version` prints. */
export function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}
