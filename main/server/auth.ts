// Who may talk to the server: the random token (query, cookie or header), the Host header and the Origin of upgrades.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { TOKEN_COOKIE, TOKEN_HEADER } from '../api/rpc.js';

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
