// A library's daemon in the test's own process (startDaemon, as `vmdesk daemon run` does in its own), the GUI
// server relaying to it (startServer({ home })), and clients of both front doors that speak raw frames: JSON
// lines on the daemon's unix socket, WebSocket messages through the relay. Raw, so tests can send what a
// well-behaved client never would and stop reading whenever they like.
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { FrameClient } from '../../main/api/frame-client.js';
import type { ServerFrame } from '../../main/api/rpc.js';
import { socketTransport } from '../../main/client/daemon-client.js';
import { startDaemon, type RunningDaemon } from '../../main/daemon/daemon.js';
import type { ConnectionLimits } from '../../main/daemon/limits.js';
import { runtimeRoot } from '../../main/platform/paths.js';
import { connectUnixSocket } from '../../main/platform/process.js';
import { startServer, type RunningServer, type ServerOptions } from '../../main/server/server.js';

export interface Library {
  /** A temporary directory holding the home (and a static dir for the server). */
  tmp: string;
  home: string;
  daemon: RunningDaemon;
  /** The GUI server relaying to the daemon, unless asked for none. */
  server: RunningServer;
  /** A well-behaved client on the daemon's socket (the CLI's kind), for setting things up. */
  client(): Promise<FrameClient>;
  close(): Promise<void>;
}

export interface LibraryOptions {
  /** The daemon's per-connection limits. */
  limits?: Partial<ConnectionLimits>;
  /** The relay's options (its limits, static dir…); false for no server. */
  server?: Partial<Omit<ServerOptions, 'home'>> | false;
}

/** Connects a FrameClient to a daemon's socket and waits for its hello. */
export async function daemonClient(socketPath: string): Promise<FrameClient> {
  const c = new FrameClient(socketTransport(await connectUnixSocket(socketPath)));
  await c.waitHello();
  return c;
}

export async function openLibrary(opts: LibraryOptions = {}): Promise<Library> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmd-lib-'));
  const home = path.join(tmp, 'home');
  const daemon = await startDaemon({ home, idleExitMs: 0, limits: opts.limits });
  let server: RunningServer | undefined;
  const clients: FrameClient[] = [];
  try {
    if (opts.server !== false) server = await startServer({ home, staticDir: tmp, ...(opts.server ?? {}) });
  } catch (e) {
    await daemon.close();
    throw e;
  }
  return {
    tmp,
    home,
    daemon,
    get server(): RunningServer {
      if (!server) throw new Error('this library was opened without a server');
      return server;
    },
    async client() {
      const c = await daemonClient(daemon.socketPath);
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.close();
      await server?.close();
      await daemon.close();
      rmSync(tmp, { recursive: true, force: true });
      rmSync(runtimeRoot(home), { recursive: true, force: true });
    },
  };
}

/** A client speaking raw frames: sends anything, keeps every frame it got, can stop reading. */
export interface RawClient {
  frames: ServerFrame[];
  send(frame: unknown): void;
  raw(text: string): void;
  /** The first frame (already received or to come) that matches. */
  next(pred: (f: ServerFrame) => boolean): Promise<ServerFrame>;
  /** Sends a call and resolves with its result or error frame. */
  call(method: string, params?: unknown): Promise<ServerFrame>;
  /** Answers (results and errors) by call id. */
  answers(): Map<number, ServerFrame>;
  /** Stops reading (what the other side sends backs up), and starts again. */
  pause(): void;
  resume(): void;
  /** Settles when the connection is gone, with the WebSocket close code if any. */
  readonly closed: Promise<number | undefined>;
  readonly isClosed: boolean;
  close(): void;
  terminate(): void;
}

function frameLog(): Pick<RawClient, 'frames' | 'next' | 'answers'> & { push(f: ServerFrame): void } {
  const frames: ServerFrame[] = [];
  const waiters = new Set<{ pred: (f: ServerFrame) => boolean; resolve: (f: ServerFrame) => void }>();
  return {
    frames,
    push(f) {
      frames.push(f);
      for (const w of [...waiters]) {
        if (w.pred(f)) {
          waiters.delete(w);
          w.resolve(f);
        }
      }
    },
    next(pred) {
      const found = frames.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => waiters.add({ pred, resolve }));
    },
    answers() {
      const m = new Map<number, ServerFrame>();
      for (const f of frames) if (f.t === 'result' || f.t === 'error') m.set(f.id, f);
      return m;
    },
  };
}

let callIds = 100_000;

/** JSON lines on the daemon's unix socket. */
export async function lineClient(socketPath: string): Promise<RawClient & { sock: Socket }> {
  const sock = await connectUnixSocket(socketPath);
  const log = frameLog();
  let pending: Buffer[] = [];
  sock.on('data', (chunk: Buffer) => {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const line = Buffer.concat([...pending, chunk.subarray(start, nl)]).toString('utf8');
      pending = [];
      start = nl + 1;
      if (line) log.push(JSON.parse(line) as ServerFrame);
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  });
  sock.on('error', () => {});
  let isClosed = false;
  const closed = once(sock, 'close').then(() => {
    isClosed = true;
    return undefined;
  });
  const raw = (text: string) => void (sock.writable && sock.write(text + '\n'));
  return {
    sock,
    ...log,
    send: (frame) => raw(JSON.stringify(frame)),
    raw,
    call(method, params) {
      const id = callIds++;
      raw(JSON.stringify({ t: 'call', id, method, params }));
      return log.next((f) => (f.t === 'result' || f.t === 'error') && f.id === id);
    },
    pause: () => sock.pause(),
    resume: () => sock.resume(),
    closed,
    get isClosed() {
      return isClosed;
    },
    close: () => sock.end(),
    terminate: () => sock.destroy(),
  };
}

/** A WebSocket through the relay (token in a header), as a browser page's connection. */
export async function wsClient(server: RunningServer, p = '/ws'): Promise<RawClient & { ws: WebSocket }> {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}${p}`, { headers: { 'x-vmdesk-token': server.token } });
  const log = frameLog();
  ws.on('message', (d, binary) => {
    if (!binary) log.push(JSON.parse(String(d)) as ServerFrame);
  });
  ws.on('error', () => {});
  let isClosed = false;
  const closed = new Promise<number | undefined>((resolve) =>
    ws.once('close', (code) => {
      isClosed = true;
      resolve(code);
    }),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
  const raw = (text: string) => void (ws.readyState === ws.OPEN && ws.send(text));
  return {
    ws,
    ...log,
    send: (frame) => raw(JSON.stringify(frame)),
    raw,
    call(method, params) {
      const id = callIds++;
      raw(JSON.stringify({ t: 'call', id, method, params }));
      return log.next((f) => (f.t === 'result' || f.t === 'error') && f.id === id);
    },
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    closed,
    get isClosed() {
      return isClosed;
    },
    close: () => ws.close(),
    terminate: () => ws.terminate(),
  };
}

/** The status code of an upgrade the server refuses (101 when it accepts, undefined when the socket fails). */
export function upgradeStatus(server: RunningServer, p: string, headers: Record<string, string> = { 'x-vmdesk-token': server.token }): Promise<number | undefined> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}${p}`, { headers });
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
    ws.on('open', () => {
      resolve(101);
      ws.terminate();
    });
    ws.on('error', () => resolve(undefined));
  });
}

/** The daemon's client count once connections that are closing have gone (no change for 100 ms). */
export async function settledClients(daemon: RunningDaemon): Promise<number> {
  let last = -1;
  for (let n = daemon.stats().clients; n !== last; n = daemon.stats().clients) {
    last = n;
    await new Promise((r) => setTimeout(r, 100));
  }
  return last;
}
