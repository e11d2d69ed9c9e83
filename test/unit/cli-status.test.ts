// weft status's human output: what /status says, in lines a person reads, the offload section
// included (system calls against the packets they moved).
import { describe, expect, it } from 'vitest';
import { formatDaemonStatus } from '../../src/cli/status';
import { NEVER_EXPIRES } from '../../src/control/registry';

const base = {
  publicIp: '192.168.77.11',
  iface: 'eth0',
  tun: 'weft0',
  mtu: 1472,
  backend: 'udp',
  network: '10.244.0.0/16',
  ready: true,
  lease: { subnet: '10.244.5.0/24', expiration: Date.UTC(2026, 11, 2) },
  control: { target: '192.168.77.1:7000', watching: true, revision: 7 },
  peers: [{ subnet: '10.244.9.0/24', publicIp: '192.168.77.12', port: 8285, direct: false }],
  counters: { txPackets: 9000, tunReadPackets: 9000, tunWritePackets: 400, drops: { no_route: 2 } },
};

const offload = {
  enabled: true,
  tun: ['CSUM', 'TSO4', 'TSO6'],
  tunReads: 200,
  tunWrites: 40,
  socketMessagesSent: 300,
  superPacketsRead: 196,
  segmentsPerSuperPacket: 45.9,
  coalescedWrites: 20,
  segmentsPerCoalescedWrite: 19,
  gsoSends: 290,
  segmentsPerGsoSend: 31,
  groReceives: 12,
  segmentsPerGroReceive: 20,
  partialChecksumsFixed: 3,
  checksumsCompleted: 5,
  gsoFallbacks: 2,
  truncatedReads: 0,
  tunWriteErrors: 0,
  tunnelSuperDatagramsCut: 0,
  gsoDisabled: false,
  refused: { gsoSize: 1 },
};

describe('weft status', () => {
  it('prints the node, lease, peers, counters and drops', () => {
    const text = formatDaemonStatus(base);
    expect(text).toContain('node 192.168.77.11 (eth0): ready, backend udp, network 10.244.0.0/16');
    expect(text).toContain('lease 10.244.5.0/24, expires 2026-12-02T00:00:00.000Z');
    expect(text).toContain('  10.244.9.0/24      via 192.168.77.12:8285');
    expect(text).toContain('drops            no_route 2');
    expect(text).not.toContain('offloads');
  });

  it('says which masquerade and forward rules are in place and how often they were put back', () => {
    const rules = {
      backend: 'iptables',
      masquerade: true,
      randomFully: true,
      forward: true,
      installed: true,
      installedIn: ['iptables nat WEFT-POSTRTG (from POSTROUTING)', 'iptables filter WEFT-FWD (from FORWARD)'],
      resyncPeriodS: 5,
      resyncs: 1,
      lastResync: '2026-12-02T10:00:00.000Z',
      errors: 0,
    };
    expect(formatDaemonStatus({ ...base, trafficRules: rules })).toContain(
      'rules iptables masquerade --random-fully, forward: iptables nat WEFT-POSTRTG (from POSTROUTING); iptables filter WEFT-FWD (from FORWARD); resync every 5 s, 1 put back (last 2026-12-02T10:00:00.000Z)\n',
    );
    const none = { ...rules, masquerade: false, forward: false, installed: false, installedIn: [], resyncs: 0, lastResync: undefined };
    expect(formatDaemonStatus({ ...base, trafficRules: none })).toContain('rules iptables: none (no --ip-masq, forward rules off)\n');
    const skipped = { ...none, forward: true, skipped: 'iptables-restore not found' };
    expect(formatDaemonStatus({ ...base, trafficRules: skipped })).toContain('rules iptables forward: NOT installed: iptables-restore not found\n');
    expect(formatDaemonStatus(base)).not.toContain('rules');
  });

  it('says a reserved lease never expires', () => {
    const text = formatDaemonStatus({ ...base, lease: { subnet: '10.244.5.0/24', expiration: NEVER_EXPIRES } });
    expect(text).toContain('lease 10.244.5.0/24, reserved for this node, never expires');
  });

  it('says why and for how long the lease watch is down, and nothing extra while it is up', () => {
    expect(formatDaemonStatus(base)).toContain('control 192.168.77.1:7000: watching at revision 7\n');
    const down = formatDaemonStatus({
      ...base,
      control: { target: '192.168.77.1:7000', watching: false, revision: 7, error: '14 UNAVAILABLE: No connection established', downForMs: 12_345 },
    });
    expect(down).toContain('control 192.168.77.1:7000: NOT watching at revision 7, down for 12.3 s (14 UNAVAILABLE: No connection established)');
  });

  it('prints what the offloads did: packets per TUN read and write, UDP_SEGMENT runs, refusals', () => {
    const text = formatDaemonStatus({ ...base, offload });
    expect(text).toContain('offloads: TUN CSUM TSO4 TSO6');
    expect(text).toContain('TUN reads        200 for 9000 packets (45.0 per read; 196 super-packets of 45.9 segments)');
    expect(text).toContain('TUN writes       40 for 400 packets (10.0 per write; 20 coalesced of 19)');
    expect(text).toContain('socket sends     300 messages for 9000 datagrams (290 UDP_SEGMENT runs of 31; 2 runs resent plain)');
    expect(text).toContain('checksums        3 partial finished on write, 5 completed on read; refused reads gsoSize 1');
    expect(text).not.toContain('TUN errors');
    expect(formatDaemonStatus({ ...base, offload: { ...offload, truncatedReads: 4 } })).toContain(
      'TUN errors       4 reads cut short by a slot, 0 writes refused',
    );
  });

  it('says when offloads are off and when the kernel refused UDP_SEGMENT', () => {
    expect(formatDaemonStatus({ ...base, offload: { ...offload, enabled: false, tun: [] } })).toContain('offloads: off (--no-offload)');
    // Headers on, nothing granted (a kernel that refuses every TUNSETOFFLOAD bit): not "off".
    expect(formatDaemonStatus({ ...base, offload: { ...offload, tun: [] } })).toContain('offloads: on, but the kernel granted no TUN offload');
    // A status from a daemon before `enabled` existed: empty grant meant --no-offload.
    const { enabled: _drop, ...old } = offload;
    expect(formatDaemonStatus({ ...base, offload: { ...old, tun: [] } })).toContain('offloads: off (--no-offload)');
    expect(formatDaemonStatus({ ...base, offload: { ...offload, gsoDisabled: true } })).toContain('UDP_SEGMENT refused by the kernel');
  });

  it('names the mechanisms --offload LIST chose, TUN and socket apart', () => {
    expect(formatDaemonStatus({ ...base, offload: { ...offload, gso: true, gro: true } })).toContain(
      'offloads: TUN CSUM TSO4 TSO6; socket UDP_SEGMENT UDP_GRO\n',
    );
    expect(formatDaemonStatus({ ...base, offload: { ...offload, gso: false, gro: true } })).toContain('offloads: TUN CSUM TSO4 TSO6; socket UDP_GRO\n');
    expect(formatDaemonStatus({ ...base, offload: { ...offload, gso: false, gro: false } })).toContain('offloads: TUN CSUM TSO4 TSO6; socket offloads off\n');
    expect(formatDaemonStatus({ ...base, offload: { ...offload, enabled: false, tun: [], gso: true, gro: false } })).toContain(
      'offloads: TUN off; socket UDP_SEGMENT\n',
    );
    expect(formatDaemonStatus({ ...base, offload: { ...offload, enabled: false, tun: [], gso: false, gro: false } })).toContain(
      'offloads: off (--no-offload)\n',
    );
  });
});
