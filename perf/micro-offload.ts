// CPU cost of the offload core with no I/O: gsoSplit of 64 KB TCP super-packets into 1448-byte
// segments (the TUN read side) and tcpCoalesce of 64-segment batches (the write side), next to
// copying the same bytes once (Buffer.copy), the floor any split must pay. Figures are per
// super-packet / per batch and as payload Gbit/s of one core.
//
//   npx tsc -p tsconfig.build.json && node dist/perf/micro-offload.js [--ms 1000]
import { parseArgs } from 'node:util';
import { native, TUN_COUNTER } from '../src/io/native';
import { superPacket, tcpPacket } from './support/offload';

function time(ms: number, fn: () => number): { perOp: number; bytesPerSec: number } {
  let ops = 0;
  let bytes = 0;
  for (let i = 0; i < 200; i++) fn(); // warm up
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ms) * 1_000_000n;
  let t = t0;
  while (t < end) {
    for (let i = 0; i < 50; i++) {
      bytes += fn();
      ops++;
    }
    t = process.hrtime.bigint();
  }
  const ns = Number(t - t0);
  return { perOp: ns / ops, bytesPerSec: (bytes / ns) * 1e9 };
}

function main(): void {
  const { values } = parseArgs({ options: { ms: { type: 'string', default: '1000' } } });
  const ms = Number(values.ms);
  const MSS = 1448;
  const SEGS = 45;
  const src = superPacket(tcpPacket({ payload: MSS * SEGS, tcpOptions: new Uint8Array(12).fill(1) }), MSS);
  const SLOT = 2048;
  const slab = Buffer.alloc(64 * SLOT);
  const offs = new Int32Array(64);
  const lens = new Int32Array(64);
  const state = new Int32Array(2);
  const ctr = new Float64Array(TUN_COUNTER.COUNT);
  const payload = MSS * SEGS;
  const split = time(ms, () => {
    native.gsoSplit(src, src.length, slab, SLOT, 64, 64, offs, lens, state, ctr);
    return payload;
  });
  const copy = time(ms, () => {
    src.copy(slab, 64, 10);
    return payload;
  });

  // 64 segments of two interleaved flows, all mergeable: two super-packets per batch.
  const batch = Buffer.alloc(64 * SLOT);
  const bo = new Int32Array(64);
  const bl = new Int32Array(64);
  const pristine: Buffer[] = [];
  for (let i = 0; i < 64; i++) {
    const flow = i % 2;
    const p = tcpPacket({ sport: 1000 + flow, seq: 1 + (i >> 1) * MSS, id: i >> 1, payload: MSS });
    pristine.push(p);
    bo[i] = i * SLOT + 64;
    bl[i] = p.length;
  }
  const out = Buffer.alloc(64 * (SLOT + 10));
  const oo = new Int32Array(64);
  const ol = new Int32Array(64);
  const coalesce = time(ms, () => {
    // The coalescer patches the first packet of each run in place: restore the two heads.
    pristine[0].copy(batch, bo[0]);
    pristine[1].copy(batch, bo[1]);
    native.tcpCoalesce(batch, bo, bl, 64, true, out, oo, ol, ctr);
    return 64 * MSS;
  });
  for (let i = 0; i < 64; i++) pristine[i].copy(batch, bo[i]);
  const gbit = (b: number) => ((b * 8) / 1e9).toFixed(1);
  console.log(`gsoSplit    ${SEGS} x ${MSS} B: ${(split.perOp / 1000).toFixed(2)} us per super-packet, ${gbit(split.bytesPerSec)} Gbit/s payload`);
  console.log(`Buffer.copy ${payload} B:     ${(copy.perOp / 1000).toFixed(2)} us, ${gbit(copy.bytesPerSec)} Gbit/s`);
  console.log(
    `tcpCoalesce 64 x ${MSS} B (incl. copy to out): ${(coalesce.perOp / 1000).toFixed(2)} us per batch, ${gbit(coalesce.bytesPerSec)} Gbit/s payload`,
  );
}

main();
