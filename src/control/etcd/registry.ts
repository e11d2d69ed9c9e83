// The lease registry on etcd, in flannel's layout (see codec.ts), so weft and flanneld nodes
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
//  - A key without an etcd lease is a reservation (flannel's docs/reservations.md: "the only
//    difference between a lease and reservation is the etcd TTL"): the node with its PublicIP
//    gets that subnet, acquire re-puts it without a lease (new BackendData, still no TTL), renew
//    leaves it alone, revoke does not delete it, and it expires "never" (NEVER_EXPIRES). One
//    that no longer fits the config is skipped with a warning and stays out of everyone's reach.
//  - Failures of etcd or the transport are RegistryError('unavailable'): the daemon backs off
//    and retries those, and nothing in here retries or reconnects behind its back beyond trying
//    the other endpoints within one call's deadline (endpoints.ts).
import type { ICompare, IKeyValue, IRequestOp, IWatchResponse } from 'etcd3';
import type * as grpc from '@grpc/grpc-js';
import { acquirablePublicIp, allocate, normalisePublicIp } from '../allocator';
import { checkAcquireRequest, checkLeaseRef } from '../limits';
import { quote } from '../../util/quote';
import { parseNetConfig, type NetworkConfig } from '../netconfig';
import {
  DEFAULT_LEASE_TTL_MS,
  NEVER_EXPIRES,
  RegistryError,
  silentLogger,
  type AcquireRequest,
  type Lease,
  type LeaseEvent,
  type LeaseRef,
  type Registry,
  type RegistryLogger,
  type WatchBatch,
  type WatchHandle,
} from '../registry';
import { cidrContainsCidr, formatCidr, parseCidr } from '../../route/address';
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
} from './codec';
import { checkEndpoints, describe, num, openEtcdClient, type EtcdAuth, type EtcdClient, type EtcdTlsFiles, type WatchStream } from './endpoints';
import { EtcdWatch, type WatchSource } from './watch';

export const DEFAULT_ETCD_DEADLINE_MS = 5000;
/** Compare-and-swap attempts before a call gives up as 'unavailable' (another node kept winning). */
const MAX_CAS_ATTEMPTS = 10;

export interface EtcdRegistryOptions {
  /** e.g. ['http://127.0.0.1:23790'] or https://…; all members of one cluster. */
  endpoints: string[];
  /** Default DEFAULT_ETCD_PREFIX (flanneld's --etcd-prefix); a trailing slash is dropped. */
  prefix?: string;
  /** For https endpoints: CA to verify etcd with; cert+key when etcd demands client certificates. */
  tls?: EtcdTlsFiles;
  /** For an etcd with authentication enabled; never logged nor put in a message. */
  auth?: EtcdAuth;
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

export class EtcdRegistry implements Registry, WatchSource {
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
    checkEndpoints(opts.endpoints);
    this.endpoints = [...opts.endpoints];
    this.where = `etcd ${this.endpoints.join(',')}`;
    try {
      this.prefix = normalisePrefix(opts.prefix ?? DEFAULT_ETCD_PREFIX);
    } catch (e) {
      throw new RegistryError('invalid', describe(e));
    }
    const ttlMs = opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    if (!(ttlMs > 0)) throw new RegistryError('invalid', `lease TTL must be positive, got ${ttlMs} ms`);
    // etcd leases count whole seconds; rounding down could turn a short TTL into 0 ("forever").
    this.ttlSeconds = Math.ceil(ttlMs / 1000);
    this.deadlineMs = opts.deadlineMs ?? DEFAULT_ETCD_DEADLINE_MS;
    if (!(this.deadlineMs > 0)) throw new RegistryError('invalid', `deadline must be positive, got ${this.deadlineMs} ms`);
    this.random = opts.random ?? Math.random;
    this.log = opts.logger ?? silentLogger;
    this.client = openEtcdClient(this.endpoints, opts.tls, this.deadlineMs, opts.auth);
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
    // etcd with `auth enable` says "user name is empty" to a client without credentials and
    // "authentication failed" to a wrong password; neither names the flags that fix it.
    if (/user name is empty|authentication failed|invalid auth token|permission denied/i.test(msg)) {
      msg += ' (etcd authentication: check --etcd-username and the password: --etcd-password-file, WEFT_ETCD_PASSWORD or --etcd-password)';
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
   * without a lease is a reservation: NEVER_EXPIRES.
   */
  private async expirationOf(leaseId: string, c: Call): Promise<number> {
    const now = Date.now();
    if (leaseless(leaseId)) return NEVER_EXPIRES;
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
      // A reservation is known from the key alone, so watches report it too.
      expiration: leaseless(e.leaseId) ? NEVER_EXPIRES : withExpiry ? await this.expirationOf(e.leaseId, c) : 0,
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
    if (leaseless(id)) return;
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

  /** See ensureNetworkConfig() in netconf.ts. */
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
      let same: boolean;
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
    // The same limits and address rules as the embedded registry, checked before etcd is asked
    // anything (the config is read once and cached).
    try {
      checkAcquireRequest(req);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.call('acquire', async (c) => {
      const cfg = await this.config();
      acquirablePublicIp(req.publicIp, cfg);
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
            expiration: leaseless(e.leaseId) ? NEVER_EXPIRES : now + this.ttlSeconds * 1000,
          };
          byLease.set(l, e);
          return l;
        });
        const reservations = entries.filter((e) => leaseless(e.leaseId) && e.attrs).map((e) => ({ subnet: e.subnet, publicIp: e.attrs!.publicIp }));
        // previous = {}: etcd forgets a subnet when its key expires; the node's own
        // previousSubnet hint in the request is what brings it back.
        const alloc = allocate({ config: cfg, leases, previous: {}, request: req, reservations, now, ttlMs: this.ttlSeconds * 1000, random: this.random });
        const want = alloc.lease;
        if (alloc.skippedReservation) {
          const r = alloc.skippedReservation;
          const e = entries.find((x) => x.subnet === r.subnet);
          this.warnOnce(e?.key ?? r.subnet, e?.modRevision ?? '', 'skipping a reservation that does not fit the network config', {
            ...r,
            network: cfg.network,
          });
        }
        const key = subnetKey(this.prefix, want.subnet);
        const value = Buffer.from(encodeLeaseValue(want));
        const reserved = alloc.reason === 'reserved';
        const held = alloc.reason === 'held' || reserved ? entries.find((e) => e.subnet === want.subnet && e.attrs?.publicIp === want.publicIp) : undefined;
        const replaced = alloc.replaced ? byLease.get(alloc.replaced) : undefined;

        // A reservation is re-put without a lease: giving it one would turn it into an
        // ordinary lease that expires.
        const g = reserved ? undefined : await this.grant(c);
        const k = Buffer.from(key);
        const compare: ICompare[] = held
          ? [{ key: k, target: 'Mod', result: 'Equal', mod_revision: held.modRevision }]
          : [{ key: k, target: 'Create', result: 'Equal', create_revision: 0 }];
        const success: IRequestOp[] = [{ request_put: g ? { key: k, value, lease: g.id } : { key: k, value } }];
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
          if (!held && g) this.revokeUnused(g.id);
          throw e;
        }
        // A retried request whose first try committed fails its compare; our lease on the key
        // says so (for a reservation, which has none: the value we wrote, without a lease).
        const onKey = res.responses[0]?.response_range?.kvs[0];
        const committed = res.succeeded || (g ? onKey?.lease === g.id : onKey !== undefined && leaseless(onKey.lease) && onKey.value.equals(value));
        if (!committed) {
          if (g) this.revokeUnused(g.id);
          this.log.info({ subnet: want.subnet, publicIp: want.publicIp, attempt }, 'subnet changed under us; retrying');
          continue;
        }
        if (held) this.releaseOldLease(held.leaseId);
        if (replaced) {
          this.releaseOldLease(replaced.leaseId);
          this.log.warn(
            { subnet: replaced.subnet, publicIp: want.publicIp },
            reserved ? 'dropped the lease of a node that has a reservation elsewhere' : 'dropped lease that no longer fits the network config',
          );
        }
        this.log.info({ subnet: want.subnet, publicIp: want.publicIp, reason: alloc.reason }, 'lease granted');
        return { ...want, expiration: g ? Date.now() + g.ttlMs : NEVER_EXPIRES };
      }
      throw new RegistryError('unavailable', `${this.where}: acquire: lost ${MAX_CAS_ATTEMPTS} races for a subnet in a row; try again`);
    });
  }

  /** The key for a LeaseRef and its current value, checked to belong to ref.publicIp. */
  private async owned(ref: LeaseRef, c: Call): Promise<{ key: string; kv: IKeyValue; entry: SubnetEntry & { attrs: LeaseAttrs } }> {
    if (!ref || typeof ref.subnet !== 'string') throw new RegistryError('invalid', 'lease subnet is required');
    checkLeaseRef(ref);
    let subnet: string;
    try {
      subnet = formatCidr(parseCidr(ref.subnet));
    } catch (e) {
      // checkLeaseRef bounded ref.subnet, so parseCidr's message (which quotes it) is short too.
      throw new RegistryError('invalid', `lease subnet ${quote(ref.subnet)} is not a CIDR (${describe(e)})`);
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
        if (leaseless(kv.lease)) {
          // A reservation: no TTL to extend, and granting one would end the reservation.
          return {
            subnet: entry.subnet,
            publicIp: entry.attrs.publicIp,
            backendType: entry.attrs.backendType,
            backendData: entry.attrs.backendData,
            expiration: NEVER_EXPIRES,
          };
        }
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
        if (leaseless(kv.lease)) {
          // flannel: a reservation is kept for its node whatever that node does; the operator
          // ends it by deleting the key (or putting it back with a lease).
          this.log.info({ subnet: entry.subnet, publicIp: entry.attrs.publicIp }, 'revoke of a reserved subnet (a key without a lease): reservation kept');
          return;
        }
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

  // ---- WatchSource: what EtcdWatch needs ---------------------------------------------------

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

/** An etcd key's lease ID when it has none: '0' (etcd3 gives int64s as strings). */
function leaseless(leaseId: string): boolean {
  return leaseId === '0' || leaseId === '';
}
