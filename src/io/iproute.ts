// Thin async wrappers around iproute2's `ip`, for the set-up steps that are not on the packet
// path (link up, addresses, routes). execFile, never a shell: interface names and CIDRs go to
// ip as separate argv entries, so nothing in them is interpreted.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';

export interface IpOptions {
  /** Run inside this named network namespace (`ip -n NS`, i.e. /run/netns/NS). */
  netns?: string;
}

/** A failed `ip` run; the message carries the command line and ip's stderr. */
export class IpCommandError extends Error {
  constructor(
    message: string,
    readonly argv: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = 'IpCommandError';
  }
}

let ipPath: string | undefined;

// Debian ships ip as /usr/bin/ip (and /sbin/ip); a non-login root shell or a service unit may
// have a PATH without sbin, so look in the usual places before trusting PATH.
function ipBinary(): string {
  if (ipPath === undefined) {
    ipPath = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => fs.existsSync(p)) ?? 'ip';
  }
  return ipPath;
}

function fullArgs(args: readonly string[], opts: IpOptions | undefined): string[] {
  return opts?.netns ? ['-n', opts.netns, ...args] : [...args];
}

/** Runs `ip [-n NS] ARGS...` and resolves with its stdout. */
export function ip(args: readonly string[], opts?: IpOptions): Promise<string> {
  const argv = fullArgs(args, opts);
  return new Promise((resolve, reject) => {
    execFile(ipBinary(), argv, { maxBuffer: 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) {
        resolve(stdout);
        return;
      }
      const cmd = ['ip', ...argv].join(' ');
      const detail = stderr.trim() || err.message;
      const exitCode = typeof err.code === 'number' ? err.code : null;
      reject(new IpCommandError(`${cmd}: ${detail}`, argv, stderr, exitCode));
    });
  });
}

/** Runs `ip -j ARGS...` and parses its JSON output. */
export async function ipJson<T>(args: readonly string[], opts?: IpOptions): Promise<T> {
  const out = await ip(['-j', ...args], opts);
  // Some ip versions print nothing instead of [] when a listing is empty.
  const text = out.trim();
  if (text === '') return [] as unknown as T;
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    const cmd = ['ip', ...fullArgs(['-j', ...args], opts)].join(' ');
    throw new Error(`${cmd}: unparseable JSON output: ${(err as Error).message}`, { cause: err });
  }
}

function isNoSuchDevice(err: unknown): boolean {
  // ip prints `Device "X" does not exist.` for a missing link (iproute2 ll_name_to_index).
  return err instanceof IpCommandError && /does not exist/.test(err.stderr);
}

/** `ip link set dev DEV mtu MTU up`. */
export async function linkSetUpMtu(dev: string, mtu: number, opts?: IpOptions): Promise<void> {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    // 68: the smallest MTU an IPv4 link may have (RFC 791); the kernel refuses less.
    throw new RangeError(`MTU must be an integer in [68, 65535]: ${mtu}`);
  }
  await ip(['link', 'set', 'dev', dev, 'mtu', String(mtu), 'up'], opts);
}

/**
 * Adds CIDR (e.g. "10.244.1.0/32") to DEV. Uses `ip addr replace`, which adds the address or
 * leaves an identical one in place, so a restarted daemon does not fail on "File exists".
 */
export async function addrAdd(dev: string, cidr: string, opts?: IpOptions): Promise<void> {
  await ip(['addr', 'replace', cidr, 'dev', dev], opts);
}

export interface RouteOptions extends IpOptions {
  /** Next hop. */
  via?: string;
  /** Treat the next hop as on-link even if no address on DEV covers it (host-gw, TUN routes). */
  onlink?: boolean;
}

/** `ip route replace DST [via VIA] dev DEV [onlink]`: installs or overwrites the route. */
export async function routeReplace(dst: string, dev: string, opts: RouteOptions = {}): Promise<void> {
  const args = ['route', 'replace', dst];
  if (opts.via) args.push('via', opts.via);
  args.push('dev', dev);
  if (opts.onlink) args.push('onlink');
  await ip(args, opts);
}

/** `ip route del DST dev DEV`. */
export async function routeDel(dst: string, dev: string, opts?: IpOptions): Promise<void> {
  await ip(['route', 'del', dst, 'dev', dev], opts);
}

/** `ip link del dev DEV`. */
export async function linkDel(dev: string, opts?: IpOptions): Promise<void> {
  await ip(['link', 'del', 'dev', dev], opts);
}

/** Whether link DEV exists; other failures (e.g. a missing netns) still throw. */
export async function linkExists(dev: string, opts?: IpOptions): Promise<boolean> {
  try {
    await ip(['link', 'show', 'dev', dev], opts);
    return true;
  } catch (err) {
    if (isNoSuchDevice(err)) return false;
    throw err;
  }
}

/** The parts of `ip -j addr show` this module reads. */
interface IpAddrJson {
  ifname: string;
  mtu: number;
  addr_info?: { family: string; local: string; prefixlen: number; deprecated?: boolean; dynamic?: boolean; preferred_life_time?: number }[];
}

/** The interface holding IPv4 address `ip`, with its MTU and the address's prefix length. */
export async function ifaceForAddress(addr: string, opts?: IpOptions): Promise<{ name: string; mtu: number; prefixLen: number } | undefined> {
  const links = await ipJson<IpAddrJson[]>(['addr', 'show'], opts);
  for (const link of links) {
    for (const a of link.addr_info ?? []) {
      if (a.family === 'inet' && a.local === addr) {
        return { name: link.ifname, mtu: link.mtu, prefixLen: a.prefixlen };
      }
    }
  }
  return undefined;
}

/** Name, MTU and IPv4 addresses of interface NAME; undefined if it does not exist. */
export async function ifaceInfo(
  name: string,
  opts?: IpOptions,
): Promise<{ name: string; mtu: number; addrs: { ip: string; prefixLen: number }[] } | undefined> {
  let links: IpAddrJson[];
  try {
    links = await ipJson<IpAddrJson[]>(['addr', 'show', 'dev', name], opts);
  } catch (err) {
    if (isNoSuchDevice(err)) return undefined;
    throw err;
  }
  const link = links[0];
  if (!link) return undefined;
  const addrs = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ ip: a.local, prefixLen: a.prefixlen }));
  return { name: link.ifname, mtu: link.mtu, addrs };
}

/** An interface with its IPv4 addresses, as interface discovery (daemon/iface.ts) reads them. */
export interface IfaceAddrs {
  name: string;
  index: number;
  mtu: number;
  addrs: {
    ip: string;
    prefixLen: number;
    /** Preferred lifetime over (IFA_F_DEPRECATED): flanneld never picks such an address. */
    deprecated: boolean;
    /** Not IFA_F_PERMANENT (e.g. from DHCP): flanneld prefers permanent ones. */
    dynamic: boolean;
  }[];
}

/** Every interface, in ifindex order (as the kernel lists them), with its IPv4 addresses. */
export async function listIfaces(opts?: IpOptions): Promise<IfaceAddrs[]> {
  const links = await ipJson<(IpAddrJson & { ifindex: number })[]>(['addr', 'show'], opts);
  return links.map((l) => ({
    name: l.ifname,
    index: l.ifindex,
    mtu: l.mtu,
    addrs: (l.addr_info ?? [])
      .filter((a) => a.family === 'inet')
      .map((a) => ({ ip: a.local, prefixLen: a.prefixlen, deprecated: a.deprecated === true || a.preferred_life_time === 0, dynamic: a.dynamic === true })),
  }));
}

/** The parts of `ip -j route` output read here. */
interface IpRouteJson {
  dst?: string;
  dev?: string;
  prefsrc?: string;
  type?: string;
}

/**
 * The first IPv4 default route of the main table: its device, or undefined without one (and
 * dev undefined for a default with no single device: blackhole, unreachable, multipath).
 */
export async function defaultRoute(opts?: IpOptions): Promise<{ dev?: string; type?: string } | undefined> {
  const routes = await ipJson<IpRouteJson[]>(['-4', 'route', 'show', 'table', 'main', 'default'], opts);
  const r = routes[0];
  return r ? { dev: r.dev, type: r.type } : undefined;
}

/** `ip route get ADDR`: the device and source address the kernel would send to ADDR from. */
export async function routeGet(addr: string, opts?: IpOptions): Promise<{ dev?: string; src?: string }> {
  const routes = await ipJson<IpRouteJson[]>(['route', 'get', addr], opts);
  const r = routes[0];
  return { dev: r?.dev, src: r?.prefsrc };
}
