// weft daemon's --offload LIST and --no-offload: which kernel offloads the daemon asks for, so
// each can be measured alone (weft bench's --offload-mechanisms rows).
import { describe, expect, it } from 'vitest';
import { parseOffloads } from '../../src/cli/daemon';

describe('weft daemon --offload', () => {
  it('defaults to every mechanism, and --no-offload to none', () => {
    expect(parseOffloads(undefined, false)).toEqual({ tun: true, gso: true, gro: true });
    expect(parseOffloads(undefined, true)).toEqual({ tun: false, gso: false, gro: false });
  });

  it('turns on exactly the mechanisms listed', () => {
    expect(parseOffloads('tun', false)).toEqual({ tun: true, gso: false, gro: false });
    expect(parseOffloads('gso,gro', false)).toEqual({ tun: false, gso: true, gro: true });
    expect(parseOffloads('gro,tun', false)).toEqual({ tun: true, gso: false, gro: true });
    expect(parseOffloads('gso,gso', false)).toEqual({ tun: false, gso: true, gro: false });
  });

  it('refuses unknown names, an empty list and --offload with --no-offload, in one line', () => {
    expect(() => parseOffloads('tso', false)).toThrow('--offload: "tso" is not one of tun, gso, gro');
    expect(() => parseOffloads('', false)).toThrow('--offload: "" is not one of tun, gso, gro (comma-separated; --no-offload for none)');
    expect(() => parseOffloads('tun,', false)).toThrow('--offload: "" is not one of');
    expect(() => parseOffloads('x'.repeat(5000), false)).toThrow(/^--offload: "x{40}" is not one of/);
    expect(() => parseOffloads('tun', true)).toThrow('give --offload LIST or --no-offload, not both');
  });
});
