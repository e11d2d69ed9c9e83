// `weft bench` as a user runs it: the CLI forms its own labs, measures, writes its files and
// leaves nothing behind, also when interrupted. Four data planes cover every way the bench sets
// one up: routes by hand (kernel-host-gw), flannel.1 (kernel-vxlan), weft's own datapath
// (weft-udp) and the reference tunnel (openvpn). The figures are not judged for speed (that is
// what the bench is for); what is checked is that each one is really measured: the header bytes
// and MTU are exact properties of each data plane, and repeated samples are kept and summarised.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labNsPattern } from '../../src/lab';
import { listNs } from '../../src/lab/netns';
import { pidsWithCmdline } from '../../src/lab/process';
import { labDir } from '../../src/lab/state';
import type { BenchResults } from '../../src/bench/types';
import { ensureBuilt } from '../support/build';
import { uniquePrefix } from '../support/prefix';

const WEFT = path.join(__dirname, '..', '..', 'bin', 'weft.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function weft(args: string[], opts: { onStderr?: (all: string, kill: (sig: NodeJS.Signals) => void) => void; timeoutMs: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WEFT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`weft ${args.join(' ')}: no exit after ${opts.timeoutMs} ms\n${stderr}`));
    }, opts.timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      opts.onStderr?.(stderr, (sig) => child.kill(sig));
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function leftovers(prefix: string): Promise<string[]> {
  const ns = (await listNs()).filter((n) => labNsPattern(prefix).test(n));
  const procs = pidsWithCmdline(labDir(prefix) + '/').map((p) => `pid ${p}`);
  return [...ns, ...procs, ...(existsSync(labDir(prefix)) ? [labDir(prefix)] : [])];
}

describe.skipIf(process.getuid?.() !== 0)('weft bench (4 data planes, 2 runs of 1 s)', () => {
  const prefix = uniquePrefix('bench');
  const out = mkdtempSync(path.join(os.tmpdir(), 'weft-bench-'));
  const tunnels = ['kernel-host-gw', 'kernel-vxlan', 'weft-udp', 'openvpn'] as const;
  let r: Run;
  let res: BenchResults;

  beforeAll(async () => {
    await ensureBuilt();
    r = await weft(
      [
        'bench',
        '--backends',
        'openvpn,kernel-vxlan,udp,kernel-host-gw',
        '--runs',
        '2',
        '--seconds',
        '1',
        '--streams',
        '1,4',
        '--pings',
        '20',
        '--out',
        out,
        '--prefix',
        prefix,
      ],
      {
        timeoutMs: 240_000,
      },
    );
    if (r.code === 0) res = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as BenchResults;
  }, 250_000);

  afterAll(async () => {
    await labDown(prefix);
    rmSync(out, { recursive: true, force: true });
  });

  it('exits 0 and prints the Markdown table, one row per data plane in the canonical order', () => {
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^weft bench, \d{4}-\d\d-\d\d: `weft bench --backends openvpn,kernel-vxlan,udp,kernel-host-gw /);
    const rows = lines.filter((l) => /^\| (kernel|weft|openvpn)/.test(l) && l.split('|').length === 11).map((l) => l.split('|')[1].trim());
    expect(rows).toEqual([...tunnels]);
    expect(readFileSync(path.join(out, 'results.md'), 'utf8')).toBe(r.stdout);
  });

  it('results.json keeps every sample, and the summary is their median, min and max', () => {
    expect(res.results.map((t) => t.tunnel)).toEqual([...tunnels]);
    expect(res.options).toMatchObject({ runs: 2, seconds: 1, streams: [1, 4], pings: 20 });
    for (const t of res.results) {
      for (const s of [t.tcp1Bps, t.tcp4Bps, t.udp64Pps, t.rttP50Ms, t.rttP99Ms, t.hostCpuSecPerGB]) {
        expect(s.samples).toHaveLength(2);
        expect(s.min).toBe(Math.min(...s.samples));
        expect(s.max).toBe(Math.max(...s.samples));
        expect(s.median).toBeCloseTo((s.samples[0] + s.samples[1]) / 2, 9);
        expect(s.min).toBeGreaterThan(0);
      }
      // The curve's 1- and 4-stream points are the same tests as the table's columns.
      expect(t.scaling.map((p) => p.streams)).toEqual([1, 4]);
      expect(t.scaling[0].bps.samples).toEqual(t.tcp1Bps.samples);
      expect(t.scaling[1].bps.samples).toEqual(t.tcp4Bps.samples);
      expect(t.rttP50Ms.median).toBeLessThanOrEqual(t.rttP99Ms.median);
    }
  });

  it('measures each data plane’s own header bytes (from a capture) and MTU (from DF pings)', () => {
    const by = Object.fromEntries(res.results.map((t) => [t.tunnel, t]));
    // host-gw: the pod's packet itself; VXLAN: IPv4 + UDP + VXLAN + inner Ethernet (RFC 7348);
    // weft udp and OpenVPN without crypto or auth: IPv4 + UDP.
    expect([by['kernel-host-gw'].headerBytes, by['kernel-vxlan'].headerBytes, by['weft-udp'].headerBytes, by.openvpn.headerBytes]).toEqual([0, 50, 28, 28]);
    expect([by['kernel-host-gw'].mtu, by['kernel-vxlan'].mtu, by['weft-udp'].mtu, by.openvpn.mtu]).toEqual([1500, 1450, 1472, 1472]);
  });

  it('counts tunnel CPU for the processes that carry packets, and none for the kernel', () => {
    const by = Object.fromEntries(res.results.map((t) => [t.tunnel, t]));
    expect(by['kernel-host-gw'].tunnelCpuSecPerGB).toBeNull();
    expect(by['kernel-vxlan'].tunnelCpuSecPerGB).toBeNull();
    expect(by['kernel-vxlan'].maxRssBytes).toBeNull();
    for (const t of [by['weft-udp'], by.openvpn]) {
      // Userspace tunnels copy every byte through their process: some CPU per GB, always.
      expect(t.tunnelCpuSecPerGB!.min).toBeGreaterThan(0);
      expect(t.maxRssBytes).toBeGreaterThan(1 << 20);
    }
  });

  it('writes both charts as SVG naming every data plane, and PNGs rendered from them', () => {
    for (const name of ['bench', 'scaling']) {
      const svg = readFileSync(path.join(out, `${name}.svg`), 'utf8');
      expect(svg.startsWith('<svg') || svg.startsWith('<?xml')).toBe(true);
      for (const t of tunnels) expect(svg).toContain(`data-tunnel="${t}"`);
      const png = readFileSync(path.join(out, `${name}.png`));
      expect(png.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
    }
  });

  it('shows its progress as lines to a pipe, forward only, and ends with the files it wrote', () => {
    const pct = [...r.stderr.matchAll(/^\[[#-]{24}\]\s+(\d+)%/gm)].map((m) => Number(m[1]));
    expect(pct.length).toBeGreaterThan(10);
    expect(pct).toEqual([...pct].sort((a, b) => a - b));
    expect(r.stderr).not.toContain('\x1b[');
    expect(r.stderr).toMatch(/weft bench: done in \d+ s/);
    expect(r.stderr).toContain(`wrote ${path.join(out, 'results.json')}`);
  });

  it('leaves no namespace, process or lab directory behind', async () => {
    expect(await leftovers(prefix)).toEqual([]);
  });
});

describe.skipIf(process.getuid?.() !== 0)('weft bench interrupted', () => {
  const prefix = uniquePrefix('bint');
  const out = mkdtempSync(path.join(os.tmpdir(), 'weft-bench-'));

  afterAll(async () => {
    await labDown(prefix);
    rmSync(out, { recursive: true, force: true });
  });

  it('Ctrl-C in the middle of a measurement tears the lab down (OpenVPN included) and exits 130 with nothing written', async () => {
    await ensureBuilt();
    let sent = false;
    const r = await weft(['bench', '--backends', 'openvpn', '--seconds', '10', '--out', out, '--prefix', prefix], {
      timeoutMs: 60_000,
      onStderr: (all, kill) => {
        if (!sent && /TCP, 1 stream/.test(all)) {
          sent = true;
          kill('SIGINT');
        }
      },
    });
    expect(sent, r.stderr).toBe(true);
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain('interrupted');
    expect(existsSync(path.join(out, 'results.json'))).toBe(false);
    expect(await leftovers(prefix)).toEqual([]);
  }, 90_000);

  it('refuses a bad flag before forming anything', async () => {
    const r = await weft(['bench', '--backends', 'udp,wireguard', '--prefix', prefix], { timeoutMs: 20_000 });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      'weft bench: --backends: unknown "wireguard" (known: kernel-host-gw, kernel-vxlan, weft-host-gw, weft-udp, weft-vxlan, weft-ipip, weft-udp-no-offload, weft-vxlan-no-offload, weft-ipip-no-offload, weft-udp-busy-poll, weft-udp-offload-tun, weft-udp-offload-gso, weft-udp-offload-gro, weft-udp-offload-tun-gso, weft-udp-offload-tun-gro, weft-udp-offload-gso-gro, openvpn)',
    );
    expect(await leftovers(prefix)).toEqual([]);
  });
});
