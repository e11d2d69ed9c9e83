import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ARP_LEN,
  ARP_OFF_SHA,
  arpOp,
  arpSenderIp,
  arpSenderMac,
  arpTargetIp,
  arpTargetMac,
  isArpRequest,
  writeArpReply,
  writeArpRequest,
} from '../../src/packet/arp';
import { formatMac, parseMac } from '../../src/packet/ethernet';
import { parseIpv4 } from '../../src/route/address';

// "who has 10.244.1.0? tell 10.244.2.0", as flannel.1 on 10.244.2.0/24 (MAC 6a:3f:1d:00:9c:02)
// sends it when it has no neighbor entry for its peer's VTEP address.
const REQUEST_HEX = '0001' + '0800' + '06' + '04' + '0001' + '6a3f1d009c02' + '0af40200' + '000000000000' + '0af40100';
const REQUEST = Buffer.from(REQUEST_HEX, 'hex');

describe('ARP request (RFC 826)', () => {
  it('recognises a request for IPv4 over Ethernet and reads its fields', () => {
    expect(REQUEST.length).toBe(ARP_LEN);
    expect(isArpRequest(REQUEST, 0, ARP_LEN)).toBe(true);
    expect(arpOp(REQUEST, 0)).toBe(1);
    expect(arpSenderIp(REQUEST, 0)).toBe(parseIpv4('10.244.2.0'));
    expect(arpTargetIp(REQUEST, 0)).toBe(parseIpv4('10.244.1.0'));
    const m = Buffer.alloc(6);
    arpSenderMac(REQUEST, 0, m);
    expect(formatMac(m)).toBe('6a:3f:1d:00:9c:02');
    arpTargetMac(REQUEST, 0, m);
    expect(formatMac(m)).toBe('00:00:00:00:00:00');
  });

  it('accepts trailing padding (an Ethernet frame padded to 60 bytes) and an offset', () => {
    const padded = Buffer.concat([Buffer.alloc(5), REQUEST, Buffer.alloc(18)]);
    expect(isArpRequest(padded, 5, ARP_LEN + 18)).toBe(true);
  });

  it.each([
    [0, 0x00, 'htype high byte'],
    [1, 0x06, 'htype 6 (IEEE 802)'],
    [2, 0x86, 'ptype 0x86dd'],
    [3, 0x00, 'ptype low byte'],
    [4, 8, 'hlen 8'],
    [5, 16, 'plen 16'],
    [6, 0x01, 'op high byte'],
    [7, 2, 'op 2 (reply)'],
  ])('refuses a change at byte %i (%s)', (i, v) => {
    const b = Buffer.from(REQUEST);
    if (b[i] === v) b[i] = v ^ 0xff;
    else b[i] = v;
    expect(isArpRequest(b, 0, ARP_LEN)).toBe(false);
  });

  it('refuses a short message and a range outside the buffer', () => {
    expect(isArpRequest(REQUEST, 0, ARP_LEN - 1)).toBe(false);
    expect(isArpRequest(REQUEST, 1, ARP_LEN)).toBe(false);
    expect(isArpRequest(REQUEST, -1, ARP_LEN)).toBe(false);
    expect(isArpRequest(REQUEST, 0, NaN)).toBe(false);
  });

  it('writeArpRequest builds the same bytes', () => {
    const b = Buffer.alloc(ARP_LEN, 0xee);
    expect(writeArpRequest(b, 0, parseMac('6a:3f:1d:00:9c:02'), parseIpv4('10.244.2.0'), parseIpv4('10.244.1.0'))).toBe(ARP_LEN);
    expect(b.toString('hex')).toBe(REQUEST_HEX);
  });
});

describe('ARP reply', () => {
  const OUR_MAC = parseMac('0e:00:c0:a8:4d:0b');
  const OUR_IP = parseIpv4('10.244.1.0');

  it('swaps the roles: sender = us, target = the requester, op 2 (byte-exact)', () => {
    const out = Buffer.alloc(ARP_LEN + 4, 0xee);
    const n = writeArpReply(out, 2, OUR_MAC, OUR_IP, REQUEST, ARP_OFF_SHA, arpSenderIp(REQUEST, 0));
    expect(n).toBe(ARP_LEN);
    expect(out.toString('hex')).toBe('eeee' + '0001' + '0800' + '06' + '04' + '0002' + '0e00c0a84d0b' + '0af40100' + '6a3f1d009c02' + '0af40200' + 'eeee');
  });

  it('can be written over the request itself', () => {
    const b = Buffer.from(REQUEST);
    writeArpReply(b, 0, OUR_MAC, OUR_IP, b, ARP_OFF_SHA, arpSenderIp(b, 0));
    expect(b.toString('hex')).toBe('0001' + '0800' + '06' + '04' + '0002' + '0e00c0a84d0b' + '0af40100' + '6a3f1d009c02' + '0af40200');
  });
});

/** A view that throws on any indexed access outside [lo, hi) (see packet-fuzz.test.ts). */
function fenced(buf: Uint8Array, lo: number, hi: number): Uint8Array {
  return new Proxy(buf, {
    get(t, p) {
      if (typeof p === 'string' && String(Number(p)) === p) {
        const i = Number(p);
        if (!(i >= lo && i < hi)) throw new Error(`read at ${i} outside [${lo}, ${hi})`);
        return t[i];
      }
      const v = Reflect.get(t, p, t);
      return typeof v === 'function' ? v.bind(t) : v;
    },
    set() {
      throw new Error('write to a read-only region');
    },
  });
}

describe('fuzz', () => {
  it('isArpRequest never throws and reads only inside its region', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 64 }),
        fc.integer({ min: -4, max: 70 }),
        fc.integer({ min: -4, max: 70 }),
        fc.boolean(),
        (bytes, off, len, plausible) => {
          const b = Buffer.from(bytes);
          if (plausible && off >= 0 && off + ARP_LEN <= b.length) REQUEST.copy(b, off, 0, 8);
          const lo = Math.max(0, off);
          const hi = Math.min(b.length, off + Math.max(0, len));
          const r = isArpRequest(fenced(b, lo, hi), off, len);
          expect(typeof r).toBe('boolean');
          if (r) expect(off >= 0 && len >= ARP_LEN && off + len <= b.length).toBe(true);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
