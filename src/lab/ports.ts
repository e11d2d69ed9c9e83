import * as net from 'node:net';

/**
 * `count` distinct free TCP ports on 127.0.0.1, for servers the tests and benchmarks start on
 * loopback (etcd members, weft control). All are held open at once so none is handed out twice;
 * the usual race remains (another process may take one between close and use), which is why
 * fixed ports such as etcd's 2379 are never used: a Debian etcd service may own them.
 */
export async function freeLoopbackPorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise<void>((res, rej) => {
        s.once('error', rej);
        s.listen(0, '127.0.0.1', () => res());
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

export async function freeLoopbackPort(): Promise<number> {
  return (await freeLoopbackPorts(1))[0];
}
