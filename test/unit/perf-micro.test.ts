// The micro-benchmarks' own behaviour, not their figures: with budgets of a few milliseconds
// they must produce a result for everything asked, finite rates, one table row each, and refuse
// to time implementations that do not agree. Nothing here compares speeds (a loaded CI machine
// would make any such assertion flaky, and the benchmarks exist to measure, not to assert).
import { describe, expect, it } from 'vitest';
import type { Backend } from '../../src/datapath/backend';
import { LpmTable } from '../../src/route/lpm';
import { BACKENDS, ENCAP_COLUMNS, formatEncap, measureEncap, parseEncapArgs, type Timing as EncapTiming } from '../../perf/micro-encap';
import { LPM_COLUMNS, formatLpm, measureLpm, parseLpmArgs, parseMs, parseSizes, type Timing as LpmTiming } from '../../perf/micro-lpm';

const TINY = { ms: 5, warmupMs: 2 };

function expectSane(t: LpmTiming | EncapTiming): void {
  expect(t.batch).toBeGreaterThan(0);
  expect(t.samples).toBeGreaterThan(0);
  for (const x of [t.perSec, t.nsPerOp, t.p99Ns]) {
    expect(Number.isFinite(x)).toBe(true);
    expect(x).toBeGreaterThan(0);
  }
  expect(Number.isFinite(t.rmePct)).toBe(true);
  expect(t.rmePct).toBeGreaterThanOrEqual(0);
  // The two per-op figures are the same mean seen two ways.
  expect(t.perSec * t.nsPerOp).toBeCloseTo(1e9, -3);
}

/** The rows of a Markdown table, as arrays of trimmed cells (header first, separator dropped). */
function rows(md: string): string[][] {
  return md
    .split('\n')
    .filter((l) => l.startsWith('|') && !/^\|[-:|]+\|$/.test(l))
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
}

describe('micro-lpm', () => {
  it('measures LpmTable and the linear scan at every size asked', async () => {
    const rs = await measureLpm([10, 300], TINY);
    expect(rs.map((r) => r.prefixes)).toEqual([10, 300]);
    for (const r of rs) {
      expectSane(r.lpm);
      expectSane(r.linear);
      expect(r.speedup).toBeCloseTo(r.lpm.perSec / r.linear.perSec);
    }
    // Batches shrink with the table for the linear scan only.
    expect(rs[0].lpm.batch).toBe(rs[1].lpm.batch);
    expect(rs[1].linear.batch).toBeLessThan(rs[0].linear.batch);

    const table = rows(formatLpm(rs));
    expect(table[0]).toEqual(LPM_COLUMNS);
    expect(table.slice(1).map((c) => c[0])).toEqual(['10', '300']);
    for (const cells of table.slice(1)) {
      expect(cells).toHaveLength(LPM_COLUMNS.length);
      expect(cells[1]).toMatch(/^[\d.]+( [kM])? ±[\d.]+%$/);
      expect(cells[3]).toMatch(/^[\d.]+( [kM])? ±[\d.]+%$/);
      expect(cells[5]).toMatch(/^[\d.,]+×$/);
    }
  });

  it('refuses to time a table that disagrees with the linear scan', async () => {
    // The wrong route for every address that has one: the next prefix's index.
    class OffByOne extends LpmTable<number> {
      override lookup(addr: number): number | undefined {
        const v = super.lookup(addr);
        return v === undefined ? undefined : v + 1;
      }
    }
    await expect(measureLpm([10], { ...TINY, makeTable: () => new OffByOne() })).rejects.toThrow(/disagree on \d+ with 10 prefixes/);
    // A table that never finds anything disagrees on the half of the queries that hit a prefix.
    const empty = { insert: (): void => {}, lookup: (): number | undefined => undefined };
    await expect(measureLpm([50], { ...TINY, makeTable: () => empty })).rejects.toThrow(/LpmTable and the linear scan disagree/);
  });

  it('parses its flags, with defaults, and says what is wrong with bad ones', () => {
    expect(parseLpmArgs([])).toEqual({ sizes: [10, 1000, 100000], ms: 1000, out: 'perf/results' });
    expect(parseLpmArgs(['--sizes', ' 10, 20 ', '--ms', '200', '--out', '/tmp/x'])).toEqual({ sizes: [10, 20], ms: 200, out: '/tmp/x' });
    expect(() => parseLpmArgs(['--sizes', '10,abc'])).toThrow('--sizes "10,abc": "abc" is not an integer in 1..1000000');
    expect(() => parseLpmArgs(['--sizes', '10,,20'])).toThrow('"" is not an integer');
    expect(() => parseLpmArgs(['--sizes', ''])).toThrow(/--sizes "": "" is not an integer/);
    expect(() => parseLpmArgs(['--sizes', '0'])).toThrow('"0" is not an integer in 1..1000000');
    expect(() => parseLpmArgs(['--sizes', '2000000'])).toThrow(/not an integer in 1\.\.1000000/);
    expect(() => parseLpmArgs(['--sizes', '1.5'])).toThrow(/"1\.5" is not an integer/);
    expect(() => parseLpmArgs(['--sizes=-5'])).toThrow(/"-5" is not an integer/);
    expect(() => parseLpmArgs(['--ms', 'fast'])).toThrow('--ms "fast": not a number of milliseconds');
    expect(() => parseLpmArgs(['--ms', '0'])).toThrow(/--ms "0"/);
    expect(() => parseLpmArgs(['--lookups', '5'])).toThrow(/Unknown option '--lookups'/);
    expect(parseSizes('7', 1, 10)).toEqual([7]);
    expect(parseMs('0.5')).toBe(0.5);
  });
});

describe('micro-encap', () => {
  it('measures the copy and every backend at every size asked', async () => {
    const rs = await measureEncap([64, 200], TINY);
    expect(rs.map((r) => `${r.backend}@${r.size}`)).toEqual([64, 200].flatMap((s) => ['copy (reference)', ...BACKENDS].map((b) => `${b}@${s}`)));
    for (const r of rs) {
      expectSane(r.encap);
      if (r.backend === 'copy (reference)') expect(r.decap).toBeNull();
      else expectSane(r.decap!);
    }

    const table = rows(formatEncap(rs));
    expect(table[0]).toEqual(ENCAP_COLUMNS);
    expect(table).toHaveLength(1 + 2 * (1 + BACKENDS.length));
    for (const cells of table.slice(1)) {
      expect(cells).toHaveLength(ENCAP_COLUMNS.length);
      expect(cells[2]).toMatch(/^[\d.,]+ ±[\d.]+%$/);
      if (cells[0] === 'copy (reference)') expect(cells.slice(4)).toEqual(['–', '–']);
      else expect(cells[4]).toMatch(/^[\d.,]+ ±[\d.]+%$/);
    }
  });

  /** The receiving backend, with decap's answer moved by `shift` bytes (for one backend only). */
  const shifted =
    (only: string, shift: number) =>
    (type: string, b: Backend): Backend => {
      if (type !== only) return b;
      return Object.create(b, {
        decap: { value: (buf: Buffer, off: number, len: number, peer: never, replies: never): number => b.decap(buf, off, len, peer, replies) + shift },
      }) as Backend;
    };

  it('refuses to time a backend whose decap does not give back what encap sent', async () => {
    // vxlan returning the offset of the inner Ethernet header's last bytes instead of the IPv4 packet.
    await expect(measureEncap([64], { ...TINY, receiver: shifted('vxlan', -2) })).rejects.toThrow(
      'vxlan decap of its own encap does not give back the 64-byte packet (packet 0: inner at 20, 66 bytes)',
    );
    // ipip skipping one byte too many: the length is wrong too.
    await expect(measureEncap([64], { ...TINY, receiver: shifted('ipip', 1) })).rejects.toThrow(/ipip decap of its own encap does not give back/);
    // A decap that drops everything.
    const refuse = (type: string, b: Backend): Backend => (type === 'udp' ? (Object.create(b, { decap: { value: () => -3 } }) as Backend) : b);
    await expect(measureEncap([64], { ...TINY, receiver: refuse })).rejects.toThrow('udp decap refused its own 64-byte packet: drop 3');
  });

  it('parses its flags, with defaults, and says what is wrong with bad ones', () => {
    expect(parseEncapArgs([])).toEqual({ sizes: [64, 512, 1400], ms: 500, out: 'perf/results' });
    expect(parseEncapArgs(['--sizes', '100', '--ms', '50'])).toEqual({ sizes: [100], ms: 50, out: 'perf/results' });
    expect(() => parseEncapArgs(['--sizes', '20'])).toThrow('--sizes "20": "20" is not an integer in 28..9000');
    expect(() => parseEncapArgs(['--sizes', '64;512'])).toThrow('"64;512" is not an integer');
    expect(() => parseEncapArgs(['--ms=-1'])).toThrow(/--ms "-1"/);
    expect(() => parseEncapArgs(['--sizes'])).toThrow(/argument missing/);
  });
});
