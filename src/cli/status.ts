// `weft status`: what the daemon on this machine says about itself, from its /status endpoint —
// the command `docker compose exec node1 weft status` and `weft lab exec n1 -- weft status` run.
import * as http from 'node:http';
import { parseArgs } from 'node:util';
import { isReservation } from '../control/registry';

export const USAGE = `usage: weft status [--healthz ADDR:PORT] [--json]

  --healthz ADDR:PORT  the daemon's health server (default 127.0.0.1:9090, weft daemon's default)
  --json               print /status as the daemon sent it
`;

interface DaemonStatus {
  publicIp?: string;
  iface?: string;
  tun?: string;
  mtu?: number;
  backend?: string;
  network?: string;
  ready?: boolean;
  lease?: { subnet: string; expiration: number } | null;
  leaseLost?: string;
  /** error and downForMs: why the lease watch is down and since when (absent while it is up, and from older daemons). */
  control?: { target: string; watching: boolean; revision: number; error?: string; downForMs?: number };
  peers?: { subnet: string; publicIp: string; port: number; direct: boolean }[];
  /** The masquerade and forward rules (src/daemon/traffic-rules.ts); absent from older daemons. */
  trafficRules?: {
    backend: string;
    masquerade: boolean;
    randomFully: boolean;
    forward: boolean;
    installed: boolean;
    installedIn: string[];
    skipped?: string;
    resyncPeriodS: number;
    resyncs: number;
    lastResync?: string;
    errors: number;
    lastError?: string;
  };
  counters?: Record<string, unknown> & { drops?: Record<string, number> };
  offload?: {
    enabled?: boolean;
    tun: string[];
    /** The socket offloads asked for (--offload); absent from a daemon before they could be chosen apart. */
    gso?: boolean;
    gro?: boolean;
    tunReads: number;
    tunWrites: number;
    socketMessagesSent: number;
    superPacketsRead: number;
    segmentsPerSuperPacket: number;
    coalescedWrites: number;
    segmentsPerCoalescedWrite: number;
    gsoSends: number;
    segmentsPerGsoSend: number;
    groReceives: number;
    segmentsPerGroReceive: number;
    partialChecksumsFixed: number;
    checksumsCompleted?: number;
    gsoFallbacks?: number;
    truncatedReads?: number;
    tunWriteErrors?: number;
    tunnelSuperDatagramsCut: number;
    gsoDisabled: boolean;
    refused: Record<string, number>;
  };
}

function get(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

export function formatDaemonStatus(s: DaemonStatus): string {
  const lines: string[] = [];
  const ready = s.ready ? 'ready' : 'NOT READY';
  lines.push(`node ${s.publicIp ?? '?'} (${s.iface ?? '?'}): ${ready}, backend ${s.backend ?? '?'}, network ${s.network ?? '?'}`);
  if (s.leaseLost) lines.push(`lease LOST: ${s.leaseLost}`);
  if (s.lease) {
    const when = isReservation(s.lease) ? 'reserved for this node, never expires' : `expires ${new Date(s.lease.expiration).toISOString()}`;
    lines.push(`lease ${s.lease.subnet}, ${when}`);
  }
  lines.push(`device ${s.tun ?? '(none: kernel routes only)'}, MTU ${s.mtu ?? '?'}`);
  if (s.control) {
    const down = s.control.downForMs !== undefined ? `, down for ${(s.control.downForMs / 1000).toFixed(1)} s` : '';
    const why = s.control.error ? ` (${s.control.error})` : '';
    lines.push(`control ${s.control.target}: ${s.control.watching ? 'watching' : 'NOT watching'} at revision ${s.control.revision}${down}${why}`);
  }
  const t = s.trafficRules;
  if (t) {
    const what = [t.masquerade && `masquerade${t.randomFully ? ' --random-fully' : ''}`, t.forward && 'forward'].filter(Boolean).join(', ');
    const state = t.installed
      ? `${t.installedIn.join('; ')}`
      : t.skipped
        ? `NOT installed: ${t.skipped}`
        : what
          ? 'NOT installed'
          : 'none (no --ip-masq, forward rules off)';
    const resync = t.installed
      ? `; resync every ${t.resyncPeriodS} s, ${t.resyncs} put back${t.lastResync ? ` (last ${t.lastResync})` : ''}${t.errors ? `, ${t.errors} failed (${t.lastError})` : ''}`
      : '';
    lines.push(`rules ${t.backend}${what ? ` ${what}` : ''}: ${state}${resync}`);
  }
  const peers = s.peers ?? [];
  lines.push('', `peers (${peers.length}):`);
  for (const p of peers) lines.push(`  ${p.subnet.padEnd(18)} via ${p.publicIp}${p.port ? `:${p.port}` : ''}${p.direct ? ' (direct route)' : ''}`);
  const c = s.counters ?? {};
  lines.push('', 'counters:');
  for (const [k, v] of Object.entries(c)) if (k !== 'drops') lines.push(`  ${k.padEnd(16)} ${String(v)}`);
  const drops = Object.entries(c.drops ?? {});
  lines.push(`  drops            ${drops.length === 0 ? 'none' : drops.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const o = s.offload;
  if (o) {
    const pk = (n: unknown) => (typeof n === 'number' ? n : 0);
    const per = (a: number, b: number) => (b > 0 ? (a / b).toFixed(1) : '–');
    // An older status (no `enabled`) had offloads on exactly when something was granted.
    const enabled = o.enabled ?? o.tun.length > 0;
    // The socket offloads, when the daemon says them apart (--offload LIST); before that they
    // were on exactly when the TUN's were.
    const sockets = o.gso === undefined && o.gro === undefined ? undefined : [o.gso ? 'UDP_SEGMENT' : '', o.gro ? 'UDP_GRO' : ''].filter(Boolean);
    let head: string;
    if (!enabled && !sockets?.length) head = 'off (--no-offload)';
    else {
      head = !enabled ? 'TUN off' : o.tun.length ? `TUN ${o.tun.join(' ')}` : 'on, but the kernel granted no TUN offload';
      if (sockets) head += sockets.length ? `; socket ${sockets.join(' ')}` : '; socket offloads off';
    }
    lines.push('', `offloads: ${head}${o.gsoDisabled ? ', UDP_SEGMENT refused by the kernel' : ''}`);
    lines.push(
      `  TUN reads        ${o.tunReads} for ${pk(c.tunReadPackets)} packets (${per(pk(c.tunReadPackets), o.tunReads)} per read; ${o.superPacketsRead} super-packets of ${o.segmentsPerSuperPacket} segments)`,
    );
    lines.push(
      `  TUN writes       ${o.tunWrites} for ${pk(c.tunWritePackets)} packets (${per(pk(c.tunWritePackets), o.tunWrites)} per write; ${o.coalescedWrites} coalesced of ${o.segmentsPerCoalescedWrite})`,
    );
    lines.push(
      `  socket sends     ${o.socketMessagesSent} messages for ${pk(c.txPackets)} datagrams (${o.gsoSends} UDP_SEGMENT runs of ${o.segmentsPerGsoSend}; ${pk(o.gsoFallbacks)} runs resent plain)`,
    );
    lines.push(`  socket receives  ${o.groReceives} UDP_GRO trains of ${o.segmentsPerGroReceive}; ${o.tunnelSuperDatagramsCut} tunnel super-datagrams cut`);
    const refused = Object.entries(o.refused);
    if (o.partialChecksumsFixed || o.checksumsCompleted || refused.length) {
      lines.push(
        `  checksums        ${o.partialChecksumsFixed} partial finished on write, ${pk(o.checksumsCompleted)} completed on read; refused reads ${refused.length ? refused.map(([k, v]) => `${k} ${v}`).join(', ') : 'none'}`,
      );
    }
    if (pk(o.truncatedReads) || pk(o.tunWriteErrors))
      lines.push(`  TUN errors       ${pk(o.truncatedReads)} reads cut short by a slot, ${pk(o.tunWriteErrors)} writes refused`);
  }
  return lines.join('\n') + '\n';
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { healthz: { type: 'string', default: '127.0.0.1:9090' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const target = values.healthz!;
  if (!/^[^\s/]+:\d{1,5}$/.test(target)) throw new Error(`--healthz "${target}" must be ADDR:PORT`);
  let res;
  try {
    res = await get(`http://${target}/status`, 3000);
  } catch (e) {
    throw new Error(`no weft daemon answering on ${target} (${(e as Error).message}); is it running, and with this --healthz-port?`, { cause: e });
  }
  if (res.status !== 200) throw new Error(`${target}/status answered HTTP ${res.status}`);
  if (values.json) {
    process.stdout.write(res.body);
    return 0;
  }
  process.stdout.write(formatDaemonStatus(JSON.parse(res.body) as DaemonStatus));
  return 0;
}
