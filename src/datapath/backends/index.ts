import type { NetworkConfig } from '../../control/netconfig';
import type { Transport } from '../../io/transport';
import { UdpSocket } from '../../io/udp';
import type { Cidr } from '../../route/address';
import type { Backend, BackendType } from '../backend';
import { formatMac } from '../../packet/ethernet';
import { IpipBackend, openIpipTransport } from './ipip';
import { UDP_DEFAULT_PORT, UdpBackend } from './udp';
import { openVxlanTransport, VXLAN_DEFAULT_PORT, VXLAN_DEFAULT_VNI, VxlanBackend, vtepMacFor } from './vxlan';

/** What the daemon needs to run the backend net-conf.json's Backend.Type names. */
export interface BackendSetup {
  type: BackendType;
  /** null for host-gw: the kernel forwards with routes weft installs; there is no userspace datapath. */
  backend: Backend | null;
  /** Underlay port the backend listens and sends on (0 for ipip and host-gw). */
  port: number;
  /** Backend.DirectRouting: on-link peers get host-gw routes, the rest go through the tunnel. */
  directRouting: boolean;
  /** Open the underlay transport, bound to our public IP. */
  openTransport(): Transport;
}

export interface NodeIdentity {
  publicIp: number;
  /** Our lease. */
  subnet: Cidr;
}

export interface BackendOptions {
  /**
   * ipip's first outer Identification. Unset, it starts at random (a restarted daemon does not
   * reuse its previous life's IDs); weft trace/replay fix it so the same input gives the same bytes.
   */
  ipipFirstId?: number;
}

export function backendType(config: NetworkConfig): BackendType {
  const t = config.backend.type;
  if (t === 'udp' || t === 'vxlan' || t === 'ipip' || t === 'host-gw') return t;
  throw new Error(`Backend.Type "${t}" is not one of udp, vxlan, ipip, host-gw`);
}

/**
 * BackendData for our lease, decided before we know our subnet (flanneld likewise creates
 * flannel.1, and so knows its MAC, before it acquires the lease that announces it).
 */
export function leaseDataFor(config: NetworkConfig, publicIp: number): Record<string, unknown> {
  switch (backendType(config)) {
    case 'vxlan':
      // flannel's vxlan BackendData: the VNI and the VTEP MAC peers put in their neighbor and FDB entries.
      return { VNI: config.backend.vni ?? VXLAN_DEFAULT_VNI, VtepMAC: formatMac(vtepMacFor(publicIp)) };
    default:
      return {};
  }
}

function noTransport(type: string): () => Transport {
  return () => {
    throw new Error(`the ${type} backend has no underlay transport`);
  };
}

/** Build the backend net-conf.json's Backend.Type names, for a node that holds `node.subnet`. */
export function createBackend(config: NetworkConfig, node: NodeIdentity, opts: BackendOptions = {}): BackendSetup {
  const type = backendType(config);
  switch (type) {
    case 'udp': {
      const port = config.backend.port ?? UDP_DEFAULT_PORT;
      return { type, backend: new UdpBackend(), port, directRouting: false, openTransport: () => UdpSocket.bind(node.publicIp, port) };
    }
    case 'vxlan': {
      const port = config.backend.port ?? VXLAN_DEFAULT_PORT;
      const backend = new VxlanBackend({
        vni: config.backend.vni ?? VXLAN_DEFAULT_VNI,
        port,
        localPublicIp: node.publicIp,
        localVtepIp: node.subnet.addr,
        vtepMac: vtepMacFor(node.publicIp),
      });
      return { type, backend, port, directRouting: config.backend.directRouting === true, openTransport: () => openVxlanTransport(node.publicIp, port) };
    }
    case 'ipip':
      return {
        type,
        backend: new IpipBackend(node.publicIp, opts.ipipFirstId),
        port: 0,
        directRouting: config.backend.directRouting === true,
        openTransport: () => openIpipTransport(node.publicIp),
      };
    case 'host-gw':
      return { type, backend: null, port: 0, directRouting: false, openTransport: noTransport(type) };
  }
}
