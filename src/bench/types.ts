// What `weft bench` measures and writes to results.json. Every figure that is repeated is kept
// as its samples plus median/min/max, so a reader can see the spread, not only one number.

/**
 * Every data plane weft bench knows, in the order it measures and reports them. The three
 * -no-offload rows are weft's with the daemons' --no-offload: one packet per TUN read and write
 * and per socket message, as weft ran before kernel offloads; next to the rows above them they
 * say what the offloads pay, measured in the same run.
 */
export const ALL_TUNNELS = [
  'kernel-host-gw',
  'kernel-vxlan',
  'weft-host-gw',
  'weft-udp',
  'weft-vxlan',
  'weft-ipip',
  'weft-udp-no-offload',
  'weft-vxlan-no-offload',
  'weft-ipip-no-offload',
  // weft-udp with --busy-poll-us (BENCH_BUSY_POLL_US in tunnels.ts): the idle RTT busy polling buys and the CPU it spins for.
  'weft-udp-busy-poll',
  // weft-udp with `weft daemon --offload LIST`: every other combination of the three offload
  // mechanisms (tun: TSO/GRO on the TUN; gso: UDP_SEGMENT; gro: UDP_GRO), so that with
  // weft-udp (all three) and weft-udp-no-offload (none) each mechanism's share is measured
  // alone, added to none and taken from all.
  'weft-udp-offload-tun',
  'weft-udp-offload-gso',
  'weft-udp-offload-gro',
  'weft-udp-offload-tun-gso',
  'weft-udp-offload-tun-gro',
  'weft-udp-offload-gso-gro',
  'openvpn',
] as const;
export type Tunnel = (typeof ALL_TUNNELS)[number];

function isMechanismRow(t: Tunnel): t is OffloadMechanismRow {
  return t.startsWith('weft-udp-offload-');
}

export type OffloadMechanismRow = Extract<Tunnel, `weft-udp-offload-${string}`>;

/** The weft-udp-offload-* rows: one combination of offload mechanisms each. */
export const OFFLOAD_MECHANISM_ROWS: readonly OffloadMechanismRow[] = ALL_TUNNELS.filter(isMechanismRow);

/** What `weft bench` measures unless told otherwise (--backends, --offload-compare): all but the -no-offload, -busy-poll and -offload-* rows. */
export const TUNNELS: readonly Tunnel[] = ALL_TUNNELS.filter((t) => !t.endsWith('-no-offload') && !t.endsWith('-busy-poll') && !isMechanismRow(t));

/** --offload-compare: the default rows, weft's three without offloads and weft-udp with busy polling. */
export const OFFLOAD_COMPARE: readonly Tunnel[] = ALL_TUNNELS.filter((t) => !isMechanismRow(t));

/**
 * --offload-mechanisms: weft-udp with every combination of the three mechanisms, between the
 * kernel's VXLAN and OpenVPN for the ratios.
 */
export const OFFLOAD_MECHANISMS_SET: readonly Tunnel[] = ['kernel-vxlan', 'weft-udp', ...OFFLOAD_MECHANISM_ROWS, 'weft-udp-no-offload', 'openvpn'];

/** Who moves the packets: the kernel, weft's userspace datapath, or the reference userspace tunnel. */
export type TunnelKind = 'kernel' | 'weft' | 'reference';

export interface Stat {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

export interface ScalingPoint {
  streams: number;
  /** Receiver-side TCP throughput, bits per second. */
  bps: Stat;
}

export interface TunnelResult {
  tunnel: Tunnel;
  kind: TunnelKind;
  /** One line on what this row is (how the data plane was set up). */
  description: string;
  /** Bytes each packet carries on the underlay beyond the pod's own IPv4 packet, measured from a capture. */
  headerBytes: number;
  /** Largest pod-to-pod IPv4 packet that crosses with DF set, measured. */
  mtu: number;
  /** Receiver-side TCP throughput, bits per second, 1 and 4 parallel streams. */
  tcp1Bps: Stat;
  tcp4Bps: Stat;
  /** Sender TCP retransmissions during the 1-stream test. */
  retransmits: Stat;
  /** 64-byte UDP datagrams per second that arrived at the receiving pod (offered: as fast as iperf3 sends). */
  udp64Pps: Stat;
  /** Idle round-trip time, pod to pod, milliseconds. */
  rttP50Ms: Stat;
  rttP99Ms: Stat;
  /**
   * CPU seconds (user + system) the tunnel's own processes used per GB (1e9 bytes) delivered in
   * the 1-stream TCP test, both nodes together; null where no process carries the traffic (the
   * kernel's data planes, whose work shows only in hostCpuSecPerGB).
   */
  tunnelCpuSecPerGB: Stat | null;
  /** CPU seconds the whole machine spent (all CPUs, not idle) per GB in the same test: kernel, iperf3 and tunnel together. */
  hostCpuSecPerGB: Stat;
  /** Throughput as parallel TCP streams grow. */
  scaling: ScalingPoint[];
  /** Largest resident set of the tunnel processes seen while measuring, bytes; null for the kernel's data planes. */
  maxRssBytes: number | null;
  /** weft's batching per system call in the 1-stream TCP test (sender n1, receiver n2); null where weft's datapath does not carry the packets, absent in results from before it was measured. */
  perSyscall?: PerSyscall | null;
  /** CPU the tunnel processes used while the idle pings ran, percent of one CPU (both nodes); null for the kernel's data planes; absent in older results. */
  rttTunnelCpuPct?: Stat | null;
}

/**
 * Packets moved per system call (or socket message) in the 1-stream test, from the daemons'
 * /status counters, median over the runs. Without offloads each is 1 by construction.
 */
export interface PerSyscall {
  /** Packets (segments) per read() of the sender's TUN. */
  tunRead: number;
  /** Packets per write()/writev() into the receiver's TUN. */
  tunWrite: number;
  /** Datagrams per message the sender's socket sent (a UDP_SEGMENT message carries a run). */
  socketSend: number;
}

export interface BenchOptions {
  tunnels: Tunnel[];
  runs: number;
  /** Seconds per throughput or packet-rate test. */
  seconds: number;
  /** Stream counts of the scaling curve (always includes 1 and 4). */
  streams: number[];
  /** Echo requests per RTT sample. */
  pings: number;
  quick: boolean;
}

export interface BenchResults {
  /** ISO date-time the run started. */
  date: string;
  /** The command line as run, for the README and for repeating it. */
  command: string;
  machine: { cpus: number; cpuModel: string; kernel: string; node: string; iperf3: string };
  options: BenchOptions;
  results: TunnelResult[];
  /** Wall time of the whole run, seconds. */
  elapsedSec: number;
}
