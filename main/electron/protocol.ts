// The desktop shell's renderer comes from app://vmdesk/, a custom protocol that serves the built renderer's files
// and nothing else: no TCP port, no token. Pure Node (no 'electron' import): main.ts hands requests to
// rendererResponse through protocol.handle, and tests call it directly.
import fs from 'node:fs';
import path from 'node:path';
import { contentType, resolveStaticPath } from '../server/static-files.js';

export const APP_SCHEME = 'app';
export const APP_HOST = 'vmdesk';
export const APP_ORIGIN = `${APP_SCHEME}://${APP_HOST}`;
export const APP_URL = `${APP_ORIGIN}/`;

/**
 * As registerSchemesAsPrivileged wants it: standard (so the URL has a host and an origin, and relative URLs and
 * ES modules resolve), secure (a secure context, like https), fetch allowed. No bypassCSP: the page's own
 * policy applies. No service workers, no stream (files are small).
 */
export const APP_SCHEME_PRIVILEGES = { standard: true, secure: true, supportFetchAPI: true, corsEnabled: true, codeCache: true } as const;

/**
 * The origin of a URL, also for app://vmdesk, whose origin Node's URL reports as "null" (a scheme it does not
 * know) while Chromium, where the scheme is registered as standard, reports app://vmdesk.
 */
export function originOf(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (u.protocol === `${APP_SCHEME}:`) return u.host ? `${APP_SCHEME}://${u.host.toLowerCase()}` : null;
  return u.origin === 'null' ? null : u.origin;
}

/** The page's policy: everything from app://vmdesk itself, nothing inline, no network (the RPC goes over IPC). */
export function desktopCsp(): string {
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "frame-src 'none'",
    "worker-src 'none'",
  ].join('; ');
}

const HEADERS = {
  'Content-Security-Policy': desktopCsp(),
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

function text(status: number, body: string): Response {
  return new Response(`${body}\n`, { status, headers: { ...HEADERS, 'Content-Type': 'text/plain; charset=utf-8' } });
}

// Callback fs, looked up at call time: the flavour Electron's asar support patches for certain, so the same
// code reads dist/renderer on disk and inside app.asar.
const lstat = (p: string) => new Promise<fs.Stats>((resolve, reject) => fs.lstat(p, (e, s) => (e ? reject(e) : resolve(s))));
const readFile = (p: string) => new Promise<Buffer>((resolve, reject) => fs.readFile(p, (e, b) => (e ? reject(e) : resolve(b))));

/**
 * The regular file at `rel` under root, every component below root checked with lstat: a symlink anywhere
 * below the root is refused, so nothing can lead out of it (realpath is not relied on inside an archive).
 */
async function regularFileUnder(root: string, rel: string): Promise<string | null> {
  const parts = rel.split('/').filter(Boolean);
  if (!parts.length) return null;
  let p = root;
  for (let i = 0; i < parts.length; i++) {
    p = path.join(p, parts[i]!);
    let st: fs.Stats;
    try {
      st = await lstat(p);
    } catch {
      return null;
    }
    if (st.isSymbolicLink()) return null;
    if (i < parts.length - 1 ? !st.isDirectory() : !st.isFile()) return null;
  }
  return p;
}

/**
 * Answers one app:// request from the renderer directory: GET or HEAD of a file below it, index.html for an
 * app route (a path without an extension), 404 otherwise; another host, a malformed or escaping path, or any
 * other method is refused. Every answer carries the page's CSP.
 */
export async function rendererResponse(rootDir: string, request: { url: string; method?: string }): Promise<Response> {
  const method = (request.method ?? 'GET').toUpperCase();
  let url: URL;
  try {
    url = new URL(request.url);
  } catch {
    return text(400, 'bad URL');
  }
  if (url.protocol !== `${APP_SCHEME}:` || url.host.toLowerCase() !== APP_HOST) return text(404, 'no such origin');
  if (url.username || url.password || url.port) return text(400, 'bad URL');
  if (method !== 'GET' && method !== 'HEAD') return new Response('method not allowed\n', { status: 405, headers: { ...HEADERS, Allow: 'GET, HEAD' } });
  const root = path.resolve(rootDir);
  const full = resolveStaticPath(root, url.pathname);
  if (!full) return text(400, 'bad path');
  const rel = path.relative(root, full).split(path.sep).join('/');
  let file = await regularFileUnder(root, rel);
  if (!file && !path.extname(full)) file = await regularFileUnder(root, 'index.html');
  if (!file) return (await regularFileUnder(root, 'index.html')) ? text(404, 'not found') : text(503, 'the renderer is not built: run `npm run build:renderer`');
  const body = await readFile(file);
  return new Response(method === 'HEAD' ? null : new Uint8Array(body), {
    status: 200,
    headers: {
      ...HEADERS,
      'Content-Type': contentType(file),
      'Content-Length': String(body.length),
      'Cache-Control': rel.startsWith('assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
    },
  });
}
