// The offload core through its pure entry points (gsoSplit, tcpCoalesce): hand-made virtio-net
// headers and packets, every resulting field checked against an independent checksum
// (perf/support/offload.ts).

import { describe, expect, it } from 'vitest';
import { native, TUN_COUNTER, TUN_REFUSE } from '../../src/io/native';
import { ipCsumOk, l3Len, l4CsumOk, pseudo, readVnet, superPacket, TCP, tcpPacket, udpPacket, VNET, vnetHdr } from '../../perf/support/offload';

const SLOT = 2048;
const HEAD = 64;

const refused = (ctr: Float64Array, reason: (typeof TUN_REFUSE)[number]): number => ctr[TUN_COUNTER.REFUSED + TUN_REFUSE.indexOf(reason)];

class Splitter {
  readonly slab: Buffer;
  readonly offs: Int32Array;
  readonly lens: Int32Array;
  readonly state = new Int32Array(2);
  readonly ctr = new Float64Array(TUN_COUNTER.COUNT);
  constructor(readonly slots = 16) {
    this.slab = Buffer.alloc(slots * SLOT, 0xee);
    this.offs = new Int32Array(slots);
    this.lens = new Int32Array(slots);
  }
  split(src: Buffer, maxCount = this.slots): Buffer[] {
    const n = native.gsoSplit(src, src.length, this.slab, SLOT, HEAD, maxCount, this.offs, this.lens, this.state, this.ctr);
    const out: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      expect(this.offs[i]).toBe(i * SLOT + HEAD);
      out.push(this.lens[i] < 0 ? Buffer.alloc(0) : Buffer.from(this.slab.subarray(this.offs[i], this.offs[i] + this.lens[i])));
    }
    return out;
  }
}

function expectValidSegment(p: Buffer): void {
  expect(ipCsumOk(p)).toBe(true);
  expect(l4CsumOk(p, 0, p.length)).toBe(true);
  if (p[0] >> 4 === 4) expect(p.readUInt16BE(2)).toBe(p.length);
  else expect(p.readUInt16BE(4)).toBe(p.length - 40);
}

describe('gsoSplit: TCP super-packets into segments', () => {
  it('cuts a TCPv4 super-packet as tcp_gso_segment does', () => {
    const whole = tcpPacket({ seq: 0xfffff000, id: 0xfffe, flags: TCP.ACK | TCP.PSH | TCP.FIN | TCP.CWR, payload: 2500 });
    const s = new Splitter();
    const segs = s.split(superPacket(whole, 1000));
    expect(segs.map((p) => p.length)).toEqual([1040, 1040, 540]);
    segs.forEach((p, i) => {
      expectValidSegment(p);
      // IDs count on from the super-packet's (wrapping), sequence numbers by gso_size (wrapping).
      expect(p.readUInt16BE(4)).toBe((0xfffe + i) & 0xffff);
      expect(p.readUInt32BE(24)).toBe((0xfffff000 + i * 1000) >>> 0);
      expect(p.readUInt32BE(28)).toBe(whole.readUInt32BE(28));
      expect(p.subarray(40)).toEqual(whole.subarray(40 + i * 1000, 40 + Math.min(2500, (i + 1) * 1000)));
      // Everything else in the headers is the super-packet's.
      expect(p.subarray(12, 20)).toEqual(whole.subarray(12, 20));
      expect(p.readUInt16BE(6)).toBe(0x4000);
    });
    // CWR on the first only; FIN and PSH on the last only.
    expect(segs.map((p) => p[33])).toEqual([TCP.ACK | TCP.CWR, TCP.ACK, TCP.ACK | TCP.PSH | TCP.FIN]);
    expect(s.ctr[TUN_COUNTER.SUPER_READ]).toBe(1);
    expect(s.ctr[TUN_COUNTER.SEGMENTS_OUT]).toBe(3);
    expect(s.ctr[TUN_COUNTER.PACKETS_READ]).toBe(1);
    // Nothing written outside the segments: slot headroom and slot tails keep their fill.
    for (let i = 0; i < 3; i++) {
      expect(s.slab.subarray(i * SLOT, i * SLOT + HEAD).every((b) => b === 0xee)).toBe(true);
      expect(s.slab.subarray(i * SLOT + HEAD + segs[i].length, (i + 1) * SLOT).every((b) => b === 0xee)).toBe(true);
    }
    expect(s.slab.subarray(3 * SLOT).every((b) => b === 0xee)).toBe(true);
  });

  it('copies IP and TCP options into every segment', () => {
    const ipOptions = Uint8Array.from([0x94, 0x04, 0, 0]); // router alert
    const tcpOptions = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
    const whole = tcpPacket({ ipOptions, tcpOptions, payload: 3000 });
    const sp = superPacket(whole, 1200);
    expect(readVnet(sp).csumStart).toBe(24);
    const segs = new Splitter().split(sp);
    expect(segs.map((p) => p.length)).toEqual([24 + 32 + 1200, 24 + 32 + 1200, 24 + 32 + 600]);
    for (const p of segs) {
      expectValidSegment(p);
      expect(p.subarray(20, 24)).toEqual(Buffer.from(ipOptions));
      expect(p.subarray(44, 56)).toEqual(Buffer.from(tcpOptions));
    }
  });

  it('cuts a TCPv6 super-packet (payload length per segment, no IP checksum)', () => {
    const whole = tcpPacket({ v6: true, payload: 2000, flags: TCP.ACK | TCP.PSH });
    const segs = new Splitter().split(superPacket(whole, 1440));
    expect(segs.map((p) => p.length)).toEqual([60 + 1440, 60 + 560]);
    for (const p of segs) expectValidSegment(p);
    expect(segs.map((p) => p[53])).toEqual([TCP.ACK, TCP.ACK | TCP.PSH]);
  });

  it('cuts a UDP_L4 super-packet into datagrams with their own length and checksum', () => {
    const whole = udpPacket({ payload: 3000, id: 7 });
    const segs = new Splitter().split(superPacket(whole, 1400));
    expect(segs.map((p) => p.length)).toEqual([1428, 1428, 228]);
    segs.forEach((p, i) => {
      expectValidSegment(p);
      expect(p.readUInt16BE(24)).toBe(p.length - 20);
      expect(p.readUInt16BE(4)).toBe(7 + i);
      expect(p.subarray(28)).toEqual(whole.subarray(28 + i * 1400, 28 + Math.min(3000, (i + 1) * 1400)));
    });
  });

  it('treats gso_size no smaller than the payload as one segment, and refuses gso_size 0', () => {
    const whole = tcpPacket({ payload: 500, flags: TCP.ACK | TCP.PSH });
    for (const g of [500, 501, 65535]) {
      const segs = new Splitter().split(superPacket(whole, g));
      expect(segs).toHaveLength(1);
      expectValidSegment(segs[0]);
      expect(segs[0].subarray(0, 36)).toEqual(whole.subarray(0, 36));
      expect(segs[0].subarray(38)).toEqual(whole.subarray(38));
    }
    const s = new Splitter();
    expect(s.split(superPacket(whole, 0))).toEqual([]);
    expect(refused(s.ctr, 'gsoSize')).toBe(1);
    // GSO with nothing to segment.
    expect(s.split(superPacket(tcpPacket({ payload: 0 }), 100))).toEqual([]);
    expect(refused(s.ctr, 'gsoSize')).toBe(2);
  });

  it('refuses segments larger than a slot', () => {
    const s = new Splitter();
    expect(s.split(superPacket(tcpPacket({ payload: 9000 }), SLOT))).toEqual([]);
    expect(refused(s.ctr, 'slotTooSmall')).toBe(1);
  });

  it('continues a split in the next call when the slots run out', () => {
    const whole = tcpPacket({ payload: 5 * 1000, flags: TCP.ACK | TCP.PSH });
    const src = superPacket(whole, 1000);
    const s = new Splitter(4);
    const got: Buffer[] = [];
    const counts: number[] = [];
    for (let k = 0; k < 3; k++) {
      const segs = s.split(src, 2);
      counts.push(segs.length);
      got.push(...segs);
      if (k < 2) expect(Array.from(s.state)).toEqual([src.length, 2 * (k + 1)]);
    }
    expect(counts).toEqual([2, 2, 1]);
    expect(Array.from(s.state)).toEqual([0, 0]);
    got.forEach((p, i) => {
      expectValidSegment(p);
      expect(p.readUInt32BE(24)).toBe(1000 + i * 1000);
      expect(p[33]).toBe(i === 4 ? TCP.ACK | TCP.PSH : TCP.ACK);
    });
    expect(s.ctr[TUN_COUNTER.SUPER_READ]).toBe(1);
    expect(s.ctr[TUN_COUNTER.SEGMENTS_OUT]).toBe(5);
  });

  it('validates continuation state JS could have written', () => {
    const src = superPacket(tcpPacket({ payload: 5000 }), 1000);
    const s = new Splitter(4);
    // A pending length that is not this buffer's.
    s.state.set([src.length - 1, 1]);
    expect(s.split(src)).toEqual([]);
    expect(Array.from(s.state)).toEqual([0, 0]);
    // A segment index past the last segment, and a negative one.
    for (const next of [5, 1000, -3, 0]) {
      s.state.set([src.length, next]);
      expect(s.split(src)).toEqual([]);
      expect(Array.from(s.state)).toEqual([0, 0]);
    }
    expect(refused(s.ctr, 'state')).toBe(5);
    // A valid resume point still works.
    s.state.set([src.length, 4]);
    const last = s.split(src);
    expect(last).toHaveLength(1);
    expect(last[0].readUInt32BE(24)).toBe(1000 + 4000);
  });
});

describe('gsoSplit: what the kernel header says is checked, not trusted', () => {
  const whole = tcpPacket({ payload: 3000 });
  const good = superPacket(whole, 1000);
  const lie = (patch: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    patch(b);
    return b;
  };
  const cases: [string, (typeof TUN_REFUSE)[number], Buffer][] = [
    ['unknown flag', 'flags', lie((b) => (b[0] |= 4))],
    ['GSO without NEEDS_CSUM', 'flags', lie((b) => (b[0] = 0))],
    ['UFO', 'gsoType', lie((b) => (b[1] = VNET.GSO_UDP))],
    ['gso_type 2', 'gsoType', lie((b) => (b[1] = 2))],
    ['the ECN bit', 'gsoType', lie((b) => (b[1] |= VNET.GSO_ECN))],
    ['hdr_len past the packet', 'hdrLen', lie((b) => b.writeUInt16LE(b.length, 2))],
    ['csum_start not at the TCP header', 'csumOffset', lie((b) => b.writeUInt16LE(24, 6))],
    ['csum_offset not at the TCP checksum', 'csumOffset', lie((b) => b.writeUInt16LE(6, 8))],
    ['TCPV6 on an IPv4 packet', 'ipHeader', lie((b) => (b[1] = VNET.GSO_TCPV6))],
    ['UDP_L4 on a TCP packet', 'protocol', lie((b) => (b[1] = VNET.GSO_UDP_L4))],
    ['IP total length short of the read', 'ipHeader', lie((b) => b.writeUInt16BE(whole.length - 1, 12))],
    ['IP total length past the read', 'ipHeader', lie((b) => b.writeUInt16BE(whole.length + 1, 12))],
    ['IHL 4', 'ipHeader', lie((b) => (b[10] = 0x44))],
    ['IP version 5', 'ipHeader', lie((b) => (b[10] = 0x55))],
    ['a fragment (MF)', 'ipHeader', lie((b) => b.writeUInt16BE(0x2000, 16))],
    ['TCP data offset 4', 'l4Header', lie((b) => (b[10 + 32] = 0x40))],
    [
      'TCP data offset past the packet',
      'l4Header',
      (() => {
        const b = superPacket(tcpPacket({ payload: 10 }), 5);
        b[10 + 32] = 0xf0; // 60 bytes of TCP header in 30 bytes of TCP
        return b;
      })(),
    ],
    ['gso_size 0', 'gsoSize', lie((b) => b.writeUInt16LE(0, 4))],
    ['nothing after the header', 'short', good.subarray(0, 10)],
    ['a packet cut short', 'ipHeader', good.subarray(0, 100)],
  ];
  for (const [what, reason, src] of cases) {
    it(`refuses ${what} (${reason})`, () => {
      const s = new Splitter();
      expect(s.split(src)).toEqual([]);
      expect(refused(s.ctr, reason)).toBe(1);
      const total = TUN_REFUSE.reduce((a, _, i) => a + s.ctr[TUN_COUNTER.REFUSED + i], 0);
      expect(total).toBe(1);
      expect(s.slab.every((b) => b === 0xee)).toBe(true);
    });
  }

  it('refuses NEEDS_CSUM offsets that do not match the parsed headers of a plain packet', () => {
    const p = tcpPacket({ payload: 100, csum: 'seed' });
    const s = new Splitter();
    for (const [start, off] of [
      [20, 6],
      [24, 16],
      [0, 16],
      [20, 0xfff0],
      [0xffff, 0xffff],
    ]) {
      expect(s.split(Buffer.concat([vnetHdr({ flags: VNET.NEEDS_CSUM, csumStart: start, csumOffset: off }), p]))).toEqual([]);
    }
    expect(refused(s.ctr, 'csumOffset')).toBe(5);
    // Without NEEDS_CSUM the offsets must be zero; without GSO so must hdr_len and gso_size.
    expect(s.split(Buffer.concat([vnetHdr({ csumStart: 20 }), p]))).toEqual([]);
    expect(refused(s.ctr, 'csumOffset')).toBe(6);
    expect(s.split(Buffer.concat([vnetHdr({ hdrLen: 40 }), p]))).toEqual([]);
    expect(refused(s.ctr, 'hdrLen')).toBe(1);
    expect(s.split(Buffer.concat([vnetHdr({ gsoSize: 1000 }), p]))).toEqual([]);
    expect(refused(s.ctr, 'gsoSize')).toBe(1);
    // NEEDS_CSUM on something that is neither TCP nor UDP.
    const icmp = Buffer.from(p);
    icmp[9] = 1;
    expect(s.split(Buffer.concat([vnetHdr({ flags: VNET.NEEDS_CSUM, csumStart: 20, csumOffset: 2 }), icmp]))).toEqual([]);
    expect(refused(s.ctr, 'protocol')).toBe(1);
  });
});

describe('gsoSplit: packets without GSO', () => {
  it('passes a plain packet through unchanged, and marks one too large for its slot', () => {
    const s = new Splitter();
    const p = tcpPacket({ payload: 100 });
    expect(s.split(Buffer.concat([vnetHdr({}), p]))).toEqual([p]);
    // DATA_VALID (CHECKSUM_UNNECESSARY) is allowed and changes nothing.
    expect(s.split(Buffer.concat([vnetHdr({ flags: VNET.DATA_VALID }), p]))).toEqual([p]);
    const big = tcpPacket({ payload: 3000 });
    const n = native.gsoSplit(Buffer.concat([vnetHdr({}), big]), big.length + 10, s.slab, SLOT, HEAD, 4, s.offs, s.lens, s.state, s.ctr);
    expect(n).toBe(1);
    expect(s.lens[0]).toBe(-1);
    expect(s.ctr[TUN_COUNTER.PACKETS_READ]).toBe(3);
  });

  it('finishes a NEEDS_CSUM checksum from the pseudo-header seed (TCP and UDP, IPv4 and IPv6)', () => {
    const s = new Splitter();
    const pkts = [
      tcpPacket({ payload: 333, csum: 'seed' }),
      tcpPacket({ payload: 10, csum: 'seed', v6: true }),
      udpPacket({ payload: 99, csum: 'seed' }),
      udpPacket({ payload: 1, csum: 'seed', v6: true }),
    ];
    for (const p of pkts) {
      const tcp = (p[0] >> 4 === 6 ? p[6] : p[9]) === 6;
      const l3 = l3Len(p);
      const [out] = s.split(Buffer.concat([vnetHdr({ flags: VNET.NEEDS_CSUM, csumStart: l3, csumOffset: tcp ? 16 : 6 }), p]));
      expect(out.length).toBe(p.length);
      expect(l4CsumOk(out, 0, out.length)).toBe(true);
      const at = l3 + (tcp ? 16 : 6);
      expect(Buffer.concat([out.subarray(0, at), out.subarray(at + 2)])).toEqual(Buffer.concat([p.subarray(0, at), p.subarray(at + 2)]));
    }
    expect(s.ctr[TUN_COUNTER.CSUM_COMPLETED]).toBe(4);
  });
});

// ---------------------------------------------------------------------------------------------

interface Unit {
  vnet: ReturnType<typeof readVnet> | undefined;
  bytes: Buffer;
}

function coalesce(pkts: Buffer[], vnet = true, ctr = new Float64Array(TUN_COUNTER.COUNT)): { units: Unit[]; ctr: Float64Array; buf: Buffer; offs: Int32Array } {
  // Packets at odd-ish offsets with gaps, as slots of a slab would be.
  const offs = new Int32Array(pkts.length);
  const lens = new Int32Array(pkts.length);
  let pos = 0;
  pkts.forEach((p, i) => {
    offs[i] = pos + 16;
    lens[i] = p.length;
    pos += 16 + p.length + 6;
  });
  const buf = Buffer.alloc(pos, 0xa5);
  pkts.forEach((p, i) => p.copy(buf, offs[i]));
  const out = Buffer.alloc(pos + 10 * pkts.length + 32, 0x5a);
  const oo = new Int32Array(pkts.length);
  const ol = new Int32Array(pkts.length);
  const n = native.tcpCoalesce(buf, offs, lens, pkts.length, vnet, out, oo, ol, ctr);
  const units: Unit[] = [];
  let end = 0;
  for (let u = 0; u < n; u++) {
    const b = Buffer.from(out.subarray(oo[u], oo[u] + ol[u]));
    end = Math.max(end, oo[u] + ol[u]);
    units.push(vnet ? { vnet: readVnet(b), bytes: b.subarray(10) } : { vnet: undefined, bytes: b });
  }
  expect(out.subarray(end).every((b) => b === 0x5a)).toBe(true);
  return { units, ctr, buf, offs };
}

const ZERO_VNET = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };

function flow(n: number, o: Parameters<typeof tcpPacket>[0] & { size?: number; last?: number } = {}): Buffer[] {
  const size = o.size ?? 1000;
  const seq0 = o.seq ?? 1;
  return Array.from({ length: n }, (_, i) =>
    tcpPacket({ ...o, seq: seq0 + i * size, id: (o.id ?? 0x100) + i, payload: i === n - 1 && o.last !== undefined ? o.last : size }),
  );
}

/** Splits a GSO unit back with gsoSplit: the kernel's view of what was written. */
function resplit(u: Unit): Buffer[] {
  const s = new Splitter(80);
  return s.split(Buffer.concat([vnetHdrFrom(u.vnet ?? ZERO_VNET), u.bytes]));
}
function vnetHdrFrom(v: ReturnType<typeof readVnet>): Buffer {
  return vnetHdr(v);
}

describe('tcpCoalesce: runs of one flow become one super-packet', () => {
  it('merges consecutive segments: header, patched first packet, payloads', () => {
    const segs = flow(3, { last: 500 });
    segs[2][33] |= TCP.PSH;
    segs[2].writeUInt16BE(0, 36);
    // Recompute the last one's checksum after setting PSH.
    const fixed = tcpPacket({ seq: 2001, id: 0x102, payload: 500, flags: TCP.ACK | TCP.PSH });
    segs[2] = fixed;
    const { units, ctr } = coalesce(segs);
    expect(units).toHaveLength(1);
    const [u] = units;
    expect(u.vnet).toEqual({ flags: VNET.NEEDS_CSUM, gsoType: VNET.GSO_TCPV4, hdrLen: 40, gsoSize: 1000, csumStart: 20, csumOffset: 16 });
    const b = u.bytes;
    expect(b.length).toBe(40 + 2500);
    expect(b.readUInt16BE(2)).toBe(2540);
    expect(ipCsumOk(b)).toBe(true);
    expect(b[33]).toBe(TCP.ACK | TCP.PSH);
    expect(b.readUInt32BE(24)).toBe(1);
    expect(b.readUInt16BE(4)).toBe(0x100);
    // The field holds the pseudo-header sum for the whole length: the CHECKSUM_PARTIAL seed.
    expect(b.readUInt16BE(36)).toBe(pseudo(b));
    expect(b.subarray(40)).toEqual(Buffer.concat(segs.map((s) => s.subarray(40))));
    // Segmented again (as the kernel will), the original packets come back.
    const back = resplit(u);
    expect(back).toHaveLength(3);
    back.forEach((p, i) => {
      expectValidSegment(p);
      expect(p).toEqual(segs[i]);
    });
    expect(ctr[TUN_COUNTER.COALESCED_WRITES]).toBe(1);
    expect(ctr[TUN_COUNTER.SEGMENTS_MERGED]).toBe(3);
    expect(ctr[TUN_COUNTER.PLAIN_WRITES]).toBe(0);
  });

  it('keeps TCP options and merges only equal ones', () => {
    const ts = (v: number) => Uint8Array.from([1, 1, 8, 10, 0, 0, 0, v, 0, 0, 0, 9]);
    const same = flow(3, { tcpOptions: ts(1) });
    const { units } = coalesce(same);
    expect(units).toHaveLength(1);
    expect(units[0].vnet?.hdrLen).toBe(52);
    expect(units[0].bytes.subarray(40, 52)).toEqual(Buffer.from(ts(1)));
    const differ = flow(3, { tcpOptions: ts(1) });
    differ[2] = tcpPacket({ seq: 2001, id: 0x102, payload: 1000, tcpOptions: ts(2) });
    const r = coalesce(differ);
    expect(r.units.map((u) => u.vnet?.gsoType)).toEqual([VNET.GSO_TCPV4, 0]);
    expect(r.units[1].bytes).toEqual(differ[2]);
  });

  it('never merges SYN, FIN, RST, URG, ECE/CWR or pure ACKs, and keeps them in place', () => {
    for (const f of [TCP.SYN, TCP.FIN, TCP.RST, TCP.URG, TCP.ECE, TCP.CWR]) {
      const segs = flow(4);
      segs[2] = tcpPacket({ seq: 2001, id: 0x102, payload: 1000, flags: TCP.ACK | f });
      const { units } = coalesce(segs);
      // [0,1] merged; 2 alone; 3 must not join [0,1] (it would overtake 2).
      expect(units.map((u) => u.vnet?.gsoType)).toEqual([VNET.GSO_TCPV4, 0, 0]);
      expect(units[1].bytes).toEqual(segs[2]);
      expect(units[2].bytes).toEqual(segs[3]);
      expect(units[1].vnet).toEqual(ZERO_VNET);
    }
    const acks = [tcpPacket({ payload: 0 }), tcpPacket({ payload: 0 })];
    expect(coalesce(acks).units.map((u) => u.bytes)).toEqual(acks);
  });

  it('does not merge across a sequence gap, or a different ACK, TOS, TTL or DF', () => {
    const variants: [string, (i: number) => Parameters<typeof tcpPacket>[0]][] = [
      ['gap', (i) => ({ seq: 1 + i * 1000 + (i === 2 ? 1 : 0) })],
      ['ack', (i) => ({ ack: i === 2 ? 6000 : 5000 })],
      ['tos', (i) => ({ tos: i === 2 ? 0x10 : 0 })],
      ['ttl', (i) => ({ ttl: i === 2 ? 63 : 64 })],
      ['df', (i) => ({ df: i !== 2, id: 0x100 + i })],
    ];
    for (const [what, v] of variants) {
      const segs = [0, 1, 2].map((i) => tcpPacket({ seq: 1 + i * 1000, id: 0x100 + i, payload: 1000, ...v(i) }));
      const { units } = coalesce(segs);
      expect(
        units.map((u) => u.vnet?.gsoType),
        what,
      ).toEqual([VNET.GSO_TCPV4, 0]);
      expect(units[1].bytes, what).toEqual(segs[2]);
    }
  });

  it('requires consecutive IDs without DF', () => {
    const ok = [0, 1, 2].map((i) => tcpPacket({ seq: 1 + i * 1000, id: 0xffff + i, df: false, payload: 1000 }));
    expect(coalesce(ok).units).toHaveLength(1);
    const bad = [0, 1, 2].map((i) => tcpPacket({ seq: 1 + i * 1000, id: 7, df: false, payload: 1000 }));
    expect(coalesce(bad).units).toHaveLength(3);
  });

  it('never merges packets with IP options', () => {
    const segs = flow(3, { ipOptions: Uint8Array.from([1, 1, 1, 0]) });
    expect(coalesce(segs).units.map((u) => u.vnet)).toEqual([ZERO_VNET, ZERO_VNET, ZERO_VNET]);
  });

  it('ends a run at a short segment, at PSH, and does not start one after PSH', () => {
    const segs = [
      tcpPacket({ seq: 1, payload: 1000 }),
      tcpPacket({ seq: 1001, id: 0x101, payload: 400 }),
      tcpPacket({ seq: 1401, id: 0x102, payload: 1000 }),
      tcpPacket({ seq: 2401, id: 0x103, payload: 1000, flags: TCP.ACK | TCP.PSH }),
      tcpPacket({ seq: 3401, id: 0x104, payload: 1000 }),
    ];
    const { units } = coalesce(segs);
    expect(units.map((u) => [u.vnet?.gsoType, u.bytes.length])).toEqual([
      [VNET.GSO_TCPV4, 40 + 1400],
      [VNET.GSO_TCPV4, 40 + 2000],
      [0, 1040],
    ]);
    expect(units[1].bytes[33]).toBe(TCP.ACK | TCP.PSH);
    // A larger segment after a smaller first one starts a new run.
    const grow = [tcpPacket({ seq: 1, payload: 500 }), tcpPacket({ seq: 501, payload: 1000 })];
    expect(coalesce(grow).units).toHaveLength(2);
    const pshFirst = [tcpPacket({ seq: 1, payload: 1000, flags: TCP.ACK | TCP.PSH }), tcpPacket({ seq: 1001, payload: 1000 })];
    expect(coalesce(pshFirst).units).toHaveLength(2);
  });

  it('merges interleaved flows separately and keeps each flow in order', () => {
    const a = flow(3, { sport: 1111 });
    const b = flow(3, { sport: 2222, seq: 77777 });
    const c = flow(2, { src: 0x0a000009 });
    const batch = [a[0], b[0], c[0], a[1], b[1], c[1], a[2], b[2]];
    const { units } = coalesce(batch);
    expect(units.map((u) => [u.bytes.readUInt16BE(20), u.bytes.length])).toEqual([
      [1111, 40 + 3000],
      [2222, 40 + 3000],
      [40000, 40 + 2000],
    ]);
    expect(resplit(units[0])).toEqual(a);
    expect(resplit(units[1])).toEqual(b);
    expect(resplit(units[2])).toEqual(c);
  });

  it('writes a non-TCP packet between segments unchanged without splitting the run', () => {
    const segs = flow(3);
    const udp = udpPacket({ payload: 50 });
    const icmpish = Buffer.from(udp);
    icmpish[9] = 1;
    const { units } = coalesce([segs[0], udp, segs[1], icmpish, segs[2]]);
    expect(units.map((u) => u.vnet?.gsoType)).toEqual([VNET.GSO_TCPV4, 0, 0]);
    expect(units[1].bytes).toEqual(udp);
    expect(units[2].bytes).toEqual(icmpish);
    expect(resplit(units[0])).toEqual(segs);
  });

  it('does not merge a segment whose checksum is bad, and writes it as it came', () => {
    const segs = flow(4);
    segs[2] = tcpPacket({ seq: 2001, id: 0x102, payload: 1000, csum: 0x1234 });
    const { units, ctr } = coalesce(segs);
    expect(units.map((u) => u.vnet?.gsoType)).toEqual([VNET.GSO_TCPV4, 0, 0]);
    expect(units[1].bytes).toEqual(segs[2]);
    expect(ctr[TUN_COUNTER.PARTIAL_FIXED]).toBe(0);
    // A bad IP header checksum likewise.
    const ip = flow(3);
    ip[1][10] ^= 0xff;
    expect(coalesce(ip).units).toHaveLength(3);
  });

  it('respects the 64-segment and 65535-byte limits', () => {
    const many = flow(70, { size: 100 });
    const r = coalesce(many);
    expect(r.units.map((u) => u.bytes.length)).toEqual([40 + 6400, 40 + 600]);
    const big = flow(50, { size: 1400 });
    const rb = coalesce(big);
    // 46 * 1400 + 40 = 64440 <= 65535 < 47 * 1400 + 40.
    expect(rb.units.map((u) => u.bytes.length)).toEqual([40 + 46 * 1400, 40 + 4 * 1400]);
    for (const u of rb.units) expect(resplit(u).length).toBeGreaterThan(1);
  });

  it("finishes the kernel VXLAN peer's pseudo-header-only checksums, and then merges", () => {
    const segs = flow(3, { csum: 'seed' });
    const lone = tcpPacket({ sport: 9, payload: 0, flags: TCP.ACK | TCP.FIN, csum: 'seed' });
    const udp = udpPacket({ payload: 30, csum: 'seed' });
    const { units, ctr } = coalesce([...segs, lone, udp]);
    expect(ctr[TUN_COUNTER.PARTIAL_FIXED]).toBe(5);
    expect(units.map((u) => u.vnet?.gsoType)).toEqual([VNET.GSO_TCPV4, 0, 0]);
    for (const p of resplit(units[0])) expectValidSegment(p);
    expect(l4CsumOk(units[1].bytes, 0, units[1].bytes.length)).toBe(true);
    expect(l4CsumOk(units[2].bytes, 0, units[2].bytes.length)).toBe(true);
    // Without offload (vnet false): no merging, no header, but the sums are still finished.
    const plain = coalesce([...flow(3, { csum: 'seed' })], false);
    expect(plain.units).toHaveLength(3);
    for (const u of plain.units) {
      expect(u.vnet).toBeUndefined();
      expectValidSegment(u.bytes);
    }
    expect(plain.ctr[TUN_COUNTER.PARTIAL_FIXED]).toBe(3);
    expect(plain.ctr[TUN_COUNTER.PLAIN_WRITES]).toBe(3);
  });

  it('skips empty descriptors and checks every descriptor before touching anything', () => {
    const segs = flow(2);
    const buf = Buffer.concat(segs);
    const out = Buffer.alloc(4096);
    const ctr = new Float64Array(TUN_COUNTER.COUNT);
    const n = native.tcpCoalesce(buf, Int32Array.from([0, 0, 1040]), Int32Array.from([1040, 0, 1040]), 3, true, out, new Int32Array(3), new Int32Array(3), ctr);
    expect(n).toBe(1);
    const before = Buffer.from(buf);
    expect(() =>
      native.tcpCoalesce(buf, Int32Array.from([0, 1040]), Int32Array.from([1040, 1041]), 2, true, out, new Int32Array(2), new Int32Array(2), ctr),
    ).toThrow(RangeError);
    expect(() =>
      native.tcpCoalesce(buf, Int32Array.from([0, 1040]), Int32Array.from([1040, 1040]), 2, true, Buffer.alloc(100), new Int32Array(2), new Int32Array(2), ctr),
    ).toThrow(RangeError);
    expect(() =>
      native.tcpCoalesce(buf, Int32Array.from([0, 1040]), Int32Array.from([1040, 1040]), 2, true, out, new Int32Array(1), new Int32Array(2), ctr),
    ).toThrow(RangeError);
    expect(() =>
      native.tcpCoalesce(
        buf,
        Int32Array.from([0, 1040]),
        Int32Array.from([1040, 1040]),
        2,
        true,
        out,
        new Int32Array(2),
        new Int32Array(2),
        new Float64Array(3),
      ),
    ).toThrow(RangeError);
    expect(buf).toEqual(before);
  });
});

describe('argument checks of the offload entry points', () => {
  it('rejects bad slabs, state and counters before doing anything', () => {
    const src = superPacket(tcpPacket({ payload: 3000 }), 1000);
    const slab = Buffer.alloc(4 * SLOT);
    const o = new Int32Array(4);
    const l = new Int32Array(4);
    const ctr = new Float64Array(TUN_COUNTER.COUNT);
    expect(() => native.gsoSplit(src, src.length + 1, slab, SLOT, HEAD, 4, o, l, new Int32Array(2), ctr)).toThrow(RangeError);
    expect(() => native.gsoSplit(src, src.length, slab, SLOT, HEAD, 5, o, l, new Int32Array(2), ctr)).toThrow(RangeError);
    expect(() => native.gsoSplit(src, src.length, slab, SLOT, HEAD, 4, o, l, new Int32Array(1), ctr)).toThrow(RangeError);
    expect(() => native.gsoSplit(src, src.length, slab, SLOT, HEAD, 4, o, l, new Int32Array(2), new Float64Array(2))).toThrow(RangeError);
    expect(() => native.gsoSplit(src, src.length, slab, SLOT, HEAD, 4, o, l, new Uint32Array(2) as never, ctr)).toThrow(TypeError);
    expect(() => native.tunReadVnet(0x7ffffff0, Buffer.alloc(100), slab, SLOT, HEAD, 4, o, l, new Int32Array(2), ctr)).toThrow(RangeError);
    expect(() => native.tunWrite(0x7ffffff0, slab, o, l, 1, 'yes' as never, ctr)).toThrow(TypeError);
    expect(() => native.tunOpen('x', false, 1 as never)).toThrow(TypeError);
    expect(ctr.every((c) => c === 0)).toBe(true);
  });

  it('throws EBADF for a closed fd instead of counting every packet as dropped', () => {
    const ctr = new Float64Array(TUN_COUNTER.COUNT);
    const pkts = flow(3);
    const buf = Buffer.concat(pkts);
    const offs = Int32Array.from([0, 1040, 2080]);
    const lens = Int32Array.from([1040, 1040, 1040]);
    for (const vnet of [true, false]) {
      let err: (Error & { code?: string; syscall?: string }) | undefined;
      try {
        native.tunWrite(0x7ffffff0, buf, offs, lens, 3, vnet, ctr);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.code).toBe('EBADF');
      expect(err?.syscall).toBe('writev');
    }
    let rerr: (Error & { code?: string }) | undefined;
    try {
      native.tunReadVnet(0x7ffffff0, Buffer.alloc(65545), Buffer.alloc(4 * SLOT), SLOT, HEAD, 4, new Int32Array(4), new Int32Array(4), new Int32Array(2), ctr);
    } catch (e) {
      rerr = e as Error;
    }
    expect(rerr?.code).toBe('EBADF');
    expect(ctr[TUN_COUNTER.WRITE_ERRORS]).toBe(0);
  });
});

describe('recvBatch GRO mode: tunnel super-datagrams', () => {
  it('cuts one into datagrams that each repeat the tunnel headers before a valid inner segment', async () => {
    const { GRO_REGION, groStateLength, UDP_COUNTER } = await import('../../src/io/native');
    // An idle loopback socket: nothing arrives, so recvBatch hands out only what the state
    // says is pending in stage, exactly as after a recvmmsg that received it.
    const fd = native.udpOpen(0x7f000001, 0, 0, 0, true);
    try {
      const stage = Buffer.alloc(GRO_REGION);
      const prefix = Buffer.from(Array.from({ length: 22 }, (_, i) => 0xa0 + i));
      const inner = tcpPacket({ payload: 4000, flags: TCP.ACK | TCP.PSH, tcpOptions: Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]), csum: 'seed' });
      prefix.copy(stage, 0);
      inner.copy(stage, 22);
      const len = 22 + inner.length;
      const state = new Int32Array(groStateLength(1));
      // [pending, datagram, next segment] then [length, gso_size (none), addr, port, kind 1].
      state.set([1, 0, 0, len, 0, 0x0a000001, 8472, 1]);
      const slab = Buffer.alloc(3 * SLOT);
      const offs = new Int32Array(3);
      const lens = new Int32Array(3);
      const addrs = new Uint32Array(3);
      const ports = new Uint16Array(3);
      const ctr = new Float64Array(UDP_COUNTER.COUNT);
      const got: Buffer[] = [];
      // Inner MTU 1450: segments of 1450 - 20 - 32 = 1398 bytes; 3 slots per call.
      for (let call = 0; call < 3; call++) {
        const n = native.recvBatch(fd, slab, SLOT, HEAD, 3, offs, lens, addrs, ports, stage, state, ctr, 22, 1450);
        for (let i = 0; i < n; i++) {
          expect([addrs[i], ports[i]]).toEqual([0x0a000001, 8472]);
          got.push(Buffer.from(slab.subarray(offs[i], offs[i] + lens[i])));
        }
        if (state[0] === 0) break;
      }
      expect(got.map((d) => d.length)).toEqual([22 + 1450, 22 + 1450, 22 + 52 + 4000 - 2 * 1398]);
      let payload = Buffer.alloc(0);
      got.forEach((d, i) => {
        expect(d.subarray(0, 22)).toEqual(prefix);
        const seg = d.subarray(22);
        expectValidSegment(seg);
        expect(seg.readUInt32BE(24)).toBe(1000 + i * 1398);
        expect(seg[33]).toBe(i === 2 ? TCP.ACK | TCP.PSH : TCP.ACK);
        payload = Buffer.concat([payload, seg.subarray(52)]);
      });
      expect(payload).toEqual(inner.subarray(52));
      expect(ctr[UDP_COUNTER.TUNNEL_SEGMENTS]).toBe(3);
      // Without an inner MTU, segments are as large as a slot allows.
      state.set([1, 0, 0, len, 0, 0x0a000001, 8472, 1]);
      const n = native.recvBatch(fd, slab, SLOT, HEAD, 3, offs, lens, addrs, ports, stage, state, ctr, 22, 0);
      expect(Array.from(lens.subarray(0, n))).toEqual([SLOT - HEAD, SLOT - HEAD, 22 + 52 + 4000 - 2 * (SLOT - HEAD - 22 - 52)]);
    } finally {
      native.close(fd);
    }
  });
});
