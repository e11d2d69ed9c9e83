// Real etcd members on loopback for tests: free ports picked by the kernel, data dirs and logs in
// one temp dir, members as attached children so a crashed test run cannot leave them behind
// (an exit hook SIGKILLs whatever is still running). Never the default 2379/2380: a Debian etcd
// service may own those.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { etcdArgv, initialCluster, waitEtcdReady, type EtcdReadyOptions } from '../../src/lab/etcd';
import { mustRun } from '../../src/lab/process';
import { freeLoopbackPorts as freePorts } from '../../src/lab/ports';

export interface EtcdTestCerts {
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  /** A client certificate from a CA the cluster does not trust. */
  strangerCertFile: string;
  strangerKeyFile: string;
}

export interface EtcdClusterOptions {
  members: 1 | 3;
  /** Serve clients over https (server cert with IP SAN 127.0.0.1); clientCertAuth demands a client cert too. */
  tls?: { clientCertAuth?: boolean };
  readyTimeoutMs?: number;
}

export interface EtcdTestMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly running: boolean;
  /** Signals the member (SIGKILL by default) and resolves once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Sends a signal without waiting (SIGSTOP/SIGCONT to make a member hang rather than die). */
  signal(signal: NodeJS.Signals): void;
  /** Starts it again on the same data dir and ports; resolves once it reports healthy. */
  start(): Promise<void>;
}

export interface EtcdTestCluster {
  readonly endpoints: string[];
  readonly members: EtcdTestMember[];
  readonly dir: string;
  readonly certs?: EtcdTestCerts;
  /** etcdctl flags that reach this cluster (endpoints and, for TLS, the client cert). */
  readonly etcdctlFlags: string[];
  /** Kills every member and removes the temp dir; safe to call more than once. */
  stop(): Promise<void>;
}

// Raft timings short enough that a killed leader is replaced within about a second; etcd's lease
// minimum TTL follows from them (1.5 election timeouts, rounded up to seconds: 1 s here).
const HEARTBEAT_MS = 50;
const ELECTION_MS = 500;

const live = new Set<ChildProcess>();
let exitHook = false;

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

async function openssl(args: string[]): Promise<void> {
  await mustRun('openssl', args, { timeoutMs: 30_000 });
}

/** A throwaway CA, a server cert for 127.0.0.1 and two client certs (one from a foreign CA). */
export async function makeTestCerts(dir: string): Promise<EtcdTestCerts> {
  const p = (f: string): string => path.join(dir, f);
  const ext = p('san.ext');
  writeFileSync(ext, 'subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth, clientAuth\n');
  const clientExt = p('client.ext');
  writeFileSync(clientExt, 'extendedKeyUsage = clientAuth\n');
  const ca = async (name: string): Promise<void> => {
    await openssl([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      p(`${name}.key`),
      '-out',
      p(`${name}.crt`),
    ]);
  };
  const leaf = async (name: string, caName: string, extFile: string): Promise<void> => {
    await openssl([
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      p(`${name}.key`),
      '-out',
      p(`${name}.csr`),
    ]);
    await openssl([
      'x509',
      '-req',
      '-in',
      p(`${name}.csr`),
      '-CA',
      p(`${caName}.crt`),
      '-CAkey',
      p(`${caName}.key`),
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      extFile,
      '-out',
      p(`${name}.crt`),
    ]);
  };
  await ca('ca');
  await ca('stranger-ca');
  await leaf('server', 'ca', ext);
  await leaf('client', 'ca', clientExt);
  await leaf('stranger', 'stranger-ca', clientExt);
  // weft refuses private keys that group or others can read; OpenSSL 3 writes -keyout files 0600
  // already, 1.1 left them to the umask.
  for (const k of ['ca', 'stranger-ca', 'server', 'client', 'stranger']) chmodSync(p(`${k}.key`), 0o600);
  return {
    caFile: p('ca.crt'),
    serverCertFile: p('server.crt'),
    serverKeyFile: p('server.key'),
    clientCertFile: p('client.crt'),
    clientKeyFile: p('client.key'),
    strangerCertFile: p('stranger.crt'),
    strangerKeyFile: p('stranger.key'),
  };
}

export async function startEtcdCluster(opts: EtcdClusterOptions): Promise<EtcdTestCluster> {
  installExitHook();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'weft-etcd-'));
  const members: Member[] = [];
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await Promise.all(members.map((m) => m.kill('SIGKILL')));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const scheme = opts.tls ? 'https' : 'http';
    const certs = opts.tls ? await makeTestCerts(dir) : undefined;
    const ports = await freePorts(opts.members * 2);
    const specs = Array.from({ length: opts.members }, (_, i) => ({
      name: `m${i + 1}`,
      clientUrl: `${scheme}://127.0.0.1:${ports[2 * i]}`,
      peerUrl: `http://127.0.0.1:${ports[2 * i + 1]}`,
    }));
    const cluster = initialCluster(specs);
    const ready: EtcdReadyOptions = certs ? { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile } : {};
    for (const s of specs) {
      const argv = etcdArgv({
        name: s.name,
        dataDir: path.join(dir, s.name),
        clientUrls: s.clientUrl,
        peerUrl: s.peerUrl,
        initialCluster: cluster,
        initialClusterToken: path.basename(dir),
        heartbeatIntervalMs: HEARTBEAT_MS,
        electionTimeoutMs: ELECTION_MS,
        tls: certs
          ? { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, trustedCaFile: certs.caFile, clientCertAuth: opts.tls?.clientCertAuth }
          : undefined,
      });
      members.push(new Member(s.name, s.clientUrl, path.join(dir, s.name), path.join(dir, `${s.name}.log`), argv, ready, opts.readyTimeoutMs ?? 20_000));
    }
    // A member of a new multi-member cluster is only healthy once a quorum is up, so start all
    // before waiting on any.
    for (const m of members) m.spawn();
    await Promise.all(members.map((m) => m.ready()));
    const endpoints = specs.map((s) => s.clientUrl);
    const etcdctlFlags = [`--endpoints=${endpoints.join(',')}`];
    if (certs) etcdctlFlags.push(`--cacert=${certs.caFile}`, `--cert=${certs.clientCertFile}`, `--key=${certs.clientKeyFile}`);
    return { endpoints, members, dir, certs, etcdctlFlags, stop };
  } catch (e) {
    const logs = members.map((m) => `--- ${m.name}.log\n${m.logTail()}`).join('\n');
    await stop();
    throw new Error(`${(e as Error).message}\n${logs}`, { cause: e });
  }
}

class Member implements EtcdTestMember {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    readonly clientUrl: string,
    readonly dataDir: string,
    readonly logFile: string,
    private readonly argv: string[],
    private readonly readyOpts: EtcdReadyOptions,
    private readonly readyTimeoutMs: number,
  ) {}

  get running(): boolean {
    return this.child !== undefined;
  }

  spawn(): void {
    if (this.child) return;
    const fd = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(this.argv[0], this.argv.slice(1), { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    this.child = child;
    live.add(child);
    this.exited = new Promise<void>((resolve) => {
      const done = (): void => {
        live.delete(child);
        if (this.child === child) this.child = undefined;
        resolve();
      };
      child.once('exit', done);
      child.once('error', done); // spawn failure: no 'exit' follows
    });
  }

  async ready(): Promise<void> {
    const died = this.exited.then(() => {
      throw new Error(`etcd member ${this.name} exited before becoming healthy`);
    });
    died.catch(() => undefined); // the race below reports it; once ready, a later exit is no error
    await Promise.race([waitEtcdReady(this.clientUrl, this.readyTimeoutMs, this.readyOpts), died]);
  }

  async start(): Promise<void> {
    this.spawn();
    await this.ready();
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    if (!c) return;
    c.kill(signal);
    // A stopped process only acts on SIGKILL; let it see any other signal too.
    if (signal !== 'SIGKILL') c.kill('SIGCONT');
    await this.exited;
  }

  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  logTail(lines = 20): string {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}
