// Kernel routes to other nodes' pod subnets through the underlay, with no encapsulation:
// `SUBNET via PEER_PUBLIC_IP dev IFACE`. That is flannel's host-gw backend (every peer), and
// the per-peer shortcut of its vxlan/ipip DirectRouting option (only peers on our own
// underlay subnet; the rest stay in the tunnel).
//
// A gateway in a route must be a neighbour: the kernel resolves it with ARP on IFACE, so a
// peer behind a router cannot be a host-gw next hop. flannel finds out when netlink answers
// "network is unreachable" and logs it per lease; here the check is made up front against the
// interface's connected subnets, so the log can say which subnets would have worked and what
// to use instead, and the daemon can count and report the peers it cannot reach.
import { ip as runIp } from '../io/iproute';
import type { Peer } from './peer';
import { cidrContains, formatCidr, formatIpv4, maskOf, parseIpv4, type Cidr } from '../route/address';

export interface HostRoutesOptions {
  /** The underlay interface (flanneld's --iface), e.g. eth0. */
  iface: string;
  /** Its IPv4 addresses; each one's network is a subnet whose hosts are L2 neighbours. */
  ifaceAddrs: { ip: string; prefixLen: number }[];
  log: { info(o: object, m: string): void; error(o: object, m: string): void };
  /**
   * Runs `ip ARGS...` and resolves with stdout (default: src/io/iproute.ts's ip, in our own
   * namespace). Tests inject a fake or one bound to a namespace they made.
   */
  ip?: (args: readonly string[]) => Promise<string>;
}

interface Installed {
  subnet: Cidr;
  via: number;
}

export class HostRoutes {
  private readonly iface: string;
  private readonly connected: Cidr[];
  private readonly log: HostRoutesOptions['log'];
  private readonly runIp: (args: readonly string[]) => Promise<string>;
  /** Routes in the kernel that this instance put there, by subnet ("10.244.3.0/24"). */
  private readonly installed = new Map<string, Installed>();
  /** Peers host-gw cannot reach (not on-link, or ip refused the route), by subnet. */
  private readonly unreachableBySubnet = new Map<string, Installed>();
  /**
   * Every route command runs after the previous one has finished: lease events arrive as
   * separate add/remove calls that nobody awaits in order, and a `del` overtaking the `replace`
   * it was meant to undo would leave a stale route behind (or remove a fresh one).
   */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: HostRoutesOptions) {
    this.iface = opts.iface;
    this.log = opts.log;
    this.runIp = opts.ip ?? ((args) => runIp(args));
    this.connected = opts.ifaceAddrs.map((a) => {
      if (!Number.isInteger(a.prefixLen) || a.prefixLen < 0 || a.prefixLen > 32) throw new Error(`HostRoutes: bad prefix length ${a.prefixLen} for ${a.ip}`);
      return { addr: (parseIpv4(a.ip) & maskOf(a.prefixLen)) >>> 0, len: a.prefixLen };
    });
  }

  /** True when publicIp is inside one of the iface's connected subnets (L2 adjacent: host-gw can reach it). */
  onLink(publicIp: number): boolean {
    for (const c of this.connected) if (cidrContains(c, publicIp)) return true;
    return false;
  }

  /**
   * `ip route replace SUBNET via PUBLIC_IP dev IFACE` for the peer. When the peer is not
   * on-link (or ip fails) it is logged, counted unreachable, and false is returned; this never
   * rejects, because it runs from the daemon's lease-event handlers.
   */
  add(peer: Peer): Promise<boolean> {
    if (peer.local) return Promise.resolve(false);
    const subnet = formatCidr(peer.subnet);
    const via = peer.publicIp;
    return this.serial(async () => {
      if (!this.onLink(via)) {
        // A previous lease for this subnet may have been on-link: its route now points at the
        // wrong node and must go, or pods would be sent to whoever holds the old address.
        await this.delInstalled(subnet);
        this.markUnreachable(subnet, peer);
        this.log.error(
          { subnet, publicIp: formatIpv4(via), iface: this.iface, ifaceSubnets: this.connected.map(formatCidr) },
          `host-gw cannot reach the pods of peer ${formatIpv4(via)} (subnet ${subnet}): ${formatIpv4(via)} is not on ` +
            `${this.iface}'s subnets (${this.connectedText()}), and a host-gw route needs the peer as an L2 next hop. ` +
            'Nodes behind a router need an overlay: use Backend.Type "vxlan" (or "vxlan"/"ipip" with "DirectRouting": true, ' +
            'which keeps host routes for the peers that share a subnet and tunnels to the rest)',
        );
        return false;
      }
      try {
        await this.runIp(['route', 'replace', subnet, 'via', formatIpv4(via), 'dev', this.iface]);
      } catch (e) {
        this.markUnreachable(subnet, peer);
        this.log.error(
          { subnet, publicIp: formatIpv4(via), iface: this.iface, err: (e as Error).message },
          `host route to peer ${formatIpv4(via)} (subnet ${subnet}) could not be installed; its pods are unreachable`,
        );
        return false;
      }
      this.installed.set(subnet, { subnet: peer.subnet, via });
      this.unreachableBySubnet.delete(subnet);
      this.log.info({ subnet, via: formatIpv4(via), dev: this.iface }, 'host route installed');
      return true;
    });
  }

  /** Removes the peer's route if this instance installed it (and only if it still points at this peer). */
  remove(peer: Peer): Promise<void> {
    const subnet = formatCidr(peer.subnet);
    return this.serial(async () => {
      const u = this.unreachableBySubnet.get(subnet);
      if (u && u.via === peer.publicIp) this.unreachableBySubnet.delete(subnet);
      const r = this.installed.get(subnet);
      // The subnet may already belong to a newer lease with another public IP (its replace
      // overwrote ours); deleting now would take that node's route away.
      if (!r || r.via !== peer.publicIp) return;
      await this.delInstalled(subnet);
    });
  }

  /** On shutdown: remove every route this instance installed. */
  removeAll(): Promise<void> {
    return this.serial(async () => {
      for (const subnet of [...this.installed.keys()]) await this.delInstalled(subnet);
      this.unreachableBySubnet.clear();
    });
  }

  /** Peers currently unreachable by host-gw (a condition the daemon reports in /status and as a counter). */
  get unreachable(): number {
    return this.unreachableBySubnet.size;
  }

  /** Installed routes, for /status. */
  routes(): { subnet: string; via: string; dev: string }[] {
    return [...this.installed.entries()].map(([subnet, r]) => ({ subnet, via: formatIpv4(r.via), dev: this.iface }));
  }

  unreachablePeers(): { subnet: string; publicIp: string }[] {
    return [...this.unreachableBySubnet.entries()].map(([subnet, r]) => ({ subnet, publicIp: formatIpv4(r.via) }));
  }

  private markUnreachable(subnet: string, peer: Peer): void {
    this.unreachableBySubnet.set(subnet, { subnet: peer.subnet, via: peer.publicIp });
  }

  private connectedText(): string {
    return this.connected.length ? this.connected.map(formatCidr).join(', ') : 'none: it has no IPv4 address';
  }

  /** Deletes an installed route; a route already gone (the link went down, someone else removed it) is not an error. */
  private async delInstalled(subnet: string): Promise<void> {
    const r = this.installed.get(subnet);
    if (!r) return;
    this.installed.delete(subnet);
    try {
      // `via` too, so the kernel matches only the route we made, not one another program put there.
      await this.runIp(['route', 'del', subnet, 'via', formatIpv4(r.via), 'dev', this.iface]);
      this.log.info({ subnet, via: formatIpv4(r.via), dev: this.iface }, 'host route removed');
    } catch (e) {
      // "No such process" is ip's ESRCH: the route is not there any more.
      if (/No such process/.test((e as Error).message)) return;
      this.log.error({ subnet, via: formatIpv4(r.via), dev: this.iface, err: (e as Error).message }, 'host route could not be removed');
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn);
    // The chain itself must never hold a rejection, or every later command would skip its turn.
    this.queue = next.catch(() => undefined);
    return next;
  }
}
