// weft monitor's side of the datapath: which live packets a watcher wants (filters), a copy of
// the few that fit its budget, and the events made of them, written off the hot path.
//
// Costs. Nobody attached: Pipeline.tap is null, so the datapath pays one null test per batch
// and the pipeline one per drop (tap.ts). Somebody attached: per packet of a batch, a few
// integer compares against each watcher's filter; a packet that matches and fits the watcher's
// rate (a token bucket, --rate events a second) is copied once into a preallocated ring, shared
// by every watcher it matched. Everything else — decoding, explaining, JSON, the socket write —
// runs from setImmediate, after the batch has been forwarded. A watcher over its rate, a full
// ring or a watcher that does not read (its socket's write buffer past MAX_PENDING_BYTES) means
// events skipped and counted, never a slower datapath; each watcher is told how many it missed,
// once a second, in a `skipped` record.

import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HEADER, ipv4Dst, ipv4HeaderLength, ipv4Protocol, ipv4Src, ipv4Ttl } from '../packet/ipv4';
import type { PacketList } from '../io/packet-list';
import { cidrContains, formatCidr, formatIpv4, parseCidr, parseIpv4, type Cidr } from '../route/address';
import type { RouteTable } from '../route/route-table';
import type { Backend } from './backend';
import type { Peer } from './peer';
import type { PacketTap } from './tap';
import { Drop, DROP_NAMES } from './stats';

export const MONITOR_TYPES = ['drop', 'trace', 'all'] as const;
export type MonitorType = (typeof MONITOR_TYPES)[number];

/** Default and largest --rate: events a second one watcher is sent. */
export const DEFAULT_MONITOR_RATE = 100;
export const MAX_MONITOR_RATE = 10_000;
/**
 * Traces explained a second, all watchers together: explaining runs the packet through an
 * offline node (tens of µs each), on the daemon's one thread, so this bounds the CPU watching
 * can take from forwarding whatever the watchers' --rate.
 */
export const TRACE_BUDGET = 200;
/** Watchers at once (one bit each in a ring entry's mask). */
export const MAX_MONITORS = 16;
/** Packets copied and not yet written: 256 slots of 2 KiB, allocated once. */
export const RING_SLOTS = 256;
const RING_SLOT = 2048;
/** A watcher whose socket holds this much unwritten is not reading: its events are skipped. */
export const MAX_PENDING_BYTES = 256 * 1024;
/** How often a watcher hears how many events it missed. */
export const SKIPPED_REPORT_MS = 1000;

/** What a watcher asks for, as the command line and the socket carry it (strings, unparsed). */
export interface MonitorRequest {
  type?: string;
  src?: string;
  dst?: string;
  proto?: string;
  peer?: string;
  rate?: number | string;
}

/** A parsed request: what the hot path compares packets against. */
export interface MonitorFilter {
  drops: boolean;
  traces: boolean;
  src: Cidr | null;
  dst: Cidr | null;
  /** IP protocol number, or -1 for any. */
  proto: number;
  /** Underlay address of the peer a packet came from or goes to, or 0 for any. */
  peer: number;
  /** Events a second. */
  rate: number;
}

const PROTO_NAMES: Record<string, number> = { icmp: IPPROTO_ICMP, tcp: IPPROTO_TCP, udp: IPPROTO_UDP };

function addrOrCidr(flag: string, s: string): Cidr {
  try {
    return s.includes('/') ? parseCidr(s) : { addr: parseIpv4(s), len: 32 };
  } catch (e) {
    throw new Error(`--${flag}: ${JSON.stringify(s)} is not an IPv4 address or CIDR (${(e as Error).message})`, { cause: e });
  }
}

/** The request checked and parsed; throws one line naming the flag that is wrong. */
export function parseMonitorRequest(r: MonitorRequest): MonitorFilter {
  const type = r.type ?? 'drop';
  if (!(MONITOR_TYPES as readonly string[]).includes(type)) throw new Error(`--type: ${JSON.stringify(type)} is not one of ${MONITOR_TYPES.join(', ')}`);
  let proto = -1;
  if (r.proto !== undefined) {
    const p = r.proto.toLowerCase();
    if (p in PROTO_NAMES) proto = PROTO_NAMES[p];
    else if (/^\d{1,3}$/.test(p) && Number(p) <= 255) proto = Number(p);
    else throw new Error(`--proto: ${JSON.stringify(r.proto)} is not icmp, tcp, udp or a protocol number 0..255`);
  }
  let peer = 0;
  if (r.peer !== undefined) {
    try {
      peer = parseIpv4(r.peer);
    } catch (e) {
      throw new Error(`--peer: ${JSON.stringify(r.peer)} is not an IPv4 address (a node's public IP)`, { cause: e });
    }
  }
  const rate = r.rate === undefined ? DEFAULT_MONITOR_RATE : Number(r.rate);
  if (!Number.isInteger(rate) || rate < 1 || rate > MAX_MONITOR_RATE)
    throw new Error(`--rate: ${JSON.stringify(r.rate)} is not a whole number of events a second in 1..${MAX_MONITOR_RATE}`);
  return {
    drops: type !== 'trace',
    traces: type !== 'drop',
    src: r.src === undefined ? null : addrOrCidr('src', r.src),
    dst: r.dst === undefined ? null : addrOrCidr('dst', r.dst),
    proto,
    peer,
    rate,
  };
}

/** The filter in words, for the hello record. */
export function describeFilter(f: MonitorFilter): string {
  const what = f.drops && f.traces ? 'drops and traces' : f.drops ? 'drops' : 'traces';
  const cond: string[] = [];
  if (f.src) cond.push(`from ${formatCidr(f.src)}`);
  if (f.dst) cond.push(`to ${formatCidr(f.dst)}`);
  if (f.proto >= 0) cond.push(`protocol ${f.proto}`);
  if (f.peer) cond.push(`peer ${formatIpv4(f.peer)}`);
  return `${what}${cond.length ? ` of packets ${cond.join(', ')}` : ''}, at most ${f.rate} a second`;
}

/** Whether the filter asks anything of the packet itself (a `lost` count has no packet to ask). */
function needsPacket(f: MonitorFilter): boolean {
  return f.src !== null || f.dst !== null || f.proto >= 0 || f.peer !== 0;
}

function isIpv4(buf: Uint8Array, off: number, len: number): boolean {
  return len >= IPV4_MIN_HEADER && buf[off] >> 4 === 4 && (buf[off] & 0x0f) >= 5;
}

/** The packet in a line: addresses, protocol and ports or ICMP type, length, TTL. */
export interface PacketSummary {
  src: string;
  dst: string;
  proto: number;
  /** icmp, tcp, udp, or the number. */
  protoName: string;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  /** Bytes of the packet as weft had it (the IPv4 packet; on ingress before decap, the whole datagram). */
  length: number;
  ttl: number;
}

export function summarize(buf: Uint8Array, off: number, len: number): PacketSummary | undefined {
  if (!isIpv4(buf, off, len)) return undefined;
  const proto = ipv4Protocol(buf, off);
  const hl = ipv4HeaderLength(buf, off);
  const s: PacketSummary = {
    src: formatIpv4(ipv4Src(buf, off)),
    dst: formatIpv4(ipv4Dst(buf, off)),
    proto,
    protoName: proto === IPPROTO_ICMP ? 'icmp' : proto === IPPROTO_TCP ? 'tcp' : proto === IPPROTO_UDP ? 'udp' : String(proto),
    length: len,
    ttl: ipv4Ttl(buf, off),
  };
  // Only a first fragment carries the transport header.
  const first = ((buf[off + 6] & 0x1f) | buf[off + 7]) === 0;
  const l4 = off + hl;
  if (first && (proto === IPPROTO_TCP || proto === IPPROTO_UDP) && len >= hl + 4) {
    s.sport = (buf[l4] << 8) | buf[l4 + 1];
    s.dport = (buf[l4 + 2] << 8) | buf[l4 + 3];
  } else if (first && proto === IPPROTO_ICMP && len >= hl + 2) {
    s.icmpType = buf[l4];
    s.icmpCode = buf[l4 + 1];
  }
  return s;
}

/** One record on the monitor socket, a JSON object a line. */
export type MonitorEvent =
  | {
      type: 'drop' | 'trace';
      /** ISO time the packet was seen. */
      time: string;
      dir: 'egress' | 'ingress';
      /** drop: DROP_NAMES' name. */
      reason?: string;
      /** Underlay address of the peer it came from or is routed to, when known. */
      peer?: string;
      /** Ingress: who sent the datagram (address:port), lease or not. */
      from?: string;
      /** The pod's packet; absent when the bytes hold no IPv4 packet to read. */
      packet?: PacketSummary;
      /** Bytes weft had (and, when longer than a ring slot, copied only in part: truncated). */
      bytes: number;
      truncated?: boolean;
      /** lost: how many packets the batch lost, none of them identified. */
      count?: number;
      /** trace: the decisions, as `weft trace` prints them (without the bytes). */
      decisions?: string[];
    }
  | { type: 'skipped'; count: number; rateLimited: number; ringFull: number; notRead: number; sinceMs: number }
  | {
      type: 'hello';
      /** The node's public IP, backend, lease, Network and tunnel MTU. */
      node: string;
      backend: string;
      lease: string;
      network: string;
      tunnelMtu: number;
      /** What the filter asks for, in words. */
      watching: string;
    }
  | { type: 'error'; message: string };

/** Where a watcher's records go: a socket, or a test's double. */
export interface MonitorSink {
  write(line: string): boolean;
  readonly writableLength: number;
}

/** How a copied live packet is explained (the daemon builds it from its state: src/datapath/explain.ts). */
export type Explainer = (ingress: boolean, pkt: Buffer, from: number, fromPort: number) => string[];

export interface MonitorTapOptions {
  /** The node's backend: where the inner packet sits in a datagram it receives (Backend.innerOffset). */
  backend: Pick<Backend, 'innerOffset'>;
  /** The live route table: which peer an egress packet goes to, for --peer. */
  routes: RouteTable<Peer>;
  explain?: Explainer;
  /** Monotonic milliseconds (tests pass their own clock). */
  now?: () => number;
  /** Runs the drain after the batch (default setImmediate; tests drain by hand). */
  schedule?: (fn: () => void) => void;
  /** Attach and detach the tap (the daemon: pipeline.tap = tap / null). */
  attach(tap: PacketTap | null): void;
}

export class MonitorWatcher {
  tokens: number;
  lastRefill: number;
  rateLimited = 0;
  ringFull = 0;
  notRead = 0;
  lastReport: number;
  sent = 0;
  closed = false;
  constructor(
    readonly filter: MonitorFilter,
    readonly sink: MonitorSink,
    readonly bit: number,
    now: number,
  ) {
    this.tokens = filter.rate;
    this.lastRefill = now;
    this.lastReport = now;
  }
  get skipped(): number {
    return this.rateLimited + this.ringFull + this.notRead;
  }
}

const KIND_DROP = 1;
const KIND_TRACE = 2;
const KIND_LOST = 3;

/** The tap the daemon hangs on its pipeline while anyone watches. */
export class MonitorTap implements PacketTap {
  private readonly watchers: (MonitorWatcher | null)[] = new Array<MonitorWatcher | null>(MAX_MONITORS).fill(null);
  private active = 0;
  /** Whether any watcher has a --peer filter (then egress packets need a route lookup). */
  private peerFiltered = false;
  // The ring: slot i of `ring` holds a copy, the typed arrays what is known about it.
  private readonly ring = Buffer.allocUnsafeSlow(RING_SLOTS * RING_SLOT);
  private readonly kind = new Uint8Array(RING_SLOTS);
  private readonly reason = new Uint8Array(RING_SLOTS);
  private readonly ingress = new Uint8Array(RING_SLOTS);
  private readonly lens = new Int32Array(RING_SLOTS);
  private readonly origLens = new Int32Array(RING_SLOTS);
  /** Offset of the pod's packet in the slot, -1 if none. */
  private readonly inner = new Int32Array(RING_SLOTS);
  private readonly peerIp = new Uint32Array(RING_SLOTS);
  private readonly fromIp = new Uint32Array(RING_SLOTS);
  private readonly fromPort = new Uint16Array(RING_SLOTS);
  private readonly counts = new Uint32Array(RING_SLOTS);
  private readonly masks = new Uint32Array(RING_SLOTS);
  private readonly times = new Float64Array(RING_SLOTS);
  private head = 0;
  private used = 0;
  private traceTokens = TRACE_BUDGET;
  private traceRefill = 0;
  private drainScheduled = false;
  private reportTimer: NodeJS.Timeout | null = null;
  /** The last ingress batch, to find who sent a datagram the pipeline drops. */
  private lastRx: PacketList | null = null;
  private readonly now: () => number;
  private readonly schedule: (fn: () => void) => void;
  private readonly drainFn = () => this.drain();

  constructor(private readonly opts: MonitorTapOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.schedule = opts.schedule ?? ((fn) => void setImmediate(fn));
  }

  get watcherCount(): number {
    return this.active;
  }

  /** A new watcher, or an Error saying why not (too many). Attaches the tap with the first. */
  add(filter: MonitorFilter, sink: MonitorSink): MonitorWatcher | Error {
    const bit = this.watchers.indexOf(null);
    if (bit < 0) return new Error(`${MAX_MONITORS} monitors are attached already; detach one first`);
    const w = new MonitorWatcher(filter, sink, bit, this.now());
    this.watchers[bit] = w;
    this.active++;
    this.recompute();
    if (this.active === 1) {
      this.opts.attach(this);
      this.reportTimer = setInterval(() => this.report(), SKIPPED_REPORT_MS);
      this.reportTimer.unref();
    }
    return w;
  }

  remove(w: MonitorWatcher): void {
    if (w.closed || this.watchers[w.bit] !== w) return;
    w.closed = true;
    this.watchers[w.bit] = null;
    this.active--;
    this.recompute();
    if (this.active === 0) {
      this.opts.attach(null);
      if (this.reportTimer) clearInterval(this.reportTimer);
      this.reportTimer = null;
      this.lastRx = null;
    }
  }

  /** Detach everyone (the daemon stopping). */
  close(): void {
    for (const w of this.watchers) if (w) this.remove(w);
  }

  private recompute(): void {
    this.peerFiltered = this.watchers.some((w) => w !== null && w.filter.peer !== 0);
  }

  /** Token bucket refill for every watcher, once per batch or drop. */
  private refill(now: number): void {
    const dt = now - this.traceRefill;
    if (dt > 0) {
      this.traceTokens = Math.min(TRACE_BUDGET, this.traceTokens + (dt * TRACE_BUDGET) / 1000);
      this.traceRefill = now;
    }
    for (const w of this.watchers) {
      if (w === null) continue;
      const dt = now - w.lastRefill;
      if (dt <= 0) continue;
      w.tokens = Math.min(w.filter.rate, w.tokens + (dt * w.filter.rate) / 1000);
      w.lastRefill = now;
    }
  }

  /**
   * Which watchers take this packet: the mask of those it matches and whose bucket has a token
   * (taken); the others it matches count it as rate-limited.
   */
  private claim(kind: number, buf: Buffer, ip: number, peer: number): number {
    let mask = 0;
    const ws = this.watchers;
    for (let b = 0; b < MAX_MONITORS; b++) {
      const w = ws[b];
      if (w === null) continue;
      const f = w.filter;
      if (kind === KIND_TRACE ? !f.traces : !f.drops) continue;
      if (kind === KIND_LOST) {
        if (needsPacket(f)) continue;
      } else {
        if (f.peer !== 0 && f.peer !== peer) continue;
        if (f.src !== null || f.dst !== null || f.proto >= 0) {
          if (ip < 0) continue;
          if (f.proto >= 0 && buf[ip + 9] !== f.proto) continue;
          if (f.src !== null && !cidrContains(f.src, ipv4Src(buf, ip))) continue;
          if (f.dst !== null && !cidrContains(f.dst, ipv4Dst(buf, ip))) continue;
        }
      }
      if (w.tokens >= 1) {
        w.tokens -= 1;
        mask |= 1 << b;
      } else {
        w.rateLimited++;
      }
    }
    if (kind === KIND_TRACE && mask !== 0) {
      if (this.traceTokens >= 1) this.traceTokens -= 1;
      else {
        // Over the node's trace budget: skipped for everyone who wanted it, their tokens back.
        for (let b = 0; b < MAX_MONITORS; b++) {
          if (!(mask & (1 << b))) continue;
          ws[b]!.rateLimited++;
          ws[b]!.tokens += 1;
        }
        mask = 0;
      }
    }
    return mask;
  }

  /** Copy into the ring for the watchers in `mask`; a full ring counts against each of them. */
  private capture(
    mask: number,
    kind: number,
    reason: number,
    ingress: boolean,
    buf: Buffer | null,
    off: number,
    len: number,
    inner: number,
    peer: number,
    from: number,
    fromPort: number,
    count: number,
  ): void {
    if (this.used === RING_SLOTS) {
      for (let b = 0; b < MAX_MONITORS; b++) if (mask & (1 << b)) this.watchers[b]!.ringFull++;
      return;
    }
    const i = (this.head + this.used) % RING_SLOTS;
    this.used++;
    const n = buf === null ? 0 : Math.min(Math.max(len, 0), RING_SLOT);
    if (n > 0) buf!.copy(this.ring, i * RING_SLOT, off, off + n);
    this.kind[i] = kind;
    this.reason[i] = reason;
    this.ingress[i] = ingress ? 1 : 0;
    this.lens[i] = n;
    this.origLens[i] = Math.max(len, 0);
    this.inner[i] = inner >= 0 && inner - off < n ? inner - off : -1;
    this.peerIp[i] = peer;
    this.fromIp[i] = from;
    this.fromPort[i] = fromPort;
    this.counts[i] = count;
    this.masks[i] = mask;
    this.times[i] = Date.now();
    if (!this.drainScheduled) {
      this.drainScheduled = true;
      this.schedule(this.drainFn);
    }
  }

  batch(ingress: boolean, list: PacketList): void {
    if (ingress) this.lastRx = list;
    let wanted = false;
    for (const w of this.watchers) if (w !== null && w.filter.traces) wanted = true;
    if (!wanted) return;
    this.refill(this.now());
    const buf = list.buf;
    for (let i = 0; i < list.count; i++) {
      const len = list.lens[i];
      if (len <= 0) continue;
      const off = list.offs[i];
      let ip: number;
      let peer = 0;
      if (ingress) {
        ip = this.podPacketAt(buf, off, len);
        peer = list.addrs[i];
      } else {
        ip = isIpv4(buf, off, len) ? off : -1;
        if (this.peerFiltered && ip >= 0) peer = this.opts.routes.lookup(ipv4Dst(buf, ip))?.publicIp ?? 0;
      }
      const mask = this.claim(KIND_TRACE, buf, ip, peer);
      if (mask !== 0) this.capture(mask, KIND_TRACE, 0, ingress, buf, off, len, ip, peer, ingress ? list.addrs[i] : 0, ingress ? list.ports[i] : 0, 0);
    }
  }

  /**
   * Where the pod's IPv4 packet starts inside a received datagram, or -1 when there is none to
   * see (a vxlan ARP frame, a truncated header). Only for filtering and showing: the backend's
   * decap is what decides.
   */
  private podPacketAt(buf: Uint8Array, off: number, len: number): number {
    const at = this.opts.backend.innerOffset(buf, off, len);
    return at >= 0 && isIpv4(buf, at, len - (at - off)) ? at : -1;
  }

  drop(reason: number, ingress: boolean, buf: Buffer, off: number, len: number, peer: Peer | undefined): void {
    this.refill(this.now());
    let ip = off;
    let from = 0;
    let fromPort = 0;
    if (ingress) {
      // Before decap the pipeline hands over the whole datagram; after (validation of the
      // inner packet, its addresses), the inner packet.
      const decapped = reason <= Drop.BadChecksum || reason === Drop.SrcNotInPeerSubnet || reason === Drop.DstNotLocal;
      // The sender: the descriptor of the last ingress batch whose bytes hold these.
      const rx = this.lastRx;
      if (rx !== null && rx.buf === buf) {
        for (let i = 0; i < rx.count; i++) {
          const o = rx.offs[i];
          if (off >= o && off < o + Math.max(rx.lens[i], 1)) {
            from = rx.addrs[i];
            fromPort = rx.ports[i];
            break;
          }
        }
      }
      if (!decapped) ip = this.podPacketAt(buf, off, len);
    }
    if (ip >= 0 && !isIpv4(buf, ip, len - (ip - off))) ip = -1;
    const peerIp = peer?.publicIp ?? from;
    const mask = this.claim(KIND_DROP, buf, ip, peerIp);
    if (mask !== 0) this.capture(mask, KIND_DROP, reason, ingress, buf, off, len, ip, peer?.publicIp ?? 0, from, fromPort, 0);
  }

  lost(reason: number, ingress: boolean, count: number): void {
    this.refill(this.now());
    const mask = this.claim(KIND_LOST, this.ring, -1, 0);
    if (mask !== 0) this.capture(mask, KIND_LOST, reason, ingress, null, 0, 0, -1, 0, 0, 0, count);
  }

  /** Everything the ring holds, as records to the watchers that took it. Off the hot path. */
  drain(): void {
    this.drainScheduled = false;
    while (this.used > 0) {
      const i = this.head;
      this.head = (this.head + 1) % RING_SLOTS;
      this.used--;
      // Who can take it now: a watcher that is not reading costs a count, not an explanation.
      let mask = 0;
      const m = this.masks[i];
      for (let b = 0; b < MAX_MONITORS; b++) {
        if (!(m & (1 << b))) continue;
        const w = this.watchers[b];
        if (w === null || w.closed) continue;
        if (w.sink.writableLength > MAX_PENDING_BYTES) w.notRead++;
        else mask |= 1 << b;
      }
      if (mask === 0) continue;
      let line: string | undefined;
      try {
        line = JSON.stringify(this.event(i)) + '\n';
      } catch (e) {
        line = JSON.stringify({ type: 'error', message: `could not describe a packet: ${(e as Error).message}` }) + '\n';
      }
      for (let b = 0; b < MAX_MONITORS; b++) {
        if (!(mask & (1 << b))) continue;
        const w = this.watchers[b];
        if (w === null) continue;
        this.send(w, line, true);
      }
    }
  }

  /** Write unless the watcher is not reading (then count it); `counted`: an event, not a report. */
  private send(w: MonitorWatcher, line: string, counted: boolean): void {
    if (w.closed) return;
    if (w.sink.writableLength > MAX_PENDING_BYTES) {
      if (counted) w.notRead++;
      return;
    }
    try {
      w.sink.write(line);
      if (counted) w.sent++;
    } catch {
      // A socket that died between 'close' events: the server removes the watcher on 'close'.
    }
  }

  /** Once a second: tell each watcher what it missed since the last report. */
  report(): void {
    const now = this.now();
    for (const w of this.watchers) {
      if (w === null || w.skipped === 0) continue;
      if (w.sink.writableLength > MAX_PENDING_BYTES) continue; // still not reading: tell it later
      const rec: MonitorEvent = {
        type: 'skipped',
        count: w.skipped,
        rateLimited: w.rateLimited,
        ringFull: w.ringFull,
        notRead: w.notRead,
        sinceMs: Math.round(now - w.lastReport),
      };
      w.rateLimited = w.ringFull = w.notRead = 0;
      w.lastReport = now;
      this.send(w, JSON.stringify(rec) + '\n', false);
    }
  }

  private event(i: number): MonitorEvent {
    const kind = this.kind[i];
    const ingress = this.ingress[i] === 1;
    const base = i * RING_SLOT;
    const len = this.lens[i];
    const bytes = this.ring.subarray(base, base + len);
    const ev: MonitorEvent = {
      type: kind === KIND_TRACE ? 'trace' : 'drop',
      time: new Date(this.times[i]).toISOString(),
      dir: ingress ? 'ingress' : 'egress',
      bytes: this.origLens[i],
    };
    if (kind !== KIND_TRACE) ev.reason = DROP_NAMES[this.reason[i]] ?? String(this.reason[i]);
    if (kind === KIND_LOST) {
      ev.count = this.counts[i];
      return ev;
    }
    const inner = this.inner[i];
    if (inner >= 0) ev.packet = summarize(bytes, inner, len - inner);
    if (this.origLens[i] > len) ev.truncated = true;
    if (this.fromIp[i] !== 0) ev.from = `${formatIpv4(this.fromIp[i])}${this.fromPort[i] ? `:${this.fromPort[i]}` : ''}`;
    let peer = this.peerIp[i];
    if (kind === KIND_TRACE) {
      if (!ingress && peer === 0 && inner >= 0) peer = this.opts.routes.lookup(ipv4Dst(bytes, inner))?.publicIp ?? 0;
      const explain = this.opts.explain;
      if (ev.truncated) ev.decisions = [`(not explained: the packet is longer than the ${RING_SLOT} bytes copied)`];
      else if (explain) {
        try {
          // A copy: explaining runs it through a node whose pipeline rewrites it in place.
          // One line each: a long decision comes wrapped at 100 columns, as weft trace prints it.
          ev.decisions = explain(ingress, Buffer.from(bytes), this.fromIp[i], this.fromPort[i]).flatMap((l) => l.split('\n'));
        } catch (e) {
          ev.decisions = [`(not explained: ${(e as Error).message})`];
        }
      }
    }
    if (peer !== 0) ev.peer = formatIpv4(peer);
    return ev;
  }
}

/** One record as a line of text for people (what `weft monitor` prints without --json). */
export function formatMonitorEvent(ev: MonitorEvent): string {
  switch (ev.type) {
    case 'hello':
      return `weft monitor: attached to ${ev.node} (${ev.backend}, lease ${ev.lease}, Network ${ev.network}, tunnel MTU ${ev.tunnelMtu}); ${ev.watching}`;
    case 'error':
      return `weft monitor: ${ev.message}`;
    case 'skipped':
      return (
        `${clock(new Date().toISOString())} SKIPPED ${ev.count} event${ev.count === 1 ? '' : 's'} in ${(ev.sinceMs / 1000).toFixed(1)} s ` +
        `(${ev.rateLimited} over --rate, ${ev.ringFull} ring full, ${ev.notRead} not read in time)`
      );
    default: {
      const head = `${clock(ev.time)} ${ev.type === 'drop' ? 'DROP ' : 'TRACE'} ${ev.dir.padEnd(7)}`;
      const parts: string[] = [head];
      if (ev.reason) parts.push(ev.reason);
      if (ev.count !== undefined) parts.push(`${ev.count} packet${ev.count === 1 ? '' : 's'} (which ones is not known)`);
      else parts.push(ev.packet ? packetText(ev.packet) : `${ev.bytes} bytes, no IPv4 packet inside`);
      if (ev.peer) parts.push(`peer ${ev.peer}`);
      if (ev.from && ev.from.split(':')[0] !== ev.peer) parts.push(`from ${ev.from}`);
      if (ev.truncated) parts.push(`(${ev.bytes} bytes, copied in part)`);
      const line = parts.join(' ');
      return ev.decisions?.length ? `${line}\n${ev.decisions.map((d) => `    ${d}`).join('\n')}` : line;
    }
  }
}

const ICMP_TYPES: Record<number, string> = { 0: 'echo-reply', 3: 'unreachable', 8: 'echo-request', 11: 'time-exceeded' };

function packetText(p: PacketSummary): string {
  const ports = p.sport !== undefined;
  const addrs = ports ? `${p.src}:${p.sport} → ${p.dst}:${p.dport}` : `${p.src} → ${p.dst}`;
  const what = p.icmpType !== undefined ? `icmp ${ICMP_TYPES[p.icmpType] ?? `type ${p.icmpType}`}${p.icmpCode ? ` code ${p.icmpCode}` : ''}` : p.protoName;
  return `${addrs} ${what} ${p.length} bytes ttl ${p.ttl}`;
}

/** 15:04:05.123 from an ISO time. */
function clock(iso: string): string {
  return iso.slice(11, 23);
}
