// Registry over gRPC: what a daemon uses to reach `weft control`. Every failure surfaces as a
// RegistryError; an outage is 'unavailable' and the daemon decides how to back off and retry —
// this client never retries or reconnects a watch by itself, so the daemon's view of "am I
// connected" is never hidden behind a silent retry loop. A failed TLS handshake is not an
// outage but a configuration error, so it becomes 'permission' (fatal to a starting daemon)
// instead of 'unavailable' (retried forever).
import * as grpc from '@grpc/grpc-js';
import { parseNetConfig, type NetworkConfig } from './netconfig';
import { MAX_REPLY_BYTES, MAX_REQUEST_BYTES } from './limits';
import {
  RegistryError,
  silentLogger,
  type AcquireRequest,
  type Lease,
  type LeaseRef,
  type Registry,
  type RegistryLogger,
  type Reservation,
  type ReservationRegistry,
  type WatchBatch,
  type WatchHandle,
} from './registry';
import {
  batchFromWire,
  controlService,
  errorFromStatus,
  leaseFromWire,
  leasesFromWire,
  type SkippedLease,
  type WireLease,
  type WireListResponse,
  type WireNetworkConfig,
  type WireReservation,
  type WireWatchBatch,
} from './wire';
import { classifyTransportFailure } from './tls';

export const DEFAULT_DEADLINE_MS = 5000;

export interface GrpcRegistryOptions {
  /** Deadline for each unary call. */
  deadlineMs?: number;
  /** Insecure by default; TLS is grpc.credentials.createSsl(...) (see tls.ts loadClientCredentials). */
  credentials?: grpc.ChannelCredentials;
  /** Where a lease skipped from a List reply or watch batch (malformed, over limits.ts) is reported. */
  logger?: RegistryLogger;
}

type UnaryMethod = (req: unknown, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall;

export class GrpcRegistry implements Registry, ReservationRegistry {
  readonly target: string;
  private readonly client: grpc.Client;
  private readonly deadlineMs: number;
  private readonly secure: boolean;
  private readonly skipped: SkippedLease;

  constructor(target: string, opts: GrpcRegistryOptions = {}) {
    this.target = target;
    this.deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
    const credentials = opts.credentials ?? grpc.credentials.createInsecure();
    this.secure = credentials._isSecure();
    const log = opts.logger ?? silentLogger;
    this.skipped = (why, lease) => log.warn({ control: target, ...lease, why }, 'skipping a lease from the control plane that cannot be used');
    const Control = controlService();
    this.client = new Control(target, credentials, {
      // A watch is a long-lived idle stream: without pings a silently dead server (power loss,
      // partition) would leave the daemon waiting forever instead of getting onError.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      // The same bounds as the server's (limits.ts): every reply it may send is one we accept.
      'grpc.max_receive_message_length': MAX_REPLY_BYTES,
      'grpc.max_send_message_length': MAX_REQUEST_BYTES,
    });
  }

  private unary<T>(method: string, req: unknown): Promise<T> {
    const fn = (this.client as unknown as Record<string, UnaryMethod>)[method];
    return new Promise<T>((resolve, reject) => {
      fn.call(this.client, req, { deadline: Date.now() + this.deadlineMs }, (err, res) => {
        if (err) reject(this.failure(err));
        else resolve(res as T);
      });
    });
  }

  async config(): Promise<NetworkConfig> {
    const w = await this.unary<WireNetworkConfig>('GetConfig', {});
    try {
      // The JSON is authoritative: parsing it here applies the same defaults and checks as the
      // server did, so both sides hold an identical NetworkConfig.
      return parseNetConfig(w.netConfJson);
    } catch (e) {
      throw new RegistryError('invalid', `server sent a network config this client cannot use: ${(e as Error).message}`);
    }
  }

  async acquire(req: AcquireRequest): Promise<Lease> {
    const w = await this.unary<WireLease>('Acquire', {
      publicIp: req.publicIp,
      backendType: req.backendType ?? '',
      backendData: req.backendData === undefined ? '' : JSON.stringify(req.backendData),
      previousSubnet: req.previousSubnet ?? '',
    });
    return leaseFromWire(w);
  }

  async renew(lease: LeaseRef): Promise<Lease> {
    return leaseFromWire(await this.unary<WireLease>('Renew', { subnet: lease.subnet, publicIp: lease.publicIp }));
  }

  async revoke(lease: LeaseRef): Promise<void> {
    await this.unary<unknown>('Revoke', { subnet: lease.subnet, publicIp: lease.publicIp });
  }

  /** weft control's reservation calls; served only when this client is on the server's loopback. */
  async reserve(r: Reservation): Promise<void> {
    await this.unary<unknown>('Reserve', { subnet: r.subnet, publicIp: r.publicIp });
  }

  async unreserve(subnet: string): Promise<void> {
    await this.unary<unknown>('Unreserve', { subnet });
  }

  async reservations(): Promise<Reservation[]> {
    const w = await this.unary<{ reservations: WireReservation[] }>('ListReservations', {});
    return w.reservations.map((r) => ({ subnet: r.subnet, publicIp: r.publicIp }));
  }

  async list(): Promise<{ leases: Lease[]; revision: number }> {
    const w = await this.unary<WireListResponse>('List', {});
    return { leases: leasesFromWire(w.leases, this.skipped), revision: Number(w.revision) };
  }

  watch(fromRevision: number, onBatch: (b: WatchBatch) => void, onError: (e: Error) => void): WatchHandle {
    const stream = (this.client as unknown as { Watch(req: unknown): grpc.ClientReadableStream<WireWatchBatch> }).Watch({
      fromRevision,
    });
    let done = false;
    const fail = (e: Error): void => {
      if (done) return;
      done = true;
      stream.cancel();
      onError(e);
    };
    stream.on('data', (w: WireWatchBatch) => {
      if (done) return;
      let batch: WatchBatch;
      try {
        batch = batchFromWire(w, this.skipped);
      } catch (e) {
        fail(e as Error);
        return;
      }
      try {
        onBatch(batch);
      } catch (e) {
        fail(e instanceof Error ? e : new Error(String(e)));
      }
    });
    stream.on('error', (e) => fail(this.failure(e)));
    // The server never ends a watch with OK; an orderly end still means this view is stale.
    stream.on('end', () => fail(new RegistryError('unavailable', `watch stream to ${this.target} ended`)));
    return {
      close: () => {
        if (done) return;
        done = true;
        stream.cancel(); // surfaces as a CANCELLED 'error', which `done` swallows
      },
    };
  }

  close(): void {
    this.client.close();
  }

  /**
   * errorFromStatus plus what grpc-js hides in an UNAVAILABLE's details: a TLS handshake that
   * failed for a stated reason (untrusted server certificate, server without TLS, client
   * certificate required) becomes 'permission' naming the flags to check. A connection that was
   * merely closed before HTTP/2 started stays 'unavailable' — a server going down looks the
   * same — but says which misconfiguration would also explain it.
   */
  private failure(e: unknown): RegistryError {
    const se = e as Partial<grpc.ServiceError>;
    const f = se.code === grpc.status.UNAVAILABLE && typeof se.details === 'string' ? classifyTransportFailure(se.details) : undefined;
    if (f?.kind === 'tls') {
      return new RegistryError(
        'permission',
        `TLS handshake with control at ${this.target} failed: ${f.reason}; check --control-cafile/--control-certfile/--control-keyfile`,
      );
    }
    if (f?.kind === 'closed') {
      // Which misconfiguration fits depends on our side: a plaintext client is dropped by a TLS
      // server; a TLS client by an mTLS server that does not trust its certificate.
      const hint = this.secure
        ? "shutting down, or rejecting this client's certificate: check that --control-certfile/--control-keyfile are signed by its --tls-client-ca-file"
        : 'shutting down, or serving TLS to this plaintext client: pass --control-cafile if it runs with --tls-cert-file';
      return new RegistryError('unavailable', `control at ${this.target} closed the connection before gRPC started (${hint})`);
    }
    return errorFromStatus(e);
  }
}
