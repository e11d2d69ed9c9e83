import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LeaseStore, StateFileError, decodeState, emptyState, type StoreState } from '../../src/control/store';
import { formatIpv4 } from '../../src/route/address';

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-store-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function stateWith(n: number, revision: number): StoreState {
  const leases = [];
  for (let i = 0; i < n; i++) {
    leases.push({
      subnet: `${formatIpv4(0x0a000000 + i * 256)}/24`,
      publicIp: formatIpv4(0xc0000201 + i),
      backendType: 'vxlan',
      backendData: { VtepMAC: `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, pad: 'x'.repeat(40) },
      expiration: 1_700_000_000_000 + i,
    });
  }
  return { revision, leases, previous: { '198.51.100.7': '10.9.9.0/24' }, reservations: [{ subnet: '10.0.200.0/24', publicIp: '198.51.100.9' }] };
}

async function loadError(store: LeaseStore): Promise<Error> {
  try {
    await store.load();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected load() to fail');
}

describe('LeaseStore', () => {
  it('a missing file is a first start: empty state, directory created', async () => {
    const store = new LeaseStore(path.join(dir, 'nested', 'state'));
    expect(await store.load()).toEqual(emptyState());
    expect((await fsp.stat(path.join(dir, 'nested', 'state'))).isDirectory()).toBe(true);
  });

  it('round-trips state', async () => {
    const store = new LeaseStore(dir);
    const s = stateWith(3, 17);
    await store.save(s);
    expect(await new LeaseStore(dir).load()).toEqual(s);
    const doc = JSON.parse(await fsp.readFile(path.join(dir, 'leases.json'), 'utf8'));
    expect(doc.version).toBe(1);
    expect(doc.revision).toBe(17);
  });

  it('after every save the file on disk is exactly that state and no temp file is left', async () => {
    const store = new LeaseStore(dir);
    for (let i = 1; i <= 20; i++) {
      const s = stateWith(i, i);
      await store.save(s);
      expect(decodeState(await fsp.readFile(store.file, 'utf8'))).toEqual(s);
      expect(await fsp.readdir(dir)).toEqual(['leases.json']);
    }
  });

  it('a concurrent reader only ever sees a complete old or new file (replace by rename)', async () => {
    const store = new LeaseStore(dir);
    await store.save(stateWith(2000, 1));
    // A worker thread reads the file in a tight loop while the main thread rewrites it with
    // states of alternating size; an in-place rewrite (truncate + write) gets caught half-done.
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const fs = require('node:fs');
      let reads = 0, bad = 0, stop = false;
      parentPort.on('message', () => { stop = true; });
      (function loop() {
        for (let i = 0; i < 50 && !stop; i++) {
          try { const d = JSON.parse(fs.readFileSync(workerData.file, 'utf8')); if (!Array.isArray(d.leases)) bad++; }
          catch (e) { bad++; }
          reads++;
        }
        if (stop) parentPort.postMessage({ reads, bad }); else setImmediate(loop);
      })();
      `,
      { eval: true, workerData: { file: store.file } },
    );
    try {
      for (let i = 2; i < 60; i++) await store.save(stateWith(i % 2 ? 2000 : 50, i));
      worker.postMessage('stop');
      const { reads, bad } = await new Promise<{ reads: number; bad: number }>((res) => worker.once('message', res));
      expect(reads).toBeGreaterThan(100);
      expect(bad).toBe(0);
    } finally {
      await worker.terminate();
    }
  });

  it('a failed write leaves the previous file intact', async () => {
    const store = new LeaseStore(dir);
    const good = stateWith(2, 5);
    await store.save(good);
    // The next temp file name is predictable (pid + counter); squatting it with a directory makes
    // the write fail before anything could be renamed over the good file.
    await fsp.mkdir(path.join(dir, `.leases.json.${process.pid}.2.tmp`));
    await expect(store.save(stateWith(3, 6))).rejects.toThrow();
    expect(await new LeaseStore(dir).load()).toEqual(good);
  });

  it('ignores and removes a temp file left by a crash mid-write', async () => {
    const store = new LeaseStore(dir);
    const good = stateWith(2, 5);
    await store.save(good);
    const stale = path.join(dir, '.leases.json.99999.1.tmp');
    await fsp.writeFile(stale, '{"version":1,"revision":6,"leases":[{"sub');
    expect(await new LeaseStore(dir).load()).toEqual(good);
    await expect(fsp.stat(stale)).rejects.toThrow(/ENOENT/);
  });

  describe('a corrupt or unreadable file is a startup error, never an empty start', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['truncated JSON', '{"version":1,"revision":3,"leases":[', /not valid JSON/],
      ['empty file', '', /file is empty/],
      ['not an object', '[]', /top level is not an object/],
      ['wrong version', '{"version":2,"revision":0,"leases":[]}', /unsupported version 2/],
      ['bad revision', '{"version":1,"revision":-1,"leases":[]}', /revision -1/],
      ['leases not array', '{"version":1,"revision":0,"leases":{}}', /leases is not an array/],
      [
        'bad subnet',
        '{"version":1,"revision":1,"leases":[{"subnet":"10.0.0.1/24","publicIp":"1.2.3.4","backendType":"udp","backendData":{},"expiration":1}]}',
        /leases\[0\]\.subnet/,
      ],
      [
        'bad publicIp',
        '{"version":1,"revision":1,"leases":[{"subnet":"10.0.0.0/24","publicIp":"1.2.3","backendType":"udp","backendData":{},"expiration":1}]}',
        /leases\[0\]\.publicIp/,
      ],
      [
        'missing expiration',
        '{"version":1,"revision":1,"leases":[{"subnet":"10.0.0.0/24","publicIp":"1.2.3.4","backendType":"udp","backendData":{}}]}',
        /expiration/,
      ],
      [
        'subnet leased twice',
        '{"version":1,"revision":2,"leases":[{"subnet":"10.0.0.0/24","publicIp":"1.2.3.4","backendType":"udp","backendData":{},"expiration":1},{"subnet":"10.0.0.0/24","publicIp":"1.2.3.5","backendType":"udp","backendData":{},"expiration":1}]}',
        /subnet 10\.0\.0\.0\/24 is leased twice/,
      ],
      ['bad previous', '{"version":1,"revision":0,"leases":[],"previous":{"1.2.3.4":"nope"}}', /previous/],
      ['reservations not an array', '{"version":1,"revision":0,"leases":[],"reservations":{}}', /reservations is not an array/],
      [
        'reservation bad subnet',
        '{"version":1,"revision":0,"leases":[],"reservations":[{"subnet":"x","publicIp":"1.2.3.4"}]}',
        /reservations\[0\]\.subnet "x" is not a CIDR/,
      ],
      [
        'subnet reserved twice',
        '{"version":1,"revision":0,"leases":[],"reservations":[{"subnet":"10.0.0.0/24","publicIp":"1.2.3.4"},{"subnet":"10.0.0.0/24","publicIp":"1.2.3.5"}]}',
        /subnet 10\.0\.0\.0\/24 is reserved twice/,
      ],
      [
        'two reservations for one IP',
        '{"version":1,"revision":0,"leases":[],"reservations":[{"subnet":"10.0.0.0/24","publicIp":"1.2.3.4"},{"subnet":"10.0.1.0/24","publicIp":"1.2.3.4"}]}',
        /publicIp 1\.2\.3\.4 holds two reservations/,
      ],
      [
        'a never-expiring lease without its reservation',
        '{"version":1,"revision":1,"leases":[{"subnet":"10.0.0.0/24","publicIp":"1.2.3.4","backendType":"vxlan","backendData":{},"expiration":8640000000000000}]}',
        /lease 10\.0\.0\.0\/24 of 1\.2\.3\.4 never expires but no reservation keeps it/,
      ],
    ];
    for (const [name, text, why] of cases) {
      it(name, async () => {
        await fsp.writeFile(path.join(dir, 'leases.json'), text);
        const e = await loadError(new LeaseStore(dir));
        expect(e).toBeInstanceOf(StateFileError);
        expect(e.message).toMatch(why);
        expect(e.message).toContain(path.join(dir, 'leases.json'));
        expect(e.message).toContain('refusing to start');
        expect(e.message).not.toContain('\n');
        // and the evidence is left in place for the operator
        expect(await fsp.readFile(path.join(dir, 'leases.json'), 'utf8')).toBe(text);
      });
    }

    it('unreadable (a directory where the file should be)', async () => {
      await fsp.mkdir(path.join(dir, 'leases.json'));
      const e = await loadError(new LeaseStore(dir));
      expect(e).toBeInstanceOf(StateFileError);
      expect(e.message).toMatch(/cannot read state file .*leases\.json: .*EISDIR/);
    });
  });
});

describe('LeaseStore lock', () => {
  it('refuses a second registry on the same state dir in this process, until the first lets go', async () => {
    const a = new LeaseStore(dir);
    await a.lock();
    const b = new LeaseStore(dir);
    await expect(b.lock()).rejects.toThrow(/already open in this process/);
    a.unlock();
    await b.lock();
    expect((await fsp.readFile(path.join(dir, 'lock'), 'utf8')).split(' ')[0]).toBe(String(process.pid));
    b.unlock();
    await expect(fsp.stat(path.join(dir, 'lock'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a state dir whose lock names a live process, and takes over one whose process is gone', async () => {
    const { spawn } = await import('node:child_process');
    const live = spawn('sleep', ['30']);
    try {
      await fsp.writeFile(path.join(dir, 'lock'), `${live.pid}\n`);
      const err = await new LeaseStore(dir).lock().then(
        () => null,
        (e: Error) => e,
      );
      expect(err).toBeInstanceOf(StateFileError);
      expect(err!.message).toMatch(new RegExp(`in use by pid ${live.pid}`));
    } finally {
      live.kill('SIGKILL');
      await new Promise((r) => live.once('exit', r));
    }
    // Now the pid in the file is dead (SIGKILLed, as a crashed weft control would be): taken over.
    const s = new LeaseStore(dir);
    await s.lock();
    expect((await fsp.readFile(path.join(dir, 'lock'), 'utf8')).split(' ')[0]).toBe(String(process.pid));
    s.unlock();
  });
});

describe('a state dir that cannot be made', () => {
  it('is one StateFileError naming the dir and the cause, for lock() and load(), never a hang', async () => {
    await fsp.writeFile(path.join(dir, 'file'), 'x');
    await fsp.symlink(path.join(dir, 'nowhere'), path.join(dir, 'dangling'));
    const cases: Array<[string, RegExp]> = [
      // procfs answers ENOENT for a directory it will never create, though /proc exists: Node's
      // recursive mkdir retries that forever.
      ['/proc/weft-lock-test', /^state dir \/proc\/weft-lock-test: cannot create \/proc\/weft-lock-test: ENOENT although \/proc exists/],
      [
        '/proc/self/weft-lock-test/state',
        /^state dir \/proc\/self\/weft-lock-test\/state: cannot create \/proc\/self\/weft-lock-test: ENOENT although \/proc\/self exists/,
      ],
      [path.join(dir, 'file', 'state'), /: cannot create .*\/file\/state: ENOTDIR/],
      [path.join(dir, 'file'), /: cannot create .*\/file: it exists and is not a directory/],
      [path.join(dir, 'dangling', 'state'), /: cannot create .*\/dangling: it exists but cannot be followed/],
    ];
    for (const [sd, why] of cases) {
      for (const op of ['lock', 'load'] as const) {
        const err = await new LeaseStore(sd)[op]().then(
          () => null,
          (e: Error) => e,
        );
        expect(err, `${op} ${sd}`).toBeInstanceOf(StateFileError);
        expect(err!.message, `${op} ${sd}`).toMatch(why);
        expect(err!.message).not.toContain('\n');
      }
    }
  });

  it('a very long state dir path is quoted cut short, with its length', async () => {
    const long = `/proc/${'d'.repeat(300)}`;
    const err = await new LeaseStore(long).lock().then(
      () => null,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(StateFileError);
    expect(err!.message).toContain(`… (${long.length} chars)`);
    expect(err!.message).not.toContain(long);
  });
});
