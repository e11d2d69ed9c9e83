// Lab prefixes for tests: unique per test process and call, so test files running in parallel
// (and a stale lab from a killed run) never share namespaces, and labDown of one never matches
// another's (labNsPattern matches the exact prefix).
export const uniquePrefix = (tag: string): string => `weft-t-${tag}-${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}-`;
