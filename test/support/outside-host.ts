// An "outside" host for a netns lab: a namespace on the lab's underlay bridge with an address
// outside both the underlay and the cluster network, and a route back to the nodes' underlay
// only (none to the pod subnets), so a pod's packet gets an answer only if it left its node
// masqueraded to the node's address. Plus a TCP server that answers each connection with the
// peer address it saw (socat's SOCAT_PEERADDR), which is what the receiving side's capture of the
// SYN would show, and a client for it.
import { spawn, type ChildProcess } from 'node:child_process';
import type { LabState } from '../../src/lab';
import { run } from '../../src/lab/process';
import { until } from './until';

/** TEST-NET-2 (RFC 5737): never routed anywhere, outside the lab's 192.168.77.0/24 and 10.244.0.0/16. */
export const OUTSIDE_IP = '198.51.100.10';
export const ECHO_PORT = 8471;

async function sh(args: string[]): Promise<string> {
  const r = await run(args[0], args.slice(1), { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`}`);
  return r.stdout;
}

/** `ip netns exec NS ARGS...` that must succeed; its stdout. */
export function inNs(ns: string, args: string[]): Promise<string> {
  return sh(['ip', 'netns', 'exec', ns, ...args]);
}

export interface OutsideHost {
  ns: string;
  ip: string;
  /** Deletes the namespace (and with it its end of the veth). Safe to call twice. */
  remove(): Promise<void>;
}

/**
 * Adds the outside host to STATE's flat underlay and gives every node a route to it and every
 * pod a default route through its node (the bridge plugin's gateway), as a pod has on a real node.
 */
export async function addOutsideHost(state: LabState): Promise<OutsideHost> {
  const ns = `${state.prefix}out`;
  const host: OutsideHost = {
    ns,
    ip: OUTSIDE_IP,
    remove: async () => {
      await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 });
    },
  };
  await sh(['ip', 'netns', 'add', ns]);
  try {
    await sh(['ip', '-n', state.switchNs, 'link', 'add', 'vout', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await sh(['ip', '-n', state.switchNs, 'link', 'set', 'vout', 'master', state.bridge, 'up']);
    await sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    await sh(['ip', '-n', ns, 'addr', 'add', `${OUTSIDE_IP}/32`, 'dev', 'eth0']);
    await sh(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
    // Back to the nodes' underlay only: an unmasqueraded pod address gets no answer.
    await sh(['ip', '-n', ns, 'route', 'add', state.options.underlay, 'dev', 'eth0']);
    for (const n of state.nodes) await sh(['ip', '-n', n.ns, 'route', 'replace', `${OUTSIDE_IP}/32`, 'dev', n.iface]);
    for (const p of state.pods) {
      if (!p.gateway) throw new Error(`pod ${p.name} has no gateway from CNI`);
      await sh(['ip', '-n', p.ns, 'route', 'replace', 'default', 'via', p.gateway]);
    }
  } catch (e) {
    await host.remove();
    throw e;
  }
  return host;
}

export interface PeerEcho {
  stop(): void;
}

/** A TCP server in NS on IP:PORT that writes back the peer address of each connection. */
export async function startPeerEcho(ns: string, ip: string, port = ECHO_PORT): Promise<PeerEcho> {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'socat', `TCP-LISTEN:${port},bind=${ip},fork,reuseaddr`, 'SYSTEM:echo $SOCAT_PEERADDR'], {
    stdio: 'ignore',
  });
  const echo = { stop: () => void child.kill('SIGKILL') };
  try {
    await until(
      `socat listening on ${ip}:${port} in ${ns}`,
      async () => (await run('ip', ['netns', 'exec', ns, 'ss', '-Htln', `sport = :${port}`])).stdout.includes(`${ip}:${port}`),
      5_000,
    );
  } catch (e) {
    echo.stop();
    throw e;
  }
  return echo;
}

/** Connects from NS to IP:PORT and returns the address the server saw us come from; '' when no answer. */
export async function peerSeenBy(ns: string, ip: string, port = ECHO_PORT): Promise<string> {
  const r = await run('ip', ['netns', 'exec', ns, 'socat', '-T', '3', '-', `TCP:${ip}:${port},connect-timeout=3`], { timeoutMs: 10_000, input: '' });
  return r.code === 0 ? r.stdout.trim() : '';
}
