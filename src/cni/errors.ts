// CNI error results (CNI spec 1.1.0 section 5 "Error"): a JSON object {cniVersion, code, msg,
// details} on stdout and a non-zero exit. Codes 0-99 are the spec's well-known ones; 100 and up are
// weft-cni's own.

export const CNI_ERRORS = {
  /** The config's cniVersion is not one this plugin (or the command) speaks. */
  INCOMPATIBLE_VERSION: 1,
  /** A field weft-cni will not honour; the message names the key and value (spec). */
  UNSUPPORTED_FIELD: 2,
  /** CHECK for an attachment weft-cni never added (or already deleted). */
  UNKNOWN_CONTAINER: 3,
  /** A CNI_* variable missing or malformed; the message names it (spec). */
  INVALID_ENV: 4,
  /** Reading stdin failed. */
  IO: 5,
  /** stdin is not JSON. */
  DECODE: 6,
  /** The JSON is not a valid weft-cni config. */
  INVALID_CONFIG: 7,
  /** subnet.env is not there yet: the daemon has no lease yet, or is restarting. */
  TRY_AGAIN_LATER: 11,
  /** STATUS: cannot service ADD (no usable subnet.env). */
  NOT_AVAILABLE: 50,
  /** subnet.env exists but cannot be read or parsed. */
  BAD_SUBNET_ENV: 100,
  /** The delegate plugin is not in CNI_PATH, could not run, or gave no usable answer. */
  DELEGATE_FAILED: 101,
  /** The saved delegate config under dataDir could not be written or removed. */
  STATE_IO: 102,
  /** CHECK: the node's subnet is no longer the one the pod was given an address in. */
  SUBNET_CHANGED: 103,
} as const;

export class CniError extends Error {
  override name = 'CniError';
  constructor(
    readonly code: number,
    msg: string,
    readonly details = '',
  ) {
    super(msg);
  }
}

export function errorJson(cniVersion: string, e: CniError): string {
  return JSON.stringify({ cniVersion, code: e.code, msg: e.message, ...(e.details ? { details: e.details } : {}) });
}
