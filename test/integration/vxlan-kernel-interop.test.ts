// weft's vxlan datapath against the Linux kernel's own VXLAN device, configured as flanneld
// configures flannel.1: a 2-node lab where n1 runs weft and n2 is turned into a kernel VXLAN
// node (weft daemon stopped, flannel.1 with VNI 1 on dstport 8472, nolearning, its MAC published
// as the lease's VtepMAC, permanent neighbor + FDB entries and onlink routes for n1). Pods on
// both nodes must reach each other both ways, TCP both directions. Then the kernel node loses
// its permanent neighbor entry for n1's VTEP address and must ARP for it: weft answers, and the
// kernel's neighbor table ends up holding weft's VtepMAC. Finally n2 goes back to weft.
//
// The kernel node keeps its offloads on, as flanneld leaves them: a veth passes the kernel's
// "hardware will fill it in" (CHECKSUM_PARTIAL) TCP segments through unfinished and TSO
// super-packets unsegmented, so weft receives 64 KB VXLAN datagrams whose inner TCP checksum
// holds only the pseudo-header sum. weft cuts them into the segments a NIC would have made and
// delivers them with valid checksums; the pods' TcpInCsumErrors stay unchanged.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonStatus, iperf3Pair, labDown, labExec, labUp, pingPair, type LabState } from '../../src/lab';
import { kernelFdb, kernelNeighbors, kernelVxlanNode, restoreWeftNode, KERNEL_VXLAN_DEVICE } from '../../src/lab/kernel-vxlan';
import { vtepMacFor } from '../../src/datapath/backends/vxlan';
import { formatMac } from '../../src/packet/ethernet';
import { parseIpv4 } from '../../src/route/address';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

interface Status {
  lease: { subnet: string; publicIp: string; backendType: string; backendData: { VNI?: number; VtepMAC?: string } };
  counters: { txPackets: number; rxPackets: number; drops: Record<string, number> };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.skipIf(process.getuid?.() !== 0)('weft vxlan ⇄ kernel VXLAN (flannel.1)', () => {
  const prefix = uniquePrefix('vxk');
  let state: LabState;
  const pod = (node: string) => state.pods.find((p) => p.node === node)!;
  const status = async (node: string) => (await daemonStatus(prefix, node)) as Status;

  /** Pings until one round fully succeeds (n1's daemon learns n2's new lease from its watch), bounded. */
  async function pingsEventually(from: string, to: string, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await pingPair(prefix, from, pod(to.split('/')[0]).ip, { count: 3, intervalS: 0.2, waitS: 1 });
      if (r.ok || Date.now() > deadline) return r;
      await sleep(300);
    }
  }

  async function flannelStats(): Promise<{ rx: number; tx: number }> {
    const r = await labExec(prefix, 'n2', ['ip', '-s', '-j', 'link', 'show', 'dev', KERNEL_VXLAN_DEVICE], { timeoutMs: 10_000 });
    const [l] = JSON.parse(r.stdout) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[];
    return { rx: l.stats64.rx.packets, tx: l.stats64.tx.packets };
  }

  beforeAll(async () => {
    await ensureBuilt();
    state = await labUp({ prefix, nodes: 2, pods: 1, backend: 'vxlan' });
  }, 180_000);

  afterAll(async () => {
    // Deleting n2's namespace deletes flannel.1 and everything programmed on it.
    await labDown(prefix);
  }, 60_000);

  it('n2 becomes a kernel VXLAN node programmed as flanneld would, keeping its subnet', async () => {
    const n1 = state.nodes[0];
    const n2 = state.nodes[1];
    const before = await status('n2');
    const weftN1 = await status('n1');
    const k = await kernelVxlanNode(prefix, 'n2');
    expect(k.subnet).toBe(before.lease.subnet);
    expect(k.mtu).toBe(1450);
    expect(k.mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    // The kernel's random MAC, not weft's derived one: the lease now names flannel.1.
    expect(k.mac).not.toBe(before.lease.backendData.VtepMAC);
    expect(k.peers).toEqual([
      { subnet: weftN1.lease.subnet, publicIp: n1.publicIp, vtepIp: weftN1.lease.subnet.split('/')[0], vtepMac: weftN1.lease.backendData.VtepMAC },
    ]);
    // n1's lease carries weft's deterministic VTEP MAC.
    expect(weftN1.lease.backendData).toEqual({ VNI: 1, VtepMAC: formatMac(vtepMacFor(parseIpv4(n1.publicIp))) });

    const link = await labExec(prefix, 'n2', ['ip', '-d', '-j', 'link', 'show', 'dev', KERNEL_VXLAN_DEVICE], { timeoutMs: 10_000 });
    const [l] = JSON.parse(link.stdout) as { mtu: number; address: string; linkinfo: { info_kind: string; info_data: Record<string, unknown> } }[];
    expect(l.linkinfo.info_kind).toBe('vxlan');
    expect(l.linkinfo.info_data).toMatchObject({ id: 1, port: 8472, local: n2.publicIp, learning: false });
    expect(l.mtu).toBe(1450);
    expect(l.address).toBe(k.mac);

    expect(await kernelNeighbors(prefix, 'n2')).toEqual([
      expect.objectContaining({ dst: k.peers[0].vtepIp, lladdr: k.peers[0].vtepMac, state: ['PERMANENT'] }),
    ]);
    const fdb = await kernelFdb(prefix, 'n2');
    expect(fdb).toContainEqual(expect.objectContaining({ mac: k.peers[0].vtepMac, dst: n1.publicIp, state: 'permanent' }));
    expect(fdb.some((f) => f.mac === '00:00:00:00:00:00')).toBe(false);
    const routes = await labExec(prefix, 'n2', ['ip', '-j', 'route', 'show', k.peers[0].subnet], { timeoutMs: 10_000 });
    expect(JSON.parse(routes.stdout)).toEqual([
      expect.objectContaining({ dst: k.peers[0].subnet, gateway: k.peers[0].vtepIp, dev: KERNEL_VXLAN_DEVICE, flags: ['onlink'] }),
    ]);
    // The weft daemon is gone, and with it weft0.
    const tun = await labExec(prefix, 'n2', ['ip', 'link', 'show', 'weft0'], { timeoutMs: 10_000 });
    expect(tun.code).not.toBe(0);
    // The control plane now announces flannel.1's MAC for n2.
    expect((await status('n1')).lease.subnet).toBe(weftN1.lease.subnet);
  }, 60_000);

  it('pods ping each other both ways through weft (n1) and the kernel (n2)', async () => {
    const k0 = await flannelStats();
    const c0 = (await status('n1')).counters;
    const there = await pingsEventually('n1/p1', 'n2/p1');
    expect(there.ok, there.output).toBe(true);
    const back = await pingsEventually('n2/p1', 'n1/p1');
    expect(back.ok, back.output).toBe(true);
    // Both datapaths carried it: the kernel device's counters and weft's.
    const k1 = await flannelStats();
    expect(k1.rx - k0.rx).toBeGreaterThanOrEqual(6);
    expect(k1.tx - k0.tx).toBeGreaterThanOrEqual(6);
    const c1 = (await status('n1')).counters;
    expect(c1.txPackets - c0.txPackets).toBeGreaterThanOrEqual(6);
    expect(c1.rxPackets - c0.rxPackets).toBeGreaterThanOrEqual(6);
    // Nothing the kernel sent was refused by weft's decap.
    for (const why of ['bad_encap', 'wrong_vni', 'wrong_mac', 'wrong_ethertype', 'unknown_peer']) expect(c1.drops[why] ?? 0, why).toBe(0);
  }, 60_000);

  /** TCP segments the pod's kernel refused for a bad checksum (absolute count, history untouched). */
  async function tcpCsumErrors(target: string): Promise<number> {
    const r = await labExec(prefix, target, ['nstat', '-asz', 'TcpInCsumErrors'], { timeoutMs: 10_000 });
    const m = /TcpInCsumErrors\s+(\d+)/.exec(r.stdout);
    if (!m) throw new Error(`nstat in ${target}: ${r.stdout}${r.stderr}`);
    return Number(m[1]);
  }

  it('carries TCP both directions (iperf3), every segment with a valid checksum', async () => {
    const e0 = [await tcpCsumErrors('n1/p1'), await tcpCsumErrors('n2/p1')];
    const up = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 3 });
    expect(up.ok, up.error).toBe(true);
    expect(up.bitsPerSecond).toBeGreaterThan(0);
    const down = await iperf3Pair(prefix, 'n1/p1', 'n2/p1', { seconds: 3, reverse: true });
    expect(down.ok, down.error).toBe(true);
    expect(down.bitsPerSecond).toBeGreaterThan(0);
    // What reached the pods through weft came from the kernel's VXLAN with its offloads on
    // (partial checksums, super-packets); weft delivered every segment with a valid checksum.
    expect([await tcpCsumErrors('n1/p1'), await tcpCsumErrors('n2/p1')]).toEqual(e0);
  }, 60_000);

  it("without a permanent neighbor entry the kernel ARPs for n1's VTEP address and weft answers", async () => {
    const n1 = state.nodes[0];
    const weftMac = (await status('n1')).lease.backendData.VtepMAC!;
    const consumed0 = (await status('n1')).counters.drops.consumed ?? 0;
    const k = await kernelVxlanNode(prefix, 'n2', { arp: true });
    const vtep = k.peers[0].vtepIp;
    // Nothing known about n1's VTEP address yet; broadcasts go to n1 through the all-zeros entry.
    expect((await kernelNeighbors(prefix, 'n2')).filter((e) => e.dst === vtep && e.lladdr)).toEqual([]);
    expect(await kernelFdb(prefix, 'n2')).toContainEqual(expect.objectContaining({ mac: '00:00:00:00:00:00', dst: n1.publicIp }));

    // The kernel node starts: its first packet to n1's pod needs the neighbor resolved.
    const r = await pingsEventually('n2/p1', 'n1/p1');
    expect(r.ok, r.output).toBe(true);
    const neigh = (await kernelNeighbors(prefix, 'n2')).find((e) => e.dst === vtep);
    expect(neigh, JSON.stringify(await kernelNeighbors(prefix, 'n2'))).toBeDefined();
    expect(neigh!.lladdr).toBe(weftMac);
    expect(
      neigh!.state.some((s) => ['REACHABLE', 'STALE', 'DELAY', 'PROBE'].includes(s)),
      neigh!.state.join(','),
    ).toBe(true);
    expect(neigh!.state).not.toContain('PERMANENT');
    // weft counted the request it answered.
    const c = (await status('n1')).counters;
    expect((c.drops.consumed ?? 0) - consumed0).toBeGreaterThanOrEqual(1);
    // And traffic passes both ways with the learned entry.
    const there = await pingsEventually('n1/p1', 'n2/p1');
    expect(there.ok, there.output).toBe(true);
    const tcp = await iperf3Pair(prefix, 'n2/p1', 'n1/p1', { seconds: 2 });
    expect(tcp.ok, tcp.error).toBe(true);
  }, 60_000);

  it("n2 goes back to weft: same subnet, weft's own VtepMAC, traffic flows again", async () => {
    await expect(status('n2')).rejects.toThrow(); // no weft daemon on n2 while it is a kernel node
    await restoreWeftNode(prefix, 'n2');
    const s2 = await status('n2');
    expect(s2.lease.backendData.VtepMAC).toBe(formatMac(vtepMacFor(parseIpv4(state.nodes[1].publicIp))));
    const gone = await labExec(prefix, 'n2', ['ip', 'link', 'show', KERNEL_VXLAN_DEVICE], { timeoutMs: 10_000 });
    expect(gone.code).not.toBe(0);
    for (const [a, b] of [
      ['n1/p1', 'n2/p1'],
      ['n2/p1', 'n1/p1'],
    ]) {
      const r = await pingsEventually(a, b);
      expect(r.ok, `${a} -> ${b}: ${r.output}`).toBe(true);
    }
  }, 90_000);
});
