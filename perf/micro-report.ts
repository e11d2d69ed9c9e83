// How a micro-benchmark states its result: the Markdown (first line: date, the exact command,
// the machine and the time budget, so a table is never separated from its conditions) and the
// JSON beside it in the output directory.
import { inspect } from 'node:util';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The command as typed, for the results' first line (arguments with shell metacharacters quoted). */
function commandLine(): string {
  const q = (a: string): string => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return ['node', path.relative(process.cwd(), process.argv[1]), ...process.argv.slice(2)].map(q).join(' ');
}

export interface MicroReport {
  /** File stem: NAME.md and NAME.json. */
  name: string;
  /** What was measured, first words of the first line ("Route lookups"). */
  title: string;
  msPerTask: number;
  table: string;
  /** How to read the table (what a call is, what ± and p99 mean). */
  legend: string;
  out: string;
  /** Fields for the JSON beside date, command and machine. */
  json: Record<string, unknown>;
}

export async function writeMicroReport(r: MicroReport): Promise<void> {
  const date = new Date().toISOString();
  const cpus = os.cpus();
  const cpuModel = cpus[0]?.model.trim() ?? null;
  const command = commandLine();
  const md = [
    `${r.title}, ${date.slice(0, 10)}, \`${command}\` (${cpus.length} CPUs, ${cpuModel ?? 'unknown CPU'}, Node ${process.version}, one thread, tinybench ${r.msPerTask} ms per task)`,
    '',
    r.table,
    '',
    r.legend,
  ].join('\n');
  process.stdout.write(md + '\n');
  await fs.mkdir(r.out, { recursive: true });
  await fs.writeFile(path.join(r.out, `${r.name}.md`), md + '\n');
  const json = { date, command, cpus: cpus.length, cpuModel, node: process.version, msPerTask: r.msPerTask, ...r.json };
  await fs.writeFile(path.join(r.out, `${r.name}.json`), JSON.stringify(json, null, 2) + '\n');
}

/** A task's error for a message: an Error's message, anything else as util.inspect shows it. */
export function describeError(e: unknown): string {
  return e instanceof Error ? e.message : inspect(e);
}
