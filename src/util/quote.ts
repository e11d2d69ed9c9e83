// How weft quotes a value it was given (a flag, a request field, a lock file's content, an etcd
// endpoint) back in an error message: JSON-quoted, so quotes and control characters in it cannot
// pass for the message's own text or start a new log line, and cut to QUOTE_CHARS with its full
// length named, so that input of any size is never echoed whole (a 100 KB gRPC field quoted in a
// status trailer once took a client's whole HTTP/2 session down with it).

/** How much of an over-long value an error message quotes. */
export const QUOTE_CHARS = 64;

/** `s` JSON-quoted, cut to `max` characters with its full length named when longer. */
export function quote(s: string, max = QUOTE_CHARS): string {
  if (s.length <= max) return JSON.stringify(s);
  return `${JSON.stringify(s.slice(0, max))}… (${s.length} characters)`;
}
