// The compose lab end to end, through the compose CLI as a user runs it: engine (started if none
// runs), base image (built locally if Docker Hub is unreachable), image build, then for each
// encapsulating backend a 3-node lab with a unique project name — all daemons ready with two
// peers, pods pinging each other across nodes, a short iperf3 — brought down with nothing left.
// Also: the etcd profile, the published inspector ports and source maps, and a bad WEFT_BACKEND.
// If this file started dockerd it stops it at the end and the root namespace's firewall is as
// it was; the built images stay cached.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { within } from '../../src/lab/addr';
import { freeLoopbackPorts } from '../../src/lab/ports';
import { until } from '../support/until';
import { BASE_IMAGES, ComposeLab, NODES, baseImage, check, composeCommand, run, startEngine, stopEngine, type NodeStatus } from '../support/compose';

const NETWORK = '10.244.0.0/16';
const tag = `${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;

function forwardPolicy(): string {
  const r = spawnSync('iptables', ['-S', 'FORWARD'], { encoding: 'utf8', timeout: 10_000 });
  return /^-P FORWARD (\S+)/m.exec(r.stdout ?? '')?.[1] ?? '(no iptables)';
}

/** The environment of one compose project: only the variables given, none inherited from ours. */
function labEnv(base: string, vars: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(WEFT_|COMPOSE_)/.test(k)) env[k] = v;
  return { ...env, WEFT_BASE_IMAGE: base, ...vars };
}

interface FormedNode {
  service: string;
  status: NodeStatus;
  podIp: string;
}

describe.skipIf(process.getuid?.() !== 0)('docker compose lab (compose/docker-compose.yml)', () => {
  const labs = new Set<ComposeLab>();
  let engine: 'running' | 'started' | undefined;
  let policyBefore = '';
  let base = '';
  let cli: string[] = [];

  beforeAll(async () => {
    policyBefore = forwardPolicy();
    engine = await startEngine();
    cli = composeCommand();
    base = await baseImage();
    expect(BASE_IMAGES).toContain(base);
    // One build (every service shares the image weft-lab:latest); `up` then finds it.
    const builder = new ComposeLab(`weft-t-compose-${tag}-build`, labEnv(base, {}), cli);
    check(`compose build (FROM ${base})`, await builder.compose(['build', 'control'], 600_000));
  }, 900_000);

  afterAll(async () => {
    const errors: string[] = [];
    for (const lab of labs) {
      const r = await lab.down();
      if (r.code !== 0) errors.push(`down ${lab.project}: ${r.stderr.trim()}`);
    }
    if (engine === 'started') {
      const r = await stopEngine();
      if (r.code !== 0) errors.push(`docker-engine.sh stop: ${r.stderr.trim()}`);
      const after = forwardPolicy();
      if (after !== policyBefore) errors.push(`iptables FORWARD policy was ${policyBefore} before dockerd, ${after} after`);
    }
    if (errors.length) throw new Error(errors.join('\n'));
  }, 300_000);

  async function form(name: string, vars: Record<string, string>): Promise<{ lab: ComposeLab; nodes: FormedNode[]; ports: number[] }> {
    const ports = await freeLoopbackPorts(3);
    const lab = new ComposeLab(
      `weft-t-compose-${tag}-${name}`,
      labEnv(base, {
        WEFT_INSPECT_PORT_NODE1: String(ports[0]),
        WEFT_INSPECT_PORT_NODE2: String(ports[1]),
        WEFT_INSPECT_PORT_NODE3: String(ports[2]),
        ...vars,
      }),
      cli,
    );
    labs.add(lab);
    await lab.up();
    // Ready = the entrypoint's healthcheck (pod attached, /readyz 200) and /status listing both
    // other nodes as peers; one exec per node per round.
    const statuses = await until(
      `3 daemons ready with 2 peers each (${lab.project})`,
      async () => {
        const all = await Promise.all(
          NODES.map(async (n) => {
            const r = await lab.exec(n, ['sh', '-c', 'weft-entrypoint healthcheck && weft status --json']);
            if (r.code !== 0) return undefined;
            const s = JSON.parse(r.stdout) as NodeStatus;
            return s.ready && s.peers.length === 2 ? s : undefined;
          }),
        );
        return all.every((s) => s) ? (all as NodeStatus[]) : undefined;
      },
      90_000,
      500,
    );
    const nodes = await Promise.all(
      NODES.map(async (service, i) => {
        const r = check(`${service}: pod address`, await lab.exec(service, ['pod', 'ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']));
        const podIp = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout)?.[1];
        if (!podIp) throw new Error(`${service}: no IPv4 on the pod's eth0: ${r.stdout}`);
        return { service, status: statuses[i]!, podIp };
      }),
    );
    return { lab, nodes, ports };
  }

  /** Three distinct /24 leases, each node peering with exactly the other two, each pod in its node's lease. */
  function expectFormed(nodes: FormedNode[], backend: string): void {
    const subnets = nodes.map((n) => n.status.lease?.subnet ?? '');
    expect(new Set(subnets).size).toBe(3);
    for (const n of nodes) {
      expect(n.status.backend).toBe(backend);
      expect(n.status.network).toBe(NETWORK);
      expect(n.status.lease?.subnet).toMatch(/\/24$/);
      expect(within(NETWORK, n.status.lease!.subnet)).toBe(true);
      expect(within(n.status.lease!.subnet, `${n.podIp}/32`), `${n.service} pod ${n.podIp} in ${n.status.lease!.subnet}`).toBe(true);
      const others = nodes.filter((o) => o !== n);
      expect(n.status.peers.map((p) => `${p.subnet} ${p.publicIp}`).sort()).toEqual(others.map((o) => `${o.status.lease!.subnet} ${o.status.publicIp}`).sort());
    }
  }

  /** node1→node2, node2→node3, node3→node1, pod to pod, concurrently: every node sends and receives. */
  async function pingRing(lab: ComposeLab, nodes: FormedNode[]): Promise<void> {
    const results = await Promise.all(
      nodes.map((from, i) => {
        const to = nodes[(i + 1) % nodes.length]!;
        return lab.exec(from.service, ['pod', 'ping', '-c', '3', '-i', '0.2', '-W', '2', to.podIp]).then((r) => ({ from, to, r }));
      }),
    );
    for (const { from, to, r } of results) {
      expect(r.code, `${from.service} pod → ${to.service} pod ${to.podIp}:\n${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
    }
  }

  for (const backend of ['udp', 'vxlan', 'ipip'] as const) {
    it(`${backend}: 3 nodes form, pods ping across nodes, iperf3 runs, weft status shows 2 peers, down leaves nothing`, async () => {
      const { lab, nodes, ports } = await form(backend, { WEFT_BACKEND: backend });
      expectFormed(nodes, backend);
      await pingRing(lab, nodes);

      // A bounded TCP stream, node1's pod to node3's pod (every pod runs an iperf3 server).
      const ip = await lab.exec('node1', ['pod', 'iperf3', '-c', nodes[2]!.podIp, '-t', '1', '-J'], 30_000);
      expect(ip.code, ip.stdout + ip.stderr).toBe(0);
      const report = JSON.parse(ip.stdout) as { end: { sum_received: { bytes: number; bits_per_second: number } } };
      expect(report.end.sum_received.bytes).toBeGreaterThan(1_000_000);
      console.log(`compose ${backend}: iperf3 pod→pod ${(report.end.sum_received.bits_per_second / 1e6).toFixed(0)} Mbit/s`);

      // What a user types: `docker compose exec node1 weft status`.
      const st = check('weft status', await lab.exec('node1', ['weft', 'status']));
      expect(st.stdout).toMatch(new RegExp(`ready, backend ${backend}, network ${NETWORK.replace(/\./g, '\\.')}`));
      expect(st.stdout).toContain(`lease ${nodes[0]!.status.lease!.subnet}`);
      expect(st.stdout).toContain('peers (2):');
      const after = JSON.parse(check('weft status --json', await lab.exec('node1', ['weft', 'status', '--json'])).stdout) as NodeStatus;
      expect(after.counters.txPackets).toBeGreaterThan(1000);
      expect(after.counters.rxPackets).toBeGreaterThan(0);

      if (backend === 'udp') {
        // Each daemon's inspector is published on the host's loopback, one port per node...
        for (const port of ports) {
          const v = (await (await fetch(`http://127.0.0.1:${port}/json/version`)).json()) as { Browser: string };
          expect(v.Browser).toMatch(/^node\.js\/v24\./);
        }
        // ...and every source map in the image resolves to a TypeScript source that is there.
        const script = `const fs=require('fs'),path=require('path');let n=0;const missing=[];
          (function walk(d){for(const e of fs.readdirSync(d,{withFileTypes:true})){const p=path.join(d,e.name);
            if(e.isDirectory())walk(p);else if(p.endsWith('.js.map')){const m=JSON.parse(fs.readFileSync(p,'utf8'));
              for(const s of m.sources){n++;const f=path.resolve(path.dirname(p),m.sourceRoot||'',s);if(!fs.existsSync(f))missing.push(f);}}}})('/opt/weft/dist/src');
          console.log(JSON.stringify({n,missing}));`;
        const maps = JSON.parse(check('source maps', await lab.exec('node1', ['node', '-e', script])).stdout) as { n: number; missing: string[] };
        expect(maps.n).toBeGreaterThan(50);
        expect(maps.missing).toEqual([]);
      }

      check(`down ${lab.project}`, await lab.down());
      labs.delete(lab);
      expect(await lab.leftovers()).toEqual({ containers: [], networks: [], volumes: [] });
    }, 180_000);
  }

  it('host-gw: 3 nodes form with kernel routes to each peer over the underlay, no TUN; pods ping once Docker lets pod addresses across its bridge', async () => {
    const { lab, nodes } = await form('hostgw', { WEFT_BACKEND: 'host-gw' });
    expectFormed(nodes, 'host-gw');
    const routes = check('ip route', await lab.exec('node1', ['ip', '-4', 'route', 'show'])).stdout;
    for (const peer of nodes.slice(1)) expect(routes).toContain(`${peer.status.lease!.subnet} via ${peer.status.publicIp} dev `);
    expect(routes).not.toMatch(/dev weft0/);
    // Docker's rules for an internal network drop bridged packets whose source or destination is
    // outside the network's own subnet, and with br_netfilter on (Docker turns it on) bridged
    // frames pass through them: unencapsulated pod traffic needs an exception, as on a cloud
    // network that checks source addresses. DOCKER-USER is Docker's place for it; scoped to this
    // lab's bridge and removed again.
    const netId = check('network inspect', await run('docker', ['network', 'inspect', '-f', '{{.Id}}', `${lab.project}_underlay`])).stdout.trim();
    const rule = ['DOCKER-USER', '-i', `br-${netId.slice(0, 12)}`, '-o', `br-${netId.slice(0, 12)}`, '-s', NETWORK, '-d', NETWORK, '-j', 'ACCEPT'];
    check('iptables -I', await run('iptables', ['-I', ...rule]));
    try {
      await pingRing(lab, nodes);
    } finally {
      await run('iptables', ['-D', ...rule]);
    }
    check(`down ${lab.project}`, await lab.down());
    labs.delete(lab);
    expect(await lab.leftovers()).toEqual({ containers: [], networks: [], volumes: [] });
  }, 180_000);

  it("etcd profile (COMPOSE_PROFILES=etcd, udp): leases in etcd under flannel's keys, daemons on --etcd-endpoints, pods ping", async () => {
    const { lab, nodes } = await form('etcd', { WEFT_BACKEND: 'udp', COMPOSE_PROFILES: 'etcd' });
    expectFormed(nodes, 'udp');
    for (const n of nodes) expect(n.status.control.target).toMatch(/^etcd http:\/\/etcd:2379 /);
    const keys = check('etcdctl get', await lab.exec('etcd', ['etcdctl', 'get', '--prefix', '--keys-only', '/coreos.com/network']));
    const listed = keys.stdout
      .split('\n')
      .filter((l) => l.trim() !== '')
      .sort();
    const want = ['/coreos.com/network/config', ...nodes.map((n) => `/coreos.com/network/subnets/${n.status.lease!.subnet.replace('/', '-')}`)].sort();
    expect(listed).toEqual(want);
    await pingRing(lab, nodes);
    check(`down ${lab.project}`, await lab.down());
    labs.delete(lab);
    expect(await lab.leftovers()).toEqual({ containers: [], networks: [], volumes: [] });
  }, 180_000);

  it('WEFT_BACKEND=bogus: control and nodes exit 2 with one line naming the variable and the choices', async () => {
    const lab = new ComposeLab(`weft-t-compose-${tag}-bogus`, labEnv(base, { WEFT_BACKEND: 'bogus', WEFT_INSPECT: '0' }), cli);
    labs.add(lab);
    await lab.up();
    for (const service of ['control', 'node1'] as const) {
      const code = await until(
        `${service} to exit`,
        async () => {
          const id = (await lab.compose(['ps', '-a', '-q', service])).stdout.trim();
          if (!id) return undefined;
          const [state, exit] = (await run('docker', ['inspect', '-f', '{{.State.Status}} {{.State.ExitCode}}', id])).stdout.trim().split(' ');
          return state === 'exited' ? exit : undefined;
        },
        30_000,
        300,
      );
      expect(code).toBe('2');
      const logs = check(`logs ${service}`, await lab.compose(['logs', '--no-color', service]));
      const lines = logs.stdout.split('\n').filter((l) => /\|\s*\S/.test(l));
      expect(lines, logs.stdout).toHaveLength(1);
      expect(lines[0]).toMatch(/WEFT_BACKEND="bogus" is not a weft backend; use one of: udp, vxlan, ipip, host-gw$/);
    }
    check(`down ${lab.project}`, await lab.down());
    labs.delete(lab);
    expect(await lab.leftovers()).toEqual({ containers: [], networks: [], volumes: [] });
  }, 120_000);
});
