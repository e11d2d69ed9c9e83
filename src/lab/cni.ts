// Attaching pods the way kubelet does through a container runtime: the node's CNI config is a
// conflist naming weft-cni (weft's CNI plugin, src/cni/), the runtime derives the plugin config
// from it and runs the plugin found in CNI_PATH (CNI spec 1.0: config on stdin, parameters in
// CNI_* environment variables, result JSON on stdout, error JSON on stdout with non-zero exit).
// weft-cni reads the node's subnet.env and delegates to the reference bridge + host-local, as
// flannel's plugin does.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseSubnetEnv, type SubnetEnv } from '../daemon/subnet-env';
import { run } from './process';
import { CNI_PLUGIN, labCniBinDir } from './state';

/** The node's subnet.env, or null while the daemon has not written it (or it is unreadable). */
export function readSubnetEnv(path: string): SubnetEnv | null {
  try {
    return parseSubnetEnv(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}

/** What a node of the lab needs in its CNI config: where its daemon writes subnet.env, its dirs. */
export interface CniNode {
  dir: string;
  subnetFile: string;
  /** host-local's dataDir. */
  cniDataDir: string;
}

/**
 * The node's /etc/cni/net.d/10-weft.conflist. Every node namespace shares this machine's file
 * system, so what is per node on a real machine is spelled out: the node's subnet.env, weft-cni's
 * dataDir, and host-local's dataDir (its default, /var/lib/cni/networks/<name>, would be shared by
 * every node, and two nodes would see each other's reservations). The delegate's ipMasq is off:
 * the lab's pods keep their own addresses across the overlay (flannel's default, ipMasq =
 * !FLANNEL_IPMASQ, would have the bridge masquerade everything leaving the node's subnet,
 * traffic to other nodes' pods included).
 */
export function weftConflist(n: CniNode): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: 'weft',
    plugins: [
      {
        type: CNI_PLUGIN,
        subnetFile: n.subnetFile,
        dataDir: join(n.dir, 'weft-cni'),
        delegate: { bridge: 'cni0', ipMasq: false },
        ipam: { dataDir: n.cniDataDir },
      },
    ],
  };
}

/**
 * The plugin config a runtime hands the first plugin of a conflist (CNI spec section 3,
 * "Deriving request configuration from plugin configuration"): the plugin's object with the
 * list's cniVersion and name.
 */
export function pluginConfig(conflist: Record<string, unknown>, index = 0): Record<string, unknown> {
  const plugins = conflist.plugins as Record<string, unknown>[];
  return { cniVersion: conflist.cniVersion, name: conflist.name, ...plugins[index] };
}

/**
 * Installs weft-cni into the lab's CNI bin dir as a runtime's installer would: an executable
 * named after the plugin type. A two-line launcher rather than a symlink to bin/weft-cni, so it
 * runs with the lab's node binary whatever PATH the caller has.
 */
/** A POSIX shell single-quoted word. */
function shellWord(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function installWeftCni(labDir: string, nodeBin: string, weftCni: string): string {
  const dir = labCniBinDir(labDir);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, CNI_PLUGIN);
  writeFileSync(file, `#!/bin/sh\nexec ${shellWord(nodeBin)} ${shellWord(weftCni)} "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}

export interface CniIp {
  address: string;
  gateway?: string;
  interface?: number;
}

export interface CniResult {
  cniVersion: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: CniIp[];
  routes?: { dst: string; gw?: string }[];
}

export interface CniCall {
  /** Namespace the plugin runs in: the node's, where it creates cni0 and the host-side veth. */
  nodeNs: string;
  containerId: string;
  /** Path of the pod's network namespace. */
  netns: string;
  ifname: string;
  config: Record<string, unknown>;
  /** CNI_PATH: where the plugin named by config.type, and its delegates, are looked for. */
  cniPath: string[];
  timeoutMs?: number;
}

async function invoke(command: 'ADD' | 'DEL' | 'CHECK', call: CniCall): Promise<string> {
  const type = String(call.config.type);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netns,
    CNI_IFNAME: call.ifname,
    CNI_PATH: call.cniPath.join(':'),
  };
  // As a runtime does: the first directory of CNI_PATH that has it.
  const plugin = call.cniPath.map((d) => join(d, type)).find((f) => existsSync(f));
  if (!plugin) throw new Error(`CNI plugin "${type}" not found in ${call.cniPath.join(':')}`);
  const r = await run('ip', ['netns', 'exec', call.nodeNs, plugin], {
    env,
    input: JSON.stringify(call.config),
    timeoutMs: call.timeoutMs ?? 20_000,
  });
  if (r.code !== 0) {
    // Spec: errors are a JSON object {code, msg, details} on stdout.
    let why = r.stdout.trim() || r.stderr.trim();
    try {
      const e = JSON.parse(r.stdout) as { code?: number; msg?: string; details?: string };
      why = `CNI error ${e.code}: ${e.msg}${e.details ? ` (${e.details})` : ''}`;
    } catch {
      /* not JSON: keep the raw text */
    }
    throw new Error(`CNI ${command} ${type} for ${call.containerId} ${r.timedOut ? 'timed out' : `failed (exit ${r.code})`}: ${why}`);
  }
  return r.stdout;
}

export async function cniAdd(call: CniCall): Promise<CniResult> {
  const out = await invoke('ADD', call);
  return JSON.parse(out) as CniResult;
}

export async function cniDel(call: CniCall): Promise<void> {
  await invoke('DEL', call);
}
