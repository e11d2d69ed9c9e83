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
