import type { PacketList } from './packet-list';

/**
 * The pods' side of a node's datapath: read a batch, write a batch, wait for packets. TunDevice
 * (tun.ts) is the one the daemon uses; MemoryTun (memory-tun.ts) is its in-memory double for
 * weft trace/replay/wire and tests, kept beside it as wireguard-go keeps tun/tuntest by tun.
 */
export interface PacketDevice {
  /** Fill `list` from slot 0 with packets; returns the count (0: nothing waiting). */
  read(list: PacketList): number;
  /** Write list's first `count` packets; returns how many were written. */
  write(list: PacketList): number;
  onReadable(cb: (err?: Error) => void): void;
}
