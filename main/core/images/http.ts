// HTTP for image downloads, through undici: proxies from the environment (HTTPS_PROXY, HTTP_PROXY,
// NO_PROXY, upper or lower case) by undici's EnvHttpProxyAgent, redirects followed by hand (at most 5, never
// from https to http), timeouts for headers and for a stalled body, and every body bounded.
import { EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import { ErrorCode, VmdeskError } from '../../api/errors.js';

const MAX_REDIRECTS = 5;

export interface HttpOptions {
  /** The environment to take proxy settings from (the daemon's by default). */
  env?: NodeJS.ProcessEnv;
  headersTimeoutMs?: number;
  /** Longest silence while reading a body. */
  bodyTimeoutMs?: number;
}

/** One dispatcher per environment: proxies as HTTPS_PROXY / HTTP_PROXY / NO_PROXY say. */
export function makeDispatcher(opts: HttpOptions = {}): Dispatcher {
  const env = opts.env ?? process.env;
  const pick = (k: string) => env[k] ?? env[k.toLowerCase()];
  return new EnvHttpProxyAgent({
    httpProxy: pick('HTTP_PROXY'),
    httpsProxy: pick('HTTPS_PROXY') ?? pick('HTTP_PROXY'),
    noProxy: pick('NO_PROXY'),
    headersTimeout: opts.headersTimeoutMs ?? 30_000,
    bodyTimeout: opts.bodyTimeoutMs ?? 60_000,
    connect: { timeout: 30_000 },
  });
}

export interface OpenResponse {
  url: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

function header(h: OpenResponse['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

export { header as responseHeader };

function describe(e: unknown, url: string): VmdeskError {
  if (e instanceof VmdeskError) return e;
  const err = e as { name?: string; code?: string; message?: string };
  if (err.name === 'AbortError') return new VmdeskError(ErrorCode.cancelled, 'cancelled');
  const code = err.code ?? '';
  const host = (() => {
    try {
      return new URL(url).host;
    } catch {
      return url;
    }
  })();
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') return new VmdeskError(ErrorCode.timeout, `${host} did not answer in time`);
  if (code === 'UND_ERR_BODY_TIMEOUT') return new VmdeskError(ErrorCode.timeout, `${host} stopped sending data`);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new VmdeskError(ErrorCode.host, `cannot resolve ${host} (no network or no DNS?)`);
  if (code === 'ECONNREFUSED') return new VmdeskError(ErrorCode.host, `${host} refused the connection`);
  return new VmdeskError(ErrorCode.host, `download from ${host} failed: ${err.message ?? String(e)}${code ? ` (${code})` : ''}`);
}

/**
 * GET with redirects followed (same rules as browsers for the method, stricter for the scheme). Statuses other
 * than 2xx are errors, except those listed in `accept` (206, 416 for ranges).
 */
export async function open(dispatcher: Dispatcher, url: string, opts: { headers?: Record<string, string>; signal?: AbortSignal; accept?: number[]; highWaterMark?: number } = {}): Promise<OpenResponse> {
  let current = url;
  for (let hop = 0; ; hop++) {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(current, { method: 'GET', dispatcher, headers: { 'user-agent': 'VMDesk/0.1', ...opts.headers }, signal: opts.signal, ...(opts.highWaterMark ? { highWaterMark: opts.highWaterMark } : {}) });
    } catch (e) {
      throw describe(e, current);
    }
    if ([301, 302, 303, 307, 308].includes(res.statusCode)) {
      await res.body.dump().catch(() => {});
      const loc = header(res.headers, 'location');
      if (!loc || hop >= MAX_REDIRECTS) throw new VmdeskError(ErrorCode.host, `${current} redirects ${loc ? 'too many times' : 'without a location'}`);
      let next: URL;
      try {
        next = new URL(loc, current);
      } catch {
        throw new VmdeskError(ErrorCode.host, `${current} redirects to an invalid URL`);
      }
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new VmdeskError(ErrorCode.host, `${current} redirects to a ${next.protocol} URL`);
      if (new URL(current).protocol === 'https:' && next.protocol !== 'https:') throw new VmdeskError(ErrorCode.host, `${current} redirects from https to plain http (${next.host}); refused`);
      if (next.username || next.password) throw new VmdeskError(ErrorCode.host, `${current} redirects to a URL with credentials; refused`);
      current = next.href;
      continue;
    }
    const ok = (res.statusCode >= 200 && res.statusCode < 300) || (opts.accept ?? []).includes(res.statusCode);
    if (!ok) {
      await res.body.dump().catch(() => {});
      throw new VmdeskError(res.statusCode === 404 || res.statusCode === 410 ? ErrorCode.notFound : ErrorCode.host, `${current} answered HTTP ${res.statusCode}`);
    }
    return { url: current, status: res.statusCode, headers: res.headers, body: res.body };
  }
}

/** A small file (checksum list, signature) read whole, at most maxBytes. */
export async function fetchSmall(dispatcher: Dispatcher, url: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
  const res = await open(dispatcher, url, { signal });
  const declared = Number(header(res.headers, 'content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body.dump().catch(() => {});
    throw new VmdeskError(ErrorCode.invalid, `${url} is ${declared} bytes, more than the ${maxBytes} bytes expected of it`);
  }
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body) {
      n += (chunk as Buffer).length;
      if (n > maxBytes) {
        res.body.destroy();
        throw new VmdeskError(ErrorCode.invalid, `${url} is more than the ${maxBytes} bytes expected of it`);
      }
      parts.push(chunk as Buffer);
    }
  } catch (e) {
    throw describe(e, url);
  }
  return Buffer.concat(parts);
}

export { describe as describeHttpError };
