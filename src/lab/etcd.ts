// The etcd server side: the command line for one cluster member and a readiness probe. The lab
// runs members detached inside namespaces (`ip netns exec NS <argv>`); tests run them as
// attached children on loopback. Either way the member is configured entirely by flags, so the
// argv alone says what a running member is.
import * as http from 'node:http';
import * as https from 'node:https';
import { readFileSync } from 'node:fs';

/** Debian's etcd-server package. */
export const ETCD_BIN = '/usr/bin/etcd';

export interface EtcdServerTls {
  certFile: string;
  keyFile: string;
  /** CA that client certificates must chain to; required when clientCertAuth is on. */
  trustedCaFile?: string;
  /** Refuse clients without a certificate signed by trustedCaFile (etcd's --client-cert-auth). */
  clientCertAuth?: boolean;
}

export interface EtcdMemberOptions {
  name: string;
  dataDir: string;
  /** URLs the member serves clients on; listened on and advertised as given, so no wildcard. */
  clientUrls: string | string[];
  /** URL the other members reach this one at (listened on and advertised). */
  peerUrl: string;
  /** "n1=http://10.0.0.1:2380,n2=…", the whole cluster including this member; see initialCluster(). */
  initialCluster: string;
  /**
   * 'new' when the cluster is being bootstrapped; 'existing' for a member added to a running
   * cluster with `etcdctl member add`. Ignored by etcd once the data dir holds a WAL, so restarting
   * a member on its old data dir with 'new' is fine.
   */
  initialClusterState?: 'new' | 'existing';
  /** Keeps members of two lab clusters from joining each other by accident. */
  initialClusterToken?: string;
  /** Raft heartbeat; etcd's default is 100 ms. */
  heartbeatIntervalMs?: number;
  /** Raft election timeout; etcd's default is 1000 ms and it must be at least 5 heartbeats. */
  electionTimeoutMs?: number;
  /** Client-side TLS (https client URLs). Peers stay plain http: they only talk over the lab's own links. */
  tls?: EtcdServerTls;
  bin?: string;
  extraArgs?: string[];
}

/** The `--initial-cluster` value for a set of members. */
export function initialCluster(members: ReadonlyArray<{ name: string; peerUrl: string }>): string {
  return members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
}

/** Full argv (binary first) for one member; spawn(argv[0], argv.slice(1)) or prefix with `ip netns exec NS`. */
export function etcdArgv(o: EtcdMemberOptions): string[] {
  const clientUrls = (Array.isArray(o.clientUrls) ? o.clientUrls : [o.clientUrls]).join(',');
  if (clientUrls === '') throw new Error('etcd member needs at least one client URL');
  const secure = clientUrls.split(',').some((u) => u.startsWith('https:'));
  if (secure && !o.tls) throw new Error(`etcd client URLs ${clientUrls} are https but no certFile/keyFile given`);
  if (o.tls?.clientCertAuth && !o.tls.trustedCaFile) {
    throw new Error('etcd --client-cert-auth needs trustedCaFile to check client certificates against');
  }
  const argv = [
    o.bin ?? ETCD_BIN,
    '--name',
    o.name,
    '--data-dir',
    o.dataDir,
    '--listen-client-urls',
    clientUrls,
    '--advertise-client-urls',
    clientUrls,
    '--listen-peer-urls',
    o.peerUrl,
    '--initial-advertise-peer-urls',
    o.peerUrl,
    '--initial-cluster',
    o.initialCluster,
    '--initial-cluster-state',
    o.initialClusterState ?? 'new',
    '--initial-cluster-token',
    o.initialClusterToken ?? 'weft',
    // etcd 3.4 defaults to the deprecated capnslog logger, which warns about itself on every start.
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
  ];
  if (o.heartbeatIntervalMs !== undefined) argv.push('--heartbeat-interval', String(o.heartbeatIntervalMs));
  if (o.electionTimeoutMs !== undefined) argv.push('--election-timeout', String(o.electionTimeoutMs));
  if (o.tls) {
    argv.push('--cert-file', o.tls.certFile, '--key-file', o.tls.keyFile);
    if (o.tls.trustedCaFile) argv.push('--trusted-ca-file', o.tls.trustedCaFile);
    if (o.tls.clientCertAuth) argv.push('--client-cert-auth');
  }
  if (o.extraArgs) argv.push(...o.extraArgs);
  return argv;
}

export interface EtcdReadyOptions {
  /** For https endpoints: CA to verify the server with, and the client certificate when the member demands one. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  intervalMs?: number;
  signal?: AbortSignal;
}

/**
 * Resolves once GET <endpoint>/health answers {"health":"true"}. etcd only says so when the
 * member sees a leader and a linearizable read through raft succeeds, so a ready member accepts
 * writes; merely listening is not enough (a member waiting for quorum listens but cannot serve).
 */
export async function waitEtcdReady(endpoint: string, timeoutMs: number, opts: EtcdReadyOptions = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const interval = opts.intervalMs ?? 100;
  const url = new URL('/health', endpoint);
  const secure = url.protocol === 'https:';
  const read = (f: string | undefined, flag: string): Buffer | undefined => {
    if (!f) return undefined;
    try {
      return readFileSync(f);
    } catch (e) {
      throw new Error(`cannot read ${flag} ${f}: ${(e as Error).message}`, { cause: e });
    }
  };
  const agentOpts = secure ? { ca: read(opts.caFile, 'caFile'), cert: read(opts.certFile, 'certFile'), key: read(opts.keyFile, 'keyFile') } : {};
  let last = 'no answer yet';
  for (;;) {
    if (opts.signal?.aborted) throw new Error(`waiting for etcd at ${endpoint} aborted`);
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`etcd at ${endpoint} not healthy within ${timeoutMs} ms: ${last}`);
    try {
      const body = await httpGet(url, Math.min(left, 1000), secure, agentOpts);
      if (body.status === 200 && isHealthy(body.text)) return;
      last = `HTTP ${body.status} ${body.text.trim()}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, Math.min(interval, Math.max(0, deadline - Date.now()))));
  }
}

function isHealthy(text: string): boolean {
  try {
    const j = JSON.parse(text) as { health?: unknown };
    // 3.4 answers "true" (a string); later versions kept the string for compatibility.
    return j.health === 'true' || j.health === true;
  } catch {
    return false;
  }
}

function httpGet(url: URL, timeoutMs: number, secure: boolean, tls: { ca?: Buffer; cert?: Buffer; key?: Buffer }): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request(url, { method: 'GET', timeout: timeoutMs, agent: false, ...(secure ? tls : {}) }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (text.length < 4096) text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
