import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { maskOf, parseCidr, parseIpv4 } from '../../src/route/address';
import { LpmTable } from '../../src/route/lpm';
import { RouteTable } from '../../src/route/route-table';
import { seededRandom as mulberry32 } from '../../src/util/seeded-random';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const prefixLen = fc.oneof(fc.constant(0), fc.constant(32), fc.nat(32), fc.constantFrom(8, 9, 16, 17, 20, 21, 24, 25, 28, 29));

/** The obvious implementation: a list, scanned for the longest covering prefix. */
class NaiveLpm<T> {
  readonly items = new Map<string, { addr: number; len: number; value: T }>();
  insert(addr: number, len: number, value: T): void {
    addr = (addr & maskOf(len)) >>> 0;
    this.items.set(`${addr}/${len}`, { addr, len, value });
  }
  delete(addr: number, len: number): boolean {
    return this.items.delete(`${(addr & maskOf(len)) >>> 0}/${len}`);
  }
  lookup(addr: number): T | undefined {
    let best: { len: number; value: T } | undefined;
    for (const e of this.items.values()) {
      if (((addr ^ e.addr) & maskOf(e.len)) === 0 && (best === undefined || e.len > best.len)) best = e;
    }
    return best?.value;
  }
  sorted(): Array<{ addr: number; len: number; value: T }> {
    return [...this.items.values()].sort((a, b) => a.addr - b.addr || a.len - b.len);
  }
}

/** Independent fast reference for big tables: one Map per length, probed longest first. */
function byLengthLookup(maps: Array<Map<number, number>>, addr: number): number | undefined {
  for (let len = 32; len >= 0; len--) {
    const v = maps[len].get((addr & maskOf(len)) >>> 0);
    if (v !== undefined) return v;
  }
  return undefined;
}

function cidr(s: string): [number, number] {
  const c = parseCidr(s);
  return [c.addr, c.len];
}

describe('LpmTable', () => {
  it('returns undefined when empty, and the default route /0 for everything', () => {
    const t = new LpmTable<string>();
    expect(t.lookup(0)).toBeUndefined();
    expect(t.size).toBe(0);
    t.insert(0, 0, 'default');
    for (const a of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff]) expect(t.lookup(a)).toBe('default');
    expect(t.get(0, 0)).toBe('default');
    expect(t.delete(0, 0)).toBe(true);
    expect(t.lookup(0xffffffff)).toBeUndefined();
  });

  it('matches /32 host routes exactly', () => {
    const t = new LpmTable<string>();
    t.insert(parseIpv4('10.244.1.5'), 32, 'host');
    t.insert(...cidr('10.244.1.0/24'), 'net');
    expect(t.lookup(parseIpv4('10.244.1.5'))).toBe('host');
    expect(t.lookup(parseIpv4('10.244.1.4'))).toBe('net');
    expect(t.lookup(parseIpv4('10.244.1.6'))).toBe('net');
    expect(t.lookup(0xffffffff)).toBeUndefined();
    t.insert(0xffffffff, 32, 'bcast');
    expect(t.lookup(0xffffffff)).toBe('bcast');
    expect(t.lookup(0xfffffffe)).toBeUndefined();
  });

  it('prefers the longest prefix across nodes and within one node', () => {
    const t = new LpmTable<string>();
    t.insert(...cidr('10.0.0.0/8'), '/8');
    t.insert(...cidr('10.244.0.0/16'), '/16');
    t.insert(...cidr('10.244.3.0/24'), '/24');
    // Three lengths that share the second-level node.
    t.insert(...cidr('10.128.0.0/9'), '/9');
    t.insert(...cidr('10.160.0.0/12'), '/12');
    t.insert(...cidr('10.160.0.0/14'), '/14');
    expect(t.lookup(parseIpv4('10.244.3.9'))).toBe('/24');
    expect(t.lookup(parseIpv4('10.244.4.9'))).toBe('/16');
    expect(t.lookup(parseIpv4('10.1.2.3'))).toBe('/8');
    expect(t.lookup(parseIpv4('10.161.0.1'))).toBe('/14');
    expect(t.lookup(parseIpv4('10.165.0.1'))).toBe('/12');
    expect(t.lookup(parseIpv4('10.200.0.1'))).toBe('/9');
    expect(t.lookup(parseIpv4('11.0.0.1'))).toBeUndefined();
  });

  it('delete uncovers the next shorter prefix, in the same node and above it', () => {
    const t = new LpmTable<string>();
    t.insert(...cidr('10.0.0.0/8'), '/8');
    t.insert(...cidr('10.128.0.0/9'), '/9');
    t.insert(...cidr('10.160.0.0/12'), '/12');
    t.insert(...cidr('10.160.0.0/14'), '/14');
    t.insert(...cidr('10.160.1.0/24'), '/24');
    expect(t.delete(...cidr('10.160.0.0/12'))).toBe(true);
    expect(t.lookup(parseIpv4('10.160.0.1'))).toBe('/14');
    expect(t.lookup(parseIpv4('10.165.0.1'))).toBe('/9');
    expect(t.lookup(parseIpv4('10.160.1.1'))).toBe('/24');
    expect(t.delete(...cidr('10.128.0.0/9'))).toBe(true);
    expect(t.lookup(parseIpv4('10.165.0.1'))).toBe('/8');
    expect(t.delete(...cidr('10.160.0.0/14'))).toBe(true);
    expect(t.lookup(parseIpv4('10.160.0.1'))).toBe('/8');
    expect(t.lookup(parseIpv4('10.160.1.1'))).toBe('/24');
    expect(t.delete(...cidr('10.160.1.0/24'))).toBe(true);
    expect(t.lookup(parseIpv4('10.160.1.1'))).toBe('/8');
    expect(t.delete(...cidr('10.160.1.0/24'))).toBe(false);
    expect(t.size).toBe(1);
  });

  it('insert replaces the value of the same prefix; host bits are ignored', () => {
    const t = new LpmTable<number>();
    t.insert(...cidr('10.244.1.0/24'), 1);
    t.insert(parseIpv4('10.244.1.77'), 24, 2);
    expect(t.size).toBe(1);
    expect(t.lookup(parseIpv4('10.244.1.1'))).toBe(2);
    expect(t.get(parseIpv4('10.244.1.200'), 24)).toBe(2);
    expect(t.get(parseIpv4('10.244.1.0'), 23)).toBeUndefined();
    expect(t.entries()).toEqual([{ addr: parseIpv4('10.244.1.0'), len: 24, value: 2 }]);
  });

  it('rejects invalid lengths', () => {
    const t = new LpmTable<number>();
    for (const len of [-1, 33, 1.5, NaN]) {
      expect(() => t.insert(0, len, 1)).toThrow(RangeError);
      expect(t.delete(0, len)).toBe(false);
      expect(t.get(0, len)).toBeUndefined();
    }
  });

  it('agrees with a naive linear scan under random inserts, deletes and re-inserts (fast-check)', () => {
    type Op = { kind: 'insert' | 'delete' | 'deleteExisting'; seed: number; noise: number; bits: number; len: number; pick: number };
    const op: fc.Arbitrary<Op> = fc.record({
      kind: fc.constantFrom('insert', 'insert', 'insert', 'delete', 'deleteExisting', 'deleteExisting'),
      seed: fc.nat(),
      noise: u32,
      bits: fc.nat(32),
      len: prefixLen,
      pick: fc.nat(),
    });
    fc.assert(
      fc.property(fc.array(u32, { minLength: 1, maxLength: 4 }), fc.array(op, { minLength: 1, maxLength: 80 }), (seeds, ops) => {
        const t = new LpmTable<number>();
        const ref = new NaiveLpm<number>();
        const probes = new Set<number>([0, 0xffffffff]);
        for (const s of seeds) for (const d of [-1, 0, 1]) probes.add((s + d) >>> 0);
        ops.forEach((o, i) => {
          // Addresses near a few seeds, so prefixes nest and collide.
          const lowMask = o.bits === 32 ? 0xffffffff : (1 << o.bits) - 1;
          let addr = (seeds[o.seed % seeds.length] ^ (o.noise & lowMask)) >>> 0;
          let len = o.len;
          if (o.kind === 'deleteExisting') {
            const all = ref.sorted();
            if (all.length > 0) ({ addr, len } = all[o.pick % all.length]);
          }
          if (o.kind === 'insert') {
            t.insert(addr, len, i);
            ref.insert(addr, len, i);
            const first = (addr & maskOf(len)) >>> 0;
            const last = (first | ~maskOf(len)) >>> 0;
            for (const p of [first, last, (first - 1) >>> 0, (last + 1) >>> 0, addr]) probes.add(p);
          } else {
            expect(t.delete(addr, len)).toBe(ref.delete(addr, len));
          }
          expect(t.size).toBe(ref.items.size);
          for (const p of probes) expect(t.lookup(p)).toBe(ref.lookup(p));
        });
        expect(t.entries()).toEqual(ref.sorted());
        for (const e of ref.items.values()) expect(t.get(e.addr, e.len)).toBe(e.value);
      }),
      { numRuns: 400 },
    );
  });

  it('clone is a deep copy', () => {
    const a = new LpmTable<string>();
    a.insert(...cidr('10.244.0.0/16'), 'a');
    a.insert(...cidr('10.244.1.0/24'), 'a1');
    const b = a.clone();
    b.insert(...cidr('10.244.2.0/24'), 'b2');
    b.delete(...cidr('10.244.1.0/24'));
    b.insert(...cidr('10.244.0.0/16'), 'b');
    expect(a.lookup(parseIpv4('10.244.1.1'))).toBe('a1');
    expect(a.lookup(parseIpv4('10.244.2.1'))).toBe('a');
    expect(a.size).toBe(2);
    expect(b.lookup(parseIpv4('10.244.1.1'))).toBe('b');
    expect(b.lookup(parseIpv4('10.244.2.1'))).toBe('b2');
    a.insert(...cidr('10.244.3.0/24'), 'a3');
    expect(b.lookup(parseIpv4('10.244.3.1'))).toBe('b');
  });

  it('returns emptied nodes to the pool: delete-all then re-insert does not grow it', () => {
    const rnd = mulberry32(7);
    const t = new LpmTable<number>();
    const prefixes: Array<[number, number]> = [];
    for (let i = 0; i < 5000; i++) {
      const len = Math.floor(rnd() * 33);
      prefixes.push([(Math.floor(rnd() * 2 ** 32) & maskOf(len)) >>> 0, len]);
    }
    prefixes.forEach(([a, l], i) => t.insert(a, l, i));
    const bytes = t.byteLength;
    const used = (t as unknown as { used: number }).used;
    for (const [a, l] of prefixes) t.delete(a, l);
    expect(t.size).toBe(0);
    for (let i = 0; i < 1000; i++) expect(t.lookup(Math.floor(rnd() * 2 ** 32))).toBeUndefined();
    const kids = (t as unknown as { kids: Int32Array }).kids;
    expect(kids.subarray(2, 2 + 256).every((k) => k === 0)).toBe(true);
    // Re-insert in reverse order: every node comes from the free lists.
    for (let i = prefixes.length - 1; i >= 0; i--) t.insert(prefixes[i][0], prefixes[i][1], i);
    expect((t as unknown as { used: number }).used).toBe(used);
    expect(t.byteLength).toBe(bytes);
  });

  // Pool bytes used are ~15 MB, ~21 MB and ~48 MB; capacity doubles, so allow for that slack.
  for (const [name, genLen, maxMiB] of [
    ['random lengths', (r: () => number) => Math.floor(r() * 33), 24],
    ['all /24', () => 24, 40],
    ['all /32', () => 32, 80],
  ] as const) {
    it(`stays small and correct with 100,000 random prefixes (${name})`, () => {
      const rnd = mulberry32(name.length);
      const t = new LpmTable<number>();
      const maps: Array<Map<number, number>> = Array.from({ length: 33 }, () => new Map());
      for (let i = 0; i < 100_000; i++) {
        const len = genLen(rnd);
        const addr = (Math.floor(rnd() * 2 ** 32) & maskOf(len)) >>> 0;
        t.insert(addr, len, i);
        maps[len].set(addr, i);
      }
      expect(t.byteLength).toBeLessThan(maxMiB * 2 ** 20);
      const live = [...maps].reduce((n, m) => n + m.size, 0);
      expect(t.size).toBe(live);
      for (let i = 0; i < 20_000; i++) {
        const a = Math.floor(rnd() * 2 ** 32);
        expect(t.lookup(a)).toBe(byLengthLookup(maps, a));
      }
    });
  }
});

describe('RouteTable', () => {
  it('swaps whole tables; an old snapshot keeps answering from the old routes', () => {
    const r = new RouteTable<string>();
    expect(r.version).toBe(0);
    r.replaceAll([
      { addr: parseIpv4('10.244.1.0'), len: 24, value: 'node1' },
      { addr: parseIpv4('10.244.2.0'), len: 24, value: 'node2' },
    ]);
    expect(r.version).toBe(1);
    expect(r.size).toBe(2);
    const old = r.snapshot();
    const oldEntries = old.entries();

    r.update((t) => {
      t.delete(...cidr('10.244.1.0/24'));
      t.insert(...cidr('10.244.2.0/24'), 'node2b');
      t.insert(...cidr('10.244.3.0/24'), 'node3');
    });
    expect(r.version).toBe(2);
    expect(r.lookup(parseIpv4('10.244.1.9'))).toBeUndefined();
    expect(r.lookup(parseIpv4('10.244.2.9'))).toBe('node2b');
    expect(r.lookup(parseIpv4('10.244.3.9'))).toBe('node3');

    expect(old.lookup(parseIpv4('10.244.1.9'))).toBe('node1');
    expect(old.lookup(parseIpv4('10.244.2.9'))).toBe('node2');
    expect(old.lookup(parseIpv4('10.244.3.9'))).toBeUndefined();
    expect(old.entries()).toEqual(oldEntries);
    expect(old.size).toBe(2);

    r.replaceAll([{ addr: 0, len: 0, value: 'gw' }]);
    expect(r.version).toBe(3);
    expect(r.entries()).toEqual([{ addr: 0, len: 0, value: 'gw' }]);
    expect(old.lookup(parseIpv4('10.244.2.9'))).toBe('node2');
  });

  it('publishes nothing when update or replaceAll throws', () => {
    const r = new RouteTable<string>([{ addr: parseIpv4('10.244.1.0'), len: 24, value: 'n1' }]);
    const before = r.snapshot();
    expect(() =>
      r.update((t) => {
        t.delete(...cidr('10.244.1.0/24'));
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(() => r.replaceAll([{ addr: 0, len: 40, value: 'bad' }])).toThrow(RangeError);
    expect(r.version).toBe(0);
    expect(r.snapshot()).toBe(before);
    expect(r.lookup(parseIpv4('10.244.1.1'))).toBe('n1');
  });

  it('a batch that captured the snapshot sees one table even if an update lands mid-batch', () => {
    const r = new RouteTable<number>([{ addr: 0, len: 0, value: 1 }]);
    const snap = r.snapshot();
    const seen: Array<number | undefined> = [];
    for (let i = 0; i < 10; i++) {
      if (i === 5) r.replaceAll([{ addr: 0, len: 0, value: 2 }]);
      seen.push(snap.lookup(i));
    }
    expect(seen.every((v) => v === 1)).toBe(true);
    expect(r.lookup(0)).toBe(2);
  });
});
