import * as http from 'node:http';

export interface HealthSource {
  /** Liveness: the process is serving and its datapath loop is running. */
  healthy(): boolean;
  /** Readiness: what is still missing before the node can carry pod traffic (empty when ready). */
  notReady(): string[];
  status(): unknown;
  /** The Prometheus exposition for /metrics (404 without). */
  metrics?(): Promise<{ contentType: string; body: string }>;
}

/**
 * flanneld's health endpoint, extended: /healthz (liveness), /readyz (lease, TUN, routes and
 * subnet file in place — what a CNI plugin needs before it can attach pods), /status (JSON),
 * /metrics (Prometheus).
 */
export function startHealthServer(host: string, port: number, src: HealthSource): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/healthz') {
      const ok = src.healthy();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ok\n' : 'datapath stopped\n');
    } else if (url === '/readyz') {
      const missing = src.notReady();
      res.writeHead(missing.length === 0 ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(missing.length === 0 ? 'ready\n' : `not ready: ${missing.join(', ')}\n`);
    } else if (url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(src.status(), null, 2) + '\n');
    } else if (url === '/metrics' && src.metrics) {
      src.metrics().then(
        (m) => {
          res.writeHead(200, { 'content-type': m.contentType });
          res.end(m.body);
        },
        (e: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics: ${e.message}\n`);
        },
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`healthz: cannot listen on ${host}:${port}: ${e.message}`)));
    server.listen(port, host, () => {
      const addr = server.address();
      resolve({
        port: typeof addr === 'object' && addr ? addr.port : port,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}
