import type { Lease, LeaseEvent } from '../control/registry';
import { RouteTable } from '../route/route-table';
import { formatCidr, parseCidr, parseIpv4 } from '../route/cidr';
import type { Backend } from '../datapath/backend';
import type { Peer } from '../datapath/peer';

/**
 * The node's view of the other leases: the LPM route table the egress path reads and the
 * underlay-address map the ingress path reads. Lease events arrive from the registry's
 * watch; each change builds a new route snapshot and swaps it in, so the datapath never sees
 * a half-applied update.
 */
export class PeerSet {
  readonly routes = new RouteTable<Peer>();
  readonly byAddr = new Map<number, Peer>();
  private readonly bySubnet = new Map<string, Peer>();
  /** Leases ignored because their backend type differs from ours (they could not decode our packets). */
  mismatched = 0;

  constructor(
    private readonly backend: Backend,
    private readonly port: number,
    private local: Lease,
    private readonly log?: { info(o: object, m: string): void; warn(o: object, m: string): void },
  ) {
    this.add(local);
    this.commit();
  }

  get localLease(): Lease {
    return this.local;
  }

  peers(): Peer[] {
    return [...this.bySubnet.values()];
  }

  /** Replace everything with a full listing (initial watch, or resync after the control plane lost our revision). */
  applySnapshot(leases: Lease[]): void {
    const wanted = new Map<string, Lease>();
    for (const l of leases) wanted.set(l.subnet, l);
    wanted.set(this.local.subnet, this.local);
    for (const [subnet, peer] of this.bySubnet) {
      const l = wanted.get(subnet);
      if (!l || parseIpv4(l.publicIp) !== peer.publicIp) this.removeSubnet(subnet);
    }
    for (const l of wanted.values()) if (!this.bySubnet.has(l.subnet)) this.add(l);
    this.commit();
  }

  apply(events: LeaseEvent[]): void {
    for (const ev of events) {
      if (ev.lease.subnet === this.local.subnet) continue;
      if (ev.type === 'added') {
        this.removeSubnet(ev.lease.subnet);
        this.add(ev.lease);
      } else {
        this.removeSubnet(ev.lease.subnet);
      }
    }
    this.commit();
  }

  /** One new route snapshot per batch of lease changes, swapped in whole (the table is copy-on-write). */
  private commit(): void {
    const entries = [];
    for (const p of this.bySubnet.values()) entries.push({ addr: p.subnet.addr, len: p.subnet.len, value: p });
    this.routes.replaceAll(entries);
  }

  private add(lease: Lease): void {
    const isLocal = lease.subnet === this.local.subnet;
    if (!isLocal && lease.backendType !== this.backend.type) {
      this.mismatched++;
      this.log?.warn({ subnet: lease.subnet, publicIp: lease.publicIp, backendType: lease.backendType }, 'ignoring lease with a different backend type');
      return;
    }
    const subnet = parseCidr(lease.subnet);
    const peer: Peer = {
      subnet,
      publicIp: parseIpv4(lease.publicIp),
      port: this.port,
      backendData: lease.backendData,
      local: isLocal,
      direct: false,
      backendState: null,
    };
    // A node that re-registers with a new subnet leaves its old entry behind in the map by address; replace it.
    const previous = this.byAddr.get(peer.publicIp);
    if (previous && !previous.local && !isLocal) this.removeSubnet(formatCidr(previous.subnet));
    this.bySubnet.set(lease.subnet, peer);
    if (!isLocal) this.byAddr.set(peer.publicIp, peer);
    if (!isLocal) {
      this.backend.onPeerAdded(peer);
      this.log?.info({ subnet: lease.subnet, publicIp: lease.publicIp }, 'peer added');
    }
  }

  private removeSubnet(subnet: string): void {
    const peer = this.bySubnet.get(subnet);
    if (!peer || peer.local) return;
    this.bySubnet.delete(subnet);
    if (this.byAddr.get(peer.publicIp) === peer) this.byAddr.delete(peer.publicIp);
    this.backend.onPeerRemoved(peer);
    this.log?.info({ subnet }, 'peer removed');
  }
}

