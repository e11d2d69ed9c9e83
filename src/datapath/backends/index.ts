// The backends, in one table: the only place a backend name is written down. net-conf
// validation (control/netconfig.ts), the lab's flags, trace/replay/wire and the daemon all
// derive their lists and defaults from BACKENDS, and the node assembly (datapath/node.ts)
// builds whichever one Backend.Type names.

import type { Transport } from '../../io/transport';
import { UdpSocket } from '../../io/udp';
import type { Cidr } from '../../route/address';
import type { Backend } from '../backend';
import type { HostRoutes } from '../host-routes';
import { HostGwBackend } from './hostgw';
import { IPIP_OVERHEAD, IpipBackend, openIpipTransport } from './ipip';
import { UDP_DEFAULT_PORT, UDP_OVERHEAD, UdpBackend } from './udp';
import { openVxlanTransport, VXLAN_DEFAULT_PORT, VXLAN_DEFAULT_VNI, VXLAN_OVERHEAD, VxlanBackend, vtepMacFor, vxlanLeaseData } from './vxlan';

/** What a backend is built from: our node, and net-conf's Backend with its defaults applied. */
export interface BackendParams {
  /** Our underlay address (host order), as announced in our lease. */
  publicIp: number;
  /**
   * The address we send from when it is not publicIp (behind a NAT, --public-ip being the
   * outside address): ipip writes it as the outer source and expects it as the outer destination.
   */
  underlayIp?: number;
  /** Our lease. */
  subnet: Cidr;
  /** Backend.Port (udp, vxlan); the table's default when absent. */
  port: number;
  /** Backend.VNI (vxlan). */
  vni: number;
  /** Kernel routes to peers: host-gw installs one per peer (the node assembly passes them when it does). */
  hostRoutes?: HostRoutes;
  /**
   * ipip's first outer Identification. Unset, it starts at random (a restarted daemon does not
   * reuse its previous life's IDs); weft trace/replay fix it so the same input gives the same bytes.
   */
  ipipFirstId?: number;
  log?: { warn(o: object, m: string): void };
}

/** How the underlay sockets are opened. */
export interface TransportOptions {
  /**
   * Socket offloads: UDP_SEGMENT sends (gso) and UDP_GRO receives (gro) on the backend's UDP
   * sockets (udp; vxlan's send pool takes gso, its receive socket has GRO either way, see
   * openVxlanTransport). Raw sockets (ipip) have neither.
   */
  gso: boolean;
  gro: boolean;
  /** The TUN MTU: the largest inner packet, for cutting a kernel peer's super-datagrams. */
  tunnelMtu: number;
  /** Told once if the kernel refuses GSO on a socket for good (the sends go on as plain datagrams). */
  onGsoDisabled?: (socket: string) => void;
}

export interface BackendSpec {
  /** Underlay port the backend listens and sends on by default (0: not a UDP encapsulation). */
  readonly defaultPort: number;
  /** Bytes the encapsulation adds on the underlay: TUN MTU = underlay MTU - overhead. */
  readonly overhead: number;
  /** False for host-gw: the kernel forwards by routes, so there is no TUN and no userspace datapath. */
  readonly needsTun: boolean;
  /** Backend.DirectRouting is meaningful (flannel's vxlan and ipip backends take it). */
  readonly directRouting: boolean;
  /**
   * BackendData for a lease held by the node at `publicIp`, decided before the node knows its
   * subnet (flanneld likewise creates flannel.1, and so knows its MAC, before it acquires the
   * lease that announces it).
   */
  leaseData(publicIp: number, vni: number): Record<string, unknown>;
  create(p: BackendParams): Backend;
  /** Opens the underlay sockets, bound to our public IP (only backends that need a TUN have any). */
  openTransport(publicIp: number, port: number, opts: TransportOptions): Transport;
}

const noLeaseData = (_publicIp: number, _vni: number): Record<string, unknown> => ({});

function noTransport(): Transport {
  throw new Error('host-gw has no underlay transport: the kernel forwards by the routes weft installs');
}

export const BACKENDS = {
  udp: {
    defaultPort: UDP_DEFAULT_PORT,
    overhead: UDP_OVERHEAD,
    needsTun: true,
    directRouting: false,
    leaseData: noLeaseData,
    create: () => new UdpBackend(),
    openTransport: (publicIp, port, o) => UdpSocket.bind(publicIp, port, { gro: o.gro, gso: o.gso, onGsoDisabled: () => o.onGsoDisabled?.(`udp ${port}`) }),
  },
  vxlan: {
    defaultPort: VXLAN_DEFAULT_PORT,
    overhead: VXLAN_OVERHEAD,
    needsTun: true,
    directRouting: true,
    leaseData: (publicIp, vni) => vxlanLeaseData(vni, vtepMacFor(publicIp)),
    create: (p) =>
      new VxlanBackend({ vni: p.vni, port: p.port, localPublicIp: p.publicIp, localVtepIp: p.subnet.addr, vtepMac: vtepMacFor(p.publicIp), log: p.log }),
    openTransport: openVxlanTransport,
  },
  ipip: {
    defaultPort: 0,
    overhead: IPIP_OVERHEAD,
    needsTun: true,
    directRouting: true,
    leaseData: noLeaseData,
    create: (p) => new IpipBackend(p.underlayIp ?? p.publicIp, p.ipipFirstId),
    openTransport: (publicIp) => openIpipTransport(publicIp),
  },
  'host-gw': {
    defaultPort: 0,
    overhead: 0,
    needsTun: false,
    directRouting: false,
    leaseData: noLeaseData,
    create: (p) => {
      if (!p.hostRoutes) throw new Error('the host-gw backend needs kernel host routes, and none were given');
      return new HostGwBackend(p.hostRoutes);
    },
    openTransport: noTransport,
  },
} as const satisfies Record<string, BackendSpec>;

/** A backend's name as net-conf.json's Backend.Type and flannel's leases spell it. */
export type BackendType = keyof typeof BACKENDS;

/** net-conf.json's Backend object, as control/netconfig.ts validates it (defaults applied there). */
export interface BackendConfig {
  type: BackendType;
  /** Backend.Port (udp, vxlan); the table's defaultPort when absent. */
  port?: number;
  /** Backend.VNI (vxlan). */
  vni?: number;
  /** Backend.DirectRouting (vxlan, ipip). */
  directRouting?: boolean;
  /**
   * Backend.MTU (vxlan): the MTU of the outgoing underlay packets, as flannel's vxlan backend
   * reads it (its device gets MTU - 50); absent, the underlay interface's MTU.
   */
  mtu?: number;
}

export const BACKEND_TYPES = Object.keys(BACKENDS) as readonly BackendType[];

export const DEFAULT_VNI = VXLAN_DEFAULT_VNI;

export function isBackendType(t: unknown): t is BackendType {
  return typeof t === 'string' && Object.prototype.hasOwnProperty.call(BACKENDS, t);
}

export function backendSpec(type: BackendType): BackendSpec {
  return BACKENDS[type];
}
