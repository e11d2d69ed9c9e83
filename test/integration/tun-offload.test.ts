import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPackageRoot } from '../../src/io/native';

// Segmentation offload against the real kernel. Each check runs in a child Node process inside
// a network namespace this test creates; the child plays the far end of a TUN itself:
//   - TCP: a socket in the namespace connects to 10.98.0.2 (routed into an offload TUN); the
//     child answers the SYN, ACKs what arrives (TSO super-packets the addon splits), and sends
//     data back as segment runs the addon coalesces, some with pseudo-header-only checksums as
//     a kernel VXLAN peer on a veth would send them. Then the same without offloads.
//   - UDP: a UDP_SEGMENT sender into the TUN (USO super-packets), with segments over the MTU
//     (the kernel refuses GSO: fallback), to a plain node:dgram receiver and to a
//     UDP_GRO receiver whose trains the addon splits with fewer slots than datagrams.
// All traffic stays inside the namespace.

const ROOT = findPackageRoot(__dirname);
const NS = `weft-t-off-${randomBytes(4).toString('hex')}`;
// The kernel VXLAN node of the last check (K): its own namespace, joined to NS by a veth.
const NS_K = `weft-t-off-${randomBytes(4).toString('hex')}`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-t-off-'));
const compiled = path.join(ROOT, 'build', `weft-t-off-${randomBytes(4).toString('hex')}`);
const lib = (m: string) => JSON.stringify(path.join(compiled, 'src', 'io', `${m}.js`));

function runInNs(script: string, ...args: string[]): Promise<Record<string, unknown>> {
  const file = path.join(tmp, `child-${randomBytes(4).toString('hex')}.js`);
  fs.writeFileSync(file, script);
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ['netns', 'exec', NS, process.execPath, file, ...args],
      { timeout: 40_000, encoding: 'utf8', maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const line = stdout.trim().split('\n').pop() ?? '';
        let parsed: Record<string, unknown> | undefined;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          // fall through
        }
        if (parsed && !parsed.error) resolve(parsed);
        else reject(new Error(`child failed (${err?.message ?? 'no result'}):\n${stdout}\n${stderr}`));
      },
    );
  });
}

const HELPERS = String.raw`
const { execFileSync } = require('node:child_process');
const net = require('node:net');
const dgram = require('node:dgram');
const { TunDevice } = require(${lib('tun')});
const { UdpSocket } = require(${lib('udp')});
const { PacketList } = require(${lib('packet-list')});
const { TUN_COUNTER, UDP_COUNTER } = require(${lib('native')});
const ipc = (...a) => execFileSync('ip', a, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const u32 = (s) => s.split('.').reduce((a, o) => ((a << 8) | Number(o)) >>> 0, 0);
setTimeout(() => { console.log(JSON.stringify({ error: 'child timed out', r })); process.exit(2); }, 35000).unref();
const r = {};

function sum16(b, off, len, s = 0) {
  for (let i = 0; i < len; i += 2) s += (b[off + i] << 8) | (i + 1 < len ? b[off + i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
const pseudo4 = (b, off, proto, l4len) => sum16(b, off + 12, 8, proto + l4len);
function ipOk(b, off) { return sum16(b, off, (b[off] & 15) * 4) === 0xffff; }
function l4Ok(b, off, len) {
  const ihl = (b[off] & 15) * 4;
  return sum16(b, off + ihl, len - ihl, pseudo4(b, off, b[off + 9], len - ihl)) === 0xffff;
}
// An IPv4/TCP packet (no options beyond the given TCP ones) at off in buf; csum 'valid' or
// 'seed' (only the pseudo-header sum, as CHECKSUM_PARTIAL leaves it).
function tcp4(buf, off, o) {
  const opts = o.opts || Buffer.alloc(0);
  const payload = o.payload || Buffer.alloc(0);
  const thl = 20 + opts.length, len = 20 + thl + payload.length;
  buf.fill(0, off, off + 20 + thl);
  buf[off] = 0x45; buf.writeUInt16BE(len, off + 2); buf.writeUInt16BE(o.id & 0xffff, off + 4);
  buf.writeUInt16BE(0x4000, off + 6); buf[off + 8] = 64; buf[off + 9] = 6;
  buf.writeUInt32BE(o.src, off + 12); buf.writeUInt32BE(o.dst, off + 16);
  buf.writeUInt16BE(~sum16(buf, off, 20) & 0xffff, off + 10);
  const t = off + 20;
  buf.writeUInt16BE(o.sport, t); buf.writeUInt16BE(o.dport, t + 2);
  buf.writeUInt32BE(o.seq >>> 0, t + 4); buf.writeUInt32BE(o.ack >>> 0, t + 8);
  buf[t + 12] = (thl / 4) << 4; buf[t + 13] = o.flags; buf.writeUInt16BE(o.win ?? 65535, t + 14);
  opts.copy(buf, t + 20);
  payload.copy(buf, t + thl);
  const seed = pseudo4(buf, off, 6, thl + payload.length);
  buf.writeUInt16BE(o.csum === 'seed' ? seed : ~sum16(buf, t, thl + payload.length, seed) & 0xffff, t + 16);
  return len;
}
function parseTcp(b, off, len) {
  if (len < 40 || b[off] >> 4 !== 4 || b[off + 9] !== 6) return null;
  const ihl = (b[off] & 15) * 4, t = off + ihl, thl = (b[t + 12] >> 4) * 4;
  return { src: b.readUInt32BE(off + 12), dst: b.readUInt32BE(off + 16), sport: b.readUInt16BE(t), dport: b.readUInt16BE(t + 2),
    seq: b.readUInt32BE(t + 4), ack: b.readUInt32BE(t + 8), flags: b[t + 13], data: b.subarray(t + thl, off + len),
    ipOk: ipOk(b, off), l4Ok: l4Ok(b, off, len), len };
}
function pattern(n, salt) { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = (i * 31 + salt + (i >> 8)) & 0xff; return b; }

// Reads everything the TUN has, handing each packet to onPacket; level-triggered.
function pump(tun, rx, onPacket) {
  tun.onReadable((err) => {
    if (err) throw err;
    let n;
    while ((n = tun.read(rx)) > 0) {
      for (let i = 0; i < n; i++) if (rx.lens[i] > 0) onPacket(rx.buf, rx.offs[i], rx.lens[i]);
    }
  });
}
`;

// The far end of one TCP connection through a TUN, played by the child.
const TCP_PEER = String.raw`
async function tcpThroughTun(tun, local, far, opts) {
  const rx = new PacketList({ capacity: opts.rxSlots ?? 64, slotSize: 2048, headroom: 64 });
  const tx = new PacketList({ capacity: 128, slotSize: 2048, headroom: 64 });
  const res = { segments: 0, maxSegment: 0, badCsum: 0, outOfOrder: 0 };
  const TO_PEER = opts.toPeer, TO_SOCKET = opts.toSocket;
  const PEER_ISN = 0x7fff0000;
  let conn = null;          // { sport, rcvNxt, sndNxt }
  let received = [];
  let receivedBytes = 0;
  let done;
  const finished = new Promise((res_) => { done = res_; });
  const send = (o) => {
    tx.clear();
    const off = 64;
    const len = tcp4(tx.buf, off, { src: u32(far), dst: u32(local), sport: 5201, dport: conn.sport, id: 0, ...o });
    tx.push(off, len);
    return tun.write(tx);
  };
  pump(tun, rx, (b, off, len) => {
    const p = parseTcp(b, off, len);
    if (!p || p.dst !== u32(far) || p.dport !== 5201) return;
    if (!p.ipOk || !p.l4Ok) res.badCsum++;
    if (p.flags & 0x02) {
      conn = { sport: p.sport, rcvNxt: (p.seq + 1) >>> 0, sndNxt: (PEER_ISN + 1) >>> 0 };
      // SYN-ACK with MSS 1460 and window scale 7, so later ACKs can open a large window.
      send({ seq: PEER_ISN, ack: conn.rcvNxt, flags: 0x12, opts: Buffer.from([2, 4, 5, 180, 1, 3, 3, 7]) });
      return;
    }
    if (!conn || p.sport !== conn.sport) return;
    if (p.data.length > 0) {
      res.segments++;
      res.maxSegment = Math.max(res.maxSegment, p.data.length);
      if (p.seq !== conn.rcvNxt) { res.outOfOrder++; }
      else { received.push(Buffer.from(p.data)); receivedBytes += p.data.length; conn.rcvNxt = (conn.rcvNxt + p.data.length) >>> 0; }
      send({ seq: conn.sndNxt, ack: conn.rcvNxt, flags: 0x10 });
      if (receivedBytes >= TO_PEER) done();
    }
  });
  const sock = net.connect({ host: far, port: 5201, localAddress: local });
  const got = [];
  let gotBytes = 0;
  let gotAll;
  const allGot = new Promise((res_) => { gotAll = res_; });
  sock.on('data', (d) => { got.push(d); gotBytes += d.length; if (gotBytes >= TO_SOCKET) gotAll(); });
  await new Promise((res_, rej) => { sock.once('connect', res_); sock.once('error', rej); });
  const out = pattern(TO_PEER, 1);
  sock.write(out);
  await finished;
  res.toPeerIntact = Buffer.concat(received).equals(out);

  // Peer to socket: runs of segments written in one batch each, so the addon can coalesce
  // them; the second half carries only the pseudo-header sum in the TCP checksum.
  const back = pattern(TO_SOCKET, 2);
  const SEG = 1400, RUN = opts.run ?? 20;
  let pos = 0, runs = 0;
  while (pos < back.length) {
    tx.clear();
    for (let k = 0; k < RUN && pos < back.length; k++) {
      const n = Math.min(SEG, back.length - pos);
      const off = tx.count * 2048 + 64;
      const len = tcp4(tx.buf, off, { src: u32(far), dst: u32(local), sport: 5201, dport: conn.sport,
        id: runs * 100 + k, seq: conn.sndNxt, ack: conn.rcvNxt, flags: 0x10, payload: back.subarray(pos, pos + n),
        csum: pos >= back.length / 2 ? 'seed' : 'valid' });
      tx.push(off, len);
      conn.sndNxt = (conn.sndNxt + n) >>> 0;
      pos += n;
    }
    const w = tun.write(tx);
    if (w !== tx.count) res.shortWrite = (res.shortWrite || 0) + 1;
    runs++;
    // Stay inside the socket's receive window: wait for the kernel's ACK of this run.
    const t0 = Date.now();
    while (gotBytes < pos && Date.now() - t0 < 3000) await new Promise((res_) => setTimeout(res_, 2));
  }
  await Promise.race([allGot, new Promise((res_) => setTimeout(res_, 3000))]);
  res.toSocketIntact = Buffer.concat(got).equals(back);
  res.runs = runs;
  sock.destroy();
  return res;
}
`;

// IPv6: the socket sends to the far end only (weft coalesces IPv4 alone), so the check is
// that TSO6 super-packets come out as valid segments carrying the stream in order.
const TCP6_PEER = String.raw`
const LOCAL6 = Buffer.from('fd000099000000000000000000000001', 'hex');
const FAR6 = Buffer.from('fd000099000000000000000000000002', 'hex');
function tcp6(buf, off, o) {
  const opts = o.opts || Buffer.alloc(0);
  const thl = 20 + opts.length;
  buf.fill(0, off, off + 40 + thl);
  buf.writeUInt32BE(0x60000000, off);
  buf.writeUInt16BE(thl, off + 4);
  buf[off + 6] = 6; buf[off + 7] = 64;
  FAR6.copy(buf, off + 8); LOCAL6.copy(buf, off + 24);
  const t = off + 40;
  buf.writeUInt16BE(5201, t); buf.writeUInt16BE(o.dport, t + 2);
  buf.writeUInt32BE(o.seq >>> 0, t + 4); buf.writeUInt32BE(o.ack >>> 0, t + 8);
  buf[t + 12] = (thl / 4) << 4; buf[t + 13] = o.flags; buf.writeUInt16BE(65535, t + 14);
  opts.copy(buf, t + 20);
  buf.writeUInt16BE(~sum16(buf, t, thl, sum16(buf, off + 8, 32, 6 + thl)) & 0xffff, t + 16);
  return 40 + thl;
}
async function tcp6ToPeer(tun, bytes) {
  ipc('-6', 'addr', 'add', 'fd00:99::1/64', 'dev', 'wto0', 'nodad');
  const rx = new PacketList({ capacity: 64, slotSize: 2048, headroom: 64 });
  const tx = new PacketList({ capacity: 4, slotSize: 2048, headroom: 64 });
  const res = { segments: 0, badCsum: 0, outOfOrder: 0, maxSegment: 0 };
  let conn = null, received = [], receivedBytes = 0, done;
  const finished = new Promise((r_) => { done = r_; });
  const send = (o) => { tx.clear(); tx.push(64, tcp6(tx.buf, 64, o)); tun.write(tx); };
  tun.onReadable(() => {
    let n;
    while ((n = tun.read(rx)) > 0) {
      for (let i = 0; i < n; i++) {
        const b = rx.buf, off = rx.offs[i], len = rx.lens[i];
        if (len < 60 || b[off] >> 4 !== 6 || b[off + 6] !== 6 || !b.subarray(off + 24, off + 40).equals(FAR6)) continue;
        const t = off + 40, l4 = len - 40;
        if (sum16(b, t, l4, sum16(b, off + 8, 32, 6 + l4)) !== 0xffff) res.badCsum++;
        const flags = b[t + 13], seq = b.readUInt32BE(t + 4), data = b.subarray(t + (b[t + 12] >> 4) * 4, off + len);
        if (flags & 0x02) {
          conn = { dport: b.readUInt16BE(t), rcvNxt: (seq + 1) >>> 0 };
          send({ dport: conn.dport, seq: 0x10000000, ack: conn.rcvNxt, flags: 0x12, opts: Buffer.from([2, 4, 5, 160, 1, 3, 3, 7]) });
          continue;
        }
        if (!conn || data.length === 0) continue;
        res.segments++;
        res.maxSegment = Math.max(res.maxSegment, data.length);
        if (seq !== conn.rcvNxt) res.outOfOrder++;
        else { received.push(Buffer.from(data)); receivedBytes += data.length; conn.rcvNxt = (conn.rcvNxt + data.length) >>> 0; }
        send({ dport: conn.dport, seq: 0x10000001, ack: conn.rcvNxt, flags: 0x10 });
        if (receivedBytes >= bytes) done();
      }
    }
  });
  const sock = net.connect({ host: 'fd00:99::2', port: 5201, localAddress: 'fd00:99::1' });
  await new Promise((r_, j) => { sock.once('connect', r_); sock.once('error', j); });
  const out = pattern(bytes, 5);
  sock.write(out);
  await Promise.race([finished, new Promise((r_) => setTimeout(r_, 10000))]);
  res.intact = Buffer.concat(received).equals(out);
  sock.destroy();
  return res;
}
`;

const TCP_CHILD = `
${HELPERS}
${TCP_PEER}
${TCP6_PEER}
(async () => {
  ipc('link', 'set', 'lo', 'up');
  const tun = TunDevice.open('wto0', { offload: true });
  r.offloads = tun.offloads;
  r.offloadNames = tun.offloadNames;
  ipc('addr', 'add', '10.98.0.1/24', 'dev', 'wto0');
  ipc('link', 'set', 'dev', 'wto0', 'mtu', '1500', 'up');
  r.features = execFileSync('cat', ['/sys/class/net/wto0/mtu']).toString().trim();
  r.tcp = await tcpThroughTun(tun, '10.98.0.1', '10.98.0.2', { toPeer: 4 << 20, toSocket: 400000, rxSlots: 16 });
  r.stats = tun.stats();
  r.tcp6 = await tcp6ToPeer(tun, 1 << 20);
  r.stats6 = tun.stats();
  tun.close();

  // The same without offloads: plain reads and writes, partial checksums still finished.
  const plain = TunDevice.open('wtp0');
  r.plainOffloads = plain.offloads;
  ipc('addr', 'add', '10.97.0.1/24', 'dev', 'wtp0');
  ipc('link', 'set', 'dev', 'wtp0', 'mtu', '1500', 'up');
  r.plainTcp = await tcpThroughTun(plain, '10.97.0.1', '10.97.0.2', { toPeer: 200000, toSocket: 100000 });
  r.plainStats = plain.stats();
  plain.close();
  console.log(JSON.stringify(r));
  process.exit(0);
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e), r })); process.exit(2); });
`;

const UDP_CHILD = `
${HELPERS}
function datagrams(list, n, size, last, addr, port, salt) {
  list.clear();
  const sent = [];
  for (let i = 0; i < n; i++) {
    const len = i === n - 1 ? last : size;
    const off = i * list.slotSize + list.headroom;
    const p = pattern(len, salt + i);
    p.copy(list.buf, off);
    list.push(off, len, addr, port);
    sent.push(p);
  }
  return sent;
}
function readable(tun) {
  return new Promise((resolve) => setTimeout(resolve, 200));
}
(async () => {
  ipc('link', 'set', 'lo', 'up');
  ipc('addr', 'add', '10.96.0.1/32', 'dev', 'lo');
  const tun = TunDevice.open('wtu0', { offload: true });
  ipc('addr', 'add', '10.98.0.1/24', 'dev', 'wtu0');
  ipc('link', 'set', 'dev', 'wtu0', 'mtu', '1500', 'up');
  const plainTun = TunDevice.open('wtv0');
  ipc('addr', 'add', '10.97.0.1/24', 'dev', 'wtv0');
  ipc('link', 'set', 'dev', 'wtv0', 'mtu', '1500', 'up');
  r.offloads = tun.offloads;
  const tx = new PacketList({ capacity: 64, slotSize: 2048, headroom: 0 });

  // 1. UDP_SEGMENT into the offload TUN: with USO granted the TUN reads a GSO_UDP_L4
  //    super-packet, which comes out as the 11 datagrams that were sent.
  const gsoSock = UdpSocket.bind(u32('10.98.0.1'), 0, { gso: true });
  const rx = new PacketList({ capacity: 64, slotSize: 2048, headroom: 64 });
  const sent1 = datagrams(tx, 11, 1000, 500, u32('10.98.0.2'), 9999, 10);
  r.tunSent = gsoSock.send(tx);
  r.tunGso = Array.from(gsoSock.counters);
  await readable();
  const seen = [];
  let n;
  while ((n = tun.read(rx)) > 0) {
    for (let i = 0; i < n; i++) {
      const off = rx.offs[i], len = rx.lens[i];
      if (len < 28 || rx.buf[off] >> 4 !== 4 || rx.buf[off + 9] !== 17 || rx.buf.readUInt16BE(off + 22) !== 9999) continue;
      seen.push({ ok: ipOk(rx.buf, off) && l4Ok(rx.buf, off, len), udpLen: rx.buf.readUInt16BE(off + 24), data: Buffer.from(rx.buf.subarray(off + 28, off + len)) });
    }
  }
  r.tunDatagrams = seen.length;
  r.tunIntact = seen.length === sent1.length && seen.every((s, i) => s.ok && s.udpLen === sent1[i].length + 8 && s.data.equals(sent1[i]));
  r.tunStats = tun.stats();

  // 2. A run whose segments exceed the route's MTU (1600 > 1500): udp_send_skb refuses the
  //    GSO send with EINVAL; the run is resent as plain datagrams (which IP then fragments),
  //    counted, and GSO stays on for the socket.
  const gsoSock2 = UdpSocket.bind(u32('10.97.0.1'), 0, { gso: true });
  datagrams(tx, 6, 1600, 1600, u32('10.97.0.2'), 9999, 20);
  r.fallbackSent = gsoSock2.send(tx);
  r.fallbackDisabled = gsoSock2.gsoDisabled;
  r.fallbackCounters = Array.from(gsoSock2.counters);
  await readable();
  let firstFragments = 0, fragments = 0;
  while ((n = plainTun.read(rx)) > 0) {
    for (let i = 0; i < n; i++) {
      const off = rx.offs[i], len = rx.lens[i];
      if (len < 20 || rx.buf[off] >> 4 !== 4 || rx.buf[off + 9] !== 17 || rx.buf.readUInt32BE(off + 16) !== u32('10.97.0.2')) continue;
      fragments++;
      const frag = rx.buf.readUInt16BE(off + 6);
      if ((frag & 0x2000) && (frag & 0x1fff) === 0 && rx.buf.readUInt16BE(off + 22) === 9999) firstFragments++;
    }
  }
  r.fallbackFragments = [firstFragments, fragments];
  // Later runs that fit still go out with UDP_SEGMENT.
  datagrams(tx, 3, 100, 100, u32('10.97.0.2'), 9999, 30);
  r.afterSent = gsoSock2.send(tx);
  r.afterCounters = Array.from(gsoSock2.counters);

  // 3. UDP_SEGMENT to a receiver without UDP_GRO (node:dgram): ordinary datagrams.
  const plainRx = dgram.createSocket('udp4');
  await new Promise((res) => plainRx.bind(0, '10.96.0.1', res));
  const plainGot = [];
  plainRx.on('message', (m, rinfo) => plainGot.push({ m, port: rinfo.port }));
  const loSock = UdpSocket.bind(u32('10.96.0.1'), 0, { gso: true });
  const sent3 = datagrams(tx, 40, 1200, 77, u32('10.96.0.1'), plainRx.address().port, 40);
  r.dgramSent = loSock.send(tx);
  r.dgramGso = Array.from(loSock.counters);
  const t0 = Date.now();
  while (plainGot.length < sent3.length && Date.now() - t0 < 3000) await new Promise((res) => setTimeout(res, 10));
  r.dgramIntact = plainGot.length === sent3.length && plainGot.every((g, i) => g.m.equals(sent3[i]) && g.port === loSock.port);

  // 4. UDP_SEGMENT to a UDP_GRO receiver: the kernel hands over trains, the addon cuts them
  //    back; 5 slots for 40 + 40 datagrams, so the continuation does the rest.
  const groSock = UdpSocket.bind(u32('10.96.0.1'), 0, { gro: true, groRegions: 2 });
  const sent4 = [
    ...datagrams(tx, 40, 1300, 1300, u32('10.96.0.1'), groSock.port, 50),
  ];
  r.groSent1 = loSock.send(tx);
  const sent4b = datagrams(tx, 40, 900, 13, u32('10.96.0.1'), groSock.port, 60);
  r.groSent2 = loSock.send(tx);
  await new Promise((res) => setTimeout(res, 100));
  const small = new PacketList({ capacity: 5, slotSize: 2048, headroom: 32 });
  const groGot = [];
  const calls = [];
  for (let k = 0; k < 100; k++) {
    const c = groSock.recv(small);
    calls.push(c);
    if (c === 0) break;
    for (let i = 0; i < c; i++) groGot.push({ d: Buffer.from(small.buf.subarray(small.offs[i], small.offs[i] + small.lens[i])), addr: small.addrs[i], port: small.ports[i], off: small.offs[i] });
  }
  const want = [...sent4, ...sent4b];
  r.groCalls = calls.length;
  r.groCount = groGot.length;
  r.groIntact = groGot.length === want.length && groGot.every((g, i) => g.d.equals(want[i]) && g.addr === u32('10.96.0.1') && g.port === loSock.port);
  r.groOffsOk = groGot.every((g) => (g.off - 32) % 2048 === 0);
  r.groCounters = Array.from(groSock.counters);

  // 5. Readers that take one batch per callback (as the datapath does, with a round limit):
  //    what a full list left in user space is handed out by further callbacks, with nothing
  //    new arriving to make the fd readable.
  const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
  {
    const few = new PacketList({ capacity: 4, slotSize: 2048, headroom: 0 });
    const got = [];
    let calls = 0;
    const sent = datagrams(tx, 11, 1000, 500, u32('10.98.0.2'), 9999, 70);
    const done = new Promise((res) => {
      tun.onReadable(() => {
        calls++;
        const c = tun.read(few);
        for (let i = 0; i < c; i++) {
          const off = few.offs[i], len = few.lens[i];
          if (len >= 28 && few.buf[off] >> 4 === 4 && few.buf[off + 9] === 17 && few.buf.readUInt16BE(off + 22) === 9999) got.push(Buffer.from(few.buf.subarray(off + 28, off + len)));
        }
        if (got.length >= sent.length) res();
      });
    });
    gsoSock.send(tx);
    await Promise.race([done, sleep(3000)]);
    r.onceTun = { got: got.length, intact: got.length === sent.length && got.every((d, i) => d.equals(sent[i])), calls, pending: tun.pending };
  }
  {
    const few = new PacketList({ capacity: 5, slotSize: 2048, headroom: 0 });
    const got = [];
    let calls = 0;
    const sent = datagrams(tx, 40, 1000, 1000, u32('10.96.0.1'), groSock.port, 80);
    const done = new Promise((res) => {
      groSock.onReadable(() => {
        calls++;
        const c = groSock.recv(few);
        for (let i = 0; i < c; i++) got.push(Buffer.from(few.buf.subarray(few.offs[i], few.offs[i] + few.lens[i])));
        if (got.length >= sent.length) res();
      });
    });
    loSock.send(tx);
    await Promise.race([done, sleep(3000)]);
    r.onceGro = { got: got.length, intact: got.length === sent.length && got.every((d, i) => d.equals(sent[i])), calls, pending: groSock.pending };
  }

  // 6. IPv6: a UDP_SEGMENT sender (python3: the addon's sockets are AF_INET) into the offload
  //    TUN; USO6 hands over one IPv6 super-packet, cut into datagrams with their own sums.
  ipc('-6', 'addr', 'add', 'fd00:98::1/64', 'dev', 'wtu0', 'nodad');
  const before6 = tun.stats().superRead;
  const seen6 = [];
  // The TUN is polled since section 5: collect from its callback.
  const got6 = new Promise((res) => {
    tun.onReadable(() => {
      let n;
      while ((n = tun.read(rx)) > 0) {
        for (let i = 0; i < n; i++) {
          const off = rx.offs[i], len = rx.lens[i];
          if (len < 48 || rx.buf[off] >> 4 !== 6 || rx.buf[off + 6] !== 17 || rx.buf.readUInt16BE(off + 42) !== 9999) continue;
          const l4 = len - 40;
          const ok = sum16(rx.buf, off + 40, l4, sum16(rx.buf, off + 8, 32, 17 + l4)) === 0xffff;
          seen6.push({ len: l4 - 8, ok, first: rx.buf[off + 48] });
        }
      }
      if (seen6.length >= 4) res();
    });
  });
  execFileSync('python3', ['-c', "import socket;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.setsockopt(17,103,1000);s.sendto(bytes(i%251 for i in range(3500)),('fd00:98::2',9999))"]);
  await Promise.race([got6, sleep(3000)]);
  r.v6 = { datagrams: seen6, supers: tun.stats().superRead - before6 };

  // 7. A multi-queue device's queues must agree on offload (the header is the device's).
  const q1 = TunDevice.open('wtm', { multiQueue: true, offload: true });
  try { TunDevice.open('wtm', { multiQueue: true }); r.mixed = 'opened'; } catch (e) { r.mixed = { code: e.code, message: e.message }; }
  const q2 = TunDevice.open('wtm', { multiQueue: true, offload: true });
  r.sameWay = q2.offloads;
  q1.close();
  q2.close();
  console.log(JSON.stringify(r));
  process.exit(0);
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e), r })); process.exit(2); });
`;

// A kernel VXLAN node K (flannel's setup: vx0 with a neighbor, an FDB entry and an onlink route
// for our subnet) on a veth underlay; this side terminates VXLAN in user space: a UDP socket on
// 8472 and a TUN, relaying as weft's vxlan backend does. K's TCP client sends to a server here;
// its segments reach our socket with CHECKSUM_PARTIAL unfinished (a veth never finishes it), so
// the inner TCP checksum holds only the pseudo-header sum. Written to the TUN as they are, the
// kernel here would drop every one (TcpInCsumErrors); tunWrite finishes them.
const VXLAN_CHILD = `
${HELPERS}
const NSK = process.argv[2];
const ipk = (...a) => ipc('-n', NSK, ...a);
const OUR_MAC = Buffer.from([2, 0, 0, 0, 0, 2]);
const BYTES = 3 << 20;
ipc('link', 'set', 'lo', 'up');
ipc('link', 'add', 'wvt', 'type', 'veth', 'peer', 'name', 'wvk', 'netns', NSK);
ipc('addr', 'add', '192.168.77.2/24', 'dev', 'wvt');
ipc('link', 'set', 'wvt', 'up');
ipk('link', 'set', 'lo', 'up');
ipk('addr', 'add', '192.168.77.1/24', 'dev', 'wvk');
ipk('link', 'set', 'wvk', 'up');
ipk('link', 'add', 'vx0', 'type', 'vxlan', 'id', '1', 'dstport', '8472', 'local', '192.168.77.1', 'dev', 'wvk', 'nolearning');
ipk('link', 'set', 'vx0', 'mtu', '1450');
ipk('addr', 'add', '10.244.1.0/32', 'dev', 'vx0');
ipk('link', 'set', 'vx0', 'up');
ipk('neigh', 'replace', '10.244.2.0', 'lladdr', '02:00:00:00:00:02', 'dev', 'vx0', 'nud', 'permanent');
execFileSync('ip', ['netns', 'exec', NSK, 'bridge', 'fdb', 'replace', '02:00:00:00:00:02', 'dev', 'vx0', 'dst', '192.168.77.2', 'self', 'permanent']);
ipk('route', 'replace', '10.244.2.0/24', 'via', '10.244.2.0', 'dev', 'vx0', 'onlink');
const K_MAC = Buffer.from(JSON.parse(ipk('-j', 'link', 'show', 'dev', 'vx0'))[0].address.split(':').map((h) => parseInt(h, 16)));

async function once(offload) {
  const tun = TunDevice.open('wtk', { offload });
  ipc('addr', 'add', '10.244.2.1/24', 'dev', 'wtk');
  ipc('link', 'set', 'dev', 'wtk', 'mtu', '1450', 'up');
  ipc('route', 'replace', '10.244.1.0/24', 'dev', 'wtk');
  // UDP_GRO with the VXLAN header length: K's TSO super-packets cross the veth whole and
  // reach the socket as one datagram each (with or without UDP_GRO, and without a segment
  // size), which only the tunnel cutting turns back into datagrams (inner packets of at most
  // vx0's MTU); a plain socket would see them as lens -1.
  const sock = UdpSocket.bind(u32('192.168.77.2'), 8472, { gro: true, groTunnelHeader: 22, groTunnelMtu: 1450, gso: true });
  const res = { seedSeen: 0, validSeen: 0, datagrams: 0, truncated: 0 };
  // Underlay -> TUN: strip VXLAN (8) and Ethernet (14), note what the inner TCP checksum holds.
  const urx = new PacketList({ capacity: 64, slotSize: 2048, headroom: 64 });
  const toTun = PacketList.view(urx);
  sock.onReadable(() => {
    let n;
    while ((n = sock.recv(urx)) > 0) {
      toTun.clear();
      for (let i = 0; i < n; i++) {
        const off = urx.offs[i], len = urx.lens[i];
        if (len < 0) res.truncated++;
        if (len < 22 + 40 || urx.buf[off] !== 0x08 || urx.buf.readUInt16BE(off + 20) !== 0x0800) continue;
        res.datagrams++;
        const ip = off + 22, ilen = len - 22;
        if (urx.buf[ip + 9] === 6) {
          const ihl = (urx.buf[ip] & 15) * 4;
          if (l4Ok(urx.buf, ip, ilen)) res.validSeen++;
          else if (urx.buf.readUInt16BE(ip + ihl + 16) === pseudo4(urx.buf, ip, 6, ilen - ihl)) res.seedSeen++;
        }
        toTun.push(ip, ilen);
      }
      tun.write(toTun);
    }
  });
  // TUN -> underlay: VXLAN header (flags I, VNI 1) and Ethernet header in the headroom.
  const trx = new PacketList({ capacity: 64, slotSize: 2048, headroom: 64 });
  const toSock = PacketList.view(trx);
  tun.onReadable(() => {
    let n;
    while ((n = tun.read(trx)) > 0) {
      toSock.clear();
      for (let i = 0; i < n; i++) {
        const off = trx.offs[i], len = trx.lens[i];
        if (len < 20 || trx.buf[off] >> 4 !== 4) continue;
        const o = off - 22;
        trx.buf.fill(0, o, o + 8);
        trx.buf[o] = 0x08;
        trx.buf[o + 6] = 1;
        K_MAC.copy(trx.buf, o + 8);
        OUR_MAC.copy(trx.buf, o + 14);
        trx.buf.writeUInt16BE(0x0800, o + 20);
        toSock.push(o, len + 22, u32('192.168.77.1'), 8472);
      }
      sock.send(toSock);
    }
  });
  // K's client sends BYTES to a server here.
  const want = pattern(BYTES, 9);
  const got = [];
  let gotBytes = 0;
  // The server answers with BYTES of its own once the upload is complete: that direction is
  // TSO super-packets read from our TUN, cut, and sent to K as UDP_SEGMENT runs of VXLAN
  // datagrams, which K's kernel must take apart and decapsulate.
  const back = pattern(BYTES, 4);
  const server = net.createServer((c) => {
    c.on('data', (d) => {
      got.push(d);
      gotBytes += d.length;
      if (gotBytes === BYTES) c.end(back);
    });
    c.on('error', () => {});
  });
  await new Promise((r_) => server.listen(5201, '10.244.2.1', r_));
  const t0 = Date.now();
  const client = require('node:child_process').spawn('ip', ['netns', 'exec', NSK, process.execPath, '-e',
    "const mk=(salt)=>{const p=Buffer.alloc(" + BYTES + ");for(let i=0;i<p.length;i++)p[i]=(i*31+salt+(i>>8))&255;return p};" +
    "const s=require('net').connect({host:'10.244.2.1',port:5201,localAddress:'10.244.1.0'},()=>s.write(mk(9)));" +
    "const got=[];s.on('data',(d)=>got.push(d));" +
    "s.on('end',()=>{console.log(Buffer.concat(got).equals(mk(4))?'back-intact':'back-corrupt '+Buffer.concat(got).length);process.exit(0)});" +
    "s.on('error',(e)=>{console.log('error '+e.message);process.exit(1)});setTimeout(()=>{console.log('timeout');process.exit(3)},15000)"],
    { stdio: ['ignore', 'pipe', 'ignore'] });
  let clientOut = '';
  client.stdout.on('data', (d) => (clientOut += d));
  const clientDone = new Promise((r_) => client.once('exit', r_));
  while (gotBytes < BYTES && Date.now() - t0 < 10000) await new Promise((r_) => setTimeout(r_, 10));
  res.ms = Date.now() - t0;
  res.intact = Buffer.concat(got).equals(want);
  res.bytes = gotBytes;
  await Promise.race([clientDone, new Promise((r_) => setTimeout(r_, 10000))]);
  res.back = clientOut.trim();
  res.stats = tun.stats();
  res.udp = Array.from(sock.counters);
  client.kill();
  server.close();
  sock.close();
  tun.close();
  return res;
}
(async () => {
  r.offload = await once(true);
  r.plain = await once(false);
  console.log(JSON.stringify(r));
  process.exit(0);
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e), r })); process.exit(2); });
`;

describe.skipIf(process.getuid?.() !== 0)('TUN and UDP segmentation offload against the kernel', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['netns', 'add', NS_K]);
    fs.mkdirSync(path.join(compiled, 'src', 'io'), { recursive: true });
    for (const f of fs
      .readdirSync(path.join(ROOT, 'src', 'io'))
      .filter((n) => n.endsWith('.ts'))
      .map((n) => n.slice(0, -3))) {
      const src = fs.readFileSync(path.join(ROOT, 'src', 'io', `${f}.ts`), 'utf8');
      const out = ts.transpileModule(src, {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      });
      fs.writeFileSync(path.join(compiled, 'src', 'io', `${f}.js`), out.outputText);
    }
  });

  afterAll(() => {
    // Deleting a namespace deletes the links in it (the veth pair goes with either end).
    for (const ns of [NS, NS_K]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // never created, or already gone
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(compiled, { recursive: true, force: true });
  });

  it('carries a TCP stream both ways through an offload TUN, and through a plain one', { timeout: 60_000 }, async () => {
    const r = await runInNs(TCP_CHILD);
    if (process.env.WEFT_TEST_VERBOSE) console.log(JSON.stringify(r));
    // 6.18 grants everything asked: CSUM | TSO4 | TSO6 | USO4 | USO6.
    expect(r.offloads).toBe(0x67);
    expect(r.offloadNames).toEqual(['CSUM', 'TSO4', 'TSO6', 'USO4', 'USO6']);
    const tcp = r.tcp as Record<string, number | boolean>;
    expect(tcp.toPeerIntact).toBe(true);
    expect(tcp.toSocketIntact).toBe(true);
    expect(tcp.badCsum).toBe(0);
    expect(tcp.outOfOrder).toBe(0);
    // Every segment the TypeScript side saw fits the MSS (1460 with no timestamps).
    expect(tcp.maxSegment).toBeLessThanOrEqual(1460);
    const st = r.stats as Record<string, number> & { refused: Record<string, number> };
    // The kernel did send super-packets, and they came out as many more segments.
    expect(st.superRead).toBeGreaterThan(0);
    expect(st.segmentsOut).toBeGreaterThan(st.superRead * 2);
    expect(Object.values(st.refused).every((v) => v === 0)).toBe(true);
    // The way back went out as super-packets, half of them with finished partial sums.
    expect(st.coalescedWrites).toBeGreaterThan(0);
    expect(st.segmentsMerged).toBeGreaterThan(st.coalescedWrites * 2);
    expect(st.partialFixed).toBeGreaterThanOrEqual(140);
    expect(st.writeErrors).toBe(0);

    // IPv6 (TSO6): super-packets read and cut into valid segments of at most the MSS (1440).
    const tcp6 = r.tcp6 as Record<string, number | boolean>;
    expect(tcp6).toMatchObject({ intact: true, badCsum: 0, outOfOrder: 0 });
    expect(tcp6.maxSegment).toBeLessThanOrEqual(1440);
    const st6 = r.stats6 as Record<string, number>;
    expect(st6.superRead).toBeGreaterThan(st.superRead);
    expect(st6.segmentsOut - st.segmentsOut).toBeGreaterThan((st6.superRead - st.superRead) * 2);

    expect(r.plainOffloads).toBe(0);
    const plain = r.plainTcp as Record<string, number | boolean>;
    expect(plain.toPeerIntact).toBe(true);
    expect(plain.toSocketIntact).toBe(true);
    expect(plain.badCsum).toBe(0);
    const ps = r.plainStats as Record<string, number>;
    expect(ps.superRead).toBe(0);
    expect(ps.coalescedWrites).toBe(0);
    expect(ps.partialFixed).toBeGreaterThanOrEqual(35);
  });

  it('sends UDP with UDP_SEGMENT, falls back when refused, and splits UDP_GRO trains', { timeout: 60_000 }, async () => {
    const r = await runInNs(UDP_CHILD);
    if (process.env.WEFT_TEST_VERBOSE) console.log(JSON.stringify(r));
    const U = { GSO_MESSAGES: 0, GSO_SEGMENTS: 1, GSO_DISABLED: 2, GSO_FALLBACKS: 3, GRO_DATAGRAMS: 4, GRO_SEGMENTS: 5 };
    // 1. Into the offload TUN: one GSO message, one USO super-packet read, 11 datagrams out.
    expect(r.tunSent).toBe(11);
    expect((r.tunGso as number[])[U.GSO_MESSAGES]).toBe(1);
    expect((r.tunGso as number[])[U.GSO_SEGMENTS]).toBe(11);
    expect(r.tunDatagrams).toBe(11);
    expect(r.tunIntact).toBe(true);
    expect((r.tunStats as Record<string, number>).superRead).toBe(1);
    // 2. Refused (EINVAL: segments over the MTU) and resent plain, as fragments.
    expect(r.fallbackSent).toBe(6);
    expect(r.fallbackDisabled).toBe(false);
    expect((r.fallbackCounters as number[])[U.GSO_FALLBACKS]).toBe(1);
    expect((r.fallbackCounters as number[])[U.GSO_MESSAGES]).toBe(0);
    expect(r.fallbackFragments).toEqual([6, 12]);
    expect(r.afterSent).toBe(3);
    expect((r.afterCounters as number[])[U.GSO_MESSAGES]).toBe(1);
    // 3. A receiver without UDP_GRO gets the datagrams as sent.
    expect(r.dgramSent).toBe(40);
    expect((r.dgramGso as number[])[U.GSO_MESSAGES]).toBe(1);
    expect(r.dgramIntact).toBe(true);
    // 4. A UDP_GRO receiver gets trains and the addon splits them, across calls.
    expect(r.groSent1).toBe(40);
    expect(r.groSent2).toBe(40);
    expect(r.groCount).toBe(80);
    expect(r.groIntact).toBe(true);
    expect(r.groOffsOk).toBe(true);
    expect(r.groCalls as number).toBeGreaterThanOrEqual(16);
    expect((r.groCounters as number[])[U.GRO_DATAGRAMS]).toBeGreaterThanOrEqual(2);
    expect((r.groCounters as number[])[U.GRO_SEGMENTS]).toBe(80);
    // 5. One batch per callback still drains what the slots could not take.
    expect(r.onceTun).toMatchObject({ got: 11, intact: true, pending: false });
    expect((r.onceTun as { calls: number }).calls).toBeGreaterThanOrEqual(3);
    expect(r.onceGro).toMatchObject({ got: 40, intact: true, pending: false });
    expect((r.onceGro as { calls: number }).calls).toBeGreaterThanOrEqual(8);
    // 7. Mixed queues refused, same-way queues fine.
    expect(r.mixed).toEqual({ code: 'EINVAL', message: expect.stringContaining('opened with offload') });
    expect(r.sameWay).toBe(0x67);
    // 6. IPv6 through USO6: one super-packet, four datagrams with valid checksums.
    expect(r.v6).toEqual({
      supers: 1,
      datagrams: [
        { len: 1000, ok: true, first: 0 },
        { len: 1000, ok: true, first: 1000 % 251 },
        { len: 1000, ok: true, first: 2000 % 251 },
        { len: 500, ok: true, first: 3000 % 251 },
      ],
    });
  });

  it('finishes the inner TCP checksums a kernel VXLAN peer leaves unfinished on a veth', { timeout: 60_000 }, async () => {
    const r = await runInNs(VXLAN_CHILD, NS_K);
    if (process.env.WEFT_TEST_VERBOSE) console.log(JSON.stringify(r));
    const TUNNEL_SUPERS = 8;
    const TUNNEL_SEGMENTS = 9;
    for (const mode of ['offload', 'plain'] as const) {
      const m = r[mode] as Record<string, number | boolean> & { stats: Record<string, number>; udp: number[] };
      // The stream arrived whole...
      expect(m.intact, mode).toBe(true);
      expect(m.truncated, mode).toBe(0);
      // ...though the kernel sent TSO super-packets whole inside single VXLAN datagrams (cut
      // here, their sums computed afresh)...
      expect(m.udp[TUNNEL_SUPERS], mode).toBeGreaterThan(0);
      expect(m.udp[TUNNEL_SEGMENTS], mode).toBeGreaterThan(m.udp[TUNNEL_SUPERS] * 2);
      // ...and its other segments with only the pseudo-header sum (what MACHINE.md records),
      // each finished before the write.
      expect(m.seedSeen, mode).toBeGreaterThan(0);
      expect(m.stats.partialFixed, mode).toBeGreaterThanOrEqual(m.seedSeen as number);
      expect(m.stats.writeErrors, mode).toBe(0);
    }
    // The answer (TUN super-packets cut, sent as UDP_SEGMENT runs) reached K's socket whole.
    for (const mode of ['offload', 'plain'] as const) {
      const m = r[mode] as { back: string; udp: number[] };
      expect(m.back, mode).toBe('back-intact');
    }
    expect((r.offload as { udp: number[] }).udp[0]).toBeGreaterThan(0); // GSO_MESSAGES
    // With offload, the runs that arrived together went to the kernel as super-packets.
    expect((r.offload as { stats: Record<string, number> }).stats.coalescedWrites).toBeGreaterThan(0);
  });
});
