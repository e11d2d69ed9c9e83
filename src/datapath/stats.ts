// Datapath counters. Drops are counted by reason in one typed array so the hot loop does a
// single indexed increment; names are only materialised when someone asks (status, metrics).

/** Why a packet was dropped. The first six mirror Ipv4Verdict so a validator's verdict indexes here directly. */
export const Drop = {
  Truncated: 1,
  NotIpv4: 2,
  BadIhl: 3,
  BadTotalLength: 4,
  BadChecksum: 5,
  /** Destination inside the Network but no node holds a lease for it (ICMP net-unreachable sent). */
  NoRoute: 6,
  /** Destination outside the Network: the kernel should never have routed it to us. */
  NotInNetwork: 7,
  /** TTL would reach zero in transit (ICMP time-exceeded sent), as a router does (RFC 1812 §5.3.1). */
  TtlExpired: 8,
  /** Datagram from an address that holds no lease. */
  UnknownPeer: 9,
  /** Inner source is not inside the sending node's subnet (spoofing or a stale lease). */
  SrcNotInPeerSubnet: 10,
  /** Inner destination is not inside our own subnet; writing it to TUN would loop it back out. */
  DstNotLocal: 11,
  /** Egress packet addressed to our own subnet: the kernel's more specific bridge route should have taken it. */
  LocalDestination: 12,
  /** Packet or datagram larger than a slab slot (MSG_TRUNC, or a TUN read that filled its slot). */
  Oversize: 13,
  /** Socket refused the datagram (buffer full, unreachable). */
  SendFailed: 14,
  /** The TUN device refused the packet. */
  TunWriteFailed: 15,
  /** Malformed encapsulation header (backend-specific). */
  BadEncap: 16,
  /** VXLAN: VNI is not ours. */
  WrongVni: 17,
  /** VXLAN: inner Ethernet destination is not our VTEP MAC. */
  WrongMac: 18,
  /** VXLAN: inner ethertype is neither IPv4 nor ARP. */
  WrongEthertype: 19,
  /** Not a drop: the backend answered it on the underlay (an ARP request for our VTEP address). */
  Consumed: 20,
  /** Larger than the tunnel MTU with DF set (ICMP fragmentation-needed sent, RFC 1191). */
  TooBig: 21,
  /** vxlan: the peer's lease has no usable VtepMAC, so no inner Ethernet header can be built. */
  NoNeighbor: 22,
} as const;

export const DROP_NAMES: readonly string[] = (() => {
  const names: string[] = ['none'];
  for (const [k, v] of Object.entries(Drop)) {
    names[v] = k.replace(/[A-Z]/g, (c, i: number) => (i ? '_' : '') + c.toLowerCase());
  }
  return names;
})();

/**
 * The tunReadBatchSizes / sockRecvBatchSizes index for a batch of `n` (≥ 1) packets: ceil(log2 n),
 * so index k holds the batches of 2^(k-1) + 1 to 2^k packets (0: one packet, 1: two, 2: three or
 * four, ..., 6: 33 to 64). Powers of two are upper bounds, so a full 64-packet batch is the top
 * of its own bucket (Prometheus le="64").
 */
export function batchSizeBucket(n: number): number {
  return 32 - Math.clz32(n - 1);
}

export class DatapathStats {
  txPackets = 0;
  txBytes = 0;
  rxPackets = 0;
  rxBytes = 0;
  tunReadPackets = 0;
  tunWritePackets = 0;
  /**
   * Datagrams the socket handed over, whatever became of them (decapsulated, dropped, answered):
   * the packets-per-batch histogram's _sum on the receive side. Added once per batch.
   */
  sockRecvPackets = 0;
  /** Batches read from TUN and from the socket: packets / batches is the batching actually achieved. */
  tunReadBatches = 0;
  sockRecvBatches = 0;
  /**
   * Batch sizes, log2-bucketed by batchSizeBucket (index k: 2^(k-1) + 1 to 2^k packets). One
   * increment per batch; the packets-per-batch histogram in /metrics is read from these (le = 2^k).
   */
  readonly tunReadBatchSizes = new Float64Array(33);
  readonly sockRecvBatchSizes = new Float64Array(33);
  icmpSent = 0;
  /** Nanoseconds spent busy polling (--busy-poll-us): the CPU the option costs. */
  busyPollNs = 0;
  readonly drops = new Float64Array(DROP_NAMES.length);

  dropCount(reason: number): number {
    return this.drops[reason] ?? 0;
  }

  toJSON(): Record<string, unknown> {
    const drops: Record<string, number> = {};
    for (let i = 1; i < DROP_NAMES.length; i++) {
      const n = this.drops[i];
      if (n) drops[DROP_NAMES[i]] = n;
    }
    return {
      txPackets: this.txPackets,
      txBytes: this.txBytes,
      rxPackets: this.rxPackets,
      rxBytes: this.rxBytes,
      tunReadPackets: this.tunReadPackets,
      tunWritePackets: this.tunWritePackets,
      sockRecvPackets: this.sockRecvPackets,
      tunReadBatches: this.tunReadBatches,
      sockRecvBatches: this.sockRecvBatches,
      icmpSent: this.icmpSent,
      busyPollNs: this.busyPollNs,
      drops,
    };
  }
}
