// The offload core under AddressSanitizer and UBSan: native/test/offload_fuzz.cc builds
// against native/offload.cc alone (no napi) and feeds it random and mutated packets with every
// buffer allocated at exactly the size handed over. Skipped where g++ is missing.

import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findPackageRoot } from '../../src/io/native';

const ROOT = findPackageRoot(__dirname);
const hasGxx = spawnSync('g++', ['--version'], { stdio: 'ignore' }).status === 0;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-offload-asan-'));

describe.skipIf(!hasGxx)('offload core under sanitizers', () => {
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('survives random input with ASan and UBSan watching', { timeout: 180_000 }, () => {
    const bin = path.join(dir, 'offload_fuzz');
    execFileSync('g++', [
      '-std=c++17',
      '-g',
      '-O1',
      '-fsanitize=address,undefined',
      '-fno-sanitize-recover=all',
      '-I',
      path.join(ROOT, 'native'),
      path.join(ROOT, 'native', 'test', 'offload_fuzz.cc'),
      path.join(ROOT, 'native', 'offload.cc'),
      '-o',
      bin,
    ]);
    const seed = BigInt(`0x${randomBytes(6).toString('hex')}`).toString();
    const r = spawnSync(bin, ['20000', seed], { encoding: 'utf8', timeout: 150_000 });
    expect(`${r.stdout}${r.stderr}`, `seed ${seed}`).toContain('20000 iterations passed');
    expect(r.status).toBe(0);
  });
});
