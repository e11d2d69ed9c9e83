// Namespace and link plumbing. Every link is created inside a lab namespace (`ip -n`), never in
// the root namespace, so the lab has no path to the machine's uplink and no name can collide
// with a host interface or another lab.
import { existsSync } from 'node:fs';
import { mustNsRun, mustRun, run } from './process';

export const nsExists = (ns: string): boolean => existsSync(`/run/netns/${ns}`);

export async function addNs(ns: string): Promise<void> {
  await mustRun('ip', ['netns', 'add', ns], { timeoutMs: 10_000 });
  await mustRun('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { timeoutMs: 10_000 });
}

export async function deleteNs(ns: string): Promise<void> {
  if (!nsExists(ns)) return;
  const r = await run('ip', ['netns', 'delete', ns], { timeoutMs: 10_000 });
  if (r.code !== 0 && nsExists(ns)) throw new Error(`ip netns delete ${ns}: ${r.stderr.trim()}`);
}

export async function listNs(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  // Lines look like "weft-n1 (id: 3)" or just "weft-n1".
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((s) => s.length > 0);
}

/** Pids of processes whose network namespace is `ns`. */
export async function nsPids(ns: string): Promise<number[]> {
  if (!nsExists(ns)) return [];
  const r = await run('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 });
  return r.stdout
    .split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** Runs several `ip` commands in one process (ip -batch), inside namespace `ns`. */
export async function ipBatch(ns: string, lines: string[]): Promise<void> {
  await mustRun('ip', ['-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n', timeoutMs: 10_000 });
}

/**
 * Writes sysctls inside `ns`. Through /proc/sys of a process in that namespace, because
 * net.* sysctls are per network namespace.
 */
export async function setSysctls(ns: string, kv: Record<string, string | number>): Promise<void> {
  const args = Object.entries(kv).map(([k, v]) => `${k}=${v}`);
  await mustRun('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...args], { timeoutMs: 10_000 });
}

/**
 * The sysctls a node needs to route between its TUN, its pod bridge and eth0.
 * rp_filter: the kernel applies max(conf.all, conf.<iface>), so both must be 0; `default` is
 * what interfaces created later (the daemon's TUN, the CNI bridge and veths) inherit.
 * IPv6 is off because the overlay is IPv4-only: otherwise autoconf and MLD reports would be
 * routed into the TUN and show up as noise in the datapath's counters.
 */
export function nodeSysctls(iface: string): Record<string, number> {
  return {
    'net.ipv4.ip_forward': 1,
    'net.ipv4.conf.all.rp_filter': 0,
    'net.ipv4.conf.default.rp_filter': 0,
    [`net.ipv4.conf.${iface}.rp_filter`]: 0,
    'net.ipv6.conf.all.disable_ipv6': 1,
    'net.ipv6.conf.default.disable_ipv6': 1,
  };
}

/** Pods: no forwarding, but the same loose reverse-path check and no IPv6, for the same reasons. */
export const POD_SYSCTLS: Record<string, number> = {
  'net.ipv4.conf.all.rp_filter': 0,
  'net.ipv4.conf.default.rp_filter': 0,
  'net.ipv6.conf.all.disable_ipv6': 1,
  'net.ipv6.conf.default.disable_ipv6': 1,
};

/** A link's MTU and (lower-case) MAC address in namespace `ns`, as `ip -j link show` reports them. */
export async function linkInfo(ns: string, dev: string): Promise<{ mtu: number; address: string }> {
  const r = await mustNsRun(ns, ['ip', '-j', 'link', 'show', 'dev', dev], { timeoutMs: 10_000 });
  const [l] = JSON.parse(r.stdout) as { mtu: number; address: string }[];
  if (!l) throw new Error(`no link ${dev} in ${ns}`);
  return { mtu: l.mtu, address: String(l.address).toLowerCase() };
}
