// weft-cni's entry point (bin/weft-cni): read the config from stdin, run the command named by
// CNI_COMMAND, print the result or the CNI error object on stdout and exit 0 or 1. Imports stay
// few and small (no gRPC, etcd or pino): a kubelet runs this once per pod and waits for it.
import { readFileSync, writeSync } from 'node:fs';
import { CNI_ERRORS, CniError, errorJson } from './errors';
import { LATEST_VERSION } from './config';
import { runPlugin } from './plugin';

function writeAll(text: string): void {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length;) off += writeSync(1, buf, off);
}

export function main(): void {
  let stdin: string;
  try {
    // VERSION (and STATUS from some runtimes) may come with no stdin at all.
    stdin = process.env.CNI_COMMAND === 'VERSION' && process.stdin.isTTY ? '' : readFileSync(0, 'utf8');
  } catch (e) {
    writeAll(errorJson(LATEST_VERSION, new CniError(CNI_ERRORS.IO, 'cannot read the network config from stdin', (e as Error).message)) + '\n');
    process.exitCode = 1;
    return;
  }
  const r = runPlugin(process.env, stdin);
  writeAll(r.stdout);
  process.exitCode = r.exitCode;
}
