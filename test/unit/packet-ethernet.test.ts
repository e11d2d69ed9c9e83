import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ETH_HLEN,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ethDst,
  ethSrc,
  ethertype,
  formatMac,
  isBroadcastMac,
  isLocalMac,
  isMulticastMac,
  macEquals,
  parseMac,
  writeEthernetHeader,
} from '../../src/packet/ethernet';

describe('parseMac / formatMac', () => {
  it('parses the colon form in either case and formats it back in lower case, as ip link prints it', () => {
    const b = parseMac('0E:00:C0:a8:4d:0b');
    expect([...b]).toEqual([0x0e, 0x00, 0xc0, 0xa8, 0x4d, 0x0b]);
    expect(formatMac(b)).toBe('0e:00:c0:a8:4d:0b');
    expect(formatMac(Buffer.from([9, 9, 0, 1, 2, 3, 4, 5, 0xff]), 2)).toBe('00:01:02:03:04:05');
  });

  it.each([
    ['', 'empty'],
    ['0e:00:c0:a8:4d', 'five octets'],
    ['0e:00:c0:a8:4d:0b:01', 'seven octets'],
    ['0e-00-c0-a8-4d-0b', 'dashes'],
    ['0e00.c0a8.4d0b', 'Cisco dots'],
    ['0e:0:c0:a8:4d:0b', 'a one-digit octet'],
    ['0g:00:c0:a8:4d:0b', 'a non-hex digit'],
    [' 0e:00:c0:a8:4d:0b', 'leading space'],
  ])('refuses %j (%s) with an error naming it', (s) => {
    expect(() => parseMac(s)).toThrow(/bad MAC address/);
    expect(() => parseMac(s)).toThrow(JSON.stringify(s));
  });

  it('refuses non-strings (a lease BackendData field can hold anything)', () => {
    for (const v of [undefined, null, 42, {}, ['0e:00:c0:a8:4d:0b']]) {
      expect(() => parseMac(v as unknown as string)).toThrow(/bad MAC address/);
    }
  });

  it('round-trips every 6-byte value', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), (m) => {
        expect([...parseMac(formatMac(m))]).toEqual([...m]);
      }),
    );
  });
});

describe('header', () => {
  it('writes dst, src, type at any offset and touches nothing else', () => {
    const buf = Buffer.alloc(20, 0xaa);
    const dst = parseMac('ff:ff:ff:ff:ff:ff');
    const src = parseMac('0e:00:c0:a8:4d:0b');
    expect(writeEthernetHeader(buf, 3, dst, src, ETHERTYPE_ARP)).toBe(ETH_HLEN);
    expect(buf.toString('hex')).toBe('aaaaaa' + 'ffffffffffff' + '0e00c0a84d0b' + '0806' + 'aaaaaa');
    expect(ethertype(buf, 3)).toBe(0x0806);
    const d = Buffer.alloc(6);
    const s = Buffer.alloc(6);
    ethDst(buf, 3, d);
    ethSrc(buf, 3, s);
    expect(formatMac(d)).toBe('ff:ff:ff:ff:ff:ff');
    expect(formatMac(s)).toBe('0e:00:c0:a8:4d:0b');
    writeEthernetHeader(buf, 3, src, dst, ETHERTYPE_IPV4);
    expect(ethertype(buf, 3)).toBe(0x0800);
  });

  it('compares, and classifies addresses by the IEEE 802 I/G and U/L bits', () => {
    const buf = Buffer.from('00ffffffffffff0e00c0a84d0b', 'hex');
    expect(isBroadcastMac(buf, 1)).toBe(true);
    expect(isMulticastMac(buf, 1)).toBe(true);
    expect(isBroadcastMac(buf, 7)).toBe(false);
    expect(isMulticastMac(buf, 7)).toBe(false);
    expect(isLocalMac(buf, 7)).toBe(true);
    expect(isMulticastMac(parseMac('01:00:5e:00:00:01'), 0)).toBe(true);
    expect(isLocalMac(parseMac('00:1b:21:00:00:01'), 0)).toBe(false);
    expect(macEquals(buf, 7, parseMac('0e:00:c0:a8:4d:0b'))).toBe(true);
    expect(macEquals(buf, 7, parseMac('0e:00:c0:a8:4d:0c'))).toBe(false);
    expect(macEquals(buf, 7, Buffer.from('ee0e00c0a84d0b', 'hex'), 1)).toBe(true);
  });
});

/** A view that throws on any indexed access outside [lo, hi) (see packet-fuzz.test.ts). */
function fenced(buf: Uint8Array, lo: number, hi: number, writable: boolean): Uint8Array {
  const inside = (p: string | symbol): number | null => {
    if (typeof p !== 'string' || String(Number(p)) !== p) return null;
    const i = Number(p);
    if (!(i >= lo && i < hi)) throw new Error(`access at ${i} outside [${lo}, ${hi})`);
    return i;
  };
  return new Proxy(buf, {
    get(t, p) {
      const i = inside(p);
      if (i !== null) return t[i];
      const v = Reflect.get(t, p, t);
      return typeof v === 'function' ? v.bind(t) : v;
    },
    set(t, p, v) {
      const i = inside(p);
      if (i === null) return Reflect.set(t, p, v, t);
      if (!writable) throw new Error(`write at ${i} to a read-only region`);
      t[i] = v as number;
      return true;
    },
  });
}

describe('fuzz', () => {
  it('header readers and the writer stay inside the 14 bytes at off; MAC helpers inside their 6', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 14, maxLength: 40 }),
        fc.nat(),
        fc.uint8Array({ minLength: 6, maxLength: 6 }),
        fc.uint8Array({ minLength: 6, maxLength: 6 }),
        fc.integer({ min: 0, max: 0xffff }),
        (bytes, o, dst, src, type) => {
          const off = o % (bytes.length - ETH_HLEN + 1);
          const b = fenced(bytes, off, off + ETH_HLEN, true);
          writeEthernetHeader(b, off, fenced(dst, 0, 6, false), fenced(src, 0, 6, false), type);
          expect(ethertype(b, off)).toBe(type);
          expect(macEquals(b, off, dst)).toBe(true);
          expect(macEquals(b, off + 6, src)).toBe(true);
          expect(isBroadcastMac(b, off)).toBe(dst.every((x) => x === 0xff));
          const out = new Uint8Array(6);
          ethSrc(b, off, fenced(out, 0, 6, true));
          expect([...out]).toEqual([...src]);
          ethDst(b, off, out);
          expect([...out]).toEqual([...dst]);
          expect(formatMac(b, off)).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('parseMac never throws anything but its own error on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 24 }), (s) => {
        try {
          expect(parseMac(s).length).toBe(6);
        } catch (e) {
          expect((e as Error).message).toMatch(/^bad MAC address/);
        }
      }),
    );
  });
});
