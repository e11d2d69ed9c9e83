import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { checksum, sum16 } from '../../src/packet/checksum';
import { buildIpv4Packet } from '../../src/packet/builder';
import {
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_MIN_HEADER,
  IPV4_VERDICT_NAMES,
  Ipv4Verdict,
  decrementTtl,
  ipv4Df,
  ipv4Dst,
  ipv4FragmentOffset,
  ipv4HeaderLength,
  ipv4Id,
  ipv4IsNonFirstFragment,
  ipv4MoreFragments,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  ipv4Ttl,
  ipv4UpdateChecksum,
  validateIpv4,
  writeIpv4Header,
} from '../../src/packet/ipv4';
import { UDP_HEADER, udpChecksum, udpChecksumField, udpDstPort, udpLength, udpSrcPort } from '../../src/packet/udp';
import { parseIpv4 } from '../../src/route/address';

function refix(buf: Uint8Array, off = 0): void {
  ipv4UpdateChecksum(buf, off);
}

function packet(payloadLen = 12): Buffer {
  return buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', payload: new Uint8Array(payloadLen).fill(7) });
}

describe('validateIpv4', () => {
  it('accepts a built packet', () => {
    const p = packet();
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
  });

  it('names every verdict', () => {
    expect(IPV4_VERDICT_NAMES).toEqual(['ok', 'truncated', 'not_ipv4', 'bad_ihl', 'bad_total_length', 'bad_checksum']);
    expect(Object.values(Ipv4Verdict)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('Truncated: shorter than 20 bytes, empty, negative, or a region outside the buffer', () => {
    const p = packet();
    expect(validateIpv4(p, 0, 19)).toBe(Ipv4Verdict.Truncated);
    expect(validateIpv4(p, 0, 0)).toBe(Ipv4Verdict.Truncated);
    expect(validateIpv4(p, 0, -5)).toBe(Ipv4Verdict.Truncated);
    expect(validateIpv4(p, 0, p.length + 1)).toBe(Ipv4Verdict.Truncated);
    expect(validateIpv4(p, -1, p.length)).toBe(Ipv4Verdict.Truncated);
    expect(validateIpv4(new Uint8Array(0), 0, 20)).toBe(Ipv4Verdict.Truncated);
  });

  it('NotIpv4: version 6', () => {
    const p = packet();
    p[0] = 0x65;
    refix(p);
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.NotIpv4);
  });

  it('BadIhl: IHL < 5 and IHL*4 > len', () => {
    const p = packet();
    p[0] = 0x44;
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.BadIhl);
    const q = packet(4); // 20 + 8 + 4 = 32 bytes
    q[0] = 0x49; // 36-byte header
    expect(validateIpv4(q, 0, q.length)).toBe(Ipv4Verdict.BadIhl);
    q[0] = 0x48; // 32 bytes fits, total length 32 is fine too
    refix(q);
    expect(validateIpv4(q, 0, q.length)).toBe(Ipv4Verdict.Ok);
  });

  it('BadTotalLength: below the header length, or beyond the data', () => {
    const p = packet();
    p[2] = 0;
    p[3] = 19;
    refix(p);
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.BadTotalLength);
    p[3] = p.length + 1;
    refix(p);
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.BadTotalLength);
    // Link-layer padding after the datagram is fine.
    const padded = Buffer.concat([packet(), Buffer.alloc(6)]);
    expect(validateIpv4(padded, 0, padded.length)).toBe(Ipv4Verdict.Ok);
    // The caller's len bounds it even when the buffer is longer.
    expect(validateIpv4(padded, 0, padded.length - 7)).toBe(Ipv4Verdict.BadTotalLength);
  });

  it('BadChecksum: any flipped header bit', () => {
    const p = packet();
    p[8] ^= 1;
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.BadChecksum);
    const q = packet();
    q[11] ^= 0x80;
    expect(validateIpv4(q, 0, q.length)).toBe(Ipv4Verdict.BadChecksum);
  });

  it('a payload change does not affect header validation', () => {
    const p = packet();
    p[p.length - 1] ^= 0xff;
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
  });

  it('works at an offset inside a larger buffer (slab slot with headroom)', () => {
    const p = packet();
    const slab = Buffer.alloc(p.length + 100, 0xee);
    p.copy(slab, 64);
    expect(validateIpv4(slab, 64, p.length)).toBe(Ipv4Verdict.Ok);
    expect(ipv4Dst(slab, 64)).toBe(parseIpv4('10.244.2.7'));
  });

  it('checks options as part of the header (IHL 6)', () => {
    const base = packet();
    const p = Buffer.alloc(base.length + 4);
    base.copy(p, 0, 0, 20);
    base.copy(p, 24, 20);
    p[0] = 0x46;
    p.writeUInt16BE(p.length, 2);
    p[20] = 1; // NOP option
    p[21] = 1;
    p[22] = 1;
    p[23] = 0; // EOL
    refix(p);
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
    expect(ipv4HeaderLength(p, 0)).toBe(24);
    p[22] = 7;
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.BadChecksum);
  });
});

describe('readers', () => {
  it('read the fields of the RFC 1071-style example header', () => {
    const h = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    h.writeUInt16BE(checksum(h, 0, 20), 10);
    expect(h.readUInt16BE(10)).toBe(0xb861);
    const p = Buffer.concat([h, Buffer.alloc(0x73 - 20)]);
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
    expect(ipv4HeaderLength(p, 0)).toBe(20);
    expect(ipv4TotalLength(p, 0)).toBe(0x73);
    expect(ipv4Ttl(p, 0)).toBe(64);
    expect(ipv4Protocol(p, 0)).toBe(IPPROTO_UDP);
    expect(ipv4Src(p, 0)).toBe(0xc0a80001);
    expect(ipv4Dst(p, 0)).toBe(0xc0a800c7);
    expect(ipv4Df(p, 0)).toBe(true);
    expect(ipv4MoreFragments(p, 0)).toBe(false);
    expect(ipv4FragmentOffset(p, 0)).toBe(0);
    expect(ipv4IsNonFirstFragment(p, 0)).toBe(false);
  });

  it('return addresses above 127.255.255.255 as non-negative uint32', () => {
    const p = buildIpv4Packet({ src: '255.255.255.254', dst: '200.1.2.3' });
    expect(ipv4Src(p, 0)).toBe(0xfffffffe);
    expect(ipv4Dst(p, 0)).toBe(0xc8010203);
  });

  it('read fragment fields', () => {
    const p = packet();
    p.writeUInt16BE(0x2000 | 185, 6); // MF, offset 185*8 = 1480
    expect(ipv4MoreFragments(p, 0)).toBe(true);
    expect(ipv4Df(p, 0)).toBe(false);
    expect(ipv4FragmentOffset(p, 0)).toBe(185);
    expect(ipv4IsNonFirstFragment(p, 0)).toBe(true);
    p.writeUInt16BE(0x2000, 6); // first fragment
    expect(ipv4IsNonFirstFragment(p, 0)).toBe(false);
    p.writeUInt16BE(0x4000 | 0x1fff, 6);
    expect(ipv4Df(p, 0)).toBe(true);
    expect(ipv4FragmentOffset(p, 0)).toBe(0x1fff);
  });
});

describe('decrementTtl', () => {
  it('decrements and keeps the checksum valid (RFC 1624 §4)', () => {
    const p = buildIpv4Packet({ src: '10.0.0.1', dst: '10.0.0.2', ttl: 2 });
    expect(decrementTtl(p, 0)).toBe(1);
    expect(ipv4Ttl(p, 0)).toBe(1);
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
  });

  it('equals a full recompute for random headers (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 60, maxLength: 60 }),
        fc.integer({ min: 5, max: 15 }),
        fc.integer({ min: 2, max: 255 }),
        fc.nat(16),
        (raw, ihl, ttl, off) => {
          const hlen = ihl * 4;
          const buf = new Uint8Array(off + hlen);
          buf.set(raw.subarray(0, hlen), off);
          buf[off] = 0x40 | ihl;
          buf[off + 2] = 0;
          buf[off + 3] = hlen;
          buf[off + 8] = ttl;
          refix(buf, off);
          expect(validateIpv4(buf, off, hlen)).toBe(Ipv4Verdict.Ok);
          const before = Uint8Array.from(buf);
          expect(decrementTtl(buf, off)).toBe(ttl - 1);
          expect(validateIpv4(buf, off, hlen)).toBe(Ipv4Verdict.Ok);
          const stored = (buf[off + 10] << 8) | buf[off + 11];
          const copy = Uint8Array.from(buf);
          copy[off + 10] = 0;
          copy[off + 11] = 0;
          expect(stored).toBe(checksum(copy, off, hlen));
          // Nothing but TTL and checksum changed.
          for (let i = 0; i < buf.length; i++) {
            if (i !== off + 8 && i !== off + 10 && i !== off + 11) expect(buf[i]).toBe(before[i]);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('writeIpv4Header', () => {
  it('writes a header that validates and reads back', () => {
    const buf = new Uint8Array(40).fill(0xcc);
    const src = parseIpv4('192.168.0.1');
    const dst = parseIpv4('224.0.0.251');
    expect(writeIpv4Header(buf, 4, src, dst, IPPROTO_TCP, 17, 36, 0xbeef, true)).toBe(IPV4_MIN_HEADER);
    expect(validateIpv4(buf, 4, 36)).toBe(Ipv4Verdict.Ok);
    expect(sum16(buf, 4, 20)).toBe(0xffff);
    expect(buf[4]).toBe(0x45);
    expect(buf[5]).toBe(0);
    expect(ipv4Src(buf, 4)).toBe(src);
    expect(ipv4Dst(buf, 4)).toBe(dst);
    expect(ipv4Protocol(buf, 4)).toBe(IPPROTO_TCP);
    expect(ipv4Ttl(buf, 4)).toBe(17);
    expect(ipv4TotalLength(buf, 4)).toBe(36);
    expect(ipv4Id(buf, 4)).toBe(0xbeef);
    expect(ipv4Df(buf, 4)).toBe(true);
    expect(ipv4FragmentOffset(buf, 4)).toBe(0);
    expect(buf[3]).toBe(0xcc);
    expect(buf[24]).toBe(0xcc);
    writeIpv4Header(buf, 4, src, dst, IPPROTO_ICMP, 1, 20, 0, false);
    expect(ipv4Df(buf, 4)).toBe(false);
    expect(validateIpv4(buf, 4, 20)).toBe(Ipv4Verdict.Ok);
  });
});

describe('UDP (RFC 768) and buildIpv4Packet', () => {
  it('builds a UDP packet with a valid UDP checksum', () => {
    const payload = Buffer.from('hello, overlay');
    const p = buildIpv4Packet({ src: '10.244.1.5', dst: '10.244.2.7', payload, srcPort: 1234, dstPort: 8285, ttl: 9, id: 77, df: true });
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
    expect(p.length).toBe(20 + UDP_HEADER + payload.length);
    expect(ipv4Ttl(p, 0)).toBe(9);
    expect(ipv4Id(p, 0)).toBe(77);
    expect(ipv4Df(p, 0)).toBe(true);
    expect(udpSrcPort(p, 20)).toBe(1234);
    expect(udpDstPort(p, 20)).toBe(8285);
    expect(udpLength(p, 20)).toBe(UDP_HEADER + payload.length);
    expect(p.subarray(28).toString()).toBe('hello, overlay');
    const src = ipv4Src(p, 0);
    const dst = ipv4Dst(p, 0);
    expect(udpChecksum(p, 20, p.length - 20, src, dst)).toBe(udpChecksumField(p, 20));
    // Verification: pseudo-header + datagram with the checksum in place sums to 0xffff.
    const pseudo = Buffer.alloc(12);
    pseudo.writeUInt32BE(src, 0);
    pseudo.writeUInt32BE(dst, 4);
    pseudo[9] = IPPROTO_UDP;
    pseudo.writeUInt16BE(p.length - 20, 10);
    expect(sum16(p, 20, p.length - 20, sum16(pseudo, 0, 12))).toBe(0xffff);
  });

  it('matches an independently computed vector', () => {
    // 192.0.2.1:53 → 192.0.2.2:12345, data "ab": pseudo 0xc000+0x0201+0xc000+0x0202+0x0011+0x000a,
    // header 0x0035+0x3039+0x000a, data 0x6162.
    const p = buildIpv4Packet({ src: '192.0.2.1', dst: '192.0.2.2', srcPort: 53, dstPort: 12345, payload: Buffer.from('ab') });
    let s = 0xc000 + 0x0201 + 0xc000 + 0x0202 + 0x0011 + 0x000a + 0x0035 + 0x3039 + 0x000a + 0x6162;
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    expect(udpChecksumField(p, 20)).toBe(~s & 0xffff);
  });

  it('transmits a computed zero as 0xffff', () => {
    // Choose the data word so that the one's-complement sum is 0xffff (checksum 0).
    const src = parseIpv4('10.0.0.1');
    const dst = parseIpv4('10.0.0.2');
    const d = new Uint8Array(10);
    d[1] = 1; // src port 1
    d[3] = 2; // dst port 2
    d[5] = 10; // length 10
    const partial = sum16(d, 0, 8, 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 10);
    const fill = 0xffff - partial;
    d[8] = fill >>> 8;
    d[9] = fill & 0xff;
    expect(udpChecksum(d, 0, 10, src, dst)).toBe(0xffff);
  });

  it('ignores whatever is in the checksum field', () => {
    const p = buildIpv4Packet({ src: '10.0.0.1', dst: '10.0.0.2', payload: new Uint8Array([1, 2, 3]) });
    const want = udpChecksumField(p, 20);
    p[26] ^= 0x5a;
    expect(udpChecksum(p, 20, p.length - 20, ipv4Src(p, 0), ipv4Dst(p, 0))).toBe(want);
  });

  it('passes non-UDP payloads through as is', () => {
    const p = buildIpv4Packet({ src: 1, dst: 2, protocol: IPPROTO_TCP, payload: new Uint8Array([9, 8, 7]) });
    expect(p.length).toBe(23);
    expect([...p.subarray(20)]).toEqual([9, 8, 7]);
    expect(ipv4Src(p, 0)).toBe(1);
    expect(validateIpv4(p, 0, p.length)).toBe(Ipv4Verdict.Ok);
  });
});
