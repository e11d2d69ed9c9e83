// The masquerade and forward rule sets (pure functions of network and subnet), and TrafficRules'
// install / check / resync / remove logic against a recording fake of the netfilter tools. The
// rules acting on real packets are test/integration/traffic-rules-lab.test.ts's business.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import {
  iptablesChains,
  iptablesForwardChain,
  iptablesMasqChain,
  iptablesRestoreInput,
  nftScript,
  TrafficRules,
  type NetfilterRunner,
  type TrafficRuleSpec,
} from '../../src/daemon/traffic-rules';
import { NetfilterCommandError, NetfilterMissingError, type NetfilterTool } from '../../src/io/netfilter';

const SPEC: TrafficRuleSpec = { network: '10.244.0.0/16', subnet: '10.244.3.0/24', masquerade: true, forward: true, randomFully: true };
const C = ['-m', 'comment', '--comment', 'weft masq'];

describe('iptables rule sets', () => {
  it('masquerade: flanneld’s six rules in order, in WEFT-POSTRTG jumped to from POSTROUTING', () => {
    const c = iptablesMasqChain(SPEC);
    expect(c).toMatchObject({ table: 'nat', chain: 'WEFT-POSTRTG', from: 'POSTROUTING' });
    expect(c.jump).toEqual([...C, '-j', 'WEFT-POSTRTG']);
    expect(c.rules).toEqual([
      ['-m', 'mark', '--mark', '0x4000/0x4000', ...C, '-j', 'RETURN'],
      ['-s', '10.244.3.0/24', '-d', '10.244.0.0/16', ...C, '-j', 'RETURN'],
      ['-s', '10.244.0.0/16', '-d', '10.244.3.0/24', ...C, '-j', 'RETURN'],
      ['!', '-s', '10.244.0.0/16', '-d', '10.244.3.0/24', ...C, '-j', 'RETURN'],
      ['-s', '10.244.0.0/16', '!', '-d', '224.0.0.0/4', ...C, '-j', 'MASQUERADE', '--random-fully'],
      ['!', '-s', '10.244.0.0/16', '-d', '10.244.0.0/16', ...C, '-j', 'MASQUERADE', '--random-fully'],
    ]);
  });

  it('without --random-fully the MASQUERADE rules are plain, and nothing else changes', () => {
    const a = iptablesMasqChain(SPEC).rules;
    const b = iptablesMasqChain({ ...SPEC, randomFully: false }).rules;
    expect(b.slice(0, 4)).toEqual(a.slice(0, 4));
    expect(b.slice(4).map((r) => r.slice(-1)[0])).toEqual(['MASQUERADE', 'MASQUERADE']);
    expect(b.flat()).not.toContain('--random-fully');
  });

  it('forward: ACCEPT from and to the network in WEFT-FWD, jumped to from FORWARD', () => {
    const c = iptablesForwardChain(SPEC);
    expect(c).toMatchObject({ table: 'filter', chain: 'WEFT-FWD', from: 'FORWARD' });
    expect(c.rules).toEqual([
      ['-s', '10.244.0.0/16', '-m', 'comment', '--comment', 'weft forward', '-j', 'ACCEPT'],
      ['-d', '10.244.0.0/16', '-m', 'comment', '--comment', 'weft forward', '-j', 'ACCEPT'],
    ]);
  });

  it('only the chains the flags ask for', () => {
    expect(iptablesChains(SPEC).map((c) => c.chain)).toEqual(['WEFT-POSTRTG', 'WEFT-FWD']);
    expect(iptablesChains({ ...SPEC, masquerade: false }).map((c) => c.chain)).toEqual(['WEFT-FWD']);
    expect(iptablesChains({ ...SPEC, forward: false }).map((c) => c.chain)).toEqual(['WEFT-POSTRTG']);
    expect(iptablesChains({ ...SPEC, masquerade: false, forward: false })).toEqual([]);
  });

  it('iptables-restore input declares the chain (created or emptied) and quotes the comment', () => {
    expect(iptablesRestoreInput(iptablesForwardChain(SPEC))).toBe(
      [
        '*filter',
        ':WEFT-FWD - [0:0]',
        '-A WEFT-FWD -s 10.244.0.0/16 -m comment --comment "weft forward" -j ACCEPT',
        '-A WEFT-FWD -d 10.244.0.0/16 -m comment --comment "weft forward" -j ACCEPT',
        'COMMIT',
        '',
      ].join('\n'),
    );
    const masq = iptablesRestoreInput(iptablesMasqChain(SPEC));
    expect(masq).toContain('-A WEFT-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "weft masq" -j MASQUERADE --random-fully\n');
    expect(masq.startsWith('*nat\n:WEFT-POSTRTG - [0:0]\n')).toBe(true);
  });
});

describe('nftables rule set', () => {
  it('replaces table ip weft in one script: the same rules as iptables, as nft statements', () => {
    expect(nftScript(SPEC)).toBe(
      [
        'add table ip weft',
        'delete table ip weft',
        'table ip weft {',
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        '    meta mark & 0x4000 == 0x4000 return',
        '    ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return',
        '    ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return',
        '    ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return',
        '    ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random',
        '    ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random',
        '  }',
        '  chain forward {',
        '    type filter hook forward priority filter; policy accept;',
        '    ip saddr 10.244.0.0/16 accept',
        '    ip daddr 10.244.0.0/16 accept',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('each flag alone gives its chain alone; neither only deletes the table', () => {
    const fwdOnly = nftScript({ ...SPEC, masquerade: false });
    expect(fwdOnly).toContain('chain forward');
    expect(fwdOnly).not.toContain('postrouting');
    const masqOnly = nftScript({ ...SPEC, forward: false, randomFully: false });
    expect(masqOnly).not.toContain('chain forward');
    expect(masqOnly).toContain('ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade\n');
    expect(nftScript({ ...SPEC, masquerade: false, forward: false })).toBe('add table ip weft\ndelete table ip weft\n');
  });
});

/**
 * A tiny in-memory iptables/nft: chains hold rule lines, `-S` lists them, `-C/-A/-D` act on the
 * built-in chains, iptables-restore replaces a chain. Enough to see what TrafficRules asks for.
 */
class FakeNetfilter {
  chains = new Map<string, string[]>();
  nftTable?: string;
  calls: string[] = [];
  refuseRandomFully = false;
  /** iptables-restore of this table fails (a missing kernel module, say). */
  failTable?: string;
  missing = new Set<NetfilterTool>();

  constructor() {
    for (const b of ['nat/POSTROUTING', 'filter/FORWARD']) this.chains.set(b, []);
  }

  fail(tool: NetfilterTool, args: readonly string[], msg: string): never {
    throw new NetfilterCommandError(`${tool} ${args.join(' ')}: ${msg}`, tool, args, msg, 1);
  }

  run: NetfilterRunner = (tool, args, opts) => {
    this.calls.push(`${tool} ${args.join(' ')}`);
    return Promise.resolve().then(() => this.exec(tool, args, opts?.input ?? ''));
  };

  private exec(tool: NetfilterTool, args: readonly string[], input: string): string {
    if (this.missing.has(tool)) throw new NetfilterMissingError(tool);
    if (tool === 'nft') {
      if (args[0] === 'list') {
        if (args[1] === 'table' && this.nftTable !== undefined) return this.nftTable;
        this.fail(tool, args, 'No such file or directory');
      }
      if (this.refuseRandomFully && input.includes('fully-random')) this.fail(tool, args, 'Operation not supported');
      const i = input.indexOf('table ip weft {');
      this.nftTable = i >= 0 ? input.slice(i) : undefined;
      return '';
    }
    if (tool === 'iptables-restore') {
      if (this.refuseRandomFully && input.includes('--random-fully')) this.fail(tool, args, 'RULE_APPEND failed (Operation not supported)');
      const lines = input.trim().split('\n');
      const table = lines[0].slice(1);
      if (table === this.failTable) this.fail(tool, args, `can't initialize iptables table \`${table}': Table does not exist`);
      const chain = lines[1].slice(1).split(' ')[0];
      this.chains.set(
        `${table}/${chain}`,
        lines.filter((l) => l.startsWith('-A ')),
      );
      return '';
    }
    const [w, t, table, op, chain, ...rest] = args;
    expect([w, t]).toEqual(['-w', '-t']);
    const key = `${table}/${chain}`;
    const rule = ['-A', chain, ...rest].join(' ');
    const rules = this.chains.get(key);
    switch (op) {
      case '-S':
        if (!rules) this.fail(tool, args, 'No chain/target/match by that name.');
        return [`-N ${chain}`, ...rules].join('\n') + '\n';
      case '-C':
        if (!rules?.includes(rule)) this.fail(tool, args, 'Bad rule (does a matching rule exist in that chain?).');
        return '';
      case '-A':
        rules!.push(rule);
        return '';
      case '-D': {
        const i = rules?.indexOf(rule) ?? -1;
        if (i < 0) this.fail(tool, args, 'Bad rule (does a matching rule exist in that chain?).');
        rules!.splice(i, 1);
        return '';
      }
      case '-F':
        if (!rules) this.fail(tool, args, 'No chain/target/match by that name.');
        rules.length = 0;
        return '';
      case '-X':
        this.chains.delete(key);
        return '';
      default:
        throw new Error(`fake iptables: ${args.join(' ')}`);
    }
  }
}

function rules(fake: FakeNetfilter, o: Partial<ConstructorParameters<typeof TrafficRules>[0]> = {}) {
  const lines: { level: string; msg: string }[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write: (s: string) => {
        const j = JSON.parse(s) as { level: number; msg: string };
        lines.push({ level: pino.levels.labels[j.level], msg: j.msg });
      },
    },
  );
  const tr = new TrafficRules({
    backend: 'iptables',
    network: '10.244.0.0/16',
    subnet: '10.244.3.0/24',
    masquerade: true,
    forward: true,
    resyncS: 5,
    log,
    run: fake.run,
    ...o,
  });
  return { tr, lines };
}

const JUMP_MASQ = '-A POSTROUTING -m comment --comment weft masq -j WEFT-POSTRTG';
const JUMP_FWD = '-A FORWARD -m comment --comment weft forward -j WEFT-FWD';

describe('TrafficRules (iptables)', () => {
  it('installs both chains and one jump each; a second install (a restart after a crash) duplicates nothing', async () => {
    const fake = new FakeNetfilter();
    const { tr } = rules(fake);
    await tr.install();
    expect(fake.chains.get('nat/POSTROUTING')).toEqual([JUMP_MASQ]);
    expect(fake.chains.get('filter/FORWARD')).toEqual([JUMP_FWD]);
    expect(fake.chains.get('nat/WEFT-POSTRTG')).toHaveLength(6);
    expect(fake.chains.get('filter/WEFT-FWD')).toHaveLength(2);
    const again = rules(fake).tr;
    await again.install();
    expect(fake.chains.get('nat/POSTROUTING')).toEqual([JUMP_MASQ]);
    expect(fake.chains.get('nat/WEFT-POSTRTG')).toHaveLength(6);
    expect(await again.check()).toEqual([]);
    expect(again.status()).toMatchObject({ backend: 'iptables', installed: true, masquerade: true, randomFully: true, forward: true });
  });

  it('falls back to plain MASQUERADE with a log line where --random-fully is refused', async () => {
    const fake = new FakeNetfilter();
    fake.refuseRandomFully = true;
    const { tr, lines } = rules(fake);
    await tr.install();
    expect(fake.chains.get('nat/WEFT-POSTRTG')!.join('\n')).not.toContain('random-fully');
    expect(fake.chains.get('nat/WEFT-POSTRTG')!.filter((l) => l.endsWith('-j MASQUERADE'))).toHaveLength(2);
    expect(tr.status().randomFully).toBe(false);
    expect(lines.some((l) => l.level === 'warn' && /random-fully refused/.test(l.msg))).toBe(true);
  });

  it('--ip-masq-fully-random-disable: plain MASQUERADE from the start, with no refusal to fall back from', async () => {
    const fake = new FakeNetfilter();
    const { tr, lines } = rules(fake, { noRandomFully: true });
    await tr.install();
    expect(fake.chains.get('nat/WEFT-POSTRTG')!.join('\n')).not.toContain('random-fully');
    expect(fake.chains.get('nat/WEFT-POSTRTG')!.filter((l) => l.endsWith('-j MASQUERADE'))).toHaveLength(2);
    expect(tr.status().randomFully).toBe(false);
    expect(lines.some((l) => l.level === 'warn')).toBe(false);
  });

  it('resync: a flushed chain or a deleted jump is put back and counted; an intact set is left alone', async () => {
    const fake = new FakeNetfilter();
    const { tr, lines } = rules(fake);
    await tr.install();
    await tr.resync();
    expect(tr.status()).toMatchObject({ checks: 1, resyncs: 0 });
    fake.chains.get('nat/WEFT-POSTRTG')!.length = 0; // iptables -t nat -F WEFT-POSTRTG
    fake.chains.get('filter/FORWARD')!.length = 0; // iptables -F FORWARD
    expect(await tr.check()).toEqual(['nat/WEFT-POSTRTG rules', 'jump FORWARD -> WEFT-FWD']);
    await tr.resync();
    expect(tr.status()).toMatchObject({ checks: 2, resyncs: 1, lastResyncReason: 'nat/WEFT-POSTRTG rules, jump FORWARD -> WEFT-FWD' });
    expect(fake.chains.get('nat/WEFT-POSTRTG')).toHaveLength(6);
    expect(fake.chains.get('filter/FORWARD')).toEqual([JUMP_FWD]);
    expect(await tr.check()).toEqual([]);
    expect(lines.some((l) => l.level === 'warn' && /removed or changed/.test(l.msg))).toBe(true);
  });

  it('a failing resync is counted with its error, not thrown', async () => {
    const fake = new FakeNetfilter();
    const { tr } = rules(fake);
    await tr.install();
    fake.chains.get('nat/WEFT-POSTRTG')!.length = 0;
    fake.missing.add('iptables-restore');
    await tr.resync();
    expect(tr.status()).toMatchObject({ resyncs: 0, errors: 1 });
    expect(tr.status().lastError).toMatch(/^iptables-restore not found/);
  });

  it('remove: no jump and no chain of ours left, other rules untouched', async () => {
    const fake = new FakeNetfilter();
    fake.chains.get('nat/POSTROUTING')!.push('-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE');
    const { tr } = rules(fake);
    await tr.install();
    fake.chains.get('nat/POSTROUTING')!.push(JUMP_MASQ); // a duplicate someone added
    await tr.remove();
    expect(fake.chains.get('nat/POSTROUTING')).toEqual(['-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE']);
    expect(fake.chains.get('filter/FORWARD')).toEqual([]);
    expect([...fake.chains.keys()].sort()).toEqual(['filter/FORWARD', 'nat/POSTROUTING']);
    expect(tr.status().installed).toBe(false);
  });

  it('an install that failed half-way is removed by remove() all the same, and named in the error', async () => {
    const fake = new FakeNetfilter();
    fake.failTable = 'filter';
    const { tr } = rules(fake);
    await expect(tr.install()).rejects.toThrow(/iptables-restore -w --noflush: can't initialize iptables table `filter'/);
    expect(fake.chains.has('nat/WEFT-POSTRTG')).toBe(true);
    expect(tr.settled).toBe(false);
    await tr.remove();
    expect(fake.chains.has('nat/WEFT-POSTRTG')).toBe(false);
    expect(fake.chains.get('nat/POSTROUTING')).toEqual([]);
  });

  it('a resync that failed half-way is finished by the next one', async () => {
    const fake = new FakeNetfilter();
    const { tr } = rules(fake);
    await tr.install();
    // Emptied, jump kept: only the listing taken at install tells the check something is off.
    fake.chains.get('filter/WEFT-FWD')!.length = 0;
    fake.failTable = 'filter';
    await tr.resync();
    expect(tr.status()).toMatchObject({ resyncs: 0, errors: 1 });
    fake.failTable = undefined;
    await tr.resync();
    expect(tr.status()).toMatchObject({ resyncs: 1, errors: 1 });
    expect(fake.chains.get('filter/WEFT-FWD')).toHaveLength(2);
    expect(await tr.check()).toEqual([]);
  });

  it('a run without --ip-masq removes the masquerade chain an earlier run left, and keeps forwarding', async () => {
    const fake = new FakeNetfilter();
    await rules(fake).tr.install();
    const { tr } = rules(fake, { masquerade: false });
    await tr.install();
    expect(fake.chains.has('nat/WEFT-POSTRTG')).toBe(false);
    expect(fake.chains.get('nat/POSTROUTING')).toEqual([]);
    expect(fake.chains.get('filter/WEFT-FWD')).toHaveLength(2);
  });

  it('nothing wanted and no iptables installed: start does not fail', async () => {
    const fake = new FakeNetfilter();
    fake.missing.add('iptables').add('iptables-restore').add('nft');
    const { tr } = rules(fake, { masquerade: false, forward: false });
    await tr.install();
    expect(tr.wanted).toBe(false);
    expect(tr.status().installed).toBe(false);
  });

  it('--ip-masq and no iptables installed: install fails with one line naming the flag and the package', async () => {
    const fake = new FakeNetfilter();
    fake.missing.add('iptables-restore');
    await expect(rules(fake).tr.install()).rejects.toThrow(
      /^--ip-masq: cannot install the masquerade rules: iptables-restore not found .*install Debian's iptables package$/,
    );
  });

  it('forward rules alone (the default) and no iptables installed: a warning, and the daemon runs on', async () => {
    const fake = new FakeNetfilter();
    fake.missing.add('iptables').add('iptables-restore');
    const { tr, lines } = rules(fake, { masquerade: false });
    await tr.install();
    expect(tr.settled).toBe(true);
    expect(tr.status()).toMatchObject({ installed: false, skipped: expect.stringMatching(/iptables-restore not found/) as unknown });
    expect(lines.some((l) => l.level === 'warn' && /forward rules not installed/.test(l.msg))).toBe(true);
  });
});

describe('TrafficRules (nftables)', () => {
  it('installs table ip weft, removes iptables leftovers, resyncs a deleted table, deletes it on remove', async () => {
    const fake = new FakeNetfilter();
    await rules(fake).tr.install(); // an earlier run in iptables mode
    const { tr } = rules(fake, { backend: 'nftables' });
    await tr.install();
    expect(fake.chains.has('nat/WEFT-POSTRTG')).toBe(false);
    expect(fake.chains.get('filter/FORWARD')).toEqual([]);
    expect(fake.nftTable).toContain('masquerade fully-random');
    expect(tr.status()).toMatchObject({ backend: 'nftables', installedIn: ['nftables table ip weft'] });
    fake.nftTable = undefined; // nft flush ruleset
    await tr.resync();
    expect(tr.status().resyncs).toBe(1);
    expect(fake.nftTable).toContain('chain forward');
    await tr.remove();
    expect(fake.nftTable).toBeUndefined();
  });

  it('falls back to masquerade without fully-random where it is refused', async () => {
    const fake = new FakeNetfilter();
    fake.refuseRandomFully = true;
    const { tr, lines } = rules(fake, { backend: 'nftables' });
    await tr.install();
    expect(fake.nftTable).toContain('daddr != 224.0.0.0/4 masquerade\n');
    expect(lines.some((l) => l.level === 'warn' && /fully-random refused/.test(l.msg))).toBe(true);
  });
});
