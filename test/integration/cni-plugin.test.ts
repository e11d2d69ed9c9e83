// weft-cni run exactly as a container runtime runs a CNI plugin: the executable bin/weft-cni
// inside the node's network namespace, CNI_* in the environment, the plugin config on stdin, a
// real pod namespace, delegating to Debian's real bridge and host-local in /usr/lib/cni. Then its
// answers to bad input: each one the CNI error code the spec gives it.
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addNs, deleteNs, listNs, POD_SYSCTLS, setSysctls } from '../../src/lab/netns';
import { nsRun, run } from '../../src/lab/process';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

const ROOT = join(__dirname, '..', '..');
const WEFT_CNI = join(ROOT, 'bin', 'weft-cni');
const REFERENCE_PLUGINS = '/usr/lib/cni';

interface Call {
  code: number;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | null;
}

describe.skipIf(process.getuid?.() !== 0)('weft-cni, run as a runtime runs it', () => {
  const prefix = uniquePrefix('cni');
  const nodeNs = `${prefix}node`;
  const podNs = `${prefix}pod`;
  const pod2Ns = `${prefix}pod2`;
  const tmp = mkdtempSync(join(tmpdir(), 'weft-cni-'));
  const subnetFile = join(tmp, 'subnet.env');
  const dataDir = join(tmp, 'weft');
  const ipamDir = join(tmp, 'ipam');
  const SUBNET_ENV = 'FLANNEL_NETWORK=10.97.0.0/16\nFLANNEL_SUBNET=10.97.7.1/24\nFLANNEL_MTU=1410\nFLANNEL_IPMASQ=true\n';

  /** The plugin config a runtime derives from a conflist entry (name and cniVersion from the list). */
  const conf = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    cniVersion: '1.0.0',
    name: 'weftnet',
    type: 'weft-cni',
    subnetFile,
    dataDir,
    delegate: { bridge: 'cni0' },
    ipam: { dataDir: ipamDir },
    ...extra,
  });

  async function cni(command: string | undefined, config: unknown, env: Record<string, string | undefined> = {}, ns = nodeNs): Promise<Call> {
    const vars: Record<string, string | undefined> = {
      PATH: process.env.PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: 'ctr1',
      CNI_NETNS: `/run/netns/${podNs}`,
      CNI_IFNAME: 'eth0',
      CNI_PATH: REFERENCE_PLUGINS,
      ...env,
    };
    for (const k of Object.keys(vars)) if (vars[k] === undefined) delete vars[k];
    const r = await run('ip', ['netns', 'exec', ns, WEFT_CNI], {
      env: vars as NodeJS.ProcessEnv,
      input: typeof config === 'string' ? config : JSON.stringify(config),
      timeoutMs: 30_000,
    });
    let json: Record<string, unknown> | null = null;
    try {
      json = JSON.parse(r.stdout) as Record<string, unknown>;
    } catch {
      /* empty or not JSON */
    }
    return { code: r.code, stdout: r.stdout, stderr: r.stderr, json };
  }

  /** An error result: exit non-zero, the CNI error object on stdout with this code. */
  function expectError(r: Call, code: number): Record<string, unknown> {
    expect(r.code, r.stdout + r.stderr).not.toBe(0);
    expect(r.json, r.stdout).not.toBeNull();
    expect(r.json!.code, r.stdout).toBe(code);
    expect(typeof r.json!.msg).toBe('string');
    expect(typeof r.json!.cniVersion).toBe('string');
    return r.json!;
  }

  beforeAll(async () => {
    await ensureBuilt();
    writeFileSync(subnetFile, SUBNET_ENV);
    for (const ns of [nodeNs, podNs, pod2Ns]) await addNs(ns);
    for (const ns of [podNs, pod2Ns]) await setSysctls(ns, POD_SYSCTLS);
  }, 240_000);

  afterAll(async () => {
    // Deleting the node namespace takes cni0 and the host-side veths with it.
    for (const ns of [podNs, pod2Ns, nodeNs]) await deleteNs(ns).catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
    const left = (await listNs()).filter((n) => n.startsWith(prefix));
    expect(left).toEqual([]);
  });

  it('VERSION lists the spec versions it speaks and echoes the config version', async () => {
    const r = await cni('VERSION', { cniVersion: '1.0.0' });
    expect(r.code, r.stdout).toBe(0);
    expect(r.json).toEqual({ cniVersion: '1.0.0', supportedVersions: ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  let addResult: Record<string, unknown>;

  it('ADD attaches the pod: an address in the node subnet, MTU and route from subnet.env, the gateway answers', async () => {
    const r = await cni('ADD', conf());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    addResult = r.json!;
    const ips = addResult.ips as { address: string; gateway: string }[];
    expect(ips[0].address).toMatch(/^10\.97\.7\.\d+\/24$/);
    expect(ips[0].gateway).toBe('10.97.7.1');
    const addr = await nsRun(podNs, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    expect(addr.stdout).toContain(ips[0].address);
    const link = await nsRun(podNs, ['ip', '-o', 'link', 'show', 'dev', 'eth0']);
    expect(link.stdout).toMatch(/mtu 1410 /);
    const routes = await nsRun(podNs, ['ip', '-4', 'route', 'show']);
    expect(routes.stdout).toMatch(/^10\.97\.0\.0\/16 via 10\.97\.7\.1 dev eth0/m);
    const gw = await nsRun(nodeNs, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'cni0']);
    expect(gw.stdout).toContain('10.97.7.1/24');
    const ping = await nsRun(podNs, ['ping', '-c', '2', '-W', '2', '10.97.7.1']);
    expect(ping.code, ping.stdout).toBe(0);

    // The delegate config flannel's plugin would build, saved for DEL: FLANNEL_IPMASQ=true, so
    // the bridge does not masquerade too.
    const saved = JSON.parse(readFileSync(join(dataDir, 'ctr1@eth0'), 'utf8')) as Record<string, unknown>;
    expect(saved).toEqual({
      cniVersion: '1.0.0',
      name: 'weftnet',
      type: 'bridge',
      bridge: 'cni0',
      ipMasq: false,
      mtu: 1410,
      isGateway: true,
      ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet: '10.97.7.0/24' }]], routes: [{ dst: '10.97.0.0/16', gw: '10.97.7.1' }] },
    });
    // host-local kept its reservation in the dataDir the config gave it.
    expect(readdirSync(join(ipamDir, 'weftnet'))).toContain(ips[0].address.split('/')[0]);
  });

  it('CHECK passes with the ADD result as prevResult, and fails when the node lease moved', async () => {
    const ok = await cni('CHECK', conf({ prevResult: addResult }));
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expectError(await cni('CHECK', conf()), 7); // no prevResult
    expectError(await cni('CHECK', conf({ prevResult: addResult }), { CNI_CONTAINERID: 'never-added' }), 3);
    writeFileSync(subnetFile, SUBNET_ENV.replace('10.97.7.1/24', '10.97.8.1/24'));
    try {
      const moved = expectError(await cni('CHECK', conf({ prevResult: addResult })), 103);
      expect(moved.msg).toContain('10.97.8.0/24');
    } finally {
      writeFileSync(subnetFile, SUBNET_ENV);
    }
    expectError(await cni('CHECK', { ...conf({ prevResult: addResult }), cniVersion: '0.3.1' }), 1); // CHECK came in 0.4.0
  });

  it('DEL removes the attachment and its reservation; DEL again, and DEL of an ID never added, succeed', async () => {
    const ip = (addResult.ips as { address: string }[])[0].address.split('/')[0];
    const r = await cni('DEL', conf());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const link = await nsRun(podNs, ['ip', 'link', 'show', 'dev', 'eth0']);
    expect(link.code).not.toBe(0);
    expect(existsSync(join(dataDir, 'ctr1@eth0'))).toBe(false);
    expect(readdirSync(join(ipamDir, 'weftnet'))).not.toContain(ip);

    const again = await cni('DEL', conf());
    expect(again.code, again.stdout).toBe(0);
    // Nothing was added, so nothing is needed: not subnet.env, not the namespace.
    const never = await cni('DEL', conf({ subnetFile: join(tmp, 'no-such-subnet.env') }), { CNI_CONTAINERID: 'never-added', CNI_NETNS: undefined });
    expect(never.code, never.stdout).toBe(0);
    expect(never.stdout).toBe('');
  });

  it('without FLANNEL_IPMASQ the bridge masquerades the pod (flannel: ipMasq = !FLANNEL_IPMASQ), inside the node namespace', async () => {
    writeFileSync(subnetFile, SUBNET_ENV.replace('FLANNEL_IPMASQ=true', 'FLANNEL_IPMASQ=false'));
    try {
      const env = { CNI_CONTAINERID: 'ctr2', CNI_NETNS: `/run/netns/${pod2Ns}` };
      const r = await cni('ADD', conf(), env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const nat = await nsRun(nodeNs, ['iptables', '-t', 'nat', '-S', 'POSTROUTING']);
      expect(nat.stdout).toMatch(/CNI-/);
      const del = await cni('DEL', conf(), env);
      expect(del.code, del.stdout + del.stderr).toBe(0);
      const after = await nsRun(nodeNs, ['iptables', '-t', 'nat', '-S', 'POSTROUTING']);
      expect(after.stdout).not.toMatch(/CNI-/);
    } finally {
      writeFileSync(subnetFile, SUBNET_ENV);
    }
  });

  it('a failed delegate ADD is undone with DEL and its error code passed through', async () => {
    // A delegate that refuses ADD with code 7 and logs each command it is given.
    const bin = join(tmp, 'bin');
    const log = join(tmp, 'fake.log');
    await run('mkdir', ['-p', bin]);
    writeFileSync(
      join(bin, 'refuser'),
      `#!/bin/sh\necho "$CNI_COMMAND" >> ${log}\ncat >/dev/null\nif [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","code":7,"msg":"no thanks"}'; exit 1; fi\n`,
    );
    chmodSync(join(bin, 'refuser'), 0o755);
    const e = expectError(await cni('ADD', conf({ delegate: { type: 'refuser' } }), { CNI_CONTAINERID: 'ctr3', CNI_PATH: `${bin}:${REFERENCE_PLUGINS}` }), 7);
    expect(e.msg).toContain('no thanks');
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(['ADD', 'DEL']);
    expect(existsSync(join(dataDir, 'ctr3@eth0'))).toBe(false);
  });

  it('STATUS (cniVersion 1.1.0): ready with subnet.env, 50 without, refused for a 1.0.0 config', async () => {
    const ok = await cni('STATUS', conf({ cniVersion: '1.1.0' }), { CNI_CONTAINERID: undefined, CNI_NETNS: undefined, CNI_IFNAME: undefined });
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expectError(await cni('STATUS', conf({ cniVersion: '1.1.0', subnetFile: join(tmp, 'absent.env') })), 50);
    expectError(await cni('STATUS', conf()), 1);
  });

  it('GC (cniVersion 1.1.0) releases attachments that are not in the valid list and keeps those that are', async () => {
    const a = await cni('ADD', conf(), { CNI_CONTAINERID: 'keep' });
    const b = await cni('ADD', conf(), { CNI_CONTAINERID: 'stale', CNI_NETNS: `/run/netns/${pod2Ns}` });
    expect(a.code, a.stdout).toBe(0);
    expect(b.code, b.stdout).toBe(0);
    const staleIp = (b.json!.ips as { address: string }[])[0].address.split('/')[0];
    await deleteNs(pod2Ns); // the runtime lost it without a DEL
    const r = await cni('GC', conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'keep', ifname: 'eth0' }] }));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(readdirSync(dataDir).sort()).toEqual(['keep@eth0']);
    expect(readdirSync(join(ipamDir, 'weftnet'))).not.toContain(staleIp);
    const del = await cni('DEL', conf(), { CNI_CONTAINERID: 'keep' });
    expect(del.code, del.stdout).toBe(0);
  });

  it('bad input gets the spec error code, one JSON object on stdout', async () => {
    const add = (config: unknown, env: Record<string, string | undefined> = {}): Promise<Call> => cni('ADD', config, { CNI_CONTAINERID: 'bad', ...env });
    const missing = expectError(await add(conf({ subnetFile: join(tmp, 'absent.env') })), 11);
    expect(missing.msg).toContain('absent.env');
    expectError(await add('{"cniVersion": "1.0.0", "name": '), 6);
    expectError(await add('[1, 2]'), 6);
    const unknown = expectError(await cni('FROB', conf()), 4);
    expect(unknown.msg).toContain('FROB');
    expect(expectError(await add(conf(), { CNI_CONTAINERID: undefined }), 4).msg as string).toContain('CNI_CONTAINERID');
    expect(expectError(await add(conf(), { CNI_NETNS: undefined }), 4).msg as string).toContain('CNI_NETNS');
    expect(expectError(await add(conf(), { CNI_CONTAINERID: '../etc' }), 4).msg as string).toContain('CNI_CONTAINERID');
    expectError(await cni(undefined, conf()), 4);
    const version = expectError(await add(conf({ cniVersion: '9.9.9' })), 1);
    expect(version.details).toContain('9.9.9');
    expectError(await add(conf({ name: undefined })), 7);
    expectError(await add(conf({ delegate: { name: 'x' } })), 7);
    expectError(await add(conf({ subnetFile: 'relative/subnet.env' })), 7);
    const ranges = expectError(await add(conf({ ipam: { ranges: [[{ subnet: '10.1.0.0/24' }]] } })), 2);
    expect(ranges.msg).toContain('ipam.ranges');
    expectError(await add(conf(), { CNI_PATH: join(tmp, 'empty-path') }), 101);
    writeFileSync(join(tmp, 'bad.env'), 'FLANNEL_NETWORK=10.97.0.0/16\nFLANNEL_SUBNET=nonsense\nFLANNEL_MTU=1410\n');
    expectError(await add(conf({ subnetFile: join(tmp, 'bad.env') })), 100);
    // None of these left an attachment behind.
    expect(existsSync(join(dataDir, 'bad@eth0'))).toBe(false);
    expect((await nsRun(nodeNs, ['ip', 'link', 'show'])).stdout).not.toMatch(/veth.*master cni0/);
  });
});
