// The lease registry on etcd, in flannel's layout (see etcd-codec.ts), so weft and flanneld nodes
// can share one cluster network. etcd is the only state: there is no cache of leases here, every
// decision reads etcd and every write is a compare-and-swap on what was read.
//
// How flannel's semantics map onto etcd (pkg/subnet/etcd/registry.go, local_manager.go):
//  - One etcd lease per subnet key, granted with the lease TTL. Expiry is etcd deleting the key,
//    which watchers see as a DELETE like any revoke. Renewal grants a fresh lease and re-puts
//    the key (flannel does not keep leases alive either; a renewal is a visible PUT).
//  - A new subnet is claimed with If(createRevision(key) == 0) Then(put): two nodes that chose
//    the same subnet cannot both win. Renew and revoke are conditioned on the modRevision read
//    when ownership was checked, so a lease that expired and went to another node meanwhile is
//    never overwritten or deleted by its old owner. flannel's own update/delete are
//    unconditional; being stricter cannot break a flannel peer.
//  - Failures of etcd or the transport are RegistryError('unavailable'): the daemon backs off
//    and retries those, and nothing in here retries or reconnects behind its back beyond trying
//    the other endpoints within one call's deadline.
import {
  Etcd3,
  GRPCDeadlineExceededError,
  isRecoverableError,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IRequestOp,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import type * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { allocate, normalisePublicIp } from './allocator';
import type { RegistryLogger } from './embedded';
import {
  DEFAULT_ETCD_PREFIX,
  canonicalJson,
  configKey,
  decodeLeaseValue,
  encodeLeaseValue,
  normalisePrefix,
  parseSubnetKey,
  prefixEnd,
  subnetKey,
  subnetsPrefix,
  type LeaseAttrs,
} from './etcd-codec';
import { parseNetConfig, type NetworkConfig } from './netconfig';
import {
  RegistryError,
  type AcquireRequest,
  type Lease,
  type LeaseEvent,
  type LeaseRef,
  type Registry,
  type WatchBatch,
  type WatchHandle,
} from './registry';
import { cidrContainsCidr, formatCidr, parseCidr } from '../route/address';

export { DEFAULT_ETCD_PREFIX } from './etcd-codec';

export const DEFAULT_ETCD_LEASE_TTL_MS = 24 * 60 * 60 * 1000; // flanneld's subnet lease TTL
export const DEFAULT_ETCD_DEADLINE_MS = 5000;
/** Compare-and-swap attempts before a call gives up as 'unavailable' (another node kept winning). */
const MAX_CAS_ATTEMPTS = 10;
/** How long a member that failed a call is passed over while another endpoint is believed up. */
const MEMBER_PENALTY_MS = 1000;

export interface EtcdTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface EtcdRegistryOptions {
  /** e.g. ['http://127.0.0.1:23790'] or https://…; all members of one cluster. */
  endpoints: string[];
  /** Default DEFAULT_ETCD_PREFIX (flanneld's --etcd-prefix); a trailing slash is dropped. */
  prefix?: string;
  /** For https endpoints: CA to verify etcd with; cert+key when etcd demands client certificates. */
  tls?: EtcdTlsFiles;
  /** Default 24 h (flanneld's); rounded up to whole seconds for the etcd lease. */
  leaseTtlMs?: number;
  /** Bound on each registry call (all the etcd requests it makes); default 5000. */
  deadlineMs?: number;
  random?: () => number;
  logger?: RegistryLogger;
}

/** One key under PREFIX/subnets/ whose name is a subnet; attrs is undefined when the value is junk. */
interface SubnetEntry {
  key: string;
  subnet: string;
  modRevision: string;
  leaseId: string;
  value: Buffer;
  attrs: LeaseAttrs | undefined;
  why?: string;
}

/** One registry call's budget: every etcd request it makes shares the same absolute deadline. */
interface Call {
  deadline: number;
}

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
type WatchStream = grpc.ClientDuplexStream<IWatchRequest, IWatchResponse>;

const silent: RegistryLogger = { info() {}, warn() {}, error() {} };

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

/** Etcd3 with access to the connection pool, for watch streams that this module controls itself. */
class EtcdClient extends Etcd3 {
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

function readTlsFile(file: string | undefined, flag: string): Buffer | undefined {
  if (file === undefined || file === '') return undefined;
  try {
    return readFileSync(file);
  } catch (e) {
    throw new RegistryError('invalid', `${flag} ${file}: cannot read it (${(e as Error).message})`);
  }
}

function num(s: string | number | undefined): number {
  return Number(s ?? 0);
}

function describe(e: unknown): string {
  if (e instanceof Error) return e.message.replace(/\s+/g, ' ').trim();
  return String(e);
}

export class EtcdRegistry implements Registry {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  private readonly client: EtcdClient;
  private readonly ttlSeconds: number;
  private readonly deadlineMs: number;
  private readonly random: () => number;
  private readonly log: RegistryLogger;
  private readonly where: string;
  private cfg: NetworkConfig | undefined;
  private readonly watches = new Set<EtcdWatch>();
  private readonly warned = new Set<string>();
  private closed = false;

  constructor(opts: EtcdRegistryOptions) {
    if (!Array.isArray(opts.endpoints) || opts.endpoints.length === 0) {
      throw new RegistryError('invalid', 'at least one etcd endpoint is required (--etcd-endpoints)');
    }
    for (const ep of opts.endpoints) {
      let u: URL;
      try {
        u = new URL(ep);
      } catch {
        throw new RegistryError('invalid', `etcd endpoint ${JSON.stringify(ep)} is not a URL like http://127.0.0.1:2379`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') {
        throw new RegistryError('invalid', `etcd endpoint ${ep} must be http:// or https://`);
      }
    }
    const secure = opts.endpoints.filter((e) => e.startsWith('https:')).length;
    if (secure !== 0 && secure !== opts.endpoints.length) {
      throw new RegistryError('invalid', `etcd endpoints ${opts.endpoints.join(',')} mix http and https; use one scheme`);
    }
    this.endpoints = [...opts.endpoints];
    this.where = `etcd ${this.endpoints.join(',')}`;
    try {
      this.prefix = normalisePrefix(opts.prefix ?? DEFAULT_ETCD_PREFIX);
    } catch (e) {
      throw new RegistryError('invalid', describe(e));
    }
    const ttlMs = opts.leaseTtlMs ?? DEFAULT_ETCD_LEASE_TTL_MS;
    if (!(ttlMs > 0)) throw new RegistryError('invalid', `lease TTL must be positive, got ${ttlMs} ms`);
    // etcd leases count whole seconds; rounding down could turn a short TTL into 0 ("forever").
    this.ttlSeconds = Math.ceil(ttlMs / 1000);
    this.deadlineMs = opts.deadlineMs ?? DEFAULT_ETCD_DEADLINE_MS;
    if (!(this.deadlineMs > 0)) throw new RegistryError('invalid', `deadline must be positive, got ${this.deadlineMs} ms`);
    this.random = opts.random ?? Math.random;
    this.log = opts.logger ?? silent;

    const ca = readTlsFile(opts.tls?.caFile, '--etcd-cafile');
    const cert = readTlsFile(opts.tls?.certFile, '--etcd-certfile');
    const key = readTlsFile(opts.tls?.keyFile, '--etcd-keyfile');
    if ((cert === undefined) !== (key === undefined)) {
      throw new RegistryError('invalid', 'etcd client certificate needs both --etcd-certfile and --etcd-keyfile');
    }
    if ((ca || cert) && secure === 0) {
      throw new RegistryError('invalid', `etcd TLS files given but endpoints ${this.endpoints.join(',')} are http://; use https://`);
    }
    const hosts = [...this.endpoints];
    const health = new MemberHealth(hosts);
    const deadlineMs = this.deadlineMs;
    this.client = new EtcdClient({
      hosts,
      // No CA file: grpc falls back to the system roots, as Go's crypto/tls does for flanneld.
      credentials: ca || cert ? { rootCertificate: ca as Buffer, certChain: cert, privateKey: key } : undefined,
      grpcOptions: {
        // A watch idles for hours; pings notice a silently dead member (power loss, partition).
        'grpc.keepalive_time_ms': 30_000,
        'grpc.keepalive_timeout_ms': 10_000,
        // grpc's reconnect backoff grows to two minutes by default, during which every call
        // fails at once even though etcd is back; the daemon has its own backoff.
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
      },
      // Every request this module makes passes its own deadline; this covers any that does not.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + deadlineMs }),
      faultHandling: { host: (ep) => health.hostPolicy(ep), global: health.globalPolicy() },
    });
  }

  // ---- plumbing ---------------------------------------------------------------------------

  /**
   * Runs one registry call under the deadline. Anything that is not already a RegistryError is
   * etcd or the transport failing, hence 'unavailable'. The timer is a backstop: each request
   * carries the same deadline, so normally grpc's DEADLINE_EXCEEDED arrives first.
   */
  private call<T>(what: string, fn: (c: Call) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new RegistryError('unavailable', `${what}: etcd registry is closed`));
    const c: Call = { deadline: Date.now() + this.deadlineMs };
    const work = fn(c).catch((e: unknown) => {
      throw this.asRegistryError(what, e);
    });
    let timer: NodeJS.Timeout | undefined;
    const backstop = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new RegistryError('unavailable', `${this.where}: ${what}: no answer within ${this.deadlineMs} ms`)),
        this.deadlineMs + 250,
      );
    });
    work.catch(() => undefined); // lost the race to the backstop: nobody else will look at it
    return Promise.race([work, backstop]).finally(() => clearTimeout(timer));
  }

  private asRegistryError(what: string, e: unknown): RegistryError {
    if (e instanceof RegistryError) return e;
    if (this.closed) return new RegistryError('unavailable', `${what}: etcd registry is closed`);
    let msg = `${this.where}: ${what}: ${describe(e)}`;
    // grpc reports a failed handshake (unknown CA, refused client certificate) as UNAVAILABLE
    // with an OpenSSL string; name the flags that fix it.
    if (this.endpoints[0].startsWith('https:') && /handshake|certificate|ssl|tls|alert/i.test(msg)) {
      msg += ' (TLS: check --etcd-cafile, --etcd-certfile and --etcd-keyfile)';
    }
    return new RegistryError('unavailable', msg);
  }

  private opts(c: Call): grpc.CallOptions {
    return { deadline: c.deadline };
  }

  private warnOnce(key: string, modRevision: string, msg: string, extra: object): void {
    // list() runs on every acquire: say it once per version of a bad key, not every time.
    const id = `${key}@${modRevision}`;
    if (this.warned.has(id)) return;
    if (this.warned.size > 1000) this.warned.clear();
    this.warned.add(id);
    this.log.warn({ key, ...extra }, msg);
  }

  /** The subnet a key under the subnets prefix names; undefined (and a warning) when it names none. */
  private subnetOf(kv: IKeyValue): string | undefined {
    const key = kv.key.toString();
    const subnet = parseSubnetKey(this.prefix, key);
    if (subnet === undefined) this.warnOnce(key, kv.mod_revision, 'ignoring a key under the subnets prefix that does not name a subnet', {});
    return subnet;
  }

  private entryOf(kv: IKeyValue): SubnetEntry | undefined {
    const key = kv.key.toString();
    const subnet = this.subnetOf(kv);
    if (subnet === undefined) return undefined;
    let attrs: LeaseAttrs | undefined;
    let why: string | undefined;
    try {
      attrs = decodeLeaseValue(kv.value.toString());
    } catch (e) {
      why = describe(e);
      this.warnOnce(key, kv.mod_revision, 'ignoring a subnet lease whose value is unreadable', { why });
    }
    return { key, subnet, modRevision: kv.mod_revision, leaseId: kv.lease, value: kv.value, attrs, why };
  }

  /** Leases a peer should route to: readable, and inside the cluster network. */
  private usable(e: SubnetEntry, cfg: NetworkConfig): e is SubnetEntry & { attrs: LeaseAttrs } {
    if (!e.attrs) return false;
    if (!cidrContainsCidr(parseCidr(cfg.network), parseCidr(e.subnet))) {
      this.warnOnce(e.key, e.modRevision, 'ignoring a subnet lease outside the network', { network: cfg.network, publicIp: e.attrs.publicIp });
      return false;
    }
    return true;
  }

  private async readSubnets(c: Call): Promise<{ entries: SubnetEntry[]; revision: number }> {
    const base = subnetsPrefix(this.prefix);
    const res = await this.client.kv.range({ key: Buffer.from(base), range_end: prefixEnd(base) }, this.opts(c));
    const entries: SubnetEntry[] = [];
    for (const kv of res.kvs) {
      const e = this.entryOf(kv);
      if (e) entries.push(e);
    }
    return { entries, revision: num(res.header.revision) };
  }

  private async readKey(key: string, c: Call): Promise<IKeyValue | undefined> {
    const res = await this.client.kv.range({ key: Buffer.from(key) }, this.opts(c));
    return res.kvs[0];
  }

  /**
   * When a key's lease ends, as flanneld computes it: now plus the lease's remaining TTL. A key
   * without a lease (written by hand with etcdctl) never expires; it is reported as if just
   * renewed, since Lease has no "forever".
   */
  private async expirationOf(leaseId: string, c: Call): Promise<number> {
    const now = Date.now();
    if (leaseId === '0' || leaseId === '') return now + this.ttlSeconds * 1000;
    const r = await this.client.leaseClient.leaseTimeToLive({ ID: leaseId }, this.opts(c));
    // -1: the lease ran out between the read and this question; the DELETE is on its way.
    return now + Math.max(0, num(r.TTL)) * 1000;
  }

  /**
   * withExpiry false: expiration 0, no TimeToLive round trip. Watches use that: every daemon's
   * opening snapshot would otherwise cost one RPC per lease (flanneld pays it: a 1,000-node
   * cluster starting up asks etcd a million questions), and no watcher uses a peer's expiry.
   */
  private async leaseOf(e: SubnetEntry & { attrs: LeaseAttrs }, c: Call, withExpiry = true): Promise<Lease> {
    return {
      subnet: e.subnet,
      publicIp: e.attrs.publicIp,
      backendType: e.attrs.backendType,
      backendData: e.attrs.backendData,
      expiration: withExpiry ? await this.expirationOf(e.leaseId, c) : 0,
    };
  }

  private async grant(c: Call): Promise<{ id: string; ttlMs: number }> {
    const r = await this.client.leaseClient.leaseGrant({ TTL: this.ttlSeconds }, this.opts(c));
    if (r.error) throw new Error(`lease grant refused: ${r.error}`);
    // etcd raises a TTL below its minimum (1.5 election timeouts) to that minimum.
    return { id: r.ID, ttlMs: num(r.TTL) * 1000 };
  }

  /** Revokes a lease this call granted and did not use; best effort, it expires on its own anyway. */
  private revokeUnused(id: string): void {
    const c: Call = { deadline: Date.now() + this.deadlineMs };
    this.client.leaseClient.leaseRevoke({ ID: id }, this.opts(c)).catch((e: unknown) => {
      if (!this.closed) this.log.warn({ lease: id, err: describe(e) }, 'could not revoke an unused etcd lease; it will expire by itself');
    });
  }

  /**
   * Revokes the etcd lease a key was just moved off (renew) or deleted from (revoke), so renewals
   * do not pile up day-long orphan leases. Only when no key is attached to it any more: a lease
   * written by hand may be shared by several keys, and revoking it would delete the others.
   * Not awaited: the caller's change is already committed and must not wait on housekeeping.
   */
  private releaseOldLease(id: string): void {
    if (id === '0' || id === '') return;
    const c: Call = { deadline: Date.now() + this.deadlineMs };
    const lc = this.client.leaseClient;
    lc.leaseTimeToLive({ ID: id, keys: true }, this.opts(c))
      .then(async (r) => {
        if (num(r.TTL) < 0 || r.keys.length > 0) return;
        await lc.leaseRevoke({ ID: id }, this.opts(c));
      })
      .catch((e: unknown) => {
        if (!this.closed) this.log.warn({ lease: id, err: describe(e) }, 'could not revoke a released etcd lease; it will expire by itself');
      });
  }

  // ---- Registry -------------------------------------------------------------------------------

  config(): Promise<NetworkConfig> {
    if (this.cfg) return Promise.resolve(this.cfg);
    return this.call('read network config', async (c) => {
      const key = configKey(this.prefix);
      const kv = await this.readKey(key, c);
      if (!kv) {
        // flanneld waits for the config to appear rather than failing, so this is retryable.
        throw new RegistryError(
          'unavailable',
          `no network config at ${key} in ${this.where}; write one with: etcdctl put ${key} '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'`,
        );
      }
      let cfg: NetworkConfig;
      try {
        cfg = parseNetConfig(kv.value.toString());
      } catch (e) {
        throw new RegistryError('invalid', `${key} in ${this.where}: ${describe(e)}`);
      }
      // flanneld reads the config once at start; a change needs a restart there too.
      this.cfg = cfg;
      return cfg;
    });
  }

  /** See ensureNetworkConfig(). */
  ensureConfig(netConfJson: string): Promise<void> {
    let want: NetworkConfig;
    try {
      want = parseNetConfig(netConfJson);
    } catch (e) {
      return Promise.reject(new RegistryError('invalid', describe(e)));
    }
    return this.call('write network config', async (c) => {
      const key = configKey(this.prefix);
      const k = Buffer.from(key);
      const res = await this.client.kv.txn(
        {
          compare: [{ key: k, target: 'Create', result: 'Equal', create_revision: 0 }],
          success: [{ request_put: { key: k, value: Buffer.from(netConfJson) } }],
          failure: [{ request_range: { key: k } }],
        },
        this.opts(c),
      );
      if (res.succeeded) {
        this.cfg = want;
        this.log.info({ key, network: want.network }, 'network config written to etcd');
        return;
      }
      const have = res.responses[0]?.response_range?.kvs[0]?.value.toString() ?? '';
      let same = false;
      try {
        same = canonicalJson(JSON.parse(have)) === canonicalJson(want.raw);
      } catch {
        same = false;
      }
      if (!same) {
        throw new RegistryError(
          'invalid',
          `${key} in ${this.where} already holds a different network config: ${have.trim()} — not replacing it with ${netConfJson.trim()}; change it deliberately with etcdctl put, then restart every node`,
        );
      }
      this.cfg = want;
    });
  }

  acquire(req: AcquireRequest): Promise<Lease> {
    return this.call('acquire', async (c) => {
      const cfg = await this.config();
      for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt++) {
        const { entries } = await this.readSubnets(c);
        const now = Date.now();
        // Every key that names a subnet is taken, readable or not and in range or not: a key
        // that exists makes the create below fail, and allocate() works out overlaps. A key's
        // presence means it is live (etcd deletes it when its lease runs out).
        const byLease = new Map<Lease, SubnetEntry>();
        const leases: Lease[] = entries.map((e) => {
          const l: Lease = {
            subnet: e.subnet,
            publicIp: e.attrs?.publicIp ?? '',
            backendType: e.attrs?.backendType ?? '',
            backendData: e.attrs?.backendData ?? {},
            expiration: now + this.ttlSeconds * 1000,
          };
          byLease.set(l, e);
          return l;
        });
        // previous = {}: etcd forgets a subnet when its key expires; the node's own
        // previousSubnet hint in the request is what brings it back.
        const alloc = allocate({ config: cfg, leases, previous: {}, request: req, now, ttlMs: this.ttlSeconds * 1000, random: this.random });
        const want = alloc.lease;
        const key = subnetKey(this.prefix, want.subnet);
        const value = Buffer.from(encodeLeaseValue(want));
        const held = alloc.reason === 'held' ? entries.find((e) => e.subnet === want.subnet && e.attrs?.publicIp === want.publicIp) : undefined;
        const replaced = alloc.replaced ? byLease.get(alloc.replaced) : undefined;

        const g = await this.grant(c);
        const k = Buffer.from(key);
        const compare: ICompare[] = held
          ? [{ key: k, target: 'Mod', result: 'Equal', mod_revision: held.modRevision }]
          : [{ key: k, target: 'Create', result: 'Equal', create_revision: 0 }];
        const success: IRequestOp[] = [{ request_put: { key: k, value, lease: g.id } }];
        if (replaced) {
          // The node's old lease no longer fits the config: drop it in the same transaction so
          // the node never holds two subnets, and only if it is still the one we read.
          const rk = Buffer.from(replaced.key);
          compare.push({ key: rk, target: 'Mod', result: 'Equal', mod_revision: replaced.modRevision });
          success.push({ request_delete_range: { key: rk } });
        }
        let res;
        try {
          res = await this.client.kv.txn({ compare, success, failure: [{ request_range: { key: k } }] }, this.opts(c));
        } catch (e) {
          // Unknown whether it committed. For a new key flanneld revokes the lease, which undoes
          // the claim if it did happen; re-putting a held key must not be undone that way (the
          // revoke would delete the node's lease), so that lease is left to expire.
          if (!held) this.revokeUnused(g.id);
          throw e;
        }
        // A retried request whose first try committed fails its compare; our lease on the key says so.
        const committed = res.succeeded || res.responses[0]?.response_range?.kvs[0]?.lease === g.id;
        if (!committed) {
          this.revokeUnused(g.id);
          this.log.info({ subnet: want.subnet, publicIp: want.publicIp, attempt }, 'subnet changed under us; retrying');
          continue;
        }
        if (held) this.releaseOldLease(held.leaseId);
        if (replaced) {
          this.releaseOldLease(replaced.leaseId);
          this.log.warn({ subnet: replaced.subnet, publicIp: want.publicIp }, 'dropped lease that no longer fits the network config');
        }
        this.log.info({ subnet: want.subnet, publicIp: want.publicIp, reason: alloc.reason }, 'lease granted');
        return { ...want, expiration: Date.now() + g.ttlMs };
      }
      throw new RegistryError('unavailable', `${this.where}: acquire: lost ${MAX_CAS_ATTEMPTS} races for a subnet in a row; try again`);
    });
  }

  /** The key for a LeaseRef and its current value, checked to belong to ref.publicIp. */
  private async owned(ref: LeaseRef, c: Call): Promise<{ key: string; kv: IKeyValue; entry: SubnetEntry & { attrs: LeaseAttrs } }> {
    if (!ref || typeof ref.subnet !== 'string') throw new RegistryError('invalid', 'lease subnet is required');
    let subnet: string;
    try {
      subnet = formatCidr(parseCidr(ref.subnet));
    } catch (e) {
      throw new RegistryError('invalid', `lease subnet ${JSON.stringify(ref.subnet)} is not a CIDR (${describe(e)})`);
    }
    const publicIp = normalisePublicIp(ref.publicIp);
    const key = subnetKey(this.prefix, subnet);
    const kv = await this.readKey(key, c);
    if (!kv) throw new RegistryError('not_found', `no lease on ${subnet} (expired or revoked); acquire a new one`);
    const entry = this.entryOf(kv);
    if (!entry?.attrs) throw new RegistryError('permission', `lease ${subnet} holds an unreadable value (${entry?.why ?? 'bad key'}), not ${publicIp}'s`);
    if (entry.attrs.publicIp !== publicIp) {
      throw new RegistryError('permission', `lease ${subnet} belongs to ${entry.attrs.publicIp}, not ${publicIp}`);
    }
    return { key, kv, entry: entry as SubnetEntry & { attrs: LeaseAttrs } };
  }

  renew(ref: LeaseRef): Promise<Lease> {
    return this.call('renew', async (c) => {
      for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt++) {
        const { key, kv, entry } = await this.owned(ref, c);
        const g = await this.grant(c);
        const k = Buffer.from(key);
        // The value is put back as read, so a flanneld-written lease keeps fields weft does not model.
        const res = await this.client.kv.txn(
          {
            compare: [{ key: k, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision }],
            success: [{ request_put: { key: k, value: kv.value, lease: g.id } }],
            failure: [{ request_range: { key: k } }],
          },
          this.opts(c),
        );
        const committed = res.succeeded || res.responses[0]?.response_range?.kvs[0]?.lease === g.id;
        if (!committed) {
          // Changed between the read and the write (the node re-acquired, or it expired and
          // someone else took it): check ownership again on what is there now.
          this.revokeUnused(g.id);
          continue;
        }
        this.releaseOldLease(kv.lease);
        return {
          subnet: entry.subnet,
          publicIp: entry.attrs.publicIp,
          backendType: entry.attrs.backendType,
          backendData: entry.attrs.backendData,
          expiration: Date.now() + g.ttlMs,
        };
      }
      throw new RegistryError('unavailable', `${this.where}: renew ${ref.subnet}: it kept changing under us; try again`);
    });
  }

  revoke(ref: LeaseRef): Promise<void> {
    return this.call('revoke', async (c) => {
      for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt++) {
        const { key, kv, entry } = await this.owned(ref, c);
        const k = Buffer.from(key);
        const res = await this.client.kv.txn(
          {
            compare: [{ key: k, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision }],
            success: [{ request_delete_range: { key: k } }],
          },
          this.opts(c),
        );
        if (!res.succeeded) continue;
        this.releaseOldLease(kv.lease);
        this.log.info({ subnet: entry.subnet, publicIp: entry.attrs.publicIp }, 'lease revoked');
        return;
      }
      throw new RegistryError('unavailable', `${this.where}: revoke ${ref.subnet}: it kept changing under us; try again`);
    });
  }

  list(): Promise<{ leases: Lease[]; revision: number }> {
    return this.call('list', (c) => this.listWithin(c, true));
  }

  private async listWithin(c: Call, withExpiry: boolean): Promise<{ leases: Lease[]; revision: number }> {
    const cfg = await this.config();
    const { entries, revision } = await this.readSubnets(c);
    const leases = await Promise.all(entries.filter((e) => this.usable(e, cfg)).map((e) => this.leaseOf(e, c, withExpiry)));
    return { leases, revision };
  }

  watch(fromRevision: number, onBatch: (b: WatchBatch) => void, onError: (e: Error) => void): WatchHandle {
    const w = new EtcdWatch(this, fromRevision, onBatch, onError);
    if (this.closed) {
      w.fail(new RegistryError('unavailable', 'etcd registry is closed'));
      return w;
    }
    if (typeof fromRevision !== 'number' || !Number.isSafeInteger(fromRevision) || fromRevision < 0) {
      w.fail(new RegistryError('invalid', `fromRevision ${String(fromRevision)} is not a non-negative integer`));
      return w;
    }
    this.watches.add(w);
    w.start();
    return w;
  }

  /** Ends every watch with onError('unavailable'), as the embedded registry does, then closes the client. */
  close(): void {
    if (this.closed) return;
    for (const w of [...this.watches]) w.fail(new RegistryError('unavailable', 'etcd registry closed'));
    this.watches.clear();
    this.closed = true;
    this.client.close();
  }

  // ---- what EtcdWatch needs ----------------------------------------------------------------

  /** @internal */ forget(w: EtcdWatch): void {
    this.watches.delete(w);
  }

  /** @internal */ warnWatch(msg: string, extra: object): void {
    this.log.warn({ endpoints: this.endpoints, ...extra }, msg);
  }

  /** @internal */ get watchDeadlineMs(): number {
    return this.deadlineMs;
  }

  /** @internal */ get subnetsKeyPrefix(): string {
    return subnetsPrefix(this.prefix);
  }

  /** @internal */ get description(): string {
    return this.where;
  }

  /** @internal */ openWatchStream(): Promise<WatchStream> {
    if (this.closed) return Promise.reject(new RegistryError('unavailable', 'etcd registry is closed'));
    return this.client.openWatchStream();
  }

  /** @internal */ snapshot(what: string): Promise<{ leases: Lease[]; revision: number }> {
    return this.call(what, (c) => this.listWithin(c, false));
  }

  /** @internal Turns one etcd watch response's events into lease events. */
  eventsOf(res: IWatchResponse): Promise<LeaseEvent[]> {
    return this.call('watch', async (c) => {
      const cfg = await this.config();
      const out: Array<Promise<LeaseEvent | undefined>> = [];
      for (const ev of res.events) {
        if (ev.type === 'Delete') {
          const subnet = this.subnetOf(ev.kv);
          if (subnet === undefined) continue;
          // A DELETE carries only the key; prev_kv (requested on the watch) says whose lease it
          // was. Without it (compacted, or written by a client that never had a value) the
          // removed lease has just its subnet, an empty publicIp and backendType, {} data.
          const prev = ev.prev_kv ? this.entryOf(ev.prev_kv) : undefined;
          out.push(
            Promise.resolve({
              type: 'removed',
              lease: {
                subnet,
                publicIp: prev?.attrs?.publicIp ?? '',
                backendType: prev?.attrs?.backendType ?? '',
                backendData: prev?.attrs?.backendData ?? {},
                // Gone now; when it "expired" is not recorded anywhere.
                expiration: 0,
              },
            }),
          );
          continue;
        }
        const entry = this.entryOf(ev.kv);
        if (!entry || !this.usable(entry, cfg)) continue;
        out.push(this.leaseOf(entry, c, false).then((lease) => ({ type: 'added', lease })));
      }
      return (await Promise.all(out)).filter((e): e is LeaseEvent => e !== undefined);
    });
  }
}

/**
 * One watch(): optionally a snapshot from list(), then a raw etcd Watch stream on the subnets
 * prefix. Responses are handled strictly in arrival order on one promise chain (a PUT needs a
 * lease TTL lookup before its batch can go out). The stream is never re-opened behind the
 * caller's back, except to recover from compaction, which the stream itself reports while healthy.
 */
class EtcdWatch implements WatchHandle {
  private done = false;
  private stream: WatchStream | undefined;
  private generation = 0;
  private chain: Promise<void> = Promise.resolve();
  private createdTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly reg: EtcdRegistry,
    private readonly fromRevision: number,
    private readonly onBatch: (b: WatchBatch) => void,
    private readonly onError: (e: Error) => void,
  ) {}

  start(): void {
    if (this.fromRevision === 0) this.enqueue(() => this.resync('watch snapshot'));
    else this.enqueue(() => this.open(this.fromRevision + 1, this.fromRevision));
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
  }

  /** Reports `e` once, asynchronously, and stops; nothing is delivered afterwards. */
  fail(e: Error): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
    queueMicrotask(() => this.onError(e));
  }

  private teardown(): void {
    this.reg.forget(this);
    this.generation++;
    if (this.createdTimer) clearTimeout(this.createdTimer);
    this.createdTimer = undefined;
    const s = this.stream;
    this.stream = undefined;
    // The 'error' (CANCELLED) this raises is swallowed: the listeners check the generation.
    s?.cancel();
  }

  private enqueue(step: () => Promise<void> | void): void {
    this.chain = this.chain
      .then(() => (this.done ? undefined : step()))
      .catch((e: unknown) => this.fail(e instanceof Error ? e : new Error(String(e))));
  }

  private emit(b: WatchBatch): void {
    if (this.done) return;
    try {
      this.onBatch(b);
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Full list at revision R, then a stream from R+1: what a new watch and a compacted one both need. */
  private async resync(what: string): Promise<void> {
    const snap = await this.reg.snapshot(what);
    if (this.done) return;
    this.emit({ revision: snap.revision, snapshot: true, leases: snap.leases, events: [] });
    await this.open(snap.revision + 1, undefined);
  }

  /**
   * Opens a stream from `startRevision`. `confirm` is the revision the caller is at: once etcd
   * says the watch is created, an empty batch at that revision tells the caller it is connected.
   */
  private async open(startRevision: number, confirm: number | undefined): Promise<void> {
    const gen = ++this.generation;
    let stream: WatchStream;
    try {
      stream = await this.reg.openWatchStream();
    } catch (e) {
      throw this.unavailable(e);
    }
    if (this.done || gen !== this.generation) {
      stream.on('error', () => undefined);
      stream.cancel();
      return;
    }
    this.stream = stream;
    if (this.createdTimer) clearTimeout(this.createdTimer);
    const mine = (): boolean => !this.done && gen === this.generation;
    stream.on('data', (res: IWatchResponse) => {
      if (mine()) this.enqueue(() => (mine() ? this.handle(res, confirm) : undefined));
    });
    stream.on('error', (e: Error) => {
      if (mine()) this.fail(this.unavailable(e));
    });
    stream.on('end', () => {
      if (mine()) this.fail(new RegistryError('unavailable', `${this.reg.description}: watch stream ended`));
    });
    const base = this.reg.subnetsKeyPrefix;
    stream.write({
      create_request: { key: Buffer.from(base), range_end: prefixEnd(base), start_revision: startRevision, prev_kv: true },
    });
    const ms = this.reg.watchDeadlineMs;
    this.createdTimer = setTimeout(() => {
      if (mine()) this.fail(new RegistryError('unavailable', `${this.reg.description}: watch not established within ${ms} ms`));
    }, ms);
  }

  private unavailable(e: unknown): RegistryError {
    if (e instanceof RegistryError) return e;
    return new RegistryError('unavailable', `${this.reg.description}: watch: ${describe(e)}`);
  }

  private async handle(res: IWatchResponse, confirm: number | undefined): Promise<void> {
    if (res.created) {
      if (this.createdTimer) clearTimeout(this.createdTimer);
      this.createdTimer = undefined;
      if (confirm === undefined) return;
      if (num(res.header.revision) < confirm) {
        // etcd is behind the caller: its data was restored from an older backup or it is a
        // different cluster. Events from here on would not line up with what the caller holds.
        await this.restart('etcd revision is behind the watcher', { etcdRevision: res.header.revision, fromRevision: confirm });
        return;
      }
      this.emit({ revision: confirm, snapshot: false, leases: [], events: [] });
      return;
    }
    if (res.canceled) {
      if (num(res.compact_revision) > 0) {
        // The history between the caller's revision and now is gone; flanneld re-lists in this
        // case too (leasesWatchReset). The snapshot replaces whatever the caller holds.
        await this.restart('watch history compacted; re-listing', { compactRevision: res.compact_revision });
        return;
      }
      throw new RegistryError('unavailable', `${this.reg.description}: etcd cancelled the watch${res.cancel_reason ? `: ${res.cancel_reason}` : ''}`);
    }
    if (res.events.length === 0) return; // progress notification
    const events = await this.reg.eventsOf(res);
    // etcd never splits one revision's events across responses, so after this batch the
    // caller is at the last event's revision.
    let revision = 0;
    for (const ev of res.events) revision = Math.max(revision, num(ev.kv.mod_revision));
    this.emit({ revision, snapshot: false, leases: [], events });
  }

  private async restart(msg: string, extra: object): Promise<void> {
    this.reg.warnWatch(msg, extra);
    const old = this.stream;
    this.stream = undefined;
    this.generation++;
    old?.cancel();
    await this.resync(msg);
  }
}

/**
 * Writes net-conf.json text to PREFIX/config unless a config is already there (create-only, so
 * two `weft control --etcd-endpoints … --net-config-path …` starting at once cannot clobber each
 * other). An existing config that means the same (same JSON, whatever the spacing or key order)
 * is accepted; a different one is RegistryError('invalid') naming both, because silently
 * switching a running cluster's network would strand every node's routes. Pass a registry to use
 * its connection, or its options to use a short-lived one.
 */
export async function ensureNetworkConfig(target: EtcdRegistry | EtcdRegistryOptions, netConfJson: string): Promise<void> {
  if (target instanceof EtcdRegistry) return target.ensureConfig(netConfJson);
  const reg = new EtcdRegistry(target);
  try {
    await reg.ensureConfig(netConfJson);
  } finally {
    reg.close();
  }
}
