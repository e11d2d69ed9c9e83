// `weft lab down`: stop everything the lab started and delete everything it made. Idempotent,
// and it works without state.json: namespaces are found by the prefix's exact name pattern and
// processes by the lab directory in their command lines and by membership of those namespaces.
import { rmdirSync, rmSync } from 'node:fs';
import { cniDel } from './cni';
import { deleteNs, listNs, nsExists, nsPids } from './netns';
import { cmdline, pidsWithCmdline, terminate } from './process';
import { isLabPid } from './lifecycle';
import { PROMETHEUS_BIN, SOCAT_BIN } from './prometheus';
import { LAB_ROOT, labCniPath, labDir, labNsPattern, prefixOf, readState, type LabRef, type LabState } from './state';

export interface LabDownOptions {
  log?: (msg: string) => void;
  /** Time a daemon gets after SIGTERM to remove its TUN and routes before SIGKILL. */
  graceMs?: number;
}

function safeReadState(prefix: string): LabState | null {
  try {
    return readState(prefix);
  } catch {
    return null; // a corrupt record must not stop the clean-up
  }
}

/**
 * Every live process belonging to the lab: those whose arguments mention the lab dir (control or
 * each etcd member through its data dir, daemons, also after their namespace is gone) and those inside its namespaces.
 */
export async function labProcesses(lab: LabRef): Promise<number[]> {
  const prefix = prefixOf(lab);
  const pattern = labNsPattern(prefix);
  const pids = new Set(pidsWithCmdline(labDir(prefix) + '/'));
  for (const ns of (await listNs()).filter((n) => pattern.test(n))) {
    for (const p of await nsPids(ns)) pids.add(p);
  }
  return [...pids].sort((a, b) => a - b);
}

export async function labDown(lab: LabRef, opts: LabDownOptions = {}): Promise<void> {
  const prefix = prefixOf(lab);
  const log = opts.log ?? (() => undefined);
  const graceMs = opts.graceMs ?? 5_000;
  const dir = labDir(prefix);
  const state = safeReadState(prefix);
  const pattern = labNsPattern(prefix);
  const errors: string[] = [];

  // Processes: the recorded pids (when their command lines still point into the lab dir) and any
  // process whose arguments mention the lab dir (daemons and control started by an up whose
  // record was lost). Daemons first so they withdraw their leases and routes while control lives.
  const recorded = state
    ? [
        ...state.nodes.map((n) => n.pid),
        state.control.pid,
        ...(state.control.members ?? []).map((m) => m.pid),
        ...(state.prometheus ? [state.prometheus.pid, state.prometheus.forwarderPid] : []),
      ].filter((p) => isLabPid(p, dir))
    : [];
  const found = pidsWithCmdline(dir + '/');
  const all = [...new Set([...recorded, ...found])];
  // Prometheus and its forwarder first (--prometheus): they only watch, and a Prometheus that
  // outlives the daemons would record every target going down.
  const isPrometheus = (p: number): boolean => {
    const c = cmdline(p);
    return c.includes(PROMETHEUS_BIN) || c.includes(SOCAT_BIN);
  };
  const watchers = all.filter(isPrometheus);
  if (watchers.length) log('stopping Prometheus');
  await terminate(watchers, 3_000);
  const isDaemon = (p: number): boolean => cmdline(p).includes('daemon');
  const daemons = all.filter((p) => isDaemon(p) && !watchers.includes(p));
  const others = all.filter((p) => !isDaemon(p) && !watchers.includes(p));
  if (daemons.length) log(`stopping ${daemons.length} daemon(s)`);
  await terminate(daemons, graceMs);
  // The members of a multi-member etcd lab get SIGKILL: stopped on SIGTERM all together, the leader
  // waits out a leadership transfer no other member is left to take (etcd 3.4 gives up after about
  // 7 s and the others wait as long), and their data goes with the lab dir anyway.
  const members = new Set((state?.control.members ?? []).map((m) => m.pid).filter((p) => all.includes(p)));
  if (members.size) log(`stopping ${members.size} etcd member(s)`);
  await terminate([...members], 2_000, 'SIGKILL');
  const rest = others.filter((p) => !members.has(p));
  if (rest.length) log('stopping control');
  await terminate(rest, 3_000);

  const namespaces = new Set((await listNs()).filter((n) => pattern.test(n)));
  if (state) {
    for (const ns of [state.switchNs, ...(state.router ? [state.router.ns] : []), ...state.nodes.map((n) => n.ns), ...state.pods.map((p) => p.ns)]) {
      if (nsExists(ns)) namespaces.add(ns);
    }
  }
  // Anything else still running inside the lab (iperf3 servers, `lab exec` shells): a namespace
  // outlives `ip netns delete` while a process is in it.
  for (const ns of namespaces) {
    const pids = await nsPids(ns);
    if (pids.length) {
      log(`stopping ${pids.length} process(es) in ${ns}`);
      await terminate(pids, 1_000);
    }
  }

  // CNI DEL, as kubelet does on pod removal; best effort, since deleting the namespaces below
  // removes the veths anyway and host-local's dataDir goes with the lab dir.
  if (state) {
    for (const p of state.pods) {
      const node = state.nodes.find((n) => n.name === p.node);
      if (!node || !nsExists(node.ns)) continue;
      await cniDel({
        nodeNs: node.ns,
        containerId: p.containerId,
        netns: nsExists(p.ns) ? `/run/netns/${p.ns}` : '',
        ifname: p.ifname,
        config: p.cniConfig,
        cniPath: labCniPath(state.dir),
        timeoutMs: 10_000,
      }).catch((err: unknown) => log(`CNI DEL ${p.name}: ${err instanceof Error ? err.message : String(err)} (ignored)`));
    }
  }

  // Pods, then nodes, then the router, then the switch: the reverse of creation. Names are
  // checked against labNsPattern above, so the suffix alone tells them apart.
  const rank = (ns: string): number => (/p\d+$/.test(ns) ? 0 : ns.endsWith('ul') ? 3 : ns.endsWith('rt') ? 2 : 1);
  const ordered = [...namespaces].sort((a, b) => rank(a) - rank(b));
  if (ordered.length) log(`deleting ${ordered.length} namespace(s)`);
  for (const ns of ordered) {
    await deleteNs(ns).catch((err: unknown) => errors.push(err instanceof Error ? err.message : String(err)));
  }

  rmSync(dir, { recursive: true, force: true });
  try {
    rmdirSync(LAB_ROOT); // only when no other lab remains
  } catch {
    /* not empty, or already gone */
  }
  if (errors.length) throw new Error(`lab down left things behind: ${errors.join('; ')}`);
}
