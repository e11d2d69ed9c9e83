// weft-cni's commands (CNI spec 1.1.0 section 2; the reference behaviour is libcni's skel, whose
// checks and error codes these follow). Synchronous throughout: a runtime runs the plugin once
// per pod and waits for it, so there is nothing to overlap, and a plain call chain starts fastest.
import { spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseSubnetEnv, type SubnetEnv } from '../daemon/subnet-env';
import { buildDelegate, compareVersions, LATEST_VERSION, parseConf, peekVersion, podRange, SUPPORTED_VERSIONS, type WeftCniConf } from './config';
import { CNI_ERRORS, CniError, errorJson } from './errors';

type Json = Record<string, unknown>;
type Env = Record<string, string | undefined>;

export interface PluginOutcome {
  stdout: string;
  exitCode: number;
}

// Spec section 2: "Must start with an alphanumeric character, optionally followed by any
// combination of one or more alphanumeric characters, underscore, dot or hyphen." It names a
// file under dataDir, so this check is also what keeps it from naming any other file.
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
// Linux's dev_valid_name: at most 15 bytes, not "." or "..", no "/", ":" or whitespace.
const IFNAME_RE = /^[^\s/:]{1,15}$/;
// What may name a plugin binary looked up in CNI_PATH (no path separators).
const PLUGIN_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function needEnv(env: Env, names: readonly string[]): void {
  const missing = names.filter((n) => !env[n]);
  if (missing.length) throw new CniError(CNI_ERRORS.INVALID_ENV, `required environment variable${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not set`);
}

function containerId(env: Env): string {
  const id = env.CNI_CONTAINERID ?? '';
  if (!CONTAINER_ID_RE.test(id)) {
    throw new CniError(
      CNI_ERRORS.INVALID_ENV,
      `invalid CNI_CONTAINERID ${JSON.stringify(id)}`,
      'it must start with a letter or digit, then letters, digits, "_", "." or "-"',
    );
  }
  return id;
}

function ifname(env: Env): string {
  const n = env.CNI_IFNAME ?? '';
  if (!IFNAME_RE.test(n) || n === '.' || n === '..')
    throw new CniError(CNI_ERRORS.INVALID_ENV, `invalid CNI_IFNAME ${JSON.stringify(n)}`, 'not a Linux interface name');
  return n;
}

function needVersion(conf: WeftCniConf, min: string, command: string): void {
  if (compareVersions(conf.cniVersion, min) < 0) {
    throw new CniError(
      CNI_ERRORS.INCOMPATIBLE_VERSION,
      `config version does not allow ${command}`,
      `${command} needs cniVersion ${min} or later, config is "${conf.cniVersion}"`,
    );
  }
}

function loadSubnetEnv(file: string, missingCode: number = CNI_ERRORS.TRY_AGAIN_LATER): SubnetEnv {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new CniError(missingCode, `${file} not found`, 'weft daemon writes it once it holds a lease for this node; is it running with this --subnet-file?');
    }
    throw new CniError(CNI_ERRORS.BAD_SUBNET_ENV, `cannot read ${file}`, (e as Error).message);
  }
  try {
    const env = parseSubnetEnv(text);
    podRange(env); // a bad FLANNEL_SUBNET is refused here, not by host-local later
    return env;
  } catch (e) {
    throw new CniError(missingCode === CNI_ERRORS.NOT_AVAILABLE ? missingCode : CNI_ERRORS.BAD_SUBNET_ENV, `cannot use ${file}`, (e as Error).message);
  }
}

// ---- saved delegate configs: <dataDir>/<containerID>@<ifname> ----
// flannel keys by container ID alone; the spec lets one container join a network more than once
// under different interface names, so the name is part of the key. "@" cannot occur in a
// container ID, so the key splits back unambiguously (GC reads it).

function savedPath(dataDir: string, id: string, ifn: string): string {
  return join(dataDir, `${id}@${ifn}`);
}

function save(file: string, dataDir: string, data: string): void {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    // Written whole then renamed, and synced: DEL must find either nothing or the full config.
    const tmp = `${file}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    throw new CniError(CNI_ERRORS.STATE_IO, `cannot save the delegate config at ${file}`, (e as Error).message);
  }
}

/** The saved delegate config, or null when there is none (never added, or already deleted). */
function load(file: string): Json | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CniError(CNI_ERRORS.STATE_IO, `cannot read the saved delegate config ${file}`, (e as Error).message);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && typeof (v as Json).type === 'string') return v as Json;
  } catch {
    /* fall through */
  }
  throw new CniError(CNI_ERRORS.STATE_IO, `the saved delegate config ${file} is not a plugin config`, 'remove it by hand if the attachment is gone');
}

function remove(file: string): void {
  try {
    unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CniError(CNI_ERRORS.STATE_IO, `cannot remove ${file}`, (e as Error).message);
  }
}

// ---- delegation (spec section 4) ----

function findPlugin(type: string, cniPath: string | undefined): string {
  if (!PLUGIN_TYPE_RE.test(type)) throw new CniError(CNI_ERRORS.INVALID_CONFIG, `invalid delegate type ${JSON.stringify(type)}`);
  if (!cniPath) throw new CniError(CNI_ERRORS.INVALID_ENV, 'required environment variable CNI_PATH not set', `needed to find the delegate plugin "${type}"`);
  const dirs = cniPath.split(':').filter(Boolean);
  for (const dir of dirs) {
    const file = join(dir, type);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      /* not here (or not executable): next directory */
    }
  }
  throw new CniError(CNI_ERRORS.DELEGATE_FAILED, `delegate plugin "${type}" not found in CNI_PATH`, `searched ${dirs.join(', ')}`);
}

/**
 * Runs the delegate with the same environment (CNI_COMMAND replaced) and `config` on stdin; its
 * stderr goes to ours, as the spec asks. Its error result comes back as ours with its code.
 */
function delegate(command: string, config: Json, env: Env, extraEnv: Env = {}): string {
  const type = String(config.type);
  const file = findPlugin(type, env.CNI_PATH);
  const r = spawnSync(file, [], {
    input: JSON.stringify(config),
    env: { ...env, ...extraEnv, CNI_COMMAND: command },
    stdio: ['pipe', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  if (r.error) throw new CniError(CNI_ERRORS.DELEGATE_FAILED, `cannot run delegate plugin ${file}`, r.error.message);
  if (r.status === 0) return r.stdout;
  let e: { code?: unknown; msg?: unknown; details?: unknown } | undefined;
  try {
    e = JSON.parse(r.stdout) as typeof e;
  } catch {
    /* not an error result */
  }
  const how = r.status === null ? `killed by ${r.signal}` : `exit ${r.status}`;
  if (e && typeof e.code === 'number') {
    throw new CniError(
      e.code,
      `delegate ${type} ${command}: ${typeof e.msg === 'string' ? e.msg : JSON.stringify(e.msg)}`,
      typeof e.details === 'string' ? e.details : '',
    );
  }
  throw new CniError(CNI_ERRORS.DELEGATE_FAILED, `delegate ${type} ${command} failed (${how})`, r.stdout.trim());
}

/** Whether the delegate speaks cniVersion `v` (its VERSION answer), for commands only 1.1.0 has. */
function delegateSpeaks(type: string, v: string, env: Env): boolean {
  try {
    const out = delegate('VERSION', { cniVersion: v, type }, env);
    const versions = (JSON.parse(out) as { supportedVersions?: unknown }).supportedVersions;
    return Array.isArray(versions) && versions.includes(v);
  } catch {
    return false;
  }
}

/** The saved config with what this call's input adds for the delegate (spec section 3). */
function withCallInputs(saved: Json, conf: WeftCniConf): Json {
  const out: Json = { ...saved };
  if (conf.runtimeConfig) out.runtimeConfig = conf.runtimeConfig;
  if (conf.prevResult !== undefined) out.prevResult = conf.prevResult;
  return out;
}

// ---- commands ----

function cmdAdd(conf: WeftCniConf, env: Env): string {
  needEnv(env, ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']);
  const id = containerId(env);
  const ifn = ifname(env);
  const config = buildDelegate(conf, loadSubnetEnv(conf.subnetFile));
  findPlugin(String(config.type), env.CNI_PATH); // before anything is saved: nothing to undo if absent
  // A chained plugin before us would hand a prevResult; the delegate passes it on (spec: ADD
  // "MUST handle prevResult by either passing it through, or modifying it").
  if (conf.prevResult !== undefined) config.prevResult = conf.prevResult;
  const file = savedPath(conf.dataDir, id, ifn);
  save(file, conf.dataDir, JSON.stringify(config));
  try {
    return delegate('ADD', config, env);
  } catch (e) {
    // Spec section 4: "If, on ADD, a delegated plugin fails, the upper plugin should execute
    // again with DEL before returning failure." Then nothing is left to delete.
    try {
      delegate('DEL', config, env);
      remove(file);
    } catch {
      /* the ADD error is the one to report; the saved config stays for the runtime's DEL */
    }
    throw e;
  }
}

function cmdDel(conf: WeftCniConf, env: Env): string {
  needEnv(env, ['CNI_CONTAINERID', 'CNI_IFNAME']);
  const file = savedPath(conf.dataDir, containerId(env), ifname(env));
  const saved = load(file);
  // Spec: DEL "must ... return success if the interface in question, or any modifications added,
  // are missing". Nothing saved means nothing added; subnet.env is not needed for that.
  if (!saved) return '';
  delegate('DEL', withCallInputs(saved, conf), env);
  remove(file);
  return '';
}

function cmdCheck(conf: WeftCniConf, env: Env): string {
  needVersion(conf, '0.4.0', 'CHECK');
  needEnv(env, ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']);
  const id = containerId(env);
  const ifn = ifname(env);
  // Spec: "A runtime must include a prevResult ... containing the Result of the immediately
  // preceding ADD"; the delegate needs it to know what to check.
  if (conf.prevResult === undefined) throw new CniError(CNI_ERRORS.INVALID_CONFIG, 'CHECK needs "prevResult", the result of the ADD');
  const saved = load(savedPath(conf.dataDir, id, ifn));
  if (!saved) throw new CniError(CNI_ERRORS.UNKNOWN_CONTAINER, `no attachment ${id} ${ifn} in ${conf.dataDir}`, 'it was never added, or was deleted');
  // The daemon is a dependency of the pod's connectivity (spec: CHECK "should return an error if
  // ... external dependencies such as a daemon required for connectivity are missing"): its
  // subnet.env must be there and still name the lease the pod's address came from.
  const now = podRange(loadSubnetEnv(conf.subnetFile));
  const ranges = (saved.ipam as { ranges?: { subnet?: string }[][] } | undefined)?.ranges;
  const then = ranges?.[0]?.[0]?.subnet;
  if (then !== now) {
    throw new CniError(CNI_ERRORS.SUBNET_CHANGED, `the node's subnet is ${now}, the pod's address is from ${String(then)}`, 'the pod needs to be re-created');
  }
  delegate('CHECK', withCallInputs(saved, conf), env);
  return '';
}

function cmdStatus(conf: WeftCniConf, env: Env): string {
  needVersion(conf, '1.1.0', 'STATUS');
  // Ready to ADD once weft daemon has written the node's lease.
  const config = buildDelegate(conf, loadSubnetEnv(conf.subnetFile, CNI_ERRORS.NOT_AVAILABLE));
  // Spec: a plugin must forward STATUS to its delegate. A delegate that does not speak 1.1.0
  // (Debian 12's plugins stop at 1.0.0) has no STATUS to forward to.
  if (delegateSpeaks(String(config.type), conf.cniVersion, env)) delegate('STATUS', config, env);
  return '';
}

function cmdGc(conf: WeftCniConf, env: Env): string {
  needVersion(conf, '1.1.0', 'GC');
  needEnv(env, ['CNI_PATH']);
  const valid = conf.raw['cni.dev/valid-attachments'] ?? [];
  if (!Array.isArray(valid)) throw new CniError(CNI_ERRORS.INVALID_CONFIG, '"cni.dev/valid-attachments" must be an array');
  const keep = new Set(valid.map((a: { containerID?: unknown; ifname?: unknown } | null) => `${String(a?.containerID)}@${String(a?.ifname)}`));
  let names: string[] = [];
  try {
    names = readdirSync(conf.dataDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CniError(CNI_ERRORS.STATE_IO, `cannot list ${conf.dataDir}`, (e as Error).message);
  }
  // Stale attachments: their delegate is told DEL without a namespace (the spec lets GC assume
  // the namespace is gone), which releases host-local's address; errors are collected and the
  // rest still cleaned, as the spec asks of GC.
  const errors: string[] = [];
  for (const name of names) {
    const at = name.indexOf('@');
    if (at < 0 || name.endsWith('.tmp') || keep.has(name)) continue;
    const file = join(conf.dataDir, name);
    try {
      const saved = load(file);
      if (saved) delegate('DEL', saved, env, { CNI_CONTAINERID: name.slice(0, at), CNI_IFNAME: name.slice(at + 1), CNI_NETNS: '' });
      remove(file);
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message}`);
    }
  }
  // And GC forwarded to the delegate when it speaks 1.1.0 (and subnet.env says what it is).
  try {
    const config = buildDelegate(conf, loadSubnetEnv(conf.subnetFile));
    if (delegateSpeaks(String(config.type), conf.cniVersion, env)) delegate('GC', { ...config, 'cni.dev/valid-attachments': valid }, env);
  } catch (e) {
    errors.push((e as Error).message);
  }
  if (errors.length) throw new CniError(CNI_ERRORS.DELEGATE_FAILED, `GC left ${errors.length} thing(s) behind`, errors.join('; '));
  return '';
}

function cmdVersion(stdin: string): string {
  // Spec: cniVersion is "the value of cniVersion specified on input".
  return JSON.stringify({ cniVersion: peekVersion(stdin) ?? LATEST_VERSION, supportedVersions: SUPPORTED_VERSIONS }) + '\n';
}

const COMMANDS: Record<string, (conf: WeftCniConf, env: Env) => string> = {
  ADD: cmdAdd,
  DEL: cmdDel,
  CHECK: cmdCheck,
  STATUS: cmdStatus,
  GC: cmdGc,
};

/** One invocation: CNI_* in `env`, the config in `stdin`; what to print on stdout and the exit code. */
export function runPlugin(env: Env, stdin: string): PluginOutcome {
  const version = peekVersion(stdin);
  const errVersion = version && (SUPPORTED_VERSIONS as readonly string[]).includes(version) ? version : LATEST_VERSION;
  try {
    const command = env.CNI_COMMAND;
    if (!command)
      throw new CniError(CNI_ERRORS.INVALID_ENV, 'required environment variable CNI_COMMAND not set', 'weft-cni is a CNI plugin: a container runtime runs it');
    if (command === 'VERSION') return { stdout: cmdVersion(stdin), exitCode: 0 };
    const run = COMMANDS[command];
    if (!run)
      throw new CniError(CNI_ERRORS.INVALID_ENV, `unknown CNI_COMMAND: ${command}`, `weft-cni knows ${[...Object.keys(COMMANDS), 'VERSION'].join(', ')}`);
    const out = run(parseConf(stdin), env);
    return { stdout: out, exitCode: 0 };
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(999, 'internal error', e instanceof Error ? (e.stack ?? e.message) : String(e));
    return { stdout: errorJson(errVersion, err) + '\n', exitCode: 1 };
  }
}
