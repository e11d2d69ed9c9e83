// TLS for the control plane's gRPC: loading certificates named by CLI flags (the error messages
// name those flags, because that is what the operator has to fix), the identity a client
// certificate carries, who may act on which lease, and telling a failed TLS handshake apart from
// a control plane that is merely down.
//
// Identity (only when the server verifies client certificates, i.e. mTLS):
//  - a node's certificate names its public IP as an IP SAN, as kubelet serving certificates name
//    the node's addresses. Acquire/Renew/Revoke are allowed only for a publicIp among those SANs;
//    the registry itself then checks that the lease really belongs to that publicIp, so a node
//    can only ever touch its own lease.
//  - a certificate whose Subject has O=weft:admins (ADMIN_ORGANIZATION) may act on any lease,
//    in the spirit of Kubernetes' system:masters. Whoever holds the client CA's key decides who
//    that is; there is no other list to maintain.
//  - reads (GetConfig, List, Watch) are open to every verified client: every node needs the
//    full lease set to route.
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { InsecureFileError, readPrivateFile } from '../util/private-file';

export const ADMIN_ORGANIZATION = 'weft:admins';

// ---------------------------------------------------------------- loading PEM files

function readPem(flag: string, file: string, secret = false): Buffer {
  try {
    return secret ? readPrivateFile(flag, file) : readFileSync(file);
  } catch (e) {
    if (e instanceof InsecureFileError) throw e;
    throw new Error(`cannot read ${flag} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate in a PEM file; at least one, or a one-line error naming flag and file. */
function parseCerts(flag: string, file: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw new Error(`${flag} ${file} holds no PEM certificate`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (e) {
      throw new Error(`${flag} ${file}: certificate ${i + 1} cannot be parsed: ${oneLine(e)}`, { cause: e });
    }
  });
}

function parseKey(flag: string, file: string, pem: Buffer): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (e) {
    // Encrypted keys land here too: there is no flag for a passphrase, as with flanneld's.
    throw new Error(`${flag} ${file} holds no usable unencrypted PEM private key: ${oneLine(e)}`, { cause: e });
  }
}

/** Loads a cert/key pair and checks they belong together, so a mix-up fails at start, not at the first handshake. */
function loadPair(certFlag: string, certFile: string, keyFlag: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const cert = readPem(certFlag, certFile);
  const key = readPem(keyFlag, keyFile, true);
  const [leaf] = parseCerts(certFlag, certFile, cert);
  if (!leaf.checkPrivateKey(parseKey(keyFlag, keyFile, key))) {
    throw new Error(`${keyFlag} ${keyFile} is not the private key of ${certFlag} ${certFile}`);
  }
  return { cert, key };
}

function loadCa(flag: string, file: string): Buffer {
  const pem = readPem(flag, file);
  parseCerts(flag, file, pem);
  return pem;
}

function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0];
}

export interface ServerTlsFiles {
  certFile?: string;
  keyFile?: string;
  clientCaFile?: string;
}

export interface ServerTls {
  credentials: grpc.ServerCredentials;
  /** True when clients must present a certificate signed by clientCaFile (mTLS). */
  clientCertificates: boolean;
}

/** `weft control`'s --tls-* flags → server credentials; undefined when none is given (plaintext). */
export function loadServerTls(f: ServerTlsFiles): ServerTls | undefined {
  if (f.certFile && !f.keyFile) throw new Error('--tls-cert-file needs --tls-key-file');
  if (f.keyFile && !f.certFile) throw new Error('--tls-key-file needs --tls-cert-file');
  if (f.clientCaFile && !f.certFile) {
    throw new Error('--tls-client-ca-file needs --tls-cert-file and --tls-key-file (client certificates are only checked over TLS)');
  }
  if (!f.certFile || !f.keyFile) return undefined;
  const { cert, key } = loadPair('--tls-cert-file', f.certFile, '--tls-key-file', f.keyFile);
  const ca = f.clientCaFile ? loadCa('--tls-client-ca-file', f.clientCaFile) : null;
  // checkClientCertificate=true makes Node's TLS server require a client certificate that
  // chains to `ca` and drop the connection otherwise, before any gRPC is spoken.
  return { credentials: grpc.ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null), clientCertificates: ca !== null };
}

export interface ClientTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** `weft daemon`'s --control-* TLS flags → channel credentials; undefined when none is given (plaintext). */
export function loadClientCredentials(f: ClientTlsFiles): grpc.ChannelCredentials | undefined {
  if (f.certFile && !f.keyFile) throw new Error('--control-certfile needs --control-keyfile');
  if (f.keyFile && !f.certFile) throw new Error('--control-keyfile needs --control-certfile');
  // Trusting the system roots for a cluster-private control plane would be an accident, not a
  // choice, so a client certificate without an explicit CA is refused rather than guessed.
  if (f.certFile && !f.caFile) throw new Error("--control-certfile needs --control-cafile (the CA that signed weft control's certificate)");
  if (!f.caFile) return undefined;
  const ca = loadCa('--control-cafile', f.caFile);
  const pair = f.certFile && f.keyFile ? loadPair('--control-certfile', f.certFile, '--control-keyfile', f.keyFile) : undefined;
  return grpc.credentials.createSsl(ca, pair?.key ?? null, pair?.cert ?? null);
}

// ---------------------------------------------------------------- identity

export interface SanEntry {
  /** As Node prints it: "IP Address", "DNS", "URI", "email", … */
  type: string;
  value: string;
}

/**
 * Parses Node's `subjectaltname` string ("IP Address:10.0.0.1, DNS:a.example, URI:\"…\"").
 * Node JSON-quotes values holding separators, so a crafted DNS or URI name cannot pose as an
 * extra IP entry; this parser honours that quoting instead of splitting on ", ". Returns null
 * for a string it cannot read, which callers treat as "no identity" (fail closed).
 */
export function parseSubjectAltName(s: string | undefined): SanEntry[] | null {
  const out: SanEntry[] = [];
  if (!s) return out;
  let i = 0;
  while (i < s.length) {
    const colon = s.indexOf(':', i);
    if (colon < 0) return null;
    const type = s.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (s[j] === '"') {
      let k = j + 1;
      while (k < s.length && s[k] !== '"') k += s[k] === '\\' ? 2 : 1;
      if (k >= s.length) return null;
      try {
        value = JSON.parse(s.slice(j, k + 1)) as string;
      } catch {
        return null;
      }
      j = k + 1;
    } else {
      const end = s.indexOf(', ', j);
      j = end < 0 ? s.length : end;
      value = s.slice(colon + 1, j);
    }
    if (j < s.length) {
      if (!s.startsWith(', ', j)) return null;
      j += 2;
    }
    out.push({ type, value });
    i = j;
  }
  return out;
}

/** One spelling per address, so "2001:DB8:0:0:0:0:0:1" (as Node prints SANs) equals "2001:db8::1". */
export function canonicalIp(ip: string): string | undefined {
  const v = isIP(ip);
  if (v === 4) return ip;
  if (v === 6) return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  return undefined;
}

/** The IP addresses among a certificate's SANs, canonical. */
export function parseSanIps(subjectaltname: string | undefined): string[] {
  const entries = parseSubjectAltName(subjectaltname) ?? [];
  const ips: string[] = [];
  for (const e of entries) {
    if (e.type !== 'IP Address') continue;
    const ip = canonicalIp(e.value);
    if (ip !== undefined && !ips.includes(ip)) ips.push(ip);
  }
  return ips;
}

export interface ClientIdentity {
  commonName?: string;
  organizations: string[];
  /** IP SANs: the public IPs whose leases this client may act on. */
  ips: string[];
  admin: boolean;
}

function values(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** The identity in a verified peer certificate (grpc-js' AuthContext.sslPeerCertificate). */
export function identityFromCertificate(cert: Pick<PeerCertificate, 'subject' | 'subjectaltname'> & { raw?: Buffer }): ClientIdentity {
  // Node types subject fields as strings, but a repeated attribute (two O=) arrives as an array.
  const subject = (cert.subject ?? {}) as unknown as Record<string, string | string[] | undefined>;
  let ips = parseSanIps(cert.subjectaltname);
  if (cert.raw) {
    // Second opinion from OpenSSL's own iPAddress matching: an address only counts if both the
    // printed form and the DER agree that the certificate names it.
    const x509 = new X509Certificate(cert.raw);
    ips = ips.filter((ip) => x509.checkIP(ip) !== undefined);
  }
  const organizations = values(subject.O);
  return { commonName: values(subject.CN)[0], organizations, ips, admin: organizations.includes(ADMIN_ORGANIZATION) };
}

/** "client certificate (CN=node-1, IP 192.168.77.11)", for refusals and logs. */
export function describeIdentity(id: ClientIdentity): string {
  const parts: string[] = [];
  if (id.commonName !== undefined) parts.push(`CN=${id.commonName}`);
  if (id.admin) parts.push(`O=${ADMIN_ORGANIZATION}`);
  if (id.ips.length === 1) parts.push(`IP ${id.ips[0]}`);
  else if (id.ips.length > 1) parts.push(`IPs ${id.ips.join(', ')}`);
  else if (!id.admin) parts.push('no IP SAN');
  return `client certificate (${parts.join(', ')})`;
}

/**
 * Why `id` may not act on the lease of `publicIp`, or undefined when it may: admins may act on
 * any lease, anyone else only on leases for one of their certificate's IP SANs.
 */
export function leaseRefusal(id: ClientIdentity, publicIp: string): string | undefined {
  if (id.admin) return undefined;
  const ip = canonicalIp(publicIp);
  if (ip !== undefined && id.ips.includes(ip)) return undefined;
  return `${describeIdentity(id)} may not act on a lease for ${publicIp || '""'}`;
}

// ---------------------------------------------------------------- client-side handshake failures

export type TransportFailure =
  /** A TLS handshake failed for a reason that names the TLS problem: a configuration error. */
  | { kind: 'tls'; reason: string }
  /**
   * The TCP connection was accepted and then closed before HTTP/2 began, with nothing said.
   * That is what a plaintext client sees from a TLS server, and what a TLS client sees when
   * Node's TLS server drops it for a client certificate from an unknown CA (Node closes without
   * a TLS alert); but also what a server in the middle of shutting down looks like. Not
   * conclusive, so callers keep treating it as an outage and only add a hint.
   */
  | { kind: 'closed' };

/**
 * Classifies the details of an UNAVAILABLE status from grpc-js ("No connection established.
 * Last error: …"). undefined: nothing TLS-related (refused, timed out, reset: a down server).
 */
export function classifyTransportFailure(details: string): TransportFailure | undefined {
  const last = /Last error: ([\s\S]*?)\.? Resolution note:/.exec(details)?.[1] ?? details;
  const ssl = /SSL routines:[^:]*:([^:]+):/.exec(last)?.[1]?.trim();
  if (ssl !== undefined) {
    if (/wrong version number|packet length too long|http request/i.test(ssl)) {
      return { kind: 'tls', reason: `the server does not speak TLS (${ssl}: a weft control without --tls-cert-file?)` };
    }
    if (/alert certificate required/i.test(ssl)) {
      return { kind: 'tls', reason: `the server requires a client certificate and none was sent (${ssl})` };
    }
    if (/alert/i.test(ssl)) return { kind: 'tls', reason: `the server refused the handshake (${ssl})` };
    return { kind: 'tls', reason: ssl };
  }
  // Node's own verification of the server certificate (tls.connect's authorizationError and
  // checkServerIdentity), e.g. "unable to verify the first certificate", "self-signed
  // certificate", "certificate has expired", "Hostname/IP does not match certificate's altnames".
  // The reason ends at the first '.' or ';': Node 24 appends advice after a ';' ("if the root CA
  // is installed locally, try running Node.js with --use-system-ca") that is not about weft's flags.
  const verify =
    /(unable to (?:verify|get)[^.;\n]*|self[- ]signed certificate[^.;\n]*|certificate (?:has expired|is not yet valid|signature failure|revoked)[^.;\n]*|Hostname\/IP does not match certificate's altnames[^\n]*)/i.exec(
      last,
    )?.[1];
  if (verify !== undefined) return { kind: 'tls', reason: `the server's certificate is not trusted: ${verify.replace(/\.$/, '')}` };
  if (/^Failed to connect\b|Connection closed before starting HTTP\/2 handshake/.test(last.trim())) return { kind: 'closed' };
  return undefined;
}
