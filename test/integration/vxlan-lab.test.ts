// The vxlan backend end to end in a 3-node netns lab of weft daemons: pods on every node reach
// pods on every other node, TCP flows, and tshark (a decoder nobody here wrote) reads RFC 7348
// on the underlay bridge: UDP to port 8472 between the nodes' public IPs, VNI 1, an inner
// Ethernet frame between the nodes' VTEP MACs as their leases publish them, around the pods'
// own IPv4 packet, and UDP source ports that differ between flows (RFC 7348 §5, ECMP entropy:
// one of the send pool's sockets per flow).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonStatus, iperf3Pair, labDown, labUp, pingPair, readSubnetEnv, type LabState, pingMatrix, pingFailures } from '../../src/lab';
import { flowSrcPort, vtepMacFor, VXLAN_SEND_SOCKETS, VXLAN_SRC_PORT_MAX, VXLAN_SRC_PORT_MIN } from '../../src/datapath/backends/vxlan';
import { buildIpv4Packet } from '../../src/packet/builder';
import { formatMac } from '../../src/packet/ethernet';
import { parseIpv4 } from '../../src/route/address';
import { ensureBuilt } from '../support/build';
import { tsharkCapture } from '../support/capture';
import { uniquePrefix } from '../support/prefix';

interface Status {
  lease: { subnet: string; publicIp: string; backendType: string; backendData: { VNI?: number; VtepMAC?: string } };
  counters: { txPackets: number; rxPackets: number; drops: Record<string, number> };
}

describe.skipIf(process.getuid?.() !== 0)('vxlan backend in a 3-node lab', () => {
  const prefix = uniquePrefix('vxl');
  let state: LabState;
  const status = async (node: string) => (await daemonStatus(prefix, node)) as Status;
  const podIp = (name: string) => state.pods.find((p) => p.name === name)!.ip;

  beforeAll(async () => {
    await ensureBuilt();
    // Two pods per node: two flows between the same pair of nodes, for the source-port check.
    state = await labUp({ prefix, nodes: 3, pods: 2, backend: 'vxlan' });
  }, 240_000);

  afterAll(async () => {
    await labDown(prefix);
  }, 60_000);

  it("gives pods an MTU 50 bytes below the underlay and publishes flannel's BackendData", async () => {
    for (const n of state.nodes) {
      expect(readSubnetEnv(n.subnetFile)?.mtu, n.name).toBe(1450);
      const s = await status(n.name);
      expect(s.lease.backendType).toBe('vxlan');
      // The VTEP MAC is derived from the public IP, so a restarted daemon publishes the same one.
      expect(s.lease.backendData).toEqual({ VNI: 1, VtepMAC: formatMac(vtepMacFor(parseIpv4(n.publicIp))) });
    }
  });

  it('carries ping between pods on every ordered pair of nodes', async () => {
    const names = state.nodes.map((n) => n.name);
    expect(pingFailures(await pingMatrix(state, { intervalS: 0.2 }))).toEqual([]);
    for (const n of names) {
      const c = (await status(n)).counters;
      expect(c.txPackets, n).toBeGreaterThan(0);
      expect(c.rxPackets, n).toBeGreaterThan(0);
      for (const why of ['bad_encap', 'wrong_vni', 'wrong_mac', 'wrong_ethertype', 'unknown_peer', 'send_failed']) {
        expect(c.drops[why] ?? 0, `${n} ${why}`).toBe(0);
      }
    }
  }, 90_000);

  it('carries TCP (iperf3) across nodes', async () => {
    const r = await iperf3Pair(prefix, 'n1/p1', 'n3/p1', { seconds: 3 });
    expect(r.ok, r.error).toBe(true);
    expect(r.bitsPerSecond).toBeGreaterThan(0);
  }, 60_000);

  it("is RFC 7348 on the wire: port 8472, VNI 1, leases' VTEP MACs, node and pod addresses, per-flow source ports", async () => {
    const mac = new Map<string, string>(); // public IP → VtepMAC from the lease
    for (const n of state.nodes) mac.set(n.publicIp, (await status(n.name)).lease.backendData.VtepMAC!);
    const [n1, n2, n3] = state.nodes;
    // Three flows: n1/p1 → n2/p1, n1/p2 → n2/p1 (same node pair, other pod), n1/p1 → n3/p1;
    // 3 echo requests and 3 replies each: 18 frames, bounded by count and by time.
    const flows: [string, string, string, string][] = [
      ['n1/p1', 'n2/p1', n1.publicIp, n2.publicIp],
      ['n1/p2', 'n2/p1', n1.publicIp, n2.publicIp],
      ['n1/p1', 'n3/p1', n1.publicIp, n3.publicIp],
    ];
    const capture = tsharkCapture(
      prefix,
      'ul',
      [
        '-n',
        '-i',
        'br0',
        '-f',
        'udp port 8472',
        '-d',
        'udp.port==8472,vxlan',
        '-c',
        '18',
        '-a',
        'duration:20',
        '-o',
        'ip.check_checksum:TRUE',
        '-T',
        'fields',
        '-E',
        'occurrence=a',
        '-E',
        'aggregator=,',
        '-e',
        'vxlan.flags',
        '-e',
        'vxlan.flag_i',
        '-e',
        'vxlan.gbp',
        '-e',
        'vxlan.vni',
        '-e',
        'vxlan.reserved8',
        '-e',
        'eth.src',
        '-e',
        'eth.dst',
        '-e',
        'eth.type',
        '-e',
        'ip.src',
        '-e',
        'ip.dst',
        '-e',
        'ip.ttl',
        '-e',
        'ip.flags.df',
        '-e',
        'ip.checksum.status',
        '-e',
        'udp.srcport',
        '-e',
        'udp.dstport',
        '-e',
        'udp.checksum',
        '-e',
        'icmp.type',
      ],
      30_000,
    );
    await capture.started;
    for (const [from, to] of flows) {
      const p = await pingPair(prefix, from, podIp(to), { count: 3, intervalS: 0.2 });
      expect(p.ok, `${from} -> ${to}: ${p.output}`).toBe(true);
    }
    const out = await capture.done;
    const rows = out.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
    expect(rows.length, `${out.stdout}\n${out.stderr}`).toBe(18);

    const portsByFlow = new Map<string, Set<number>>();
    for (const [flags, iFlag, gbp, vni, reserved8, ethSrc, ethDst, ethType, ipSrc, ipDst, ttl, df, csum, sport, dport, udpCsum, icmpType] of rows) {
      // eth fields: the underlay frame (veth MACs), then the inner frame weft wrote.
      const [, iEthSrc] = ethSrc.split(',');
      const [, iEthDst] = ethDst.split(',');
      const [oSrc, iSrc] = ipSrc.split(',');
      const [oDst, iDst] = ipDst.split(',');
      // First 32 bits: flags 0x08 (I only), then 24 reserved bits (tshark shows them as a 16-bit
      // flags field and the Group Policy ID); VNI 1; last 8 bits reserved, all zero (RFC 7348 §5).
      expect(Number(flags)).toBe(0x0800);
      expect(iFlag).toMatch(/^(1|True)$/);
      expect(Number(gbp)).toBe(0);
      expect(vni).toBe('1');
      expect(Number(reserved8)).toBe(0);
      expect(ethType).toBe('0x0800,0x0800');
      // Inner MACs: sender's and receiver's VtepMAC, as their leases publish them.
      expect(iEthSrc).toBe(mac.get(oSrc));
      expect(iEthDst).toBe(mac.get(oDst));
      // Outer: node addresses, TTL 64, DF clear (the kernel's VXLAN default: the send sockets
      // use IP_PMTUDISC_DONT), valid checksums on the outer header the kernel wrote and on the
      // inner one weft forwarded.
      expect(ttl.split(',')[0]).toBe('64');
      expect(df.split(',')[0]).toBe('0');
      expect(csum).toBe('1,1');
      expect(dport).toBe('8472');
      // The send sockets compute a UDP checksum (the kernel's VXLAN device sends 0; both are
      // valid, RFC 7348 §5; SO_NO_CHECK would rule out UDP_SEGMENT).
      expect(Number(udpCsum)).not.toBe(0);
      const port = Number(sport);
      expect(port).toBeGreaterThanOrEqual(VXLAN_SRC_PORT_MIN);
      expect(port).toBeLessThan(VXLAN_SRC_PORT_MAX);
      const flow = flows.find(
        ([f, t, a, b]) =>
          (oSrc === a && oDst === b && iSrc === podIp(f) && iDst === podIp(t)) || (oSrc === b && oDst === a && iSrc === podIp(t) && iDst === podIp(f)),
      );
      expect(flow, `unexpected frame ${oSrc}>${oDst} ${iSrc}>${iDst}`).toBeDefined();
      expect(icmpType).toBe(oSrc === flow![2] ? '8' : '0');
      // Per flow and sending node: each node's pool has its own (kernel-picked) ports.
      const key = `${flow![0]}>${flow![1]}@${oSrc}`;
      if (!portsByFlow.has(key)) portsByFlow.set(key, new Set());
      portsByFlow.get(key)!.add(port);
    }
    // Same flow, one source port per sending node (the hash orders the endpoints, so both
    // directions pick the same lane of their node's pool); on one node, flows whose hashes pick
    // different sockets leave from different ports, and flows that pick the same one share it.
    expect(portsByFlow.size).toBe(6);
    const perFlow = [...portsByFlow.entries()].map(([k, ports]) => {
      const [ft, sender] = k.split('@');
      const [f, t] = ft.split('>');
      const pkt = buildIpv4Packet({ src: podIp(f), dst: podIp(t), protocol: 1 });
      return { sender, socket: flowSrcPort(pkt, 0, pkt.length) % VXLAN_SEND_SOCKETS, ports: [...ports] };
    });
    for (const x of perFlow) expect(x.ports.length).toBe(1);
    for (const x of perFlow) {
      for (const y of perFlow) if (x.sender === y.sender) expect(x.ports[0] === y.ports[0]).toBe(x.socket === y.socket);
    }
    expect(new Set(perFlow.map((x) => x.socket)).size, 'the three flows should hash to more than one socket').toBeGreaterThan(1);
  }, 60_000);
});
