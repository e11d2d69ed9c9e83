// `weft control`: the embedded control plane — one process holding the lease registry for a
// cluster, served over gRPC. Errors in flags or net-conf.json are thrown as one-line Errors;
// main.ts prints them and exits 1.
import { promises as fsp } from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { EmbeddedRegistry } from '../control/embedded';
import { parseNetConfig } from '../control/netconfig';
import { parseListen, startControlServer } from '../control/server';
import { loadServerTls } from '../control/tls';

export const USAGE = `usage: weft control --listen ADDR:PORT --state-dir DIR --net-config-path FILE
                    [--lease-ttl SECONDS] [--log-level LEVEL]
                    [--tls-cert-file PATH --tls-key-file PATH [--tls-client-ca-file PATH]]

  --listen ADDR:PORT        gRPC address to serve (port 0 picks a free port; the bound address is logged)
  --state-dir DIR           where leases.json is kept (created if missing)
  --net-config-path FILE    flannel net-conf.json: Network, SubnetLen, SubnetMin, SubnetMax, Backend
  --lease-ttl SECONDS       subnet lease lifetime (default 86400, flanneld's 24 h)
  --log-level LEVEL         trace | debug | info | warn | error | fatal | silent (default info)
  --tls-cert-file PATH      serve gRPC over TLS with this certificate (PEM, chain allowed; it must
                            name the address daemons dial, e.g. an IP SAN)...
  --tls-key-file PATH       ...and its unencrypted PEM private key (both or neither)
  --tls-client-ca-file PATH also require client certificates signed by this CA (mTLS). A node may
                            then acquire/renew/revoke only leases whose public IP is one of its
                            certificate's IP SANs; a certificate with O=weft:admins in its Subject
                            may act on any lease. Reads are open to every verified client.
                            Without it, any client that can connect may change any lease.
`;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export async function run(argv: string[]): Promise<number | void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: 'string' },
        'state-dir': { type: 'string' },
        'net-config-path': { type: 'string' },
        'lease-ttl': { type: 'string' },
        'log-level': { type: 'string' },
        'tls-cert-file': { type: 'string' },
        'tls-key-file': { type: 'string' },
        'tls-client-ca-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    // parseArgs' messages are already one line ("Unknown option '--foo'…").
    throw new Error(`${(e as Error).message.split('\n')[0]} (see weft control --help)`);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const listen = required(values.listen, '--listen');
  parseListen(listen);
  const stateDir = required(values['state-dir'], '--state-dir');
  const confPath = required(values['net-config-path'], '--net-config-path');
  let leaseTtlMs: number | undefined;
  if (values['lease-ttl'] !== undefined) {
    const s = Number(values['lease-ttl']);
    if (!(s > 0) || !Number.isFinite(s)) throw new Error(`--lease-ttl ${JSON.stringify(values['lease-ttl'])} must be a positive number of seconds`);
    leaseTtlMs = Math.round(s * 1000);
  }
  const level = values['log-level'] ?? 'info';
  if (!LOG_LEVELS.includes(level)) throw new Error(`--log-level ${JSON.stringify(level)} must be one of ${LOG_LEVELS.join(', ')}`);

  let confText: string;
  try {
    confText = await fsp.readFile(confPath, 'utf8');
  } catch (e) {
    throw new Error(`cannot read --net-config-path ${confPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const config = parseNetConfig(confText);
  const tls = loadServerTls({ certFile: values['tls-cert-file'], keyFile: values['tls-key-file'], clientCaFile: values['tls-client-ca-file'] });

  const logger = pino({ level, base: { cmd: 'weft control', pid: process.pid } });
  const registry = new EmbeddedRegistry({ config, stateDir, leaseTtlMs, logger });
  await registry.open();
  let server;
  try {
    server = await startControlServer({ listen, registry, logger, credentials: tls?.credentials, clientIdentity: tls?.clientCertificates });
  } catch (e) {
    registry.close();
    throw e;
  }
  logger.info(
    { listen: server.address, port: server.port, network: config.network, subnetLen: config.subnetLen, backend: config.backend.type, stateFile: registry.stateFile, tls: !tls ? 'off' : tls.clientCertificates ? 'mutual' : 'server' },
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
      srv.close().then(
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
  return 0;
}

function required(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw new Error(`${flag} is required (see weft control --help)`);
  return v;
}
