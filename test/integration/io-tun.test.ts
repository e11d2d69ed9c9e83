import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPackageRoot } from '../../src/io/native';

// A TUN device needs CAP_NET_ADMIN and a namespace of its own, so each check runs in a child
// Node process inside a network namespace this test creates (`ip netns exec NS node script`).
// All traffic stays inside that namespace: 10.99.0.1 is the TUN's own address and 10.99.0.2 only
// exists as the far end the child itself plays by reading and writing the TUN.

const ROOT = findPackageRoot(__dirname);
const ADDON = path.join(ROOT, 'build', 'Release', 'weft_native.node');
const NS = `weft-t-io-${randomBytes(4).toString('hex')}`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-t-io-'));
// Transpiled copies of src/io live under build/ so that native.ts's walk up to binding.gyp
// finds this package, exactly as it does from dist/src/io.
const compiled = path.join(ROOT, 'build', `weft-t-io-${randomBytes(4).toString('hex')}`);

function runInNs(script: string): Promise<Record<string, unknown>> {
  const file = path.join(tmp, `child-${randomBytes(4).toString('hex')}.js`);
  fs.writeFileSync(file, script);
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', NS, process.execPath, file], { timeout: 25_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      let parsed: Record<string, unknown> | undefined;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        // fall through to the error below
      }
      if (parsed && !parsed.error) resolve(parsed);
      else reject(new Error(`child failed (${err?.message ?? 'no result'}):\n${stdout}\n${stderr}`));
    });
  });
}

// Shared by both children: IPv4/UDP parsing and the header checksum (RFC 791 section 3.1: the
// 16-bit one's complement of the one's complement sum of the header's 16-bit words).
const HELPERS = String.raw`
const { execFileSync } = require('node:child_process');
const dgram = require('node:dgram');
const ipc = (...a) => execFileSync('ip', a, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const u32 = (s) => s.split('.').reduce((a, o) => ((a << 8) | Number(o)) >>> 0, 0);
const TUN_ADDR = u32('10.99.0.1');
const FAR_ADDR = u32('10.99.0.2');
const FAR_PORT = 9999;
setTimeout(() => { console.log(JSON.stringify({ error: 'child timed out' })); process.exit(2); }, 20000).unref();
function ipChecksum(buf, off, len) {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += buf.readUInt16BE(off + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
function parseUdp4(buf, off, len) {
  if (len < 28 || buf[off] >> 4 !== 4) return null;
  const ihl = (buf[off] & 15) * 4;
  if (buf[off + 9] !== 17) return null;
  return {
    ihl, totalLen: buf.readUInt16BE(off + 2), ttl: buf[off + 8],
    src: buf.readUInt32BE(off + 12), dst: buf.readUInt32BE(off + 16),
    sport: buf.readUInt16BE(off + ihl), dport: buf.readUInt16BE(off + ihl + 2),
    payload: buf.toString('utf8', off + ihl + 8, off + len),
    csumOk: ipChecksum(buf, off, ihl) === 0,
  };
}
function udpSocket() {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '10.99.0.1', () => resolve(s));
  });
}
function sendAll(sock, msgs) {
  return Promise.all(msgs.map((m) => new Promise((res, rej) =>
    sock.send(m, FAR_PORT, '10.99.0.2', (e) => (e ? rej(e) : res())))));
}
function receive(sock, count) {
  return new Promise((resolve) => {
    const got = [];
    const t = setTimeout(() => resolve(got), 3000);
    sock.on('message', (msg, rinfo) => {
      got.push({ msg: msg.toString(), address: rinfo.address, port: rinfo.port });
      if (got.length === count) { clearTimeout(t); resolve(got); }
    });
  });
}
function configure(dev) {
  ipc('link', 'set', 'lo', 'up');
  ipc('addr', 'add', '10.99.0.1/24', 'dev', dev);
  ipc('link', 'set', 'dev', dev, 'mtu', '1400', 'up');
}
`;

const RAW_CHILD = `
const n = require(${JSON.stringify(ADDON)});
${HELPERS}
const SLOT = 2048, HEAD = 64, N = 64;
const buf = Buffer.alloc(N * SLOT), offs = new Int32Array(N), lens = new Int32Array(N);
const r = {};

function readable(fd) {
  return new Promise((resolve, reject) => {
    const h = n.pollStart(fd, (err) => { h.close(); err ? reject(err) : resolve(); });
  });
}
// Reads batches until 'want' UDP packets for the far end arrived; other traffic on the link
// (IPv6 router solicitations, MLD reports) is skipped.
async function collect(fd, want, batches) {
  const pkts = [];
  const deadline = Date.now() + 3000;
  while (pkts.length < want && Date.now() < deadline) {
    await readable(fd);
    const c = n.readPackets(fd, buf, SLOT, HEAD, N, offs, lens);
    batches.push(c);
    let matched = 0;
    for (let i = 0; i < c; i++) {
      if (offs[i] !== i * SLOT + HEAD) throw new Error('packet ' + i + ' at ' + offs[i]);
      const p = parseUdp4(buf, offs[i], lens[i]);
      if (p && p.dst === FAR_ADDR && p.dport === FAR_PORT) {
        matched++;
        pkts.push({ ...p, off: offs[i], len: lens[i] });
      }
    }
    batches.push(matched);
  }
  return pkts;
}

(async () => {
  const t = n.tunOpen('wt0', false);
  r.name = t.name;
  try { n.tunOpen('wt0', false); r.busy = 'opened twice'; } catch (e) { r.busy = { message: e.message, code: e.code }; }
  configure('wt0');
  const sock = await udpSocket();
  r.sockPort = sock.address().port;

  // Queue 8 datagrams before reading at all: one readPackets call must take them together.
  const msgs = Array.from({ length: 8 }, (_, i) => 'msg-' + i + '-' + 'x'.repeat(i * 100));
  await sendAll(sock, msgs);
  const batches = [];
  const pkts = await collect(t.fd, 8, batches);
  r.batches = batches;
  r.packets = pkts.map((p) => ({ src: p.src, dst: p.dst, sport: p.sport, dport: p.dport,
    payload: p.payload, csumOk: p.csumOk, lenOk: p.totalLen === p.len }));

  // Reply to each as 10.99.0.2:9999 would: a fresh IPv4/UDP packet per request, one
  // writePackets call for all of them, with an empty descriptor in the middle to be skipped.
  const wbuf = Buffer.alloc(16 * SLOT), woffs = new Int32Array(16), wlens = new Int32Array(16);
  let k = 0;
  for (const p of pkts) {
    if (k === 3) { woffs[k] = 0; wlens[k] = 0; k++; }
    const payload = Buffer.from('reply:' + p.payload);
    const off = k * SLOT, total = 28 + payload.length;
    wbuf.fill(0, off, off + 28);
    wbuf[off] = 0x45;
    wbuf.writeUInt16BE(total, off + 2);
    wbuf.writeUInt16BE(0x1000 + k, off + 4);
    wbuf.writeUInt16BE(0x4000, off + 6); // DF
    wbuf[off + 8] = 64;
    wbuf[off + 9] = 17;
    wbuf.writeUInt32BE(FAR_ADDR, off + 12);
    wbuf.writeUInt32BE(TUN_ADDR, off + 16);
    wbuf.writeUInt16BE(ipChecksum(wbuf, off, 20), off + 10);
    wbuf.writeUInt16BE(FAR_PORT, off + 20);
    wbuf.writeUInt16BE(p.sport, off + 22);
    wbuf.writeUInt16BE(8 + payload.length, off + 24);
    // UDP checksum 0: "no checksum", allowed over IPv4 (RFC 768).
    payload.copy(wbuf, off + 28);
    woffs[k] = off; wlens[k] = total; k++;
  }
  const replies = receive(sock, pkts.length);
  r.written = n.writePackets(t.fd, wbuf, woffs, wlens, k);
  r.replies = await replies;

  // A packet longer than the slot comes back as lens = -1 instead of cut; one that fills the
  // slot exactly (28 + 228 = 256 bytes) is intact.
  await sendAll(sock, ['y'.repeat(1000), 'z'.repeat(228)]);
  await readable(t.fd);
  const small = Buffer.alloc(8 * 256), so = new Int32Array(8), sl = new Int32Array(8);
  const c = n.readPackets(t.fd, small, 256, 0, 8, so, sl);
  r.smallLens = Array.from(sl.slice(0, c));

  const tmpl = n.tunOpen('wtx%d', false);
  r.template = tmpl.name;
  n.close(tmpl.fd);

  const q1 = n.tunOpen('wtmq', true), q2 = n.tunOpen('wtmq', true);
  const info = JSON.parse(ipc('-d', '-j', 'link', 'show', 'dev', 'wtmq'))[0].linkinfo.info_data;
  r.mq = { names: [q1.name, q2.name], distinct: q1.fd !== q2.fd, multiQueue: info.multi_queue, numqueues: info.numqueues };
  try { n.tunOpen('wtmq', false); r.mqMismatch = 'opened'; } catch (e) { r.mqMismatch = e.code; }
  n.close(q1.fd); n.close(q2.fd);

  // Deleting the link under an open fd makes poll report POLLERR; libuv stops the handle and
  // the callback gets the error once.
  r.deleted = await new Promise((resolve) => {
    const h = n.pollStart(t.fd, (err) => { h.close(); resolve(err ? { message: err.message, code: err.code } : 'readable'); });
    ipc('link', 'del', 'wt0');
  });
  n.close(t.fd);
  sock.close();
  console.log(JSON.stringify(r));
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(2); });
`;

const WRAPPER_CHILD = () => `
const { TunDevice } = require(${JSON.stringify(path.join(compiled, 'src', 'io', 'tun.js'))});
const { PacketList } = require(${JSON.stringify(path.join(compiled, 'src', 'io', 'packet-list.js'))});
${HELPERS}
const r = {};
(async () => {
  const tun = TunDevice.open('wt0');
  r.name = tun.name;
  configure(tun.name);
  const sock = await udpSocket();
  const msgs = Array.from({ length: 5 }, (_, i) => 'echo-' + i);
  const rx = new PacketList({ capacity: 32, slotSize: 2048, headroom: 128 });
  const tx = PacketList.view(rx);
  const matched = [];
  await sendAll(sock, msgs);
  const echoes = receive(sock, msgs.length);
  await new Promise((resolve) => {
    tun.onReadable(() => {
      tun.read(rx);
      for (let i = 0; i < rx.count; i++) {
        const off = rx.offs[i], len = rx.lens[i];
        const p = parseUdp4(rx.buf, off, len);
        if (!p || p.dst !== FAR_ADDR || p.dport !== FAR_PORT) continue;
        matched.push(p.payload);
        // Echo in place: swapping the addresses and the ports leaves both the IPv4 header
        // checksum and the UDP checksum valid (one's complement sums do not depend on order).
        rx.buf.writeUInt32BE(p.dst, off + 12);
        rx.buf.writeUInt32BE(p.src, off + 16);
        rx.buf.writeUInt16BE(p.dport, off + p.ihl);
        rx.buf.writeUInt16BE(p.sport, off + p.ihl + 2);
        tx.push(off, len);
      }
      if (matched.length === msgs.length) resolve();
    });
  });
  r.headroomOk = rx.offs[0] === 128;
  r.written = tun.write(tx);
  r.echoes = await echoes;
  r.matched = matched;
  tun.close();
  tun.close();
  r.fdAfterClose = tun.fd;
  try { tun.read(rx); r.readAfterClose = 'read'; } catch (e) { r.readAfterClose = e.message; }
  // A non-persistent TUN disappears with its last fd.
  try { ipc('link', 'show', 'dev', 'wt0'); r.linkGone = false; } catch { r.linkGone = true; }
  sock.close();
  console.log(JSON.stringify(r));
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(2); });
`;

describe.skipIf(process.getuid?.() !== 0)('TUN device I/O in a network namespace', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    fs.mkdirSync(path.join(compiled, 'src', 'io'), { recursive: true });
    // All of src/io, so the copy keeps up with the modules tun.ts comes to import.
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
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      // never created, or already gone
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(compiled, { recursive: true, force: true });
  });

  it('moves packets between the kernel and the addon in batches', async () => {
    const r = await runInNs(RAW_CHILD);
    expect(r.name).toBe('wt0');
    expect(r.busy).toEqual({ message: 'TUNSETIFF wt0: Device or resource busy', code: 'EBUSY' });

    // Egress: the kernel routed every datagram for 10.99.0.2 into the TUN.
    const packets = r.packets as Record<string, unknown>[];
    expect(packets).toHaveLength(8);
    packets.forEach((p, i) => {
      expect(p).toEqual({
        src: 0x0a630001,
        dst: 0x0a630002,
        sport: r.sockPort,
        dport: 9999,
        payload: `msg-${i}-${'x'.repeat(i * 100)}`,
        csumOk: true,
        lenOk: true,
      });
    });
    // Batching: the first readPackets call returned several packets, all 8 of ours among them.
    const batches = r.batches as number[];
    expect(batches[0]).toBeGreaterThan(1);
    expect(batches[1]).toBe(8);

    // Ingress: 8 replies written in one call (the empty descriptor skipped) reached the socket.
    expect(r.written).toBe(8);
    const replies = r.replies as { msg: string; address: string; port: number }[];
    expect(replies.map((x) => x.msg).sort()).toEqual(Array.from({ length: 8 }, (_, i) => `reply:msg-${i}-${'x'.repeat(i * 100)}`).sort());
    for (const x of replies) expect([x.address, x.port]).toEqual(['10.99.0.2', 9999]);

    // Truncation is reported, not passed on: exactly our 1028-byte packet is -1, and the
    // 256-byte one that fills its slot exactly is not mistaken for a cut one.
    const smallLens = r.smallLens as number[];
    expect(smallLens.filter((l) => l === -1)).toHaveLength(1);
    expect(smallLens.filter((l) => l === 256)).toHaveLength(1);
    expect(smallLens.every((l) => l === -1 || (l > 0 && l <= 256))).toBe(true);

    expect(r.template).toBe('wtx0');
    expect(r.mq).toEqual({ names: ['wtmq', 'wtmq'], distinct: true, multiQueue: true, numqueues: 2 });
    expect(r.mqMismatch).toBe('EINVAL');
    expect(r.deleted).toMatchObject({ code: 'EBADF' });
  });

  it('echoes packets through TunDevice and PacketList views (the TypeScript wrappers)', async () => {
    const r = await runInNs(WRAPPER_CHILD());
    expect(r.name).toBe('wt0');
    expect(r.headroomOk).toBe(true);
    expect((r.matched as string[]).sort()).toEqual(['echo-0', 'echo-1', 'echo-2', 'echo-3', 'echo-4']);
    expect(r.written).toBe(5);
    const echoes = r.echoes as { msg: string; address: string; port: number }[];
    expect(echoes.map((e) => e.msg).sort()).toEqual(['echo-0', 'echo-1', 'echo-2', 'echo-3', 'echo-4']);
    for (const e of echoes) expect([e.address, e.port]).toEqual(['10.99.0.2', 9999]);
    expect(r.fdAfterClose).toBe(-1);
    expect(r.readAfterClose).toBe('TUN wt0 is closed');
    expect(r.linkGone).toBe(true);
  });
});
