import { promises as fs } from 'node:fs';
import type { Logger } from 'pino';
import type { Lease, Registry, WatchBatch } from '../control/registry';
import { RegistryError, isReservation } from '../control/registry';
import type { NetworkConfig } from '../control/netconfig';
import { BACKENDS } from '../datapath/backends';
import { HostRoutes } from '../datapath/host-routes';
import { assembleNode, tunnelMtu, underlayMtuFor, usesHostRoutes, type Node } from '../datapath/node';
import { DatapathStats } from '../datapath/stats';
import { addrAdd, ifaceForAddress, ifaceInfo, ip, linkSetUpMtu, routeReplace } from '../io/iproute';
import { TunDevice } from '../io/tun';
import type { Transport } from '../io/transport';
import { formatCidr, formatIpv4, maskOf, parseAddrPrefix, parseCidr, parseIpv4, type Cidr } from '../route/address';
import { liveExplainer } from '../datapath/explain';
import { MonitorTap } from '../datapath/monitor';
import { startHealthServer } from './health';
import { DEFAULT_MONITOR_SOCKET, MonitorServer } from './monitor-server';
import { LeaseWatch, WATCH_DOWN_GRACE_MS } from './lease-watch';
import { createDaemonMetrics, LeaseCounts } from './metrics';
import { RuntimeStats } from './runtime-stats';
import { parseSubnetEnv, writeSubnetEnv } from './subnet-env';
import { TrafficRules } from './traffic-rules';
import { packageVersion } from '../util/package-root';

export interface DaemonOptions {
  registry: Registry;
  /** Shown in status and logs (the control plane's address). */
  controlTarget: string;
  /** Announced in the lease: --public-ip, else the underlay address (daemon/iface.ts). */
  publicIp: string;
  /** The underlay interface; default: the one holding underlayIp. */
  iface?: string;
  /**
   * The address sent from and bound to, one of iface's (default publicIp). It differs from
   * publicIp where the node is reached through an address it does not hold (a NAT's outside
   * address), as flanneld's IfaceAddr differs from its ExtAddr: peers send to publicIp, and what
   * arrives here is addressed to underlayIp.
   */
  underlayIp?: string;
  subnetFile: string;
  tunName: string;
  healthzIp: string;
  /** 0 disables the health server. */
  healthzPort: number;
  /** Renew this long before expiry (flannel renews an hour ahead); capped at half the remaining TTL. */
  renewMarginMs: number;
  /** --ip-masq: FLANNEL_IPMASQ=true in subnet.env, and masquerade rules for pods' traffic leaving the network. */
  ipMasq: boolean;
  /** --ip-masq-fully-random-disable: MASQUERADE without --random-fully. */
  ipMasqNoRandomFully?: boolean;
  /** --iptables-forward-rules: accept forwarding to and from the network (flanneld's default: on). */
  iptablesForwardRules: boolean;
  /** --iptables-resync: seconds between checks that the rules are still there (0: never). */
  iptablesResyncS: number;
  /**
   * Kernel offloads (all on by default in the CLI), each on its own so what each pays can be
   * measured alone. Every routing and encapsulation decision is still made per packet in the
   * pipeline.
   */
  offloads: Offloads;
  /**
   * --monitor-socket: the Unix socket `weft monitor` attaches to (default
   * /run/weft/monitor.sock); empty, none.
   */
  monitorSocket?: string;
  /** --busy-poll-us: µs of quiet the datapath keeps polling after activity before it sleeps (0: never spins). */
  busyPollUs?: number;
  logger: Logger;
}

/** The offload mechanisms `weft daemon --offload` names; `--no-offload` is none of them. */
export const OFFLOAD_MECHANISMS = ['tun', 'gso', 'gro'] as const;

export interface Offloads {
  /**
   * tun: the TUN opened with IFF_VNET_HDR and TSO/USO, so the kernel hands over and takes back
   * 64 KB super-packets that the addon splits and coalesces.
   */
  tun: boolean;
  /** gso: UDP_SEGMENT runs on the udp backend's socket and vxlan's send pool. */
  gso: boolean;
  /** gro: UDP_GRO on the udp backend's socket (vxlan's receive socket has it always). */
  gro: boolean;
}

const BACKOFF_MIN_MS = 500;
const TUN_TXQUEUELEN = 1000;
const BACKOFF_MAX_MS = 10_000;

/**
 * One node: lease → backend → TUN → routes → subnet.env → health, then follow the watch
 * stream. Every step that talks to the control plane retries with backoff while it is
 * unreachable; the datapath keeps forwarding with the routes it last knew.
 */
export class NodeDaemon {
  private readonly log: Logger;
  private readonly stats = new DatapathStats();
  private readonly runtime = new RuntimeStats();
  private readonly leaseCounts = new LeaseCounts();
  private config?: NetworkConfig;
  private network?: Cidr;
  private lease?: Lease;
  private tun?: TunDevice;
  private sock?: Transport;
  private node?: Node;
  private health?: { port: number; close(): Promise<void> };
  private watch?: LeaseWatch;
  private traffic?: TrafficRules;
  private routesInstalled = false;
  private subnetFileWritten = false;
  private stopping = false;
  private renewTimer?: NodeJS.Timeout;
  /** Renewal and re-acquisition, one at a time (a watch event and the renew timer can race). */
  private leaseWork: Promise<void> = Promise.resolve();
  /** Why this node no longer holds its subnet; set once, forwarding stops with it. */
  private leaseLost?: string;
  private mtu = 0;
  private underlayMtu = 0;
  private monitor?: MonitorServer;
  private underlayIface = '';
  private readonly fatalHandlers: ((e: Error) => void)[] = [];

  constructor(private readonly opts: DaemonOptions) {
    this.log = opts.logger;
  }

  /** Called when the daemon can no longer do its job (e.g. its subnet changed under it). */
  onFatal(fn: (e: Error) => void): void {
    this.fatalHandlers.push(fn);
  }

  get healthzPort(): number | undefined {
    return this.health?.port;
  }

  async start(): Promise<void> {
    const { opts } = this;
    const publicIp = parseIpv4(opts.publicIp);
    const underlay = await this.findUnderlay();
    const underlayIp = parseIpv4(underlay.ip);
    this.underlayIface = underlay.name;

    if (opts.healthzPort > 0) {
      const metrics = this.metricsRegistry();
      this.health = await startHealthServer(opts.healthzIp, opts.healthzPort, {
        healthy: () => !this.stopping,
        notReady: () => this.notReady(),
        status: () => this.status(),
        metrics: async () => ({ contentType: metrics.contentType, body: await metrics.metrics() }),
      });
      this.log.info({ port: this.health.port }, 'health server listening');
    }

    this.config = await this.retry('get network config', () => opts.registry.config());
    this.network = parseCidr(this.config.network);
    const type = this.config.backend.type;
    const spec = BACKENDS[type];
    // Backend.MTU (vxlan) in place of the interface's; refused here, before a lease is taken.
    const underlayMtu = underlayMtuFor(this.config.backend, underlay);
    const leaseData = spec.leaseData(publicIp, this.config.backend.vni ?? 0);
    const previousSubnet = await this.previousSubnet();
    this.lease = await this.retry('acquire lease', () =>
      opts.registry.acquire({ publicIp: opts.publicIp, backendType: type, backendData: leaseData, previousSubnet }),
    );
    const subnet = parseCidr(this.lease.subnet);
    this.log.info(
      { subnet: this.lease.subnet, previousSubnet, expiration: new Date(this.lease.expiration).toISOString() },
      previousSubnet && previousSubnet !== this.lease.subnet ? 'lease acquired: a different subnet than subnet.env recorded' : 'lease acquired',
    );

    this.mtu = tunnelMtu(type, underlayMtu);
    const port = this.config.backend.port ?? spec.defaultPort;
    if (spec.needsTun) {
      this.sock = spec.openTransport(underlayIp, port, {
        gso: opts.offloads.gso,
        gro: opts.offloads.gro,
        tunnelMtu: this.mtu,
        onGsoDisabled: (socket) => this.log.warn({ socket }, 'the kernel refused UDP_SEGMENT on this socket; sending plain datagrams from now on'),
      });
      this.tun = TunDevice.open(opts.tunName, { offload: opts.offloads.tun });
      // flannel gives its device the subnet's .0 address with the Network's prefix, so the
      // kernel's connected route sends the whole Network into it while the pods' bridge
      // (holding .1/SubnetLen, more specific) keeps local traffic local.
      const tunAddr = `${formatIpv4(subnet.addr)}/${this.network.len}`;
      await linkSetUpMtu(this.tun.name, this.mtu);
      // The kernel queues packets for a TUN reader in the device's qdisc, 500 deep by default
      // (TUN_READQ_SIZE). A burst larger than that while we are busy with the other direction
      // is dropped there and TCP backs off; 1000 (Ethernet's default) absorbs it.
      await ip(['link', 'set', 'dev', this.tun.name, 'txqueuelen', String(TUN_TXQUEUELEN)]);
      await addrAdd(this.tun.name, tunAddr);
      await routeReplace(this.config.network, this.tun.name);
      // ICMP errors we originate carry the TUN address as source; the kernel drops packets
      // arriving with a local source address unless accept_local is set (fib_validate_source).
      await setSysctl(`net/ipv4/conf/${this.tun.name}/accept_local`, '1');
      await setSysctl(`net/ipv4/conf/${this.tun.name}/rp_filter`, '0');
      this.log.info(
        {
          tun: this.tun.name,
          mtu: this.mtu,
          addr: tunAddr,
          backend: type,
          port,
          directRouting: this.config.backend.directRouting === true,
          // What TUNSETOFFLOAD granted (probed: CSUM|TSO4|TSO6|USO4|USO6, then without USO, then none).
          offloads: this.tun.vnetHdr ? this.tun.offloadNames : 'off',
          socketOffloads: OFFLOAD_MECHANISMS.filter((m) => m !== 'tun' && opts.offloads[m]),
        },
        'datapath up',
      );
    } else {
      this.log.info({ iface: underlay.name, mtu: this.mtu }, 'host-gw: no tunnel; routing peers through the kernel');
    }
    this.routesInstalled = true;
    await this.warnIfNotForwarding();

    this.node = assembleNode({
      backend: this.config.backend,
      network: this.network,
      lease: this.lease,
      underlayMtu,
      underlayIp: underlay.ip,
      devices: this.tun && this.sock ? { tun: this.tun, transport: this.sock } : undefined,
      hostRoutes: usesHostRoutes(this.config.backend) ? new HostRoutes({ iface: underlay.name, ifaceAddrs: underlay.addrs, log: this.log }) : undefined,
      stats: this.stats,
      busyPollUs: opts.busyPollUs,
      log: this.log,
    });
    this.node.datapath?.start((e) => this.fail(new Error(`datapath stopped: ${e.message}`)));
    this.underlayMtu = underlayMtu;
    await this.startMonitor();

    // Before subnet.env: FLANNEL_IPMASQ=true tells the CNI plugin to leave masquerading to us.
    this.traffic = new TrafficRules({
      backend: this.config.enableNftables ? 'nftables' : 'iptables',
      network: this.config.network,
      subnet: this.lease.subnet,
      masquerade: opts.ipMasq,
      noRandomFully: opts.ipMasqNoRandomFully,
      forward: opts.iptablesForwardRules,
      resyncS: opts.iptablesResyncS,
      log: this.log,
    });
    await this.traffic.install();
    this.traffic.startResync();

    await writeSubnetEnv(opts.subnetFile, {
      network: this.config.network,
      subnet: `${formatIpv4(subnet.addr + 1)}/${subnet.len}`,
      mtu: this.mtu,
      ipmasq: opts.ipMasq,
    });
    this.subnetFileWritten = true;

    this.watch = new LeaseWatch({
      registry: opts.registry,
      log: this.log,
      apply: (b) => this.onWatchBatch(b),
      backoffMinMs: BACKOFF_MIN_MS,
      backoffMaxMs: BACKOFF_MAX_MS,
      downGraceMs: WATCH_DOWN_GRACE_MS,
    });
    this.watch.start();
    this.scheduleRenew();
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.renewTimer);
    this.watch?.stop();
    await this.monitor?.stop();
    this.node?.datapath?.stop();
    await this.node?.hostRoutes?.removeAll();
    await this.traffic?.remove().catch((e: Error) => this.log.warn({ err: e.message }, 'removing the traffic rules failed'));
    // Closing the last descriptor of a non-persistent TUN device deletes it, and with it the
    // addresses and routes that pointed into it.
    this.tun?.close();
    this.sock?.close();
    await this.health?.close();
    this.runtime.close();
    this.opts.registry.close();
    // subnet.env stays, as flanneld leaves it: the lease outlives this process (it is not
    // revoked, so a restart within the TTL finds it held), pods already configured from the file
    // keep their addresses, and the next start sends FLANNEL_SUBNET back as its previousSubnet.
    // Removed only when the lease that wrote it is gone.
    if (this.subnetFileWritten && this.leaseLost) await fs.rm(this.opts.subnetFile, { force: true });
    this.log.info(
      this.leaseLost
        ? 'stopped; TUN device, routes and subnet file removed'
        : 'stopped; TUN device and routes removed, lease and subnet.env kept for a restart',
    );
  }

  notReady(): string[] {
    const missing: string[] = [];
    if (!this.lease) missing.push('lease');
    if (!this.tun && this.config && BACKENDS[this.config.backend.type].needsTun) missing.push('tun');
    if (!this.routesInstalled) missing.push('routes');
    if (this.traffic && !this.traffic.settled) missing.push('traffic rules');
    if (!this.subnetFileWritten) missing.push('subnet file');
    missing.push(...(this.watch ? this.watch.notReady() : ['peer sync']));
    if (this.leaseLost) missing.push(`lease lost: ${this.leaseLost}`);
    return missing;
  }

  status(): Record<string, unknown> {
    return {
      publicIp: this.opts.publicIp,
      iface: this.underlayIface,
      underlayIp: this.opts.underlayIp ?? this.opts.publicIp,
      tun: this.tun?.name,
      mtu: this.mtu,
      backend: this.config?.backend.type,
      network: this.config?.network,
      lease: this.lease,
      leaseLost: this.leaseLost,
      ready: this.notReady().length === 0,
      control: { target: this.opts.controlTarget, ...(this.watch?.status() ?? { watching: false, revision: 0 }) },
      peers: (this.node?.peers.peers() ?? [])
        .filter((p) => !p.local)
        .map((p) => ({ subnet: formatCidr(p.subnet), publicIp: formatIpv4(p.publicIp), port: p.port, direct: p.direct })),
      counters: this.stats.toJSON(),
      offload: this.offloadStatus(),
      backendState: this.node?.backend.status?.(),
      hostRoutes: this.node?.hostRoutes
        ? { routes: this.node.hostRoutes.routes(), unreachable: this.node.hostRoutes.unreachable, unreachablePeers: this.node.hostRoutes.unreachablePeers() }
        : undefined,
      trafficRules: this.traffic?.status(),
      runtime: this.runtime.snapshot(),
    };
  }

  /**
   * /metrics' registry: every value read from the objects that already count it, when scraped
   * (daemon/metrics.ts). The getters see what exists at that moment: before the lease there are
   * no peers, host-gw has no TUN.
   */
  private metricsRegistry() {
    return createDaemonMetrics({
      version: packageVersion(),
      backend: () => this.config?.backend.type,
      stats: this.stats,
      peers: () => this.node?.peers.peers() ?? [],
      routes: () => this.node?.peers.routes.size ?? 0,
      hostRoutes: () => {
        const h = this.node?.hostRoutes;
        return h ? { installed: h.routes().length, unreachable: h.unreachable } : undefined;
      },
      tun: () => (this.tun ? { vnetHdr: this.tun.vnetHdr, stats: this.tun.stats() } : undefined),
      udpOffload: () => this.sock?.offloadStats?.(),
      socketOffloads: () => ({ gso: this.opts.offloads.gso, gro: this.opts.offloads.gro }),
      lease: () => (this.lease ? { subnet: this.lease.subnet, expiration: this.lease.expiration, reserved: isReservation(this.lease) } : undefined),
      leaseCounts: this.leaseCounts,
      watch: () => this.watch,
      trafficRules: () => this.traffic?.status(),
    });
  }

  /**
   * What the kernel offloads did, with the ratios that say whether they pay: segments per
   * super-packet read from the TUN, segments per coalesced TUN write, datagrams per GSO send and
   * per GRO receive.
   */
  private offloadStatus(): Record<string, unknown> | undefined {
    if (!this.tun) return undefined;
    const t = this.tun.stats();
    const s = this.sock?.offloadStats?.() ?? {};
    const per = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 100) / 100 : 0);
    const c = this.stats;
    const vnet = this.tun.vnetHdr;
    return {
      // enabled: the TUN carries virtio-net headers (not --no-offload); tun: what the kernel
      // granted on it, which may be nothing on an old kernel even when enabled.
      enabled: vnet,
      tun: vnet ? this.tun.offloadNames : [],
      // The socket offloads asked for (--offload); gsoDisabled below says if the kernel refused one.
      gso: this.opts.offloads.gso,
      gro: this.opts.offloads.gro,
      // System calls (and socket messages) against the packets they moved: what the offloads
      // are for. Without them every TUN read and write is one packet, and every datagram one
      // message handed to sendmmsg.
      tunReads: vnet ? t.packetsRead : c.tunReadPackets,
      tunWrites: vnet ? t.coalescedWrites + t.plainWrites : c.tunWritePackets,
      socketMessagesSent: (s.gsoMessages ?? 0) + c.txPackets - (s.gsoSegments ?? 0),
      superPacketsRead: t.superRead,
      segmentsPerSuperPacket: per(t.segmentsOut, t.superRead),
      checksumsCompleted: t.csumCompleted,
      coalescedWrites: t.coalescedWrites,
      segmentsPerCoalescedWrite: per(t.segmentsMerged, t.coalescedWrites),
      partialChecksumsFixed: t.partialFixed,
      refused: Object.fromEntries(Object.entries(t.refused).filter(([, n]) => n > 0)),
      gsoSends: s.gsoMessages ?? 0,
      segmentsPerGsoSend: per(s.gsoSegments ?? 0, s.gsoMessages ?? 0),
      gsoFallbacks: s.gsoFallbacks ?? 0,
      gsoDisabled: (s.gsoDisabled ?? 0) > 0,
      groReceives: s.groDatagrams ?? 0,
      segmentsPerGroReceive: per(s.groSegments ?? 0, s.groDatagrams ?? 0),
      tunnelSuperDatagramsCut: s.tunnelSupers ?? 0,
      // Reads cut short by a slot (also dropped as oversize) and writes the kernel refused.
      truncatedReads: t.truncatedReads,
      tunWriteErrors: t.writeErrors,
    };
  }

  /**
   * weft monitor's socket. Watching is not forwarding: a socket that cannot be made is logged
   * and the daemon goes on without it.
   */
  private async startMonitor(): Promise<void> {
    const path = this.opts.monitorSocket ?? DEFAULT_MONITOR_SOCKET;
    if (path === '') return;
    const node = this.node!;
    const pipeline = node.pipeline;
    const config = this.config!;
    const tap = pipeline
      ? new MonitorTap({
          backend: pipeline.backend,
          routes: node.peers.routes,
          attach: (t) => {
            pipeline.tap = t;
          },
          explain: liveExplainer(() => ({
            backend: config.backend,
            network: this.network!,
            lease: this.lease!,
            peers: node.peers
              .peers()
              .filter((p) => !p.local)
              .map((p) => ({ subnet: formatCidr(p.subnet), publicIp: formatIpv4(p.publicIp), backendType: node.type, backendData: p.backendData })),
            underlayMtu: this.underlayMtu,
          })),
        })
      : null;
    const monitor = new MonitorServer({
      path,
      tap,
      noDatapath: "host-gw: the kernel forwards this node's packets by the routes weft installs; weft's datapath sees none of them",
      hello: () => ({
        node: this.opts.publicIp,
        backend: config.backend.type,
        lease: this.lease?.subnet ?? '',
        network: config.network,
        tunnelMtu: this.mtu,
      }),
      log: this.log,
    });
    try {
      await monitor.start();
      this.monitor = monitor;
    } catch (e) {
      this.log.warn({ path, err: (e as Error).message }, 'weft monitor socket not available; running without it');
    }
  }

  /** The underlay interface and the address sent from; its MTU and addresses (host-gw needs its subnets). */
  private async findUnderlay(): Promise<{ name: string; ip: string; mtu: number; addrs: { ip: string; prefixLen: number }[] }> {
    const ip = this.opts.underlayIp ?? this.opts.publicIp;
    let name = this.opts.iface;
    if (!name) {
      const found = await ifaceForAddress(ip);
      if (!found) throw new Error(`${ip} is not assigned to any interface here`);
      name = found.name;
    }
    const info = await ifaceInfo(name);
    if (!info) throw new Error(`interface ${name} does not exist`);
    if (!info.addrs.some((a) => a.ip === ip)) throw new Error(`${ip} is not an address of ${name}`);
    return { name: info.name, ip, mtu: info.mtu, addrs: info.addrs };
  }

  private async warnIfNotForwarding(): Promise<void> {
    const v = await fs.readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').catch(() => '');
    if (v.trim() !== '1') {
      this.log.warn('net.ipv4.ip_forward is 0: pods on this node cannot reach the overlay until it is enabled');
    }
  }

  /** Retry while the control plane is unreachable; anything else (exhaustion, bad config) is fatal. */
  private async retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let delay = BACKOFF_MIN_MS;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof RegistryError) || e.code !== 'unavailable' || this.stopping) throw e;
        this.log.warn({ err: e.message, retryInMs: delay }, `${what}: control plane unreachable, retrying`);
        await sleep(delay);
        delay = Math.min(delay * 2, BACKOFF_MAX_MS);
      }
    }
  }

  private onWatchBatch(b: WatchBatch): void {
    const peers = this.node!.peers;
    const own = this.lease!;
    if (b.snapshot) {
      peers.applySnapshot(b.leases);
      const holder = b.leases.find((l) => l.subnet === own.subnet);
      if (!holder) this.ownLeaseChanged('missing from the control plane', undefined);
      else if (holder.publicIp !== own.publicIp) this.ownLeaseChanged('held by another node', holder.publicIp);
    } else {
      peers.apply(b.events);
      // PeerSet never routes our own subnet; what happens to its lease is the daemon's business.
      for (const ev of b.events) {
        if (ev.lease.subnet !== own.subnet) continue;
        if (ev.type === 'removed') this.ownLeaseChanged('removed (revoked, or expired unrenewed)', undefined);
        else if (ev.lease.publicIp !== own.publicIp) this.ownLeaseChanged('granted to another node', ev.lease.publicIp);
      }
    }
  }

  /**
   * The watch says our lease is gone or someone else's. Ask for it back at once rather than at
   * the next renewal, which may be hours away: until then peers have dropped our routes. If the
   * subnet now belongs to another node, forwarding for it must stop — two nodes announcing one
   * pod range would split its traffic — so the daemon says why and stops.
   */
  private ownLeaseChanged(what: string, holder: string | undefined): void {
    if (this.stopping || this.leaseLost) return;
    const subnet = this.lease!.subnet;
    if (holder !== undefined) {
      this.loseLease(`subnet ${subnet} was ${what} (${holder})`);
      return;
    }
    this.log.warn({ subnet }, `our lease was ${what}; re-acquiring now`);
    this.leaseWork = this.leaseWork.then(() => this.reacquire(subnet));
  }

  /** Stop forwarding for a subnet that is no longer ours, say why, and exit through onFatal. */
  private loseLease(why: string): void {
    if (this.leaseLost) return;
    this.leaseLost = why;
    clearTimeout(this.renewTimer);
    this.node?.datapath?.stop();
    this.fail(new Error(`lease lost: ${why}; forwarding stopped, restart to get a new subnet`));
  }

  private scheduleRenew(): void {
    if (this.stopping || !this.lease) return;
    // A reservation never expires and is never renewed (renewing would give it a TTL on etcd).
    if (isReservation(this.lease)) {
      this.log.info({ subnet: this.lease.subnet }, 'the subnet is reserved for this node: never expires, not renewed');
      return;
    }
    const remaining = this.lease.expiration - Date.now();
    const margin = Math.min(this.opts.renewMarginMs, remaining / 2);
    const delay = Math.max(200, remaining - margin);
    this.renewTimer = setTimeout(() => {
      this.leaseWork = this.leaseWork.then(() => this.renew());
    }, delay);
  }

  private async renew(): Promise<void> {
    if (this.stopping || this.leaseLost) return;
    const lease = this.lease!;
    try {
      this.lease = await this.opts.registry.renew({ subnet: lease.subnet, publicIp: lease.publicIp });
      this.leaseCounts.renewSuccess++;
      this.log.debug({ expiration: new Date(this.lease.expiration).toISOString() }, 'lease renewed');
      this.scheduleRenew();
    } catch (e) {
      this.leaseCounts.renewFailure++;
      const err = e as Error;
      if (e instanceof RegistryError && (e.code === 'not_found' || e.code === 'permission')) {
        // The control plane no longer has our lease (expired or revoked): ask again.
        this.log.warn({ err: err.message }, 'lease gone at renewal; re-acquiring');
        await this.reacquire(lease.subnet);
        return;
      }
      this.log.warn({ err: err.message }, 'lease renewal failed; retrying');
      this.retryRenewSoon();
    }
  }

  private retryRenewSoon(): void {
    clearTimeout(this.renewTimer);
    const remaining = Math.max(0, this.lease!.expiration - Date.now());
    this.renewTimer = setTimeout(
      () => {
        this.leaseWork = this.leaseWork.then(() => this.renew());
      },
      Math.min(5_000, Math.max(200, remaining / 4)),
    );
  }

  /**
   * Acquire again with the subnet we are configured for as the hint: with the same public IP we
   * get it back if nobody took it. Another subnet would mean re-addressing every pod here, which
   * a running daemon cannot do, so that ends forwarding (loseLease) instead.
   */
  private async reacquire(subnet: string): Promise<void> {
    if (this.stopping || this.leaseLost) return;
    const lease = this.lease!;
    if (lease.subnet !== subnet) return; // already dealt with
    try {
      const again = await this.opts.registry.acquire({
        publicIp: lease.publicIp,
        backendType: lease.backendType,
        backendData: lease.backendData,
        previousSubnet: lease.subnet,
      });
      if (again.subnet !== lease.subnet) {
        // Hand the unusable new lease back so the subnet is not wasted until its TTL runs out.
        await this.opts.registry.revoke({ subnet: again.subnet, publicIp: again.publicIp }).catch(() => undefined);
        this.leaseCounts.reacquireFailure++;
        this.loseLease(`the control plane now assigns ${again.subnet} instead of ${lease.subnet} (our subnet was taken while our lease was gone)`);
        return;
      }
      this.lease = again;
      this.leaseCounts.reacquireSuccess++;
      this.log.info({ subnet: again.subnet, expiration: new Date(again.expiration).toISOString() }, 'lease re-acquired');
      clearTimeout(this.renewTimer);
      this.scheduleRenew();
    } catch (e) {
      this.leaseCounts.reacquireFailure++;
      if (e instanceof RegistryError && e.code === 'exhausted') {
        this.loseLease(`our lease on ${lease.subnet} is gone and the network has no free subnet: ${e.message}`);
        return;
      }
      this.log.warn({ err: (e as Error).message }, 're-acquire failed; retrying');
      this.retryRenewSoon();
    }
  }

  /** The subnet our last run recorded in subnet.env (FLANNEL_SUBNET is the gateway address, .1). */
  private async previousSubnet(): Promise<string | undefined> {
    let text: string;
    try {
      text = await fs.readFile(this.opts.subnetFile, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const env = parseSubnetEnv(text);
      const c = parseAddrPrefix(env.subnet);
      return formatCidr({ addr: (c.addr & maskOf(c.len)) >>> 0, len: c.len });
    } catch (e) {
      this.log.warn({ file: this.opts.subnetFile, err: (e as Error).message }, 'ignoring unreadable subnet.env from a previous run');
      return undefined;
    }
  }

  private fail(e: Error): void {
    this.log.error({ err: e.message }, 'fatal');
    for (const fn of this.fatalHandlers) fn(e);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function setSysctl(key: string, value: string): Promise<void> {
  await fs.writeFile(`/proc/sys/${key}`, value);
}
