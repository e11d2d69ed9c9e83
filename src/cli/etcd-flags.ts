// flanneld's etcd flags, shared by `weft daemon` (leases straight in etcd) and `weft control`
// (etcd as the store behind its gRPC API): same names, same defaults, same errors.
import { DEFAULT_ETCD_PREFIX } from '../control/etcd/codec';
import { quoteEndpoint, userinfoProblem, type EtcdAuth } from '../control/etcd/endpoints';
import type { EtcdRegistryOptions } from '../control/etcd/registry';
import { InsecureFileError, readPrivateFile } from '../util/private-file';

/** The environment's say on etcd credentials, as flanneld reads FLANNELD_ETCD_USERNAME/_PASSWORD. */
export const ETCD_USERNAME_ENV = 'WEFT_ETCD_USERNAME';
export const ETCD_PASSWORD_ENV = 'WEFT_ETCD_PASSWORD';

export const ETCD_OPTIONS = {
  'etcd-endpoints': { type: 'string' },
  'etcd-prefix': { type: 'string' },
  'etcd-cafile': { type: 'string' },
  'etcd-certfile': { type: 'string' },
  'etcd-keyfile': { type: 'string' },
  'etcd-username': { type: 'string' },
  'etcd-password': { type: 'string' },
  'etcd-password-file': { type: 'string' },
} as const;

export const ETCD_HELP = `  --etcd-endpoints URLS   etcd members, comma-separated (http://IP:2379,...); https:// for TLS
  --etcd-prefix PATH      key prefix (default ${DEFAULT_ETCD_PREFIX}): net-conf.json at PATH/config,
                          leases at PATH/subnets/A.B.C.D-LEN, as flanneld keeps them
  --etcd-cafile PATH      CA (PEM) to verify etcd's certificate with
  --etcd-certfile PATH    client certificate (PEM) for an etcd with --client-cert-auth...
  --etcd-keyfile PATH     ...and its private key (mode 0600 or stricter)
  --etcd-username NAME    for an etcd with authentication enabled (or ${ETCD_USERNAME_ENV})...
  --etcd-password-file PATH
                          ...and the file holding its password (mode 0600 or stricter; one
                          trailing newline is dropped), or ${ETCD_PASSWORD_ENV} in the environment
  --etcd-password PASS    the password on the command line, as flanneld takes it; every local
                          user can read it in ps, so prefer the file or the environment
                          (credentials in the endpoint URLs are refused)
`;

type EtcdValues = Partial<Record<keyof typeof ETCD_OPTIONS, string>>;

/**
 * The EtcdRegistry options the flags (and WEFT_ETCD_USERNAME/WEFT_ETCD_PASSWORD in `env`)
 * describe, or undefined when --etcd-endpoints is absent.
 */
export function etcdOptionsFrom(values: EtcdValues, env: NodeJS.ProcessEnv = process.env): Omit<EtcdRegistryOptions, 'leaseTtlMs' | 'logger'> | undefined {
  const endpoints = values['etcd-endpoints'];
  if (endpoints === undefined) {
    for (const f of ['etcd-prefix', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'etcd-username', 'etcd-password', 'etcd-password-file'] as const) {
      if (values[f] !== undefined) throw new Error(`--${f} needs --etcd-endpoints`);
    }
    return undefined;
  }
  const list = endpoints
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) throw new Error('--etcd-endpoints is empty; give URLs like http://127.0.0.1:2379');
  for (const ep of list) {
    let u: URL;
    try {
      u = new URL(ep);
    } catch {
      throw new Error(`--etcd-endpoints: ${quoteEndpoint(ep)} is not a URL like http://127.0.0.1:2379`);
    }
    const creds = userinfoProblem(ep, u);
    if (creds !== undefined) throw new Error(`--etcd-endpoints: ${creds}`);
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.port || (u.pathname !== '/' && u.pathname !== '')) {
      throw new Error(`--etcd-endpoints: ${quoteEndpoint(ep)} must be http(s)://HOST:PORT`);
    }
  }
  const tls = { caFile: values['etcd-cafile'], certFile: values['etcd-certfile'], keyFile: values['etcd-keyfile'] };
  const anyTls = Object.values(tls).some((v) => v !== undefined);
  const auth = etcdAuthFrom(values, env);
  return { endpoints: list, prefix: values['etcd-prefix'] ?? DEFAULT_ETCD_PREFIX, ...(anyTls ? { tls } : {}), ...(auth ? { auth } : {}) };
}

/**
 * Username and password from the flags, else the environment; a flag wins over the environment,
 * as flanneld's flags win over its FLANNELD_* variables. Neither is ever quoted back.
 */
function etcdAuthFrom(values: EtcdValues, env: NodeJS.ProcessEnv): EtcdAuth | undefined {
  if (values['etcd-password'] !== undefined && values['etcd-password-file'] !== undefined) {
    throw new Error('give --etcd-password or --etcd-password-file, not both');
  }
  const username = values['etcd-username'] ?? nonEmpty(env[ETCD_USERNAME_ENV]);
  let password: string | undefined;
  let from = ETCD_PASSWORD_ENV;
  if (values['etcd-password-file'] !== undefined) {
    password = readPasswordFile(values['etcd-password-file']);
    from = '--etcd-password-file';
  } else if (values['etcd-password'] !== undefined) {
    password = values['etcd-password'];
    from = '--etcd-password';
  } else {
    password = nonEmpty(env[ETCD_PASSWORD_ENV]);
  }
  if (username === undefined && password === undefined) return undefined;
  if (username === undefined || username === '') {
    throw new Error(`${from} needs a user name: --etcd-username NAME or ${ETCD_USERNAME_ENV}`);
  }
  if (password === undefined || password === '') {
    throw new Error(`--etcd-username needs a password: --etcd-password-file PATH, ${ETCD_PASSWORD_ENV}, or --etcd-password`);
  }
  return { username, password };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function readPasswordFile(file: string): string {
  let text: string;
  try {
    text = readPrivateFile('--etcd-password-file', file, 'password files').toString('utf8');
  } catch (e) {
    if (e instanceof InsecureFileError) throw e;
    throw new Error(`cannot read --etcd-password-file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
  // `echo secret > file` and Kubernetes secrets made from such files end in a newline that is
  // not part of the password (kubectl --password-file and docker login --password-stdin drop it too).
  const password = text.replace(/\r?\n$/, '');
  if (password === '') throw new Error(`--etcd-password-file ${file} is empty`);
  return password;
}

/** A lease TTL in seconds from a flag, as milliseconds. */
export function ttlFlag(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const s = Number(v);
  if (!(s > 0) || !Number.isFinite(s)) throw new Error(`${flag} ${JSON.stringify(v)} must be a positive number of seconds`);
  return Math.round(s * 1000);
}
