// The soak benchmark's verdicts, from hand-made samples: it must call a subnet held by two nodes
// "granted twice", a node whose subnet changed or that a peer lost "lost", and time a forwarding
// gap from the replies around a restart. A soak that cannot see these would report 0 for ever.
import { describe, expect, it } from 'vitest';
import { leaseFindings, longestGap, replyTimes } from '../../perf/soak';

const IPS = new Map([
  ['n1', '192.168.77.11'],
  ['n2', '192.168.77.12'],
]);
const peer = (subnet: string, publicIp: string) => ({ subnet, publicIp });

describe('soak verdicts', () => {
  it('finds nothing wrong in a healthy history', () => {
    const views = [1, 2].flatMap((t) => [
      { t, node: 'n1', subnet: '10.244.1.0/24', peers: [peer('10.244.2.0/24', '192.168.77.12')] },
      { t, node: 'n2', subnet: '10.244.2.0/24', peers: [peer('10.244.1.0/24', '192.168.77.11')] },
    ]);
    expect(leaseFindings(views, IPS)).toEqual({ grantedTwice: [], lost: [] });
  });

  it('calls one subnet on two nodes at once granted twice, whoever saw it', () => {
    const views = [
      { t: 1, node: 'n1', subnet: '10.244.1.0/24', peers: [] },
      // n2 believes n1's subnet is its own.
      { t: 1, node: 'n2', subnet: '10.244.1.0/24', peers: [] },
    ];
    expect(leaseFindings(views, IPS).grantedTwice).toHaveLength(1);
    // Only in a peer list: n1 sees n2 holding n1's subnet.
    const viaPeer = [{ t: 1, node: 'n1', subnet: '10.244.1.0/24', peers: [peer('10.244.1.0/24', '192.168.77.12')] }];
    expect(leaseFindings(viaPeer, IPS).grantedTwice[0]).toMatch(/10\.244\.1\.0\/24/);
  });

  it('calls a changed subnet or a peer missing at the end lost', () => {
    const changed = [
      { t: 1, node: 'n1', subnet: '10.244.1.0/24', peers: [] },
      { t: 2, node: 'n1', subnet: '10.244.9.0/24', peers: [] },
    ];
    expect(leaseFindings(changed, IPS).lost).toEqual(['n1: 10.244.1.0/24 → 10.244.9.0/24']);
    const forgotten = [
      { t: 1, node: 'n1', subnet: '10.244.1.0/24', peers: [] },
      { t: 1, node: 'n2', subnet: '10.244.2.0/24', peers: [peer('10.244.1.0/24', '192.168.77.11')] },
    ];
    expect(leaseFindings(forgotten, IPS).lost).toEqual(['n1 no longer sees n2 (10.244.2.0/24) at the end']);
  });

  it('reads ping -D replies and times the longest silence overlapping a window', () => {
    const out = [
      'PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.',
      '[1000.000000] 64 bytes from 10.244.2.2: icmp_seq=1 ttl=62 time=0.5 ms',
      '[1000.020000] 64 bytes from 10.244.2.2: icmp_seq=2 ttl=62 time=0.5 ms',
      'From 10.244.1.1 icmp_seq=3 Destination Net Unreachable',
      '[1002.520000] 64 bytes from 10.244.2.2: icmp_seq=128 ttl=62 time=0.5 ms',
      '[1002.540000] 64 bytes from 10.244.2.2: icmp_seq=129 ttl=62 time=0.5 ms',
    ].join('\n');
    const r = replyTimes(out);
    expect(r).toHaveLength(4);
    expect(longestGap(r, 1_000_500, 1_001_000)).toBeCloseTo(2500, 3);
    // A window after the outage sees only the regular 20 ms.
    expect(longestGap(r, 1_002_530, 1_003_000)).toBeCloseTo(20, 3);
  });
});
