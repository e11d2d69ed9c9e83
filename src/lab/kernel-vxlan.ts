// Turns a lab node into a kernel VXLAN node set up exactly as flanneld's vxlan backend sets up
// flannel.1, so weft's vxlan datapath can be checked against the Linux kernel's on the wire and
// the kernel's figures measured beside weft's. What flanneld does (backend/vxlan in flannel):
//
//   ip link add flannel.1 type vxlan id <VNI> local <public ip> dev <iface> dstport <Port> nolearning
//   ip link set flannel.1 mtu <iface MTU - 50>; ip addr add <subnet .0>/32 dev flannel.1; up
//   acquire the lease with BackendData {"VNI": <VNI>, "VtepMAC": "<flannel.1 MAC>"}
//   for every other lease:
//     ip neigh replace <peer .0> lladdr <peer VtepMAC> dev flannel.1 nud permanent
//     bridge fdb replace <peer VtepMAC> dev flannel.1 dst <peer public ip> self permanent
//     ip route replace <peer subnet> via <peer .0> dev flannel.1 onlink
//
// The weft daemon of the node is stopped first (SIGTERM: its TUN and routes go with it), and
// the node's pods stay attached: the lease is re-acquired from the same public IP, so the
// control plane hands back the same subnet. Deleting the node namespace (labDown) deletes
// flannel.1 with everything programmed on it.
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeSubnetEnv } from '../daemon/subnet-env';
import { formatIpv4, parseCidr, parseIpv4 } from '../route/address';
import { readSubnetEnv } from './cni';
import { networkOf } from './addr';
import { linkInfo } from './netns';
import { mustNsRun, nsRun } from './process';
import { startDaemon, stopDaemon } from './lifecycle';
import { findNode, mustReadState, prefixOf, type LabNode, type LabRef, type LabState } from './state';

/** flanneld's device name for VNI 1 ("flannel.<VNI>"). */
export const KERNEL_VXLAN_DEVICE = 'flannel.1';

export interface KernelVxlanOptions {
  /**
   * Leave out the permanent neighbor entries, so the kernel has to ARP for its peers' VTEP
   * addresses. The request is broadcast, which a VXLAN device without learning only sends where
   * an all-zeros FDB entry points: one `bridge fdb append 00:00:00:00:00:00 ... dst <peer>` per
   * peer (head-end replication). Default false (flanneld's permanent entries).
   */
  arp?: boolean;
  /** VNI; default the lab network's (1). */
  vni?: number;
  /** UDP destination port; default 8472 (flannel's). */
  port?: number;
}

export interface KernelVxlanPeer {
  subnet: string;
  publicIp: string;
  vtepIp: string;
  vtepMac: string;
}

export interface KernelVxlanNode {
  node: string;
  ns: string;
  device: string;
  /** flannel.1's MAC, published as the lease's VtepMAC. */
  mac: string;
  /** The subnet's .0 address, on flannel.1 as /32. */
  vtepIp: string;
  subnet: string;
  publicIp: string;
  mtu: number;
  vni: number;
  port: number;
  arp: boolean;
  /** The leases programmed as neighbor/FDB/route entries. */
  peers: KernelVxlanPeer[];
  /** Leases left out (another backend type, or no usable VtepMAC), with why. */
  skipped: { subnet: string; publicIp: string; why: string }[];
}

interface WireLease {
  subnet: string;
  publicIp: string;
  backendType: string;
  backendData: Record<string, unknown>;
  expiration: number;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const VXLAN_OVERHEAD = 50;

/**
 * Stops `node`'s weft daemon and puts a kernel VXLAN device in its place, configured and
 * programmed as flanneld would. Returns what was set up. Programming is a snapshot of the
 * leases at the time of the call (flanneld keeps watching; this does not): call it again on a
 * node that is already a kernel node to pick up leases that changed since — it keeps the
 * device and its MAC and replaces the entries.
 */
export async function kernelVxlanNode(lab: LabRef, node: string, opts: KernelVxlanOptions = {}): Promise<KernelVxlanNode> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  const n = findNode(state, node);
  const vni = opts.vni ?? 1;
  const port = opts.port ?? 8472;
  const arp = opts.arp ?? false;
  const dev = KERNEL_VXLAN_DEVICE;
  const client = clientJs(state);

  // The subnet the pods were attached from: the re-acquired lease must be the same one.
  const before = readSubnetEnv(n.subnetFile);
  await stopDaemon(prefix, node, 'SIGTERM');

  const eth = await linkInfo(n.ns, n.iface);
  const mtu = eth.mtu - VXLAN_OVERHEAD;
  // An existing flannel.1 is kept, as flanneld keeps it across restarts: its MAC is what the
  // lease and every peer's entries already name.
  const existing = await vxlanInfo(n.ns, dev);
  if (existing && (existing.id !== vni || existing.port !== port || existing.local !== n.publicIp || existing.learning)) {
    await mustNsRun(n.ns, ['ip', 'link', 'del', dev], { timeoutMs: 10_000 });
  }
  if (!existing || (await vxlanInfo(n.ns, dev)) === null) {
    await mustNsRun(
      n.ns,
      ['ip', 'link', 'add', dev, 'type', 'vxlan', 'id', String(vni), 'local', n.publicIp, 'dev', n.iface, 'dstport', String(port), 'nolearning'],
      { timeoutMs: 10_000 },
    );
  }
  await mustNsRun(n.ns, ['ip', 'link', 'set', dev, 'mtu', String(mtu)], { timeoutMs: 10_000 });
  const mac = (await linkInfo(n.ns, dev)).address;
  if (!MAC_RE.test(mac)) throw new Error(`${dev} in ${n.ns} has no usable MAC (${mac})`);

  const { lease, leases } = await acquireInNode(state, n, client, { VNI: vni, VtepMAC: mac });
  const subnet = parseCidr(lease.subnet);
  if (before && networkOf(before.subnet) !== lease.subnet) {
    throw new Error(`${node}: control plane gave ${lease.subnet}, but the pods were attached from ${networkOf(before.subnet)}`);
  }
  const vtepIp = formatIpv4(subnet.addr);
  await mustNsRun(n.ns, ['ip', 'addr', 'replace', `${vtepIp}/32`, 'dev', dev], { timeoutMs: 10_000 });
  await mustNsRun(n.ns, ['ip', 'link', 'set', dev, 'up'], { timeoutMs: 10_000 });

  const peers: KernelVxlanPeer[] = [];
  const skipped: KernelVxlanNode['skipped'] = [];
  const ipLines: string[] = [];
  const bridgeLines: string[] = [];
  for (const l of leases) {
    if (l.publicIp === n.publicIp) continue;
    const peerMac = typeof l.backendData?.VtepMAC === 'string' ? l.backendData.VtepMAC.toLowerCase() : '';
    if (l.backendType !== 'vxlan') {
      skipped.push({ subnet: l.subnet, publicIp: l.publicIp, why: `backend type ${l.backendType}` });
      continue;
    }
    if (!MAC_RE.test(peerMac)) {
      skipped.push({ subnet: l.subnet, publicIp: l.publicIp, why: `no usable VtepMAC (${JSON.stringify(l.backendData?.VtepMAC)})` });
      continue;
    }
    const peerVtep = formatIpv4(parseCidr(l.subnet).addr);
    if (!arp) ipLines.push(`neigh replace ${peerVtep} lladdr ${peerMac} dev ${dev} nud permanent`);
    bridgeLines.push(`fdb replace ${peerMac} dev ${dev} dst ${l.publicIp} self permanent`);
    // Broadcasts (ARP requests) go to every all-zeros entry: one per peer.
    if (arp) bridgeLines.push(`fdb append 00:00:00:00:00:00 dev ${dev} dst ${l.publicIp} self permanent`);
    ipLines.push(`route replace ${l.subnet} via ${peerVtep} dev ${dev} onlink`);
    peers.push({ subnet: l.subnet, publicIp: l.publicIp, vtepIp: peerVtep, vtepMac: peerMac });
  }
  // Converge from whatever a previous call left (the other mode, peers since gone): no
  // neighbor entries (the permanent ones are re-added below; in ARP mode the kernel learns
  // them) and no all-zeros entries but the ones this call appends.
  await mustNsRun(n.ns, ['ip', 'neigh', 'flush', 'dev', dev, 'nud', 'all'], { timeoutMs: 10_000 });
  for (const f of await fdbOf(n.ns, dev)) {
    if (f.mac === '00:00:00:00:00:00' && f.dst) {
      await mustNsRun(n.ns, ['bridge', 'fdb', 'del', f.mac, 'dev', dev, 'dst', f.dst, 'self'], { timeoutMs: 10_000 });
    }
  }
  // FDB first: a route whose neighbor resolves before the FDB entry exists would send nowhere.
  if (bridgeLines.length) await mustNsRun(n.ns, ['bridge', '-batch', '-'], { input: bridgeLines.join('\n') + '\n', timeoutMs: 10_000 });
  if (ipLines.length) await mustNsRun(n.ns, ['ip', '-batch', '-'], { input: ipLines.join('\n') + '\n', timeoutMs: 10_000 });

  // flanneld rewrites subnet.env with its device's MTU; the lab's status reads the lease from it.
  await writeSubnetEnv(n.subnetFile, {
    network: before?.network ?? state.options.network,
    subnet: `${formatIpv4(subnet.addr + 1)}/${subnet.len}`,
    mtu,
    ipmasq: before?.ipmasq ?? false,
  });

  const result: KernelVxlanNode = {
    node,
    ns: n.ns,
    device: dev,
    mac,
    vtepIp,
    subnet: lease.subnet,
    publicIp: n.publicIp,
    mtu,
    vni,
    port,
    arp,
    peers,
    skipped,
  };
  writeFileSync(join(n.dir, 'kernel-vxlan.json'), JSON.stringify(result, null, 2) + '\n');
  return result;
}

/**
 * Undoes kernelVxlanNode: deletes flannel.1 (the kernel drops its routes, neighbor and FDB
 * entries with it) and starts the node's weft daemon again, which re-acquires the same subnet
 * and publishes its own VtepMAC. Waits for the daemon to be ready and to know its peers.
 */
export async function restoreWeftNode(lab: LabRef, node: string): Promise<LabNode> {
  const prefix = prefixOf(lab);
  const state = mustReadState(prefix);
  const n = findNode(state, node);
  await nsRun(n.ns, ['ip', 'link', 'del', KERNEL_VXLAN_DEVICE], { timeoutMs: 10_000 });
  return startDaemon(prefix, node);
}

/** The neighbor entries on flannel.1 as `ip -j neigh show dev` lists them. */
export async function kernelNeighbors(lab: LabRef, node: string): Promise<{ dst: string; lladdr?: string; state: string[] }[]> {
  const n = findNode(mustReadState(prefixOf(lab)), node);
  const r = await mustNsRun(n.ns, ['ip', '-j', 'neigh', 'show', 'dev', KERNEL_VXLAN_DEVICE], { timeoutMs: 10_000 });
  return JSON.parse(r.stdout || '[]') as { dst: string; lladdr?: string; state: string[] }[];
}

export interface FdbEntry {
  mac: string;
  dst?: string;
  state?: string;
  flags?: string[];
}

/** The FDB entries on flannel.1 as `bridge -j fdb show dev` lists them. */
export async function kernelFdb(lab: LabRef, node: string): Promise<FdbEntry[]> {
  const n = findNode(mustReadState(prefixOf(lab)), node);
  return fdbOf(n.ns, KERNEL_VXLAN_DEVICE);
}

async function fdbOf(ns: string, dev: string): Promise<FdbEntry[]> {
  const r = await mustNsRun(ns, ['bridge', '-j', 'fdb', 'show', 'dev', dev], { timeoutMs: 10_000 });
  return JSON.parse(r.stdout || '[]') as FdbEntry[];
}

function clientJs(state: LabState): string {
  // bin/weft.js runs dist/src/cli/main.js; the compiled registry client sits beside it.
  const p = join(dirname(state.weftJs), '..', 'dist', 'src', 'control', 'client.js');
  if (!existsSync(p)) throw new Error(`${p} missing: build first (npx tsc -p tsconfig.build.json)`);
  return p;
}

/** flannel.1's VXLAN parameters as `ip -d -j link show` reports them; null when there is no such device. */
async function vxlanInfo(ns: string, dev: string): Promise<{ id: number; port: number; local: string; learning: boolean } | null> {
  const r = await nsRun(ns, ['ip', '-d', '-j', 'link', 'show', 'dev', dev], { timeoutMs: 10_000 });
  if (r.code !== 0) return null;
  const [l] = JSON.parse(r.stdout) as { linkinfo?: { info_kind?: string; info_data?: { id?: number; port?: number; local?: string; learning?: boolean } } }[];
  const d = l?.linkinfo?.info_kind === 'vxlan' ? l.linkinfo.info_data : undefined;
  if (!d) return { id: -1, port: -1, local: '', learning: true }; // not a VXLAN device: replace it
  return { id: d.id ?? -1, port: d.port ?? -1, local: d.local ?? '', learning: d.learning ?? true };
}

// Runs inside the node namespace, because the control plane listens on the lab's underlay and
// nothing outside the lab can reach it. Parameters come in the environment (no quoting).
const ACQUIRE_SCRIPT = `
const { GrpcRegistry } = require(process.env.WEFT_CLIENT_JS);
const p = JSON.parse(process.env.WEFT_ACQUIRE);
const r = new GrpcRegistry(p.control);
(async () => {
  const lease = await r.acquire({ publicIp: p.publicIp, backendType: 'vxlan', backendData: p.backendData });
  const { leases } = await r.list();
  process.stdout.write(JSON.stringify({ lease, leases }));
})().then(() => { r.close(); }, (e) => { process.stderr.write(String(e && e.message || e) + '\\n'); r.close(); process.exitCode = 1; });
`;

/** Acquire (in effect renew: same public IP, same subnet) the node's lease with our BackendData, and list every lease. */
async function acquireInNode(
  state: LabState,
  n: LabNode,
  client: string,
  backendData: Record<string, unknown>,
): Promise<{ lease: WireLease; leases: WireLease[] }> {
  const env = {
    ...process.env,
    WEFT_CLIENT_JS: client,
    WEFT_ACQUIRE: JSON.stringify({ control: state.control.address, publicIp: n.publicIp, backendData }),
  };
  const r = await mustNsRun(n.ns, [state.nodeBin, '-e', ACQUIRE_SCRIPT], { env, timeoutMs: 20_000 });
  const out = JSON.parse(r.stdout) as { lease: WireLease; leases: WireLease[] };
  if (parseIpv4(out.lease.publicIp) !== parseIpv4(n.publicIp)) throw new Error(`acquire returned a lease for ${out.lease.publicIp}`);
  return out;
}
