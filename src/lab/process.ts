// Child processes for the lab: every command is bounded by a timeout, output is captured with a
// cap, and long-lived programs (control, daemons) are started detached so they outlive the CLI.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes kept of each of stdout and stderr; the rest is dropped (a chatty command must not grow us without bound). */
  maxOutput?: number;
  /** Aborting kills the command (SIGKILL); it then resolves like a timeout. */
  signal?: AbortSignal;
  /** Called with stderr as it arrives (all of it so far), e.g. to see a capture start. */
  onStderr?: (soFar: string) => void;
}

export interface RunResult {
  /** Exit code; 128+N when killed by signal N (the shell's convention), 124 on timeout (timeout(1)'s). */
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export const DEFAULT_TIMEOUT_MS = 30_000;

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxOutput = opts.maxOutput ?? 4 << 20;
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const finish = (r: RunResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', kill);
      resolve(r);
    };
    const kill = (): void => {
      timedOut = true;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(kill, timeoutMs);
    if (opts.signal) {
      if (opts.signal.aborted) kill();
      else opts.signal.addEventListener('abort', kill, { once: true });
    }
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < maxOutput) stdout += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < maxOutput) stderr += d;
      opts.onStderr?.(stderr);
    });
    child.on('error', (err) => finish({ code: 127, stdout, stderr: stderr + String(err.message), timedOut }));
    child.on('close', (code, signal) => {
      let c = code ?? 0;
      if (timedOut) c = 124;
      else if (signal) c = 128 + (osConstants.signals[signal] ?? 0);
      finish({ code: c, stdout, stderr, timedOut });
    });
    if (opts.input !== undefined) {
      // A plugin that exits before reading stdin makes the write fail with EPIPE; its exit code tells the story.
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(opts.input);
    }
  });
}

export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly result: RunResult,
  ) {
    const why = result.timedOut ? 'timed out' : `exit ${result.code}`;
    const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-5).join(' | ');
    super(`\`${argv.join(' ')}\` ${why}${detail ? `: ${detail}` : ''}`);
  }
}

/** run() that throws unless the command exits 0. */
export async function mustRun(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new CommandError([cmd, ...args], r);
  return r;
}

/** Runs argv inside the named network namespace (ip netns exec execs in place, no extra process). */
export function nsRun(ns: string, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, ...argv], opts);
}

export function mustNsRun(ns: string, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return mustRun('ip', ['netns', 'exec', ns, ...argv], opts);
}

/**
 * Starts a long-lived program detached (own session, stdio to a log file, unref'd) so it keeps
 * running after the CLI that started it exits. Returns its pid.
 */
export function spawnDetached(argv: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', fd, fd], env });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => {
        child.unref();
        resolve(child.pid!);
      });
    });
  } finally {
    closeSync(fd);
  }
}

/** True while pid names a live process; a zombie (exited, not yet reaped) counts as gone. */
export function isAlive(pid: number | undefined | null): boolean {
  if (!pid || pid <= 0) return false;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // The state letter follows the parenthesised command name, which may itself contain ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((s) => s.length > 0);
  } catch {
    return [];
  }
}

/** Network-namespace identity of a process (e.g. "net:[4026532301]"), or null when it is gone. */
export function netnsOf(pid: number): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return null;
  }
}

/** Pids whose command line contains `needle` (used to find lab processes whose records were lost). */
export function pidsWithCmdline(needle: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    if (cmdline(pid).some((a) => a.includes(needle)) && isAlive(pid)) out.push(pid);
  }
  return out;
}

export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until none of pids is alive; returns the ones still alive at the deadline. */
export async function waitExit(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = pids.filter(isAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(50);
    alive = alive.filter(isAlive);
  }
  return alive;
}

/** SIGTERM, wait up to graceMs, then SIGKILL whatever is left. */
export async function terminate(pids: number[], graceMs: number, sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const live = pids.filter(isAlive);
  for (const p of live) signal(p, sig);
  const left = await waitExit(live, graceMs);
  for (const p of left) signal(p, 'SIGKILL');
  await waitExit(left, 2_000);
}

/** Last `lines` lines of a log file ('' when missing). */
export function tail(file: string, lines = 30): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
      .trimEnd();
  } catch {
    return '';
  }
}

/** Resident set size of a process in bytes (VmRSS in /proc/PID/status); 0 when it is gone. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}
