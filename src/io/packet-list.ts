// A batch of packets as descriptors over one preallocated slab, the unit every native call
// moves (the shape of wireguard-go's tun.Device Read(bufs, sizes, offset)).
//
// Slot i of the slab starts at i * slotSize; received packets are written at slot + headroom,
// leaving `headroom` bytes in front for encapsulation headers to be prepended in place. The
// descriptor arrays are typed arrays handed to C++ as they are, so a batch costs no allocation.

export interface PacketListOptions {
  /** Number of descriptors (and of slab slots, for a list that owns its slab). */
  capacity: number;
  /** Bytes per slot, headroom included. */
  slotSize: number;
  /** Bytes reserved in front of each received packet. */
  headroom: number;
}

function checkInt(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`PacketList ${name} must be an integer in [${min}, ${max}]: ${v}`);
  }
}

export class PacketList {
  readonly buf: Buffer;
  readonly capacity: number;
  readonly slotSize: number;
  readonly headroom: number;
  /** Byte offset of packet i in buf. */
  readonly offs: Int32Array;
  /** Length of packet i; -1 marks a packet the kernel truncated (count it as a drop), 0 or less is skipped on send. */
  readonly lens: Int32Array;
  /** Peer IPv4 address of packet i, host order (source on receive, destination on send). */
  readonly addrs: Uint32Array;
  /** Peer UDP port of packet i. */
  readonly ports: Uint16Array;
  /**
   * Send-side lane of packet i: which socket of a pool sends it (vxlan's flow hash, see
   * UdpSocketPool). 0 unless a backend sets it; ignored by single sockets.
   */
  readonly lanes: Uint16Array;
  /** Number of valid descriptors. */
  count: number;

  /**
   * @param shared for `PacketList.view` only: the slab to describe instead of allocating one.
   */
  constructor(opts: PacketListOptions, shared?: Buffer) {
    checkInt('slotSize', opts.slotSize, 1, 0x7fffffff);
    checkInt('headroom', opts.headroom, 0, opts.slotSize - 1);
    checkInt('capacity', opts.capacity, 1, 0x7fffffff);
    this.capacity = opts.capacity;
    this.slotSize = opts.slotSize;
    this.headroom = opts.headroom;
    if (shared) {
      this.buf = shared;
    } else {
      const bytes = opts.capacity * opts.slotSize;
      if (bytes > 0x7fffffff) throw new RangeError(`PacketList slab of ${bytes} bytes is too large`);
      // allocUnsafeSlow: a slab of its own rather than a slice of Buffer's shared pool, so it is
      // never shared with unrelated small Buffers and lives exactly as long as this list.
      this.buf = Buffer.allocUnsafeSlow(bytes);
    }
    this.offs = new Int32Array(opts.capacity);
    this.lens = new Int32Array(opts.capacity);
    this.addrs = new Uint32Array(opts.capacity);
    this.ports = new Uint16Array(opts.capacity);
    this.lanes = new Uint16Array(opts.capacity);
    this.count = 0;
  }

  /**
   * A second, empty descriptor list over the same slab, e.g. a transmit list whose entries
   * point into the packets a receive list just filled. Its capacity defaults to the source's.
   */
  static view(of: PacketList, capacity: number = of.capacity): PacketList {
    return new PacketList({ capacity, slotSize: of.slotSize, headroom: of.headroom }, of.buf);
  }

  /** Slab slots a receive can fill: capacity, bounded by the slab a view shares. */
  get slots(): number {
    return Math.min(this.capacity, Math.floor(this.buf.length / this.slotSize));
  }

  clear(): void {
    this.count = 0;
  }

  /** Appends a descriptor; false when the list is full. Offsets are checked by the native call. */
  push(off: number, len: number, addr = 0, port = 0, lane = 0): boolean {
    const i = this.count;
    if (i >= this.capacity) return false;
    this.offs[i] = off;
    this.lens[i] = len;
    this.addrs[i] = addr;
    this.ports[i] = port;
    this.lanes[i] = lane;
    this.count = i + 1;
    return true;
  }
}
