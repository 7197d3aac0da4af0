// Who may talk to the server: the random token (query, cookie or header), the Host header and the Origin of upgrades.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import { TOKEN_COOKIE, TOKEN_HEADER } from '../api/rpc.js';
import { VmdeskError, ErrorCode } from '../api/errors.js';

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Where a request carried a token, if anywhere; the query wins so a fresh link replaces a stale cookie. */
export function presentedToken(req: IncomingMessage): { token: string; via: 'query' | 'cookie' | 'header' } | undefined {
  const url = new URL(req.url ?? '/', 'http://x');
  const q = url.searchParams.get('token');
  if (q) return { token: q, via: 'query' };
  const h = req.headers[TOKEN_HEADER];
  if (typeof h === 'string' && h) return { token: h, via: 'header' };
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return { token: auth.slice(7), via: 'header' };
  const cookie = parseCookies(req.headers.cookie)[TOKEN_COOKIE];
  if (cookie) return { token: cookie, via: 'cookie' };
  return undefined;
}

export function tokenMatches(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  // timingSafeEqual needs equal lengths; comparing lengths first leaks only the length, which is public.
  return a.length === b.length && timingSafeEqual(a, b);
}

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const k = part.slice(0, eq).trim();
    try {
      out[k] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      /* a malformed cookie is no cookie */
    }
  }
  return out;
}

/**
 * The Location for the token-to-cookie redirect: a path on this server, whatever the request looked like.
 * The URL parser turns "/.//evil.com/" into the path "//evil.com/", and a browser reads a Location of
 * "//evil.com/" (or "/\\evil.com/", or "///evil.com/") as another host: an open redirect that also tells
 * evil.com the user just authenticated. So leading slashes and backslashes collapse to one slash, and
 * anything that still would not resolve to this origin becomes "/".
 */
export function sameOriginLocation(pathname: string, search = ''): string {
  const location = '/' + pathname.replace(/^[/\\]+/, '') + search;
  const probe = new URL(location, 'http://origin.invalid');
  return probe.origin === 'http://origin.invalid' ? location : '/';
}

export function tokenCookie(token: string): string {
  return `${TOKEN_COOKIE}=${encodeURIComponent(token)}; Path=/; HttpOnly; SameSite=Strict`;
}

/**
 * Host names the server answers to. Checking Host defeats DNS rebinding: a page on evil.example whose name
 * later resolves to 127.0.0.1 still sends "Host: evil.example".
 */
export function allowedHosts(boundHost: string, port: number): Set<string> {
  const names = new Set(['127.0.0.1', 'localhost', '[::1]']);
  names.add(boundHost.includes(':') && !boundHost.startsWith('[') ? `[${boundHost}]` : boundHost);
  const out = new Set<string>();
  for (const n of names) out.add(`${n}:${port}`.toLowerCase());
  return out;
}

export function hostAllowed(req: IncomingMessage, hosts: Set<string>): boolean {
  const h = req.headers.host?.toLowerCase();
  return !!h && hosts.has(h);
}

/**
 * Browsers always send Origin on WebSocket upgrades; it must be this server. Non-browser clients (CLI, bench)
 * send none and are let through on the token alone.
 */
export function originAllowed(req: IncomingMessage, hosts: Set<string>): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false;
  }
  return u.protocol === 'http:' && hosts.has(u.host.toLowerCase());
}

/** Loopback names and addresses: only this machine can reach a server bound to one. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) return h === '::1' || /^::ffff:127\./.test(h) || h === '0:0:0:0:0:0:0:1';
  return false;
}

/**
 * The server speaks plain HTTP: on any interface but loopback the token, the cookie and every frame cross the
 * network readable by anyone on the path. So binding anything else (0.0.0.0, ::, a LAN address, a host name,
 * or an empty host, which Node takes for "every interface") must be asked for explicitly.
 */
export function assertListenHost(host: string, unsafeListenAll: boolean): void {
  if (isLoopbackHost(host) || unsafeListenAll) return;
  throw new VmdeskError(
    ErrorCode.invalid,
    `refusing to listen on "${host}": it is not a loopback address, and the server speaks plain HTTP, so the access token and everything after it would cross the network in clear text. ` +
      'Use 127.0.0.1 (and an SSH tunnel to reach it from elsewhere), or pass --unsafe-listen-all if you accept that risk.',
  );
}
