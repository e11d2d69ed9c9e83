import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findPackageRoot, native } from '../../src/io/native';

// pollStart behaviour that only shows at process level (uncaught exceptions, what keeps the
// event loop alive, collection of dropped handles) is checked in child Node processes that load
// the built addon directly.
const ADDON = path.join(findPackageRoot(__dirname), 'build', 'Release', 'weft_native.node');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-io-poll-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const PRELUDE = `
const n = require(${JSON.stringify(ADDON)});
const dgram = require('node:dgram');
const LO = 0x7f000001;
function poke(port, count = 1) {
  const c = dgram.createSocket('udp4');
  let left = count;
  for (let i = 0; i < count; i++) c.send('x', port, '127.0.0.1', () => { if (--left === 0) c.close(); });
}
function drain(fd) {
  return n.recvBatch(fd, Buffer.alloc(64 * 16), 64, 0, 16, new Int32Array(16), new Int32Array(16),
    new Uint32Array(16), new Uint16Array(16));
}
setTimeout(() => { console.log('TIMEOUT'); process.exit(3); }, 5000).unref();
`;

function runChild(body: string, args: string[] = []) {
  const file = path.join(dir, `c${Math.random().toString(16).slice(2)}.js`);
  fs.writeFileSync(file, PRELUDE + body);
  const r = spawnSync(process.execPath, [...args, file], { encoding: 'utf8', timeout: 10_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('pollStart (uv_poll_t on the Node loop)', () => {
  it('delivers an exception thrown by the callback to process uncaughtException', () => {
    const r = runChild(`
      const fd = n.udpOpen(LO, 0, 0, 0);
      let h;
      process.on('uncaughtException', (e) => {
        console.log('caught:' + e.message);
        h.close();
        n.close(fd);
      });
      h = n.pollStart(fd, () => { drain(fd); throw new Error('boom from onReadable'); });
      poke(n.localPort(fd));
    `);
    expect(r.stdout).toContain('caught:boom from onReadable');
    expect(r.code).toBe(0);
  });

  it('crashes the process with the stack when nothing handles the exception', () => {
    const r = runChild(`
      const fd = n.udpOpen(LO, 0, 0, 0);
      n.pollStart(fd, () => { throw new Error('unhandled in onReadable'); });
      poke(n.localPort(fd));
    `);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Error: unhandled in onReadable');
    expect(r.stdout).not.toContain('TIMEOUT');
  });

  it('runs nextTick callbacks and microtasks queued by the callback before returning to the loop', () => {
    const r = runChild(`
      const fd = n.udpOpen(LO, 0, 0, 0);
      const order = [];
      const h = n.pollStart(fd, () => {
        drain(fd);
        setImmediate(() => { order.push('immediate'); console.log(order.join(',')); h.close(); n.close(fd); });
        Promise.resolve().then(() => order.push('microtask'));
        process.nextTick(() => order.push('tick'));
        order.push('callback');
      });
      poke(n.localPort(fd));
    `);
    expect(r.stdout.trim()).toBe('callback,tick,microtask,immediate');
  });

  it('stops and restarts, and close() is idempotent and lets the process exit', () => {
    const r = runChild(`
      const fd = n.udpOpen(LO, 0, 0, 0);
      const port = n.localPort(fd);
      let calls = 0;
      const h = n.pollStart(fd, () => { calls++; drain(fd); });
      h.stop();
      poke(port);
      setTimeout(() => {
        console.log('stopped:' + calls);
        h.start();                           // data is still queued: fires right away
        setTimeout(() => {
          console.log('started:' + calls);
          h.close();
          h.close();
          let threw = false;
          try { h.start(); } catch (e) { threw = /closed/.test(e.message); }
          console.log('startAfterClose:' + threw);
          poke(port);                        // no callback after close
          setTimeout(() => { console.log('closed:' + calls); n.close(fd); }, 100);
        }, 100);
      }, 100);
    `);
    expect(r.stdout.split('\n').filter(Boolean)).toEqual(['stopped:0', 'started:1', 'startAfterClose:true', 'closed:1']);
    // Exited on its own: a closed handle no longer holds the loop open.
    expect(r.code).toBe(0);
  });

  it('keeps firing for a handle that JS dropped without closing (it is not collected while open)', () => {
    const r = runChild(
      `
      const fd = n.udpOpen(LO, 0, 0, 0);
      let calls = 0;
      (function () {
        n.pollStart(fd, () => {
          calls++;
          drain(fd);
          if (calls === 2) { console.log('fired:2'); process.exit(0); }
        });
      })();
      global.gc();
      poke(n.localPort(fd));
      setTimeout(() => { global.gc(); poke(n.localPort(fd)); }, 100);
    `,
      ['--expose-gc'],
    );
    expect(r.stdout).toContain('fired:2');
    expect(r.code).toBe(0);
  });

  it('keeps the process alive while open (an active uv_poll_t is a referenced handle)', () => {
    const r = runChild(`
      const fd = n.udpOpen(LO, 0, 0, 0);
      const h = n.pollStart(fd, () => {});
      setTimeout(() => { console.log('alive'); h.close(); n.close(fd); }, 200).unref();
    `);
    expect(r.stdout.trim()).toBe('alive');
    expect(r.code).toBe(0);
  });

  it('works in a worker thread, and closes a still-open handle when the worker ends', () => {
    const r = runChild(`
      const { Worker } = require('node:worker_threads');
      const w = new Worker(\`
        const n = require(\${JSON.stringify(${JSON.stringify(ADDON)})});
        const { parentPort } = require('node:worker_threads');
        const fd = n.udpOpen(0x7f000001, 0, 0, 0);
        n.pollStart(fd, () => {
          const got = n.recvBatch(fd, Buffer.alloc(64 * 4), 64, 0, 4, new Int32Array(4), new Int32Array(4),
            new Uint32Array(4), new Uint16Array(4));
          parentPort.postMessage('worker got ' + got);
          // Returns with the poll handle still open: environment teardown must close it.
          process.exit(0);
        });
        parentPort.postMessage(n.localPort(fd));
      \`, { eval: true });
      w.on('message', (m) => (typeof m === 'number' ? poke(m) : console.log(m)));
      w.on('exit', (code) => {
        console.log('worker exit ' + code);
        // The main thread's own addon instance is unaffected.
        const fd = n.udpOpen(LO, 0, 0, 0);
        const h = n.pollStart(fd, () => { console.log('main got ' + drain(fd)); h.close(); n.close(fd); });
        poke(n.localPort(fd));
      });
    `);
    expect(r.stdout.split('\n').filter(Boolean)).toEqual(['worker got 1', 'worker exit 0', 'main got 1']);
    expect(r.code).toBe(0);
  });

  it('rejects a bad fd or a missing callback', () => {
    expect(() => native.pollStart(-1, () => {})).toThrow(RangeError);
    expect(() => native.pollStart(0, undefined as never)).toThrow(TypeError);
    // A number that is no open fd: libuv's uv_poll_init refuses it.
    expect(() => native.pollStart(1_000_000, () => {})).toThrow(/uv_poll_init/);
  });
});
