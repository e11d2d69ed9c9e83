import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VXLAN_HLEN, VXLAN_VNI_MAX, vxlanIFlag, vxlanVni, writeVxlanHeader } from '../../src/packet/vxlan';

describe('VXLAN header (RFC 7348 §5)', () => {
  it('writes flags 0x08, 24 reserved bits, the VNI and 8 reserved bits', () => {
    const b = Buffer.alloc(12, 0xee);
    expect(writeVxlanHeader(b, 2, 1)).toBe(VXLAN_HLEN);
    expect(b.toString('hex')).toBe('eeee' + '08000000' + '00000100' + 'eeee');
    writeVxlanHeader(b, 2, 0xabcdef);
    expect(b.subarray(2, 10).toString('hex')).toBe('08000000abcdef00');
    expect(vxlanVni(b, 2)).toBe(0xabcdef);
    expect(vxlanIFlag(b, 2)).toBe(true);
  });

  it('keeps only the 24 bits of the VNI field', () => {
    const b = Buffer.alloc(8);
    writeVxlanHeader(b, 0, 0x1_000_002);
    expect(vxlanVni(b, 0)).toBe(2);
    expect(b[7]).toBe(0);
  });

  it('reads the I flag alone: other flag bits and reserved fields are ignored on receipt', () => {
    const b = Buffer.from('ff ffffff 000001 ff'.replace(/ /g, ''), 'hex');
    expect(vxlanIFlag(b, 0)).toBe(true);
    expect(vxlanVni(b, 0)).toBe(1);
    b[0] = 0xf7; // every bit but I
    expect(vxlanIFlag(b, 0)).toBe(false);
  });

  it('round-trips every VNI', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: VXLAN_VNI_MAX }), fc.integer({ min: 0, max: 8 }), (vni, off) => {
        const b = Buffer.alloc(16, 0xee);
        writeVxlanHeader(b, off, vni);
        expect(vxlanVni(b, off)).toBe(vni);
        expect(vxlanIFlag(b, off)).toBe(true);
        // Nothing outside the 8 bytes changed.
        for (let i = 0; i < 16; i++) if (i < off || i >= off + 8) expect(b[i]).toBe(0xee);
      }),
    );
  });
});

describe('fuzz', () => {
  it('writer and readers touch only the 8 header bytes at off', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 8, maxLength: 40 }), fc.nat(), fc.integer(), (bytes, o, vni) => {
        const off = o % (bytes.length - VXLAN_HLEN + 1);
        const b = new Proxy(bytes, {
          get(t, p) {
            if (typeof p === 'string' && String(Number(p)) === p) {
              const i = Number(p);
              if (i < off || i >= off + VXLAN_HLEN) throw new Error(`read at ${i}`);
              return t[i];
            }
            const v = Reflect.get(t, p, t);
            return typeof v === 'function' ? v.bind(t) : v;
          },
          set(t, p, v) {
            const i = Number(p);
            if (!(i >= off && i < off + VXLAN_HLEN)) throw new Error(`write at ${String(p)}`);
            t[i] = v as number;
            return true;
          },
        });
        expect(vxlanIFlag(b, off)).toBe((bytes[off] & 8) !== 0);
        expect(vxlanVni(b, off)).toBeLessThanOrEqual(VXLAN_VNI_MAX);
        writeVxlanHeader(b, off, vni);
        expect(vxlanVni(b, off)).toBe(vni & VXLAN_VNI_MAX);
      }),
      { numRuns: 2000 },
    );
  });
});
