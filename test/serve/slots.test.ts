// The slow-sender rules and the upload slots (src/serve/slots.ts), on a made-up clock: which transfer is
// evictable and why, the per-client and global caps, who gives way to a newcomer; and client keys.
import { describe, expect, it } from 'vitest';
import { HttpError } from '../../src/serve/http-error.js';
import { clientKey, evictable, UploadSlots, type SlowRules } from '../../src/serve/slots.js';

const rules: SlowRules = { graceMs: 5000, minRate: 1024, stallMs: 2000, deadlineMs: 60_000 };

describe('evictable', () => {
  it('a stalled transfer at once, a slow one only after the grace', () => {
    // nothing for 2 s: stalled, grace or not
    expect(evictable({ started: 0, received: 10, lastData: 0 }, rules, 2000)?.reason).toMatch(
      /nothing arrived for 2 s \(serve\.uploadStallMs: 2 s\)/,
    );
    // 1 byte a second, the last one just now: fine during the grace, evictable after it
    expect(evictable({ started: 0, received: 4, lastData: 4000 }, rules, 4000)).toBeNull();
    const slow = evictable({ started: 0, received: 6, lastData: 6000 }, rules, 6000)!;
    expect(slow.reason).toMatch(/averaged 1 B\/s over 6 s, below serve\.minUploadRate \(1 KB\/s\)/);
    expect(slow.rate).toBeCloseTo(1, 5);
    // 2 KB/s is fast enough
    expect(evictable({ started: 0, received: 12_288, lastData: 6000 }, rules, 6000)).toBeNull();
  });

  it('an upload whose rest cannot arrive before requestTimeoutMs at its rate (the deadline rule)', () => {
    // 2 KB/s for 10 s, 10 MB announced: 5000 s more needed, 50 s left
    const doomed = evictable(
      { started: 0, received: 20_480, lastData: 10_000, expected: 10 * 1024 * 1024 },
      rules,
      10_000,
    )!;
    expect(doomed.reason).toMatch(
      /at 2 KB\/s the remaining 10 MB could not arrive within serve\.requestTimeoutMs \(60 s\)/,
    );
    // the same rate with 100 KB announced finishes in time
    expect(
      evictable({ started: 0, received: 20_480, lastData: 10_000, expected: 100 * 1024 }, rules, 10_000),
    ).toBeNull();
    // unknown length (chunked): no deadline rule
    expect(evictable({ started: 0, received: 20_480, lastData: 10_000 }, rules, 10_000)).toBeNull();
    // and not during the grace
    expect(
      evictable({ started: 0, received: 2048, lastData: 1000, expected: 10 * 1024 * 1024 }, rules, 1000),
    ).toBeNull();
  });

  it('minRate 0 turns the rate and deadline rules off', () => {
    const off = { ...rules, minRate: 0 };
    expect(evictable({ started: 0, received: 1, lastData: 59_000, expected: 1e9 }, off, 59_000)).toBeNull();
  });
});

describe('UploadSlots', () => {
  const limits = { max: 4, perClient: 2, rules };

  it('caps one address at perClient (429) and everyone at max (503), naming the limit', () => {
    const slots = new UploadSlots(limits);
    slots.acquire('a', 100, 0);
    slots.acquire('a', 100, 0);
    const e = catchHttp(() => slots.acquire('a', 100, 0));
    expect(e.status).toBe(429);
    expect(e.message).toMatch(/serve\.maxUploadsPerClient: 2/);
    expect(e.headers['Retry-After']).toBe('1');
    slots.acquire('b', 100, 0);
    slots.acquire('c', 100, 0);
    const full = catchHttp(() => slots.acquire('d', 100, 0));
    expect(full.status).toBe(503);
    expect(full.message).toMatch(/serve\.maxUploads: 4/);
    expect(slots.size).toBe(4);
  });

  it('a newcomer takes the slot of the slowest evictable upload; its own when its address is at the cap', () => {
    const slots = new UploadSlots(limits);
    const cut: [string, string][] = [];
    const take = (client: string, now: number) => {
      const s = slots.acquire(client, 100_000, now);
      s.evict = (reason) => cut.push([client, reason]);
      return s;
    };
    const a1 = take('a', 0);
    const a2 = take('a', 0);
    const b = take('b', 0);
    const c = take('c', 0);
    for (const s of [a1, a2, b, c]) s.lastData = 5900;
    a1.received = 6; // 1 B/s
    a2.received = 12_000; // 2 KB/s: fast enough
    b.received = 600_000; // fast
    c.received = 30; // 5 B/s
    // a third from 'a': its own slowest (a1) goes
    take('a', 6000);
    expect(cut).toEqual([['a', expect.stringMatching(/below serve\.minUploadRate/)]]);
    expect(slots.countOf('a')).toBe(2);
    // 'd' finds every slot taken: the slowest of anyone's (c at 5 B/s; the new one from 'a' is in its grace)
    take('d', 6000);
    expect(cut.map(([client]) => client)).toEqual(['a', 'c']);
    // nobody else is evictable now: 503
    expect(catchHttp(() => slots.acquire('e', 1, 6000)).status).toBe(503);
    // release frees a slot, once
    slots.release(b);
    slots.release(b);
    expect(slots.size).toBe(3);
    take('e', 6000);
    expect(slots.size).toBe(4);
  });
});

describe('clientKey', () => {
  it('IPv4 as it is, IPv4-mapped as IPv4, IPv6 by its /64', () => {
    expect(clientKey('127.0.0.2')).toBe('127.0.0.2');
    expect(clientKey('::ffff:192.168.1.20')).toBe('192.168.1.20');
    expect(clientKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:db8:1:2:bbbb:cccc:dddd:eeee')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:DB8:0:0::5')).toBe('2001:db8:0:0::/64');
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(clientKey(undefined)).toBe('unknown');
  });
});

function catchHttp(f: () => unknown): HttpError {
  try {
    f();
  } catch (e) {
    if (e instanceof HttpError) return e;
    throw e;
  }
  throw new Error('expected an HttpError');
}
