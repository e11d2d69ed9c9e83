// flanneld's etcd flags, shared by `weft daemon` (leases straight in etcd) and `weft control`
// (etcd as the store behind its gRPC API): same names, same defaults, same errors.
import { DEFAULT_ETCD_PREFIX } from '../control/etcd/codec';
import type { EtcdRegistryOptions } from '../control/etcd/registry';

export const ETCD_OPTIONS = {
  'etcd-endpoints': { type: 'string' },
  'etcd-prefix': { type: 'string' },
  'etcd-cafile': { type: 'string' },
  'etcd-certfile': { type: 'string' },
  'etcd-keyfile': { type: 'string' },
} as const;

export const ETCD_HELP = `  --etcd-endpoints URLS   etcd members, comma-separated (http://IP:2379,...); https:// for TLS
  --etcd-prefix PATH      key prefix (default ${DEFAULT_ETCD_PREFIX}): net-conf.json at PATH/config,
                          leases at PATH/subnets/A.B.C.D-LEN, as flanneld keeps them
  --etcd-cafile PATH      CA (PEM) to verify etcd's certificate with
  --etcd-certfile PATH    client certificate (PEM) for an etcd with --client-cert-auth...
  --etcd-keyfile PATH     ...and its private key
`;

type EtcdValues = Partial<Record<keyof typeof ETCD_OPTIONS, string>>;

/** The EtcdRegistry options the flags describe, or undefined when --etcd-endpoints is absent. */
export function etcdOptionsFrom(values: EtcdValues): Omit<EtcdRegistryOptions, 'leaseTtlMs' | 'logger'> | undefined {
  const endpoints = values['etcd-endpoints'];
  if (endpoints === undefined) {
    for (const f of ['etcd-prefix', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile'] as const) {
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
      throw new Error(`--etcd-endpoints: "${ep}" is not a URL like http://127.0.0.1:2379`);
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.port || (u.pathname !== '/' && u.pathname !== '')) {
      throw new Error(`--etcd-endpoints: "${ep}" must be http(s)://HOST:PORT`);
    }
  }
  const tls = { caFile: values['etcd-cafile'], certFile: values['etcd-certfile'], keyFile: values['etcd-keyfile'] };
  const anyTls = Object.values(tls).some((v) => v !== undefined);
  return { endpoints: list, prefix: values['etcd-prefix'] ?? DEFAULT_ETCD_PREFIX, ...(anyTls ? { tls } : {}) };
}

/** A lease TTL in seconds from a flag, as milliseconds. */
export function ttlFlag(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const s = Number(v);
  if (!(s > 0) || !Number.isFinite(s)) throw new Error(`${flag} ${JSON.stringify(v)} must be a positive number of seconds`);
  return Math.round(s * 1000);
}
