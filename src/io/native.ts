// Loads weft's N-API addon (native/weft.cc) and types its exports.
//
// The addon moves batches of packets between a kernel fd and a caller-owned slab; it decides
// nothing. IPv4 addresses cross the boundary as uint32 in host order (a.b.c.d is
// ((a << 24) | (b << 16) | (c << 8) | d) >>> 0), ports as plain numbers.

import * as fs from 'node:fs';
import * as path from 'node:path';

/** Readiness watcher returned by `pollStart`: a uv_poll_t on Node's own event loop. */
export interface PollHandle {
  /** Resumes watching after `stop()` (or after libuv stopped the handle on an fd error). */
  start(): void;
  /** Stops watching; the handle stays open and can be restarted. */
  stop(): void;
  /** Stops watching and frees the handle; safe to call more than once. */
  close(): void;
}

export interface NativeAddon {
  /**
   * Opens /dev/net/tun non-blocking and attaches it to interface `name` (IFF_TUN | IFF_NO_PI,
   * plus IFF_MULTI_QUEUE when asked). Returns the name the kernel assigned ("" or "tun%d" let
   * the kernel choose). With vnetHdr: IFF_VNET_HDR, a 10-byte virtio-net header, and
   * TUNSETOFFLOAD probed with CSUM|TSO4|TSO6|USO4|USO6, then CSUM|TSO4|TSO6, then 0; `offloads`
   * is the set granted (TUN_F bits, see TUN_OFFLOAD), 0 without vnetHdr. Such an fd must be
   * read with tunReadVnet and written with tunWrite(vnet = true). Attaching a queue whose
   * vnetHdr differs from the device's (its other queues') throws EINVAL.
   */
  tunOpen(name: string, multiQueue: boolean, vnetHdr?: boolean): { fd: number; name: string; offloads: number };
  /**
   * Non-blocking AF_INET datagram socket bound to bindAddr:port (port 0 = ephemeral), with
   * SO_RCVBUF/SO_SNDBUF set to the given sizes (forced past the sysctl caps when root; 0 keeps
   * the kernel default). gro: UDP_GRO on, so the socket must be read with recvBatch's GRO mode.
   */
  udpOpen(bindAddr: number, port: number, rcvbuf: number, sndbuf: number, gro?: boolean, dfClear?: boolean): number;
  /** socket(AF_INET, SOCK_RAW, protocol), non-blocking; IP_HDRINCL when asked; bound to bindAddr when non-zero. */
  rawOpen(protocol: number, hdrincl: boolean, bindAddr: number, rcvbuf: number, sndbuf: number): number;
  /** The local port a socket is bound to. */
  localPort(fd: number): number;
  /**
   * readv() until EAGAIN or maxCount packets: packet i lands at i*slotSize + headroom, at most
   * slotSize - headroom bytes; offs[i]/lens[i] describe it, lens[i] = -1 for a packet that did
   * not fit. Returns the count. Throws only if the first read fails.
   */
  readPackets(fd: number, buf: Uint8Array, slotSize: number, headroom: number, maxCount: number, offs: Int32Array, lens: Int32Array): number;
  /**
   * write() each packet buf[offs[i], offs[i] + lens[i]) for i < count; lens[i] <= 0 is skipped,
   * EAGAIN ends the batch, a packet the kernel refuses is dropped. Returns packets written.
   */
  writePackets(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number): number;
  /**
   * recvmmsg into slots as readPackets does, also filling source address/port. A datagram that
   * did not fit its slot (MSG_TRUNC) gets lens[i] = -1.
   *
   * GRO mode (stage, state, counters given; for a socket opened with gro): datagrams are
   * received whole into 64 KiB regions of `stage` (at least one; as many per recvmmsg as both
   * stage and state hold) and each UDP_GRO train is cut back into its datagrams, one per slot,
   * each with the sender's address and port. What does not fit the slots stays in stage and
   * comes first on the next call: state (Int32Array of groStateLength(regions), zero-filled at
   * first, one per socket with its stage) records it and is validated before use. counters:
   * UDP_COUNTER.
   *
   * tunnelHeader (bytes of tunnel headers before the inner IP packet: 22 for VXLAN, 0 for
   * flannel's udp backend; -1/absent for none): a datagram that is one inner IPv4/IPv6 packet
   * longer than the GRO size is a tunnel super-datagram (a kernel VXLAN peer's TSO skb that a
   * veth carried unsegmented; the kernel hands those to sockets whole, with or without
   * UDP_GRO, and for inner TCP without a segment size) and is cut like a TUN super-packet, each
   * datagram repeating the tunnel headers. Segments: the kernel's gso_size when it gave one,
   * else inner packets of tunnelMtu bytes (the overlay MTU, e.g. 1450), else what fits a slot.
   */
  recvBatch(
    fd: number,
    buf: Uint8Array,
    slotSize: number,
    headroom: number,
    maxCount: number,
    offs: Int32Array,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    stage?: Uint8Array,
    state?: Int32Array,
    counters?: Float64Array,
    tunnelHeader?: number,
    tunnelMtu?: number,
  ): number;
  /**
   * sendmmsg packet i to addrs[i]:ports[i] for i < count; lens[i] <= 0 is skipped, a datagram
   * the kernel refuses is dropped, EAGAIN/ENOBUFS end the batch. Returns datagrams sent.
   *
   * gso (counters required: UDP_COUNTER): consecutive entries to one addr:port of equal length
   * (the last of a run may be shorter; at most 64 and 65507 bytes per run) become one message
   * with UDP_SEGMENT. A run the kernel refuses with EMSGSIZE/EINVAL (segment over the path
   * MTU, too many segments) is resent as plain datagrams; EIO/EOPNOTSUPP (no checksum offload
   * on the route) also sets counters[GSO_DISABLED] = 1, after which this socket sends plain
   * datagrams. Each such resend counts GSO_FALLBACKS. Still returns datagrams (entries) sent.
   */
  sendBatch(
    fd: number,
    buf: Uint8Array,
    offs: Int32Array,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    count: number,
    gso?: boolean,
    counters?: Float64Array,
  ): number;
  /**
   * readPackets for a TUN opened with vnetHdr: each read (virtio-net header + packet) lands in
   * rbuf (>= VNET_READ_MAX bytes) and is split into ordinary packets in the slots (GSO
   * super-packets into their segments, partial checksums finished); a read the kernel's header
   * makes no sense of is refused and counted, not passed on. A super-packet larger than the
   * free slots continues at slot 0 of the next call: rbuf and state (Int32Array(2), zero at
   * first) belong to one fd and must be passed again unchanged. counters: TUN_COUNTER.
   */
  tunReadVnet(
    fd: number,
    rbuf: Uint8Array,
    buf: Uint8Array,
    slotSize: number,
    headroom: number,
    maxCount: number,
    offs: Int32Array,
    lens: Int32Array,
    state: Int32Array,
    counters: Float64Array,
  ): number;
  /**
   * writePackets that first finishes TCP/UDP checksums holding only the pseudo-header sum (in
   * place). vnet (the fd was opened with vnetHdr): runs of TCP/IPv4 segments of one flow in
   * the batch go out as one GSO super-packet (headers of the first patched in place), the rest
   * behind an all-zero header; one writev each. Returns batch entries written (a super-packet
   * counts all its segments). counters: TUN_COUNTER.
   */
  tunWrite(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number, vnet: boolean, counters: Float64Array): number;
  /**
   * tunReadVnet's split on a buffer (virtio-net header + packet, srcLen bytes) into slots from
   * slot 0. Returns packets produced; when the slots ran out, state holds where to resume and
   * the next call must pass the same src and srcLen.
   */
  gsoSplit(
    src: Uint8Array,
    srcLen: number,
    buf: Uint8Array,
    slotSize: number,
    headroom: number,
    maxCount: number,
    offs: Int32Array,
    lens: Int32Array,
    state: Int32Array,
    counters: Float64Array,
  ): number;
  /**
   * tunWrite without the fd: copies each write unit as writev would hand it to the kernel
   * (virtio-net header first when vnet) to out, unit i at outOffs[i], outLens[i] bytes; returns
   * the unit count. out must hold the batch plus 10 bytes per packet. buf is patched as
   * tunWrite patches it.
   */
  tcpCoalesce(
    buf: Uint8Array,
    offs: Int32Array,
    lens: Int32Array,
    count: number,
    vnet: boolean,
    out: Uint8Array,
    outOffs: Int32Array,
    outLens: Int32Array,
    counters: Float64Array,
  ): number;
  /**
   * Calls onReadable each time fd is readable. If libuv reports an fd error it stops the handle
   * and calls onReadable once with that error. An exception thrown by onReadable becomes an
   * uncaught exception of the process.
   */
  pollStart(fd: number, onReadable: (err?: Error) => void): PollHandle;
  close(fd: number): void;
  /** sched_yield(2): lets a task woken on this CPU run before the caller polls again. */
  schedYield(): void;
}

/** TUN_F_* bits of tunOpen's `offloads` (include/uapi/linux/if_tun.h). */
export const TUN_OFFLOAD = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, USO4: 0x20, USO6: 0x40 } as const;

/** Names of the TUN_F bits set in `offloads`, for logs. */
export function offloadNames(offloads: number): string[] {
  return Object.entries(TUN_OFFLOAD)
    .filter(([, bit]) => (offloads & bit) !== 0)
    .map(([name]) => name);
}

/** Bytes tunReadVnet's rbuf must hold: a virtio-net header and a 64 KiB packet. */
export const VNET_READ_MAX = 10 + 65535;

/**
 * Reasons a TUN read is refused (native/offload.h, enum Refuse); counter TUN_COUNTER.REFUSED +
 * reason counts each.
 */
export const TUN_REFUSE = [
  'none',
  'short', // fewer bytes than a virtio-net header and a packet
  'flags', // unknown flags, or GSO without NEEDS_CSUM
  'gsoType', // unknown gso_type, UFO, or the ECN bit (never negotiated)
  'hdrLen', // hdr_len beyond the packet (or non-zero without GSO)
  'gsoSize', // gso_size 0 with GSO, non-zero without, or nothing to segment
  'csumOffset', // csum_start/csum_offset not at the parsed L4 checksum
  'ipHeader', // version/IHL/total length inconsistent with the read, or a fragment
  'protocol', // IP protocol does not match gso_type, or not TCP/UDP with NEEDS_CSUM
  'l4Header', // TCP data offset or UDP length inconsistent
  'slotTooSmall', // one segment larger than a slot
  'state', // continuation state inconsistent (discarded)
] as const;

/**
 * Index layout of the Float64Array of cumulative TUN offload counters (native/offload.h, enum
 * Counter), updated by tunReadVnet, tunWrite, gsoSplit and tcpCoalesce.
 */
export const TUN_COUNTER = {
  /** GSO super-packets read. */
  SUPER_READ: 0,
  /** Packets produced from them. */
  SEGMENTS_OUT: 1,
  /** Non-GSO reads whose NEEDS_CSUM checksum was finished. */
  CSUM_COMPLETED: 2,
  /** Every read (super-packet, plain or refused). */
  PACKETS_READ: 3,
  /** REFUSED + i counts reads refused for reason TUN_REFUSE[i] (16 slots reserved). */
  REFUSED: 4,
  /** Super-packets written (each a run of merged segments). */
  COALESCED_WRITES: 20,
  /** Segments that went into them. */
  SEGMENTS_MERGED: 21,
  /** Packets written as they were. */
  PLAIN_WRITES: 22,
  /** TCP/UDP packets whose pseudo-header-only checksum (CHECKSUM_PARTIAL seed) was finished. */
  PARTIAL_FIXED: 23,
  /** Batch entries the kernel refused on write (dropped). */
  WRITE_ERRORS: 24,
  /** Reads longer than VNET_READ_MAX (lens -1). */
  TRUNCATED_READS: 25,
  /** Length of the array. */
  COUNT: 26,
} as const;

/** Index layout of a UDP socket's Float64Array of GSO/GRO counters (native/weft.cc, UdpCounter). */
export const UDP_COUNTER = {
  /** Messages sent with UDP_SEGMENT. */
  GSO_MESSAGES: 0,
  /** Datagrams carried by them. */
  GSO_SEGMENTS: 1,
  /** 1 once the kernel refused GSO for good (EIO or EOPNOTSUPP); the socket then sends plain datagrams. */
  GSO_DISABLED: 2,
  /** GSO runs refused and resent as plain datagrams. */
  GSO_FALLBACKS: 3,
  /** Coalesced datagrams received (with a UDP_GRO control message). */
  GRO_DATAGRAMS: 4,
  /** Datagrams cut out of them. */
  GRO_SEGMENTS: 5,
  /** Datagrams or segments larger than a slot (lens -1). */
  GRO_TRUNCATED: 6,
  /** GRO continuation states found inconsistent and discarded. */
  GRO_STATE_REFUSED: 7,
  /** Tunnel super-datagrams received (recvBatch's tunnelHeader). */
  TUNNEL_SUPERS: 8,
  /** Datagrams cut from them. */
  TUNNEL_SEGMENTS: 9,
  /** Super-datagrams whose inner packet could not be cut (lens -1). */
  TUNNEL_REFUSED: 10,
  /** Length of the array. */
  COUNT: 11,
} as const;

/** Bytes per GRO stage region (recvBatch's GRO mode) and state elements for n regions. */
export const GRO_REGION = 65536;
export function groStateLength(regions: number): number {
  return 3 + 5 * regions;
}

const ADDON_RELATIVE = path.join('build', 'Release', 'weft_native.node');

/**
 * The package root is the nearest directory above `from` that holds binding.gyp: the same walk
 * works from src/io (tests run the TypeScript sources) and from dist/src/io (compiled).
 */
export function findPackageRoot(from: string = __dirname): string {
  let dir = path.resolve(from);
  for (;;) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`weft package root (with binding.gyp) not found above ${from}`);
    dir = parent;
  }
}

let loaded: NativeAddon | undefined;

/** Loads the addon once and returns its exports object (property access on it is a plain load). */
export function loadNative(): NativeAddon {
  if (loaded) return loaded;
  const file = path.join(findPackageRoot(), ADDON_RELATIVE);
  if (!fs.existsSync(file)) {
    throw new Error(`weft native addon not built: run npm install (missing ${file})`);
  }
  loaded = require(file) as NativeAddon;
  return loaded;
}

const METHODS = [
  'tunOpen',
  'udpOpen',
  'rawOpen',
  'localPort',
  'readPackets',
  'writePackets',
  'recvBatch',
  'sendBatch',
  'tunReadVnet',
  'tunWrite',
  'gsoSplit',
  'tcpCoalesce',
  'pollStart',
  'close',
  'schedYield',
] as const satisfies readonly (keyof NativeAddon)[];
// Every method of NativeAddon must be listed above, or `native.x` is undefined for the one left
// out: this fails to compile when one is missing.
const METHODS_COMPLETE: Exclude<keyof NativeAddon, (typeof METHODS)[number]> extends never ? true : never = true;
void METHODS_COMPLETE;

function lazyNative(): NativeAddon {
  const target = {} as Record<string, unknown>;
  // Each method starts as a trampoline that loads the addon and then overwrites every slot with
  // the real function; the object keeps one shape throughout, so after the first call `native.x`
  // is as cheap as a property load on the addon itself. Importing this module never touches the
  // addon, so code that only parses packets runs without a native build.
  const resolve = (): NativeAddon => {
    const addon = loadNative();
    for (const m of METHODS) target[m] = addon[m];
    return addon;
  };
  for (const m of METHODS) {
    target[m] = (...args: unknown[]) => (resolve()[m] as (...a: unknown[]) => unknown)(...args);
  }
  return target as unknown as NativeAddon;
}

/** The addon, loaded on first use; throws "weft native addon not built: run npm install" if absent. */
export const native: NativeAddon = lazyNative();
