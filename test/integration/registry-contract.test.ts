// One contract, every registry behind it: what the daemon can rely on whichever `--control` or
// `--etcd-endpoints` it was given. The suite itself lives in test/support/registry-contract.ts.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { GrpcRegistry } from '../../src/control/client';
import { EmbeddedRegistry } from '../../src/control/embedded';
import { parseNetConfig } from '../../src/control/netconfig';
import type { Registry } from '../../src/control/registry';
import { startControlServer } from '../../src/control/server';
import { EtcdRegistry } from '../../src/control/etcd/registry';
import { afterAll, beforeAll } from 'vitest';
import { mustRun } from '../../src/lab/process';
import { startEtcdCluster, type EtcdTestCluster } from '../support/etcd';
import { registryContract, type ContractSubject } from '../support/registry-contract';

async function embedded(netConf: Record<string, unknown>, ttlMs: number) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-contract-'));
  const registry = new EmbeddedRegistry({ config: parseNetConfig(netConf), stateDir: dir, leaseTtlMs: ttlMs });
  await registry.open();
  return {
    registry,
    close: async () => {
      registry.close();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `weft control`'s gRPC server in front of `backing`, and GrpcRegistry clients of it. `reserve`:
 * how an operator reserves with that backing (for the embedded one, the Reserve RPC, which
 * this 127.0.0.1 client may call).
 */
async function overGrpc(
  backing: Registry,
  closeBacking: () => Promise<void>,
  reserve?: (subnet: string, publicIp: string) => Promise<void>,
): Promise<ContractSubject> {
  const server = await startControlServer({ listen: '127.0.0.1:0', registry: backing, logger: pino({ level: 'silent' }), shutdownGraceMs: 500 });
  const clients: GrpcRegistry[] = [];
  const client = (): GrpcRegistry => {
    const c = new GrpcRegistry(`127.0.0.1:${server.port}`, { deadlineMs: 5000 });
    clients.push(c);
    return c;
  };
  const registry = client();
  return {
    registry,
    second: client,
    reserve: reserve ?? ((subnet, publicIp) => registry.reserve({ subnet, publicIp })),
    close: async () => {
      for (const c of clients) c.close();
      await server.close();
      await closeBacking();
    },
  };
}

registryContract(
  'embedded',
  async (netConf, ttlMs) => {
    const e = await embedded(netConf, ttlMs);
    return { registry: e.registry, second: () => e.registry, reserve: (subnet, publicIp) => e.registry.reserve({ subnet, publicIp }), close: e.close };
  },
  { shortTtlMs: 2000, expirySlackMs: 500 },
);

registryContract(
  'gRPC → embedded (weft control)',
  async (netConf, ttlMs) => {
    const e = await embedded(netConf, ttlMs);
    return overGrpc(e.registry, e.close);
  },
  { shortTtlMs: 2000, expirySlackMs: 500 },
);

// One etcd member for every etcd case; each case gets its own key prefix, so it starts from an
// empty registry exactly as the embedded cases start from an empty state dir.
let etcd: EtcdTestCluster | undefined;
let prefixes = 0;
beforeAll(async () => {
  etcd = await startEtcdCluster({ members: 1 });
}, 30_000);
afterAll(async () => {
  await etcd?.stop();
});

async function etcdRegistry(netConf: Record<string, unknown>, ttlMs: number) {
  const prefix = `/weft-contract/${process.pid}-${++prefixes}`;
  const make = (): EtcdRegistry => new EtcdRegistry({ endpoints: etcd!.endpoints, prefix, leaseTtlMs: ttlMs, deadlineMs: 5000 });
  const registry = make();
  await registry.ensureConfig(JSON.stringify(netConf));
  // flannel's docs/reservations.md: the lease key, put without --lease.
  const reserve = async (subnet: string, publicIp: string): Promise<void> => {
    const value = JSON.stringify({ PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 4, VtepMAC: '0e:00:00:00:00:01' } });
    await mustRun('etcdctl', [...etcd!.etcdctlFlags, 'put', `${prefix}/subnets/${subnet.replace('/', '-')}`, value], {
      timeoutMs: 10_000,
      env: { ...process.env, ETCDCTL_API: '3' },
    });
  };
  return { registry, make, reserve };
}

registryContract(
  'etcd',
  async (netConf, ttlMs) => {
    const { registry, make, reserve } = await etcdRegistry(netConf, ttlMs);
    const others: EtcdRegistry[] = [];
    return {
      registry,
      reserve,
      second: () => {
        const r = make();
        others.push(r);
        return r;
      },
      close: async () => {
        for (const r of [registry, ...others]) r.close();
      },
    };
  },
  // etcd leases count whole seconds and the leader checks for expiry every 500 ms.
  { shortTtlMs: 2000, expirySlackMs: 1500 },
);

registryContract(
  'gRPC → etcd (weft control --etcd-endpoints)',
  async (netConf, ttlMs) => {
    const { registry, reserve } = await etcdRegistry(netConf, ttlMs);
    return overGrpc(registry, async () => registry.close(), reserve);
  },
  { shortTtlMs: 2000, expirySlackMs: 1500 },
);
