import * as path from 'node:path';
import { makeDirs } from '../util/make-dirs';
import { replaceFile } from '../util/durable-file';

/**
 * flannel's subnet.env, the file CNI plugins (flannel's own, or a lab acting as kubelet)
 * read to configure pods: the cluster Network, this node's subnet written as its first
 * address (what the bridge takes as gateway), the pod MTU and whether the node masquerades.
 */
export interface SubnetEnv {
  network: string;
  subnet: string;
  mtu: number;
  ipmasq: boolean;
}

export function formatSubnetEnv(env: SubnetEnv): string {
  return `FLANNEL_NETWORK=${env.network}\n` + `FLANNEL_SUBNET=${env.subnet}\n` + `FLANNEL_MTU=${env.mtu}\n` + `FLANNEL_IPMASQ=${env.ipmasq}\n`;
}

export function parseSubnetEnv(text: string): SubnetEnv {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z_]+)=(.*)$/.exec(line);
    if (m) vars.set(m[1], m[2].trim());
  }
  const need = (k: string): string => {
    const v = vars.get(k);
    if (v === undefined) throw new Error(`subnet.env: ${k} missing`);
    return v;
  };
  const mtu = Number(need('FLANNEL_MTU'));
  if (!Number.isInteger(mtu) || mtu < 68) throw new Error(`subnet.env: bad FLANNEL_MTU "${vars.get('FLANNEL_MTU')}"`);
  return {
    network: need('FLANNEL_NETWORK'),
    subnet: need('FLANNEL_SUBNET'),
    mtu,
    ipmasq: vars.get('FLANNEL_IPMASQ') === 'true',
  };
}

/**
 * Write a file so that readers see the old content or the new, never a torn one, making its
 * directory first (replaceFile in util/durable-file.ts says how).
 */
export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const dir = path.dirname(file);
  // Not fs.mkdir's recursive mode: it spins for ever on a path under /proc (util/make-dirs.ts).
  await makeDirs(dir);
  await replaceFile(file, data, path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`), 0o644);
}

export async function writeSubnetEnv(file: string, env: SubnetEnv): Promise<void> {
  await writeFileAtomic(file, formatSubnetEnv(env));
}
