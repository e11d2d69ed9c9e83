// Copy-on-write holder for the node's LPM table.
//
// Every change builds a complete new LpmTable and publishes it with one reference assignment.
// JavaScript runs a batch to completion on one thread, so a packet loop that reads
// `routes.snapshot()` once per batch (or calls `routes.lookup`) sees one whole table, never a
// half-applied update; a snapshot taken before an update keeps answering from the old routes.

import { type LpmEntry, LpmTable } from './lpm';

/** The read side of an LpmTable; a published snapshot is never mutated. */
export interface LpmSnapshot<T> {
  readonly size: number;
  lookup(addr: number): T | undefined;
  get(addr: number, len: number): T | undefined;
  entries(): Array<LpmEntry<T>>;
  clone(): LpmTable<T>;
}

export class RouteTable<T> {
  private table: LpmTable<T>;
  private swaps: number;

  constructor(initial?: Iterable<LpmEntry<T>>) {
    this.table = initial === undefined ? new LpmTable<T>() : build(initial);
    this.swaps = 0;
  }

  lookup(addr: number): T | undefined {
    return this.table.lookup(addr);
  }

  /** The current table, for callers that want one consistent view across many lookups. */
  snapshot(): LpmSnapshot<T> {
    return this.table;
  }

  get size(): number {
    return this.table.size;
  }

  /** Increments on every swap. */
  get version(): number {
    return this.swaps;
  }

  entries(): Array<LpmEntry<T>> {
    return this.table.entries();
  }

  /** Replaces every route. If iterating `entries` or an insert throws, nothing is published. */
  replaceAll(entries: Iterable<LpmEntry<T>>): void {
    const next = build(entries);
    this.table = next;
    this.swaps++;
  }

  /** Applies `mutate` to a private copy and publishes it; if `mutate` throws, nothing changes. */
  update(mutate: (draft: LpmTable<T>) => void): void {
    const draft = this.table.clone();
    mutate(draft);
    this.table = draft;
    this.swaps++;
  }
}

function build<T>(entries: Iterable<LpmEntry<T>>): LpmTable<T> {
  const t = new LpmTable<T>();
  for (const e of entries) t.insert(e.addr, e.len, e.value);
  return t;
}
