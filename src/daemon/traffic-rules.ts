// The node's masquerade and forward rules, as flanneld installs them (pkg/trafficmngr/iptables
// and pkg/trafficmngr/nftables), in weft's own chains: WEFT-POSTRTG (nat) and WEFT-FWD (filter)
// with iptables, or one `table ip weft` with native nftables (net-conf EnableNFTables).
//
// The rule sets are pure functions of (cluster network, this node's subnet); TrafficRules applies
// them, checks every --iptables-resync seconds that nobody removed or changed them (an
// `iptables -F` by hand, a firewall reload) and puts them back, and removes them on a clean stop.
// Installing replaces whatever a crashed run left: iptables-restore --noflush rewrites our chain
// whole (a declared chain is flushed), the jump from the built-in chain is added only if absent,
// and the nftables table is deleted and re-created in one transaction.
import type { Logger } from 'pino';
import { NetfilterCommandError, NetfilterMissingError, netfilter, netfilterAvailable, type NetfilterOptions, type NetfilterTool } from '../io/netfilter';

export type TrafficRulesBackend = 'iptables' | 'nftables';

export interface TrafficRuleSpec {
  /** The cluster network, e.g. "10.244.0.0/16". */
  network: string;
  /** This node's lease, e.g. "10.244.1.0/24". */
  subnet: string;
  /** --ip-masq: masquerade pods' traffic leaving the cluster network. */
  masquerade: boolean;
  /** --iptables-forward-rules: accept forwarding to and from the cluster network. */
  forward: boolean;
  /** MASQUERADE --random-fully (nft: fully-random); off when the kernel or iptables refuses it. */
  randomFully: boolean;
}

export const MASQ_CHAIN = 'WEFT-POSTRTG';
export const FORWARD_CHAIN = 'WEFT-FWD';
export const NFT_TABLE = 'weft';
/** Multicast stays as it is: masquerading it makes no sense and breaks protocols that read the source. */
export const MULTICAST = '224.0.0.0/4';
/**
 * kube-proxy marks what it will masquerade itself (KUBE-MARK-MASQ, bit 0x4000); flanneld leaves
 * those packets to it, as NATing them twice hit a kernel bug on some versions.
 */
export const KUBE_PROXY_MARK = '0x4000/0x4000';
const MASQ_COMMENT = 'weft masq';
const FORWARD_COMMENT = 'weft forward';

/** One of weft's iptables chains, the rules in it, and the jump to it from a built-in chain. */
export interface IptablesChain {
  table: 'nat' | 'filter';
  chain: typeof MASQ_CHAIN | typeof FORWARD_CHAIN;
  /** The built-in chain that jumps to ours. */
  from: 'POSTROUTING' | 'FORWARD';
  /** The jump rule's spec in `from` (as given to `iptables -A FROM ...`). */
  jump: string[];
  /** The rule specs in `chain`, in order. */
  rules: string[][];
}

/**
 * flanneld's masquerade rules, in order; the first match decides:
 * 1. packets kube-proxy marked: RETURN (kube-proxy masquerades them itself);
 * 2. this node's pods to the cluster network, and 3. the cluster network to this node's pods:
 *    RETURN (pod to pod keeps its own addresses, across nodes too);
 * 4. from outside the cluster network to this node's pods: RETURN (e.g. a NodePort's traffic
 *    DNATed to a local pod: the pod answers its real client);
 * 5. the cluster network to anything but multicast: MASQUERADE (pods to the world outside);
 * 6. from outside the cluster network to the cluster network: MASQUERADE (the host itself, or
 *    traffic it forwards, reaching remote pods gets an address they can answer).
 */
export function iptablesMasqChain(spec: TrafficRuleSpec): IptablesChain {
  const { network, subnet } = spec;
  const c = ['-m', 'comment', '--comment', MASQ_COMMENT];
  const masq = spec.randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
  return {
    table: 'nat',
    chain: MASQ_CHAIN,
    from: 'POSTROUTING',
    jump: [...c, '-j', MASQ_CHAIN],
    rules: [
      ['-m', 'mark', '--mark', KUBE_PROXY_MARK, ...c, '-j', 'RETURN'],
      ['-s', subnet, '-d', network, ...c, '-j', 'RETURN'],
      ['-s', network, '-d', subnet, ...c, '-j', 'RETURN'],
      ['!', '-s', network, '-d', subnet, ...c, '-j', 'RETURN'],
      ['-s', network, '!', '-d', MULTICAST, ...c, ...masq],
      ['!', '-s', network, '-d', network, ...c, ...masq],
    ],
  };
}

/**
 * flanneld's forward rules: accept anything from or to the cluster network, so a FORWARD policy
 * of DROP (Docker sets one) does not stop pod traffic. Nothing else is opened.
 */
export function iptablesForwardChain(spec: Pick<TrafficRuleSpec, 'network'>): IptablesChain {
  const c = ['-m', 'comment', '--comment', FORWARD_COMMENT];
  return {
    table: 'filter',
    chain: FORWARD_CHAIN,
    from: 'FORWARD',
    jump: [...c, '-j', FORWARD_CHAIN],
    rules: [
      ['-s', spec.network, ...c, '-j', 'ACCEPT'],
      ['-d', spec.network, ...c, '-j', 'ACCEPT'],
    ],
  };
}

/** The chains SPEC asks for. */
export function iptablesChains(spec: TrafficRuleSpec): IptablesChain[] {
  return [...(spec.masquerade ? [iptablesMasqChain(spec)] : []), ...(spec.forward ? [iptablesForwardChain(spec)] : [])];
}

function restoreWord(w: string): string {
  return /^[A-Za-z0-9_.:/!-]+$/.test(w) ? w : `"${w.replace(/(["\\])/g, '\\$1')}"`;
}

/**
 * iptables-restore input that (with --noflush) creates the chain or empties it, then fills it,
 * in one commit: no moment where the chain is half there.
 */
export function iptablesRestoreInput(c: IptablesChain): string {
  const lines = [`*${c.table}`, `:${c.chain} - [0:0]`, ...c.rules.map((r) => ['-A', c.chain, ...r].map(restoreWord).join(' ')), 'COMMIT'];
  return lines.join('\n') + '\n';
}

/** The `table ip weft` body SPEC asks for: the same rules as iptables, as nft statements. */
export function nftTableBody(spec: TrafficRuleSpec): string[] {
  const { network, subnet } = spec;
  const masq = spec.randomFully ? 'masquerade fully-random' : 'masquerade';
  const lines: string[] = [];
  if (spec.masquerade) {
    lines.push(
      '  chain postrouting {',
      // srcnat (100): where NAT's own POSTROUTING sits, as iptables' nat table does.
      '    type nat hook postrouting priority srcnat; policy accept;',
      // `& mask == mask`: the bit test iptables' `--mark 0x4000/0x4000` does (flanneld's nftables
      // code compares the whole mark, which misses kube-proxy's mark when other bits are set).
      '    meta mark & 0x4000 == 0x4000 return',
      `    ip saddr ${subnet} ip daddr ${network} return`,
      `    ip saddr ${network} ip daddr ${subnet} return`,
      // As iptables' `! -s NETWORK -d SUBNET` (flanneld's nftables code says `saddr != SUBNET`,
      // which also returns for remote pods and so never reaches the host masquerade below).
      `    ip saddr != ${network} ip daddr ${subnet} return`,
      `    ip saddr ${network} ip daddr != ${MULTICAST} ${masq}`,
      `    ip saddr != ${network} ip daddr ${network} ${masq}`,
      '  }',
    );
  }
  if (spec.forward) {
    lines.push(
      '  chain forward {',
      // Policy accept always: this chain only adds accepts. An nftables accept ends this chain
      // only; a drop in another table's forward chain still drops (see TrafficRules.warnings).
      '    type filter hook forward priority filter; policy accept;',
      `    ip saddr ${network} accept`,
      `    ip daddr ${network} accept`,
      '  }',
    );
  }
  return lines;
}

/**
 * `nft -f -` input that replaces `table ip weft` with SPEC's in one transaction: `add` makes the
 * delete succeed when no table is there, and whatever an earlier run left goes with it.
 */
export function nftScript(spec: TrafficRuleSpec): string {
  const body = nftTableBody(spec);
  const lines = [`add table ip ${NFT_TABLE}`, `delete table ip ${NFT_TABLE}`];
  if (body.length > 0) lines.push(`table ip ${NFT_TABLE} {`, ...body, '}');
  return lines.join('\n') + '\n';
}

/** Runs a netfilter tool; the default runs it for real (src/io/netfilter.ts), tests pass their own. */
export type NetfilterRunner = (tool: NetfilterTool, args: readonly string[], opts?: NetfilterOptions) => Promise<string>;

export interface TrafficRulesOptions {
  backend: TrafficRulesBackend;
  network: string;
  subnet: string;
  masquerade: boolean;
  /** --ip-masq-fully-random-disable: plain MASQUERADE from the start (default: --random-fully, falling back when refused). */
  noRandomFully?: boolean;
  forward: boolean;
  /** --iptables-resync: seconds between checks; 0 never checks. */
  resyncS: number;
  log: Logger;
  run?: NetfilterRunner;
}

export interface TrafficRulesStatus {
  backend: TrafficRulesBackend;
  masquerade: boolean;
  randomFully: boolean;
  forward: boolean;
  /** Where the rules live: iptables chains (table/chain) or the nftables table. */
  installedIn: string[];
  installed: boolean;
  /** Why forward rules alone were not installed: the tool is missing (the daemon runs on without them). */
  skipped?: string;
  resyncPeriodS: number;
  checks: number;
  /** Times a check found rules missing or changed and put them back. */
  resyncs: number;
  lastResync?: string;
  lastResyncReason?: string;
  errors: number;
  lastError?: string;
}

/** The masquerade and forward rules of one daemon: install, resync, remove. */
export class TrafficRules {
  private readonly run: NetfilterRunner;
  private readonly log: Logger;
  private randomFully = true;
  private installed = false;
  /** Rules may be in place (an install began, maybe failed half-way): remove() must look. */
  private touched = false;
  private skipped?: string;
  /** What the tools listed right after install, compared at every check. */
  private snapshot = new Map<string, string>();
  private timer?: NodeJS.Timeout;
  private busy?: Promise<void>;
  private checks = 0;
  private resyncs = 0;
  private errors = 0;
  private lastResync?: string;
  private lastResyncReason?: string;
  private lastError?: string;

  constructor(private readonly opts: TrafficRulesOptions) {
    this.run = opts.run ?? netfilter;
    this.log = opts.log;
    this.randomFully = opts.noRandomFully !== true;
  }

  /** Whether there is anything to install (--ip-masq or forward rules). */
  get wanted(): boolean {
    return this.opts.masquerade || this.opts.forward;
  }

  /** Installed, or nothing to install, or forward rules skipped for want of the tool. */
  get settled(): boolean {
    return !this.wanted || this.installed || this.skipped !== undefined;
  }

  spec(): TrafficRuleSpec {
    const { network, subnet, masquerade, forward } = this.opts;
    return { network, subnet, masquerade, forward, randomFully: this.randomFully };
  }

  /**
   * Installs the rules (replacing any an earlier run left), and removes the other backend's and
   * any unwanted chain an earlier run with other flags left. Throws with the tool's error when
   * the rules cannot be installed. --random-fully is tried first; refused, the rules go in
   * without it and a line says so.
   */
  async install(): Promise<void> {
    await this.removeOtherBackend();
    if (!this.wanted) {
      // Nothing asked for: only clear what an earlier run with other flags left, and never fail
      // for it (a node without --ip-masq and forward rules need not have the tools at all).
      await this.apply().catch((e: Error) => this.log.debug({ err: e.message }, 'no traffic rules wanted; clearing leftovers failed'));
      return;
    }
    this.touched = true;
    try {
      await this.apply();
    } catch (e) {
      if (e instanceof NetfilterMissingError && !this.opts.masquerade) {
        this.touched = false;
        // Forward rules are on by default, as in flanneld, which logs and runs on when iptables
        // is missing; so does weft: a host (or container) without the tool has no FORWARD
        // policy of its own to open. --ip-masq asked for explicitly is another matter (below).
        this.skipped = e.message;
        this.log.warn({ err: e.message }, 'forward rules not installed: the tool is missing; pod traffic depends on the FORWARD policy being ACCEPT');
        return;
      }
      if (e instanceof NetfilterMissingError) {
        // With --ip-masq, subnet.env says FLANNEL_IPMASQ=true and the CNI plugin leaves NAT to
        // us: starting without the rules would silently cut pods off from outside the network.
        throw new Error(`--ip-masq: cannot install the masquerade rules: ${e.message}`, { cause: e });
      }
      if (!(e instanceof NetfilterCommandError) || !this.opts.masquerade || !this.randomFully) throw e;
      this.randomFully = false;
      try {
        await this.apply();
      } catch {
        this.randomFully = true;
        throw e;
      }
      this.log.warn(
        { err: e.message.split('\n')[0] },
        `${this.opts.backend === 'nftables' ? 'masquerade fully-random' : 'MASQUERADE --random-fully'} refused here; masquerading without it (source ports then follow the kernel's default choice)`,
      );
    }
    this.installed = true;
    this.log.info(
      {
        backend: this.opts.backend,
        masquerade: this.opts.masquerade,
        randomFully: this.opts.masquerade && this.randomFully,
        forward: this.opts.forward,
        in: this.where(),
      },
      'traffic rules installed',
    );
    await this.warnForwardDrop();
  }

  /** What differs from what install() left; empty when everything is in place. */
  async check(): Promise<string[]> {
    if (!this.installed) return [];
    const differences: string[] = [];
    // Every listing install() should have taken: one missing means the last apply failed half-way.
    const keys = this.opts.backend === 'nftables' ? ['nft'] : iptablesChains(this.spec()).map((c) => `${c.table}/${c.chain}`);
    for (const key of keys) {
      const expected = this.snapshot.get(key);
      const now = expected === undefined ? undefined : await this.list(key).catch((e: Error) => `(error: ${e.message})`);
      if (now === undefined || now !== expected) differences.push(key === 'nft' ? `nftables table ip ${NFT_TABLE}` : `${key} rules`);
    }
    if (this.opts.backend === 'iptables') {
      for (const c of iptablesChains(this.spec())) {
        if (!(await this.jumpExists(c))) differences.push(`jump ${c.from} -> ${c.chain}`);
      }
    }
    return differences;
  }

  /** Checks every resyncS seconds and puts back what is missing. */
  startResync(): void {
    if (this.opts.resyncS <= 0 || !this.installed || this.timer) return;
    this.timer = setInterval(() => {
      this.busy ??= this.resync().finally(() => (this.busy = undefined));
    }, this.opts.resyncS * 1000);
    this.timer.unref();
  }

  /** One check, and a reinstall if anything is off. */
  async resync(): Promise<void> {
    try {
      this.checks++;
      const diff = await this.check();
      if (diff.length === 0) return;
      this.log.warn({ missing: diff }, 'traffic rules were removed or changed; putting them back');
      await this.apply();
      this.resyncs++;
      this.lastResync = new Date().toISOString();
      this.lastResyncReason = diff.join(', ');
    } catch (e) {
      this.errors++;
      this.lastError = (e as Error).message;
      this.log.warn({ err: this.lastError }, 'traffic rules resync failed; trying again at the next period');
    }
  }

  /** Stops the resync loop and removes every rule, chain and table of ours. */
  async remove(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.busy;
    if (!this.touched) return;
    this.installed = false;
    this.touched = false;
    if (this.opts.backend === 'nftables') await this.removeNft();
    else for (const c of [iptablesMasqChain(this.spec()), iptablesForwardChain(this.spec())]) await this.removeIptablesChain(c);
    this.snapshot.clear();
  }

  status(): TrafficRulesStatus {
    return {
      backend: this.opts.backend,
      masquerade: this.opts.masquerade,
      randomFully: this.opts.masquerade && this.randomFully,
      forward: this.opts.forward,
      installedIn: this.installed ? this.where() : [],
      installed: this.installed,
      skipped: this.skipped,
      resyncPeriodS: this.opts.resyncS,
      checks: this.checks,
      resyncs: this.resyncs,
      lastResync: this.lastResync,
      lastResyncReason: this.lastResyncReason,
      errors: this.errors,
      lastError: this.lastError,
    };
  }

  private where(): string[] {
    if (this.opts.backend === 'nftables') return this.wanted ? [`nftables table ip ${NFT_TABLE}`] : [];
    return iptablesChains(this.spec()).map((c) => `iptables ${c.table} ${c.chain} (from ${c.from})`);
  }

  private async apply(): Promise<void> {
    this.snapshot.clear();
    const spec = this.spec();
    if (this.opts.backend === 'nftables') {
      await this.run('nft', ['-f', '-'], { input: nftScript(spec) });
      if (this.wanted) this.snapshot.set('nft', await this.list('nft'));
      return;
    }
    const wanted = iptablesChains(spec);
    for (const c of wanted) {
      await this.run('iptables-restore', ['-w', '--noflush'], { input: iptablesRestoreInput(c) });
      if (!(await this.jumpExists(c))) await this.iptables(c.table, ['-A', c.from, ...c.jump]);
      const key = `${c.table}/${c.chain}`;
      this.snapshot.set(key, await this.list(key));
    }
    // A chain an earlier run installed that this one does not want (say --ip-masq dropped).
    for (const c of [iptablesMasqChain(spec), iptablesForwardChain(spec)]) {
      if (!wanted.some((w) => w.chain === c.chain)) await this.removeIptablesChain(c);
    }
  }

  /** The listing compared at each check: `iptables -S CHAIN`, or `nft list table`. */
  private list(key: string): Promise<string> {
    if (key === 'nft') return this.run('nft', ['list', 'table', 'ip', NFT_TABLE]);
    const [table, chain] = key.split('/');
    return this.iptables(table, ['-S', chain]);
  }

  private iptables(table: string, args: string[]): Promise<string> {
    return this.run('iptables', ['-w', '-t', table, ...args]);
  }

  private async jumpExists(c: IptablesChain): Promise<boolean> {
    try {
      await this.iptables(c.table, ['-C', c.from, ...c.jump]);
      return true;
    } catch (e) {
      // -C exits 1 when the rule (or the chain it names) is not there.
      if (e instanceof NetfilterCommandError && e.exitCode === 1) return false;
      throw e;
    }
  }

  /** Removes every jump to C, then C itself; what is already gone is fine. */
  private async removeIptablesChain(c: IptablesChain): Promise<void> {
    // A jump added twice (by hand, or by a version that appended blindly) goes too; bounded in
    // case -D keeps "succeeding" for a reason of its own.
    for (let i = 0; i < 16; i++) {
      if (!(await this.ok(this.iptables(c.table, ['-D', c.from, ...c.jump])))) break;
    }
    const existed = await this.ok(this.iptables(c.table, ['-F', c.chain]));
    if (existed) await this.iptables(c.table, ['-X', c.chain]);
  }

  private async removeNft(): Promise<void> {
    await this.run('nft', ['-f', '-'], { input: `add table ip ${NFT_TABLE}\ndelete table ip ${NFT_TABLE}\n` });
  }

  /**
   * Switching EnableNFTables between runs leaves the other backend's rules from the run before;
   * they are removed (if that tool is installed at all) so the two do not both act.
   */
  private async removeOtherBackend(): Promise<void> {
    const spec = this.spec();
    try {
      if (this.opts.backend === 'nftables') {
        if (this.opts.run || netfilterAvailable('iptables')) {
          for (const c of [iptablesMasqChain(spec), iptablesForwardChain(spec)]) {
            if (await this.ok(this.iptables(c.table, ['-S', c.chain]))) await this.removeIptablesChain(c);
          }
        }
      } else if (this.opts.run || netfilterAvailable('nft')) {
        if (await this.ok(this.run('nft', ['list', 'table', 'ip', NFT_TABLE]))) await this.removeNft();
      }
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'could not remove the other backend’s leftover weft rules');
    }
  }

  /**
   * An nftables accept only ends the chain it is in: every other base chain on the forward hook
   * still sees the packet, and a drop there (iptables' FORWARD policy DROP, which Docker sets,
   * lives in table ip filter) drops it. Say so instead of letting pod traffic vanish.
   */
  private async warnForwardDrop(): Promise<void> {
    if (this.opts.backend !== 'nftables' || !this.opts.forward) return;
    const chain = await this.run('nft', ['list', 'chain', 'ip', 'filter', 'FORWARD']).catch(() => '');
    if (/policy drop/.test(chain)) {
      this.log.warn(
        `iptables' FORWARD policy is DROP (table ip filter): weft's nftables accept for ${this.opts.network} cannot override a drop in another table, ` +
          'so forwarded pod traffic is dropped there; open FORWARD for the cluster network or run without EnableNFTables',
      );
    }
  }

  private async ok(p: Promise<unknown>): Promise<boolean> {
    try {
      await p;
      return true;
    } catch (e) {
      if (e instanceof NetfilterCommandError) return false;
      throw e;
    }
  }
}
