// The daemon's end of `weft monitor`: a Unix socket (default /run/weft/monitor.sock) where a
// watcher says what it wants in one JSON line and then reads records, one JSON object a line
// (datapath/monitor.ts makes them). Nothing here runs on the per-packet path.
//
// Who may attach: whoever can connect(2) to the socket, i.e. whoever the file system lets in.
// The socket is created 0600 (under a umask of 0177, so there is no moment it is wider) in a
// directory made 0700 when the daemon creates it; the daemon runs as root, so only root gets
// in. The peer's uid is not checked with SO_PEERCRED: Node does not expose it, and the native
// addon would need a rebuild for one getsockopt. A directory that already exists keeps its mode
// (chmod'ing someone's /tmp would be worse), but the socket's own 0600 still stands.

import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import { dirname } from 'node:path';
import { describeFilter, parseMonitorRequest, type MonitorEvent, type MonitorRequest, type MonitorTap } from '../datapath/monitor';

export const DEFAULT_MONITOR_SOCKET = '/run/weft/monitor.sock';
/** A watcher has this long to send its request line. */
const REQUEST_TIMEOUT_MS = 5000;
/** A request line longer than this is not one. */
const MAX_REQUEST_BYTES = 4096;

export interface MonitorServerOptions {
  path: string;
  /** null: the node forwards nothing itself (host-gw); watchers are told `noDatapath`. */
  tap: MonitorTap | null;
  noDatapath?: string;
  /** The node as the hello record describes it (without `watching`). */
  hello: () => Omit<Extract<MonitorEvent, { type: 'hello' }>, 'type' | 'watching'>;
  log: { info(o: object, m: string): void; warn(o: object, m: string): void };
}

export class MonitorServer {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly opts: MonitorServerOptions) {}

  async start(): Promise<void> {
    const path = this.opts.path;
    const dir = dirname(path);
    const made = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (made !== undefined) await fs.chmod(dir, 0o700); // mkdir's mode is masked by the umask
    await this.removeStale(path);
    const server = net.createServer((s) => this.accept(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // bind(2) creates the file with 0777 & ~umask: narrow the umask around it so the socket is
      // never, even for an instant, connectable by others.
      const old = process.umask(0o177);
      try {
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(old);
      }
    });
    await fs.chmod(path, 0o600);
    server.on('error', (e) => this.opts.log.warn({ err: e.message }, 'monitor socket error'));
    this.opts.log.info({ path }, 'monitor socket listening (weft monitor)');
  }

  /** A socket file left by a daemon that died is removed; one a live daemon answers on is not. */
  private async removeStale(path: string): Promise<void> {
    const st = await fs.lstat(path).catch(() => undefined);
    if (!st) return;
    if (!st.isSocket()) throw new Error(`--monitor-socket: ${path} exists and is not a socket; remove it or choose another path`);
    const alive = await new Promise<boolean>((resolve) => {
      const c = net.connect(path);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (alive) throw new Error(`--monitor-socket: another process is listening on ${path} (another weft daemon?); give each its own path`);
    await fs.rm(path, { force: true });
  }

  private accept(s: net.Socket): void {
    this.sockets.add(s);
    let buffered = '';
    let watcher: ReturnType<MonitorTap['add']> | undefined;
    const timer = setTimeout(() => refuse('no request line within 5 s'), REQUEST_TIMEOUT_MS);
    timer.unref();
    const refuse = (message: string) => {
      clearTimeout(timer);
      s.end(JSON.stringify({ type: 'error', message } satisfies MonitorEvent) + '\n');
    };
    s.on('error', () => undefined); // a watcher going away mid-write is not the daemon's problem
    s.on('close', () => {
      clearTimeout(timer);
      this.sockets.delete(s);
      if (watcher && !(watcher instanceof Error)) this.opts.tap?.remove(watcher);
    });
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const nl = buffered.indexOf('\n');
      if (nl < 0) {
        if (buffered.length > MAX_REQUEST_BYTES) {
          s.off('data', onData);
          refuse('request line too long');
        }
        return;
      }
      s.off('data', onData);
      clearTimeout(timer);
      // From here on the watcher only reads; what it writes is ignored (and not buffered).
      s.on('data', () => undefined);
      let req: MonitorRequest;
      try {
        req = JSON.parse(buffered.slice(0, nl)) as MonitorRequest;
        if (typeof req !== 'object' || req === null) throw new Error('not a JSON object');
      } catch (e) {
        refuse(`bad request: ${(e as Error).message}`);
        return;
      }
      let filter;
      try {
        filter = parseMonitorRequest(req);
      } catch (e) {
        refuse((e as Error).message);
        return;
      }
      if (this.opts.tap === null) {
        refuse(this.opts.noDatapath ?? 'this node has no datapath to watch');
        return;
      }
      // The socket's own write buffer is the watcher's queue: MonitorTap stops writing to it
      // past MAX_PENDING_BYTES and counts what it could not write.
      watcher = this.opts.tap.add(filter, s);
      if (watcher instanceof Error) {
        refuse(watcher.message);
        return;
      }
      s.write(JSON.stringify({ type: 'hello', ...this.opts.hello(), watching: describeFilter(filter) } satisfies MonitorEvent) + '\n');
    };
    s.on('data', onData);
  }

  async stop(): Promise<void> {
    this.opts.tap?.close();
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    await fs.rm(this.opts.path, { force: true }).catch(() => undefined);
  }
}
