// IPv4 address arithmetic for laying out the lab (kept local: the lab needs only these few
// operations and must not depend on the datapath's route tables).

export interface Cidr {
  base: number; // network address as an unsigned 32-bit integer
  len: number;
}

export function ipToInt(ip: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) throw new Error(`not an IPv4 address: ${ip}`);
  const o = m.slice(1).map(Number);
  if (o.some((x) => x > 255)) throw new Error(`not an IPv4 address: ${ip}`);
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function mask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** Parses "a.b.c.d/len"; host bits are cleared (so "10.244.7.1/24" gives 10.244.7.0/24). */
export function parseCidr(s: string): Cidr {
  const [ip, lenStr, extra] = s.split('/');
  const len = Number(lenStr);
  if (extra !== undefined || lenStr === undefined || !Number.isInteger(len) || len < 0 || len > 32) {
    throw new Error(`not an IPv4 CIDR: ${s}`);
  }
  return { base: (ipToInt(ip) & mask(len)) >>> 0, len };
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.len}`;
}

/** "10.244.7.1/24" → "10.244.7.0/24": what host-local wants as a range subnet. */
export function networkOf(s: string): string {
  return formatCidr(parseCidr(s));
}

export function contains(cidr: string | Cidr, ip: string): boolean {
  const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
  return ((ipToInt(ip) & mask(c.len)) >>> 0) === c.base;
}

/** True when inner lies wholly inside outer. */
export function within(outer: string, inner: string): boolean {
  const o = parseCidr(outer);
  const i = parseCidr(inner);
  return i.len >= o.len && contains(o, intToIp(i.base));
}

/** Address at offset `n` from the network address ("192.168.77.0/24", 11 → "192.168.77.11"). */
export function hostAt(cidr: string, n: number): string {
  const c = parseCidr(cidr);
  const size = 2 ** (32 - c.len);
  // Offsets 0 and size-1 are the network and broadcast addresses.
  if (n <= 0 || n >= size - 1) throw new Error(`offset ${n} does not fit in ${cidr}`);
  return intToIp((c.base + n) >>> 0);
}
