// Fuzzing the offload core through its pure entry points (gsoSplit, tcpCoalesce): mostly
// plausible super-packets and segment batches, mutated, with guard bytes around every region
// handed to the addon. The properties (used by test/unit/native-offload-fuzz.test.ts with a
// few thousand runs; this script runs as many as asked):
//   - nothing throws for valid arguments, whatever the bytes;
//   - nothing is written outside the slots' packets, the output region used, or the source;
//   - whatever is produced is well-formed: slot offsets and lengths, valid checksums for every
//     segment of a super-packet, and per flow the same segments in the same order after
//     coalescing and re-splitting as went in.
//
//   npx tsc -p tsconfig.build.json && node dist/perf/fuzz-offload.js [--runs 1000000] [--seed N]
import fc from 'fast-check';
import { parseArgs } from 'node:util';
import { native, TUN_COUNTER, TUN_REFUSE } from '../src/io/native';
import { ipCsumOk, l4CsumOk, superPacket, TCP, tcpPacket, udpPacket, vnetHdr } from './support/offload';

const GUARD = 0xcc;
const GUARD_LEN = 64;

// --------------------------------------------------------------------------------------------
// Split

export interface SplitCase {
  src: Buffer;
  pristine: boolean; // a well-formed super-packet nothing has mutated
  payloadLen: number;
  slotSize: number;
  headroom: number;
  maxCount: number;
}

const mutation = fc.record({ at: fc.nat({ max: 120 }), xor: fc.integer({ min: 1, max: 255 }) });

export const splitCase: fc.Arbitrary<SplitCase> = fc
  .record({
    kind: fc.constantFrom('tcp4', 'tcp6', 'udp', 'plain', 'csum', 'random'),
    payload: fc.oneof(fc.nat({ max: 200 }), fc.nat({ max: 9000 }), fc.constant(0)),
    gso: fc.oneof(fc.integer({ min: 1, max: 1500 }), fc.constantFrom(0, 1, 536, 1448, 65535)),
    tcpOpt: fc.constantFrom(0, 4, 12, 40),
    ipOpt: fc.constantFrom(0, 0, 4, 40),
    mutations: fc.oneof(fc.constant([]), fc.array(mutation, { maxLength: 4 })),
    cut: fc.oneof(fc.constant(0), fc.nat({ max: 64 })),
    random: fc.uint8Array({ maxLength: 200 }),
    vnet: fc.uint8Array({ minLength: 10, maxLength: 10 }),
    slotSize: fc.oneof(fc.integer({ min: 1, max: 256 }), fc.constantFrom(1600, 2048, 4096)),
    headroom: fc.nat({ max: 128 }),
    maxCount: fc.nat({ max: 12 }),
  })
  .map((r) => {
    let src: Buffer;
    let payloadLen = r.payload;
    if (r.kind === 'random') {
      src = Buffer.concat([Buffer.from(r.vnet), Buffer.from(r.random)]);
    } else if (r.kind === 'udp') {
      src = superPacket(udpPacket({ payload: r.payload }), r.gso);
    } else {
      const p = tcpPacket({
        payload: r.payload,
        v6: r.kind === 'tcp6',
        tcpOptions: new Uint8Array(r.tcpOpt).fill(1),
        ipOptions: r.kind === 'tcp6' ? undefined : new Uint8Array(r.ipOpt).fill(1),
        flags: TCP.ACK | TCP.PSH | TCP.CWR | TCP.FIN,
        csum: r.kind === 'plain' ? 'valid' : 'seed',
      });
      if (r.kind === 'plain') src = Buffer.concat([vnetHdr({}), p]);
      else if (r.kind === 'csum') {
        const l3 = p[0] >> 4 === 6 ? 40 : (p[0] & 15) * 4;
        src = Buffer.concat([vnetHdr({ flags: 1, csumStart: l3, csumOffset: 16 }), p]);
      } else src = superPacket(p, r.gso);
    }
    for (const m of r.mutations) if (m.at < src.length) src[m.at] ^= m.xor;
    if (r.cut > 0) src = src.subarray(0, Math.max(0, src.length - r.cut));
    if (src.length > 65545) src = src.subarray(0, 65545);
    const pristine = r.kind !== 'random' && r.kind !== 'plain' && r.mutations.length === 0 && r.cut === 0;
    if (r.kind === 'random') payloadLen = -1;
    const slotSize = Math.max(r.slotSize, 1);
    return { src: Buffer.from(src), pristine, payloadLen, slotSize, headroom: r.headroom % slotSize, maxCount: r.maxCount };
  });

function fail(msg: string): never {
  throw new Error(msg);
}

/** Runs one split to completion (through its continuations) and checks every property. */
export function checkSplit(c: SplitCase): void {
  const slabLen = c.slotSize * c.maxCount;
  const backing = Buffer.alloc(slabLen + 2 * GUARD_LEN, GUARD);
  const slab = backing.subarray(GUARD_LEN, GUARD_LEN + slabLen);
  const offs = new Int32Array(c.maxCount + 2).fill(-7);
  const lens = new Int32Array(c.maxCount + 2).fill(-7);
  const state = new Int32Array(2);
  const ctr = new Float64Array(TUN_COUNTER.COUNT);
  const srcCopy = Buffer.from(c.src);
  const segs: Buffer[] = [];
  // A split that never finishes would loop: bound it by the most segments a read can yield.
  for (let call = 0; call < 70000; call++) {
    backing.fill(GUARD);
    const refusedBefore = TUN_REFUSE.reduce((a, _, i) => a + ctr[TUN_COUNTER.REFUSED + i], 0);
    const n = native.gsoSplit(c.src, c.src.length, slab, c.slotSize, c.headroom, c.maxCount, offs, lens, state, ctr);
    const refused = TUN_REFUSE.reduce((a, _, i) => a + ctr[TUN_COUNTER.REFUSED + i], 0) - refusedBefore;
    if (n < 0 || n > c.maxCount) fail(`count ${n} of ${c.maxCount}`);
    if (refused > 0 && n > 0) fail('refused and produced');
    const cap = c.slotSize - c.headroom;
    const written = Buffer.alloc(backing.length);
    for (let i = 0; i < n; i++) {
      if (offs[i] !== i * c.slotSize + c.headroom) fail(`offs[${i}] = ${offs[i]}`);
      if (lens[i] === -1) continue;
      if (lens[i] <= 0 || lens[i] > cap) fail(`lens[${i}] = ${lens[i]} (cap ${cap})`);
      written.fill(1, GUARD_LEN + offs[i], GUARD_LEN + offs[i] + lens[i]);
      segs.push(Buffer.from(slab.subarray(offs[i], offs[i] + lens[i])));
    }
    for (let i = n; i < offs.length; i++) if (offs[i] !== -7 || lens[i] !== -7) fail(`descriptor ${i} written past the count`);
    for (let b = 0; b < backing.length; b++) if (!written[b] && backing[b] !== GUARD) fail(`byte ${b - GUARD_LEN} of the slab written outside a packet`);
    offs.fill(-7);
    lens.fill(-7);
    if (state[0] === 0) break;
    if (c.maxCount === 0) break;
    if (call === 69999) fail('split never finished');
  }
  if (!c.src.equals(srcCopy)) fail('source modified');
  if (c.pristine && c.maxCount > 0 && ctr[TUN_COUNTER.SUPER_READ] + ctr[TUN_COUNTER.CSUM_COMPLETED] > 0) {
    // A well-formed super-packet that was accepted comes out whole: valid sums, all payload.
    let payload = 0;
    for (const s of segs) {
      if (!ipCsumOk(s) || !l4CsumOk(s, 0, s.length)) fail('segment with a bad checksum');
      const l3 = s[0] >> 4 === 6 ? 40 : (s[0] & 15) * 4;
      const proto = s[0] >> 4 === 6 ? s[6] : s[9];
      payload += s.length - l3 - (proto === 6 ? (s[l3 + 12] >> 4) * 4 : 8);
    }
    if (payload !== c.payloadLen) fail(`payload ${payload} of ${c.payloadLen}`);
  }
}

// --------------------------------------------------------------------------------------------
// Coalesce

export interface CoalesceCase {
  pkts: Buffer[];
  empty: boolean[];
  vnet: boolean;
}

const segSpec = fc.record({
  flow: fc.nat({ max: 3 }),
  size: fc.oneof(fc.constant(1000), fc.integer({ min: 0, max: 1460 })),
  flags: fc.oneof(fc.constant(TCP.ACK), fc.constant(TCP.ACK | TCP.PSH), fc.constantFrom(TCP.SYN, TCP.FIN | TCP.ACK, TCP.RST, TCP.URG | TCP.ACK, 0)),
  csum: fc.oneof(fc.constant<'valid'>('valid'), fc.constant<'seed'>('seed'), fc.constant(0x1234)),
  other: fc.constantFrom('tcp', 'tcp', 'tcp', 'tcp', 'udp', 'junk'),
  skip: fc.nat({ max: 2 }),
  mutation: fc.oneof(fc.constant(undefined), mutation),
  empty: fc.nat({ max: 15 }),
});

export const coalesceCase: fc.Arbitrary<CoalesceCase> = fc
  .record({ specs: fc.array(segSpec, { minLength: 1, maxLength: 40 }), vnet: fc.boolean(), sameAck: fc.boolean() })
  .map((r) => {
    const seq = [1, 100001, 200001, 300001];
    const id = [0, 0, 0, 0];
    const pkts: Buffer[] = [];
    const empty: boolean[] = [];
    for (const s of r.specs) {
      let p: Buffer;
      if (s.other === 'udp') p = udpPacket({ payload: s.size % 300, csum: s.csum });
      else if (s.other === 'junk') p = Buffer.from(Array.from({ length: 20 + (s.size % 60) }, (_, i) => (i * 13 + s.size) & 0xff));
      else {
        p = tcpPacket({
          sport: 1000 + s.flow,
          seq: seq[s.flow] + (s.skip === 2 ? 7 : 0),
          id: id[s.flow]++,
          ack: r.sameAck ? 5000 : 5000 + (s.size % 2),
          flags: s.flags,
          payload: s.size,
          csum: s.csum,
          df: s.flow !== 3,
        });
        seq[s.flow] += s.size;
      }
      if (s.mutation && s.mutation.at < p.length) p[s.mutation.at] ^= s.mutation.xor;
      pkts.push(p);
      empty.push(s.empty === 0);
    }
    return { pkts, empty, vnet: r.vnet };
  });

interface Seg {
  key: string;
  seq: number;
  payload: string;
}

/** The TCP/IPv4 segment as the addon parses one (well-formed headers), else undefined. */
function tcpSeg(p: Buffer): Seg | undefined {
  if (p.length < 20 || p[0] >> 4 !== 4) return undefined;
  const ihl = (p[0] & 15) * 4;
  if (ihl < 20 || ihl > p.length || p.readUInt16BE(2) !== p.length || (p.readUInt16BE(6) & 0x3fff) !== 0 || p[9] !== 6) return undefined;
  if (p.length - ihl < 20) return undefined;
  const doff = (p[ihl + 12] >> 4) * 4;
  if (doff < 20 || doff > p.length - ihl) return undefined;
  return {
    key: `${p.readUInt32BE(12)}:${p.readUInt32BE(16)}:${p.readUInt32BE(ihl)}`,
    seq: p.readUInt32BE(ihl + 4),
    payload: p.subarray(ihl + doff).toString('hex'),
  };
}

export function checkCoalesce(c: CoalesceCase): void {
  const count = c.pkts.length;
  const offs = new Int32Array(count);
  const lens = new Int32Array(count);
  let pos = GUARD_LEN;
  c.pkts.forEach((p, i) => {
    offs[i] = pos + (i % 3);
    lens[i] = c.empty[i] ? (i % 2 ? 0 : -1) : p.length;
    pos = offs[i] + p.length + 5;
  });
  const buf = Buffer.alloc(pos + GUARD_LEN, GUARD);
  c.pkts.forEach((p, i) => p.copy(buf, offs[i]));
  const inside = Buffer.alloc(buf.length);
  c.pkts.forEach((p, i) => inside.fill(1, offs[i], offs[i] + p.length));
  const live = c.pkts.filter((_, i) => !c.empty[i]);
  const need = live.reduce((a, p) => a + p.length + (c.vnet ? 10 : 0), 0);
  const outBacking = Buffer.alloc(need + 2 * GUARD_LEN, GUARD);
  const out = outBacking.subarray(GUARD_LEN, GUARD_LEN + need);
  const oo = new Int32Array(count).fill(-7);
  const ol = new Int32Array(count).fill(-7);
  const ctr = new Float64Array(TUN_COUNTER.COUNT);
  const units = native.tcpCoalesce(buf, offs, lens, count, c.vnet, out, oo, ol, ctr);
  if (units < 0 || units > live.length) fail(`units ${units} of ${live.length}`);
  for (let b = 0; b < buf.length; b++) if (!inside[b] && buf[b] !== GUARD) fail(`buf byte ${b} written outside a packet`);
  // Empty descriptors' packets are not touched at all.
  c.pkts.forEach((p, i) => {
    if (c.empty[i] && !buf.subarray(offs[i], offs[i] + p.length).equals(p)) fail(`skipped packet ${i} modified`);
  });
  let end = 0;
  const outPkts: Buffer[] = [];
  const slab = Buffer.alloc(80 * 2048);
  const so = new Int32Array(80);
  const sl = new Int32Array(80);
  const st = new Int32Array(2);
  const sctr = new Float64Array(TUN_COUNTER.COUNT);
  for (let u = 0; u < units; u++) {
    if (oo[u] !== end || ol[u] <= 0) fail(`unit ${u} at ${oo[u]}+${ol[u]}, expected at ${end}`);
    end += ol[u];
    const bytes = out.subarray(oo[u], oo[u] + ol[u]);
    if (!c.vnet) {
      outPkts.push(Buffer.from(bytes));
      continue;
    }
    const gso = bytes[1] !== 0;
    if (!gso) {
      if (!bytes.subarray(0, 10).equals(Buffer.alloc(10))) fail('plain unit with a non-zero virtio-net header');
      outPkts.push(Buffer.from(bytes.subarray(10)));
      continue;
    }
    const n = native.gsoSplit(bytes, bytes.length, slab, 2048, 0, 80, so, sl, st, sctr);
    if (n < 2 || st[0] !== 0) fail(`super-packet re-split into ${n}`);
    for (let i = 0; i < n; i++) {
      const s = Buffer.from(slab.subarray(so[i], so[i] + sl[i]));
      if (!ipCsumOk(s) || !l4CsumOk(s, 0, s.length)) fail('merged segment with a bad checksum');
      outPkts.push(s);
    }
  }
  for (let b = 0; b < outBacking.length; b++)
    if ((b < GUARD_LEN || b >= GUARD_LEN + end) && outBacking[b] !== GUARD) fail(`out byte ${b - GUARD_LEN} written past the units`);
  if (outPkts.length !== live.length) fail(`${outPkts.length} packets out of ${live.length}`);
  // Per flow, the same segments in the same order.
  const byFlow = (pk: Buffer[]) => {
    const m = new Map<string, string[]>();
    for (const p of pk) {
      const s = tcpSeg(p);
      const k = s ? s.key : 'other';
      const v = s ? `${s.seq}/${s.payload}` : p.toString('hex');
      m.set(k, [...(m.get(k) ?? []), v]);
    }
    return m;
  };
  const a = byFlow(live);
  const b = byFlow(outPkts);
  for (const [k, v] of a) {
    const w = b.get(k) ?? [];
    if (k === 'other') {
      if (v.length !== w.length) fail('unparsed packets lost');
      continue;
    }
    if (v.join() !== w.join()) fail(`flow ${k} changed: ${v.length} in, ${w.length} out`);
  }
}

function main(): void {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '1000000' }, seed: { type: 'string' } } });
  const runs = Number(values.runs);
  const seed = values.seed === undefined ? Date.now() : Number(values.seed);
  for (const [name, prop] of [
    ['gsoSplit', fc.property(splitCase, checkSplit)],
    ['tcpCoalesce', fc.property(coalesceCase, checkCoalesce)],
  ] as const) {
    const t0 = Date.now();
    fc.assert(prop as fc.IPropertyWithHooks<[unknown]>, { numRuns: runs, seed });
    console.log(`${name}: ${runs} runs passed in ${((Date.now() - t0) / 1000).toFixed(1)} s (seed ${seed})`);
  }
}

if (require.main === module) main();
