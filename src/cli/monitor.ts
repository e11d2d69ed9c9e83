// `weft monitor`: attach to a running daemon's monitor socket and print its packet events as
// they happen. The daemon does the filtering, sampling and explaining (datapath/monitor.ts);
// this sends the request and prints what comes back.
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { DEFAULT_MONITOR_RATE, formatMonitorEvent, MAX_MONITOR_RATE, parseMonitorRequest, type MonitorEvent, type MonitorRequest } from '../datapath/monitor';
import { DEFAULT_MONITOR_SOCKET } from '../daemon/monitor-server';
import { intFlag } from './topology-flags';

export const MONITOR_FLAGS_HELP = `  --type drop|trace|all   drops (default), traces of live packets, or both
  --src CIDR|IP           the pod packet's source inside this
  --dst CIDR|IP           its destination inside this
  --proto icmp|tcp|udp|N  its IP protocol
  --peer IP               the node (public IP) it came from or is routed to
  --rate N                at most N events a second (default ${DEFAULT_MONITOR_RATE}, up to ${MAX_MONITOR_RATE}); the rest are
                          counted and reported as skipped, once a second
  --count N               exit after N drop or trace events
  --json                  one JSON object a line, as the daemon sends them
`;

const HELP = `usage: weft monitor [--socket PATH] [filters] [--json] [--count N]

Attaches to the weft daemon on this machine and prints what its datapath does to packets, one
event a line as it happens: a drop with its reason and the packet (src → dst, protocol, ports or
ICMP type, length, direction, peer); a trace with the decisions \`weft trace\` prints, for live
packets. The daemon samples: at most --rate events a second per monitor, and it says how many it
skipped; a monitor that does not keep up loses events, never slows forwarding. Root only.

  --socket PATH           the daemon's --monitor-socket (default ${DEFAULT_MONITOR_SOCKET})
${MONITOR_FLAGS_HELP}`;

export const MONITOR_OPTIONS = {
  type: { type: 'string' },
  src: { type: 'string' },
  dst: { type: 'string' },
  proto: { type: 'string' },
  peer: { type: 'string' },
  rate: { type: 'string' },
  count: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

export interface MonitorRun {
  request: MonitorRequest;
  json: boolean;
  count?: number;
}

/** The monitor flags as a request, checked here as the daemon will check them (one line on error). */
export function monitorRunFromFlags(v: { [K in keyof typeof MONITOR_OPTIONS]?: string | boolean }): MonitorRun {
  const str = (k: keyof typeof MONITOR_OPTIONS) => (typeof v[k] === 'string' ? v[k] : undefined);
  const request: MonitorRequest = { type: str('type'), src: str('src'), dst: str('dst'), proto: str('proto'), peer: str('peer'), rate: str('rate') };
  parseMonitorRequest(request);
  return { request, json: v.json === true, count: intFlag('count', str('count'), 1, Number.MAX_SAFE_INTEGER) };
}

/**
 * Connect, ask, print until the daemon goes away, Ctrl-C, or --count events. Returns the exit
 * code: 0 after --count or Ctrl-C, 1 when the daemon refused or closed the connection.
 */
export function attach(path: string, run: MonitorRun, out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let seen = 0;
    let buffered = '';
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      process.off('SIGINT', onSig);
      sock.destroy();
      resolve(code);
    };
    const onSig = () => finish(0);
    process.on('SIGINT', onSig);
    sock.once('connect', () => sock.write(JSON.stringify(run.request) + '\n'));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (done) return;
      done = true;
      process.off('SIGINT', onSig);
      const why =
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? `no weft daemon is listening on ${path} (is it running? started with another --monitor-socket?)`
          : e.code === 'EACCES' || e.code === 'EPERM'
            ? `${path}: permission denied (the monitor socket is root-only)`
            : `${path}: ${e.message}`;
      reject(new Error(why));
    });
    sock.on('data', (chunk) => {
      buffered += chunk.toString('utf8');
      let nl: number;
      while (!done && (nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let ev: MonitorEvent;
        try {
          ev = JSON.parse(line) as MonitorEvent;
        } catch {
          continue;
        }
        if (ev.type === 'error') {
          process.stderr.write(`weft monitor: the daemon refused: ${ev.message}\n`);
          finish(1);
          return;
        }
        out(run.json ? line + '\n' : formatMonitorEvent(ev) + '\n');
        if ((ev.type === 'drop' || ev.type === 'trace') && run.count !== undefined && ++seen >= run.count) finish(0);
      }
    });
    sock.on('close', () => {
      if (done) return;
      process.stderr.write(`weft monitor: the daemon closed the connection (stopped?)\n`);
      finish(1);
    });
  });
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { socket: { type: 'string', default: DEFAULT_MONITOR_SOCKET }, ...MONITOR_OPTIONS, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  return attach(values.socket, monitorRunFromFlags(values));
}
