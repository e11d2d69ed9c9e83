// Random and mutated input through the offload core's pure entry points: no crash, nothing
// written outside the regions handed over, well-formed output (properties in
// perf/fuzz-offload.ts, which also runs them a million times).

import fc from 'fast-check';
import { describe, it } from 'vitest';
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
      fc.assert(
        fc.property(
          // Mostly near-valid states (few datagrams, lengths within a region, small gso
          // sizes), some wild words.
          fc.oneof(
            fc
              .tuple(
                fc.integer({ min: -1, max: 3 }),
                fc.integer({ min: -1, max: 2 }),
                fc.integer({ min: -5, max: 3000 }),
                fc.array(
                  fc.tuple(fc.integer({ min: -2, max: 65537 }), fc.oneof(fc.integer({ min: -1, max: 2000 }), fc.constant(0)), fc.integer(), fc.integer({ min: -1, max: 70000 })),
                  { minLength: regions, maxLength: regions },
                ),
              )
              .map(([n, m, o, per]) => [n, m, o, ...per.flat()]),
            fc.array(fc.integer(), { minLength: groStateLength(regions), maxLength: groStateLength(regions) }),
          ),
          fc.integer({ min: 1, max: 300 }),
          fc.nat({ max: 64 }),
          fc.nat({ max: 9 }),
          (words, slotSize, headroom, maxCount) => {
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
              const n = native.recvBatch(fd, slab, slotSize, head, maxCount, offs, lens, addrs, ports, stage, state, ctr);
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
            return true;
          },
        ),
        { numRuns: 1500 },
      );
      for (let i = 0; i < stage.length; i++) if (stage[i] !== (i & 0xff)) throw new Error('stage modified');
    } finally {
      native.close(fd);
    }
  });
});
