// Which interface and address the daemon sends from, and which address it announces: flanneld's
// interface discovery (main.go's selection loop over ipmatch.LookupExtIface, pkg/ip's address
// rules), for IPv4.
//
// Precedence, as flanneld's:
//   1. No --iface, --iface-regex or --iface-can-reach: the interface holding --public-ip if that
//      is given, else the interface of the main table's first IPv4 default route.
//   2. Otherwise each --iface in order (an IPv4 address: the interface holding it, with that
//      address; anything else: the interface of that name), then each --iface-regex in order,
//      then --iface-can-reach; the first that yields an interface and an address wins, and the
//      ones before it are only noted (flanneld logs them). The default route is never consulted.
//   An --iface-regex is matched first against every usable IPv4 address of every interface in
//   ifindex order (the first match gives the interface and that address), then against the
//   names. --iface-can-reach takes the device and source address of `ip route get ADDR`.
// An interface found by name (or by the default route) sends from its first usable address:
// not loopback, multicast, 0.0.0.0, broadcast or deprecated, global before link-local
// (169.254/16), permanent before dynamic (pkg/ip GetInterfaceIP4Addrs).
// The address announced in the lease is --public-ip when given (e.g. a NAT's outside address),
// else the interface's address (flanneld's ExtAddr and IfaceAddr).
import { defaultRoute, IpCommandError, listIfaces, routeGet, type IfaceAddrs, type IpOptions } from '../io/iproute';
import { parseIpv4 } from '../route/address';
import { quote } from '../util/quote';

export interface UnderlaySelectors {
  /** --iface, in order: names or IPv4 addresses. */
  ifaces: readonly string[];
  /** --iface-regex, in order. */
  regexes: readonly string[];
  /** --iface-can-reach. */
  canReach?: string;
  /** --public-ip. */
  publicIp?: string;
}

/** What discovery reads from the machine. */
export interface UnderlaySnapshot {
  ifaces: readonly IfaceAddrs[];
  /** The main table's first IPv4 default route (undefined: none). */
  defaultRoute?: { dev?: string; type?: string };
  /** `ip route get` of --iface-can-reach, or why it failed. */
  canReach?: { dev?: string; src?: string } | { error: string };
}

export interface Underlay {
  /** The interface sent from. */
  iface: string;
  mtu: number;
  /** Its address the daemon sends from and binds to. */
  addr: string;
  /** The address announced in the lease: --public-ip, else addr. */
  publicIp: string;
  /** Which selector chose it, for the log ("--iface eth1", "the default route"). */
  how: string;
  /** Selectors tried before it that found nothing, one line each (flanneld logs them). */
  skipped: string[];
}

/** Go's IsGlobalUnicast || IsLinkLocalUnicast for IPv4: what flanneld will send from. */
function usable(ip: string): boolean {
  const a = parseIpv4(ip) >>> 0;
  const first = a >>> 24;
  return a !== 0 && a !== 0xffffffff && first !== 127 && (first < 224 || first > 239);
}

const linkLocal = (ip: string) => ip.startsWith('169.254.');

/** The interface's usable IPv4 addresses, best first (global before link-local, permanent before dynamic). */
export function usableAddrs(iface: IfaceAddrs): string[] {
  const rank = (a: IfaceAddrs['addrs'][number]) => (linkLocal(a.ip) ? 2 : 0) + (a.dynamic ? 1 : 0);
  return iface.addrs
    .filter((a) => !a.deprecated && usable(a.ip))
    .map((a, i) => ({ a, i }))
    .sort((x, y) => rank(x.a) - rank(y.a) || x.i - y.i)
    .map((x) => x.a.ip);
}

function isIpv4(s: string): boolean {
  try {
    parseIpv4(s);
    return true;
  } catch {
    return false;
  }
}

/** One attempt: an interface and address, or why not (one clause). */
type Attempt = { iface: IfaceAddrs; addr: string } | { why: string };

/** The interface, sending from its first usable address; `what` names it in the failure. */
function withFirstAddr(iface: IfaceAddrs, what: string): Attempt {
  const addr = usableAddrs(iface)[0];
  return addr ? { iface, addr } : { why: `${what} has no usable IPv4 address` };
}

function byIface(spec: string, ifaces: readonly IfaceAddrs[]): Attempt {
  if (isIpv4(spec)) {
    // Any address the interface holds, as pkg/ip GetInterfaceByIP compares them: unfiltered.
    const iface = ifaces.find((i) => i.addrs.some((a) => a.ip === spec));
    return iface ? { iface, addr: spec } : { why: `--iface ${spec}: no interface holds this address` };
  }
  const iface = ifaces.find((i) => i.name === spec);
  return iface ? withFirstAddr(iface, `--iface ${spec}: ${iface.name}`) : { why: `--iface ${quote(spec)}: no such interface` };
}

function byRegex(source: string, ifaces: readonly IfaceAddrs[]): Attempt {
  let re: RegExp;
  try {
    // Go's RE2 and JavaScript agree on the patterns interface selection uses (anchors, classes,
    // alternation); both match anywhere in the string unless anchored.
    re = new RegExp(source);
  } catch (e) {
    return { why: `--iface-regex ${quote(source)} is not a valid regular expression (${(e as Error).message})` };
  }
  for (const iface of ifaces) {
    const addr = usableAddrs(iface).find((a) => re.test(a));
    if (addr) return { iface, addr };
  }
  const iface = ifaces.find((i) => re.test(i.name));
  if (iface) return withFirstAddr(iface, `--iface-regex ${quote(source)} matches ${iface.name}, which`);
  return { why: `no interface matches --iface-regex ${quote(source)}` };
}

function byCanReach(target: string, snap: UnderlaySnapshot): Attempt {
  const r = snap.canReach;
  if (!r || 'error' in r) return { why: `--iface-can-reach ${target}: no route (${r?.error ?? 'not looked up'})` };
  const iface = snap.ifaces.find((i) => i.name === r.dev);
  if (!iface) return { why: `--iface-can-reach ${target}: routed via ${r.dev ?? 'no single interface'}, not an interface listed here` };
  // The route's source address when it names one, else the interface's first (LookupExtIface).
  return r.src ? { iface, addr: r.src } : withFirstAddr(iface, `--iface-can-reach ${target}: routed via ${iface.name}, which`);
}

function byDefaultRoute(snap: UnderlaySnapshot): Attempt {
  const d = snap.defaultRoute;
  if (!d) return { why: 'no IPv4 default route to take the interface from; give --iface, --iface-regex, --iface-can-reach or --public-ip' };
  const iface = d.dev === undefined ? undefined : snap.ifaces.find((i) => i.name === d.dev);
  if (!iface) return { why: `the IPv4 default route (${d.type ?? 'unicast'}) has no single interface; give --iface, --iface-regex or --iface-can-reach` };
  return withFirstAddr(iface, `the default route's interface ${iface.name}`);
}

function byPublicIp(publicIp: string, ifaces: readonly IfaceAddrs[]): Attempt {
  const iface = ifaces.find((i) => i.addrs.some((a) => a.ip === publicIp));
  return iface
    ? { iface, addr: publicIp }
    : { why: `--public-ip ${publicIp} is not assigned to any interface here; give --iface (a name or address) to send from another address` };
}

/** "lo 127.0.0.1, eth0 192.0.2.1 192.0.2.9, dummy0 (no IPv4)": the interfaces a failure tried. */
function describe(ifaces: readonly IfaceAddrs[]): string {
  return ifaces.map((i) => (i.addrs.length ? `${i.name} ${i.addrs.map((a) => a.ip).join(' ')}` : `${i.name} (no IPv4)`)).join(', ');
}

/**
 * The interface, address and announced address the selectors give on this snapshot (see the
 * file comment); throws one line naming each selector tried, why each failed, and the
 * interfaces there were.
 */
export function selectUnderlay(sel: UnderlaySelectors, snap: UnderlaySnapshot): Underlay {
  const attempts: [string, () => Attempt][] = [];
  if (sel.ifaces.length === 0 && sel.regexes.length === 0 && sel.canReach === undefined) {
    if (sel.publicIp !== undefined) attempts.push([`--public-ip ${sel.publicIp}`, () => byPublicIp(sel.publicIp!, snap.ifaces)]);
    else attempts.push(['the default route', () => byDefaultRoute(snap)]);
  } else {
    for (const s of sel.ifaces) attempts.push([`--iface ${s}`, () => byIface(s, snap.ifaces)]);
    for (const r of sel.regexes) attempts.push([`--iface-regex ${quote(r)}`, () => byRegex(r, snap.ifaces)]);
    if (sel.canReach !== undefined) attempts.push([`--iface-can-reach ${sel.canReach}`, () => byCanReach(sel.canReach!, snap)]);
  }
  const skipped: string[] = [];
  for (const [how, attempt] of attempts) {
    const a = attempt();
    if ('why' in a) {
      skipped.push(a.why);
      continue;
    }
    // Where the chosen interface holds --public-ip itself, that is the address sent from (flanneld
    // would send from the interface's first address): peers send to it, so replies and
    // encapsulated packets leave from the address they were sent to.
    const holdsPublic = sel.publicIp !== undefined && a.iface.addrs.some((x) => x.ip === sel.publicIp);
    const addr = holdsPublic ? sel.publicIp! : a.addr;
    return { iface: a.iface.name, mtu: a.iface.mtu, addr, publicIp: sel.publicIp ?? addr, how, skipped };
  }
  throw new Error(`${skipped.join('; ')} (tried ${describe(snap.ifaces) || 'no interfaces'})`);
}

/** Reads what the selectors need from the machine (or netns), then selectUnderlay. */
export async function discoverUnderlay(sel: UnderlaySelectors, opts?: IpOptions): Promise<Underlay> {
  const snap: { -readonly [K in keyof UnderlaySnapshot]: UnderlaySnapshot[K] } = { ifaces: await listIfaces(opts) };
  const explicit = sel.ifaces.length > 0 || sel.regexes.length > 0 || sel.canReach !== undefined;
  if (!explicit && sel.publicIp === undefined) snap.defaultRoute = await defaultRoute(opts);
  if (sel.canReach !== undefined) {
    try {
      snap.canReach = await routeGet(sel.canReach, opts);
    } catch (e) {
      // ip's own words ("RTNETLINK answers: Network is unreachable"), not its command line.
      snap.canReach = { error: e instanceof IpCommandError ? e.stderr.trim().split('\n')[0]! : (e as Error).message };
    }
  }
  return selectUnderlay(sel, snap);
}
