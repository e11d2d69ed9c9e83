// Summaries of repeated measurements: median with the min–max range, which is what the bench
// reports (a mean would let one disturbed run move the figure; the range shows it instead).
import type { Stat } from './types';

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('median of no samples');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * The q-quantile by the nearest-rank method (the smallest sample with at least q of the samples
 * at or below it), so p99 of 300 pings is an actual ping time, the 297th, not an interpolation.
 */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) throw new Error('quantile of no samples');
  if (!(q >= 0 && q <= 1)) throw new Error(`quantile ${q} outside 0..1`);
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(q * s.length) - 1)];
}

export function stat(samples: readonly number[]): Stat {
  if (samples.length === 0) throw new Error('no samples');
  for (const x of samples) if (!Number.isFinite(x)) throw new Error(`sample ${x} is not a finite number`);
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples: [...samples] };
}
