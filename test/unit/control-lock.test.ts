// The state-dir lock between real processes: children that load the compiled LeaseStore and
// call lock() when told to, all at once, on one fresh state dir per round. Exactly one may win
// each round, and every loser must name the winner's pid.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LeaseStore, StateFileError } from '../../src/control/store';
import { ensureBuilt } from '../support/build';

const ROOT = path.resolve(__dirname, '..', '..');
const DIST_STORE = path.join(ROOT, 'dist', 'src', 'control', 'store.js');

// One JSON command per stdin line, one JSON reply per stdout line. `lock` waits for the wall-clock
// instant `at` (the last 2 ms spun, so all children start within a fraction of a millisecond)
// and answers once lock() settled; the winner keeps holding (alive) until `unlock`, so the
// losers race a live owner.
const CHILD = `
const { LeaseStore } = require(${JSON.stringify(DIST_STORE)});
const held = new Map();
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const now = () => performance.timeOrigin + performance.now();
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const { cmd, dir, at } = JSON.parse(line);
  if (cmd === 'lock') {
    setTimeout(() => {
      while (now() < at);
      const s = new LeaseStore(dir);
      s.lock().then(() => { held.set(dir, s); say({ dir, won: true }); }, (e) => say({ dir, won: false, error: e.message }));
    }, Math.max(0, at - now() - 2));
  } else if (cmd === 'unlock') {
    held.get(dir)?.unlock();
    held.delete(dir);
    say({ dir, unlocked: true });
  }
});
say({ ready: true });
`;

interface Reply {
  ready?: boolean;
  dir?: string;
  won?: boolean;
  error?: string;
  unlocked?: boolean;
}

class Child {
  readonly proc: ChildProcess;
  private readonly waiting: Array<(r: Reply) => void> = [];
  private readonly replies: Reply[] = [];
  readonly exited: Promise<void>;

  constructor() {
    this.proc = spawn(process.execPath, ['-e', CHILD], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((res) => this.proc.once('exit', () => res()));
    readline.createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      const r = JSON.parse(line) as Reply;
      const w = this.waiting.shift();
      if (w) w(r);
      else this.replies.push(r);
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  send(cmd: string, dir: string, at = 0): void {
    this.proc.stdin!.write(JSON.stringify({ cmd, dir, at }) + '\n');
  }

  next(): Promise<Reply> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    return new Promise((res, rej) => {
      this.waiting.push(res);
      void this.exited.then(() => rej(new Error(`child ${this.pid} exited`)));
    });
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

const POOL = 4;
let pool: Child[] = [];
let base: string;

beforeAll(async () => {
  await ensureBuilt();
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-lock-'));
  pool = Array.from({ length: POOL }, () => new Child());
  for (const c of pool) expect(await c.next()).toEqual({ ready: true });
}, 180_000);

afterAll(async () => {
  await Promise.all(pool.map((c) => c.kill()));
  if (base) await fsp.rm(base, { recursive: true, force: true });
});

/** All of `racers` call lock() on `dir` at once; returns the winners and checks the losers' errors. */
async function race(racers: Child[], dir: string): Promise<Child[]> {
  const at = performance.timeOrigin + performance.now() + 20;
  for (const c of racers) c.send('lock', dir, at);
  const replies = await Promise.all(racers.map((c) => c.next()));
  const winners = racers.filter((_, i) => replies[i].won);
  if (winners.length === 1) {
    for (const r of replies) if (!r.won) expect(r.error).toMatch(new RegExp(`in use by pid ${winners[0].pid}\\b`));
  }
  for (const w of winners) {
    w.send('unlock', dir);
    expect((await w.next()).unlocked).toBe(true);
  }
  return winners;
}

describe('state-dir lock between processes', () => {
  it('2 to 4 processes locking one fresh state dir at the same moment: exactly one holds it, 60 rounds', async () => {
    const winnersPerRound: number[] = [];
    for (let round = 0; round < 60; round++) {
      const dir = path.join(base, `fresh-${round}`);
      const racers = pool.slice(0, 2 + (round % 3));
      winnersPerRound.push((await race(racers, dir)).length);
    }
    expect(winnersPerRound).toEqual(winnersPerRound.map(() => 1));
  }, 120_000);

  it('a stale lock left by a SIGKILLed holder, found by 2 to 4 processes at once: exactly one takes it over, 12 rounds', async () => {
    const winnersPerRound: number[] = [];
    for (let round = 0; round < 12; round++) {
      const dir = path.join(base, `stale-${round}`);
      const victim = new Child();
      try {
        expect(await victim.next()).toEqual({ ready: true });
        victim.send('lock', dir);
        expect((await victim.next()).won).toBe(true);
      } finally {
        await victim.kill(); // as a crashed weft control: the lock stays, naming a dead pid
      }
      expect(await fsp.readFile(path.join(dir, 'lock'), 'utf8')).toMatch(new RegExp(`^${victim.pid}\\b`));
      winnersPerRound.push((await race(pool.slice(0, 2 + (round % 3)), dir)).length);
    }
    expect(winnersPerRound).toEqual(winnersPerRound.map(() => 1));
  }, 120_000);
});

describe('state-dir lock in one process', () => {
  let dir: string;
  const stores: LeaseStore[] = [];
  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-lock1-'));
  });
  afterEach(async () => {
    for (const s of stores.splice(0)) s.unlock();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('two registries locking one state dir concurrently: one holds it, the other is refused', async () => {
    for (let round = 0; round < 20; round++) {
      const sd = path.join(dir, `r${round}`);
      const a = new LeaseStore(sd);
      const b = new LeaseStore(sd);
      stores.push(a, b);
      const results = await Promise.allSettled([a.lock(), b.lock()]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(refused.reason).toBeInstanceOf(StateFileError);
      expect((refused.reason as Error).message).toMatch(/already open in this process/);
    }
  });

  describe('a lock file that is not a pid is refused, and left for the operator', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['empty', '', /lock file .*\/lock is empty, not a weft control's pid: .*remove it if no weft control runs/],
      ['words', 'hello\n', /lock file .*\/lock holds "hello\\n", not a weft control's pid/],
      ['a negative pid', '-5\n', /holds "-5\\n"/],
      ['long garbage', 'x'.repeat(5000), new RegExp(`holds "${'x'.repeat(64)}" \\(first 64 of 5000 bytes\\)`)],
    ];
    for (const [name, text, why] of cases) {
      it(name, async () => {
        await fsp.writeFile(path.join(dir, 'lock'), text);
        const err = await new LeaseStore(dir).lock().then(
          () => null,
          (e: Error) => e,
        );
        expect(err).toBeInstanceOf(StateFileError);
        expect(err!.message).toMatch(why);
        expect(err!.message).not.toContain('\n');
        expect(err!.message.length).toBeLessThan(400);
        expect(await fsp.readFile(path.join(dir, 'lock'), 'utf8')).toBe(text);
      });
    }
  });
});
