// Serves the built renderer from one directory: no traversal, no symlinks out, no directory listings.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { ServerResponse } from 'node:http';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.ttf': 'font/ttf',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * Maps a URL path to a file inside root, or null when the path is malformed or escapes root.
 * Rejects rather than normalises suspicious input (encoded slashes, NUL, "..") so there is nothing to get wrong.
 */
export function resolveStaticPath(root: string, urlPath: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return null;
  const segments = decoded.split('/');
  if (segments.some((s) => s === '..' || s === '.')) return null;
  const rel = decoded === '/' || decoded === '' ? 'index.html' : decoded.replace(/^\/+/, '');
  const full = path.resolve(root, rel);
  const rootResolved = path.resolve(root);
  if (full !== rootResolved && !full.startsWith(rootResolved + path.sep)) return null;
  return full;
}

export class StaticFiles {
  private realRoot: Promise<string>;

  constructor(readonly root: string) {
    this.realRoot = fs.realpath(root).catch(() => path.resolve(root));
  }

  /** Writes the file, falls back to index.html for app routes (no extension), or 404. Returns the status sent. */
  async serve(urlPath: string, res: ServerResponse, method: string): Promise<number> {
    const full = resolveStaticPath(this.root, urlPath);
    if (!full) return send(res, 400, 'bad path');
    let file = await this.regularFileInside(full);
    if (!file && !path.extname(full)) file = await this.regularFileInside(path.join(this.root, 'index.html'));
    if (!file) {
      if (!(await this.regularFileInside(path.join(this.root, 'index.html')))) {
        return send(res, 503, 'the renderer is not built: run `npm run build:renderer`');
      }
      return send(res, 404, 'not found');
    }
    const body = await fs.readFile(file);
    const type = contentType(file);
    res.statusCode = 200;
    res.setHeader('Content-Type', type);
    res.setHeader('Content-Length', body.length);
    // Hashed asset names may be cached forever; index.html must always be fresh.
    res.setHeader('Cache-Control', /\/assets\//.test(file) ? 'public, max-age=31536000, immutable' : 'no-cache');
    res.end(method === 'HEAD' ? undefined : body);
    return 200;
  }

  /** The real path when it is a regular file still inside the root after following symlinks. */
  private async regularFileInside(p: string): Promise<string | null> {
    try {
      const real = await fs.realpath(p);
      const root = await this.realRoot;
      if (!real.startsWith(root + path.sep)) return null;
      const st = await fs.stat(real);
      return st.isFile() ? real : null;
    } catch {
      return null;
    }
  }
}

/** The Content-Type for a file name (application/octet-stream when unknown). */
export function contentType(file: string): string {
  return TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
}

export function send(res: ServerResponse, status: number, text: string): number {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(text + '\n');
  return status;
}
