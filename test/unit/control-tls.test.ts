// tls.ts without a network: SAN parsing, who may act on which lease, how grpc-js' UNAVAILABLE
// details are classified (inputs are the exact strings grpc-js 1.14.7 produced in the cases
// control-tls.test.ts reproduces), and the one-line errors for bad flag combinations and files.
import { X509Certificate } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canonicalIp,
  classifyTransportFailure,
  describeIdentity,
  identityFromCertificate,
  leaseRefusal,
  loadClientCredentials,
  loadServerTls,
  parseSanIps,
  parseSubjectAltName,
  type ClientIdentity,
} from '../../src/control/tls';
import { EtcdRegistry } from '../../src/control/etcd/registry';
import { makePki, type TestPki } from '../support/certs';

describe('parseSubjectAltName / parseSanIps', () => {
  it("reads Node's subjectaltname format", () => {
    expect(parseSubjectAltName('IP Address:192.168.77.11, DNS:node-1.example, email:a@b.c')).toEqual([
      { type: 'IP Address', value: '192.168.77.11' },
      { type: 'DNS', value: 'node-1.example' },
      { type: 'email', value: 'a@b.c' },
    ]);
    expect(parseSubjectAltName(undefined)).toEqual([]);
    expect(parseSubjectAltName('')).toEqual([]);
  });

  it('honours JSON quoting, so a crafted name cannot smuggle in an IP entry', () => {
    // Exactly what Node printed for a certificate with URI "http://a, IP Address:1.2.3.4, DNS:z".
    const s = 'URI:"http://a\\u002c IP Address:1.2.3.4\\u002c DNS:z", IP Address:10.0.0.1, DNS:foo.example';
    expect(parseSubjectAltName(s)).toEqual([
      { type: 'URI', value: 'http://a, IP Address:1.2.3.4, DNS:z' },
      { type: 'IP Address', value: '10.0.0.1' },
      { type: 'DNS', value: 'foo.example' },
    ]);
    expect(parseSanIps(s)).toEqual(['10.0.0.1']);
    // Even unescaped, the quoted value stays one entry.
    expect(parseSanIps('URI:"x, IP Address:1.2.3.4", IP Address:10.0.0.2')).toEqual(['10.0.0.2']);
  });

  it('fails closed on strings it cannot read', () => {
    expect(parseSubjectAltName('IP Address')).toBeNull();
    expect(parseSubjectAltName('URI:"unterminated, IP Address:1.2.3.4')).toBeNull();
    expect(parseSubjectAltName('URI:"a"IP Address:1.2.3.4')).toBeNull();
    expect(parseSanIps('URI:"unterminated, IP Address:1.2.3.4')).toEqual([]);
  });

  it('canonicalises addresses (Node prints IPv6 SANs expanded, upper case) and drops non-addresses', () => {
    expect(parseSanIps('IP Address:2001:DB8:0:0:0:0:0:1, IP Address:192.168.77.11, IP Address:192.168.77.11, IP Address:bogus')).toEqual([
      '2001:db8::1',
      '192.168.77.11',
    ]);
    expect(canonicalIp('2001:0db8::0:1')).toBe('2001:db8::1');
    expect(canonicalIp('10.0.0.300')).toBeUndefined();
  });
});

describe('identity and lease permission', () => {
  const nodeA: ClientIdentity = { commonName: 'node-1', organizations: [], ips: ['192.168.77.11'], admin: false };

  it('builds the identity from a peer certificate, O as string or array', () => {
    expect(identityFromCertificate({ subject: { CN: 'node-1' } as never, subjectaltname: 'IP Address:192.168.77.11' })).toEqual(nodeA);
    const admin = identityFromCertificate({ subject: { CN: 'ops', O: ['example', 'weft:admins'] } as never, subjectaltname: undefined as never });
    expect(admin).toEqual({ commonName: 'ops', organizations: ['example', 'weft:admins'], ips: [], admin: true });
    // Close is not enough: the organisation must match exactly.
    expect(identityFromCertificate({ subject: { O: 'weft:admins-not' } as never, subjectaltname: '' }).admin).toBe(false);
  });

  it('a node may act only on leases for its own IP SANs', () => {
    expect(leaseRefusal(nodeA, '192.168.77.11')).toBeUndefined();
    expect(leaseRefusal(nodeA, '192.168.77.12')).toBe('client certificate (CN=node-1, IP 192.168.77.11) may not act on a lease for 192.168.77.12');
    expect(leaseRefusal(nodeA, 'not-an-ip')).toBe('client certificate (CN=node-1, IP 192.168.77.11) may not act on a lease for not-an-ip');
    expect(leaseRefusal(nodeA, '')).toBe('client certificate (CN=node-1, IP 192.168.77.11) may not act on a lease for ""');
    const multi: ClientIdentity = { commonName: 'n', organizations: [], ips: ['10.0.0.1', '2001:db8::1'], admin: false };
    expect(leaseRefusal(multi, '2001:DB8::0:1')).toBeUndefined();
    expect(leaseRefusal(multi, '10.0.0.2')).toBe('client certificate (CN=n, IPs 10.0.0.1, 2001:db8::1) may not act on a lease for 10.0.0.2');
  });

  it('a certificate without IP SANs may act on no lease unless it is an admin', () => {
    const none: ClientIdentity = { commonName: 'x', organizations: ['weft'], ips: [], admin: false };
    expect(leaseRefusal(none, '10.0.0.1')).toBe('client certificate (CN=x, no IP SAN) may not act on a lease for 10.0.0.1');
    const admin: ClientIdentity = { commonName: 'ops', organizations: ['weft:admins'], ips: [], admin: true };
    expect(leaseRefusal(admin, '10.0.0.1')).toBeUndefined();
    expect(describeIdentity(admin)).toBe('client certificate (CN=ops, O=weft:admins)');
  });
});

describe('classifyTransportFailure', () => {
  // Verbatim details of the UNAVAILABLE statuses grpc-js 1.14.7 reported (timestamps/ports vary).
  const measured = {
    tlsToPlaintext:
      'No connection established. Last error: Error: 80FC470CE17F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n. Resolution note: ',
    untrustedServer: 'No connection established. Last error: Error: unable to verify the first certificate. Resolution note: ',
    wrongServerIp:
      "No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: IP: 127.0.0.2 is not in the cert's list: 127.0.0.1. Resolution note: ",
    noClientCert:
      'No connection established. Last error: 80AC836F2A7F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n (2026-11-23T01:36:05.426Z). Resolution note: ',
    closed: 'No connection established. Last error: Failed to connect (2026-11-23T01:36:05.369Z). Resolution note: ',
    refused: 'No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:35839. Resolution note: ',
  };

  it('names the TLS problem where the handshake said what it was', () => {
    expect(classifyTransportFailure(measured.tlsToPlaintext)).toEqual({
      kind: 'tls',
      reason: 'the server does not speak TLS (wrong version number: a weft control without --tls-cert-file?)',
    });
    expect(classifyTransportFailure(measured.untrustedServer)).toEqual({
      kind: 'tls',
      reason: "the server's certificate is not trusted: unable to verify the first certificate",
    });
    expect(classifyTransportFailure(measured.wrongServerIp)).toEqual({
      kind: 'tls',
      reason: "the server's certificate is not trusted: Hostname/IP does not match certificate's altnames: IP: 127.0.0.2 is not in the cert's list: 127.0.0.1",
    });
    expect(classifyTransportFailure(measured.noClientCert)).toEqual({
      kind: 'tls',
      reason: 'the server requires a client certificate and none was sent (tlsv13 alert certificate required)',
    });
    expect(classifyTransportFailure('Last error: 1:error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:x.c:1:. Resolution note: ')).toEqual({
      kind: 'tls',
      reason: 'the server refused the handshake (tlsv1 alert unknown ca)',
    });
    expect(classifyTransportFailure('Error: self-signed certificate')?.kind).toBe('tls');
    expect(classifyTransportFailure('Error: certificate has expired')?.kind).toBe('tls');
  });

  it('keeps a silent close ambiguous and an outage an outage', () => {
    expect(classifyTransportFailure(measured.closed)).toEqual({ kind: 'closed' });
    expect(classifyTransportFailure(measured.refused)).toBeUndefined();
    expect(classifyTransportFailure('Deadline exceeded after 1.001s')).toBeUndefined();
    expect(classifyTransportFailure('No connection established. Last error: Error: read ECONNRESET. Resolution note: ')).toBeUndefined();
    expect(classifyTransportFailure('control server shutting down')).toBeUndefined();
  });
});

describe('loading certificate flags', () => {
  let pki: TestPki;
  let junk: string;
  /** The same junk, private enough to be read as a key. */
  let junkKey: string;
  beforeAll(async () => {
    pki = await makePki({ nodes: { 'node-1': '192.168.77.11' } });
    junk = path.join(pki.dir, 'junk.pem');
    await fsp.writeFile(junk, 'not a certificate\n');
    junkKey = path.join(pki.dir, 'junk.key');
    await fsp.writeFile(junkKey, 'not a key\n', { mode: 0o600 });
  });
  afterAll(async () => {
    await pki?.cleanup();
  });

  it('server: plaintext without flags, TLS with a pair, mTLS with a client CA', () => {
    expect(loadServerTls({})).toBeUndefined();
    expect(loadServerTls({ certFile: pki.server.cert, keyFile: pki.server.key })?.clientCertificates).toBe(false);
    expect(loadServerTls({ certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: pki.caCert })?.clientCertificates).toBe(true);
  });

  it('server: one-line errors naming flag and file', () => {
    const err = (f: Parameters<typeof loadServerTls>[0]) => () => loadServerTls(f);
    expect(err({ certFile: pki.server.cert })).toThrow(/^--tls-cert-file needs --tls-key-file$/);
    expect(err({ keyFile: pki.server.key })).toThrow(/^--tls-key-file needs --tls-cert-file$/);
    expect(err({ clientCaFile: pki.caCert })).toThrow(/^--tls-client-ca-file needs --tls-cert-file and --tls-key-file/);
    expect(err({ certFile: '/nonexistent/c.pem', keyFile: pki.server.key })).toThrow('cannot read --tls-cert-file /nonexistent/c.pem: ENOENT');
    expect(err({ certFile: junk, keyFile: pki.server.key })).toThrow(`--tls-cert-file ${junk} holds no PEM certificate`);
    expect(err({ certFile: pki.server.cert, keyFile: junkKey })).toThrow(
      new RegExp(`^--tls-key-file ${junkKey} holds no usable unencrypted PEM private key: `),
    );
    expect(err({ certFile: pki.server.cert, keyFile: pki.nodes['node-1'].key })).toThrow(
      `--tls-key-file ${pki.nodes['node-1'].key} is not the private key of --tls-cert-file ${pki.server.cert}`,
    );
    expect(err({ certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: junk })).toThrow(`--tls-client-ca-file ${junk} holds no PEM certificate`);
    // OpenSSL's messages can run over several lines; only the first is kept.
    expect(err({ certFile: pki.server.cert, keyFile: junkKey })).toThrow(/^[^\n]+$/);
  });

  it('client: plaintext without flags, TLS with a CA, mTLS with a pair', () => {
    expect(loadClientCredentials({})).toBeUndefined();
    expect(loadClientCredentials({ caFile: pki.caCert })?._isSecure()).toBe(true);
    const n = pki.nodes['node-1'];
    expect(loadClientCredentials({ caFile: pki.caCert, certFile: n.cert, keyFile: n.key })?._isSecure()).toBe(true);
  });

  it('client: one-line errors naming flag and file', () => {
    const n = pki.nodes['node-1'];
    const err = (f: Parameters<typeof loadClientCredentials>[0]) => () => loadClientCredentials(f);
    expect(err({ caFile: pki.caCert, certFile: n.cert })).toThrow(/^--control-certfile needs --control-keyfile$/);
    expect(err({ caFile: pki.caCert, keyFile: n.key })).toThrow(/^--control-keyfile needs --control-certfile$/);
    expect(err({ certFile: n.cert, keyFile: n.key })).toThrow(/^--control-certfile needs --control-cafile/);
    expect(err({ caFile: '/nonexistent/ca.pem' })).toThrow('cannot read --control-cafile /nonexistent/ca.pem: ENOENT');
    expect(err({ caFile: junk })).toThrow(`--control-cafile ${junk} holds no PEM certificate`);
    expect(err({ caFile: pki.caCert, certFile: n.cert, keyFile: pki.admin.key })).toThrow(
      `--control-keyfile ${pki.admin.key} is not the private key of --control-certfile ${n.cert}`,
    );
  });

  it('private keys: refused when group or others may read or write them, with the chmod that fixes it', async () => {
    const n = pki.nodes['node-1'];
    const copy = async (from: string, name: string, mode: number): Promise<string> => {
      const to = path.join(pki.dir, name);
      await fsp.copyFile(from, to);
      await fsp.chmod(to, mode);
      return to;
    };
    for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602]) {
      const serverKey = await copy(pki.server.key, `server-${mode.toString(8)}.key`, mode);
      const octal = mode.toString(8).padStart(4, '0');
      expect(() => loadServerTls({ certFile: pki.server.cert, keyFile: serverKey })).toThrow(
        `--tls-key-file ${serverKey} has mode ${octal}: private keys must not be readable or writable by group or others; run chmod 600 ${serverKey}`,
      );
      const nodeKey = await copy(n.key, `node-${mode.toString(8)}.key`, mode);
      expect(() => loadClientCredentials({ caFile: pki.caCert, certFile: n.cert, keyFile: nodeKey })).toThrow(
        `--control-keyfile ${nodeKey} has mode ${octal}: private keys must not be readable or writable by group or others; run chmod 600 ${nodeKey}`,
      );
      expect(() => new EtcdRegistry({ endpoints: ['https://127.0.0.1:2379'], tls: { caFile: pki.caCert, certFile: n.cert, keyFile: nodeKey } })).toThrow(
        `--etcd-keyfile ${nodeKey} has mode ${octal}: private keys must not be readable or writable by group or others; run chmod 600 ${nodeKey}`,
      );
    }
    // 0600 and 0400 are the owner's alone; certificates and CAs are public and any mode goes.
    for (const mode of [0o600, 0o400]) {
      const serverKey = await copy(pki.server.key, `server-ok-${mode.toString(8)}.key`, mode);
      expect(loadServerTls({ certFile: pki.server.cert, keyFile: serverKey })?.clientCertificates).toBe(false);
      const nodeKey = await copy(n.key, `node-ok-${mode.toString(8)}.key`, mode);
      expect(loadClientCredentials({ caFile: pki.caCert, certFile: n.cert, keyFile: nodeKey })?._isSecure()).toBe(true);
      const reg = new EtcdRegistry({ endpoints: ['https://127.0.0.1:2379'], tls: { caFile: pki.caCert, certFile: n.cert, keyFile: nodeKey } });
      reg.close();
    }
    expect((await fsp.stat(pki.server.cert)).mode & 0o044).not.toBe(0);
    if (process.getuid?.() === 0) {
      // Owned by someone other than the user weft runs as (root here) nor root: refused, as sshd does.
      const foreign = await copy(pki.server.key, 'server-foreign.key', 0o600);
      await fsp.chown(foreign, 12345, 12345);
      expect(() => loadServerTls({ certFile: pki.server.cert, keyFile: foreign })).toThrow(
        `--tls-key-file ${foreign} is owned by uid 12345: private keys must belong to the user weft runs as (uid 0) or to root; run chown 0 ${foreign}`,
      );
    }
  });

  it("identityFromCertificate on a real certificate agrees with OpenSSL's own IP matching", () => {
    const x = new X509Certificate(readFileSync(pki.nodes['node-1'].cert));
    const id = identityFromCertificate({ subject: { CN: 'node-1' } as never, subjectaltname: x.subjectAltName!, raw: x.raw });
    expect(id.ips).toEqual(['192.168.77.11']);
    // A printed SAN string claiming more than the DER holds is cut back to what the DER says.
    const forged = identityFromCertificate({ subject: {} as never, subjectaltname: 'IP Address:192.168.77.11, IP Address:192.168.77.12', raw: x.raw });
    expect(forged.ips).toEqual(['192.168.77.11']);
  });
});
