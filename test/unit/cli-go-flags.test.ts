// flanneld's flag conventions over parseArgs (src/cli/go-flags.ts): Go booleans (--flag=false),
// -single-dash names, FLANNELD_* variables (a flag on the command line wins; one value for a
// repeatable flag), and one-line refusals naming the flag or the variable.
import { describe, expect, it } from 'vitest';
import { DAEMON_FLAGS_ENV, DAEMON_OPTIONS } from '../../src/cli/daemon';
import { etcdOptionsFrom } from '../../src/cli/etcd-flags';
import { blameEnv, envName, goFlagsInput, parseGoBool, parseGoFlags, unknownEnv } from '../../src/cli/go-flags';

const OPTIONS = {
  control: { type: 'string' },
  iface: { type: 'string', multiple: true },
  'iface-regex': { type: 'string', multiple: true },
  'healthz-port': { type: 'string' },
  'subnet-file': { type: 'string', default: '/run/flannel/subnet.env' },
  'ip-masq': { type: 'boolean', default: false },
  // As the other helper's --iptables-forward-rules: a boolean that is on unless turned off.
  'iptables-forward-rules': { type: 'boolean', default: true },
  'etcd-password': { type: 'string' },
  version: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseGoFlags(argv, OPTIONS, { envPrefix: 'FLANNELD', env, notFromEnv: ['help', 'version'] });
const refusal = (argv: string[], env: NodeJS.ProcessEnv = {}): string => {
  try {
    parse(argv, env);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(argv)} ${JSON.stringify(env)}`);
};

describe('Go booleans', () => {
  it("accepts strconv.ParseBool's spellings and nothing else", () => {
    for (const t of ['1', 't', 'T', 'true', 'TRUE', 'True']) expect(parseGoBool(t)).toBe(true);
    for (const f of ['0', 'f', 'F', 'false', 'FALSE', 'False']) expect(parseGoBool(f)).toBe(false);
    for (const bad of ['', 'yes', 'no', 'on', 'tRuE', ' true', '2']) expect(parseGoBool(bad)).toBeUndefined();
  });

  it('--flag, --flag=true and --flag=false on the command line; the last one wins', () => {
    expect(parse([]).values['ip-masq']).toBe(false);
    expect(parse(['--ip-masq']).values['ip-masq']).toBe(true);
    expect(parse(['--ip-masq=true']).values['ip-masq']).toBe(true);
    expect(parse(['--ip-masq=1']).values['ip-masq']).toBe(true);
    expect(parse(['--ip-masq=false']).values['ip-masq']).toBe(false);
    expect(parse(['--ip-masq', '--ip-masq=false']).values['ip-masq']).toBe(false);
    expect(parse(['--ip-masq=false', '--ip-masq']).values['ip-masq']).toBe(true);
  });

  it('turns a default-true boolean off with =false, and leaves it on otherwise', () => {
    expect(parse([]).values['iptables-forward-rules']).toBe(true);
    expect(parse(['--iptables-forward-rules=false']).values['iptables-forward-rules']).toBe(false);
    expect(parse(['-iptables-forward-rules=0']).values['iptables-forward-rules']).toBe(false);
    expect(parse(['--iptables-forward-rules']).values['iptables-forward-rules']).toBe(true);
    expect(parse([], { FLANNELD_IPTABLES_FORWARD_RULES: 'false' }).values['iptables-forward-rules']).toBe(false);
    expect(parse(['--iptables-forward-rules=true'], { FLANNELD_IPTABLES_FORWARD_RULES: 'false' }).values['iptables-forward-rules']).toBe(true);
  });

  it('never takes the next argument as a boolean value (Go does not): a stray "false" is refused', () => {
    expect(refusal(['--ip-masq', 'false'])).toMatch(/Unexpected argument 'false'/);
  });

  it('refuses a value that is not a boolean in one line naming the flag or the variable', () => {
    expect(refusal(['--ip-masq=yes'])).toBe('--ip-masq: "yes" is not a boolean (true or false)');
    expect(refusal([], { FLANNELD_IP_MASQ: 'on' })).toBe('FLANNELD_IP_MASQ: "on" is not a boolean (true or false, 1 or 0)');
    expect(refusal(['--ip-masq=' + 'x'.repeat(500)])).toMatch(/^--ip-masq: "x{64}"… \(500 characters\) is not a boolean/);
  });
});

describe('Go flag syntax', () => {
  it('takes -name as --name, with the value after a space or an =', () => {
    const { values } = parse(['-control', '10.0.0.1:7000', '-iface=eth1', '--iface', 'eth2', '-healthz-port=0', '-ip-masq']);
    expect(values).toMatchObject({ control: '10.0.0.1:7000', iface: ['eth1', 'eth2'], 'healthz-port': '0', 'ip-masq': true });
  });

  it('takes the argument after a string flag as its value even when it starts with a dash, as Go does', () => {
    expect(parse(['--etcd-password', '-s3cret-', '--control', 'x:1']).values).toMatchObject({ 'etcd-password': '-s3cret-', control: 'x:1' });
  });

  it('keeps parseArgs refusals: unknown flags, a missing value, -h', () => {
    expect(refusal(['--frobnicate'])).toMatch(/Unknown option '--frobnicate'/);
    expect(refusal(['-frobnicate=1'])).toMatch(/Unknown option/);
    expect(refusal(['--control'])).toMatch(/argument missing/);
    expect(parse(['-h']).values.help).toBe(true);
  });
});

describe('FLANNELD_* variables', () => {
  it('names the variable as flagutil.SetFlagsFromEnv does', () => {
    expect(envName('FLANNELD', 'iface-can-reach')).toBe('FLANNELD_IFACE_CAN_REACH');
    expect(envName('FLANNELD', 'public-ip')).toBe('FLANNELD_PUBLIC_IP');
  });

  it('fills a flag not on the command line; a flag on the command line wins; an empty variable is unset', () => {
    const env = { FLANNELD_CONTROL: '10.0.0.1:7000', FLANNELD_HEALTHZ_PORT: '9091', FLANNELD_SUBNET_FILE: '' };
    const a = parse([], env);
    expect(a.values).toMatchObject({ control: '10.0.0.1:7000', 'healthz-port': '9091', 'subnet-file': '/run/flannel/subnet.env' });
    expect(a.fromEnv).toEqual(
      new Map([
        ['control', 'FLANNELD_CONTROL'],
        ['healthz-port', 'FLANNELD_HEALTHZ_PORT'],
      ]),
    );
    const b = parse(['--control=10.9.9.9:1'], env);
    expect(b.values.control).toBe('10.9.9.9:1');
    expect(b.fromEnv.has('control')).toBe(false);
  });

  it('gives a repeatable flag exactly one value, and none when the command line gave it', () => {
    expect(parse([], { FLANNELD_IFACE: 'eth1' }).values.iface).toEqual(['eth1']);
    // One flag.Set call for the whole value: no splitting on commas.
    expect(parse([], { FLANNELD_IFACE: 'eth1,eth2' }).values.iface).toEqual(['eth1,eth2']);
    expect(parse(['--iface', 'eth3', '--iface', 'eth4'], { FLANNELD_IFACE: 'eth1' }).values.iface).toEqual(['eth3', 'eth4']);
    // Another repeatable flag on the command line does not stop it.
    expect(parse(['--iface-regex', '^e'], { FLANNELD_IFACE: 'eth1' }).values).toMatchObject({ iface: ['eth1'], 'iface-regex': ['^e'] });
  });

  it('reads booleans as Go does and never --help or --version', () => {
    expect(parse([], { FLANNELD_IP_MASQ: 'true' }).values['ip-masq']).toBe(true);
    expect(parse([], { FLANNELD_IP_MASQ: '1' }).values['ip-masq']).toBe(true);
    expect(parse([], { FLANNELD_IP_MASQ: '0' }).values['ip-masq']).toBe(false);
    expect(parse(['--ip-masq=false'], { FLANNELD_IP_MASQ: 'true' }).values['ip-masq']).toBe(false);
    const v = parse([], { FLANNELD_VERSION: 'true', FLANNELD_HELP: '1' }).values;
    expect(v.version).toBeUndefined();
    expect(v.help).toBeUndefined();
  });

  it('does not change the options table it was given', () => {
    const before = JSON.stringify(OPTIONS);
    goFlagsInput(['--ip-masq=false'], OPTIONS, { envPrefix: 'FLANNELD', env: { FLANNELD_IFACE: 'eth0' } });
    expect(JSON.stringify(OPTIONS)).toBe(before);
  });

  it('lists FLANNELD_ variables that name no flag', () => {
    const env = { FLANNELD_IFACE: 'x', FLANNELD_KUBE_SUBNET_MGR: 'true', FLANNELD_VERSION: '1', PATH: '/bin' };
    expect(unknownEnv(OPTIONS, { envPrefix: 'FLANNELD', env })).toEqual(['FLANNELD_KUBE_SUBNET_MGR']);
  });

  it("names the variable in a later check's refusal of its value, without repeating the value", () => {
    const { fromEnv } = parse([], { FLANNELD_HEALTHZ_PORT: '99999', FLANNELD_ETCD_PASSWORD: 'pw' });
    const e = blameEnv(new Error('--healthz-port: "99999" is not a port number'), fromEnv) as Error;
    expect(e.message).toBe('--healthz-port: "99999" is not a port number (--healthz-port from FLANNELD_HEALTHZ_PORT)');
    const both = blameEnv(new Error('give --etcd-password or --etcd-password-file, not both'), fromEnv) as Error;
    expect(both.message).toBe('give --etcd-password or --etcd-password-file, not both (--etcd-password from FLANNELD_ETCD_PASSWORD)');
    // A flag whose name is a prefix of the one named is not blamed.
    const other = new Error('--healthz-port-x is wrong');
    expect(blameEnv(other, fromEnv)).toBe(other);
  });
});

describe("weft daemon's table", () => {
  const daemon = (argv: string[], env: NodeJS.ProcessEnv) => parseGoFlags(argv, DAEMON_OPTIONS, { ...DAEMON_FLAGS_ENV, env });

  it('reads every flag but --help and --version from its FLANNELD_ variable', () => {
    for (const [name, opt] of Object.entries(DAEMON_OPTIONS)) {
      const key = envName('FLANNELD', name);
      const { values, fromEnv } = daemon([], { [key]: opt.type === 'boolean' ? 'true' : 'x' });
      const got = (values as Record<string, unknown>)[name];
      if (name === 'help' || name === 'version') expect(got, key).toBeUndefined();
      else {
        expect(got, key).toEqual(opt.type === 'boolean' ? true : 'multiple' in opt ? ['x'] : 'x');
        expect(fromEnv.get(name)).toBe(key);
      }
    }
  });

  it("takes flanneld's FLANNELD_ETCD_USERNAME/_PASSWORD, ahead of WEFT_ETCD_*, behind the command line", () => {
    const env = { FLANNELD_ETCD_USERNAME: 'flannel', FLANNELD_ETCD_PASSWORD: 'fl-pw', WEFT_ETCD_USERNAME: 'weft', WEFT_ETCD_PASSWORD: 'weft-pw' };
    const a = daemon(['--etcd-endpoints', 'http://127.0.0.1:2379'], env);
    expect(etcdOptionsFrom(a.values, env)?.auth).toEqual({ username: 'flannel', password: 'fl-pw' });
    const b = daemon(['--etcd-endpoints', 'http://127.0.0.1:2379', '--etcd-username', 'cli'], env);
    expect(etcdOptionsFrom(b.values, env)?.auth).toEqual({ username: 'cli', password: 'fl-pw' });
    const weftOnly = { WEFT_ETCD_USERNAME: 'weft', WEFT_ETCD_PASSWORD: 'weft-pw' };
    const c = daemon(['--etcd-endpoints', 'http://127.0.0.1:2379'], weftOnly);
    expect(etcdOptionsFrom(c.values, weftOnly)?.auth).toEqual({ username: 'weft', password: 'weft-pw' });
  });
});
