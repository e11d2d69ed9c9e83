// A throwaway PKI for the control-plane TLS tests, made with the openssl CLI in a temp dir: one CA
// that signs the server, per-node and admin certificates, and an unrelated CA with its own client
// certificate so tests can show that "a certificate" is not "a certificate we trust". EC P-256
// keys: generating RSA keys would dominate the test's runtime for no extra coverage.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  /** The CA that signed server, nodes and admin. */
  caCert: string;
  /** serverAuth, IP SANs 127.0.0.1 plus opts.serverIps. */
  server: CertFiles;
  /** clientAuth, CN=<name>, one IP SAN: the node's public IP. */
  nodes: Record<string, CertFiles>;
  /** clientAuth, CN=weft-admin, O=weft:admins, no IP SAN. */
  admin: CertFiles;
  /** A second, unrelated CA. */
  otherCaCert: string;
  /** Signed by the other CA; claims the first node's IP (or 127.0.0.1) so only the issuer is wrong. */
  otherClient: CertFiles;
  /** A server certificate (IP 127.0.0.1) signed by the other CA. */
  otherServer: CertFiles;
  cleanup(): Promise<void>;
}

export interface PkiOptions {
  /** Extra IP SANs for the server certificate. */
  serverIps?: string[];
  /** Node name → public IP; each gets a client certificate. */
  nodes?: Record<string, string>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd, timeout: 30_000 });
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`openssl ${args[0]} failed: ${err.stderr?.trim() || err.message}`, { cause: e });
  }
}

async function makeCa(dir: string, name: string, cn: string): Promise<CertFiles> {
  const files = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      files.key,
      '-out',
      files.cert,
      '-days',
      '2',
      '-subj',
      `/CN=${cn}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  await privateKey(files.key);
  return files;
}

/**
 * weft refuses private keys that group or others can read (src/util/private-file.ts). OpenSSL 3
 * writes -keyout files 0600 already, 1.1 left them to the umask: say so rather than depend on it.
 */
async function privateKey(file: string): Promise<void> {
  await fsp.chmod(file, 0o600);
}

async function issue(dir: string, ca: CertFiles, name: string, subj: string, usage: 'serverAuth' | 'clientAuth', ips: string[]): Promise<CertFiles> {
  const files = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  const lines = ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', `extendedKeyUsage=${usage}`];
  if (ips.length) lines.push(`subjectAltName=${ips.map((ip) => `IP:${ip}`).join(',')}`);
  await fsp.writeFile(ext, lines.join('\n') + '\n');
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', files.key, '-out', csr, '-subj', subj], dir);
  await privateKey(files.key);
  // Explicit random serials: the issues run in parallel, so a shared ca.srl file would race.
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-set_serial',
      `0x${randomBytes(8).toString('hex')}`,
      '-days',
      '2',
      '-extfile',
      ext,
      '-out',
      files.cert,
    ],
    dir,
  );
  return files;
}

/** Creates the PKI; call cleanup() (also on failure paths) to remove the directory. */
export async function makePki(opts: PkiOptions = {}): Promise<TestPki> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'weft-pki-'));
  const cleanup = () => fsp.rm(dir, { recursive: true, force: true });
  try {
    const ca = await makeCa(dir, 'ca', 'weft test CA');
    const other = await makeCa(dir, 'other-ca', 'some other CA');
    const nodeEntries = Object.entries(opts.nodes ?? {});
    const [server, admin, otherClient, otherServer, ...nodeFiles] = await Promise.all([
      issue(dir, ca, 'server', '/CN=weft-control', 'serverAuth', ['127.0.0.1', ...(opts.serverIps ?? [])]),
      issue(dir, ca, 'admin', '/O=weft:admins/CN=weft-admin', 'clientAuth', []),
      issue(dir, other, 'other-client', '/CN=impostor', 'clientAuth', [nodeEntries[0]?.[1] ?? '127.0.0.1']),
      issue(dir, other, 'other-server', '/CN=other-control', 'serverAuth', ['127.0.0.1']),
      ...nodeEntries.map(([name, ip]) => issue(dir, ca, `node-${name}`, `/CN=${name}`, 'clientAuth', [ip])),
    ]);
    const nodes: Record<string, CertFiles> = {};
    nodeEntries.forEach(([name], i) => (nodes[name] = nodeFiles[i]));
    return { dir, caCert: ca.cert, server, nodes, admin, otherCaCert: other.cert, otherClient, otherServer, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
