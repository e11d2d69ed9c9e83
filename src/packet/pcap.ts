// Classic libpcap capture files (what `tcpdump -w` writes): reading them for `weft replay` and
// `weft trace --pcap`, and writing what the pipeline produced so tshark and Wireshark can open it.
//
// The format (draft-ietf-opsawg-pcap, and libpcap's pcap-savefile(5)): a 24-byte file header,
// then records of a 16-byte header and the captured bytes. Every field is in the byte order of
// the machine that wrote the file, which the magic number tells; the magic also tells whether
// the second timestamp field counts microseconds (0xa1b2c3d4) or nanoseconds (0xa1b23c4d).
//
// Fields are read one byte at a time by index, never through DataView or Buffer.readUInt32*:
// every access is then a plain indexed read that a bounds check (or the fuzz test's fence)
// sees, and a hostile length can only end the walk, never read past the buffer.

/** Microsecond timestamps. */
export const PCAP_MAGIC_USEC = 0xa1b2c3d4;
/** Nanosecond timestamps (`tcpdump --time-stamp-precision=nano -w`). */
export const PCAP_MAGIC_NSEC = 0xa1b23c4d;
/** Alexey Kuznetsov's "modified" pcap (extra record fields); not read. */
const PCAP_MAGIC_KUZNETSOV = 0xa1b2cd34;
/** pcapng's Section Header Block type; its value reads the same in both byte orders. */
const PCAPNG_SHB = 0x0a0d0d0a;

export const PCAP_FILE_HEADER = 24;
export const PCAP_RECORD_HEADER = 16;

// Link-layer header types (the LINKTYPE_ registry at tcpdump.org, the values files carry).
/** Ethernet II, 14-byte header (802.1Q tags possible): `tcpdump -i eth0`. */
export const LINKTYPE_ETHERNET = 1;
/** Raw IP, version from the first nibble: `tcpdump -i weft0` (a TUN device has no link layer). */
export const LINKTYPE_RAW = 101;
/** Linux "cooked" v1, 16-byte header: `tcpdump -i any` before libpcap 1.10, or `-y LINUX_SLL`. */
export const LINKTYPE_LINUX_SLL = 113;
/** Raw IPv4 only. */
export const LINKTYPE_IPV4 = 228;
/** Linux "cooked" v2, 20-byte header with the interface index: `tcpdump -i any` with libpcap ≥ 1.10. */
export const LINKTYPE_LINUX_SLL2 = 276;

export const LINKTYPE_NAMES: Readonly<Record<number, string>> = {
  [LINKTYPE_ETHERNET]: 'Ethernet',
  [LINKTYPE_RAW]: 'raw IP',
  [LINKTYPE_LINUX_SLL]: 'Linux cooked v1',
  [LINKTYPE_IPV4]: 'raw IPv4',
  [LINKTYPE_LINUX_SLL2]: 'Linux cooked v2',
};

/**
 * libpcap's MAXIMUM_SNAPLEN: no capture it makes has records larger than this. A record that
 * claims more, in a file whose snaplen does not allow it, is read as corruption rather than
 * as a reason to allocate or skip gigabytes.
 */
export const PCAP_MAX_SNAPLEN = 262144;
/** Upper bound for files that declare a larger snaplen (some writers put 0xffffffff there). */
const PCAP_HARD_MAX_RECORD = 16 * 1024 * 1024;

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
// 802.1Q customer tag, 802.1ad service tag, and the pre-standard QinQ value some switches still use.
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_QINQ = 0x88a8;
const ETHERTYPE_QINQ_OLD = 0x9100;

/** Anything wrong with the file as a whole: one line, meant to be shown as it is. */
export class PcapError extends Error {
  override readonly name = 'PcapError';
}

export interface PcapHeader {
  /** Byte order the file was written in. */
  littleEndian: boolean;
  /** Second timestamp field counts nanoseconds rather than microseconds. */
  nanosecond: boolean;
  versionMajor: number;
  versionMinor: number;
  snaplen: number;
  /** LINKTYPE_ value: the low 16 bits of the header's link-type field. */
  linktype: number;
  /**
   * Bytes of frame check sequence at the end of every packet, when the file says so (the
   * link-type field's upper bits, draft-ietf-opsawg-pcap §4); 0 when it says nothing.
   */
  fcsBytes: number;
}

export interface PcapRecord {
  /** 1-based, as tcpdump -r and tshark number frames. */
  number: number;
  /** Byte offset of the record header in the file (for messages). */
  fileOffset: number;
  tsSec: number;
  /** Microseconds, or nanoseconds for a nanosecond file. */
  tsFrac: number;
  /** The captured bytes: a view into the file's buffer, not a copy. */
  data: Uint8Array;
  /** Length of the packet on the wire; larger than data.length when snaplen cut it. */
  originalLength: number;
}

function u16(b: Uint8Array, o: number, le: boolean): number {
  return le ? b[o] | (b[o + 1] << 8) : (b[o] << 8) | b[o + 1];
}

function u32(b: Uint8Array, o: number, le: boolean): number {
  return le ? (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0 : ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

const hex32 = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/** Reads and checks the 24-byte file header; throws PcapError naming what is wrong. */
export function readPcapHeader(buf: Uint8Array): PcapHeader {
  if (buf.length >= 4 && u32(buf, 0, false) === PCAPNG_SHB) {
    throw new PcapError('pcapng is not supported; convert with editcap -F pcap IN.pcapng OUT.pcap');
  }
  if (buf.length < PCAP_FILE_HEADER) {
    throw new PcapError(`not a pcap file: ${buf.length} bytes, shorter than the ${PCAP_FILE_HEADER}-byte file header`);
  }
  const be = u32(buf, 0, false);
  const le = u32(buf, 0, true);
  let littleEndian: boolean;
  let magic: number;
  if (le === PCAP_MAGIC_USEC || le === PCAP_MAGIC_NSEC || le === PCAP_MAGIC_KUZNETSOV) {
    littleEndian = true;
    magic = le;
  } else if (be === PCAP_MAGIC_USEC || be === PCAP_MAGIC_NSEC || be === PCAP_MAGIC_KUZNETSOV) {
    littleEndian = false;
    magic = be;
  } else {
    throw new PcapError(`not a pcap file: magic ${hex32(be)} (libpcap writes ${hex32(PCAP_MAGIC_USEC)} or ${hex32(PCAP_MAGIC_NSEC)}, in either byte order)`);
  }
  if (magic === PCAP_MAGIC_KUZNETSOV) {
    throw new PcapError('this is the "modified" (Kuznetsov) pcap format, which is not supported; convert with editcap -F pcap IN OUT.pcap');
  }
  const versionMajor = u16(buf, 4, littleEndian);
  const versionMinor = u16(buf, 6, littleEndian);
  // libpcap writes 2.4 and refuses major versions it does not know; so do we.
  if (versionMajor !== 2) throw new PcapError(`pcap version ${versionMajor}.${versionMinor} is not supported (libpcap writes 2.4)`);
  const snaplen = u32(buf, 16, littleEndian);
  const field = u32(buf, 20, littleEndian);
  const linktype = field & 0xffff;
  // The FCS length (in 16-bit words) sits in the top four bits, valid when bit 26 is set.
  const fcsBytes = field & 0x04000000 ? ((field >>> 28) & 0xf) * 2 : 0;
  if (LINKTYPE_NAMES[linktype] === undefined) {
    throw new PcapError(
      `link-layer type ${linktype} is not supported (weft reads ${Object.entries(LINKTYPE_NAMES)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}); ` + 'capture on the TUN device, an Ethernet interface, or -i any',
    );
  }
  return { littleEndian, nanosecond: magic === PCAP_MAGIC_NSEC, versionMajor, versionMinor, snaplen, linktype, fcsBytes };
}

/**
 * Walks the records of a pcap file held in memory. `next()` returns records until the end;
 * a file that ends inside a record, or a record whose length cannot be right, ends the walk
 * early with `stopped` saying why: never an exception, so every record before the damage is
 * still used (tshark does the same with a capture cut short by a killed tcpdump).
 */
export class PcapReader {
  readonly header: PcapHeader;
  /** Why the walk ended before the end of the file, or null. */
  stopped: string | null = null;
  /** True when the walk ended at a record that was cut short (the file ends inside it). */
  cutShort = false;
  private readonly buf: Uint8Array;
  private readonly maxRecord: number;
  private pos = PCAP_FILE_HEADER;
  private count = 0;

  constructor(buf: Uint8Array) {
    this.buf = buf;
    this.header = readPcapHeader(buf);
    const snap = this.header.snaplen;
    this.maxRecord = snap > PCAP_MAX_SNAPLEN ? Math.min(snap, PCAP_HARD_MAX_RECORD) : PCAP_MAX_SNAPLEN;
  }

  next(): PcapRecord | null {
    if (this.stopped !== null) return null;
    const b = this.buf;
    const at = this.pos;
    const left = b.length - at;
    if (left === 0) return null;
    const number = this.count + 1;
    if (left < PCAP_RECORD_HEADER) {
      return this.stop(`the file ends ${left} bytes into the header of record ${number} (at byte ${at}); it was cut short`, true);
    }
    const le = this.header.littleEndian;
    const tsSec = u32(b, at, le);
    const tsFrac = u32(b, at + 4, le);
    const incl = u32(b, at + 8, le);
    const orig = u32(b, at + 12, le);
    if (incl > this.maxRecord) {
      return this.stop(
        `record ${number} (at byte ${at}) claims ${incl} captured bytes, more than a capture with snaplen ${this.header.snaplen} holds; the file is corrupt from here`,
        false,
      );
    }
    const start = at + PCAP_RECORD_HEADER;
    if (b.length - start < incl) {
      return this.stop(`the file ends inside record ${number} (at byte ${at}): ${incl} bytes captured, ${b.length - start} present; it was cut short`, true);
    }
    this.pos = start + incl;
    this.count = number;
    return { number, fileOffset: at, tsSec, tsFrac, data: b.subarray(start, start + incl), originalLength: orig };
  }

  private stop(why: string, cutShort: boolean): null {
    this.stopped = why;
    this.cutShort = cutShort;
    return null;
  }
}

/** Where the network-layer packet sits inside a record's bytes, and what protocol it is. */
export interface NetworkLayer {
  /** Offset in the record's data. */
  off: number;
  len: number;
  /**
   * Ethertype of the network layer: 0x0800 IPv4, 0x86dd IPv6, or whatever the link layer says;
   * for raw IP, read from the version nibble (0 when it is neither 4 nor 6).
   */
  ethertype: number;
}

/**
 * Finds the network-layer packet in a record, or returns a reason it has none (a link-layer
 * header longer than what was captured). Never reads outside `data`.
 */
export function networkLayer(linktype: number, data: Uint8Array, fcsBytes = 0): NetworkLayer | string {
  const len = data.length - (linktype === LINKTYPE_ETHERNET ? fcsBytes : 0);
  switch (linktype) {
    case LINKTYPE_RAW: {
      if (len < 1) return 'empty record';
      const v = data[0] >> 4;
      return { off: 0, len, ethertype: v === 4 ? ETHERTYPE_IPV4 : v === 6 ? ETHERTYPE_IPV6 : 0 };
    }
    case LINKTYPE_IPV4:
      return { off: 0, len, ethertype: ETHERTYPE_IPV4 };
    case LINKTYPE_ETHERNET: {
      let o = 12;
      // Skip up to two VLAN tags (802.1Q, 802.1ad QinQ): the ethertype after them is the packet's.
      for (let tags = 0; ; tags++) {
        if (len < o + 2) return `truncated Ethernet header (${len} bytes)`;
        const t = (data[o] << 8) | data[o + 1];
        if ((t === ETHERTYPE_VLAN || t === ETHERTYPE_QINQ || t === ETHERTYPE_QINQ_OLD) && tags < 2) {
          o += 4;
          continue;
        }
        if (t < 0x0600) return `802.3 length field ${t}, not an Ethernet II frame`;
        return { off: o + 2, len: len - o - 2, ethertype: t };
      }
    }
    case LINKTYPE_LINUX_SLL:
      // packet type (2), ARPHRD type (2), address length (2), address (8), protocol (2).
      if (len < 16) return `truncated Linux cooked header (${len} bytes)`;
      return { off: 16, len: len - 16, ethertype: (data[14] << 8) | data[15] };
    case LINKTYPE_LINUX_SLL2:
      // protocol (2), reserved (2), interface index (4), ARPHRD type (2), packet type (1),
      // address length (1), address (8).
      if (len < 20) return `truncated Linux cooked v2 header (${len} bytes)`;
      return { off: 20, len: len - 20, ethertype: (data[0] << 8) | data[1] };
    default:
      return `link-layer type ${linktype} is not supported`;
  }
}

export interface PcapWriterOptions {
  linktype?: number;
  snaplen?: number;
  nanosecond?: boolean;
}

/**
 * Builds a pcap file in memory, in little-endian order (what tcpdump writes on x86 and arm64)
 * with libpcap's version 2.4 header. Defaults: raw IP, microsecond timestamps.
 */
export class PcapWriter {
  readonly linktype: number;
  readonly snaplen: number;
  readonly nanosecond: boolean;
  private readonly chunks: Buffer[] = [];
  private n = 0;

  constructor(opts: PcapWriterOptions = {}) {
    this.linktype = opts.linktype ?? LINKTYPE_RAW;
    this.snaplen = opts.snaplen ?? PCAP_MAX_SNAPLEN;
    this.nanosecond = opts.nanosecond ?? false;
    const h = Buffer.alloc(PCAP_FILE_HEADER);
    h.writeUInt32LE(this.nanosecond ? PCAP_MAGIC_NSEC : PCAP_MAGIC_USEC, 0);
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    // thiszone and sigfigs: 0, as every modern writer puts there.
    h.writeUInt32LE(this.snaplen, 16);
    h.writeUInt32LE(this.linktype, 20);
    this.chunks.push(h);
  }

  get count(): number {
    return this.n;
  }

  /** Appends one record; bytes beyond snaplen are cut, with the original length kept. */
  add(data: Uint8Array, tsSec = 0, tsFrac = 0, originalLength = data.length): void {
    const incl = Math.min(data.length, this.snaplen);
    const h = Buffer.alloc(PCAP_RECORD_HEADER);
    h.writeUInt32LE(tsSec >>> 0, 0);
    h.writeUInt32LE(tsFrac >>> 0, 4);
    h.writeUInt32LE(incl, 8);
    h.writeUInt32LE(Math.max(originalLength, incl), 12);
    this.chunks.push(h, Buffer.from(data.subarray(0, incl)));
    this.n++;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}
