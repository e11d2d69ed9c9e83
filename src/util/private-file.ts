// Reading a file that holds a secret (a TLS private key, the etcd password): refused unless only
// its owner can read or write it, and that owner is the user weft runs as or root. This is
// OpenSSH's rule for identity files (sshkey_perm_ok: "UNPROTECTED PRIVATE KEY FILE", any bit of
// 077 set) together with sshd's for files it trusts (secure_filename: owned by the user or root).
// A key that others can read is already disclosed; one that another user owns can be swapped
// for theirs. The check is on the open descriptor, so the file judged is the file read.
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';

/** A secret file whose mode or owner is refused; the message says how to fix it. */
export class InsecureFileError extends Error {
  override name = 'InsecureFileError';
}

/**
 * The bytes of `file`, named `flag` in messages (e.g. "--tls-key-file"), after the mode and owner
 * check. `what` names the secret in the refusal ("private keys", "password files"). Failures to
 * open or read come through as Node's own errors (with `.code`) for the caller to word.
 */
export function readPrivateFile(flag: string, file: string, what = 'private keys'): Buffer {
  const fd = openSync(file, 'r');
  try {
    const st = fstatSync(fd);
    const mode = st.mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new InsecureFileError(
        `${flag} ${file} has mode ${mode.toString(8).padStart(4, '0')}: ${what} must not be readable or writable by group or others; run chmod 600 ${file}`,
      );
    }
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
      throw new InsecureFileError(
        `${flag} ${file} is owned by uid ${st.uid}: ${what} must belong to the user weft runs as (uid ${uid}) or to root; run chown ${uid} ${file}`,
      );
    }
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}
