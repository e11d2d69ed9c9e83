// subnet.env is written atomically into a directory made on the way; a directory that cannot be
// made (under /proc, through a file) is one clear error, not the endless retry of Node's own
// recursive mkdir on procfs.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseSubnetEnv, writeSubnetEnv } from '../../src/daemon/subnet-env';

const ENV = { network: '10.244.0.0/16', subnet: '10.244.5.1/24', mtu: 1472, ipmasq: false };

describe('writeSubnetEnv', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('makes the missing directories and writes the file whole', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'weft-subnet-env-'));
    dirs.push(root);
    const file = path.join(root, 'run', 'flannel', 'subnet.env');
    await writeSubnetEnv(file, ENV);
    expect(statSync(path.dirname(file)).isDirectory()).toBe(true);
    expect(parseSubnetEnv(readFileSync(file, 'utf8'))).toEqual(ENV);
  });

  it('refuses a directory under /proc or through a file with one error, quickly', async () => {
    await expect(writeSubnetEnv(`/proc/weft-no-such-dir-${process.pid}/subnet.env`, ENV)).rejects.toThrow(/\/proc\/weft-no-such-dir/);
    const root = mkdtempSync(path.join(os.tmpdir(), 'weft-subnet-env-'));
    dirs.push(root);
    writeFileSync(path.join(root, 'plain'), 'x');
    await expect(writeSubnetEnv(path.join(root, 'plain', 'sub', 'subnet.env'), ENV)).rejects.toThrow(/plain/);
  }, 10_000);
});
