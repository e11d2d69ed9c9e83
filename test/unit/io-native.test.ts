import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { findPackageRoot, loadNative, native } from '../../src/io/native';

describe('native addon loader', () => {
  it('finds the package root from the sources and from a compiled dist/ layout', () => {
    const root = findPackageRoot(__dirname);
    expect(fs.existsSync(path.join(root, 'binding.gyp'))).toBe(true);
    expect(findPackageRoot(path.join(root, 'src', 'io'))).toBe(root);
    expect(findPackageRoot(path.join(root, 'dist', 'src', 'io'))).toBe(root);
  });

  it('fails clearly when no binding.gyp is above the start directory', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-io-native-'));
    try {
      expect(() => findPackageRoot(tmp)).toThrow(/binding\.gyp/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('exposes every native entry point, and the lazy object forwards to the loaded addon', () => {
    const addon = loadNative();
    for (const name of [
      'tunOpen',
      'udpOpen',
      'rawOpen',
      'localPort',
      'readPackets',
      'writePackets',
      'recvBatch',
      'sendBatch',
      'tunReadVnet',
      'tunWrite',
      'gsoSplit',
      'tcpCoalesce',
      'pollStart',
      'close',
    ] as const) {
      expect(typeof addon[name]).toBe('function');
    }
    // Called once, the lazy object holds the addon's own functions.
    expect(() => native.close(-1)).toThrow(RangeError);
    expect(native.close).toBe(addon.close);
    expect(native.sendBatch).toBe(addon.sendBatch);
  });

  it('names the syscall and strerror in system errors', () => {
    let err: (Error & { code?: string }) | undefined;
    try {
      native.localPort(0x7ffffff0);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toBe(`getsockname fd ${0x7ffffff0}: Bad file descriptor`);
    expect(err?.code).toBe('EBADF');
  });

  it('checks a TUN name against IFNAMSIZ before opening anything', () => {
    expect(() => native.tunOpen('a-name-longer-than-15', false)).toThrow(RangeError);
    expect(() => native.tunOpen('bad\0name', false)).toThrow(RangeError);
    expect(() => native.tunOpen('ok', 'yes' as never)).toThrow(TypeError);
  });
});
