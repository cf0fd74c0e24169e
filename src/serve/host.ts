// Which names the server answers to, and the checks built on them: the Host header (RFC 9112 section 3.2:
// exactly one, a valid host[:port], and for an absolute-form target the target's authority instead),
// which blocks DNS rebinding; and the Origin of a POST, which blocks other web pages from making a
// visitor's browser submit images (a multipart POST is a CORS "simple request": no preflight).
// Pure: strings and the request's header list in, a URL or an HttpError out.
// Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).
import type * as http from 'node:http';
import { HttpError } from './http-error.js';

/** Which host names the server answers to. */
export interface AllowedHosts {
  any: boolean;
  names: Set<string>;
}

export const WILDCARD = new Set(['0.0.0.0', '::', '']);

/**
 * The Host names a server listening on `host` (bound to `bound`) answers to: always localhost and the
 * loopback addresses, the listen address, the configured extra names ("*": any), and when listening on
 * every address (0.0.0.0 or ::) this machine's addresses and host name. Any other name may be a DNS
 * rebinding attack: a web page whose own host name now points at us.
 */
export function allowedHosts(
  host: string,
  bound: string,
  extra: readonly string[],
  interfaces: { address: string }[],
  hostname: string,
): AllowedHosts {
  const names = new Set(['localhost', '127.0.0.1', '::1', host, bound, ...extra].map(normalHost));
  if (WILDCARD.has(host) || WILDCARD.has(bound)) {
    for (const i of interfaces) names.add(normalHost(i.address));
    names.add(normalHost(hostname));
  }
  return { any: extra.includes('*'), names };
}

/** Lowercase, without brackets or a trailing dot. */
function normalHost(h: string): string {
  return h
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/\.$/, '');
}

// RFC 3986 host: an IP literal in brackets, or a reg-name / IPv4 address (unreserved, sub-delims,
// percent-encoded); then an optional port of digits. Nothing may follow: `[::1]evil.com` is not a host.
const HOST_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::(\d*))?$/;

/** The name and port of a Host header value (or a URL's authority), or null when it is not valid. */
export function parseHost(value: string): { name: string; port: string | null } | null {
  const m = HOST_RE.exec(value.trim());
  return m ? { name: m[1], port: m[2] ?? null } : null;
}

/** Whether a Host header value (name or address, with or without a port) names this server. */
export function hostAllowed(header: string | undefined, allowed: AllowedHosts): boolean {
  if (header === undefined) return true; // HTTP/1.0 without Host; checkTarget refuses HTTP/1.1 without
  const parsed = parseHost(header);
  if (!parsed) return false;
  return allowed.any || allowed.names.has(normalHost(parsed.name));
}

/** Whether an Origin header (`scheme://host[:port]`) names a page of this server: an allowed host. "null" does not. */
export function originAllowed(origin: string, allowed: AllowedHosts): boolean {
  const m = /^https?:\/\/([^/?#@\s]+)$/i.exec(origin.trim());
  const host = m ? parseHost(m[1]) : null;
  if (!host) return false;
  return allowed.any || allowed.names.has(normalHost(host.name));
}

const MAX_SHOWN = 100;
const shown = (s: string) => JSON.stringify(s.length > MAX_SHOWN ? s.slice(0, MAX_SHOWN) + '…' : s);

/**
 * The request's target as a URL, after the Host rules of RFC 9112 section 3.2: an HTTP/1.1 request has
 * exactly one Host header with a valid value (else 400); an absolute-form target (`GET http://x/...`)
 * is judged by its own authority, the Host header ignored; the name must be one this server answers
 * to (403: DNS rebinding). Throws HttpError.
 */
export function checkTarget(req: http.IncomingMessage, allowed: AllowedHosts): URL {
  const target = req.url ?? '/';
  const hosts: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2)
    if (req.rawHeaders[i].toLowerCase() === 'host') hosts.push(req.rawHeaders[i + 1]);
  if (hosts.length > 1)
    throw new HttpError(400, `the request has ${hosts.length} Host headers; HTTP/1.1 allows exactly one (RFC 9112)`);
  const http11 = req.httpVersionMajor === 1 && req.httpVersionMinor >= 1;
  if (hosts.length === 0 && http11)
    throw new HttpError(400, 'the request has no Host header; HTTP/1.1 requires one (RFC 9112)');
  const host = hosts[0];
  if (host !== undefined && !parseHost(host))
    throw new HttpError(400, `the Host header ${shown(host)} is not a valid host[:port]`);

  let url: URL;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(target)) {
    // absolute-form: its authority replaces Host (RFC 9112 section 3.2.2)
    try {
      url = new URL(target);
    } catch {
      throw new HttpError(400, 'the request URL is malformed');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new HttpError(400, `the request URL has scheme ${shown(url.protocol)}; this server speaks http`);
    if (url.username || url.password) throw new HttpError(400, 'the request URL carries a user name or password');
    if (!hostAllowed(url.host, allowed)) throw notOurs(url.host);
    return url;
  }
  if (!target.startsWith('/') && target !== '*')
    throw new HttpError(400, 'the request target must be a path starting with /');
  try {
    url = new URL(target === '*' ? '/*' : target, 'http://localhost');
  } catch {
    throw new HttpError(400, 'the request URL is malformed');
  }
  if (!hostAllowed(host, allowed)) throw notOurs(host ?? '');
  return url;
}

function notOurs(name: string): HttpError {
  return new HttpError(
    403,
    `this server does not answer to the host name ${shown(name)}; add it to serve.allowedHosts if it is yours`,
  );
}

/**
 * 403 for a request that changes something (anything but GET, HEAD and OPTIONS) sent by a page of
 * another site: its Origin header is present and does not name an allowed host. A request without
 * Origin (curl, scripts, old browsers on same-origin forms) is fine.
 */
export function checkOrigin(req: http.IncomingMessage, allowed: AllowedHosts): void {
  const method = req.method ?? '';
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return;
  const origin = req.headers.origin;
  if (origin === undefined) return;
  if (!originAllowed(origin, allowed)) {
    throw new HttpError(
      403,
      `cross-origin request refused: the page at ${shown(origin)} is not served by this server; add its host name to serve.allowedHosts if it is yours`,
    );
  }
}
