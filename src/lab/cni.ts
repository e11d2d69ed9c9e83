// Attaching pods the way kubelet and flannel's CNI plugin do: flannel's plugin reads subnet.env
// and delegates to the reference `bridge` plugin with `host-local` IPAM; the lab builds the same
// delegate configuration and runs the same binaries (CNI spec 1.0: config on stdin, parameters in
// CNI_* environment variables, result JSON on stdout, error JSON on stdout with non-zero exit).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseSubnetEnv, type SubnetEnv } from '../daemon/subnet-env';
import { networkOf } from './addr';
import { run } from './process';
import { CNI_BIN_DIR } from './state';

/** The node's subnet.env, or null while the daemon has not written it (or it is unreadable). */
export function readSubnetEnv(path: string): SubnetEnv | null {
  try {
    return parseSubnetEnv(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * flannel's delegate config for the bridge plugin. host-local's dataDir is per node: its default
 * (/var/lib/cni/networks/<name>) would be shared by every node namespace on this machine, so two
 * nodes would see each other's reservations.
 */
export function bridgeConfig(env: SubnetEnv, dataDir: string): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: 'weft',
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: false,
    mtu: env.mtu,
    ipam: {
      type: 'host-local',
      ranges: [[{ subnet: networkOf(env.subnet) }]],
      routes: [{ dst: env.network }],
      dataDir,
    },
  };
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
    CNI_PATH: CNI_BIN_DIR,
  };
  const r = await run('ip', ['netns', 'exec', call.nodeNs, join(CNI_BIN_DIR, type)], {
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
