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
   * the kernel choose).
   */
  tunOpen(name: string, multiQueue: boolean): { fd: number; name: string };
  /**
   * Non-blocking AF_INET datagram socket bound to bindAddr:port (port 0 = ephemeral), with
   * SO_RCVBUF/SO_SNDBUF set to the given sizes (forced past the sysctl caps when root; 0 keeps
   * the kernel default).
   */
  udpOpen(bindAddr: number, port: number, rcvbuf: number, sndbuf: number): number;
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
  ): number;
  /**
   * sendmmsg packet i to addrs[i]:ports[i] for i < count; lens[i] <= 0 is skipped, a datagram
   * the kernel refuses is dropped, EAGAIN/ENOBUFS end the batch. Returns datagrams sent.
   */
  sendBatch(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, count: number): number;
  /**
   * Calls onReadable each time fd is readable. If libuv reports an fd error it stops the handle
   * and calls onReadable once with that error. An exception thrown by onReadable becomes an
   * uncaught exception of the process.
   */
  pollStart(fd: number, onReadable: (err?: Error) => void): PollHandle;
  close(fd: number): void;
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
  'pollStart',
  'close',
] as const satisfies readonly (keyof NativeAddon)[];

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
