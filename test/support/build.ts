// bin/weft.js runs the compiled dist/, so tests that spawn the CLI (or the daemons it starts) must
// first make dist/ match the sources. Vitest gives each test file its own module registry, so the
// mtime check (not only the shared promise) is what lets the second file skip the build.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const ROOT = join(__dirname, '..', '..');
const SOURCE_DIRS = ['src', 'perf']; // tsconfig.build.json's include

/** True when some .ts under the source dirs has no compiled .js in dist/ or is newer than it. */
function distStale(): boolean {
  const stale = (dir: string): boolean =>
    readdirSync(dir, { withFileTypes: true }).some((e) => {
      const p = join(dir, e.name);
      if (e.isDirectory()) return stale(p);
      if (!e.name.endsWith('.ts') || e.name.endsWith('.d.ts')) return false;
      const out = join(ROOT, 'dist', relative(ROOT, p)).replace(/\.ts$/, '.js');
      return !existsSync(out) || statSync(out).mtimeMs < statSync(p).mtimeMs;
    });
  return SOURCE_DIRS.some((d) => existsSync(join(ROOT, d)) && stale(join(ROOT, d)));
}

function build(): Promise<void> {
  if (!distStale()) return Promise.resolve();
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, timeout: 180_000 }, (err, stdout, stderr) => {
      // tsc still emits on type errors, but a test against a tree that does not type-check would
      // fail somewhere far from the cause; stop here with tsc's own diagnostics instead.
      if (err) reject(new Error(`npx tsc -p tsconfig.build.json failed (${err.message.split('\n')[0]}):\n${stdout}${stderr}`));
      else resolve();
    });
  });
}

let built: Promise<void> | undefined;

/** Rebuilds dist/ when a source is newer than its output; concurrent and repeated callers share one build. */
export function ensureBuilt(): Promise<void> {
  built ??= build();
  return built;
}
