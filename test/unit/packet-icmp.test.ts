import { describe, expect, it } from 'vitest';
import { sum16 } from '../../src/packet/checksum';
import { buildIpv4Packet } from '../../src/packet/builder';
import {
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_ERROR_MAX,
  ICMP_FRAG_NEEDED,
  ICMP_HOST_UNREACH,
  ICMP_NET_UNREACH,
  ICMP_TIME_EXCEEDED,
  ICMP_TTL_EXCEEDED,
  buildIcmpError,
  icmpErrorAllowed,
  writeIcmpEcho,
} from '../../src/packet/icmp';
import {
  IPPROTO_ICMP,
  IPPROTO_TCP,
  Ipv4Verdict,
  ipv4Df,
  ipv4Dst,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  ipv4Ttl,
  ipv4UpdateChecksum,
  validateIpv4,
} from '../../src/packet/ipv4';
import { parseIpv4 } from '../../src/route/address';

const ROUTER = parseIpv4('10.244.1.1');

function orig(over: Partial<Parameters<typeof buildIpv4Packet>[0]> = {}): Buffer {
  return buildIpv4Packet({
    src: '10.244.1.5',
    dst: '10.244.2.7',
    ttl: 1,
    id: 0x1234,
    payload: Uint8Array.from({ length: 40 }, (_, i) => i + 1),
    ...over,
  });
}

function icmpEcho(type: number, over: Partial<Parameters<typeof buildIpv4Packet>[0]> = {}): Buffer {
  const body = new Uint8Array(16);
  writeIcmpEcho(body, 0, type, 0x77, 3, new Uint8Array(8).fill(0xab));
  return orig({ protocol: IPPROTO_ICMP, payload: body, ...over });
}

/** An ICMP message of `type` as the original datagram (the body after the 8-byte header is a quote). */
function icmpOrig(type: number, code = 0): Buffer {
  const body = new Uint8Array(36);
  body[0] = type;
  body[1] = code;
  return orig({ protocol: IPPROTO_ICMP, payload: body });
}

function expectValidError(out: Uint8Array, n: number, o: Uint8Array, type: number, code: number, quoteLen: number): void {
  expect(n).toBe(20 + 8 + quoteLen);
  // Outer IPv4 header.
  expect(validateIpv4(out, 0, n)).toBe(Ipv4Verdict.Ok);
  expect(out[0]).toBe(0x45);
  expect(out[1]).toBe(0);
  expect(ipv4TotalLength(out, 0)).toBe(n);
  expect(out[6] & 0x40).toBe(0); // DF clear
  expect(((out[6] << 8) | out[7]) & 0x1fff).toBe(0);
  expect(ipv4Ttl(out, 0)).toBe(64);
  expect(ipv4Protocol(out, 0)).toBe(IPPROTO_ICMP);
  expect(ipv4Src(out, 0)).toBe(ROUTER);
  expect(ipv4Dst(out, 0)).toBe(ipv4Src(o, 0));
  // ICMP header and checksum over the whole ICMP message.
  expect(out[20]).toBe(type);
  expect(out[21]).toBe(code);
  expect(sum16(out, 20, n - 20)).toBe(0xffff);
  // Quote: original header + first 8 octets of its data, byte for byte.
  expect([...out.subarray(28, n)]).toEqual([...o.subarray(0, quoteLen)]);
}

describe('buildIcmpError', () => {
  it('time exceeded: headers, checksums, quote of header + 8 octets', () => {
    const o = orig();
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const n = buildIcmpError(out, 0, o, 0, o.length, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED, ROUTER);
    expectValidError(out, n, o, 11, 0, 28);
    expect([...out.subarray(24, 28)]).toEqual([0, 0, 0, 0]); // unused word
    expect(n).toBe(56);
  });

  it('net unreachable', () => {
    const o = orig({ df: true });
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const n = buildIcmpError(out, 0, o, 0, o.length, ICMP_DEST_UNREACH, ICMP_NET_UNREACH, ROUTER);
    expectValidError(out, n, o, 3, 0, 28);
    expect([...out.subarray(24, 28)]).toEqual([0, 0, 0, 0]);
    // An error about a DF packet does not itself carry DF.
    expect(ipv4Df(out, 0)).toBe(false);
  });

  it('host unreachable ignores nextHopMtu', () => {
    const o = orig();
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const n = buildIcmpError(out, 0, o, 0, o.length, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, ROUTER, 1400);
    expectValidError(out, n, o, 3, 1, 28);
    expect([...out.subarray(24, 28)]).toEqual([0, 0, 0, 0]);
  });

  it('fragmentation needed carries the next-hop MTU in bytes 6-7 (RFC 1191 §4)', () => {
    const o = orig({ df: true });
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const n = buildIcmpError(out, 0, o, 0, o.length, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ROUTER, 1450);
    expectValidError(out, n, o, 3, 4, 28);
    expect([...out.subarray(24, 28)]).toEqual([0, 0, 1450 >> 8, 1450 & 0xff]);
  });

  it('quotes options and fewer than 8 octets when that is all there is', () => {
    // IHL 7 header (8 option bytes), 3 octets of data.
    const base = orig({ protocol: IPPROTO_TCP, payload: new Uint8Array([0xa, 0xb, 0xc]) });
    const o = Buffer.alloc(base.length + 8);
    base.copy(o, 0, 0, 20);
    o.fill(1, 20, 28);
    base.copy(o, 28, 20);
    o[0] = 0x47;
    o.writeUInt16BE(o.length, 2);
    ipv4UpdateChecksum(o, 0);
    expect(validateIpv4(o, 0, o.length)).toBe(Ipv4Verdict.Ok);
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const n = buildIcmpError(out, 0, o, 0, o.length, ICMP_TIME_EXCEEDED, 0, ROUTER);
    expectValidError(out, n, o, 11, 0, 31);
  });

  it('does not quote link-layer padding past the total length', () => {
    const o = Buffer.concat([orig({ protocol: IPPROTO_TCP, payload: new Uint8Array([1, 2]) }), Buffer.alloc(10, 0xee)]);
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const n = buildIcmpError(out, 0, o, 0, o.length, ICMP_TIME_EXCEEDED, 0, ROUTER);
    expectValidError(out, n, o, 11, 0, 22);
  });

  it('answers an echo request (a query, not an error)', () => {
    const o = icmpEcho(ICMP_ECHO_REQUEST);
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const n = buildIcmpError(out, 0, o, 0, o.length, ICMP_TIME_EXCEEDED, 0, ROUTER);
    expectValidError(out, n, o, 11, 0, 28);
  });

  it('writes at an offset and touches only [outOff, outOff + n)', () => {
    const o = orig();
    const out = new Uint8Array(200).fill(0xee);
    const n = buildIcmpError(out, 50, o, 0, o.length, ICMP_TIME_EXCEEDED, 0, ROUTER);
    expect(n).toBe(56);
    expect(out.subarray(0, 50).every((b) => b === 0xee)).toBe(true);
    expect(out.subarray(50 + n).every((b) => b === 0xee)).toBe(true);
    expectValidError(out.subarray(50), n, o, 11, 0, 28);
  });

  it('returns 0 when out has no room, and fits exactly', () => {
    const o = orig();
    expect(buildIcmpError(new Uint8Array(55), 0, o, 0, o.length, 11, 0, ROUTER)).toBe(0);
    expect(buildIcmpError(new Uint8Array(100), 45, o, 0, o.length, 11, 0, ROUTER)).toBe(0);
    expect(buildIcmpError(new Uint8Array(100), -1, o, 0, o.length, 11, 0, ROUTER)).toBe(0);
    const exact = new Uint8Array(56);
    expect(buildIcmpError(exact, 0, o, 0, o.length, 11, 0, ROUTER)).toBe(56);
  });

  it('can build in place over the original (headroom in the same slab)', () => {
    const o = orig();
    const want = new Uint8Array(ICMP_ERROR_MAX);
    const wn = buildIcmpError(want, 0, o, 0, o.length, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ROUTER, 1400);
    for (const outOff of [100, 72, 90, 110, 140]) {
      const slab = new Uint8Array(300);
      slab.set(o, 100);
      const view = slab.subarray(0); // a different view of the same memory
      const n = buildIcmpError(view, outOff, slab, 100, o.length, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ROUTER, 1400);
      expect(n).toBe(wn);
      const got = slab.subarray(outOff, outOff + n);
      expect(validateIpv4(got, 0, n)).toBe(Ipv4Verdict.Ok);
      // Identical except for the IP ID (a counter) and hence the header checksum.
      expect([...got.subarray(20)]).toEqual([...want.subarray(20, wn)]);
      expect([...got.subarray(0, 4)]).toEqual([...want.subarray(0, 4)]);
      expect([...got.subarray(6, 10)]).toEqual([...want.subarray(6, 10)]);
      expect([...got.subarray(12, 20)]).toEqual([...want.subarray(12, 20)]);
    }
  });

  describe('refuses (RFC 1812 §4.3.2.7)', () => {
    const out = new Uint8Array(ICMP_ERROR_MAX);
    const refuse = (o: Uint8Array, len = o.length) => {
      expect(icmpErrorAllowed(o, 0, len)).toBe(false);
      out.fill(0x5a);
      expect(buildIcmpError(out, 0, o, 0, len, ICMP_TIME_EXCEEDED, 0, ROUTER)).toBe(0);
      expect(out.every((b) => b === 0x5a)).toBe(true);
    };

    it('an ICMP error message (dest unreach, source quench, redirect, time exceeded, param problem)', () => {
      for (const t of [3, 4, 5, 11, 12]) refuse(icmpOrig(t));
    });

    it('an ICMP message of an unknown type (treated as an error, as Linux does)', () => {
      for (const t of [1, 2, 6, 7, 9, 10, 19, 42, 255]) refuse(icmpOrig(t));
    });

    it('but allows ICMP queries', () => {
      for (const t of [ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, 13, 14, 15, 16, 17, 18]) {
        expect(icmpErrorAllowed(icmpOrig(t), 0, icmpOrig(t).length)).toBe(true);
      }
    });

    it('an ICMP datagram too short to show its type', () => {
      refuse(orig({ protocol: IPPROTO_ICMP, payload: new Uint8Array(0) }));
      // Type byte present in the buffer but beyond the total length (padding).
      const o = Buffer.concat([orig({ protocol: IPPROTO_ICMP, payload: new Uint8Array(0) }), Buffer.from([8, 0])]);
      refuse(o);
    });

    it('a non-first fragment, but not a first fragment', () => {
      const o = orig();
      o.writeUInt16BE(0x2000 | 1, 6);
      ipv4UpdateChecksum(o, 0);
      refuse(o);
      o.writeUInt16BE(0x0000 | 100, 6); // last fragment
      ipv4UpdateChecksum(o, 0);
      refuse(o);
      o.writeUInt16BE(0x2000, 6); // first fragment, MF set
      ipv4UpdateChecksum(o, 0);
      expect(icmpErrorAllowed(o, 0, o.length)).toBe(true);
      // A non-first fragment of an ICMP echo: its "type byte" is really data.
      const e = icmpEcho(ICMP_ECHO_REQUEST);
      e.writeUInt16BE(3, 6);
      ipv4UpdateChecksum(e, 0);
      refuse(e);
    });

    it('sources that do not name a single host', () => {
      for (const src of ['0.0.0.0', '0.1.2.3', '127.0.0.1', '127.255.0.9', '224.0.0.1', '239.1.1.1', '240.0.0.1', '255.255.255.255']) {
        refuse(orig({ src }));
      }
      for (const src of ['1.0.0.1', '126.255.255.255', '128.0.0.1', '223.255.255.254']) {
        expect(icmpErrorAllowed(orig({ src }), 0, orig({ src }).length)).toBe(true);
      }
    });

    it('multicast and limited-broadcast destinations', () => {
      for (const dst of ['224.0.0.5', '239.255.255.250', '255.255.255.255']) refuse(orig({ dst }));
      expect(icmpErrorAllowed(orig({ dst: '223.1.1.1' }), 0, orig().length)).toBe(true);
    });

    it('truncated or malformed originals', () => {
      const o = orig();
      refuse(o, 19);
      refuse(o, 0);
      refuse(new Uint8Array(0), 20);
      const v6 = orig();
      v6[0] = 0x65;
      refuse(v6);
      const ihl = orig();
      ihl[0] = 0x4f; // IHL says 60 bytes; only 40 are given
      refuse(ihl, 40);
      expect(icmpErrorAllowed(o, 0, o.length + 1)).toBe(false); // region past the buffer
    });
  });
});

describe('writeIcmpEcho', () => {
  it('writes type, id, seq, data and a valid checksum', () => {
    const out = new Uint8Array(30).fill(0xee);
    const n = writeIcmpEcho(out, 2, ICMP_ECHO_REQUEST, 0x1234, 0x0102, Uint8Array.from([1, 2, 3]));
    expect(n).toBe(11);
    expect([...out.subarray(2, 13)]).toEqual([8, 0, out[4], out[5], 0x12, 0x34, 0x01, 0x02, 1, 2, 3]);
    expect(sum16(out, 2, n)).toBe(0xffff);
    expect(out[1]).toBe(0xee);
    expect(out[13]).toBe(0xee);
    expect(writeIcmpEcho(new Uint8Array(10), 0, 0, 1, 1, new Uint8Array(3))).toBe(0);
  });
});
