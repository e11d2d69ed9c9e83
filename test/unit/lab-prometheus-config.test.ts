// The prometheus.yml `weft lab up --prometheus` writes: Prometheus's own checker accepts it, and
// it names every daemon (labelled with its node), control's /metrics (or each etcd member's) and
// Prometheus itself. No lab needed; promtool is Debian's prometheus package (scripts/setup.sh).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROMETHEUS_JOBS, prometheusConfig, prometheusFor } from '../../src/lab/prometheus';
import type { LabControl, LabNode } from '../../src/lab/state';

const node = (i: number): LabNode => ({ name: `n${i}`, index: i, publicIp: `192.168.77.${10 + i}`, healthzPort: 9090 }) as LabNode;

const embedded = { kind: 'embedded', ip: '192.168.77.1', address: '192.168.77.1:7000', metricsAddress: '192.168.77.1:7001' } as LabControl;
const etcd3 = {
  kind: 'etcd',
  ip: '192.168.77.1',
  address: '192.168.77.1:2379',
  members: [{ address: '192.168.77.1:2379' }, { address: '192.168.77.1:22379' }, { address: '192.168.77.1:32379' }],
} as LabControl;

function promtoolCheckConfig(text: string): Promise<{ code: number; out: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'weft-promcfg-'));
  const file = path.join(dir, 'prometheus.yml');
  writeFileSync(file, text);
  return new Promise((resolve) => {
    execFile('/usr/bin/promtool', ['check', 'config', file], { timeout: 20_000 }, (err, stdout, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

describe('weft lab --prometheus: prometheus.yml', () => {
  const p = prometheusFor({ dir: '/run/weft-lab/x-', switchNs: 'x-ul', control: { ip: '192.168.77.1' } }, 9090);

  it.each([
    ['weft control', embedded, PROMETHEUS_JOBS.control, ["'192.168.77.1:7001'"]],
    ['three etcd members', etcd3, PROMETHEUS_JOBS.etcd, ["'192.168.77.1:2379', '192.168.77.1:22379', '192.168.77.1:32379'"]],
  ])('with %s passes promtool check config and names every target', async (_what, control, job, targets) => {
    const text = prometheusConfig({ prefix: 'x-', control, nodes: [node(1), node(2), node(3)] }, p);
    const r = await promtoolCheckConfig(text);
    expect(r.code, r.out).toBe(0);
    expect(text).toContain('  scrape_interval: 1s\n');
    for (const i of [1, 2, 3]) expect(text).toContain(`      - targets: ['192.168.77.${10 + i}:9090']\n        labels: { node: 'n${i}' }\n`);
    expect(text).toContain(`  - job_name: ${job}\n    static_configs:\n      - targets: [${targets[0]}]\n`);
    expect(text).toContain(`  - job_name: ${PROMETHEUS_JOBS.self}\n    static_configs:\n      - targets: ['192.168.77.1:9090']\n`);
  });

  it('keeps its storage, config and logs under the lab dir, and forwards 127.0.0.1 into the switch namespace', () => {
    for (const f of [p.configFile, p.dataDir, p.logFile, p.forwarderLogFile]) expect(f.startsWith('/run/weft-lab/x-/')).toBe(true);
    expect(p.url).toBe('http://127.0.0.1:9090');
    expect(p.argv.slice(0, 4)).toEqual(['ip', 'netns', 'exec', 'x-ul']);
    expect(p.forwarderArgv).toContain('TCP-LISTEN:9090,bind=127.0.0.1,reuseaddr,fork');
    expect(p.forwarderArgv.at(-1)).toBe('EXEC:ip netns exec x-ul /usr/bin/socat STDIO TCP\\:192.168.77.1\\:9090');
  });
});
