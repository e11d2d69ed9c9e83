// The pcap reader against files real tcpdump wrote (test/fixtures/pcap, made by capture.sh
// there), every header variant libpcap produces, damaged files, and random bytes; the writer
// against tshark, which must open what it writes.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  LINKTYPE_ETHERNET,
  LINKTYPE_LINUX_SLL,
  LINKTYPE_LINUX_SLL2,
  LINKTYPE_RAW,
  networkLayer,
  PcapError,
  PcapReader,
  PcapWriter,
  readPcapHeader,
  type PcapRecord,
} from '../../src/packet/pcap';
import { buildIpv4Packet } from '../../src/packet/builder';
import { fenced } from '../support/fence';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'pcap');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name));
const HAS_TSHARK = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).status === 0;

function all(buf: Uint8Array): { reader: PcapReader; records: PcapRecord[] } {
  const reader = new PcapReader(buf);
  const records: PcapRecord[] = [];
  for (let r = reader.next(); r !== null; r = reader.next()) records.push(r);
  return { reader, records };
}

/** The IPv4 source and destination of a record's network layer, or its ethertype. */
function addrs(linktype: number, data: Uint8Array): string {
  const l3 = networkLayer(linktype, data);
  if (typeof l3 === 'string') return l3;
  if (l3.ethertype !== 0x0800) return `ethertype 0x${l3.ethertype.toString(16)}`;
  const p = data.subarray(l3.off);
  return `${p.subarray(12, 16).join('.')} → ${p.subarray(16, 20).join('.')}`;
}

/** The same file in the other byte order: every header field swapped, packet bytes untouched. */
function toBigEndian(le: Buffer): Buffer {
  const b = Buffer.from(le);
  const sw32 = (o: number) => b.writeUInt32BE(le.readUInt32LE(o), o);
  const sw16 = (o: number) => b.writeUInt16BE(le.readUInt16LE(o), o);
  sw32(0);
  sw16(4);
  sw16(6);
  for (const o of [8, 12, 16, 20]) sw32(o);
  for (let o = 24; o < le.length;) {
    const incl = le.readUInt32LE(o + 8);
    for (const f of [0, 4, 8, 12]) sw32(o + f);
    o += 16 + incl;
  }
  return b;
}

describe('pcap reader: what tcpdump writes', () => {
  // The capture: ping 10.244.2.2 (DF), ping -s 1460 10.244.3.7 (DF), ping -t 1, pings to
  // 10.244.77.2, 10.244.1.5 and 172.16.0.9, a UDP datagram to 10.244.3.3, one IPv6 datagram,
  // a TCP SYN to 10.244.2.9:80 — all from 10.244.1.2.
  const EXPECTED = [
    '10.244.1.2 → 10.244.2.2',
    '10.244.1.2 → 10.244.3.7',
    '10.244.1.2 → 10.244.2.2',
    '10.244.1.2 → 10.244.77.2',
    '10.244.1.2 → 10.244.1.5',
    '10.244.1.2 → 172.16.0.9',
    '10.244.1.2 → 10.244.3.3',
    'ethertype 0x86dd',
    '10.244.1.2 → 10.244.2.9',
  ];

  it('reads an Ethernet capture (tcpdump -i veth, microseconds, little-endian)', () => {
    const { reader, records } = all(fixture('eth.pcap'));
    expect(reader.header).toMatchObject({
      littleEndian: true,
      nanosecond: false,
      versionMajor: 2,
      versionMinor: 4,
      linktype: LINKTYPE_ETHERNET,
      snaplen: 262144,
    });
    expect(records.map((r) => addrs(LINKTYPE_ETHERNET, r.data))).toEqual(EXPECTED);
    expect(records.map((r) => r.number)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(reader.stopped).toBeNull();
    // The 1460-byte ping: 14 + 20 + 8 + 1460, captured whole.
    expect(records[1].data.length).toBe(1502);
    expect(records[1].originalLength).toBe(1502);
  });

  it('reads the nanosecond variant (--time-stamp-precision=nano) with the same times, to the microsecond', () => {
    const usec = all(fixture('eth.pcap')).records;
    const { reader, records } = all(fixture('eth-nano.pcap'));
    expect(reader.header.nanosecond).toBe(true);
    expect(records.map((r) => addrs(LINKTYPE_ETHERNET, r.data))).toEqual(EXPECTED);
    for (let i = 0; i < records.length; i++) {
      expect(records[i].tsSec).toBe(usec[i].tsSec);
      expect(Math.abs(Math.round(records[i].tsFrac / 1000) - usec[i].tsFrac)).toBeLessThanOrEqual(1);
    }
  });

  it('reads tcpdump -i any in both Linux cooked formats (each packet seen on both veth ends)', () => {
    const twice = EXPECTED.flatMap((e) => [e, e]);
    const v1 = all(fixture('any-sll.pcap'));
    expect(v1.reader.header.linktype).toBe(LINKTYPE_LINUX_SLL);
    expect(v1.records.map((r) => addrs(LINKTYPE_LINUX_SLL, r.data))).toEqual(twice);
    const v2 = all(fixture('any-sll2.pcap'));
    expect(v2.reader.header.linktype).toBe(LINKTYPE_LINUX_SLL2);
    expect(v2.records.map((r) => addrs(LINKTYPE_LINUX_SLL2, r.data))).toEqual(twice);
  });

  it('reads a big-endian file (a capture written on a big-endian machine) exactly like its little-endian twin', () => {
    const le = all(fixture('eth.pcap'));
    const be = all(toBigEndian(fixture('eth.pcap')));
    expect(be.reader.header.littleEndian).toBe(false);
    expect(be.reader.header.linktype).toBe(LINKTYPE_ETHERNET);
    expect(be.records.map((r) => [r.tsSec, r.tsFrac, r.originalLength, Buffer.from(r.data).toString('hex')])).toEqual(
      le.records.map((r) => [r.tsSec, r.tsFrac, r.originalLength, Buffer.from(r.data).toString('hex')]),
    );
  });
});

describe('pcap reader: files it cannot read say why in one line', () => {
  const eth = fixture('eth.pcap');

  it('pcapng (what dumpcap and tshark write) points at editcap', () => {
    expect(() => new PcapReader(fixture('eth.pcapng'))).toThrow(new PcapError('pcapng is not supported; convert with editcap -F pcap IN.pcapng OUT.pcap'));
  });

  it('refuses bad magic, a short file, an empty file, another version and an unsupported link type', () => {
    expect(() => readPcapHeader(Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n'))).toThrow(
      /^not a pcap file: magic 0x47455420 \(libpcap writes 0xa1b2c3d4 or 0xa1b23c4d, in either byte order\)$/,
    );
    expect(() => readPcapHeader(eth.subarray(0, 10))).toThrow('not a pcap file: 10 bytes, shorter than the 24-byte file header');
    expect(() => readPcapHeader(Buffer.alloc(0))).toThrow(/shorter than the 24-byte file header/);
    const v1 = Buffer.from(eth);
    v1.writeUInt16LE(1, 4);
    expect(() => readPcapHeader(v1)).toThrow('pcap version 1.4 is not supported (libpcap writes 2.4)');
    const wifi = Buffer.from(eth);
    wifi.writeUInt32LE(105, 20);
    expect(() => readPcapHeader(wifi)).toThrow(
      /^link-layer type 105 is not supported \(weft reads 1 Ethernet, 101 raw IP, 113 Linux cooked v1, 228 raw IPv4, 276 Linux cooked v2\)/,
    );
    const kuz = Buffer.from(eth);
    kuz.writeUInt32LE(0xa1b2cd34, 0);
    expect(() => readPcapHeader(kuz)).toThrow(/Kuznetsov/);
    for (const bad of [v1, wifi, kuz]) {
      try {
        readPcapHeader(bad);
      } catch (e) {
        expect(e).toBeInstanceOf(PcapError);
        expect((e as Error).message).not.toContain('\n');
      }
    }
  });

  it('a file cut inside a record (tcpdump killed mid-write) gives every whole record, then says where it stopped', () => {
    const whole = all(eth).records;
    const last = whole[whole.length - 1];
    const inData = all(eth.subarray(0, last.fileOffset + 16 + 10));
    expect(inData.records).toHaveLength(whole.length - 1);
    expect(inData.reader.cutShort).toBe(true);
    expect(inData.reader.stopped).toBe(
      `the file ends inside record 9 (at byte ${last.fileOffset}): ${last.data.length} bytes captured, 10 present; it was cut short`,
    );
    const inHeader = all(eth.subarray(0, last.fileOffset + 5));
    expect(inHeader.records).toHaveLength(whole.length - 1);
    expect(inHeader.reader.stopped).toBe(`the file ends 5 bytes into the header of record 9 (at byte ${last.fileOffset}); it was cut short`);
    // Nothing more comes once it stopped.
    expect(inHeader.reader.next()).toBeNull();
  });

  it('a record length no capture could have written ends the walk as corruption, keeping what came before', () => {
    const bad = Buffer.from(eth);
    const second = all(eth).records[1].fileOffset;
    bad.writeUInt32LE(0x7fffffff, second + 8);
    const { reader, records } = all(bad);
    expect(records).toHaveLength(1);
    expect(reader.cutShort).toBe(false);
    expect(reader.stopped).toMatch(
      /^record 2 \(at byte \d+\) claims 2147483647 captured bytes, more than a capture with snaplen 262144 holds; the file is corrupt from here$/,
    );
  });

  it('keeps the original length of a record the snaplen cut', () => {
    const w = new PcapWriter({ snaplen: 60 });
    const pkt = buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', payload: Buffer.alloc(100) });
    w.add(pkt, 1, 2);
    const [r] = all(w.toBuffer()).records;
    expect(r.data.length).toBe(60);
    expect(r.originalLength).toBe(pkt.length);
  });
});

describe('pcap link layers', () => {
  const ip = buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', payload: Buffer.from('x') });

  it('skips 802.1Q and QinQ tags to the ethertype behind them', () => {
    const frame = Buffer.concat([Buffer.alloc(12, 0xaa), Buffer.from([0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00]), ip]);
    expect(networkLayer(LINKTYPE_ETHERNET, frame)).toEqual({ off: 22, len: ip.length, ethertype: 0x0800 });
  });

  it('drops a trailing FCS the file header announces (F bit, length in 16-bit words)', () => {
    const w = new PcapWriter({ linktype: LINKTYPE_ETHERNET });
    const frame = Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x00]), ip, Buffer.from([1, 2, 3, 4])]);
    w.add(frame);
    const file = w.toBuffer();
    file.writeUInt32LE((2 << 28) | 0x04000000 | LINKTYPE_ETHERNET, 20);
    const reader = new PcapReader(file);
    expect(reader.header).toMatchObject({ linktype: LINKTYPE_ETHERNET, fcsBytes: 4 });
    const r = reader.next()!;
    expect(networkLayer(LINKTYPE_ETHERNET, r.data, reader.header.fcsBytes)).toEqual({ off: 14, len: ip.length, ethertype: 0x0800 });
  });

  it('names truncated link-layer headers instead of reading past them', () => {
    expect(networkLayer(LINKTYPE_ETHERNET, Buffer.alloc(13))).toBe('truncated Ethernet header (13 bytes)');
    expect(networkLayer(LINKTYPE_LINUX_SLL, Buffer.alloc(15))).toBe('truncated Linux cooked header (15 bytes)');
    expect(networkLayer(LINKTYPE_LINUX_SLL2, Buffer.alloc(19))).toBe('truncated Linux cooked v2 header (19 bytes)');
    expect(networkLayer(LINKTYPE_RAW, Buffer.alloc(0))).toBe('empty record');
    expect(networkLayer(LINKTYPE_ETHERNET, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x2e]))).toMatch(/802\.3 length field 46/);
  });
});

describe('pcap writer', () => {
  it('round-trips records, timestamps and both precisions', () => {
    for (const nanosecond of [false, true]) {
      const w = new PcapWriter({ nanosecond });
      const pkts = [1, 2, 3].map((i) => buildIpv4Packet({ src: '10.244.1.2', dst: `10.244.${i}.9`, payload: Buffer.alloc(i * 10) }));
      pkts.forEach((p, i) => w.add(p, 1_700_000_000 + i, nanosecond ? 999_999_999 : 999_999));
      const { reader, records } = all(w.toBuffer());
      expect(reader.header).toMatchObject({ linktype: LINKTYPE_RAW, nanosecond, littleEndian: true });
      expect(records.map((r) => Buffer.from(r.data))).toEqual(pkts);
      expect(records.map((r) => [r.tsSec, r.tsFrac])).toEqual(pkts.map((_, i) => [1_700_000_000 + i, nanosecond ? 999_999_999 : 999_999]));
    }
  });

  it.skipIf(!HAS_TSHARK)('writes files tshark opens, raw IP decoded as IPv4 with the right times (skipped only where tshark is not installed)', () => {
    const w = new PcapWriter({ nanosecond: true });
    w.add(buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2', srcPort: 5000, dstPort: 53, payload: Buffer.alloc(4) }), 1_700_000_000, 123_456_789);
    w.add(
      buildIpv4Packet({ src: '192.168.77.11', dst: '192.168.77.12', protocol: 4, payload: buildIpv4Packet({ src: '10.244.1.2', dst: '10.244.2.2' }) }),
      1_700_000_001,
      0,
    );
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'weft-pcap-')), 'w.pcap');
    try {
      fs.writeFileSync(file, w.toBuffer());
      const r = spawnSync(
        'tshark',
        ['-r', file, '-T', 'fields', '-E', 'separator=;', '-e', 'frame.time_epoch', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'udp.dstport'],
        { encoding: 'utf8' },
      );
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.trim().split('\n')).toEqual([
        '1700000000.123456789;10.244.1.2;10.244.2.2;53',
        // IPIP: tshark decodes both headers, and the inner UDP the builder made (40000 → 9000).
        '1700000001.000000000;192.168.77.11,10.244.1.2;192.168.77.12,10.244.2.2;9000',
      ]);
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });
});

describe('pcap reader fuzz', () => {
  // Random files, half of them starting with a valid header so the walk reaches the records:
  // the reader either throws a one-line PcapError at the header or walks records that all lie
  // inside the buffer, reading nothing outside it (the fence throws on any such read) and
  // ending after at most one record per 16 bytes.
  const header = (magic: number, linktype: number) => {
    const h = Buffer.alloc(24);
    h.writeUInt32LE(magic, 0);
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeUInt32LE(262144, 16);
    h.writeUInt32LE(linktype, 20);
    return h;
  };
  const file = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc
      .record({
        magic: fc.constantFrom(0xa1b2c3d4, 0xa1b23c4d, 0xd4c3b2a1, 0x4d3cb2a1),
        linktype: fc.constantFrom(1, 101, 113, 228, 276, 105),
        body: fc.uint8Array({ maxLength: 300 }),
        lens: fc.array(fc.nat({ max: 80 }), { maxLength: 6 }),
      })
      .map(({ magic, linktype, body, lens }) => {
        // Records with plausible lengths followed by random bytes.
        const parts: Buffer[] = [header(magic, linktype)];
        let at = 0;
        for (const n of lens) {
          const rh = Buffer.alloc(16);
          rh.writeUInt32LE(n, 8);
          rh.writeUInt32LE(n, 12);
          parts.push(rh, Buffer.from(body.subarray(at, at + n)));
          at += n;
        }
        parts.push(Buffer.from(body.subarray(at)));
        return new Uint8Array(Buffer.concat(parts));
      }),
  );

  it('never throws anything but a PcapError, never reads outside the file, always ends', () => {
    fc.assert(
      fc.property(file, (bytes) => {
        const buf = fenced(bytes, 0, bytes.length);
        let reader: PcapReader;
        try {
          reader = new PcapReader(buf);
        } catch (e) {
          expect(e).toBeInstanceOf(PcapError);
          expect((e as Error).message).not.toContain('\n');
          return;
        }
        let n = 0;
        for (let r = reader.next(); r !== null; r = reader.next()) {
          n++;
          expect(n).toBeLessThanOrEqual(bytes.length / 16);
          const l3 = networkLayer(reader.header.linktype, fenced(r.data, 0, r.data.length), reader.header.fcsBytes);
          if (typeof l3 !== 'string') expect(l3.off + l3.len).toBeLessThanOrEqual(r.data.length);
        }
        expect(reader.next()).toBeNull();
      }),
      { numRuns: 3000 },
    );
  });
});
