// The etcd flags shared by weft control and weft daemon: credentials come from --etcd-username
// with --etcd-password-file, --etcd-password or WEFT_ETCD_PASSWORD, never from the endpoint URL,
// and no refusal ever quotes a password back.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdOptionsFrom } from '../../src/cli/etcd-flags';
import { checkEndpoints } from '../../src/control/etcd/endpoints';
import { EtcdRegistry } from '../../src/control/etcd/registry';

const EP = 'http://127.0.0.1:2379';
const SECRET = 'Hunter2-s3cret';

/** The message etcdOptionsFrom throws (and fails the test when it does not throw). */
function refusal(values: Parameters<typeof etcdOptionsFrom>[0], env: NodeJS.ProcessEnv = {}): string {
  try {
    etcdOptionsFrom(values, env);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(Object.keys(values))}`);
}

describe('etcd credentials', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-etcd-flags-'));
  });
  afterAll(async () => {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('refuses a user or password in an endpoint URL without quoting the password', () => {
    for (const ep of [
      `http://root:${SECRET}@127.0.0.1:2379`,
      `http://127.0.0.1:2379,https://root:${SECRET}@10.0.0.1:2379`,
      `http://root@127.0.0.1:2379`,
      // Mistyped ones that do not even parse ('#' starts a fragment, '/' a path) still hold a secret.
      `http://root:${SECRET}#x@127.0.0.1:2379`,
      `http://root:${SECRET}/x@127.0.0.1:2379`,
      `root:${SECRET}@127.0.0.1:2379`,
    ]) {
      const msg = refusal({ 'etcd-endpoints': ep });
      expect(msg).toMatch(/^--etcd-endpoints: /);
      expect(msg).not.toContain(SECRET);
      expect(msg).not.toContain('Hunter2');
    }
    expect(refusal({ 'etcd-endpoints': `http://root:${SECRET}@127.0.0.1:2379` })).toBe(
      '--etcd-endpoints: etcd endpoint "http://***@127.0.0.1:2379" has credentials in it; give the endpoint without them and the credentials with --etcd-username and --etcd-password-file (or WEFT_ETCD_USERNAME and WEFT_ETCD_PASSWORD)',
    );
    // The registry itself refuses them too, for callers that do not come through the flags.
    expect(() => checkEndpoints([`http://root:${SECRET}@127.0.0.1:2379`])).toThrow(/has credentials in it/);
    expect(() => new EtcdRegistry({ endpoints: [`http://root:${SECRET}@127.0.0.1:2379`] })).toThrow(
      /^etcd endpoint "http:\/\/\*\*\*@127\.0\.0\.1:2379" has credentials/,
    );
  });

  it('quotes at most 64 characters of a bad endpoint', () => {
    const msg = refusal({ 'etcd-endpoints': `http://${'x'.repeat(500)}` });
    expect(msg).toContain('(507 characters)');
    expect(msg.length).toBeLessThan(200);
  });

  it('takes the username and password from the flags, else from the environment', async () => {
    expect(etcdOptionsFrom({ 'etcd-endpoints': EP }, {})?.auth).toBeUndefined();
    expect(etcdOptionsFrom({ 'etcd-endpoints': EP, 'etcd-username': 'weft', 'etcd-password': SECRET }, {})?.auth).toEqual({
      username: 'weft',
      password: SECRET,
    });
    const env = { WEFT_ETCD_USERNAME: 'envuser', WEFT_ETCD_PASSWORD: 'envpass' };
    expect(etcdOptionsFrom({ 'etcd-endpoints': EP }, env)?.auth).toEqual({ username: 'envuser', password: 'envpass' });
    // A flag wins over the environment, as flanneld's flags win over FLANNELD_ETCD_*.
    expect(etcdOptionsFrom({ 'etcd-endpoints': EP, 'etcd-username': 'weft' }, env)?.auth).toEqual({ username: 'weft', password: 'envpass' });
    const file = path.join(dir, 'password');
    await fsp.writeFile(file, `${SECRET}\n`, { mode: 0o600 });
    expect(etcdOptionsFrom({ 'etcd-endpoints': EP, 'etcd-username': 'weft', 'etcd-password-file': file }, env)?.auth).toEqual({
      username: 'weft',
      password: SECRET,
    });
    // Without --etcd-endpoints the environment is not looked at (a --control daemon).
    expect(etcdOptionsFrom({}, env)).toBeUndefined();
  });

  it('refuses half a credential, both password flags, and a password file others can read', async () => {
    expect(refusal({ 'etcd-endpoints': EP, 'etcd-username': 'weft' })).toBe(
      '--etcd-username needs a password: --etcd-password-file PATH, WEFT_ETCD_PASSWORD, or --etcd-password',
    );
    expect(refusal({ 'etcd-endpoints': EP }, { WEFT_ETCD_PASSWORD: SECRET })).toBe(
      'WEFT_ETCD_PASSWORD needs a user name: --etcd-username NAME or WEFT_ETCD_USERNAME',
    );
    expect(refusal({ 'etcd-endpoints': EP, 'etcd-password': SECRET })).toBe('--etcd-password needs a user name: --etcd-username NAME or WEFT_ETCD_USERNAME');
    expect(refusal({ 'etcd-username': 'weft' })).toBe('--etcd-username needs --etcd-endpoints');
    const open = path.join(dir, 'open-password');
    await fsp.writeFile(open, SECRET);
    await fsp.chmod(open, 0o644);
    expect(refusal({ 'etcd-endpoints': EP, 'etcd-username': 'u', 'etcd-password': 'p', 'etcd-password-file': open })).toBe(
      'give --etcd-password or --etcd-password-file, not both',
    );
    const msg = refusal({ 'etcd-endpoints': EP, 'etcd-username': 'weft', 'etcd-password-file': open });
    expect(msg).toBe(`--etcd-password-file ${open} has mode 0644: password files must not be readable or writable by group or others; run chmod 600 ${open}`);
    expect(refusal({ 'etcd-endpoints': EP, 'etcd-username': 'weft', 'etcd-password-file': path.join(dir, 'missing') })).toMatch(
      /^cannot read --etcd-password-file \S+missing: ENOENT$/,
    );
    const empty = path.join(dir, 'empty-password');
    await fsp.writeFile(empty, '\n', { mode: 0o600 });
    expect(refusal({ 'etcd-endpoints': EP, 'etcd-username': 'weft', 'etcd-password-file': empty })).toBe(`--etcd-password-file ${empty} is empty`);
  });
});
