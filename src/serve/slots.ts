// Who may hold the server's scarce places while their bytes arrive, and when a slow sender must give
// its place up. Upload slots: serve.maxUploads in all, serve.maxUploadsPerClient per client address.
// A transfer (an upload's body, or a connection's request headers) becomes *evictable*:
//  - stalled: nothing arrived for serve.uploadStallMs;
//  - slow: once serve.uploadGraceMs has passed, it averaged less than serve.minUploadRate bytes/s;
//  - doomed: once the grace has passed, the rest of its Content-Length cannot arrive before its
//    deadline (serve.requestTimeoutMs) at the rate it has kept so far.
// An evictable transfer keeps its place while nobody else needs it (a slow phone on an idle server is
// served); when a newcomer finds no place, the slowest evictable one is cut (408) and the newcomer
// takes its place. A client that trickles a byte now and then (slowloris) therefore holds nothing for
// long, and one address can never hold more than its share. Client addresses: clientKey().
// Pure bookkeeping: the caller supplies the clock and cuts the connection in `evict`.
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import { byteRate, HttpError, seconds, sizeText } from './http-error.js';

/** Bytes arriving for something: when it started, how much came, when the last byte came. */
export interface Transfer {
  /** performance.now() at its start. */
  started: number;
  /** Bytes received so far. */
  received: number;
  /** performance.now() of the last bytes received (`started` before any). */
  lastData: number;
  /** Bytes announced (Content-Length), when known. */
  expected?: number;
}

export interface SlowRules {
  /** serve.uploadGraceMs: the rate rules wait this long. */
  graceMs: number;
  /** serve.minUploadRate, bytes per second (0: no rate rules). */
  minRate: number;
  /** serve.uploadStallMs: nothing for this long is evictable at once. */
  stallMs: number;
  /** Milliseconds from `started` by which the whole of `expected` must have arrived (serve.requestTimeoutMs). */
  deadlineMs: number;
}

/** Why `t` may be cut to make room for another client, with its rate (bytes/s); null while it is fine. */
export function evictable(t: Transfer, rules: SlowRules, now: number): { reason: string; rate: number } | null {
  const elapsed = Math.max(1, now - t.started);
  const rate = (t.received * 1000) / elapsed;
  const idle = now - t.lastData;
  if (idle >= rules.stallMs)
    return { reason: `nothing arrived for ${seconds(idle)} (serve.uploadStallMs: ${seconds(rules.stallMs)})`, rate };
  if (rules.minRate <= 0 || elapsed < rules.graceMs) return null;
  if (rate < rules.minRate) {
    return {
      reason: `it averaged ${byteRate(rate)} over ${seconds(elapsed)}, below serve.minUploadRate (${byteRate(rules.minRate)})`,
      rate,
    };
  }
  if (t.expected !== undefined && t.expected > t.received) {
    const needMs = ((t.expected - t.received) * 1000) / rate;
    if (elapsed + needMs > rules.deadlineMs) {
      return {
        reason: `at ${byteRate(rate)} the remaining ${sizeText(t.expected - t.received)} could not arrive within serve.requestTimeoutMs (${seconds(rules.deadlineMs)})`,
        rate,
      };
    }
  }
  return null;
}

/** An upload holding a slot. The reader sets `evict`: cut it, its client gets `status` (408 by default) saying why. */
export interface Slot extends Transfer {
  readonly client: string;
  evict: (reason: string, status?: number) => void;
  /**
   * Whether its whole body has arrived (set by the holder). Node parses pipelined requests before the
   * previous one's body has been handed over: a slot whose body is all here is free for them.
   */
  arrived?: () => boolean;
}

export interface SlotLimits {
  /** serve.maxUploads */
  max: number;
  /** serve.maxUploadsPerClient */
  perClient: number;
  rules: SlowRules;
}

/** The upload slots: at most `max` in all and `perClient` per client address. */
export class UploadSlots {
  private readonly held = new Set<Slot>();
  private readonly counts = new Map<string, number>();

  constructor(private readonly limits: SlotLimits) {}

  /** Uploads being received now. */
  get size(): number {
    return this.held.size;
  }

  /** Uploads `client` is sending now. */
  countOf(client: string): number {
    return this.counts.get(client) ?? 0;
  }

  /**
   * A slot for an upload from `client` announcing `expected` bytes. When the client has its share
   * taken, one of its own evictable uploads gives way, else 429; when every slot is taken, the slowest
   * evictable upload of anyone gives way, else 503. Throws the HttpError to answer.
   */
  acquire(client: string, expected: number | undefined, now: number): Slot {
    const { max, perClient } = this.limits;
    for (const s of this.held) if (s.arrived?.()) this.release(s);
    if (this.countOf(client) >= perClient && !this.evictSlowest(now, client)) {
      throw new HttpError(
        429,
        `too many uploads from your address at once (serve.maxUploadsPerClient: ${perClient}); send the next when one has finished`,
        { 'Retry-After': '1' },
      );
    }
    if (this.held.size >= max && !this.evictSlowest(now)) {
      throw new HttpError(
        503,
        `the server is receiving too many uploads at once (serve.maxUploads: ${max}); try again in a moment`,
        { 'Retry-After': '1' },
      );
    }
    const slot: Slot = { client, started: now, received: 0, lastData: now, expected, evict: () => {} };
    this.held.add(slot);
    this.counts.set(client, this.countOf(client) + 1);
    return slot;
  }

  /** The upload is over (received, refused or gone). Idempotent. */
  release(slot: Slot): void {
    if (!this.held.delete(slot)) return;
    const n = this.countOf(slot.client) - 1;
    if (n > 0) this.counts.set(slot.client, n);
    else this.counts.delete(slot.client);
  }

  /** Cut the slowest evictable upload (of `client` only, when given); false when none is evictable. */
  private evictSlowest(now: number, client?: string): boolean {
    let worst: Slot | undefined;
    let why: { reason: string; rate: number } | undefined;
    for (const s of this.held) {
      if (client !== undefined && s.client !== client) continue;
      const e = evictable(s, this.limits.rules, now);
      if (e && (!why || e.rate < why.rate)) [worst, why] = [s, e];
    }
    if (!worst || !why) return false;
    this.release(worst);
    worst.evict(why.reason);
    return true;
  }
}

/**
 * The address a client is counted by: its IP address, IPv4-mapped IPv6 as IPv4, and an IPv6 address
 * by its /64 prefix (one household or phone gets a whole /64, so counting single addresses would let
 * one client be 2^64 clients).
 */
export function clientKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const a = address.toLowerCase().replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) return mapped[1];
  if (!a.includes(':')) return a;
  return `${expandIpv6(a).slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address (as short hex strings). */
function expandIpv6(a: string): string[] {
  let text = a;
  // a trailing dotted IPv4 part is two groups
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [b0, b1, b2, b3] = v4.slice(1).map(Number);
    text = text.slice(0, v4.index) + `${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...new Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return groups.map((g) => (parseInt(g, 16) || 0).toString(16));
}
