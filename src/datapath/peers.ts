import { RouteTable } from '../route/route-table';
import { formatCidr, parseCidr, parseIpv4 } from '../route/address';
import { PeerCounters, type Peer, type PeerLease, type PeerLeaseEvent } from './peer';

export type PeerListener = (added: readonly Peer[], removed: readonly Peer[]) => void;

/**
 * The node's view of the other leases: the LPM route table the egress path reads and the
 * underlay-address map the ingress path reads. Lease events arrive from the registry's
 * watch; each batch builds one new route snapshot and swaps it in, so the datapath never sees
 * a half-applied update. The listener hears about added peers before the swap (so a backend
 * can prepare per-peer state before the first packet is routed to it) and removed ones after.
 */
export class PeerSet {
  readonly routes = new RouteTable<Peer>();
  readonly byAddr = new Map<number, Peer>();
  private readonly bySubnet = new Map<string, Peer>();
  private added: Peer[] = [];
  private removed: Peer[] = [];
  /** Leases ignored because their backend type differs from ours (they could not decode our packets). */
  mismatched = 0;

  constructor(
    private readonly backendType: string,
    private readonly port: number,
    private local: PeerLease,
    private readonly listener?: PeerListener,
    private readonly log?: { info(o: object, m: string): void; warn(o: object, m: string): void },
  ) {
    this.add(local);
    this.commit();
  }

  get localLease(): PeerLease {
    return this.local;
  }

  peers(): Peer[] {
    return [...this.bySubnet.values()];
  }

  /** Replace everything with a full listing (initial watch, or resync after the control plane lost our revision). */
  applySnapshot(leases: PeerLease[]): void {
    const wanted = new Map<string, PeerLease>();
    for (const l of leases) wanted.set(l.subnet, l);
    wanted.set(this.local.subnet, this.local);
    for (const [subnet, peer] of this.bySubnet) {
      const l = wanted.get(subnet);
      if (!l || parseIpv4(l.publicIp) !== peer.publicIp || !sameData(l.backendData, peer.backendData)) this.removeSubnet(subnet);
    }
    for (const l of wanted.values()) if (!this.bySubnet.has(l.subnet)) this.add(l);
    this.commit();
  }

  apply(events: PeerLeaseEvent[]): void {
    for (const ev of events) {
      if (ev.lease.subnet === this.local.subnet) continue;
      if (ev.type === 'added') {
        // A renewal is announced as 'added' too: keep the peer (and its backend state) unless something changed.
        const cur = this.bySubnet.get(ev.lease.subnet);
        if (cur && cur.publicIp === parseIpv4(ev.lease.publicIp) && sameData(cur.backendData, ev.lease.backendData)) continue;
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
    const added = this.added;
    const removed = this.removed;
    this.added = [];
    this.removed = [];
    if (added.length > 0) this.listener?.(added, []);
    const entries = [];
    for (const p of this.bySubnet.values()) entries.push({ addr: p.subnet.addr, len: p.subnet.len, value: p });
    this.routes.replaceAll(entries);
    if (removed.length > 0) this.listener?.([], removed);
  }

  private add(lease: PeerLease): void {
    const isLocal = lease.subnet === this.local.subnet;
    if (!isLocal && lease.backendType !== this.backendType) {
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
      counters: new PeerCounters(),
    };
    // A node that re-registers with a new subnet leaves its old entry behind in the map by address; replace it.
    const previous = this.byAddr.get(peer.publicIp);
    if (previous && !previous.local && !isLocal) this.removeSubnet(formatCidr(previous.subnet));
    this.bySubnet.set(lease.subnet, peer);
    if (!isLocal) {
      this.byAddr.set(peer.publicIp, peer);
      this.added.push(peer);
      this.log?.info({ subnet: lease.subnet, publicIp: lease.publicIp }, 'peer added');
    }
  }

  private removeSubnet(subnet: string): void {
    const peer = this.bySubnet.get(subnet);
    if (!peer || peer.local) return;
    this.bySubnet.delete(subnet);
    if (this.byAddr.get(peer.publicIp) === peer) this.byAddr.delete(peer.publicIp);
    const i = this.added.indexOf(peer);
    if (i >= 0) this.added.splice(i, 1);
    else this.removed.push(peer);
    this.log?.info({ subnet }, 'peer removed');
  }
}

function sameData(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
