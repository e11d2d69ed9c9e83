// Driving the compose lab (compose/docker-compose.yml) from tests, the way a user drives it: the
// engine from scripts/docker-engine.sh, the base image from scripts/docker-base.sh, and every
// step through the compose CLI (`docker compose` where the v2 plugin exists, else docker-compose
// v1, which is what Debian ships). All commands are bounded in time.
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');
export const COMPOSE_FILE = join(ROOT, 'compose', 'docker-compose.yml');
export const NODES = ['node1', 'node2', 'node3'] as const;

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a command to completion without blocking the event loop; kills it (and fails) after timeoutMs. */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + String(e), timedOut });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, timedOut });
    });
    if (child.stdin) {
      // A command that exits without reading its input must not become an EPIPE in the test.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/** Throws with the command's output unless it exited 0. */
export function check(what: string, r: Result): Result {
  if (r.code !== 0) {
    throw new Error(`${what} ${r.timedOut ? 'timed out' : `failed (exit ${r.code})`}:\n${(r.stderr + r.stdout).trim().split('\n').slice(-20).join('\n')}`);
  }
  return r;
}

/** `docker compose` (v2 plugin) if it answers, else docker-compose (v1). */
export function composeCommand(): string[] {
  const v2 = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8', timeout: 10_000 });
  if (v2.status === 0) return ['docker', 'compose'];
  return ['docker-compose'];
}

/** The state of the engine before the test: "running" (leave it) or "started" (ours to stop). */
export async function startEngine(): Promise<'running' | 'started'> {
  const r = check('scripts/docker-engine.sh start', await run('bash', [join(ROOT, 'scripts', 'docker-engine.sh'), 'start'], { timeoutMs: 300_000 }));
  const state = r.stdout.trim().split('\n').pop();
  if (state !== 'running' && state !== 'started') throw new Error(`scripts/docker-engine.sh start printed ${JSON.stringify(r.stdout)}`);
  return state;
}

export async function stopEngine(): Promise<Result> {
  return run('bash', [join(ROOT, 'scripts', 'docker-engine.sh'), 'stop'], { timeoutMs: 90_000 });
}

/** The base images compose/Dockerfile may build FROM: Node 24 either way. */
export const BASE_IMAGES = ['node:24-bookworm-slim', 'weft-base:bookworm-node24'] as const;

/** node:24-bookworm-slim when the engine has or can pull it, else the local weft-base:bookworm-node24. */
export async function baseImage(): Promise<string> {
  const r = check('scripts/docker-base.sh', await run('bash', [join(ROOT, 'scripts', 'docker-base.sh')], { timeoutMs: 300_000 }));
  return r.stdout.trim().split('\n').pop()!;
}

/** One compose project of the lab: a name of its own, its variables, and the CLI bound to both. */
export class ComposeLab {
  readonly cli: string[];

  constructor(
    readonly project: string,
    readonly env: NodeJS.ProcessEnv,
    cli = composeCommand(),
  ) {
    this.cli = cli;
  }

  compose(args: string[], timeoutMs = 60_000): Promise<Result> {
    const [cmd, ...pre] = this.cli;
    return run(cmd!, [...pre, '-f', COMPOSE_FILE, '-p', this.project, ...args], { env: this.env, timeoutMs });
  }

  /** `exec -T SERVICE ARGV...` (no TTY: the test has none). */
  exec(service: string, argv: string[], timeoutMs = 30_000): Promise<Result> {
    return this.compose(['exec', '-T', service, ...argv], timeoutMs);
  }

  async up(): Promise<void> {
    check(`compose up (${this.project})`, await this.compose(['up', '-d'], 120_000));
  }

  async down(): Promise<Result> {
    return this.compose(['down', '-v', '--remove-orphans', '--timeout', '10'], 120_000);
  }

  /** What Docker still holds for this project, by compose's project label. */
  async leftovers(): Promise<{ containers: string[]; networks: string[]; volumes: string[] }> {
    const label = `label=com.docker.compose.project=${this.project}`;
    const list = async (args: string[]) => {
      const r = check(`docker ${args.join(' ')}`, await run('docker', args, { timeoutMs: 30_000 }));
      return r.stdout.split('\n').filter((l) => l.trim() !== '');
    };
    return {
      containers: await list(['ps', '-a', '--filter', label, '--format', '{{.Names}}']),
      networks: await list(['network', 'ls', '--filter', label, '--format', '{{.Name}}']),
      volumes: await list(['volume', 'ls', '--filter', label, '--format', '{{.Name}}']),
    };
  }
}

/** The subset of weft daemon's /status the test reads. */
export interface NodeStatus {
  publicIp: string;
  backend: string;
  network: string;
  ready: boolean;
  lease: { subnet: string } | null;
  control: { target: string; watching: boolean };
  peers: { subnet: string; publicIp: string }[];
  counters: { txPackets: number; rxPackets: number; drops?: Record<string, number> };
}
