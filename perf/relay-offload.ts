// One TCP stream (iperf3) through a userspace relay between two TUN devices, with and without
// segmentation offload: the gain TUNSETOFFLOAD + split/coalesce gives the TUN half of weft's
// datapath, without the UDP half. Two namespaces A and B; a relay process in A opens both TUNs
// and moves one into B, then copies every packet read from one TUN to the other (batches of 64
// slots, as the datapath reads them). Needs root and iperf3.
//
//   npx tsc -p tsconfig.build.json && node dist/perf/relay-offload.js [--seconds 3]
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { PacketList } from '../src/io/packet-list';
import { TunDevice } from '../src/io/tun';

const ip = (...a: string[]): string => execFileSync('ip', a, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

// In namespace A: open both TUNs, move B's, relay until killed.
function child(nsB: string, offload: boolean): void {
  const a = TunDevice.open('wra', { offload });
  const b = TunDevice.open('wrb', { offload });
  ip('link', 'set', 'dev', 'wrb', 'netns', nsB);
  ip('link', 'set', 'lo', 'up');
  ip('addr', 'add', '10.90.0.1/24', 'dev', 'wra');
  ip('link', 'set', 'dev', 'wra', 'mtu', '1500', 'up');
  ip('-n', nsB, 'link', 'set', 'lo', 'up');
  ip('-n', nsB, 'addr', 'add', '10.90.0.2/24', 'dev', 'wrb');
  ip('-n', nsB, 'link', 'set', 'dev', 'wrb', 'mtu', '1500', 'up');
  const relay = (from: TunDevice, to: TunDevice): void => {
    const rx = new PacketList({ capacity: 64, slotSize: 2048, headroom: 64 });
    from.onReadable(() => {
      for (let round = 0; round < 8; round++) {
        const n = from.read(rx);
        if (n === 0) break;
        rx.count = n;
        to.write(rx);
      }
    });
  };
  relay(a, b);
  relay(b, a);
  process.on('SIGTERM', () => {
    console.log(JSON.stringify({ a: a.stats(), b: b.stats() }));
    process.exit(0);
  });
  console.log('ready');
}

async function run(seconds: number, offload: boolean): Promise<{ gbit: number; stats: unknown }> {
  const tag = randomBytes(3).toString('hex');
  const nsA = `weft-t-relay-a-${tag}`;
  const nsB = `weft-t-relay-b-${tag}`;
  ip('netns', 'add', nsA);
  ip('netns', 'add', nsB);
  let relay: ReturnType<typeof spawn> | undefined;
  let server: ReturnType<typeof spawn> | undefined;
  try {
    relay = spawn('ip', ['netns', 'exec', nsA, process.execPath, __filename, '--child', nsB, ...(offload ? ['--offload'] : [])], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    relay.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const t0 = Date.now();
    while (!out.includes('ready')) {
      if (Date.now() - t0 > 10_000) throw new Error('relay did not start');
      await new Promise((r) => setTimeout(r, 20));
    }
    server = spawn('ip', ['netns', 'exec', nsB, 'iperf3', '-s', '-1', '-B', '10.90.0.2'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 300));
    const res = JSON.parse(
      execFileSync('ip', ['netns', 'exec', nsA, 'iperf3', '-c', '10.90.0.2', '-t', String(seconds), '-J'], { timeout: (seconds + 20) * 1000 }).toString(),
    ) as { end: { sum_received: { bits_per_second: number } } };
    relay.kill('SIGTERM');
    await new Promise((r) => relay!.once('exit', r));
    const stats = JSON.parse(
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop() ?? '{}',
    ) as unknown;
    return { gbit: res.end.sum_received.bits_per_second / 1e9, stats };
  } finally {
    relay?.kill('SIGKILL');
    server?.kill('SIGKILL');
    for (const ns of [nsA, nsB]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '3' }, child: { type: 'string' }, offload: { type: 'boolean', default: false } },
  });
  if (values.child) {
    child(values.child, values.offload ?? false);
    return;
  }
  const seconds = Number(values.seconds);
  for (const offload of [false, true, false, true]) {
    const r = await run(seconds, offload);
    // Data flows A -> B: read (split) on A's TUN, written (coalesced) on B's.
    const st = r.stats as { a?: Record<string, number>; b?: Record<string, number> };
    const a = st.a ?? {};
    const b = st.b ?? {};
    console.log(
      `${offload ? 'offload' : 'plain  '}: ${r.gbit.toFixed(2)} Gbit/s` +
        (offload
          ? ` (${a.superRead} super-packets read -> ${a.segmentsOut} segments; ${b.coalescedWrites} coalesced writes of ${b.segmentsMerged} segments, ${b.plainWrites} plain)`
          : ''),
    );
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
