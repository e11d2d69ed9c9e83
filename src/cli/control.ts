// `weft control`: the embedded control plane — one process holding the lease registry for a
// cluster, served over gRPC. Errors in flags or net-conf.json are thrown as one-line Errors;
// main.ts prints them and exits 1.
import { promises as fsp } from 'node:fs';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import pino from 'pino';
import { EmbeddedRegistry } from '../control/embedded';
import { EtcdRegistry } from '../control/etcd/registry';
import type { Registry } from '../control/registry';
import { ETCD_HELP, ETCD_OPTIONS, etcdOptionsFrom, ttlFlag } from './etcd-flags';
import { parseNetConfig } from '../control/netconfig';
import { parseListen, startControlServer } from '../control/server';
import { loadClientCredentials, loadServerTls } from '../control/tls';
import { GrpcRegistry } from '../control/client';
import { quote } from '../util/quote';
import { DEFAULT_MAX_WATCHES_PER_CLIENT } from '../control/limits';
import { ControlMetrics, startMetricsServer, type MetricsServer } from '../control/metrics';

export const USAGE = `usage: weft control --listen ADDR:PORT --state-dir DIR --net-config-path FILE [--reserve SUBNET=IP ...]
       weft control --listen ADDR:PORT --etcd-endpoints URLS [--net-config-path FILE]
                    [--lease-ttl SECONDS] [--log-level LEVEL] [--max-watches-per-client N]
                    [--metrics-listen ADDR:PORT]
                    [--tls-cert-file PATH --tls-key-file PATH [--tls-client-ca-file PATH]]
       weft control reserve --control ADDR:PORT SUBNET PUBLIC_IP
       weft control unreserve --control ADDR:PORT SUBNET
       weft control reservations --control ADDR:PORT

  --listen ADDR:PORT        gRPC address to serve (port 0 picks a free port; the bound address is logged)
  --state-dir DIR           where leases.json is kept (created if missing)
  --net-config-path FILE    flannel net-conf.json: Network, SubnetLen, SubnetMin, SubnetMax, Backend
                            (vxlan when absent), EnableNFTables; a flannel key weft lacks is refused.
                            With etcd: written to PREFIX/config if absent; refused if etcd holds a
                            different one; omitted: the one in etcd is used
  Keeping the leases in etcd instead of --state-dir (gRPC clients and flanneld-style etcd clients
  then see the same leases):
${ETCD_HELP.trimEnd()}
  --reserve SUBNET=IP       keep SUBNET for the node with public IP IP (repeatable; --state-dir only):
                            as \`weft control reserve\` at startup, refused in one line the same way
  --lease-ttl SECONDS       subnet lease lifetime (default 86400, flanneld's 24 h)
  --log-level LEVEL         trace | debug | info | warn | error | fatal | silent (default info)
  --max-watches-per-client N
                            watch streams one client may hold open: its certificate under mTLS,
                            else its IP address (default ${DEFAULT_MAX_WATCHES_PER_CLIENT}; a daemon holds one). Raise it
                            when many nodes reach this server from one address (NAT) without mTLS
  --metrics-listen ADDR:PORT
                            also serve HTTP there: /metrics (Prometheus: leases held, reserved and free,
                            calls by method and result, RPC latency, watch streams, process metrics)
                            and /healthz. Off by default; the figures are counts, no lease details
  --tls-cert-file PATH      serve gRPC over TLS with this certificate (PEM, chain allowed; it must
                            name the address daemons dial, e.g. an IP SAN)...
  --tls-key-file PATH       ...and its unencrypted PEM private key (both or neither; mode 0600 or
                            stricter, owned by the user weft runs as or root)
  --tls-client-ca-file PATH also require client certificates signed by this CA (mTLS). A node may
                            then acquire/renew/revoke only leases whose public IP is one of its
                            certificate's IP SANs; a certificate with O=weft:admins in its Subject
                            may act on any lease. Reads are open to every verified client.
                            Without it, any client that can connect may change any lease.

reservations (the embedded registry's; on etcd a reservation is a subnet key written without a
lease, with etcdctl, as flannel documents). A reserved subnet goes to the node with that public
IP, never expires, is never handed to another node and outlives that node's revoke. Served only
to a client on the control plane's loopback address, so run these on its host:
  reserve SUBNET PUBLIC_IP  keep SUBNET (one the network hands out, not held by another node)
  unreserve SUBNET          end it; a node holding it re-acquires, normally the same subnet
  reservations              list them, one "SUBNET PUBLIC_IP" per line
  --control ADDR:PORT       weft control's --listen address as seen from here (e.g. 127.0.0.1:7000)
  --control-cafile, --control-certfile, --control-keyfile
                            as for weft daemon, when weft control serves TLS
`;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * parseArgs for weft control's commands: its messages are already one line ("Unknown option
 * '--foo'…"); the line says where the flags are listed.
 */
function parseControlArgs<T extends ParseArgsOptionsConfig>(args: string[], options: T, allowPositionals: boolean) {
  try {
    return parseArgs({ args, strict: true, allowPositionals, options });
  } catch (e) {
    throw new Error(`${(e as Error).message.split('\n')[0]} (see weft control --help)`, { cause: e });
  }
}

const RESERVATION_COMMANDS = ['reserve', 'unreserve', 'reservations'] as const;
type ReservationCommand = (typeof RESERVATION_COMMANDS)[number];

/** `weft control reserve|unreserve|reservations`: a client of the running weft control. */
async function runReservation(cmd: ReservationCommand, argv: string[]): Promise<number> {
  const { values, positionals } = parseControlArgs(
    argv,
    {
      control: { type: 'string' },
      'control-cafile': { type: 'string' },
      'control-certfile': { type: 'string' },
      'control-keyfile': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    true,
  );
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const want = { reserve: ['SUBNET', 'PUBLIC_IP'], unreserve: ['SUBNET'], reservations: [] }[cmd];
  if (positionals.length !== want.length) {
    throw new Error(
      `${cmd} takes ${want.length ? want.join(' ') : 'no arguments'}, got ${positionals.length ? positionals.map((p) => quote(p)).join(' ') : 'none'}`,
    );
  }
  const target = required(values.control, '--control');
  parseListen(target);
  const credentials = loadClientCredentials({ caFile: values['control-cafile'], certFile: values['control-certfile'], keyFile: values['control-keyfile'] });
  const client = new GrpcRegistry(target, { credentials });
  try {
    if (cmd === 'reserve') {
      await client.reserve({ subnet: positionals[0], publicIp: positionals[1] });
      process.stdout.write(`reserved ${positionals[0]} for ${positionals[1]}\n`);
    } else if (cmd === 'unreserve') {
      await client.unreserve(positionals[0]);
      process.stdout.write(`unreserved ${positionals[0]}\n`);
    } else {
      for (const r of await client.reservations()) process.stdout.write(`${r.subnet} ${r.publicIp}\n`);
    }
  } finally {
    client.close();
  }
  return 0;
}

/** --reserve SUBNET=IP, split; the registry checks the parts. */
function reserveFlag(v: string): { subnet: string; publicIp: string } {
  const m = /^([^=]+)=([^=]+)$/.exec(v);
  if (!m) throw new Error(`--reserve ${quote(v)} must be SUBNET=PUBLIC_IP, e.g. 10.244.7.0/24=192.168.77.17`);
  return { subnet: m[1], publicIp: m[2] };
}

export async function run(argv: string[]): Promise<number | void> {
  if ((RESERVATION_COMMANDS as readonly string[]).includes(argv[0])) return runReservation(argv[0] as ReservationCommand, argv.slice(1));
  const { values } = parseControlArgs(
    argv,
    {
      listen: { type: 'string' },
      'state-dir': { type: 'string' },
      'net-config-path': { type: 'string' },
      'lease-ttl': { type: 'string' },
      'log-level': { type: 'string' },
      'max-watches-per-client': { type: 'string' },
      'metrics-listen': { type: 'string' },
      'tls-cert-file': { type: 'string' },
      'tls-key-file': { type: 'string' },
      'tls-client-ca-file': { type: 'string' },
      reserve: { type: 'string', multiple: true },
      ...ETCD_OPTIONS,
      help: { type: 'boolean', short: 'h' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const listen = required(values.listen, '--listen');
  parseListen(listen);
  const metricsListen = values['metrics-listen'];
  if (metricsListen !== undefined) parseListen(metricsListen, '--metrics-listen');
  const etcd = etcdOptionsFrom(values);
  if (etcd && values['state-dir'] !== undefined) throw new Error('--state-dir and --etcd-endpoints are two places for the leases; give one');
  const stateDir = etcd ? undefined : required(values['state-dir'], '--state-dir');
  const reserves = (values.reserve ?? []).map(reserveFlag);
  if (etcd && reserves.length > 0) {
    throw new Error('--reserve keeps reservations in --state-dir; on etcd a reservation is a subnet key written without a lease (etcdctl put)');
  }
  const confPath = etcd ? values['net-config-path'] : required(values['net-config-path'], '--net-config-path');
  const leaseTtlMs = ttlFlag('--lease-ttl', values['lease-ttl']);
  const level = values['log-level'] ?? 'info';
  if (!LOG_LEVELS.includes(level)) throw new Error(`--log-level ${JSON.stringify(level)} must be one of ${LOG_LEVELS.join(', ')}`);
  const maxWatchesFlag = values['max-watches-per-client'];
  const maxWatchesPerClient = maxWatchesFlag === undefined ? DEFAULT_MAX_WATCHES_PER_CLIENT : Number(maxWatchesFlag);
  if (!/^\d{1,9}$/.test(maxWatchesFlag ?? '1') || !(maxWatchesPerClient >= 1)) {
    throw new Error(`--max-watches-per-client ${JSON.stringify(maxWatchesFlag!.slice(0, 64))} must be a whole number of streams, at least 1`);
  }

  let confText: string | undefined;
  if (confPath !== undefined) {
    try {
      confText = await fsp.readFile(confPath, 'utf8');
    } catch (e) {
      throw new Error(`cannot read --net-config-path ${confPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
    parseNetConfig(confText); // a bad file is this command's error, before anything is started
  }
  const tls = loadServerTls({ certFile: values['tls-cert-file'], keyFile: values['tls-key-file'], clientCaFile: values['tls-client-ca-file'] });

  const logger = pino({ level, base: { cmd: 'weft control', pid: process.pid } });
  let registry: Registry;
  let where: Record<string, unknown>;
  if (etcd) {
    const reg = new EtcdRegistry({ ...etcd, leaseTtlMs, logger });
    try {
      if (confText !== undefined) await reg.ensureConfig(confText);
      await reg.config(); // fail now, with etcd's reason, rather than on the first client's call
    } catch (e) {
      reg.close();
      throw new Error(`etcd ${etcd.endpoints.join(',')}: ${(e as Error).message}`, { cause: e });
    }
    registry = reg;
    where = { etcd: etcd.endpoints.join(','), prefix: etcd.prefix };
  } else {
    const reg = new EmbeddedRegistry({ config: parseNetConfig(confText!), stateDir: stateDir!, leaseTtlMs, logger });
    await reg.open();
    for (const r of reserves) {
      try {
        await reg.reserve(r);
      } catch (e) {
        reg.close();
        throw new Error(`--reserve ${r.subnet}=${r.publicIp}: ${(e as Error).message}`, { cause: e });
      }
    }
    registry = reg;
    where = { stateFile: reg.stateFile };
  }
  const config = await registry.config();
  const metrics = metricsListen !== undefined ? new ControlMetrics({ registry, kind: etcd ? 'etcd' : 'embedded' }) : undefined;
  let server;
  let metricsServer: MetricsServer | undefined;
  try {
    server = await startControlServer({
      listen,
      registry,
      logger,
      credentials: tls?.credentials,
      clientIdentity: tls?.clientCertificates,
      maxWatchesPerClient,
      observer: metrics,
    });
  } catch (e) {
    registry.close();
    throw e;
  }
  if (metrics) {
    metrics.serveWatchStats(server.watchStats);
    try {
      metricsServer = await startMetricsServer(metricsListen!, metrics, logger);
    } catch (e) {
      // Nothing was served yet worth keeping: stop cleanly (the leases are on disk or in etcd)
      // and say which address is the problem.
      await server.close();
      registry.close();
      throw e;
    }
  }
  logger.info(
    {
      listen: server.address,
      port: server.port,
      network: config.network,
      subnetLen: config.subnetLen,
      backend: config.backend.type,
      ...where,
      tls: !tls ? 'off' : tls.clientCertificates ? 'mutual' : 'server',
      ...(metricsServer ? { metrics: `http://${metricsServer.address}/metrics` } : {}),
    },
    'control plane ready',
  );

  const srv = server;
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down');
      // Leases are already on disk after every change; shutdown only has to end streams.
      Promise.all([srv.close(), metricsServer?.close()]).then(
        () => {
          registry.close();
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          resolve();
        },
        () => resolve(),
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  logger.info({}, 'stopped');
  // Everything is closed, yet with a DNS-named etcd endpoint grpc-js's resolver keeps a timer
  // that holds the process up until Docker's SIGKILL 10 s later: exit once the loop has had
  // a turn to flush, if nothing else ends it first.
  setTimeout(() => process.exit(0), 200).unref();
  return 0;
}

function required(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw new Error(`${flag} is required (see weft control --help)`);
  return v;
}
