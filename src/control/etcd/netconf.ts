// The net-conf bootstrap for an etcd-backed cluster: putting net-conf.json at PREFIX/config, the
// step flannel's docs have an operator do by hand with etcdctl put. `weft control
// --net-config-path` does the same through its own registry (EtcdRegistry.ensureConfig).
import { EtcdRegistry, type EtcdRegistryOptions } from './registry';

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
