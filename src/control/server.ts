// gRPC front for any Registry (normally the EmbeddedRegistry): `weft control` serves this and
// daemons reach it through GrpcRegistry. It translates messages and maps RegistryError codes to
// gRPC status codes, message intact; its only policies are limits.ts' field sizes, checked before
// anything else, tls.ts' client-certificate identity check on lease-changing calls, only when
// clients present verified certificates (mTLS), and limits.ts' bounds on watch streams: a bounded
// backlog per stream, a cap on streams per client.
import * as grpc from '@grpc/grpc-js';
import {
  DEFAULT_MAX_WATCHES_PER_CLIENT,
  MAX_REPLY_BYTES,
  MAX_REQUEST_BYTES,
  WATCH_MAX_QUEUED_EVENTS,
  checkAcquireSizes,
  checkBackendDataText,
  checkLeaseRef,
  checkSubnetSize,
} from './limits';
import { RegistryError, hasReservations, type Registry, type RegistryLogger, type WatchHandle } from './registry';
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
  type WireReservation,
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
  /**
   * Watch streams one client may hold open (its certificate under mTLS, else its IP address);
   * DEFAULT_MAX_WATCHES_PER_CLIENT. Past it Watch is refused with RESOURCE_EXHAUSTED.
   */
  maxWatchesPerClient?: number;
  /** Told of every call's outcome (metrics.ts' ControlMetrics, for `weft control --metrics-listen`). */
  observer?: RpcObserver;
}

/**
 * What the server reports about each call: `method` is the gRPC method ("Acquire"), `result` "ok",
 * the RegistryError code the call was refused with, or "internal" for any other failure. Unary
 * calls come with their duration in seconds; a Watch is reported when its stream opens or is
 * refused, without one.
 */
export interface RpcObserver {
  rpc(method: string, result: string, seconds?: number): void;
}

/** What the watch streams hold right now; for tests and for an operator wondering about memory. */
export interface WatchStats {
  /** Watch streams open (a stream cut off is open until its client has read its status). */
  streams: number;
  /**
   * Lease events waiting in this server across all streams, not yet flushed to HTTP/2: what
   * WATCH_MAX_QUEUED_EVENTS bounds per stream. A stream's first batch is not counted.
   */
  queuedEvents: number;
  /** The most events any one stream has had waiting, since start. */
  maxQueuedEvents: number;
  /** Streams ended because they fell more than WATCH_MAX_QUEUED_EVENTS behind. */
  cutOff: number;
  /** Watch calls refused for a client already at maxWatchesPerClient. */
  refused: number;
}

export interface ControlServer {
  port: number;
  /** "ADDR:PORT" with the bound port. */
  address: string;
  watchStats(): WatchStats;
  close(): Promise<void>;
}

/** Splits "ADDR:PORT" / "[v6]:PORT"; throws one line naming the problem (and `flag`). */
export function parseListen(listen: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(listen ?? '');
  if (!m) throw new Error(`${flag} ${JSON.stringify(listen)} must be ADDR:PORT, e.g. 127.0.0.1:8500`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`${flag} ${listen}: port ${port} is above 65535`);
  return { host: m[1], port };
}

/**
 * Whether a grpc-js peer ("127.0.0.1:40000", "::1:40000", "::ffff:127.0.0.1:40000") is on a
 * loopback address: the only callers allowed to change reservations.
 */
export function isLoopbackPeer(peer: string): boolean {
  const addr = peer.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  if (addr === '::1') return true;
  const v4 = /^(?:::ffff:)?(\d+)\.\d+\.\d+\.\d+$/i.exec(addr);
  return v4 !== null && v4[1] === '127';
}

export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  const { registry, logger, observer } = opts;
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
  const maxPerClient = opts.maxWatchesPerClient ?? DEFAULT_MAX_WATCHES_PER_CLIENT;
  if (!(Number.isSafeInteger(maxPerClient) && maxPerClient >= 1)) {
    throw new Error(`maxWatchesPerClient must be a positive integer, got ${String(maxPerClient)}`);
  }
  /** Open watch streams per client key (watchClient). */
  const perClient = new Map<string, number>();
  const stats: WatchStats = { streams: 0, queuedEvents: 0, maxQueuedEvents: 0, cutOff: 0, refused: 0 };
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

  /**
   * Who a watch stream counts against: the verified certificate under mTLS (several addresses
   * may share one node's certificate, and one address may carry several nodes' certificates),
   * else the IP address (the port changes with every connection).
   */
  const watchClient = (call: grpc.ServerWritableStream<unknown, unknown>): { key: string; label: string } => {
    const cert = opts.clientIdentity ? call.getAuthContext()?.sslPeerCertificate : undefined;
    if (cert?.fingerprint256) return { key: `cert ${cert.fingerprint256}`, label: describeIdentity(identityFromCertificate(cert)) };
    const ip = call.getPeer().replace(/:\d+$/, '');
    return { key: `ip ${ip}`, label: `client ${ip}` };
  };

  const unary =
    <Req, Res>(name: string, fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>) =>
    (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
      const start = observer ? process.hrtime.bigint() : 0n;
      const done = (result: string): void => observer?.rpc(name, result, Number(process.hrtime.bigint() - start) / 1e9);
      fn(call.request, call).then(
        (res) => {
          done('ok');
          cb(null, res);
        },
        (e: unknown) => {
          done(e instanceof RegistryError ? e.code : 'internal');
          const st = errorToStatus(e);
          if (!(e instanceof RegistryError)) logger.error({ rpc: name, err: (e as Error)?.stack ?? String(e) }, 'rpc failed');
          else logger.debug?.({ rpc: name, code: e.code, err: e.message, peer: call.getPeer() }, 'rpc refused');
          cb(st as grpc.ServiceError, null);
        },
      );
    };

  // Reservations are an operator's decision, not a node's: a node certificate (tls.ts) says
  // which leases a node may touch, not who may keep subnets for whom, and without mTLS nothing
  // identifies a caller at all. So the reservation calls are served only to a caller on the
  // control plane's own host (`weft control reserve` run there), whatever else it presents.
  const operator = (call: grpc.ServerUnaryCall<unknown, unknown>, rpc: string) => {
    if (!isLoopbackPeer(call.getPeer())) {
      logger.warn({ rpc, peer: call.getPeer() }, 'reservation call refused: not from a loopback address');
      throw new RegistryError('permission', `${rpc} is served only to clients on this host's loopback address (run weft control ${rpc.toLowerCase()} there)`);
    }
    if (!hasReservations(registry)) {
      throw new RegistryError(
        'invalid',
        'this registry keeps no reservations of its own: on etcd a reservation is a subnet key written without a lease (etcdctl put, as flannel documents)',
      );
    }
    return registry;
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
    Reserve: unary('Reserve', async (req: WireReservation, call) => {
      checkLeaseRef(req);
      await operator(call, 'Reserve').reserve({ subnet: req.subnet, publicIp: req.publicIp });
      return {};
    }),
    Unreserve: unary('Unreserve', async (req: { subnet: string }, call) => {
      checkSubnetSize(req.subnet);
      await operator(call, 'Unreserve').unreserve(req.subnet);
      return {};
    }),
    ListReservations: unary('ListReservations', async (_req: unknown, call) => ({
      reservations: await operator(call, 'ListReservations').reservations(),
    })),
    List: unary('List', async () => {
      const { leases, revision } = await registry.list();
      return { leases: leases.map(leaseToWire), revision };
    }),
    Watch: (call: grpc.ServerWritableStream<WireWatchRequest, unknown>) => {
      const from = Number(call.request.fromRevision ?? 0);
      const client = watchClient(call);
      const open = perClient.get(client.key) ?? 0;
      if (open >= maxPerClient) {
        stats.refused++;
        observer?.rpc('Watch', 'exhausted');
        logger.warn({ rpc: 'Watch', peer: call.getPeer(), client: client.label, open, limit: maxPerClient }, 'watch refused: too many streams');
        const refusal = `too many watch streams for ${client.label}: ${open} open, limit ${maxPerClient}`;
        call.emit('error', errorToStatus(new RegistryError('exhausted', refusal)));
        return;
      }
      perClient.set(client.key, open + 1);
      stats.streams++;
      observer?.rpc('Watch', 'ok');

      let ended = false;
      let released = false;
      let handle: WatchHandle | undefined;
      let first = true;
      /** Events counted against WATCH_MAX_QUEUED_EVENTS: written and not yet flushed, plus `queue`. */
      let pending = 0;
      /** Batches held back after call.write() asked us to wait for 'drain'. */
      const queue: { wire: unknown; n: number }[] = [];
      let blocked = false;
      let revisionSent = from;
      const count = (n: number): void => {
        pending += n;
        stats.queuedEvents += n;
        if (pending > stats.maxQueuedEvents) stats.maxQueuedEvents = pending;
      };
      const uncount = (n: number): void => {
        if (released) return; // release() already took this stream's events off the gauge
        pending -= n;
        stats.queuedEvents -= n;
      };
      const send = (wire: unknown, n: number): void => {
        // The callback runs once grpc-js has handed the message to HTTP/2; a client that does not
        // read stops that (flow control), and the write buffer then fills until write() says no.
        blocked = !call.write(wire, () => uncount(n));
      };
      // Ends this stream once: with a status when `err` is given, and always releases the
      // registry watch. Also used by close() for server shutdown.
      const finish = (err?: unknown): void => {
        if (ended) return;
        ended = true;
        handle?.close();
        watches.delete(finish);
        for (const q of queue.splice(0)) uncount(q.n);
        // Emitting 'error' on a ServerWritableStream is how grpc-js ends it with a status.
        if (err !== undefined) call.emit('error', errorToStatus(err));
      };
      // The call is over (status sent, or cancelled): only now is its memory gone, so only now
      // does it stop counting against its client's streams.
      const release = (): void => {
        if (released) return;
        stats.queuedEvents -= pending;
        pending = 0;
        released = true;
        stats.streams--;
        const n = (perClient.get(client.key) ?? 1) - 1;
        if (n > 0) perClient.set(client.key, n);
        else perClient.delete(client.key);
      };
      call.on('drain', () => {
        blocked = false;
        while (!blocked && !ended && queue.length > 0) {
          const q = queue.shift()!;
          send(q.wire, q.n);
        }
      });
      handle = registry.watch(
        from,
        (batch) => {
          if (ended) return;
          // The first batch may be a whole snapshot: it is what the client asked for, sized by
          // the cluster rather than by how far behind the client is, so it is not counted.
          const n = first ? 0 : Math.max(1, batch.events.length + batch.leases.length);
          first = false;
          // Only what piles up behind unflushed writes counts as falling behind: a batch that
          // finds the stream drained goes out whole, however large (a sweep of expired leases can
          // be up to MAX_EVENTS_PER_BATCH events), so a stream holds at most one such batch
          // plus WATCH_MAX_QUEUED_EVENTS.
          if (pending > 0 && pending + n > WATCH_MAX_QUEUED_EVENTS) {
            const behind = pending + n;
            stats.cutOff++;
            logger.warn(
              { rpc: 'Watch', peer: call.getPeer(), client: client.label, queued: behind, limit: WATCH_MAX_QUEUED_EVENTS, revision: revisionSent },
              'watcher fell behind; ending its stream',
            );
            finish(
              new RegistryError(
                'exhausted',
                `watcher fell behind: ${behind} events queued (limit ${WATCH_MAX_QUEUED_EVENTS}); resume from revision ${revisionSent}`,
              ),
            );
            return;
          }
          count(n);
          revisionSent = batch.revision;
          const wire = batchToWire(batch);
          if (blocked) queue.push({ wire, n });
          else send(wire, n);
        },
        (err) => finish(err),
      );
      // A registry may report failure synchronously, before `handle` was assigned.
      if (ended) handle.close();
      else watches.add(finish);
      call.on('cancelled', () => {
        finish();
        release();
      });
      call.on('close', release);
      logger.debug?.({ rpc: 'Watch', fromRevision: from, peer: call.getPeer(), client: client.label }, 'watch started');
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

  return { port, address, close, watchStats: () => ({ ...stats }) };
}
