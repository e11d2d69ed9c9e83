// weft command-line entry: one sub-command per module, each exporting run(argv).
const COMMANDS: Record<string, () => Promise<{ run(argv: string[]): Promise<number | void> }>> = {
  daemon: () => import('./daemon'),
  control: () => import('./control'),
  lab: () => import('./lab'),
  wire: () => import('./wire'),
  status: () => import('./status'),
  trace: () => import('./trace'),
  monitor: () => import('./monitor'),
  replay: () => import('./replay'),
  bench: () => import('./bench'),
};

export const USAGE = `usage: weft <command> [flags]

  weft --version           print the version

commands:
  control   run the embedded control plane (gRPC lease registry)
  daemon    run the node data plane (TUN + encapsulation)
  lab       form a netns lab: up | demo | status | exec | monitor | down
  wire      show the bytes a backend puts on the wire for one packet (no root needed)
  status    what the daemon on this machine reports: lease, peers, counters
  trace     one packet through an offline node: every decision and the bytes out (no root needed)
  monitor   attach to the running daemon: its drops with their reason, and live packets' decisions
            as trace prints them, as they happen (--type drop|trace|all, --src, --dst, --proto,
            --peer, --json; root)
  replay    a pcap through an offline node's real datapath, what it sends written to a pcap (no root needed)
  bench     every data plane side by side on netns labs: throughput, packet rate, RTT, CPU, overhead; table + charts
`;

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    process.stdout.write(USAGE);
    process.exitCode = cmd ? 0 : 2;
    return;
  }
  if (cmd === '--version' || cmd === '-version') {
    // flanneld's -version: the version alone, exit 0 (flanneld writes it to stderr; stdout here,
    // so $(weft --version) holds it).
    const { packageVersion } = await import('../util/package-root');
    process.stdout.write(`${packageVersion()}\n`);
    return;
  }
  const load = COMMANDS[cmd];
  if (!load) {
    process.stderr.write(`weft: unknown command "${cmd}"\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  try {
    const mod = await load();
    const code = await mod.run(rest);
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    // Bad flags and config surface as one line naming the problem, not a stack trace.
    process.stderr.write(`weft ${cmd}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
