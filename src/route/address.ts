// IPv4 addresses and CIDR prefixes (RFC 4632). Addresses are uint32 numbers in host order;
// every result is `>>> 0` so that 128.0.0.0 and above stay positive.

export interface Cidr {
  addr: number;
  len: number;
}

// Dotted decimal only, no leading zeros: inet_aton would read "010" as octal 8 and "10.1" as
// 10.0.0.1, and a config value that means different things to different tools is a bug.
const OCTET = '(0|[1-9][0-9]{0,2})';
const IPV4_RE = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);
const LEN_RE = /^(0|[1-9][0-9]?)$/;

function parseQuad(s: string): number {
  const m = IPV4_RE.exec(s);
  if (m === null) return -1;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const o = +m[i];
    if (o > 255) return -1;
    n = n * 256 + o;
  }
  return n;
}

export function parseIpv4(s: string): number {
  const n = typeof s === 'string' ? parseQuad(s) : -1;
  if (n < 0) throw new Error(`invalid IPv4 address "${s}"`);
  return n;
}

export function formatIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** Network mask for a prefix length; 0 → 0 (a shift by 32 would be a shift by 0 in JS). */
export function maskOf(len: number): number {
  return len <= 0 ? 0 : len >= 32 ? 0xffffffff : (0xffffffff << (32 - len)) >>> 0;
}

/**
 * An address with the length of the prefix it sits in, as `ip addr` and subnet.env write it
 * ("10.244.7.1/24", the node's gateway in its lease). Host bits are kept: mask with maskOf for
 * the network.
 */
export function parseAddrPrefix(s: string): Cidr {
  if (typeof s !== 'string') throw new Error(`invalid CIDR "${s}": not a string`);
  const slash = s.indexOf('/');
  if (slash < 0) throw new Error(`invalid CIDR "${s}": missing "/<prefix length>"`);
  const addr = parseQuad(s.slice(0, slash));
  if (addr < 0) throw new Error(`invalid CIDR "${s}": bad address "${s.slice(0, slash)}"`);
  const lenStr = s.slice(slash + 1);
  const len = LEN_RE.test(lenStr) ? +lenStr : -1;
  if (len < 0 || len > 32) throw new Error(`invalid CIDR "${s}": bad prefix length "${lenStr}" (want 0-32)`);
  return { addr, len };
}

export function parseCidr(s: string): Cidr {
  const c = parseAddrPrefix(s);
  // Where a prefix is meant, host bits are refused rather than masked: "10.244.1.0/16" is a
  // typo for one of two different things, and guessing would route the wrong one.
  if ((c.addr & ~maskOf(c.len)) !== 0) throw new Error(`invalid CIDR "${s}": host bits set`);
  return c;
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.addr)}/${c.len}`;
}

export function cidrContains(c: Cidr, addr: number): boolean {
  return ((addr ^ c.addr) & maskOf(c.len)) === 0;
}

export function cidrContainsCidr(outer: Cidr, inner: Cidr): boolean {
  return inner.len >= outer.len && ((inner.addr ^ outer.addr) & maskOf(outer.len)) === 0;
}

/** Last address of the prefix (the directed broadcast address for len < 31, RFC 3021). */
export function cidrLast(c: Cidr): number {
  return (c.addr | ~maskOf(c.len)) >>> 0;
}

/**
 * The special-purpose blocks of RFC 6890 that can never be a host's unicast address on a wire:
 * "this network" 0/8 (RFC 1122 3.2.1.3: a source only, while a host learns its address),
 * loopback 127/8, link-local 169.254/16 (RFC 3927: never forwarded off the link), multicast
 * 224/4 (RFC 5771), reserved 240/4 (RFC 1112) and limited broadcast 255.255.255.255 (RFC 919).
 * Everything else, private ranges included, is 'unicast'.
 */
export type Ipv4Class = 'this-network' | 'loopback' | 'link-local' | 'multicast' | 'reserved' | 'broadcast' | 'unicast';

export function classifyIpv4(n: number): Ipv4Class {
  const a = n >>> 0;
  if (a === 0xffffffff) return 'broadcast';
  const first = a >>> 24;
  if (first === 0) return 'this-network';
  if (first === 127) return 'loopback';
  if (a >>> 16 === 0xa9fe) return 'link-local';
  if (a >>> 28 === 0xe) return 'multicast';
  if (a >>> 28 === 0xf) return 'reserved';
  return 'unicast';
}
