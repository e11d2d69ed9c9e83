import pino from 'pino';
import { GrpcRegistry } from '../control/client';
import { EtcdRegistry } from '../control/etcd/registry';
import type { Registry } from '../control/registry';
import { loadClientCredentials } from '../control/tls';
import { NodeDaemon, OFFLOAD_MECHANISMS, type Offloads } from '../daemon/daemon';
import { discoverUnderlay } from '../daemon/iface';
import { DEFAULT_MONITOR_SOCKET } from '../daemon/monitor-server';
import { BUSY_POLL_MAX_US } from '../datapath/datapath';
import { parseIpv4 } from '../route/address';
import { packageVersion } from '../util/package-root';
import { quote } from '../util/quote';
import { ETCD_HELP, ETCD_OPTIONS, etcdOptionsFrom, ttlFlag } from './etcd-flags';
import { blameEnv, parseGoFlags, unknownEnv, type GoFlagsOptions } from './go-flags';

const HELP = `usage: weft daemon (--control ADDR:PORT | --etcd-endpoints URLS) [flags]

Flags are written as flanneld takes them: -flag or --flag, VALUE after a space or an =, a
boolean as --flag, --flag=true or --flag=false. A flag not on the command line is read from
FLANNELD_<FLAG> (upper-cased, - as _: FLANNELD_IFACE_REGEX) when that is set and not empty.

  --control ADDR:PORT     weft control (gRPC) to get the network config and a lease from
${ETCD_HELP.trimEnd()}
  --lease-ttl SECONDS     with --etcd-endpoints: the TTL of the lease this node writes (default
                          86400, flanneld's); with --control, weft control decides
  --public-ip IP          the address announced in the lease, for peers to send to (default:
                          the address of the interface below). Without --iface, --iface-regex
                          or --iface-can-reach, the interface is the one holding it
  --iface NAME|IP         the interface to send from, by name or by one of its addresses;
                          repeatable: the first that exists (with a usable IPv4 address) wins
  --iface-regex REGEX     after every --iface: the first interface with an IPv4 address, else
                          a name, that REGEX matches; repeatable, tried in order
  --iface-can-reach IP    after those: the interface and source address \`ip route get IP\` gives
                          (default, with none of the three: the interface of the default route)
  --subnet-file PATH      flannel subnet.env to write (default /run/flannel/subnet.env)
  --tun-name NAME         TUN device to create (default weft0)
  --healthz-ip IP         health server address (default 127.0.0.1: /status tells whoever asks
                          the lease, peers and control address, so reaching it from elsewhere
                          is opted into, e.g. --healthz-ip 0.0.0.0 for a kubelet httpGet probe)
  --healthz-port N        /healthz, /readyz, /status, /metrics (default 9090; 0 disables)
  --renew-margin SECONDS  renew the lease this long before it expires (default 3600)
  --subnet-lease-renew-margin MINUTES
                          the same in minutes, 1..1439, as flanneld takes it
  --ip-masq               masquerade pods' traffic leaving the network (flanneld's rules, chain
                          WEFT-POSTRTG in nat, or table ip weft with net-conf EnableNFTables),
                          and FLANNEL_IPMASQ=true in subnet.env so the CNI plugin does not too
  --ip-masq-fully-random-disable
                          masquerade without --random-fully (fully-random)
  --iptables-forward-rules
                          accept forwarding from and to the network (chain WEFT-FWD in filter,
                          or table ip weft), for hosts whose FORWARD policy is DROP (default on)
  --iptables-resync SECONDS
                          check the rules this often and put back any removed (default 5)
  --offload LIST          the kernel offloads to use, comma-separated (default tun,gso,gro):
                          tun  IFF_VNET_HDR and TSO/USO on the TUN (64 KB super-packets in
                               and out, split and coalesced by weft)
                          gso  UDP_SEGMENT: runs of datagrams in one send (udp, vxlan)
                          gro  UDP_GRO on udp's socket (vxlan's receive always has it)
                          one at a time, to measure what each pays
  --no-offload            none of them: one packet per TUN read/write and per datagram, as
                          before offloads (vxlan's receive keeps UDP_GRO: kernel peers send
                          64 KB super-datagrams); for comparison
  --busy-poll-us N        after packets, keep polling for N µs of quiet before sleeping: lower
                          idle RTT for a spinning CPU (default 0: sleep when idle)
  --monitor-socket PATH   the Unix socket \`weft monitor\` attaches to, root-only (0600; its
                          directory made 0700) (default /run/weft/monitor.sock; "" disables)
  --log-level LEVEL       pino level (default info)
  --version               print the version and exit

flanneld's --kube-subnet-mgr (true), --kube-api-url, --kube-annotation-prefix, --kubeconfig-file,
--net-config-path, --set-node-network-unavailable, --public-ipv6, --ip-blackhole-route (true), and
klog's -v, -vmodule, -log_backtrace_at are refused in one line saying why.
  --control-cafile PATH   reach --control over TLS, trusting this CA (PEM); control's certificate
                          must name the --control address (an IP SAN for an IP)
  --control-certfile PATH client certificate (PEM) for a control that verifies them (mTLS); its
                          IP SANs must include --public-ip. Needs --control-cafile...
  --control-keyfile PATH  ...and this unencrypted PEM private key (mode 0600 or stricter)
`;

/** --offload LIST and --no-offload, as the daemon's Offloads. */
export function parseOffloads(list: string | undefined, none: boolean): Offloads {
  if (none && list !== undefined) throw new Error('give --offload LIST or --no-offload, not both');
  const on = new Set<string>(none ? [] : OFFLOAD_MECHANISMS);
  if (list !== undefined) {
    on.clear();
    for (const m of list.split(',')) {
      if (!(OFFLOAD_MECHANISMS as readonly string[]).includes(m))
        throw new Error(`--offload: "${m.slice(0, 40)}" is not one of ${OFFLOAD_MECHANISMS.join(', ')} (comma-separated; --no-offload for none)`);
      on.add(m);
    }
  }
  return { tun: on.has('tun'), gso: on.has('gso'), gro: on.has('gro') };
}

function port(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name}: "${v}" is not a port number`);
  return n;
}

/**
 * flanneld flags weft does not implement. They are parsed (so FLANNELD_* variables for them are
 * read too) only to be refused in one line saying why, rather than failing as unknown flags or,
 * worse, being taken without effect. A value that asks for nothing (--kube-subnet-mgr=false) passes.
 */
const FLANNELD_REFUSED: Record<string, { asks: (v: string | boolean) => boolean; why: string }> = {
  'kube-subnet-mgr': { asks: (v) => v === true, why: "weft has no Kubernetes subnet manager; use --etcd-endpoints (flannel's etcd layout) or --control" },
  'kube-api-url': { asks: () => true, why: 'only for --kube-subnet-mgr, which weft does not have' },
  'kube-annotation-prefix': { asks: () => true, why: 'only for --kube-subnet-mgr, which weft does not have' },
  'kubeconfig-file': { asks: () => true, why: 'only for --kube-subnet-mgr, which weft does not have' },
  'net-config-path': { asks: () => true, why: 'only for --kube-subnet-mgr; weft reads net-conf.json from weft control (--net-config-path) or etcd' },
  'set-node-network-unavailable': { asks: () => true, why: 'only for --kube-subnet-mgr, which weft does not have' },
  'public-ipv6': { asks: () => true, why: 'weft is IPv4-only' },
  'ip-blackhole-route': { asks: (v) => v === true, why: "not implemented: weft-cni's bridge route covers the node's subnet" },
  v: { asks: () => true, why: 'klog verbosity; weft logs with pino: use --log-level (debug, trace)' },
  vmodule: { asks: () => true, why: 'klog per-file verbosity; use --log-level' },
  log_backtrace_at: { asks: () => true, why: 'klog; use --log-level' },
};

const FLANNELD_REFUSED_OPTIONS = {
  'kube-subnet-mgr': { type: 'boolean' },
  'kube-api-url': { type: 'string' },
  'kube-annotation-prefix': { type: 'string' },
  'kubeconfig-file': { type: 'string' },
  'net-config-path': { type: 'string' },
  'set-node-network-unavailable': { type: 'boolean' },
  'public-ipv6': { type: 'string' },
  'ip-blackhole-route': { type: 'boolean' },
  v: { type: 'string' },
  vmodule: { type: 'string' },
  log_backtrace_at: { type: 'string' },
} as const;

/** flanneld's --subnet-lease-renew-margin: minutes, 1 to 1439 (its range check in main.go). */
function renewMarginMs(seconds: string | undefined, minutes: string | undefined): number {
  if (minutes !== undefined) {
    if (seconds !== undefined) throw new Error('give --renew-margin SECONDS or --subnet-lease-renew-margin MINUTES, not both');
    if (!/^\d+$/.test(minutes) || Number(minutes) < 1 || Number(minutes) > 1439)
      throw new Error(`--subnet-lease-renew-margin: ${quote(minutes)} is not a whole number of minutes in 1..1439`);
    return Number(minutes) * 60_000;
  }
  const s = Number(seconds ?? '3600');
  if (!(s >= 0)) throw new Error(`--renew-margin: "${seconds}" is not a number of seconds`);
  return s * 1000;
}

export const DAEMON_OPTIONS = {
  control: { type: 'string' },
  'public-ip': { type: 'string' },
  iface: { type: 'string', multiple: true },
  'iface-regex': { type: 'string', multiple: true },
  'iface-can-reach': { type: 'string' },
  'subnet-file': { type: 'string', default: '/run/flannel/subnet.env' },
  'tun-name': { type: 'string', default: 'weft0' },
  // Loopback, unlike flanneld's 0.0.0.0: weft's /status says more than flanneld's /healthz.
  'healthz-ip': { type: 'string', default: '127.0.0.1' },
  'healthz-port': { type: 'string' },
  'renew-margin': { type: 'string' },
  'ip-masq': { type: 'boolean', default: false },
  'ip-masq-fully-random-disable': { type: 'boolean', default: false },
  'subnet-lease-renew-margin': { type: 'string' },
  ...FLANNELD_REFUSED_OPTIONS,
  'iptables-forward-rules': { type: 'boolean', default: true },
  'iptables-resync': { type: 'string', default: '5' },
  offload: { type: 'string' },
  'no-offload': { type: 'boolean', default: false },
  'busy-poll-us': { type: 'string', default: '0' },
  'monitor-socket': { type: 'string', default: DEFAULT_MONITOR_SOCKET },
  'log-level': { type: 'string', default: 'info' },
  'control-cafile': { type: 'string' },
  'control-certfile': { type: 'string' },
  'control-keyfile': { type: 'string' },
  ...ETCD_OPTIONS,
  'lease-ttl': { type: 'string' },
  version: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** flanneld's variables (flagutil.SetFlagsFromEnv(flags, "FLANNELD")); -version is read before them there. */
export const DAEMON_FLAGS_ENV: GoFlagsOptions = { envPrefix: 'FLANNELD', notFromEnv: ['help', 'version'] };

export async function run(argv: string[]): Promise<number | void> {
  const { values, fromEnv } = parseGoFlags(argv, DAEMON_OPTIONS, DAEMON_FLAGS_ENV);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  try {
    return await runDaemon(values);
  } catch (e) {
    // A value FLANNELD_X gave is refused naming the variable, not only the flag.
    throw blameEnv(e, fromEnv);
  }
}

async function runDaemon(values: ReturnType<typeof parseGoFlags<typeof DAEMON_OPTIONS>>['values']): Promise<void> {
  const etcd = etcdOptionsFrom(values);
  if (etcd && values.control) throw new Error('give --control or --etcd-endpoints, not both');
  if (!etcd && !values.control) throw new Error('--control ADDR:PORT or --etcd-endpoints URLS is required');
  if (values.control && !/^[^\s:]+:\d+$/.test(values.control)) throw new Error(`--control: "${values.control}" is not ADDR:PORT`);
  const leaseTtlMs = ttlFlag('--lease-ttl', values['lease-ttl']);
  if (leaseTtlMs !== undefined && !etcd) throw new Error('--lease-ttl applies to --etcd-endpoints only; with --control, set it on weft control');
  if (etcd) {
    for (const f of ['control-cafile', 'control-certfile', 'control-keyfile'] as const) {
      if (values[f] !== undefined) throw new Error(`--${f} applies to --control; for etcd use --etcd-cafile/--etcd-certfile/--etcd-keyfile`);
    }
  }
  if (values['public-ip'] !== undefined) parseIpv4(values['public-ip']);
  // flanneld takes an empty --iface or --iface-regex as "no selector" inside its loop (the default
  // route's interface, even after other selectors); an empty value is refused here instead.
  for (const f of ['iface', 'iface-regex'] as const) {
    if (values[f]?.includes('')) throw new Error(`--${f} is empty; give ${f === 'iface' ? 'an interface name or address' : 'a regular expression'}`);
  }
  const canReach = values['iface-can-reach'];
  if (canReach !== undefined) {
    try {
      parseIpv4(canReach);
    } catch {
      throw new Error(`--iface-can-reach: ${quote(canReach)} is not an IPv4 address`);
    }
  }
  const tunName = values['tun-name']!;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tunName)) throw new Error(`--tun-name: "${tunName}" is not a valid interface name (1-15 characters)`);
  for (const [flag, r] of Object.entries(FLANNELD_REFUSED)) {
    const v = (values as Record<string, unknown>)[flag] as string | boolean | undefined;
    if (v !== undefined && r.asks(v)) throw new Error(`--${flag}: ${r.why}`);
  }
  const renewMargin = renewMarginMs(values['renew-margin'], values['subnet-lease-renew-margin']);
  const busyPoll = Number(values['busy-poll-us']);
  if (!/^\d+$/.test(values['busy-poll-us']!) || busyPoll > BUSY_POLL_MAX_US)
    throw new Error(`--busy-poll-us: "${values['busy-poll-us']}" is not a whole number of µs in 0..${BUSY_POLL_MAX_US}`);
  const resync = values['iptables-resync']!;
  if (!/^\d+$/.test(resync) || Number(resync) < 1 || Number(resync) > 86_400)
    throw new Error(`--iptables-resync: ${quote(resync)} is not a whole number of seconds in 1..86400`);
  const monitorSocket = values['monitor-socket']!;
  if (monitorSocket !== '' && !monitorSocket.startsWith('/'))
    throw new Error(`--monitor-socket: ${quote(monitorSocket)} is not an absolute path ("" disables)`);
  // sun_path holds 108 bytes with its terminating NUL.
  if (Buffer.byteLength(monitorSocket) > 107) throw new Error(`--monitor-socket: ${quote(monitorSocket)} is longer than a Unix socket path may be (107 bytes)`);
  const offloads = parseOffloads(values.offload, values['no-offload']!);
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  if (!levels.includes(values['log-level']!)) throw new Error(`--log-level: "${values['log-level']}" is not one of ${levels.join(', ')}`);

  const healthzPort = port('healthz-port', values['healthz-port'], 9090);
  // Read-only, before anything is set up: a selector that finds nothing is one line and exit 1.
  const underlay = await discoverUnderlay({ ifaces: values.iface ?? [], regexes: values['iface-regex'] ?? [], canReach, publicIp: values['public-ip'] });
  const logger = pino({ level: values['log-level'], base: { node: underlay.publicIp } });
  for (const skipped of underlay.skipped) logger.info(skipped);
  logger.info({ iface: underlay.iface, addr: underlay.addr, publicIp: underlay.publicIp, by: underlay.how }, 'underlay interface chosen');
  for (const name of unknownEnv(DAEMON_OPTIONS, DAEMON_FLAGS_ENV)) logger.warn({ variable: name }, 'a FLANNELD_ variable names no weft daemon flag; ignored');
  let registry: Registry;
  let controlTarget: string;
  if (etcd) {
    registry = new EtcdRegistry({ ...etcd, leaseTtlMs, logger });
    controlTarget = `etcd ${etcd.endpoints.join(',')} ${etcd.prefix}`;
  } else {
    const credentials = loadClientCredentials({ caFile: values['control-cafile'], certFile: values['control-certfile'], keyFile: values['control-keyfile'] });
    registry = new GrpcRegistry(values.control!, { credentials, logger });
    controlTarget = values.control!;
  }
  const daemon = new NodeDaemon({
    registry,
    controlTarget,
    publicIp: underlay.publicIp,
    iface: underlay.iface,
    underlayIp: underlay.addr,
    subnetFile: values['subnet-file']!,
    tunName,
    healthzIp: values['healthz-ip']!,
    healthzPort,
    renewMarginMs: renewMargin,
    ipMasq: values['ip-masq']!,
    ipMasqNoRandomFully: values['ip-masq-fully-random-disable']!,
    iptablesForwardRules: values['iptables-forward-rules']!,
    iptablesResyncS: Number(resync),
    offloads,
    busyPollUs: busyPoll,
    monitorSocket: values['monitor-socket'],
    logger,
  });

  let stopping: Promise<void> | undefined;
  const shutdown = (code: number) => {
    stopping ??= daemon.stop().then(
      () => process.exit(code),
      (e) => {
        logger.error({ err: (e as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown(0));
  process.on('SIGINT', () => shutdown(0));
  daemon.onFatal(() => shutdown(1));

  try {
    await daemon.start();
  } catch (e) {
    await daemon.stop().catch(() => undefined);
    throw e;
  }
  logger.info('ready');
  // Keep running until a signal arrives: the TUN poller and the gRPC watch hold the loop open.
  await new Promise<void>(() => undefined);
}
