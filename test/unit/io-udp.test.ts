import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/io/native';
import { PacketList } from '../../src/io/packet-list';
import { UdpSocket } from '../../src/io/udp';

const LOOPBACK = 0x7f000001; // 127.0.0.1
const SLOT = 2048;
const HEADROOM = 64;

const open: UdpSocket[] = [];
function bind(): UdpSocket {
  const s = UdpSocket.bind(LOOPBACK, 0);
  open.push(s);
  return s;
}
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

function pattern(i: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let j = 0; j < len; j++) b[j] = (i * 31 + j * 7) & 0xff;
  return b;
}

/** Resolves on the socket's next readiness (immediately if data is already queued). */
function readable(s: UdpSocket, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('socket never became readable')), timeoutMs);
    s.onReadable((err) => {
      clearTimeout(t);
      if (err) reject(err);
      else resolve();
    });
  });
}

/** Receives until `want` datagrams arrived; returns copies in arrival order with sender info. */
async function recvAll(s: UdpSocket, rx: PacketList, want: number) {
  const got: { data: Buffer; addr: number; port: number; off: number; len: number }[] = [];
  const batches: number[] = [];
  const deadline = Date.now() + 3000;
  while (got.length < want && Date.now() < deadline) {
    await readable(s);
    const n = s.recv(rx);
    if (n > 0) batches.push(n);
    for (let i = 0; i < n; i++) {
      const off = rx.offs[i];
      const len = rx.lens[i];
      got.push({
        data: len >= 0 ? Buffer.from(rx.buf.subarray(off, off + len)) : Buffer.alloc(0),
        addr: rx.addrs[i],
        port: rx.ports[i],
        off,
        len,
      });
    }
  }
  return { got, batches };
}

describe('UdpSocket (recvmmsg/sendmmsg over loopback)', () => {
  it('binds an ephemeral port and reports it', () => {
    const s = bind();
    expect(s.port).toBeGreaterThan(0);
    expect(s.port).toBeLessThan(65536);
    expect(native.localPort(s.fd)).toBe(s.port);
  });

  it('sends a batch of 64 datagrams of varying size and receives them with source address and port', async () => {
    const a = bind();
    const b = bind();
    const tx = new PacketList({ capacity: 64, slotSize: SLOT, headroom: HEADROOM });
    const sizes: number[] = [];
    for (let i = 0; i < 64; i++) {
      const len = 1 + ((i * 97) % (SLOT - HEADROOM));
      sizes.push(len);
      const off = i * SLOT + HEADROOM;
      pattern(i, len).copy(tx.buf, off);
      expect(tx.push(off, len, LOOPBACK, b.port)).toBe(true);
    }
    expect(a.send(tx)).toBe(64);

    const rx = new PacketList({ capacity: 128, slotSize: SLOT, headroom: HEADROOM });
    const { got, batches } = await recvAll(b, rx, 64);
    expect(got).toHaveLength(64);
    // Loopback delivers during sendmmsg, so everything is queued before the first recv: one
    // recvmmsg must have brought more than one datagram (the point of batching).
    expect(batches[0]).toBeGreaterThan(1);
    for (let i = 0; i < 64; i++) {
      expect(got[i].len).toBe(sizes[i]);
      expect(got[i].data.equals(pattern(i, sizes[i]))).toBe(true);
      expect(got[i].addr).toBe(0x7f000001);
      expect(got[i].port).toBe(a.port);
    }
    // Packets land at slot + headroom, in slot order, within each batch.
    expect(got[0].off).toBe(HEADROOM);
    if (batches[0] > 1) expect(got[1].off).toBe(SLOT + HEADROOM);
  });

  it('moves batches larger than one recvmmsg/sendmmsg call (the kernel caps vlen at 1024)', async () => {
    const a = bind();
    const b = bind();
    const total = 1500;
    const tx = new PacketList({ capacity: total, slotSize: 16, headroom: 0 });
    for (let i = 0; i < total; i++) {
      tx.buf.writeUInt32BE(i, i * 16);
      tx.push(i * 16, 4, LOOPBACK, b.port);
    }
    expect(a.send(tx)).toBe(total);
    const rx = new PacketList({ capacity: 2048, slotSize: 16, headroom: 0 });
    const { got, batches } = await recvAll(b, rx, total);
    expect(got).toHaveLength(total);
    // All were queued before the first receive, so one recv call crossed the 1024 boundary.
    expect(batches[0]).toBe(total);
    expect(got.every((g, i) => g.data.readUInt32BE(0) === i)).toBe(true);
  });

  it("receives from several senders with each one's port", async () => {
    const r = bind();
    const senders = [bind(), bind(), bind()];
    const tx = new PacketList({ capacity: 1, slotSize: 64, headroom: 0 });
    for (const [k, s] of senders.entries()) {
      tx.clear();
      tx.buf[0] = k;
      tx.push(0, 1, LOOPBACK, r.port);
      expect(s.send(tx)).toBe(1);
    }
    const rx = new PacketList({ capacity: 8, slotSize: 64, headroom: 0 });
    const { got } = await recvAll(r, rx, 3);
    expect(got.map((g) => [g.data[0], g.port])).toEqual(senders.map((s, k) => [k, s.port]));
  });

  it('marks a datagram larger than its slot with lens = -1 and keeps the next one intact', async () => {
    const a = bind();
    const b = bind();
    const tx = new PacketList({ capacity: 2, slotSize: 2048, headroom: 0 });
    tx.buf.fill(0xab, 0, 1000);
    tx.push(0, 1000, LOOPBACK, b.port);
    tx.buf.write('small', 1024);
    tx.push(1024, 5, LOOPBACK, b.port);
    expect(a.send(tx)).toBe(2);

    const rx = new PacketList({ capacity: 4, slotSize: 256, headroom: 16 });
    const { got } = await recvAll(b, rx, 2);
    expect(got.map((g) => g.len)).toEqual([-1, 5]);
    expect(got[1].data.toString()).toBe('small');
    expect(got[0].port).toBe(a.port);
  });

  it('skips descriptors with len <= 0 and datagrams the kernel refuses, sending the rest', async () => {
    const a = bind();
    const b = bind();
    const tx = new PacketList({ capacity: 8, slotSize: 64, headroom: 0 });
    const send = (k: number, len: number, port: number) => {
      tx.buf[k * 64] = k;
      tx.push(k * 64, len, LOOPBACK, port);
    };
    send(0, 1, b.port);
    send(1, 0, b.port); // empty: skipped
    send(2, -1, b.port); // a recv-side drop marker: skipped
    send(3, 1, 0); // destination port 0: udp_sendmsg refuses it with EINVAL
    send(4, 1, b.port);
    expect(a.send(tx)).toBe(2);
    const rx = new PacketList({ capacity: 8, slotSize: 64, headroom: 0 });
    const { got } = await recvAll(b, rx, 2);
    expect(got.map((g) => g.data[0])).toEqual([0, 4]);
  });

  it('returns 0 from recv when nothing is queued', () => {
    const b = bind();
    const rx = new PacketList({ capacity: 4, slotSize: 64, headroom: 0 });
    rx.count = 3;
    expect(b.recv(rx)).toBe(0);
    expect(rx.count).toBe(0);
  });

  it('receives through a view into the slab of another list', async () => {
    const a = bind();
    const b = bind();
    const owner = new PacketList({ capacity: 4, slotSize: 128, headroom: 8 });
    owner.buf.write('via-view', 300);
    const tx = PacketList.view(owner, 2);
    tx.push(300, 8, LOOPBACK, b.port);
    expect(a.send(tx)).toBe(1);
    const { got } = await recvAll(b, new PacketList({ capacity: 2, slotSize: 128, headroom: 0 }), 1);
    expect(got[0].data.toString()).toBe('via-view');
  });

  it('rejects bad arguments with TypeError/RangeError before any syscall', async () => {
    const a = bind();
    const b = bind();
    const n = 4;
    const buf = Buffer.alloc(256);
    const offs = new Int32Array(n);
    const lens = new Int32Array(n);
    const addrs = new Uint32Array(n).fill(LOOPBACK);
    const ports = new Uint16Array(n).fill(b.port);
    for (let i = 0; i < n; i++) {
      offs[i] = i * 64;
      lens[i] = 10;
    }
    // Entry 2 runs past the end of buf: the whole batch is refused, so entries 0 and 1 must
    // not have been sent either.
    offs[2] = 250;
    expect(() => native.sendBatch(a.fd, buf, offs, lens, addrs, ports, n)).toThrow(RangeError);
    offs[2] = -1;
    expect(() => native.sendBatch(a.fd, buf, offs, lens, addrs, ports, n)).toThrow(RangeError);
    offs[2] = 128;
    // count beyond the descriptor arrays.
    expect(() => native.sendBatch(a.fd, buf, offs, lens, addrs, ports, n + 1)).toThrow(RangeError);
    expect(() => native.sendBatch(a.fd, buf, offs, lens, addrs, new Uint16Array(2), n)).toThrow(RangeError);
    expect(() => native.writePackets(a.fd, buf, offs, lens, 1000)).toThrow(RangeError);
    // Wrong types.
    expect(() => native.sendBatch(a.fd, buf, lens as never, offs, addrs, new Uint32Array(n) as never, n)).toThrow(TypeError);
    expect(() => native.sendBatch(a.fd, 'nope' as never, offs, lens, addrs, ports, n)).toThrow(TypeError);
    expect(() => native.sendBatch(a.fd, buf, offs, lens, addrs, ports, 1.5)).toThrow(RangeError);
    expect(() => native.sendBatch(-1, buf, offs, lens, addrs, ports, n)).toThrow(RangeError);

    const rbuf = Buffer.alloc(1024);
    // maxCount * slotSize larger than the buffer.
    expect(() => native.recvBatch(b.fd, rbuf, 512, 0, 3, offs, lens, addrs, ports)).toThrow(RangeError);
    // maxCount larger than the descriptor arrays.
    expect(() => native.recvBatch(b.fd, Buffer.alloc(8 * 64), 64, 0, 8, offs, lens, addrs, ports)).toThrow(RangeError);
    // headroom must leave room in the slot.
    expect(() => native.recvBatch(b.fd, rbuf, 64, 64, 4, offs, lens, addrs, ports)).toThrow(RangeError);
    expect(() => native.readPackets(b.fd, rbuf, 0, 0, 1, offs, lens)).toThrow(RangeError);

    // Nothing reached b, and both sockets still work.
    const rx = new PacketList({ capacity: 4, slotSize: 64, headroom: 0 });
    expect(b.recv(rx)).toBe(0);
    expect(native.sendBatch(a.fd, buf, offs, lens, addrs, ports, n)).toBe(n);
    const { got } = await recvAll(b, rx, n);
    expect(got).toHaveLength(n);
  });

  it('throws a named system error for a port already in use', () => {
    const a = bind();
    let err: (Error & { code?: string; syscall?: string }) | undefined;
    try {
      UdpSocket.bind(LOOPBACK, a.port);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toBe(`bind 127.0.0.1:${a.port}: Address already in use`);
    expect(err?.code).toBe('EADDRINUSE');
    expect(err?.syscall).toBe('bind');
  });

  it('refuses use after close instead of touching a reused fd number', () => {
    const s = UdpSocket.bind(LOOPBACK, 0);
    const fd = s.fd;
    s.close();
    s.close(); // idempotent
    expect(s.fd).toBe(-1);
    expect(() => s.recv(new PacketList({ capacity: 1, slotSize: 64, headroom: 0 }))).toThrow(/closed/);
    expect(() => native.close(fd)).toThrow(/EBADF|Bad file descriptor/);
  });

  it('applies the requested socket buffer sizes (forced past rmem_max/wmem_max as root)', () => {
    const s = UdpSocket.bind(LOOPBACK, 0, { rcvbuf: 1 << 20, sndbuf: 3 << 20 });
    open.push(s);
    const d = UdpSocket.bind(LOOPBACK, 0);
    open.push(d);
    // ss reports sk_rcvbuf/sk_sndbuf, which the kernel sets to twice the requested size to
    // leave room for struct sk_buff overhead (socket(7), SO_RCVBUF).
    const skmem = (port: number) => {
      const out = execFileSync('ss', ['-uanm', `sport = :${port}`], { encoding: 'utf8' });
      const m = /rb(\d+),.*tb(\d+)/.exec(out);
      if (!m) throw new Error(`no skmem in ss output: ${out}`);
      return { rb: Number(m[1]), tb: Number(m[2]) };
    };
    if (process.getuid?.() === 0) {
      expect(skmem(s.port)).toEqual({ rb: 2 << 20, tb: 6 << 20 });
      expect(skmem(d.port)).toEqual({ rb: 8 << 20, tb: 8 << 20 });
    } else {
      // Without CAP_NET_ADMIN the plain options apply, capped by the sysctls.
      const r = skmem(s.port);
      expect(r.rb).toBeGreaterThan(0);
    }
  });
});
