// Health probes from inside a namespace. A daemon's healthz port is reachable only inside its
// node namespace, and Node cannot enter a namespace itself, so one short-lived `node -e` runs
// there (via ip netns exec) and does the polling internally: one spawn per wait, not per try.
import { run } from './process';

export interface HttpProbe {
  url: string;
  status: number; // 0 when no response
  body: string;
  /** The success condition held (connected; HTTP 200 and, with `peers`, all of them listed). */
  ok: boolean;
  error?: string;
  /** With `peers`: the publicIps the body's `peers` array lists, or null when it has no such array. */
  peersSeen?: string[] | null;
}

export interface ProbeSpec {
  mode: 'http' | 'tcp';
  /** http: URLs tried in order each round; tcp: "host:port" targets. */
  targets: string[];
  /** Keep trying until one target succeeds (http: status 200; tcp: connected) or the deadline passes. */
  untilOk: boolean;
  deadlineMs: number;
  intervalMs: number;
  perTryTimeoutMs: number;
  /**
   * http only: success also needs the JSON body's \`peers\` array (of {publicIp} objects or of
   * address strings) to list every one of these addresses. A body without such an array counts
   * as success, with peersSeen null, since the probe cannot judge it.
   */
  peers?: string[];
}

// Runs inside the namespace; prints one JSON array of the last round's results. Kept as plain JS
// because it is handed to `node -e` as a string.
const PROBE_JS = String.raw`
const http = require('node:http'), net = require('node:net');
const spec = JSON.parse(process.argv[1]);
const deadline = Date.now() + spec.deadlineMs;
function httpGet(url) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: spec.perTryTimeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { if (body.length < 1 << 20) body += d; });
      res.on('end', () => resolve(judge({ url, status: res.statusCode || 0, body })));
      res.on('error', (e) => resolve({ url, status: 0, body, ok: false, error: e.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ url, status: 0, body: '', ok: false, error: e.message }));
  });
}
function judge(r) {
  r.ok = r.status === 200;
  if (r.ok && spec.peers) {
    let list = null;
    try { const j = JSON.parse(r.body); if (Array.isArray(j.peers)) list = j.peers; } catch {}
    r.peersSeen = list && list.map((p) => (typeof p === 'string' ? p : p && p.publicIp)).filter(Boolean);
    if (r.peersSeen) r.ok = spec.peers.every((ip) => r.peersSeen.includes(ip));
  }
  return r;
}
function tcp(target) {
  return new Promise((resolve) => {
    const i = target.lastIndexOf(':');
    const s = net.connect({ host: target.slice(0, i), port: Number(target.slice(i + 1)) });
    const t = setTimeout(() => { s.destroy(); resolve({ url: target, status: 0, body: '', ok: false, error: 'timeout' }); }, spec.perTryTimeoutMs);
    s.on('connect', () => { clearTimeout(t); s.end(); resolve({ url: target, status: 200, body: '', ok: true }); });
    s.on('error', (e) => { clearTimeout(t); resolve({ url: target, status: 0, body: '', ok: false, error: e.message }); });
  });
}
(async () => {
  for (;;) {
    const results = [];
    for (const t of spec.targets) {
      const r = spec.mode === 'tcp' ? await tcp(t) : await httpGet(t);
      results.push(r);
      if (spec.untilOk && r.ok) { process.stdout.write(JSON.stringify(results)); return; }
    }
    if (!spec.untilOk || Date.now() + spec.intervalMs > deadline) { process.stdout.write(JSON.stringify(results)); return; }
    await new Promise((r) => setTimeout(r, spec.intervalMs));
  }
})();
`;

export async function probe(ns: string, spec: ProbeSpec, opts: { nodeBin?: string; signal?: AbortSignal } = {}): Promise<HttpProbe[]> {
  const nodeBin = opts.nodeBin ?? process.execPath;
  const r = await run('ip', ['netns', 'exec', ns, nodeBin, '-e', PROBE_JS, JSON.stringify(spec)], {
    timeoutMs: spec.deadlineMs + spec.perTryTimeoutMs + 10_000,
    signal: opts.signal,
  });
  if (opts.signal?.aborted) throw new Error(`probe in ${ns} cancelled`);
  if (r.code !== 0) throw new Error(`probe in ${ns} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as HttpProbe[];
}

/**
 * URLs for a daemon's health port, asked from inside the node's namespace. Loopback first: that
 * is where weft daemon listens by default, and the lab never widens it (/status is no one
 * else's business); the public IP as well for a daemon given --healthz-ip PUBLIC_IP in labUp's
 * daemonArgs.
 */
export function healthUrls(publicIp: string, port: number, path: string): string[] {
  return [`http://127.0.0.1:${port}${path}`, `http://${publicIp}:${port}${path}`];
}
