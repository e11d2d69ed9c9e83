// Talking to an etcd cluster: which endpoints are acceptable, the TLS files for https ones, the
// username and password, the client with its failover policy across members, and the raw Watch
// streams that the watch (watch.ts) runs itself. Nothing here knows about leases or flannel's layout.
import { Etcd3, GRPCDeadlineExceededError, isRecoverableError, type IOptions, type IWatchRequest, type IWatchResponse } from 'etcd3';
import type * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { InsecureFileError, readPrivateFile } from '../../util/private-file';
import { RegistryError } from '../registry';
import { quote } from '../../util/quote';

/** How long a member that failed a call is passed over while another endpoint is believed up. */
const MEMBER_PENALTY_MS = 1000;

export interface EtcdTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** etcd's own user/password authentication (etcdctl user add, auth enable), as flanneld's --etcd-username/--etcd-password. */
export interface EtcdAuth {
  username: string;
  password: string;
}

/**
 * `ep` safe to print: whatever precedes the last '@' after the scheme (a user:password, or a
 * mistyped one that did not even parse as a URL) becomes ***, and a long string is cut.
 */
export function quoteEndpoint(ep: string): string {
  const at = ep.lastIndexOf('@');
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(ep)?.[0] ?? '';
  const safe = at < 0 ? ep : `${scheme}***${ep.slice(at)}`;
  return quote(safe);
}

/**
 * Why a parsed endpoint must be refused for carrying credentials, or undefined. etcd's clients
 * ignore userinfo in endpoint URLs anyway (clientv3 takes Username/Password apart), and a
 * password in a URL ends up in process listings, logs and error messages.
 */
export function userinfoProblem(ep: string, u: URL): string | undefined {
  if (u.username === '' && u.password === '') return undefined;
  return `etcd endpoint ${quoteEndpoint(ep)} has credentials in it; give the endpoint without them and the credentials with --etcd-username and --etcd-password-file (or WEFT_ETCD_USERNAME and WEFT_ETCD_PASSWORD)`;
}

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
export type WatchStream = grpc.ClientDuplexStream<IWatchRequest, IWatchResponse>;

/**
 * etcd3's default fault handling retries three times and opens a 5 s circuit breaker per host,
 * which turns "etcd is down" into long stalls and then instant failures after it is back. Here a
 * call tries each endpoint at most once, and a member that just failed is passed over for a
 * moment — unless every member is in that state, because refusing to try at all would only turn
 * a restarted single-member etcd into a second of made-up unavailability.
 */
class MemberHealth {
  private readonly badUntil = new Map<string, number>();

  constructor(private readonly endpoints: string[]) {}

  private usable(ep: string, now: number): boolean {
    return (this.badUntil.get(ep) ?? 0) <= now;
  }

  hostPolicy(ep: string): Policy {
    const run = async <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> => {
      const now = Date.now();
      if (!this.usable(ep, now) && this.endpoints.some((e) => this.usable(e, now))) {
        throw new Error(`etcd member ${ep} failed recently; trying another`);
      }
      try {
        const r = await fn({ signal: new AbortController().signal });
        this.badUntil.delete(ep);
        return r;
      } catch (e) {
        if (e instanceof Error && isRecoverableError(e)) this.badUntil.set(ep, Date.now() + MEMBER_PENALTY_MS);
        throw e;
      }
    };
    return policy(run);
  }

  globalPolicy(): Policy {
    const attempts = this.endpoints.length;
    const run = async <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> => {
      // etcd3 hands each attempt the next member in a shuffled order; one pass over the
      // members, no backoff: the call's own deadline bounds the whole thing.
      for (let i = 1; ; i++) {
        try {
          return await fn({ signal: new AbortController().signal });
        } catch (e) {
          // Past the deadline another member cannot help, and its instant DEADLINE_EXCEEDED
          // would mark a healthy member as failed.
          if (i >= attempts || e instanceof GRPCDeadlineExceededError || !(e instanceof Error && isRecoverableError(e))) throw e;
        }
      }
    };
    return policy(run);
  }
}

function policy(run: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) => Promise<T>): Policy {
  const never = { dispose() {} };
  // etcd3 only calls execute(); the event members exist to satisfy cockatiel's IPolicy type.
  return { execute: run, onSuccess: () => never, onFailure: () => never } as unknown as Policy;
}

/** Etcd3 with access to the connection pool, for the watch streams that watch.ts runs itself. */
export class EtcdClient extends Etcd3 {
  /**
   * A raw Watch stream on one member. etcd3's own Watcher reconnects silently with backoff,
   * which would hide an outage from the daemon; this stream just ends with an error instead.
   */
  openWatchStream(): Promise<WatchStream> {
    return this.pool.withConnection('Watch', ({ client, metadata }) => {
      // clientv3's WithRequireLeader, as flanneld's watch uses: a member cut off from the quorum
      // cancels the stream instead of leaving it open and silent forever.
      const md = metadata.clone();
      md.set('hasleader', 'true');
      return (client as unknown as { watch(md: grpc.Metadata): WatchStream }).watch(md);
    });
  }
}

/**
 * Refuses endpoints that are not http:// or https:// URLs, that carry a user or password, or
 * that mix http and https: one set of TLS credentials covers every member.
 */
export function checkEndpoints(endpoints: string[]): void {
  if (!Array.isArray(endpoints) || endpoints.length === 0) {
    throw new RegistryError('invalid', 'at least one etcd endpoint is required (--etcd-endpoints)');
  }
  for (const ep of endpoints) {
    let u: URL;
    try {
      u = new URL(ep);
    } catch {
      throw new RegistryError('invalid', `etcd endpoint ${quoteEndpoint(ep)} is not a URL like http://127.0.0.1:2379`);
    }
    const creds = userinfoProblem(ep, u);
    if (creds !== undefined) throw new RegistryError('invalid', creds);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new RegistryError('invalid', `etcd endpoint ${quoteEndpoint(ep)} must be http:// or https://`);
    }
  }
  const secure = endpoints.filter((e) => e.startsWith('https:')).length;
  if (secure !== 0 && secure !== endpoints.length) {
    throw new RegistryError('invalid', `etcd endpoints ${endpoints.join(',')} mix http and https; use one scheme`);
  }
}

/**
 * A client for endpoints that passed checkEndpoints(), reading the TLS files (flanneld's
 * --etcd-cafile, --etcd-certfile, --etcd-keyfile) first so a bad path is an 'invalid' error
 * now rather than a handshake failure later. With `auth`, etcd3 trades the password for a token
 * on first use. Requests without a deadline of their own get `deadlineMs`.
 */
export function openEtcdClient(endpoints: readonly string[], tls: EtcdTlsFiles | undefined, deadlineMs: number, auth?: EtcdAuth): EtcdClient {
  const secure = endpoints.filter((e) => e.startsWith('https:')).length;
  const ca = readTlsFile(tls?.caFile, '--etcd-cafile');
  const cert = readTlsFile(tls?.certFile, '--etcd-certfile');
  const key = readTlsFile(tls?.keyFile, '--etcd-keyfile', true);
  if ((cert === undefined) !== (key === undefined)) {
    throw new RegistryError('invalid', 'etcd client certificate needs both --etcd-certfile and --etcd-keyfile');
  }
  if ((ca || cert) && secure === 0) {
    throw new RegistryError('invalid', `etcd TLS files given but endpoints ${endpoints.join(',')} are http://; use https://`);
  }
  const hosts = [...endpoints];
  const health = new MemberHealth(hosts);
  return new EtcdClient({
    hosts,
    // No CA file: grpc falls back to the system roots, as Go's crypto/tls does for flanneld.
    credentials: ca || cert ? { rootCertificate: ca as Buffer, certChain: cert, privateKey: key } : undefined,
    ...(auth ? { auth: { username: auth.username, password: auth.password } } : {}),
    grpcOptions: {
      // A watch idles for hours; pings notice a silently dead member (power loss, partition).
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      // grpc's reconnect backoff grows to two minutes by default, during which every call
      // fails at once even though etcd is back; the daemon has its own backoff.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
    // Every request the registry makes passes its own deadline; this covers any that does not.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + deadlineMs }),
    faultHandling: { host: (ep) => health.hostPolicy(ep), global: health.globalPolicy() },
  });
}

function readTlsFile(file: string | undefined, flag: string, secret = false): Buffer | undefined {
  if (file === undefined || file === '') return undefined;
  try {
    return secret ? readPrivateFile(flag, file) : readFileSync(file);
  } catch (e) {
    if (e instanceof InsecureFileError) throw new RegistryError('invalid', e.message);
    throw new RegistryError('invalid', `${flag} ${file}: cannot read it (${(e as Error).message})`);
  }
}

/** etcd's int64 fields (revisions, TTLs) arrive as strings. */
export function num(s: string | number | undefined): number {
  return Number(s ?? 0);
}

/** An error from etcd, grpc or the codec as one line for a RegistryError message. */
export function describe(e: unknown): string {
  if (e instanceof Error) return e.message.replace(/\s+/g, ' ').trim();
  return String(e);
}
