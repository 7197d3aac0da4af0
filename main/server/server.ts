// The GUI's server (`vmdesk serve`, and inside the Electron shell): the built renderer over HTTP, and per
// window one WebSocket relayed to the library's daemon (RPC, events, serial) plus a VNC bridge per display.
// It holds no VM state: everything comes from the daemon, like the CLI.
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { WS_PATH, VNC_PATH_PREFIX } from '../api/rpc.js';
import type { RpcError } from '../api/rpc.js';
import { isVmdeskError } from '../api/errors.js';
import { RpcCallError } from '../api/frame-client.js';
import { connectDaemon } from '../client/daemon-client.js';
import { connectUnixSocket } from '../platform/process.js';
import { daemonSocketPath, runtimeRoot } from '../platform/paths.js';
import { recordGuiServer } from '../platform/gui-servers.js';
import path from 'node:path';
import { resources } from '../platform/resources.js';
import { relay } from './relay.js';
import { allowedHosts, assertListenHost, hostAllowed, newToken, originAllowed, presentedToken, sameOriginLocation, tokenCookie, tokenMatches } from './auth.js';
import { StaticFiles, send } from './static-files.js';
import { bridgeVnc } from './vnc-bridge.js';
import { emptyStats, resolveLimits, type ConnectionLimits, type ServerStats } from '../daemon/limits.js';

function toRpcError(e: unknown): RpcError {
  if (isVmdeskError(e) || e instanceof RpcCallError) return { code: e.code, message: e.message, details: [...e.details] };
  return { code: 'EINTERNAL', message: (e as Error)?.message ?? String(e), details: [] };
}

export interface ServerOptions {
  /** The VM library whose daemon this server relays to (started on demand). */
  home: string;
  /** Interface to bind; 127.0.0.1 unless the user asks otherwise. Anything but loopback needs unsafeListenAll. */
  host?: string;
  /**
   * Allow a non-loopback host. The server speaks plain HTTP, so the token and every frame after it cross
   * the network in clear text: only `vmdesk serve --unsafe-listen-all` sets this.
   */
  unsafeListenAll?: boolean;
  /** 0 or absent picks a free port. */
  port?: number;
  /** Fixed token (tests, CLI); a random one otherwise. */
  token?: string;
  /** Directory of the built renderer; dist/renderer by default. */
  staticDir?: string;
  /** Per-connection and per-server bounds (limits.ts); tests shrink them. */
  limits?: Partial<ConnectionLimits>;
}

export interface RunningServer {
  /** Open this to use the GUI; it carries the token once, after which a cookie does. */
  url: string;
  port: number;
  token: string;
  /** What the connections hold right now and what the limits refused so far. */
  stats(): ServerStats;
  close(): Promise<void>;
}

export function securityHeaders(wsOrigin: string): Record<string, string> {
  return {
    'Content-Security-Policy': [
      "default-src 'self'",
      "script-src 'self'",
      "style-src 'self'",
      "img-src 'self' data: blob:",
      "font-src 'self'",
      `connect-src 'self' ${wsOrigin}`,
      "object-src 'none'",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
  };
}

/** The built renderer, wherever this code runs from (resources.ts). */
export function defaultStaticDir(): string {
  return resources().rendererDir;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const home = opts.home;
  const bindHost = opts.host ?? '127.0.0.1';
  assertListenHost(bindHost, !!opts.unsafeListenAll);
  const limits = resolveLimits(opts.limits);
  const counters = emptyStats();
  const token = opts.token ?? newToken();
  const files = new StaticFiles(opts.staticDir ?? defaultStaticDir());
  const sessions = new Set<{ pausedInput(): boolean; buffered(): number }>();
  const sockets = new Set<WebSocket>();
  /** VNC upgrades accepted, from the VM lookup until the bridge closes. */
  let vncBridges = 0;
  let hosts = new Set<string>();
  let port = 0;

  /** A fresh connection to the daemon (started when none runs), for one browser connection. */
  async function daemonSocket() {
    const direct = await connectUnixSocket(daemonSocketPath(home)).catch(() => undefined);
    if (direct) return direct;
    (await connectDaemon(home)).close();
    return connectUnixSocket(daemonSocketPath(home));
  }
  // Make sure a daemon of this build serves the library before the first page loads.
  (await connectDaemon(home)).close();

  const server = http.createServer((req, res) => {
    void handleHttp(req, res).catch((e) => {
      if (!res.headersSent) send(res, 500, toRpcError(e).message);
      else res.destroy();
    });
  });

  async function handleHttp(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // The WebSocket origin in connect-src comes from the Host header only once that header is known to be ours.
    const wsHost = hostAllowed(req, hosts) ? req.headers.host! : `127.0.0.1:${port}`;
    for (const [k, v] of Object.entries(securityHeaders(`ws://${wsHost}`))) res.setHeader(k, v);
    if (!hostAllowed(req, hosts)) {
      send(res, 403, 'unknown Host header');
      return;
    }
    const given = presentedToken(req);
    if (!given || !tokenMatches(given.token, token)) {
      send(res, 401, 'VMDesk needs its access token: open the URL that `vmdesk serve` printed.');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, 405, 'method not allowed');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    if (given.via === 'query') {
      // Trade the token in the URL for a cookie and drop it from the address bar and history.
      url.searchParams.delete('token');
      res.setHeader('Set-Cookie', tokenCookie(token));
      res.statusCode = 303;
      res.setHeader('Location', sameOriginLocation(url.pathname, url.search));
      res.end();
      return;
    }
    await files.serve(url.pathname, res, req.method);
  }

  // maxPayload bounds one message (its fragments together) before ws buffers it; no compression, so a
  // small frame cannot inflate into a large one.
  const wss = new WebSocketServer({ noServer: true, maxPayload: limits.maxFrameBytes, perMessageDeflate: false });

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const refuse = (status: number, text: string) => {
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
    };
    socket.on('error', () => socket.destroy());
    if (!hostAllowed(req, hosts)) return refuse(403, 'unknown Host header');
    const given = presentedToken(req);
    if (!given || !tokenMatches(given.token, token)) return refuse(401, 'token required');
    if (!originAllowed(req, hosts)) return refuse(403, 'cross-origin WebSocket refused');
    const { pathname } = new URL(req.url ?? '/', 'http://x');
    if (pathname === WS_PATH) {
      if (sessions.size >= limits.maxConnections) {
        counters.refusedUpgrades++;
        return refuse(503, `too many connections (limit ${limits.maxConnections})`);
      }
      daemonSocket().then(
        (daemon) => {
          // ws calls back only for a completed handshake: a browser that left meanwhile, or whose handshake
          // it refuses, ends with its socket, and so must this daemon connection (else each one leaks, and
          // the daemon soon refuses every client).
          let relayed = false;
          socket.once('close', () => relayed || daemon.destroy());
          if (socket.destroyed) daemon.destroy();
          wss.handleUpgrade(req, socket, head, (ws) => {
            relayed = true;
            track(ws);
            const r = relay(ws, socket, daemon, {
              highWater: limits.outputHighWater,
              maxBuffered: limits.maxBufferedOutput,
              onSlowClient: () => counters.slowClientsClosed++,
              onPause: () => counters.congestions++,
              onSent: (buffered) => (counters.peakBufferedBytes = Math.max(counters.peakBufferedBytes, buffered)),
              onClose: () => sessions.delete(r),
            });
            sessions.add(r);
          });
        },
        (e) => refuse(503, `the VMDesk daemon is not available: ${toRpcError(e).message}`),
      );
      return;
    }
    if (pathname.startsWith(VNC_PATH_PREFIX)) {
      let vm: string;
      try {
        vm = decodeURIComponent(pathname.slice(VNC_PATH_PREFIX.length));
      } catch {
        return refuse(400, 'bad VM reference');
      }
      if (!vm || vm.includes('/')) return refuse(400, 'bad VM reference');
      if (vncBridges >= limits.maxVncBridges) {
        counters.refusedUpgrades++;
        return refuse(503, `too many displays open (limit ${limits.maxVncBridges})`);
      }
      // Counted from here: an upgrade waiting for the VM lookup holds a socket too.
      vncBridges++;
      let released = false;
      const release = () => {
        if (!released) vncBridges--;
        released = true;
      };
      socket.once('close', release);
      connectDaemon(home)
        .then(async (c) => {
          try {
            return (await c.call('vm.vncSocket', { id: vm })).path;
          } finally {
            c.close();
          }
        })
        .then(
        (sockPath) =>
          wss.handleUpgrade(req, socket, head, (ws) => {
            track(ws);
            bridgeVnc(ws, socket, sockPath, { highWater: limits.outputHighWater, onClose: release, onPause: () => counters.vncPauses++ });
          }),
        (e) => {
          release();
          refuse(409, toRpcError(e).message);
        },
      );
      return;
    }
    refuse(404, 'no such endpoint');
  });

  function track(ws: WebSocket): void {
    sockets.add(ws);
    ws.on('close', () => sockets.delete(ws));
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, bindHost, () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as { port: number }).port;
  hosts = allowedHosts(bindHost, port);
  // The daemon names this port when a VM's forward asks for it ("VMDesk's own GUI server") instead of "in use".
  const unrecord = (() => {
    try {
      return recordGuiServer(runtimeRoot(path.resolve(home)), port);
    } catch {
      return () => {};
    }
  })();
  const urlHost = bindHost.includes(':') ? `[${bindHost}]` : bindHost === '0.0.0.0' ? '127.0.0.1' : bindHost;

  return {
    url: `http://${urlHost}:${port}/?token=${encodeURIComponent(token)}`,
    port,
    token,
    stats() {
      const out: ServerStats = { ...counters, connections: sessions.size, vncBridges, bufferedBytes: 0, serialStreams: 0, pausedSerialStreams: 0, pausedInputs: 0 };
      for (const s of sessions) {
        out.bufferedBytes += s.buffered();
        if (s.pausedInput()) out.pausedInputs++;
      }
      return out;
    },
    async close() {
      unrecord();
      for (const ws of sockets) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
