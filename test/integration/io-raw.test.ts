import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPackageRoot } from '../../src/io/native';

// Raw IP sockets between two namespaces this test creates, A (10.98.0.1) and B (10.98.0.2 and
// 10.98.0.3), joined by a veth pair. A sends hand-built IPIP packets (outer IPv4 protocol 4
// around an inner IPv4/UDP packet) through an IPPROTO_RAW socket; B receives them on protocol-4
// raw sockets. This kernel has no ipip module, so nothing but our sockets claims protocol 4.
// No packet leaves the two namespaces: every address used is one of theirs.

const ROOT = findPackageRoot(__dirname);
const ADDON = path.join(ROOT, 'build', 'Release', 'weft_native.node');
const TAG = randomBytes(3).toString('hex');
const NS_A = `weft-t-raw-${TAG}-a`;
const NS_B = `weft-t-raw-${TAG}-b`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-t-raw-'));
// Transpiled copies of src/io under build/, so native.ts's walk up to binding.gyp finds this
// package exactly as it does from dist/src/io (as in io-tun.test.ts).
const compiled = path.join(ROOT, 'build', `weft-t-raw-${TAG}`);
const io = (m: string) => JSON.stringify(path.join(compiled, 'src', 'io', `${m}.js`));

const children: ChildProcess[] = [];

function writeScript(script: string): string {
  const file = path.join(tmp, `child-${randomBytes(4).toString('hex')}.js`);
  fs.writeFileSync(file, script);
  return file;
}

function lastJson(stdout: string): Record<string, unknown> | undefined {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Runs a script to completion in a namespace; resolves with the JSON on its last line. */
function runInNs(ns: string, script: string): Promise<Record<string, unknown>> {
  const file = writeScript(script);
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, file], { timeout: 20_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const parsed = lastJson(stdout);
      if (parsed && !parsed.error) resolve(parsed);
      else reject(new Error(`child in ${ns} failed (${err?.message ?? 'no result'}):\n${stdout}\n${stderr}`));
    });
  });
}

/**
 * Starts a script in a namespace; `ready` resolves when it prints READY (its sockets are open),
 * `result` with the JSON on its last line when it exits.
 */
function startInNs(ns: string, script: string) {
  const file = writeScript(script);
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  let onReady: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    if (stdout.includes('READY\n')) onReady();
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const result = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.on('exit', (code) => {
      const parsed = lastJson(stdout);
      if (parsed && !parsed.error) resolve(parsed);
      else reject(new Error(`child in ${ns} exited ${code}:\n${stdout}\n${stderr}`));
    });
  });
  // A child that dies before READY must not leave the caller waiting on `ready` forever.
  return { ready: Promise.race([ready, result.then(() => undefined)]), result };
}

const COMMON = String.raw`
const u32 = (s) => s.split('.').reduce((a, o) => ((a << 8) | Number(o)) >>> 0, 0);
setTimeout(() => { console.log(JSON.stringify({ error: 'child timed out' })); process.exit(2); }, 15000).unref();
// RFC 791 section 3.1: the one's complement of the one's complement sum of the header words.
function ipChecksum(buf, off, len) {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += buf.readUInt16BE(off + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
`;

// B: one socket bound to 10.98.0.2 (large slots), one unbound (128-byte slots, to see
// truncation reported), both protocol 4. Each collects until it has its expected count.
const RECEIVER = (wantBound: number, wantAny: number) => `
const { RawSocket } = require(${io('raw')});
const { PacketList } = require(${io('packet-list')});
${COMMON}
const bound = RawSocket.open(4, { bindAddr: u32('10.98.0.2') });
const any = RawSocket.open(4);
const rxBound = new PacketList({ capacity: 64, slotSize: 2048, headroom: 32 });
const rxAny = new PacketList({ capacity: 64, slotSize: 128, headroom: 0 });
function collect(sock, rx, want) {
  const got = [], batches = [];
  return new Promise((resolve) => {
    const done = () => { sock.onReadable(() => {}); resolve({ got, batches }); };
    const t = setTimeout(done, 5000);
    sock.onReadable(() => {
      const n = sock.recv(rx);
      batches.push(n);
      for (let i = 0; i < n; i++) {
        const off = rx.offs[i], len = rx.lens[i];
        got.push({ slot: i, off, len, addr: rx.addrs[i], port: rx.ports[i],
          hex: len > 0 ? rx.buf.toString('hex', off, off + len) : '' });
      }
      if (got.length >= want) { clearTimeout(t); done(); }
    });
  });
}
(async () => {
  const pBound = collect(bound, rxBound, ${wantBound});
  const pAny = collect(any, rxAny, ${wantAny});
  console.log('READY');
  const [b, a] = await Promise.all([pBound, pAny]);
  bound.close(); any.close(); bound.close();
  let afterClose;
  try { bound.recv(rxBound); afterClose = 'received'; } catch (e) { afterClose = e.message; }
  console.log(JSON.stringify({ bound: b, any: a, fdAfterClose: bound.fd, afterClose }));
})().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(2); });
`;

// Outer and inner headers as RFC 2003 section 3.1 lays them out. Built in the parent so the
// expected bytes are known here; the sender child gets them as hex.
function ipHeader(
  buf: Buffer,
  off: number,
  o: { tos: number; total: number; id: number; df: boolean; ttl: number; proto: number; src: string; dst: string; csum?: boolean },
): void {
  const u32 = (s: string) => s.split('.').reduce((a, x) => ((a << 8) | Number(x)) >>> 0, 0);
  buf[off] = 0x45;
  buf[off + 1] = o.tos;
  buf.writeUInt16BE(o.total, off + 2);
  buf.writeUInt16BE(o.id, off + 4);
  buf.writeUInt16BE(o.df ? 0x4000 : 0, off + 6);
  buf[off + 8] = o.ttl;
  buf[off + 9] = o.proto;
  buf.writeUInt16BE(0, off + 10);
  buf.writeUInt32BE(u32(o.src), off + 12);
  buf.writeUInt32BE(u32(o.dst), off + 16);
  if (o.csum !== false) {
    let sum = 0;
    for (let i = 0; i < 20; i += 2) sum += buf.readUInt16BE(off + i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    buf.writeUInt16BE(~sum & 0xffff, off + 10);
  }
}

function ipip(i: number, dst: string, payloadLen: number, opts: { kernelFills?: boolean } = {}): Buffer {
  const inner = 20 + 8 + payloadLen;
  const b = Buffer.alloc(20 + inner);
  const fills = opts.kernelFills === true;
  ipHeader(b, 0, {
    tos: i * 4,
    total: fills ? 0 : b.length,
    id: fills ? 0 : 0x100 + i,
    df: i % 2 === 0,
    ttl: 64,
    proto: 4,
    src: '10.98.0.1',
    dst,
    csum: !fills,
  });
  ipHeader(b, 20, { tos: i * 4, total: inner, id: 0x7700 + i, df: i % 2 === 0, ttl: 63, proto: 17, src: '10.244.1.5', dst: '10.244.2.7' });
  b.writeUInt16BE(1000 + i, 40);
  b.writeUInt16BE(2000, 42);
  b.writeUInt16BE(8 + payloadLen, 44);
  // UDP checksum 0: "no checksum", allowed over IPv4 (RFC 768); nothing here checks it anyway.
  for (let j = 0; j < payloadLen; j++) b[48 + j] = (i * 31 + j) & 0xff;
  return b;
}

// The batch A sends, in order: 8 packets to .2 of growing size, one to .2 over the veth MTU in
// the middle (the kernel refuses it, the rest of the batch still goes), 2 to .3, and one to .2
// whose Total Length, checksum and ID are left 0 for the kernel to fill in (raw(7)).
const TO_B2 = Array.from({ length: 8 }, (_, i) => ipip(i, '10.98.0.2', 6 + i * 150));
const TOO_BIG = ipip(9, '10.98.0.2', 1600);
const TO_B3 = [ipip(10, '10.98.0.3', 40), ipip(11, '10.98.0.3', 400)];
const KERNEL_FILLS = ipip(12, '10.98.0.2', 100, { kernelFills: true });
const BATCH: { pkt: Buffer; dst: string }[] = [
  ...TO_B2.slice(0, 4).map((pkt) => ({ pkt, dst: '10.98.0.2' })),
  { pkt: TOO_BIG, dst: '10.98.0.2' },
  ...TO_B2.slice(4).map((pkt) => ({ pkt, dst: '10.98.0.2' })),
  ...TO_B3.map((pkt) => ({ pkt, dst: '10.98.0.3' })),
  { pkt: KERNEL_FILLS, dst: '10.98.0.2' },
];

const SENDER = () => `
const { RawSocket, IPPROTO_RAW } = require(${io('raw')});
const { PacketList } = require(${io('packet-list')});
const n = require(${JSON.stringify(ADDON)});
${COMMON}
const batch = ${JSON.stringify(BATCH.map((b) => ({ hex: b.pkt.toString('hex'), dst: b.dst })))};
const r = {};
function err(f) { try { f(); return 'no error'; } catch (e) { return { name: e.constructor.name, message: e.message, code: e.code, syscall: e.syscall }; } }
const tx = new PacketList({ capacity: 32, slotSize: 2048, headroom: 0 });
batch.forEach((b, i) => {
  const off = i * 2048;
  tx.buf.write(b.hex, off, 'hex');
  tx.push(off, b.hex.length / 2, u32(b.dst), 0);
});
const sock = RawSocket.open(IPPROTO_RAW, { hdrincl: true });
r.protocol = sock.protocol;
r.sent = sock.send(tx);
sock.close();
let afterClose;
try { sock.send(tx); afterClose = 'sent'; } catch (e) { afterClose = e.message; }
r.afterClose = afterClose;
r.errors = {
  protocolZero: err(() => RawSocket.open(0)),
  protocolBig: err(() => RawSocket.open(256)),
  protocolFraction: err(() => RawSocket.open(4.5)),
  bindNotLocal: err(() => RawSocket.open(4, { bindAddr: u32('10.98.0.2') })),
  hdrinclNotBool: err(() => n.rawOpen(4, 1, 0, 0, 0)),
  bufNegative: err(() => n.rawOpen(4, false, 0, -1, 0)),
  missing: err(() => n.rawOpen(4)),
};
console.log(JSON.stringify(r));
`;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

describe.skipIf(process.getuid?.() !== 0)('raw IP sockets between two network namespaces', () => {
  beforeAll(() => {
    fs.mkdirSync(path.join(compiled, 'src', 'io'), { recursive: true });
    for (const f of fs.readdirSync(path.join(ROOT, 'src', 'io')).filter((x) => x.endsWith('.ts'))) {
      const out = ts.transpileModule(fs.readFileSync(path.join(ROOT, 'src', 'io', f), 'utf8'), {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      });
      fs.writeFileSync(path.join(compiled, 'src', 'io', f.replace(/\.ts$/, '.js')), out.outputText);
    }
    ip('netns', 'add', NS_A);
    ip('netns', 'add', NS_B);
    // Created inside A with its peer moved straight into B: no interface ever exists in the
    // root namespace, so concurrent runs cannot collide on names.
    ip('-n', NS_A, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth0', 'netns', NS_B);
    ip('-n', NS_A, 'addr', 'add', '10.98.0.1/24', 'dev', 'veth0');
    ip('-n', NS_B, 'addr', 'add', '10.98.0.2/24', 'dev', 'veth0');
    ip('-n', NS_B, 'addr', 'add', '10.98.0.3/24', 'dev', 'veth0');
    for (const ns of [NS_A, NS_B]) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'link', 'set', 'veth0', 'up');
    }
    // Resolve both neighbours before the batch, so no packet waits in an unresolved queue.
    for (const dst of ['10.98.0.2', '10.98.0.3']) {
      execFileSync('ip', ['netns', 'exec', NS_A, 'ping', '-c', '1', '-W', '2', dst], { stdio: 'ignore', timeout: 10_000 });
    }
  });

  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of [NS_A, NS_B]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // never created, or already gone
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(compiled, { recursive: true, force: true });
  });

  it('carries a batch of hand-built IPIP packets from an IPPROTO_RAW socket to protocol-4 sockets whole', async () => {
    const toB2 = [...TO_B2, KERNEL_FILLS];
    const expectAny = [...TO_B2, ...TO_B3, KERNEL_FILLS];
    const receiver = startInNs(NS_B, RECEIVER(toB2.length, expectAny.length));
    await receiver.ready;
    const s = await runInNs(NS_A, SENDER());
    const r = await receiver.result;

    expect(s.protocol).toBe(255);
    // Everything but the packet over the 1500-byte MTU: hdrincl never fragments.
    expect(s.sent).toBe(BATCH.length - 1);
    expect(s.afterClose).toBe('raw IP socket for protocol 255 is closed');

    type Got = { slot: number; off: number; len: number; addr: number; port: number; hex: string };
    const bound = (r.bound as { got: Got[]; batches: number[] }).got;
    const any = (r.any as { got: Got[]; batches: number[] }).got;
    const A = 0x0a620001;

    // The socket bound to .2 sees exactly the packets for .2, in order, outer header included,
    // from A's address with port 0, each at its slot's headroom (slots count from 0 in every
    // receive batch; how the packets split into batches depends on when B's loop woke up).
    expect(bound).toHaveLength(toB2.length);
    bound.forEach((g, i) => {
      expect(g.addr).toBe(A);
      expect(g.port).toBe(0);
      expect(g.off).toBe(g.slot * 2048 + 32);
      if (i < TO_B2.length) expect(g.hex).toBe(TO_B2[i].toString('hex'));
    });
    // The packet left for the kernel: Total Length and checksum filled in, the rest as sent.
    const filled = Buffer.from(bound[bound.length - 1].hex, 'hex');
    expect(filled.length).toBe(KERNEL_FILLS.length);
    expect(filled.readUInt16BE(2)).toBe(KERNEL_FILLS.length);
    let sum = 0;
    for (let i = 0; i < 20; i += 2) sum += filled.readUInt16BE(i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    expect(sum).toBe(0xffff);
    expect(filled.subarray(12).equals(KERNEL_FILLS.subarray(12))).toBe(true);

    // The unbound socket sees the packets for .3 too; with 128-byte slots, the larger ones come
    // back as -1 (MSG_TRUNC) rather than cut.
    expect(any).toHaveLength(expectAny.length);
    any.forEach((g, i) => {
      expect(g.addr).toBe(A);
      const p = expectAny[i];
      if (p.length <= 128) {
        expect(g.len).toBe(p.length);
        if (p !== KERNEL_FILLS) expect(g.hex).toBe(p.toString('hex'));
      } else {
        expect(g.len).toBe(-1);
      }
    });
    expect(any.filter((g) => g.len === -1).length).toBeGreaterThan(0);
    expect(any.filter((g) => g.len > 0).length).toBeGreaterThan(0);

    expect(r.fdAfterClose).toBe(-1);
    expect(r.afterClose).toBe('raw IP socket for protocol 4 is closed');

    // Bad arguments throw before any syscall; a kernel refusal names syscall and errno.
    const e = s.errors as Record<string, { name: string; message: string; code?: string; syscall?: string }>;
    expect(e.protocolZero).toMatchObject({ name: 'RangeError', message: 'protocol out of range [1, 255]: 0' });
    expect(e.protocolBig).toMatchObject({ name: 'RangeError' });
    expect(e.protocolFraction).toMatchObject({ name: 'RangeError', message: 'protocol must be an integer' });
    expect(e.bindNotLocal).toEqual({
      name: 'Error',
      message: 'bind raw 10.98.0.2: Cannot assign requested address',
      code: 'EADDRNOTAVAIL',
      syscall: 'bind',
    });
    expect(e.hdrinclNotBool).toMatchObject({ name: 'TypeError', message: 'hdrincl must be a boolean' });
    expect(e.bufNegative).toMatchObject({ name: 'RangeError' });
    expect(e.missing).toMatchObject({ name: 'TypeError', message: 'hdrincl must be a boolean' });
  });
});
