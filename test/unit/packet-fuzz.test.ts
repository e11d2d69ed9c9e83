// Random bytes, offsets and lengths into every decoder, validator and builder of src/packet:
// nothing throws, nothing is read or written outside the region it was given.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { checksum, sum16 } from '../../src/packet/checksum';
import { buildIpv4Packet } from '../../src/packet/builder';
import { ICMP_ERROR_MAX, buildIcmpError, icmpErrorAllowed, writeIcmpEcho } from '../../src/packet/icmp';
import {
  IPPROTO_ICMP,
  Ipv4Verdict,
  decrementTtl,
  ipv4Df,
  ipv4Dst,
  ipv4FragmentOffset,
  ipv4HeaderLength,
  ipv4IsNonFirstFragment,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  ipv4Ttl,
  validateIpv4,
  writeIpv4Header,
} from '../../src/packet/ipv4';
import { UDP_HEADER, udpChecksum, udpChecksumField, writeUdpHeader } from '../../src/packet/udp';
import { fenced } from '../support/fence';

const RUNS = { numRuns: 3000 };

// Mostly-plausible packets: a random buffer whose first byte is often 0x45 and whose length field
// often matches, so that the fuzz gets past the first checks, plus a region inside it.
const region = fc
  .record({
    bytes: fc.uint8Array({ maxLength: 120 }),
    plausible: fc.boolean(),
    fixChecksum: fc.boolean(),
    a: fc.nat(),
    b: fc.nat(),
  })
  .map(({ bytes, plausible, fixChecksum, a, b }) => {
    const off = bytes.length === 0 ? 0 : a % (bytes.length + 1);
    const len = bytes.length - off === 0 ? 0 : b % (bytes.length - off + 1);
    if (plausible && len >= 20) {
      bytes[off] = 0x40 | Math.max(5, bytes[off] & 0x0f);
      const hl = (bytes[off] & 0x0f) * 4;
      bytes[off + 2] = len >> 8;
      bytes[off + 3] = len & 0xff;
      if (fixChecksum && hl <= len) {
        bytes[off + 10] = 0;
        bytes[off + 11] = 0;
        const c = checksum(bytes, off, hl);
        bytes[off + 10] = c >> 8;
        bytes[off + 11] = c & 0xff;
      }
    }
    return { bytes, off, len };
  });

describe('fuzz: decoders', () => {
  it('the fence itself catches stray reads and writes', () => {
    const f = fenced(new Uint8Array(10), 2, 5);
    expect(f[2]).toBe(0);
    expect(() => f[1]).toThrow(/outside/);
    expect(() => f[5]).toThrow(/outside/);
    expect(() => f[-1]).toThrow(/outside/);
    expect(() => {
      f[3] = 1;
    }).toThrow(/outside/);
    expect(() => sum16(f, 2, 4)).toThrow(/outside/);
  });

  it('validateIpv4 never throws and reads only [off, off+len)', () => {
    fc.assert(
      fc.property(region, ({ bytes, off, len }) => {
        const v = validateIpv4(fenced(bytes, off, off + len), off, len);
        expect(v).toBeGreaterThanOrEqual(0);
        expect(v).toBeLessThanOrEqual(5);
      }),
      RUNS,
    );
  });

  it('validateIpv4 rejects regions that are not inside the buffer, without reading', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: -100, max: 200 }), fc.integer({ min: -100, max: 200 }), (bytes, off, len) => {
        fc.pre(off < 0 || len < 0 || off + len > bytes.length);
        expect(validateIpv4(fenced(bytes, 0, 0), off, len)).toBe(Ipv4Verdict.Truncated);
      }),
      RUNS,
    );
  });

  it('after Ok, every reader stays in range and agrees with the header', () => {
    fc.assert(
      fc.property(region, ({ bytes, off, len }) => {
        if (validateIpv4(bytes, off, len) !== Ipv4Verdict.Ok) return;
        const hl = ipv4HeaderLength(bytes, off);
        const f = fenced(bytes, off, off + hl);
        expect(hl).toBeGreaterThanOrEqual(20);
        expect(hl).toBeLessThanOrEqual(len);
        expect(ipv4TotalLength(f, off)).toBeGreaterThanOrEqual(hl);
        expect(ipv4TotalLength(f, off)).toBeLessThanOrEqual(len);
        expect(ipv4Ttl(f, off)).toBe(bytes[off + 8]);
        expect(ipv4Protocol(f, off)).toBe(bytes[off + 9]);
        for (const a of [ipv4Src(f, off), ipv4Dst(f, off)]) {
          expect(Number.isInteger(a) && a >= 0 && a <= 0xffffffff).toBe(true);
        }
        expect(ipv4Src(f, off)).toBe(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).readUInt32BE(off + 12));
        expect(ipv4Dst(f, off)).toBe(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).readUInt32BE(off + 16));
        expect(typeof ipv4Df(f, off)).toBe('boolean');
        expect(ipv4IsNonFirstFragment(f, off)).toBe(ipv4FragmentOffset(f, off) !== 0);
        expect(sum16(f, off, hl)).toBe(0xffff);
      }),
      RUNS,
    );
  });

  it('icmpErrorAllowed never throws and reads only its region', () => {
    fc.assert(
      fc.property(region, ({ bytes, off, len }) => {
        expect(typeof icmpErrorAllowed(fenced(bytes, off, off + len), off, len)).toBe('boolean');
      }),
      RUNS,
    );
  });

  it('udpChecksum never throws, reads only its region, never returns 0', () => {
    fc.assert(
      fc.property(region, fc.nat(), fc.nat(), ({ bytes, off, len }, src, dst) => {
        const c = udpChecksum(fenced(bytes, off, off + len), off, len, src >>> 0, dst >>> 0);
        expect(c).toBeGreaterThanOrEqual(1);
        expect(c).toBeLessThanOrEqual(0xffff);
      }),
      RUNS,
    );
  });
});

describe('fuzz: buildIcmpError', () => {
  // Allowed originals are rare among random bytes; mix in real packets, truncated or padded.
  const realPacket = fc
    .record({
      ttl: fc.integer({ min: 0, max: 255 }),
      proto: fc.constantFrom(1, 6, 17, 47),
      payload: fc.uint8Array({ maxLength: 40 }),
      pad: fc.nat(8),
      tail: fc.nat(8),
      trunc: fc.nat(30),
    })
    .map(({ ttl, proto, payload, pad, tail, trunc }) => {
      const p = buildIpv4Packet({ src: '10.1.2.3', dst: '10.4.5.6', ttl, protocol: proto, payload });
      const bytes = new Uint8Array(pad + p.length + tail).fill(0xdd);
      bytes.set(p, pad);
      const len = Math.max(0, p.length + tail - trunc);
      return { bytes, off: pad, len };
    });
  const original = fc.oneof({ arbitrary: region, weight: 1 }, { arbitrary: realPacket, weight: 3 });

  it('never throws, never writes outside [outOff, outOff + n), never reads outside the original', () => {
    fc.assert(
      fc.property(
        original,
        fc.oneof(fc.nat(ICMP_ERROR_MAX + 20), fc.integer({ min: ICMP_ERROR_MAX, max: ICMP_ERROR_MAX + 20 })),
        fc.oneof(fc.constant(0), fc.nat(20), fc.nat()),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 255 }),
        fc.nat(0xffff),
        ({ bytes, off, len }, room, k, type, code, mtu) => {
          // out is a subarray with guard bytes on both sides in its parent.
          const guard = 16;
          const parent = new Uint8Array(guard + room + guard).fill(0x5a);
          const out = parent.subarray(guard, guard + room);
          const outOff = room === 0 ? 0 : k % (room + 1);
          const before = Uint8Array.from(parent);
          const n = buildIcmpError(fenced(out, outOff, room, true), outOff, fenced(bytes, off, off + len), off, len, type, code, 0x0a000001, mtu);
          expect(n === 0 || (n >= 48 && n <= ICMP_ERROR_MAX)).toBe(true);
          for (let i = 0; i < parent.length; i++) {
            if (i < guard + outOff || i >= guard + outOff + n) expect(parent[i]).toBe(before[i]);
          }
          if (n > 0) {
            expect(icmpErrorAllowed(bytes, off, len)).toBe(true);
            expect(validateIpv4(out, outOff, n)).toBe(Ipv4Verdict.Ok);
            expect(ipv4Protocol(out, outOff)).toBe(IPPROTO_ICMP);
            expect(ipv4Dst(out, outOff)).toBe(ipv4Src(bytes, off));
            expect(sum16(out, outOff + 20, n - 20)).toBe(0xffff);
            expect([...out.subarray(outOff + 28, outOff + n)]).toEqual([...bytes.subarray(off, off + n - 28)]);
          }
        },
      ),
      RUNS,
    );
  });
});

describe('fuzz: builders', () => {
  it('writeIpv4Header and writeUdpHeader write exactly their header, which validates', () => {
    fc.assert(
      fc.property(
        fc.tuple(fc.nat(), fc.nat(), fc.nat(255), fc.nat(255), fc.nat(0xffff), fc.boolean()),
        fc.nat(0xffff),
        fc.nat(0xffff),
        fc.nat(16),
        ([src, dst, proto, ttl, id, df], sp, dp, off) => {
          const buf = new Uint8Array(off + 28 + 8).fill(0x5a);
          const f = fenced(buf, off, off + 28, true);
          expect(writeIpv4Header(f, off, src >>> 0, dst >>> 0, proto, ttl, 28, id, df)).toBe(20);
          expect(writeUdpHeader(f, off + 20, sp, dp, 8)).toBe(UDP_HEADER);
          expect(validateIpv4(buf, off, 28)).toBe(Ipv4Verdict.Ok);
          expect(ipv4Src(buf, off)).toBe(src >>> 0);
          expect(ipv4Df(buf, off)).toBe(df);
          expect(buf.subarray(off + 28).every((b) => b === 0x5a)).toBe(true);
        },
      ),
      RUNS,
    );
  });

  it('buildIpv4Packet always yields a valid packet with a verifying UDP checksum', () => {
    fc.assert(
      fc.property(fc.nat(), fc.nat(), fc.uint8Array({ maxLength: 100 }), fc.nat(255), (src, dst, payload, ttl) => {
        const p = buildIpv4Packet({ src: src >>> 0, dst: dst >>> 0, payload, ttl });
        expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
        const c = udpChecksumField(p, 20);
        expect(c).not.toBe(0);
        expect(udpChecksum(p, 20, p.length - 20, src >>> 0, dst >>> 0)).toBe(c);
      }),
      RUNS,
    );
  });

  it('writeIcmpEcho writes inside out or not at all', () => {
    fc.assert(
      fc.property(fc.nat(40), fc.nat(50), fc.uint8Array({ maxLength: 40 }), (room, off, payload) => {
        const parent = new Uint8Array(room + 16).fill(0x5a);
        const out = parent.subarray(8, 8 + room);
        const n = writeIcmpEcho(out, off, 8, 1, 2, payload);
        expect(n === 0 || n === 8 + payload.length).toBe(true);
        for (let i = 0; i < parent.length; i++) {
          if (n === 0 || i < 8 + off || i >= 8 + off + n) expect(parent[i]).toBe(0x5a);
        }
        if (n > 0) expect(sum16(out, off, n)).toBe(0xffff);
      }),
      RUNS,
    );
  });
});

describe('fuzz: mutations of a valid packet', () => {
  const valid = fc
    .record({
      payload: fc.uint8Array({ maxLength: 64 }),
      ttl: fc.integer({ min: 0, max: 255 }),
      id: fc.nat(0xffff),
      df: fc.boolean(),
      src: fc.nat(),
      dst: fc.nat(),
    })
    .map((o) => buildIpv4Packet({ ...o, src: o.src >>> 0, dst: o.dst >>> 0 }));

  it('any single changed header byte gives a non-Ok verdict', () => {
    fc.assert(
      fc.property(valid, fc.nat(19), fc.integer({ min: 1, max: 255 }), (p, i, x) => {
        expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
        p[i] ^= x;
        expect(validateIpv4(p, 0, p.length)).not.toBe(Ipv4Verdict.Ok);
      }),
      RUNS,
    );
  });

  it('arbitrary mutations give a non-Ok verdict or a self-consistent packet', () => {
    fc.assert(
      fc.property(valid, fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 6 }), fc.integer({ min: -8, max: 8 }), (p, edits, dl) => {
        for (const [i, v] of edits) p[i % p.length] = v;
        const len = Math.max(0, Math.min(p.length, p.length + dl));
        const v = validateIpv4(p, 0, len);
        if (v !== Ipv4Verdict.Ok) return;
        // Independently recheck what Ok promises.
        const hl = (p[0] & 15) * 4;
        const total = p.readUInt16BE(2);
        expect(p[0] >> 4).toBe(4);
        expect(hl >= 20 && hl <= len).toBe(true);
        expect(total >= hl && total <= len).toBe(true);
        let s = 0;
        for (let i = 0; i < hl; i += 2) s += p.readUInt16BE(i);
        while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
        expect(s).toBe(0xffff);
        // And a forwarding step keeps it valid.
        if (p[8] > 1) {
          decrementTtl(p, 0);
          expect(validateIpv4(p, 0, len)).toBe(Ipv4Verdict.Ok);
        }
      }),
      RUNS,
    );
  });
});
