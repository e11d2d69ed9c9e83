import { inspect } from 'node:util';

/**
 * Polls `fn` until it returns something truthy, and returns that. A throw counts as "not yet"
 * (a daemon restarting refuses /status for a moment); on timeout the error names what was awaited
 * and the last failure.
 */
export async function until<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last instanceof Error ? last.message : inspect(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
