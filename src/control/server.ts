// gRPC front for any Registry (normally the EmbeddedRegistry): `weft control` serves this and
// daemons reach it through GrpcRegistry. It translates messages and maps RegistryError codes to
// gRPC status codes, message intact; its only policies are limits.ts' field sizes, checked before
// anything else, and tls.ts' client-certificate identity check on lease-changing calls, only when
// clients present verified certificates (mTLS).
import * as grpc from '@grpc/grpc-js';
import { MAX_REPLY_BYTES, MAX_REQUEST_BYTES, checkAcquireSizes, checkBackendDataText, checkLeaseRef } from './limits';
import { RegistryError, type Registry, type RegistryLogger, type WatchHandle } from './registry';
import { describeIdentity, identityFromCertificate, leaseRefusal } from './tls';
import {
  batchToWire,
  configToWire,
  controlService,
  errorToStatus,
  leaseToWire,
  parseBackendData,
  type WireAcquireRequest,
  type WireLeaseRef,
  type WireWatchRequest,
} from './wire';

export interface ControlServerOptions {
  /** "ADDR:PORT"; port 0 picks a free one (reported back as `port`). */
  listen: string;
  registry: Registry;
  logger: RegistryLogger & { debug?(obj: object, msg?: string): void };
  /** Insecure by default; TLS is grpc.ServerCredentials.createSsl(...) (see tls.ts loadServerTls). */
  credentials?: grpc.ServerCredentials;
  /**
   * Set when `credentials` verify client certificates (mTLS): Acquire/Renew/Revoke are then
   * allowed only for a publicIp among the caller's certificate IP SANs, or for an admin
   * certificate (tls.ts leaseRefusal). Reads stay open to every verified client.
   */
  clientIdentity?: boolean;
  /** How long close() waits for in-flight unary calls before cutting connections. */
  shutdownGraceMs?: number;
}

export interface ControlServer {
  port: number;
  /** "ADDR:PORT" with the bound port. */
  address: string;
  close(): Promise<void>;
}

/** Splits "ADDR:PORT" / "[v6]:PORT"; throws one line naming the problem. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(listen ?? '');
  if (!m) throw new Error(`--listen ${JSON.stringify(listen)} must be ADDR:PORT, e.g. 127.0.0.1:8500`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`--listen ${listen}: port ${port} is above 65535`);
  return { host: m[1], port };
}

export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  const { registry, logger } = opts;
  const { host } = parseListen(opts.listen);
  const server = new grpc.Server({
    // Send keepalive pings on idle connections so a watch stream to a node that vanished
    // (power loss, partition: no FIN) is noticed and its resources released.
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
    // limits.ts: requests up to MAX_REQUEST_BYTES reach the handlers and are refused there with
    // INVALID_ARGUMENT naming the field; replies are sized for MAX_LEASES leases, and the client
    // accepts exactly what we may send.
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': MAX_REPLY_BYTES,
  });
  const watches = new Set<(err?: unknown) => void>();
  if (!opts.clientIdentity) {
    // Without verified client certificates nothing says who a caller is; say so once at start
    // rather than let an operator assume nodes are kept to their own leases.
    logger.warn(
      { listen: opts.listen },
      'client certificates are not verified (no --tls-client-ca-file): any client that can connect may acquire, renew or revoke any lease',
    );
  }

  // Throws RegistryError('permission') (→ PERMISSION_DENIED) when the caller may not act on
  // the lease of `publicIp`; runs before the registry sees the request.
  const authorize = (call: grpc.ServerUnaryCall<unknown, unknown>, rpc: string, publicIp: string): void => {
    if (!opts.clientIdentity) return;
    const cert = call.getAuthContext()?.sslPeerCertificate;
    // Node's TLS server already dropped connections without a verified certificate, so this
    // only happens when `credentials` do not match clientIdentity: refuse rather than guess.
    if (!cert) throw new RegistryError('permission', 'no verified client certificate on this connection');
    const id = identityFromCertificate(cert);
    const refusal = leaseRefusal(id, publicIp);
    if (refusal === undefined) return;
    logger.warn({ rpc, peer: call.getPeer(), identity: describeIdentity(id), publicIp }, 'lease action refused');
    throw new RegistryError('permission', refusal);
  };

  const unary =
    <Req, Res>(name: string, fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>) =>
    (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
      fn(call.request, call).then(
        (res) => cb(null, res),
        (e: unknown) => {
          const st = errorToStatus(e);
          if (!(e instanceof RegistryError)) logger.error({ rpc: name, err: (e as Error)?.stack ?? String(e) }, 'rpc failed');
          else logger.debug?.({ rpc: name, code: e.code, err: e.message, peer: call.getPeer() }, 'rpc refused');
          cb(st as grpc.ServiceError, null);
        },
      );
    };

  const handlers: grpc.UntypedServiceImplementation = {
    GetConfig: unary('GetConfig', async () => configToWire(await registry.config())),
    Acquire: unary('Acquire', async (req: WireAcquireRequest, call) => {
      // Sizes before anything else: authorize logs publicIp, and parsing 4 MiB of JSON is work.
      checkAcquireSizes(req);
      checkBackendDataText(req.backendData ?? '');
      authorize(call, 'Acquire', req.publicIp);
      const lease = await registry.acquire({
        publicIp: req.publicIp,
        backendType: req.backendType || undefined,
        backendData: parseBackendData(req.backendData),
        previousSubnet: req.previousSubnet || undefined,
      });
      return leaseToWire(lease);
    }),
    Renew: unary('Renew', async (req: WireLeaseRef, call) => {
      checkLeaseRef(req);
      authorize(call, 'Renew', req.publicIp);
      return leaseToWire(await registry.renew({ subnet: req.subnet, publicIp: req.publicIp }));
    }),
    Revoke: unary('Revoke', async (req: WireLeaseRef, call) => {
      checkLeaseRef(req);
      authorize(call, 'Revoke', req.publicIp);
      await registry.revoke({ subnet: req.subnet, publicIp: req.publicIp });
      return {};
    }),
    List: unary('List', async () => {
      const { leases, revision } = await registry.list();
      return { leases: leases.map(leaseToWire), revision };
    }),
    Watch: (call: grpc.ServerWritableStream<WireWatchRequest, unknown>) => {
      const from = Number(call.request.fromRevision ?? 0);
      let ended = false;
      let handle: WatchHandle | undefined;
      // Ends this stream once: with a status when `err` is given, and always releases the
      // registry watch. Also used by close() for server shutdown.
      const finish = (err?: unknown): void => {
        if (ended) return;
        ended = true;
        handle?.close();
        watches.delete(finish);
        // Emitting 'error' on a ServerWritableStream is how grpc-js ends it with a status.
        if (err !== undefined) call.emit('error', errorToStatus(err));
      };
      handle = registry.watch(
        from,
        (batch) => {
          if (!ended) call.write(batchToWire(batch));
        },
        (err) => finish(err),
      );
      // A registry may report failure synchronously, before `handle` was assigned.
      if (ended) handle.close();
      else watches.add(finish);
      call.on('cancelled', () => finish());
      logger.debug?.({ rpc: 'Watch', fromRevision: from, peer: call.getPeer() }, 'watch started');
    },
  };

  server.addService(controlService().service, handlers);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(opts.listen, opts.credentials ?? grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(new Error(`cannot listen on ${opts.listen}: ${err.message}`)) : resolve(p),
    );
  });
  const address = `${host}:${port}`;

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      // Watch streams never finish by themselves: end them with UNAVAILABLE so clients
      // reconnect elsewhere (or to our successor) instead of waiting on a half-closed server.
      for (const finish of [...watches]) finish(new RegistryError('unavailable', 'control server shutting down'));
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, opts.shutdownGraceMs ?? 5000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return closing;
  };

  return { port, address, close };
}
