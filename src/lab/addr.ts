// The lab's address layout at the level of the strings it is configured with and prints, on
// src/route/address.ts. A prefix may be written as an address inside it ("10.244.7.1/24", as
// subnet.env gives a node's lease): the lab masks it rather than refusing it as parseCidr would.
import { cidrContains, cidrContainsCidr, cidrLast, formatCidr, formatIpv4, maskOf, parseAddrPrefix, parseIpv4, type Cidr } from '../route/address';

function network(s: string): Cidr {
  const c = parseAddrPrefix(s);
  return { addr: (c.addr & maskOf(c.len)) >>> 0, len: c.len };
}

/** "10.244.7.1/24" → "10.244.7.0/24": what host-local wants as a range subnet. */
export function networkOf(s: string): string {
  return formatCidr(network(s));
}

export function contains(cidr: string, ip: string): boolean {
  return cidrContains(network(cidr), parseIpv4(ip));
}

/** True when inner lies wholly inside outer. */
export function within(outer: string, inner: string): boolean {
  return cidrContainsCidr(network(outer), network(inner));
}

/** Address at offset `n` from the network address ("192.168.77.0/24", 11 → "192.168.77.11"). */
export function hostAt(cidr: string, n: number): string {
  const c = network(cidr);
  // Offset 0 and the last address are the network and broadcast addresses.
  if (n <= 0 || c.addr + n >= cidrLast(c)) throw new Error(`offset ${n} does not fit in ${cidr}`);
  return formatIpv4(c.addr + n);
}
