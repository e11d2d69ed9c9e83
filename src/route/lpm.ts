// Longest-prefix-match table for IPv4: a multibit trie with controlled prefix expansion
// (Srinivasan & Varghese, "Fast Address Lookups Using Controlled Prefix Expansion", 1999).
//
// Structure
//   Six levels with strides 8, 8, 4, 4, 4, 4 (bits 0-7, 8-15, 16-19, 20-23, 24-27, 28-31), so a
//   lookup is at most six array steps and never allocates. A prefix of length L is stored in the
//   node of the level whose bit range holds bit L-1 (L = 0..8 in the root), expanded to the
//   2^(levelEnd - L) slots it covers there; a slot keeps the longest prefix of that node covering it.
//   A lookup walks down, remembering the last non-empty slot value, so a shorter prefix stored in
//   an upper level shows through wherever no longer one exists below (no leaf pushing; an insert
//   or delete touches one node and at most 256 slots).
//
//   All nodes live in two parallel Int32Array pools indexed by slot: `kids` (base of the child
//   node, 0 = none; the root sits at base HDR so no child has base 0) and `vals` (record index of
//   the longest prefix, -1 = none). Each node is preceded by HDR header words: kids[b-2] = number
//   of prefixes stored in the node, kids[b-1] = number of children, vals[b-2] = parent base,
//   vals[b-1] = parent slot, so that a node left empty by a delete is returned to a free list and
//   unlinked. Prefix records (length, value) live in side arrays; one Map per prefix length maps
//   the network address to its record for exact get/replace/delete and for finding what a
//   deleted prefix uncovers.
//
// Memory. A 256-slot node costs 2 KiB and a 16-slot node 144 bytes (slots plus header, both
// pools). Random long prefixes share almost no nodes below /16, so stride 8 all the way down
// would need ~115 MB for 100,000 random prefixes; with 4-bit strides below /16 the pools hold
// ~15 MB for 100,000 prefixes of random length, ~21 MB for 100,000 random /24s and ~48 MB for
// 100,000 random /32s (the worst case: each host route owns a chain of four 16-slot nodes).
// Capacity doubles as the pools grow, so up to twice that is allocated. Path compression would
// shrink the /32 case; an overlay's table (one /24 per node) does not need it.
//
// Delete: the slots of the deleted prefix that it still owns (no longer prefix below it in the
// node) all share the same next-shorter covering prefix within the node, found with at most
// `stride` exact-Map probes; those slots get that prefix, or -1 so the upper levels show through.

import { maskOf } from './address';

const LEVELS = 6;
const STRIDE = new Int32Array([8, 8, 4, 4, 4, 4]);
const START = new Int32Array([0, 8, 16, 20, 24, 28]);
const SHIFT = new Int32Array([24, 16, 12, 8, 4, 0]);
const MASK = new Int32Array([0xff, 0xff, 0xf, 0xf, 0xf, 0xf]);
const HDR = 2;
const ROOT = HDR;

const LEVEL_OF_LEN = new Int32Array(33);
for (let len = 0; len <= 32; len++) {
  let lvl = 0;
  while (len > START[lvl] + STRIDE[lvl]) lvl++;
  LEVEL_OF_LEN[len] = lvl;
}

function validLen(len: number): boolean {
  return Number.isInteger(len) && len >= 0 && len <= 32;
}

export interface LpmEntry<T> {
  addr: number;
  len: number;
  value: T;
}

export class LpmTable<T> {
  private kids: Int32Array;
  private vals: Int32Array;
  private used: number;
  // Free node bases, one list per stride (index: stride === 8 ? 0 : 1).
  private freeNodes: [number[], number[]];
  private recLen: Uint8Array;
  private recValue: Array<T | undefined>;
  private recFree: number[];
  private recTop: number;
  private exact: Array<Map<number, number>>;
  private count: number;

  constructor() {
    this.kids = new Int32Array(4096);
    this.vals = new Int32Array(4096);
    this.used = HDR + (1 << STRIDE[0]);
    this.vals.fill(-1, ROOT, this.used);
    this.freeNodes = [[], []];
    this.recLen = new Uint8Array(256);
    this.recValue = [];
    this.recFree = [];
    this.recTop = 0;
    this.exact = [];
    for (let i = 0; i <= 32; i++) this.exact.push(new Map());
    this.count = 0;
  }

  get size(): number {
    return this.count;
  }

  /** Bytes held by the trie's typed arrays (excludes the per-length Maps and the values). */
  get byteLength(): number {
    return this.kids.byteLength + this.vals.byteLength + this.recLen.byteLength;
  }

  /** Longest-prefix match. Allocation-free; at most LEVELS steps. */
  lookup(addr: number): T | undefined {
    const kids = this.kids;
    const vals = this.vals;
    let node = ROOT;
    let best = -1;
    for (let lvl = 0; lvl < LEVELS; lvl++) {
      const slot = node + ((addr >>> SHIFT[lvl]) & MASK[lvl]);
      const v = vals[slot];
      if (v >= 0) best = v;
      node = kids[slot];
      if (node === 0) break;
    }
    return best < 0 ? undefined : this.recValue[best];
  }

  /** Exact match on (network address, length); host bits of addr are ignored. */
  get(addr: number, len: number): T | undefined {
    if (!validLen(len)) return undefined;
    const rec = this.exact[len].get((addr & maskOf(len)) >>> 0);
    return rec === undefined ? undefined : this.recValue[rec];
  }

  /**
   * Adds the prefix, or replaces the value of the same prefix. Host bits of addr are cleared
   * (callers normally pass parseCidr results, which rejects them). Throws RangeError on a length
   * outside 0..32.
   */
  insert(addr: number, len: number, value: T): void {
    if (!validLen(len)) throw new RangeError(`invalid prefix length ${len}`);
    addr = (addr & maskOf(len)) >>> 0;
    const map = this.exact[len];
    const existing = map.get(addr);
    if (existing !== undefined) {
      this.recValue[existing] = value;
      return;
    }
    const rec = this.allocRec(len, value);
    map.set(addr, rec);
    this.count++;

    const target = LEVEL_OF_LEN[len];
    let node = ROOT;
    for (let lvl = 0; lvl < target; lvl++) {
      const slot = node + ((addr >>> SHIFT[lvl]) & MASK[lvl]);
      let child = this.kids[slot];
      if (child === 0) {
        child = this.allocNode(lvl + 1, node, slot);
        // allocNode may have replaced the pools; index them afresh.
        this.kids[slot] = child;
        this.kids[node - 1]++;
      }
      node = child;
    }
    const kids = this.kids;
    const vals = this.vals;
    const recLen = this.recLen;
    kids[node - 2]++;
    const first = node + ((addr >>> SHIFT[target]) & MASK[target]);
    const last = first + (1 << (START[target] + STRIDE[target] - len));
    for (let s = first; s < last; s++) {
      const cur = vals[s];
      if (cur < 0 || recLen[cur] < len) vals[s] = rec;
    }
  }

  /** Removes the exact prefix; longer and shorter prefixes are untouched. */
  delete(addr: number, len: number): boolean {
    if (!validLen(len)) return false;
    addr = (addr & maskOf(len)) >>> 0;
    const map = this.exact[len];
    const rec = map.get(addr);
    if (rec === undefined) return false;
    map.delete(addr);
    this.count--;

    const kids = this.kids;
    const vals = this.vals;
    const target = LEVEL_OF_LEN[len];
    let node = ROOT;
    for (let lvl = 0; lvl < target; lvl++) node = kids[node + ((addr >>> SHIFT[lvl]) & MASK[lvl])];

    let repl = -1;
    const minLen = target === 0 ? 0 : START[target] + 1;
    for (let l = len - 1; l >= minLen; l--) {
      const r = this.exact[l].get((addr & maskOf(l)) >>> 0);
      if (r !== undefined) {
        repl = r;
        break;
      }
    }
    const first = node + ((addr >>> SHIFT[target]) & MASK[target]);
    const last = first + (1 << (START[target] + STRIDE[target] - len));
    for (let s = first; s < last; s++) if (vals[s] === rec) vals[s] = repl;

    this.recValue[rec] = undefined;
    this.recFree.push(rec);
    kids[node - 2]--;

    // Unlink nodes that hold neither prefixes nor children, bottom up.
    let lvl = target;
    while (lvl > 0 && kids[node - 2] === 0 && kids[node - 1] === 0) {
      const parent = vals[node - 2];
      const parentSlot = vals[node - 1];
      this.freeNodes[STRIDE[lvl] === 8 ? 0 : 1].push(node);
      kids[parentSlot] = 0;
      kids[parent - 1]--;
      node = parent;
      lvl--;
    }
    return true;
  }

  /** All prefixes, ordered by address then length. */
  entries(): Array<LpmEntry<T>> {
    const out: Array<LpmEntry<T>> = [];
    for (let len = 0; len <= 32; len++) {
      for (const [addr, rec] of this.exact[len]) out.push({ addr, len, value: this.recValue[rec] as T });
    }
    out.sort((a, b) => a.addr - b.addr || a.len - b.len);
    return out;
  }

  /** Deep copy; the copy and the original share only the values themselves. */
  clone(): LpmTable<T> {
    // Through the constructor, not Object.create, so clones share the original's hidden class
    // and lookup call sites stay monomorphic.
    const c = new LpmTable<T>();
    c.kids = this.kids.slice();
    c.vals = this.vals.slice();
    c.used = this.used;
    c.freeNodes = [this.freeNodes[0].slice(), this.freeNodes[1].slice()];
    c.recLen = this.recLen.slice();
    c.recValue = this.recValue.slice();
    c.recFree = this.recFree.slice();
    c.recTop = this.recTop;
    c.exact = this.exact.map((m) => new Map(m));
    c.count = this.count;
    return c;
  }

  private allocRec(len: number, value: T): number {
    let rec = this.recFree.pop();
    if (rec === undefined) {
      rec = this.recTop++;
      if (rec >= this.recLen.length) {
        const grown = new Uint8Array(this.recLen.length * 2);
        grown.set(this.recLen);
        this.recLen = grown;
      }
    }
    this.recLen[rec] = len;
    this.recValue[rec] = value;
    return rec;
  }

  private allocNode(lvl: number, parent: number, parentSlot: number): number {
    const slots = 1 << STRIDE[lvl];
    let base = this.freeNodes[STRIDE[lvl] === 8 ? 0 : 1].pop();
    if (base === undefined) {
      base = this.used + HDR;
      this.used = base + slots;
      if (this.used > this.kids.length) {
        let cap = this.kids.length * 2;
        while (cap < this.used) cap *= 2;
        const k = new Int32Array(cap);
        k.set(this.kids);
        const v = new Int32Array(cap);
        v.set(this.vals);
        this.kids = k;
        this.vals = v;
      }
    }
    // A freed node's slots are already 0 / -1 (it held no prefix and no child); set them anyway.
    this.kids.fill(0, base, base + slots);
    this.vals.fill(-1, base, base + slots);
    this.kids[base - 2] = 0;
    this.kids[base - 1] = 0;
    this.vals[base - 2] = parent;
    this.vals[base - 1] = parentSlot;
    return base;
  }
}
