// docs/flannel-compatibility.md promises every flanneld flag and every net-conf.json key with what
// weft does with it. This holds the page to that: a key added to netconfig.ts's tables, or a
// flanneld flag, that the page does not name fails here, as does a flag the page names that
// `weft daemon` does not parse (it would be refused as unknown, not as the page says).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DAEMON_OPTIONS } from '../../src/cli/daemon';
import { BACKEND_KEYS, TOP_KEYS } from '../../src/control/netconfig';

const PAGE = readFileSync(join(__dirname, '..', '..', 'docs', 'flannel-compatibility.md'), 'utf8');

/** flanneld's flags (main.go's flannelFlags, klog's three copied in), v0.28. */
const FLANNELD_FLAGS = [
  'etcd-endpoints',
  'etcd-prefix',
  'etcd-keyfile',
  'etcd-certfile',
  'etcd-cafile',
  'etcd-username',
  'etcd-password',
  'iface',
  'iface-regex',
  'iface-can-reach',
  'subnet-file',
  'public-ip',
  'public-ipv6',
  'subnet-lease-renew-margin',
  'ip-masq',
  'ip-masq-fully-random-disable',
  'kube-subnet-mgr',
  'kube-api-url',
  'kube-annotation-prefix',
  'kubeconfig-file',
  'version',
  'healthz-ip',
  'healthz-port',
  'iptables-resync',
  'iptables-forward-rules',
  'ip-blackhole-route',
  'net-config-path',
  'set-node-network-unavailable',
  'v',
  'vmodule',
  'log_backtrace_at',
];

describe('docs/flannel-compatibility.md', () => {
  it('names every flanneld flag, and weft daemon parses each one (to honour or to refuse it)', () => {
    const missing = FLANNELD_FLAGS.filter((f) => !PAGE.includes(`\`--${f}\``) && !PAGE.includes(`\`-${f}\``));
    expect(missing).toEqual([]);
    const unparsed = FLANNELD_FLAGS.filter((f) => !(f in DAEMON_OPTIONS));
    expect(unparsed).toEqual([]);
  });

  it('names every net-conf.json key weft knows, top level and per backend', () => {
    const keys = [...TOP_KEYS.map((k) => k.key), ...Object.values(BACKEND_KEYS).flatMap((ks) => ks.map((k) => k.key))];
    expect(keys.length).toBeGreaterThan(15);
    expect(keys.filter((k) => !PAGE.includes(`\`${k}\``))).toEqual([]);
  });

  it('leaves nothing "silently ignored"', () => {
    expect(PAGE).not.toMatch(/silently ignored/i);
  });
});
