// Random and mutated input through the offload core's pure entry points: no crash, nothing
// written outside the regions handed over, well-formed output (properties in
// perf/fuzz-offload.ts, which also runs them a million times).

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkCoalesce, checkSplit, coalesceCase, splitCase } from '../../perf/fuzz-offload';

describe('offload core fuzz', () => {
  it('gsoSplit: any virtio-net header and packet, any slab shape', () => {
    fc.assert(fc.property(splitCase, checkSplit), { numRuns: 4000 });
  });

  it('tcpCoalesce: batches of plausible, mutated and foreign packets', () => {
    fc.assert(fc.property(coalesceCase, checkCoalesce), { numRuns: 3000 });
  });
});

describe('UDP GRO continuation state fuzz', () => {
  it('recvBatch in GRO mode takes any state JS wrote without reaching outside stage or slots', async () => {
    const { native, UDP_COUNTER, GRO_REGION, groStateLength } = await import('../../src/io/native');
    // An idle socket on loopback: nothing arrives, so only the pending state is handed out.
    const fd = native.udpOpen(0x7f000001, 0, 0, 0, true);
    try {
      const regions = 2;
      const stage = Buffer.alloc(regions * GRO_REGION);
      for (let i = 0; i < stage.length; i++) stage[i] = i & 0xff;
      // Region 0 a VXLAN-sized prefix and an inner TCP super-packet, region 1 the same with UDP:
      // states naming their exact lengths reach the tunnel cutting with real headers.
      const { tcpPacket, udpPacket } = await import('../../perf/support/offload');
      const inner0 = tcpPacket({ payload: 5000, csum: 'seed' });
      const inner1 = udpPacket({ payload: 3000, csum: 'seed' });
      inner0.copy(stage, 22);
      inner1.copy(stage, GRO_REGION + 22);
      const exact = [22 + inner0.length, 22 + inner1.length];
      const pristine = Buffer.from(stage);
      let tunnelSegments = 0;
      fc.assert(
        fc.property(
          // Mostly near-valid states (few datagrams, lengths within a region, small gso
          // sizes), some wild words.
          fc.oneof(
            fc
              .tuple(
                fc.integer({ min: -1, max: 3 }),
                fc.integer({ min: -1, max: 2 }),
                fc.oneof(fc.integer({ min: -5, max: 3 }), fc.integer({ min: 0, max: 3000 })),
                fc.array(
                  fc.tuple(
                    fc.oneof(fc.integer({ min: -2, max: 65537 }), fc.constantFrom(...exact)),
                    fc.oneof(fc.integer({ min: -1, max: 2000 }), fc.constant(0)),
                    fc.integer(),
                    fc.integer({ min: -1, max: 70000 }),
                    fc.integer({ min: -1, max: 2 }),
                  ),
                  { minLength: regions, maxLength: regions },
                ),
              )
              .map(([n, m, o, per]) => [n, m, o, ...per.flat()]),
            fc.array(fc.integer(), { minLength: groStateLength(regions), maxLength: groStateLength(regions) }),
            // Pending tunnel super-datagrams exactly as recvBatch records them, resumed at any
            // segment, with any gso_size the kernel might have given.
            fc
              .tuple(fc.integer({ min: 1, max: 2 }), fc.nat({ max: 1 }), fc.nat({ max: 12 }), fc.nat({ max: 1500 }), fc.nat({ max: 1500 }))
              .map(([n, m, o, g0, g1]) => [n, Math.min(m, n - 1), o, exact[0], g0, 0x0a000001, 8472, 1, exact[1], g1, 0x0a000001, 8472, 1]),
          ),
          fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1500, max: 2100 })),
          fc.nat({ max: 64 }),
          fc.nat({ max: 9 }),
          fc.constantFrom(-1, 0, 22, 22, 22, 60),
          fc.constantFrom(0, 68, 1450, 9000),
          (words, slotSize, headroom, maxCount, tunnel, tunnelMtu) => {
            const head = headroom % slotSize;
            const state = Int32Array.from(words);
            const backing = Buffer.alloc(slotSize * maxCount + 128, 0xcc);
            const slab = backing.subarray(64, 64 + slotSize * maxCount);
            const offs = new Int32Array(maxCount + 1).fill(-7);
            const lens = new Int32Array(maxCount + 1).fill(-7);
            const addrs = new Uint32Array(maxCount + 1);
            const ports = new Uint16Array(maxCount + 1);
            const ctr = new Float64Array(UDP_COUNTER.COUNT);
            for (let call = 0; call < 2000; call++) {
              const n = native.recvBatch(fd, slab, slotSize, head, maxCount, offs, lens, addrs, ports, stage, state, ctr, tunnel, tunnelMtu);
              if (n > maxCount) throw new Error(`count ${n}`);
              for (let i = 0; i < n; i++) {
                if (offs[i] !== i * slotSize + head) throw new Error(`offs ${offs[i]}`);
                if (lens[i] < -1 || lens[i] > slotSize - head) throw new Error(`lens ${lens[i]}`);
              }
              if (offs[maxCount] !== -7 || lens[maxCount] !== -7) throw new Error('descriptor past maxCount');
              if (!backing.subarray(0, 64).every((b) => b === 0xcc) || !backing.subarray(64 + slotSize * maxCount).every((b) => b === 0xcc)) {
                throw new Error('guard overwritten');
              }
              if (state[0] === 0 || maxCount === 0) break;
            }
            tunnelSegments += ctr[UDP_COUNTER.TUNNEL_SEGMENTS];
            return true;
          },
        ),
        { numRuns: 1500 },
      );
      if (!stage.equals(pristine)) throw new Error('stage modified');
      // The generator does reach the tunnel cutting itself, not only its refusals.
      expect(tunnelSegments).toBeGreaterThan(0);
    } finally {
      native.close(fd);
    }
  });
});
