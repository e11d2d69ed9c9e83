// The masquerade and forward rules on a real netns lab (two nodes, one pod each, udp backend)
// with an "outside" host beyond the nodes (test/support/outside-host.ts): a pod reaches it with
// its node's address as source, pods reach each other with their own, a FORWARD policy of DROP
// does not stop pod traffic while the forward rules are on and does once they are off, flushed
// rules come back at the next resync, a crash leaves them and the next start replaces them
// without duplicates, a clean stop removes them. Once with iptables, once with native nftables
// (net-conf EnableNFTables). Every iptables and nft command runs inside a lab namespace.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  daemonStatus,
  findNode,
  killControl,
  labDown,
  labUp,
  mustReadState,
  restartDaemon,
  startControl,
  startDaemon,
  stopDaemon,
  type LabState,
} from '../../src/lab';
import { writeState } from '../../src/lab/state';
import { run } from '../../src/lab/process';
import { iptablesForwardChain, iptablesMasqChain, type TrafficRulesStatus } from '../../src/daemon/traffic-rules';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';
import { until } from '../support/until';
import { addOutsideHost, inNs, OUTSIDE_IP, peerSeenBy, startPeerEcho, type OutsideHost, type PeerEcho } from '../support/outside-host';

const API_DAEMON = join(__dirname, '..', 'support', 'api-daemon.cjs');
const NETWORK = '10.244.0.0/16';
/**
 * Per test: a restart waits for /readyz and the peers, and each connection that must fail waits
 * out socat's 3 s connect timeout; on a loaded 2-core machine that outgrows the 30 s default.
 */
const SLOW = { timeout: 120_000 };

async function rules(prefix: string, node: string): Promise<TrafficRulesStatus> {
  return ((await daemonStatus(prefix, node)) as { trafficRules: TrafficRulesStatus }).trafficRules;
}

/** `iptables -S` lines (the -N line dropped) as the rule specs iptables-restore was given. */
function specLines(chain: string, specs: string[][]): string[] {
  return specs.map((r) => ['-A', chain, ...r.map((w) => (w.includes(' ') ? `"${w}"` : w))].join(' '));
}

async function ruleLines(ns: string, table: string, chain: string): Promise<string[]> {
  return (await inNs(ns, ['iptables', '-w', '-t', table, '-S', chain]))
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('-A '));
}

interface MasqLab {
  prefix: string;
  state: LabState;
  outside?: OutsideHost;
  echoes: PeerEcho[];
}

/** A lab of two nodes with --ip-masq, resyncing every second (labUp tears down what it made if it fails). */
async function masqLab(tag: string): Promise<MasqLab> {
  const prefix = uniquePrefix(tag);
  await ensureBuilt();
  const state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'udp', daemonArgs: ['--ip-masq', '--iptables-resync', '1'] });
  return { prefix, state, echoes: [] };
}

/** The outside host, an echo server on it and one in n2's pod. */
async function addEchoes(lab: MasqLab): Promise<void> {
  lab.outside = await addOutsideHost(lab.state);
  lab.echoes.push(await startPeerEcho(lab.outside.ns, OUTSIDE_IP));
  const p2 = lab.state.pods.find((p) => p.node === 'n2')!;
  lab.echoes.push(await startPeerEcho(p2.ns, p2.ip));
}

async function teardown(lab: MasqLab | undefined): Promise<void> {
  if (!lab) return;
  for (const e of lab.echoes) e.stop();
  await lab.outside?.remove();
  await labDown(lab.prefix);
}

/** Checks both paths: pod → outside shows the node's address, pod → pod shows the pod's own. */
async function expectTranslation(state: LabState): Promise<void> {
  const [p1, p2] = [state.pods.find((p) => p.node === 'n1')!, state.pods.find((p) => p.node === 'n2')!];
  const [n1, n2] = state.nodes;
  expect(await peerSeenBy(p1.ns, OUTSIDE_IP), 'n1/p1 → outside').toBe(n1.publicIp);
  expect(await peerSeenBy(p2.ns, OUTSIDE_IP), 'n2/p1 → outside').toBe(n2.publicIp);
  expect(await peerSeenBy(p1.ns, p2.ip), 'n1/p1 → n2/p1').toBe(p1.ip);
}

describe.skipIf(process.getuid?.() !== 0)('masquerade and forward rules (iptables) on a netns lab with an outside host', SLOW, () => {
  let lab: MasqLab | undefined;
  let state: LabState;
  let prefix: string;

  beforeAll(async () => {
    lab = await masqLab('masq');
    ({ state, prefix } = lab);
    await addEchoes(lab);
  }, 180_000);

  afterAll(async () => {
    await teardown(lab);
  }, 60_000);

  it('status and the node’s iptables show the rules: WEFT-POSTRTG from POSTROUTING, WEFT-FWD from FORWARD', async () => {
    for (const n of state.nodes) {
      const st = await rules(prefix, n.name);
      expect(st).toMatchObject({ backend: 'iptables', masquerade: true, randomFully: true, forward: true, installed: true, resyncPeriodS: 1 });
      const spec = { network: NETWORK, subnet: ((await daemonStatus(prefix, n.name)) as { lease: { subnet: string } }).lease.subnet };
      const masq = iptablesMasqChain({ ...spec, masquerade: true, forward: true, randomFully: true });
      expect(await ruleLines(n.ns, 'nat', 'WEFT-POSTRTG')).toEqual(specLines('WEFT-POSTRTG', masq.rules));
      expect(await ruleLines(n.ns, 'nat', 'POSTROUTING')).toEqual(specLines('POSTROUTING', [masq.jump]));
      const fwd = iptablesForwardChain(spec);
      expect(await ruleLines(n.ns, 'filter', 'WEFT-FWD')).toEqual(specLines('WEFT-FWD', fwd.rules));
      expect(await ruleLines(n.ns, 'filter', 'FORWARD')).toEqual(specLines('FORWARD', [fwd.jump]));
    }
  });

  it('a pod reaches the outside host with its node’s address as source; pods reach each other with their own', async () => {
    await expectTranslation(state);
  });

  it('with the nodes’ FORWARD policy DROP (a Docker host’s), pod traffic still flows through WEFT-FWD', async () => {
    for (const n of state.nodes) await inNs(n.ns, ['iptables', '-w', '-P', 'FORWARD', 'DROP']);
    await expectTranslation(state);
    const counted = await inNs(state.nodes[0].ns, ['iptables', '-w', '-nvxL', 'WEFT-FWD']);
    const packets = counted
      .split('\n')
      .filter((l) => l.includes('ACCEPT'))
      .map((l) => Number(l.trim().split(/\s+/)[0]));
    expect(
      packets.every((p) => p > 0),
      counted,
    ).toBe(true);
  });

  it('rules flushed by hand (iptables -t nat -F, iptables -F FORWARD) are back within a resync period, counted in /status', async () => {
    const n1 = state.nodes[0];
    const before = (await rules(prefix, 'n1')).resyncs;
    const masqBefore = await ruleLines(n1.ns, 'nat', 'WEFT-POSTRTG');
    await inNs(n1.ns, ['iptables', '-w', '-t', 'nat', '-F']);
    await inNs(n1.ns, ['iptables', '-w', '-F', 'FORWARD']);
    expect(await ruleLines(n1.ns, 'nat', 'WEFT-POSTRTG')).toEqual([]);
    const st = await until('the resync', async () => {
      const s = await rules(prefix, 'n1');
      return s.resyncs > before && s;
    });
    expect(st.lastResyncReason).toMatch(/WEFT-POSTRTG/);
    expect(await ruleLines(n1.ns, 'nat', 'WEFT-POSTRTG')).toEqual(masqBefore);
    expect(await ruleLines(n1.ns, 'nat', 'POSTROUTING')).toHaveLength(1);
    expect(await ruleLines(n1.ns, 'filter', 'FORWARD')).toHaveLength(1);
    await expectTranslation(state);
    const log = readFileSync(n1.logFile, 'utf8');
    expect(log).toContain('traffic rules were removed or changed; putting them back');
  });

  it('a crashed daemon leaves its rules; the next start replaces them, no duplicates', async () => {
    const n1 = state.nodes[0];
    const masqBefore = await ruleLines(n1.ns, 'nat', 'WEFT-POSTRTG');
    await stopDaemon(prefix, 'n1', 'SIGKILL');
    expect(await ruleLines(n1.ns, 'nat', 'WEFT-POSTRTG')).toEqual(masqBefore);
    await startDaemon(prefix, 'n1');
    expect(await ruleLines(n1.ns, 'nat', 'WEFT-POSTRTG')).toEqual(masqBefore);
    expect(await ruleLines(n1.ns, 'nat', 'POSTROUTING')).toHaveLength(1);
    expect(await ruleLines(n1.ns, 'filter', 'FORWARD')).toHaveLength(1);
    expect(await ruleLines(n1.ns, 'filter', 'WEFT-FWD')).toHaveLength(2);
    await expectTranslation(state);
  });

  it('forward rules off (DaemonOptions.iptablesForwardRules false): FORWARD DROP stops pod traffic; ACCEPT lets it through again', async () => {
    const s = mustReadState(prefix);
    const n = findNode(s, 'n1');
    const original = n.argv;
    await stopDaemon(prefix, 'n1');
    const opts = {
      control: s.control.address,
      publicIp: n.publicIp,
      iface: n.iface,
      subnetFile: n.subnetFile,
      healthzPort: n.healthzPort,
      ipMasq: true,
      iptablesForwardRules: false,
      iptablesResyncS: 1,
    };
    n.argv = ['ip', 'netns', 'exec', n.ns, s.nodeBin, API_DAEMON, JSON.stringify(opts), n.subnetFile];
    writeState(s);
    try {
      await startDaemon(prefix, 'n1');
      expect(await rules(prefix, 'n1')).toMatchObject({ masquerade: true, forward: false, installed: true });
      const noChain = await run('ip', ['netns', 'exec', n.ns, 'iptables', '-w', '-S', 'WEFT-FWD']);
      expect(noChain.code).not.toBe(0);
      expect(await ruleLines(n.ns, 'filter', 'FORWARD')).toEqual([]);
      const [p1, p2] = [state.pods.find((p) => p.node === 'n1')!, state.pods.find((p) => p.node === 'n2')!];
      expect(await peerSeenBy(p1.ns, OUTSIDE_IP), 'n1/p1 → outside through FORWARD DROP').toBe('');
      expect(await peerSeenBy(p1.ns, p2.ip), 'n1/p1 → n2/p1 through FORWARD DROP').toBe('');
      await inNs(n.ns, ['iptables', '-w', '-P', 'FORWARD', 'ACCEPT']);
      await expectTranslation(state);
      await inNs(n.ns, ['iptables', '-w', '-P', 'FORWARD', 'DROP']);
    } finally {
      await stopDaemon(prefix, 'n1');
      const again = mustReadState(prefix);
      findNode(again, 'n1').argv = original;
      writeState(again);
    }
    await startDaemon(prefix, 'n1');
    await expectTranslation(state);
  });

  it('a clean stop removes every weft rule and chain, and nothing else', async () => {
    for (const n of state.nodes) {
      await stopDaemon(prefix, n.name);
      const saved = await inNs(n.ns, ['iptables-save']);
      expect(saved).not.toMatch(/WEFT|weft/);
      expect(saved).toContain(':FORWARD DROP'); // the policy the test set is the host's, not ours to reset
      expect(await inNs(n.ns, ['nft', 'list', 'ruleset'])).not.toContain('table ip weft');
    }
  });
});

describe.skipIf(process.getuid?.() !== 0)('masquerade and forward rules (native nftables, EnableNFTables) on a netns lab with an outside host', SLOW, () => {
  let lab: MasqLab | undefined;
  let state: LabState;
  let prefix: string;

  beforeAll(async () => {
    lab = await masqLab('masqnft');
    ({ state, prefix } = lab);
    // The lab wrote a net-conf without EnableNFTables and its daemons installed iptables rules:
    // switch the network to nftables and restart, as an operator would.
    const conf = JSON.parse(readFileSync(state.control.netConfPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(state.control.netConfPath, JSON.stringify({ ...conf, EnableNFTables: true }, null, 2) + '\n');
    await killControl(prefix, 'SIGTERM');
    await startControl(prefix);
    for (const n of state.nodes) await restartDaemon(prefix, n.name);
    await addEchoes(lab);
  }, 180_000);

  afterAll(async () => {
    await teardown(lab);
  }, 60_000);

  it('status says nftables; table ip weft holds the rules; the iptables chains of the run before are gone', async () => {
    for (const n of state.nodes) {
      const st = await rules(prefix, n.name);
      expect(st).toMatchObject({ backend: 'nftables', masquerade: true, forward: true, installed: true, installedIn: ['nftables table ip weft'] });
      const subnet = ((await daemonStatus(prefix, n.name)) as { lease: { subnet: string } }).lease.subnet;
      const table = await inNs(n.ns, ['nft', 'list', 'table', 'ip', 'weft']);
      for (const line of [
        'type nat hook postrouting priority srcnat; policy accept;',
        'meta mark & 0x00004000 == 0x00004000 return',
        `ip saddr ${subnet} ip daddr ${NETWORK} return`,
        `ip saddr ${NETWORK} ip daddr ${subnet} return`,
        `ip saddr != ${NETWORK} ip daddr ${subnet} return`,
        `ip saddr ${NETWORK} ip daddr != 224.0.0.0/4 masquerade fully-random`,
        `ip saddr != ${NETWORK} ip daddr ${NETWORK} masquerade fully-random`,
        'type filter hook forward priority filter; policy accept;',
        `ip saddr ${NETWORK} accept`,
        `ip daddr ${NETWORK} accept`,
      ]) {
        expect(table).toContain(line);
      }
      expect(await inNs(n.ns, ['iptables-save'])).not.toMatch(/WEFT/);
    }
  });

  it('a pod reaches the outside host with its node’s address as source; pods reach each other with their own', async () => {
    await expectTranslation(state);
  });

  it('a deleted table and a flushed chain are back within a resync period', async () => {
    const n1 = state.nodes[0];
    const before = await inNs(n1.ns, ['nft', 'list', 'table', 'ip', 'weft']);
    const r0 = (await rules(prefix, 'n1')).resyncs;
    await inNs(n1.ns, ['nft', 'delete', 'table', 'ip', 'weft']);
    await until('the resync after delete table', async () => (await rules(prefix, 'n1')).resyncs > r0);
    expect(await inNs(n1.ns, ['nft', 'list', 'table', 'ip', 'weft'])).toBe(before);
    await inNs(n1.ns, ['nft', 'flush', 'chain', 'ip', 'weft', 'postrouting']);
    await until('the resync after flush chain', async () => (await rules(prefix, 'n1')).resyncs > r0 + 1);
    expect(await inNs(n1.ns, ['nft', 'list', 'table', 'ip', 'weft'])).toBe(before);
    await expectTranslation(state);
  });

  it('a crashed daemon leaves its table; the next start replaces it, one table, no duplicate rules', async () => {
    const n1 = state.nodes[0];
    const before = await inNs(n1.ns, ['nft', 'list', 'table', 'ip', 'weft']);
    await stopDaemon(prefix, 'n1', 'SIGKILL');
    expect(await inNs(n1.ns, ['nft', 'list', 'table', 'ip', 'weft'])).toBe(before);
    await startDaemon(prefix, 'n1');
    expect(await inNs(n1.ns, ['nft', 'list', 'table', 'ip', 'weft'])).toBe(before);
    expect((await inNs(n1.ns, ['nft', 'list', 'tables'])).match(/table ip weft/g)).toHaveLength(1);
    await expectTranslation(state);
  });

  it('iptables’ FORWARD policy DROP: the daemon says an nftables accept cannot override it', async () => {
    // nftables ends evaluation of a packet only on drop: an accept in table ip weft leaves it to
    // the next base chain on the hook, where iptables' DROP policy still drops it.
    const n1 = state.nodes[0];
    await inNs(n1.ns, ['iptables', '-w', '-P', 'FORWARD', 'DROP']);
    try {
      await restartDaemon(prefix, 'n1');
      expect(readFileSync(n1.logFile, 'utf8')).toContain('cannot override a drop in another table');
    } finally {
      await inNs(n1.ns, ['iptables', '-w', '-P', 'FORWARD', 'ACCEPT']);
    }
  });

  it('a clean stop deletes table ip weft', async () => {
    for (const n of state.nodes) {
      await stopDaemon(prefix, n.name);
      const ruleset = await inNs(n.ns, ['nft', 'list', 'ruleset']);
      expect(ruleset).not.toContain('table ip weft');
      expect(ruleset).not.toMatch(/WEFT/);
    }
  });
});
