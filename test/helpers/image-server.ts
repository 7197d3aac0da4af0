// A local HTTP server for image download tests: files with ETags and byte ranges (RFC 9110), an optional
// throttle, connections cut after a number of bytes, and a log of every request. Plus a CONNECT proxy that
// records where it was asked to go, for the proxy-from-the-environment tests.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';

export interface ServedRequest {
  path: string;
  range?: string;
  ifRange?: string;
}

export interface ImageServer {
  url: string;
  port: number;
  requests: ServedRequest[];
  files: Map<string, Buffer>;
  /** Bytes per second for file bodies (0: as fast as possible). */
  throttle: number;
  /** Cut the connection of the next N responses to `path` after this many body bytes. */
  cut(path: string, afterBytes: number, times?: number): void;
  close(): Promise<void>;
}

export async function startImageServer(files: Record<string, Buffer> = {}): Promise<ImageServer> {
  const map = new Map(Object.entries(files));
  const requests: ServedRequest[] = [];
  const cuts = new Map<string, { after: number; times: number }>();
  const sockets = new Set<Socket>();
  const state = { throttle: 0 };

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push({ path: p, range: req.headers.range, ifRange: req.headers['if-range'] as string | undefined });
    const body = map.get(p);
    if (!body) {
      res.writeHead(404).end('not found');
      return;
    }
    const etag = `"${createHash('sha1').update(body).digest('hex').slice(0, 16)}"`;
    let start = 0;
    let status = 200;
    const headers: Record<string, string | number> = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    if (range && (!ifRange || ifRange === etag)) {
      start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${body.length - 1}/${body.length}`;
    }
    headers['content-length'] = body.length - start;
    res.writeHead(status, headers);
    const cut = cuts.get(p);
    let cutAt = Infinity;
    if (cut && cut.times > 0) {
      cut.times--;
      cutAt = cut.after;
    }
    let at = start;
    let sent = 0;
    const chunk = 64 * 1024;
    const pump = () => {
      if (res.destroyed) return;
      while (at < body.length) {
        if (sent >= cutAt) {
          res.socket?.destroy();
          return;
        }
        const n = Math.min(chunk, body.length - at, cutAt - sent);
        const ok = res.write(body.subarray(at, at + n));
        at += n;
        sent += n;
        if (state.throttle > 0) {
          setTimeout(pump, (n / state.throttle) * 1000);
          return;
        }
        if (!ok) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    files: map,
    get throttle() {
      return state.throttle;
    },
    set throttle(v: number) {
      state.throttle = v;
    },
    cut(path, afterBytes, times = 1) {
      cuts.set(path, { after: afterBytes, times });
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** An HTTP CONNECT proxy (what undici's ProxyAgent speaks) that records the targets it was asked for. */
export async function startConnectProxy(): Promise<{ url: string; targets: string[]; close(): Promise<void> }> {
  const targets: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    targets.push(req.url ?? '');
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    targets,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
