// The bench's weft-udp-busy-poll row as `weft bench` sets it up: each node's daemon pinned,
// every one of its threads, to a CPU of its own (daemon i on CPU i modulo the CPUs there are),
// so the scheduler cannot put both pollers on one CPU while the other halts. Checked from
// /proc (each task's allowed CPUs), then a ping must still cross and both daemons must spin
// while it does.
import { readdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SPECS, setUp } from '../../src/bench/tunnels';
import { rtt } from '../../src/bench/measure';
import { labDown, labUp, mustReadState } from '../../src/lab';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

/** Cpus_allowed_list of every task (thread) of `pid`. */
function allowedCpus(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
    if (!m) throw new Error(`no Cpus_allowed_list for task ${tid} of ${pid}`);
    return m[1];
  });
}

describe.skipIf(process.getuid?.() !== 0)('weft bench: the busy-poll row pins each daemon to a CPU of its own', () => {
  const prefix = uniquePrefix('bbp');
  let pids: number[] = [];

  beforeAll(async () => {
    await ensureBuilt();
    const spec = SPECS['weft-udp-busy-poll'];
    await labUp({ prefix, nodes: 2, pods: 1, backend: spec.labBackend, daemonArgs: spec.daemonArgs });
    pids = (await setUp('weft-udp-busy-poll', prefix)).pids;
  }, 60_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it('daemon i runs on CPU i (mod the CPUs), all its threads', () => {
    const cpus = os.availableParallelism();
    expect(pids).toHaveLength(2);
    pids.forEach((pid, i) => {
      const tasks = allowedCpus(pid);
      expect(tasks.length).toBeGreaterThan(1); // Node's own threads are pinned too, not just the main one
      expect(new Set(tasks)).toEqual(new Set([String(i % cpus)]));
    });
  });

  it('the pinned daemons still carry pings, and spin while they do', async () => {
    const st = mustReadState(prefix);
    const dst = st.pods.find((p) => p.node === 'n2')!.ip;
    const r = await rtt(prefix, 'n1/p1', dst, 100, pids);
    expect(r.p50).toBeGreaterThan(0);
    // Both daemons poll through the whole series (10 ms gaps, a 20 ms window): about 190% of a
    // CPU on an otherwise idle 2-CPU machine, less when other tests share it (the pollers
    // yield), and far above the 3-8% two sleeping daemons spend.
    expect(r.tunnelCpuPct).toBeGreaterThan(50);
  }, 60_000);
});
