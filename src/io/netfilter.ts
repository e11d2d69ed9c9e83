// Thin async wrappers around the netfilter tools (iptables, iptables-restore, nft), for the
// daemon's masquerade and forward rules. execFile, never a shell: rule arguments go to the tool
// as separate argv entries (or as a script on stdin), so nothing in them is interpreted twice.
// Every call is bounded: a tool stuck on another program's xtables lock must not hang the daemon.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';

export type NetfilterTool = 'iptables' | 'iptables-restore' | 'nft';

/** A failed run of a netfilter tool; the message carries the command line and the tool's stderr. */
export class NetfilterCommandError extends Error {
  constructor(
    message: string,
    readonly tool: NetfilterTool,
    readonly argv: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = 'NetfilterCommandError';
  }
}

/** The tool is not installed here (no binary in the usual places nor on PATH). */
export class NetfilterMissingError extends Error {
  constructor(readonly tool: NetfilterTool) {
    super(`${tool} not found (looked in /usr/sbin, /sbin, /usr/bin, /bin and PATH): install Debian's ${tool === 'nft' ? 'nftables' : 'iptables'} package`);
    this.name = 'NetfilterMissingError';
  }
}

export interface NetfilterOptions {
  /** Written to the tool's stdin (iptables-restore and `nft -f -` read their rules there). */
  input?: string;
  /** Kill the tool after this long (default 15 s). */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 15_000;
const paths = new Map<NetfilterTool, string | null>();

// Debian puts iptables and nft in /usr/sbin; a service unit or a non-login root shell may have a
// PATH without sbin, so look in the usual places before searching PATH.
function binary(tool: NetfilterTool): string | null {
  if (!paths.has(tool)) {
    const dirs = ['/usr/sbin', '/sbin', '/usr/bin', '/bin', ...(process.env.PATH ?? '').split(':').filter(Boolean)];
    paths.set(tool, dirs.map((d) => `${d}/${tool}`).find((p) => fs.existsSync(p)) ?? null);
  }
  return paths.get(tool)!;
}

/** Whether TOOL is installed. */
export function netfilterAvailable(tool: NetfilterTool): boolean {
  return binary(tool) !== null;
}

/**
 * Runs TOOL ARGS... and resolves with its stdout. iptables gets `-w` from the callers: with the
 * legacy backend it waits for the xtables lock instead of failing while another program holds it.
 */
export function netfilter(tool: NetfilterTool, args: readonly string[], opts: NetfilterOptions = {}): Promise<string> {
  const bin = binary(tool);
  if (bin === null) return Promise.reject(new NetfilterMissingError(tool));
  return new Promise((resolve, reject) => {
    const child = execFile(
      bin,
      [...args],
      { maxBuffer: 16 << 20, encoding: 'utf8', timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (!err) {
          resolve(stdout);
          return;
        }
        const cmd = [tool, ...args].join(' ');
        const detail = err.killed ? `no answer within ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms (killed)` : stderr.trim() || err.message;
        const exitCode = typeof err.code === 'number' ? err.code : null;
        reject(new NetfilterCommandError(`${cmd}: ${detail}`, tool, args, stderr, exitCode));
      },
    );
    // A tool that exits before reading all of stdin makes the write fail with EPIPE; its exit
    // status (reported above) says why.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}
