// The one node assembly: from our lease, the cluster network and the node's devices, build the
// backend, the peer set (route table and sender map), the pipeline and the datapath loop.
// `weft daemon` calls it with the real TUN and sockets (src/daemon/daemon.ts); weft trace,
// replay and wire call it with in-memory ones (offline.ts, io/memory-*.ts). Whatever the
// daemon runs, an offline node runs too, because there is only this one way to build either.

import type { PacketDevice } from '../io/packet-device';
import type { Transport } from '../io/transport';
import { parseCidr, parseIpv4, type Cidr } from '../route/address';
import type { Backend } from './backend';
import { BACKENDS, DEFAULT_VNI, type BackendConfig, type BackendSpec, type BackendType } from './backends';
import { Datapath, DEFAULT_BATCH } from './datapath';
import type { HostRoutes } from './host-routes';
import type { Peer, PeerLease } from './peer';
import { PeerSet } from './peers';
import { Pipeline } from './pipeline';
import { DatapathStats } from './stats';

export interface NodeDevices {
  /** The pods' side: the TUN device (or its in-memory double). */
  tun: PacketDevice;
  /** The underlay: the backend's sockets (or their in-memory double). */
  transport: Transport;
}

export interface NodeLog {
  info(o: object, m: string): void;
  warn(o: object, m: string): void;
}

export interface NodeOptions {
  /** net-conf.json's Backend, defaults applied (control/netconfig.ts validates it). */
  backend: BackendConfig;
  /** The cluster network (net-conf's Network). */
  network: Cidr;
  /** Our own lease: the subnet this node routes for, and the public IP it sends from. */
  lease: PeerLease;
  /** MTU of the underlay interface; the tunnel carries this minus the backend's overhead. */
  underlayMtu: number;
  /** The address sent from, when it is not the lease's publicIp (behind a NAT; see BackendParams). */
  underlayIp?: string;
  /**
   * Required when the backend needs a TUN (every backend but host-gw); host-gw has no
   * userspace datapath and is given none.
   */
  devices?: NodeDevices;
  /**
   * Kernel routes to peers: host-gw's whole job, and DirectRouting's on-link peers. Required
   * when either applies (see usesHostRoutes).
   */
  hostRoutes?: HostRoutes;
  stats?: DatapathStats;
  batchSize?: number;
  /** Datapath busy polling, µs of quiet before sleeping (0: sleep when idle). */
  busyPollUs?: number;
  /** ipip's first outer Identification (trace/replay fix it; the daemon leaves it random). */
  ipipFirstId?: number;
  log?: NodeLog;
}

/** Largest inner packet the backend's tunnel carries over an underlay of `underlayMtu`: the TUN MTU. */
export function tunnelMtu(type: BackendType, underlayMtu: number): number {
  return underlayMtu - BACKENDS[type].overhead;
}

/**
 * The MTU the backend's underlay packets may use: Backend.MTU where net-conf gives one (flannel's
 * vxlan "MTU": the outgoing packets' MTU, its device getting 50 less), else the underlay
 * interface's own. Larger than the interface's, full-size tunnel packets could not leave it (the
 * vxlan socket sends with DF clear, so the kernel would fragment every one of them), so that is
 * refused rather than run slowly.
 */
export function underlayMtuFor(backend: BackendConfig, iface: { name: string; mtu: number }): number {
  if (backend.mtu === undefined) return iface.mtu;
  if (backend.mtu > iface.mtu) {
    throw new Error(`net-conf.json: Backend.MTU ${backend.mtu} is larger than the MTU of ${iface.name}, the underlay interface: at most ${iface.mtu}`);
  }
  return backend.mtu;
}

/** Whether a node with this Backend installs kernel routes to peers (host-gw, or DirectRouting where the backend takes it). */
export function usesHostRoutes(backend: BackendConfig): boolean {
  const spec: BackendSpec = BACKENDS[backend.type];
  return !spec.needsTun || (spec.directRouting && backend.directRouting === true);
}

export interface Node {
  readonly type: BackendType;
  readonly backend: Backend;
  readonly peers: PeerSet;
  /** The TUN MTU: underlay MTU minus the backend's overhead. */
  readonly tunnelMtu: number;
  readonly stats: DatapathStats;
  /** The kernel routes this node installs, when usesHostRoutes says it does. */
  readonly hostRoutes: HostRoutes | undefined;
  /** The per-packet decisions; host-gw has none (the kernel forwards). */
  readonly pipeline: Pipeline | undefined;
  /** The I/O loop around the pipeline, not yet started. */
  readonly datapath: Datapath | undefined;
}

export function assembleNode(opts: NodeOptions): Node {
  const type = opts.backend.type;
  const spec: BackendSpec = BACKENDS[type];
  const subnet = parseCidr(opts.lease.subnet);
  const publicIp = parseIpv4(opts.lease.publicIp);
  const stats = opts.stats ?? new DatapathStats();
  const mtu = tunnelMtu(type, opts.underlayMtu);
  const port = opts.backend.port ?? spec.defaultPort;

  const routes = usesHostRoutes(opts.backend) ? opts.hostRoutes : undefined;
  if (spec.needsTun && routes === undefined && usesHostRoutes(opts.backend)) {
    throw new Error(`the ${type} backend with DirectRouting needs kernel host routes, and none were given`);
  }
  const backend = spec.create({
    publicIp,
    underlayIp: opts.underlayIp === undefined ? undefined : parseIpv4(opts.underlayIp),
    subnet,
    port,
    vni: opts.backend.vni ?? DEFAULT_VNI,
    hostRoutes: routes,
    ipipFirstId: opts.ipipFirstId,
    log: opts.log,
  });

  // DirectRouting (flannel's vxlan and ipip): a peer on our own underlay subnet is reached by a
  // host-gw route; the rest keep the tunnel. host-gw's backend installs routes for every peer itself.
  const direct = spec.needsTun ? routes : undefined;
  const peers = new PeerSet(
    type,
    port,
    opts.lease,
    (added, removed) => {
      // The backend prepares per-peer state synchronously, before the new route snapshot is
      // swapped in; kernel routes follow asynchronously, serialised inside HostRoutes.
      for (const p of added) {
        backend.onPeerAdded(p);
        // Until its route is in (or if ip refuses it), an on-link peer's traffic still takes the
        // tunnel through the Network route.
        if (direct && direct.onLink(p.publicIp)) void direct.add(p).then((ok) => markDirect(p, ok));
      }
      for (const p of removed) {
        backend.onPeerRemoved(p);
        if (direct) void direct.remove(p);
      }
    },
    opts.log,
  );

  let pipeline: Pipeline | undefined;
  let datapath: Datapath | undefined;
  if (spec.needsTun) {
    if (!opts.devices) throw new Error(`the ${type} backend needs a TUN device and an underlay transport`);
    const batchSize = opts.batchSize ?? DEFAULT_BATCH;
    pipeline = new Pipeline({
      backend,
      routes: peers.routes,
      peersByAddr: peers.byAddr,
      network: opts.network,
      localSubnet: subnet,
      // ICMP errors we originate carry the TUN device's address (the subnet's .0), as a router
      // uses its interface address.
      icmpSource: subnet.addr,
      stats,
      batchSize,
      tunnelMtu: mtu,
    });
    datapath = new Datapath(opts.devices.tun, opts.devices.transport, pipeline, { batchSize, busyPollUs: opts.busyPollUs });
  }
  return { type, backend, peers, tunnelMtu: mtu, stats, hostRoutes: routes, pipeline, datapath };
}

function markDirect(p: Peer, ok: boolean): void {
  if (ok) p.direct = true;
}
