import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { checksum, checksumUpdate16, sum16 } from '../../src/packet/checksum';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}

// Reference: fold after every addition, exactly as RFC 1071 §4.1 describes.
function refSum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i < bytes.length; i += 2) {
    const w = (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
    sum += w;
    while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function word(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1];
}

function setWord(b: Uint8Array, i: number, w: number): void {
  b[i] = w >>> 8;
  b[i + 1] = w & 0xff;
}

describe('sum16 / checksum (RFC 1071)', () => {
  it('matches the RFC 1071 §3 numerical example', () => {
    const b = hex('0001 f203 f4f5 f6f7');
    expect(sum16(b, 0, 8)).toBe(0xddf2);
    expect(checksum(b, 0, 8)).toBe(0x220d);
  });

  it('computes a real IPv4 header checksum and verifies it in place', () => {
    const h = hex('4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7');
    expect(checksum(h, 0, 20)).toBe(0xb861);
    setWord(h, 10, 0xb861);
    expect(sum16(h, 0, 20)).toBe(0xffff);
    expect(checksum(h, 0, 20)).toBe(0);
  });

  it('pads an odd trailing byte with zero on the right', () => {
    expect(sum16(hex('01'), 0, 1)).toBe(0x0100);
    expect(sum16(hex('0001 f2'), 0, 3)).toBe(0xf201);
    // 0xffff + 0xff00 = 0x1feff, end-around carry → 0xff00.
    expect(sum16(hex('ffff ff'), 0, 3)).toBe(0xff00);
    expect(sum16(new Uint8Array(0), 0, 0)).toBe(0);
  });

  it('reads only the given range at an odd offset', () => {
    const b = hex('ee 0001 f203 f4f5 f6f7 ee');
    expect(sum16(b, 1, 8)).toBe(0xddf2);
  });

  it('folds correctly past 2^32 (long all-ones input)', () => {
    const b = new Uint8Array(200_000).fill(0xff);
    expect(sum16(b, 0, b.length)).toBe(0xffff);
    b[7] = 0xfe;
    expect(sum16(b, 0, b.length)).toBe(refSum(b));
  });

  it('equals a fold-every-step reference for random data, offsets and initial sums', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(8), fc.integer({ min: 0, max: 0x3ffff }), (data, pad, initial) => {
        const b = new Uint8Array(pad + data.length + 3).fill(0xa5);
        b.set(data, pad);
        expect(sum16(b, pad, data.length, initial)).toBe(refSum(data, initial));
        expect(checksum(b, pad, data.length, initial)).toBe(~refSum(data, initial) & 0xffff);
      }),
    );
  });

  it('chains through `initial` across an even split', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 2, maxLength: 200 }), fc.nat(), (data, k) => {
        const split = (k % (data.length >> 1)) * 2;
        const part = sum16(data, 0, split);
        expect(sum16(data, split, data.length - split, part)).toBe(sum16(data, 0, data.length));
      }),
    );
  });
});

describe('checksumUpdate16 (RFC 1624)', () => {
  it('gives +0 where eqn. 2 would give -0 (RFC 1624 §3 example)', () => {
    // Other header words sum to 0xCD7A; m = 0x5555 becomes m' = 0x3285.
    const hc = ~((0xcd7a + 0x5555) % 0xffff) & 0xffff;
    expect(hc).toBe(0xdd2f);
    expect(checksumUpdate16(hc, 0x5555, 0x3285)).toBe(0x0000);
  });

  it('keeps the checksum when the word does not change', () => {
    expect(checksumUpdate16(0x1234, 0xabcd, 0xabcd)).toBe(0x1234);
    expect(checksumUpdate16(0x0000, 0x5555, 0x5555)).toBe(0x0000);
  });

  // Random IPv4-like headers (version nibble set, so never all zero) and a random word change.
  const header = fc.uint8Array({ minLength: 20, maxLength: 60 }).map((b) => {
    const h = b.subarray(0, b.length & ~1);
    h[0] = 0x40 | (h[0] & 0x0f);
    return h;
  });

  it('equals a full recompute for random headers and words', () => {
    fc.assert(
      fc.property(header, fc.nat(), fc.integer({ min: 0, max: 0xffff }), (h, k, nw) => {
        const words = h.length >> 1;
        let wi = k % words;
        if (wi === 5) wi = (wi + 1) % words;
        setWord(h, 10, 0);
        setWord(h, 10, checksum(h, 0, h.length));
        expect(sum16(h, 0, h.length)).toBe(0xffff);

        const hc = word(h, 10);
        const ow = word(h, wi * 2);
        setWord(h, wi * 2, nw);
        const inc = checksumUpdate16(hc, ow, nw);
        setWord(h, 10, 0);
        expect(inc).toBe(checksum(h, 0, h.length));
        setWord(h, 10, inc);
        expect(sum16(h, 0, h.length)).toBe(0xffff);
      }),
      { numRuns: 2000 },
    );
  });

  it('handles a stored checksum of 0x0000 and a result of 0x0000', () => {
    // Header whose other words sum to 0xffff: checksum 0x0000.
    const h = hex('4500 0000 0000 0000 0000 0000 0000 0000 0000 0000');
    setWord(h, 2, 0xffff - 0x4500);
    expect(checksum(h, 0, 20)).toBe(0x0000);
    const inc = checksumUpdate16(0x0000, 0xffff - 0x4500, 0x1234);
    setWord(h, 2, 0x1234);
    expect(inc).toBe(checksum(h, 0, 20));
    // And back: the recompute gives 0x0000 again, and so must the update.
    expect(checksumUpdate16(inc, 0x1234, 0xffff - 0x4500)).toBe(0x0000);
  });
});
