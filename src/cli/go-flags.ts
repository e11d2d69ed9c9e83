// flanneld's flag conventions on top of node:util parseArgs, generic over an options table, so a
// flanneld command line or DaemonSet environment works unchanged and every new flag gets them free:
//
// - Go's flag package takes `-name` as well as `--name`, and a boolean as `--name`,
//   `--name=true` or `--name=false` (strconv.ParseBool's spellings). parseArgs refuses
//   `--bool=false` and reads `-name` as a cluster of short options, so both are rewritten here
//   before parseArgs sees them. As in Go, a boolean never takes the next argument as its value
//   (`--ip-masq false` leaves "false" as a stray argument, refused), the last occurrence wins,
//   and a default-true boolean is turned off with `--name=false`.
// - flanneld calls coreos/pkg flagutil.SetFlagsFromEnv(flags, "FLANNELD") after parsing: every
//   flag not given on the command line takes the value of PREFIX_NAME (NAME upper-cased, `-` → `_`)
//   when that is set and not empty. One Set call per variable: a repeatable flag (--iface) gets
//   exactly one value from it, and none when the command line gave it at all.
//
// The result is parseArgs' own input (the rewritten argv, and the options table with defaults
// set from the booleans and the environment), so parseArgs still does the typing, the unknown
// option errors and the repeatable flags.
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { quote } from '../util/quote';

/** strconv.ParseBool's spellings: what flanneld accepts for a boolean flag or its variable. */
const GO_TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const GO_FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** A Go boolean, or undefined when `v` is not one. */
export function parseGoBool(v: string): boolean | undefined {
  if (GO_TRUE.has(v)) return true;
  if (GO_FALSE.has(v)) return false;
  return undefined;
}

/** The environment variable flanneld reads flag `name` from: FLANNELD_IFACE_REGEX for iface-regex. */
export function envName(prefix: string, name: string): string {
  return `${prefix}_${name.replace(/-/g, '_').toUpperCase()}`;
}

export interface GoFlagsOptions {
  /** Variable prefix, without the trailing `_` ("FLANNELD"). */
  envPrefix: string;
  env?: NodeJS.ProcessEnv;
  /** Flags never read from the environment (help, version: flanneld checks -version before it reads its variables). */
  notFromEnv?: readonly string[];
}

export interface GoFlagsInput<O extends ParseArgsOptionsConfig> {
  args: string[];
  options: O;
  /** Flags whose value came from the environment, with the variable that gave it. */
  fromEnv: Map<string, string>;
}

/**
 * argv and the environment as parseArgs input (see the file comment). Throws one line for a
 * boolean given a value that is not one.
 */
export function goFlagsInput<O extends ParseArgsOptionsConfig>(argv: readonly string[], options: O, o: GoFlagsOptions): GoFlagsInput<O> {
  const env = o.env ?? process.env;
  const args: string[] = [];
  const onCommandLine = new Set<string>();
  const booleans = new Map<string, boolean>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      args.push(...argv.slice(i));
      break;
    }
    // -name, --name, -name=V, --name=V; one-letter names are parseArgs' short options (-h).
    const m = /^--?([^-=][^=]+)(?:=([\s\S]*))?$/.exec(arg);
    const opt = m ? options[m[1]!] : undefined;
    if (!m || !opt) {
      args.push(arg);
      continue;
    }
    const name = m[1]!;
    const inline = m[2];
    onCommandLine.add(name);
    if (opt.type === 'boolean') {
      if (inline === undefined) booleans.set(name, true);
      else {
        const b = parseGoBool(inline);
        if (b === undefined) throw new Error(`--${name}: ${quote(inline)} is not a boolean (true or false)`);
        booleans.set(name, b);
      }
      continue;
    }
    if (inline !== undefined) {
      args.push(`--${name}=${inline}`);
      continue;
    }
    args.push(`--${name}`);
    // The next argument is the value whatever it looks like, as Go's flag package takes it
    // (--etcd-password -x); parseArgs would call a leading dash ambiguous, so pass it inline.
    if (i + 1 < argv.length) args[args.length - 1] = `--${name}=${argv[++i]!}`;
  }

  const adjusted: ParseArgsOptionsConfig = {};
  const fromEnv = new Map<string, string>();
  for (const [name, opt] of Object.entries(options)) {
    const next = { ...opt };
    adjusted[name] = next;
    let value = booleans.get(name);
    if (!onCommandLine.has(name) && !o.notFromEnv?.includes(name)) {
      const key = envName(o.envPrefix, name);
      const v = env[key];
      if (v !== undefined && v !== '') {
        fromEnv.set(name, key);
        if (opt.type === 'boolean') {
          value = parseGoBool(v);
          if (value === undefined) throw new Error(`${key}: ${quote(v)} is not a boolean (true or false, 1 or 0)`);
        } else {
          next.default = opt.multiple ? [v] : v;
        }
      }
    }
    if (value !== undefined) next.default = opt.multiple ? [value] : value;
  }
  return { args, options: adjusted as O, fromEnv };
}

/**
 * goFlagsInput, then parseArgs (strict, no positionals). The values are parseArgs' own; fromEnv
 * says which came from the environment, for blameEnv.
 */
export function parseGoFlags<O extends ParseArgsOptionsConfig>(argv: readonly string[], options: O, o: GoFlagsOptions) {
  const input = goFlagsInput(argv, options, o);
  const parsed = parseArgs({ args: input.args, options: input.options, strict: true, allowPositionals: false });
  return { values: parsed.values, fromEnv: input.fromEnv };
}

/**
 * `err` with the variables named that gave the flags its message names: a check written as
 * `--healthz-port: "x" is not a port number` says where the value came from when
 * FLANNELD_HEALTHZ_PORT gave it. Values are never repeated (a password may be one).
 */
export function blameEnv(err: unknown, fromEnv: ReadonlyMap<string, string>): unknown {
  if (!(err instanceof Error) || fromEnv.size === 0) return err;
  const named = [...fromEnv].filter(([flag]) => new RegExp(`--${flag}(?![\\w-])`).test(err.message)).map(([flag, key]) => `--${flag} from ${key}`);
  if (named.length === 0) return err;
  return new Error(`${err.message} (${named.join(', ')})`, { cause: err });
}

/**
 * PREFIX_* variables naming no flag in `options` (e.g. FLANNELD_KUBE_SUBNET_MGR for a flag weft
 * lacks): flanneld never looks at them either, but a drop-in says so rather than be silent.
 */
export function unknownEnv(options: ParseArgsOptionsConfig, o: GoFlagsOptions): string[] {
  const env = o.env ?? process.env;
  const known = new Set(Object.keys(options).map((n) => envName(o.envPrefix, n)));
  return Object.keys(env)
    .filter((k) => k.startsWith(`${o.envPrefix}_`) && !known.has(k))
    .sort();
}
