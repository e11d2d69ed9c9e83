// limits.ts: the sizes every control-plane field is held to, checked against the real protobuf
// encoding, and what readers do with a lease someone else stored beyond them.
import { describe, expect, it } from 'vitest';
import { decodeLeaseValue } from '../../src/control/etcd/codec';
import {
  MAX_BACKEND_DATA_BYTES,
  MAX_BACKEND_TYPE_CHARS,
  MAX_CIDR_CHARS,
  MAX_EVENTS_PER_BATCH,
  MAX_IPV4_CHARS,
  MAX_LEASES,
  MAX_LEASE_WIRE_BYTES,
  MAX_REPLY_BYTES,
} from '../../src/control/limits';
import type { WatchBatch } from '../../src/control/registry';
import { batchFromWire, controlService, errorToStatus, leaseToWire, leasesFromWire, type WireLease } from '../../src/control/wire';
import { RegistryError, type Lease } from '../../src/control/registry';
import { QUOTE_CHARS, quote } from '../../src/util/quote';

const biggest: Lease = {
  subnet: '100.100.100.100/32',
  publicIp: '203.203.203.203',
  backendType: 'v'.repeat(MAX_BACKEND_TYPE_CHARS),
  // {"k":"…"} is 8 bytes around the value; é is 2 UTF-8 bytes, so the limit is counted in bytes.
  backendData: { k: 'é'.repeat((MAX_BACKEND_DATA_BYTES - 8) / 2) },
  expiration: -1, // int64 -1 is the longest varint
};

describe('limits.ts message sizes', () => {
  it('a lease at every limit encodes within MAX_LEASE_WIRE_BYTES, in a List reply and as a watch event', () => {
    expect(biggest.subnet).toHaveLength(MAX_CIDR_CHARS);
    expect(biggest.publicIp).toHaveLength(MAX_IPV4_CHARS);
    expect(Buffer.byteLength(JSON.stringify(biggest.backendData))).toBe(MAX_BACKEND_DATA_BYTES);
    const svc = controlService().service;
    const list = (n: number) => svc.List.responseSerialize({ leases: Array.from({ length: n }, () => leaseToWire(biggest)), revision: 2 ** 40 });
    const batch = (n: number) =>
      svc.Watch.responseSerialize({
        revision: 2 ** 40,
        snapshot: false,
        leases: [],
        events: Array.from({ length: n }, () => ({ type: 'ADDED', lease: leaseToWire(biggest) })),
      });
    expect(list(2).length - list(1).length).toBeLessThanOrEqual(MAX_LEASE_WIRE_BYTES);
    expect(batch(2).length - batch(1).length).toBeLessThanOrEqual(MAX_LEASE_WIRE_BYTES);
    // And the bound is tight: it is the event's size, not a guess far above it.
    expect(batch(2).length - batch(1).length).toBe(MAX_LEASE_WIRE_BYTES);
    expect(list(MAX_LEASES).length).toBeLessThanOrEqual(MAX_REPLY_BYTES);
    expect(batch(MAX_EVENTS_PER_BATCH).length).toBeLessThanOrEqual(MAX_REPLY_BYTES);
  });

  it('quote() keeps short values whole and cuts long ones, naming their length', () => {
    expect(quote('10.0.0.1')).toBe('"10.0.0.1"');
    const q = quote('x'.repeat(100_000));
    expect(q).toBe(`"${'x'.repeat(QUOTE_CHARS)}"… (100000 characters)`);
  });

  it('gRPC status details are cut, whatever error carried them', () => {
    const st = errorToStatus(new RegistryError('invalid', `bad: ${'y'.repeat(200_000)}`));
    expect(st.details!.length).toBeLessThan(1100);
    expect(st.details).toMatch(/… \(200005 characters in all\)$/);
    expect(errorToStatus(new Error('z'.repeat(50_000))).details!.length).toBeLessThan(1100);
  });
});

describe('decoding leases someone else stored', () => {
  const wire = (over: Partial<WireLease>): WireLease => ({
    ...leaseToWire({ ...biggest, subnet: '10.244.1.0/24', publicIp: '192.0.2.1', backendType: 'vxlan', backendData: {} }),
    ...over,
  });

  it('a List reply: a lease with malformed or oversized fields is skipped and reported, the rest kept', () => {
    const skipped: Array<[string, { subnet: string; publicIp: string }]> = [];
    const good = wire({});
    const leases = leasesFromWire(
      [
        wire({ subnet: '10.244.2.0/24', backendData: '{"VtepMAC": ' }), // truncated JSON
        wire({ subnet: '10.244.3.0/24', backendData: '[1,2]' }),
        wire({ subnet: '10.244.4.0/24', backendData: JSON.stringify({ k: 'a'.repeat(4 * 1024 * 1024) }) }),
        wire({ subnet: '10.244.5.0/24', backendType: 't'.repeat(10_000) }),
        wire({ subnet: 's'.repeat(100_000) }),
        good,
      ],
      (why, l) => skipped.push([why, l]),
    );
    expect(leases).toHaveLength(1);
    expect(leases[0].subnet).toBe(good.subnet);
    expect(skipped.map(([, l]) => l.subnet)).toEqual(['10.244.2.0/24', '10.244.3.0/24', '10.244.4.0/24', '10.244.5.0/24', 's'.repeat(32)]);
    expect(skipped[0][0]).toMatch(/^backend_data is not valid JSON/);
    expect(skipped[2][0]).toMatch(/^backendData is 4194312 bytes of JSON/);
    expect(skipped[3][0]).toMatch(/^backendType is 10000 characters long/);
    for (const [why] of skipped) expect(why.length).toBeLessThan(300);
  });

  it('a watch batch: a bad added lease is skipped; a bad removed one still removes its subnet', () => {
    const skipped: string[] = [];
    const b: WatchBatch = batchFromWire(
      {
        revision: 9,
        snapshot: false,
        leases: [],
        events: [
          { type: 'ADDED', lease: wire({ subnet: '10.244.2.0/24', backendData: 'nope' }) },
          { type: 'REMOVED', lease: wire({ subnet: '10.244.3.0/24', backendData: 'nope' }) },
          { type: 'ADDED', lease: wire({}) },
        ],
      },
      (why, l) => skipped.push(`${l.subnet}: ${why}`),
    );
    expect(b.events.map((e) => [e.type, e.lease.subnet])).toEqual([
      ['removed', '10.244.3.0/24'],
      ['added', '10.244.1.0/24'],
    ]);
    expect(skipped).toHaveLength(1);
    expect(skipped[0]).toMatch(/^10\.244\.2\.0\/24: backend_data is not valid JSON/);
  });

  it('an etcd lease value beyond the limits is refused like a malformed one, quoting little', () => {
    const value = (attrs: Record<string, unknown>) => JSON.stringify({ PublicIP: '192.0.2.1', PublicIPv6: null, BackendType: 'vxlan', ...attrs });
    expect(decodeLeaseValue(value({ BackendData: { VtepMAC: '0e:00:c0:00:02:01' } })).backendData).toEqual({ VtepMAC: '0e:00:c0:00:02:01' });
    const refused: Array<[string, RegExp]> = [
      [value({ BackendData: { k: 'a'.repeat(4 * 1024 * 1024) } }), /^value is 4194\d+ characters long, more than a lease's/],
      [value({ BackendData: { k: 'é'.repeat(MAX_BACKEND_DATA_BYTES) } }), /^backendData is \d+ bytes of JSON/],
      [value({ PublicIP: '1'.repeat(1000) }), /^PublicIP "1{64}"… \(1000 characters\) is not an IPv4 address$/],
      [value({ BackendType: 'b'.repeat(100) }), /^backendType is 100 characters long/],
    ];
    for (const [text, msg] of refused) {
      let err: Error | undefined;
      try {
        decodeLeaseValue(text);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.message).toMatch(msg);
      expect(err!.message.length).toBeLessThan(300);
    }
  });
});
