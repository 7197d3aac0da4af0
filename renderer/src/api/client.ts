// The renderer's one connection to VMDesk: typed RPC calls, pushed events and serial streams over a WebSocket
// that the GUI server relays to the daemon, or in the Electron shell over a channel the main process relays
// (channel-socket.ts, chosen by desktop()). The frame protocol itself is main/api/frame-client.ts's FrameClient,
// the same one the CLI and the GUI server speak; this class adds what a page needs on top: a reconnect with
// backoff (one FrameClient per connection), calls and serial streams that wait for the socket to open, listeners
// that survive reconnects, and bytes instead of base64 for serial data.
import type { RpcMethod, RpcParams, RpcResult, RpcError } from '../../../main/api/rpc';
import type { VmEvent } from '../../../main/api/events';
import { FrameClient, RpcCallError, type FrameTransport, type SerialStream as FrameSerialStream, type TerminalOptions, type TerminalStream as FrameTerminalStream } from '../../../main/api/frame-client';
import { desktop } from './desktop';

/** An RPC failure as VMDesk reported it (VmdeskError fields), or a connection failure (ENET). */
export { RpcCallError };

/**
 * 'expired': the server answers but no longer takes this page's access token (VMDesk was restarted with a new
 * one); retrying cannot help, a new link can.
 */
export type ConnectionState = 'connecting' | 'open' | 'closed' | 'expired';

/** After a connection attempt failed: is the server there, and does it still take this page's token? */
export type SessionProbe = () => Promise<'ok' | 'expired' | 'unreachable'>;

/**
 * The browser's probe: the page's own address, with the cookie. 401 means the server runs but with another
 * token (restarted); a network error means it is not there (yet). Electron windows have no token (their channel
 * goes through the main process), so they need none.
 */
export const browserSessionProbe: SessionProbe = async () => {
  try {
    const r = await fetch(`${location.origin}/`, { cache: 'no-store', credentials: 'same-origin' });
    return r.status === 401 ? 'expired' : 'ok';
  } catch {
    return 'unreachable';
  }
};

export interface SerialStream {
  write(data: string | Uint8Array): void;
  close(): void;
}

/** A shell in the guest (term.* frames): SSH through the daemon's pty, or the serial console for VMs without SSH. */
export interface TerminalStream {
  write(data: string | Uint8Array): void;
  resize(cols: number, rows: number): void;
  close(): void;
}

export interface TerminalHandlers {
  onOpened?(via: 'ssh' | 'serial', detail?: string): void;
  onStatus?(message: string): void;
  onData(bytes: Uint8Array): void;
  onClose(end: { exitCode?: number | null; signal?: number | null; error?: RpcError }): void;
}

interface SerialHandlers {
  onData(bytes: Uint8Array, replay: boolean): void;
  onClose(error?: RpcError): void;
}

/** Anything with the browser WebSocket's surface; tests pass a fake. */
export type SocketFactory = (url: string) => WebSocket;

export function defaultEndpoint(): string {
  // The desktop shell's channel has no URL (see defaultSocketFactory).
  if (desktop()) return 'vmdesk:rpc';
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // The HttpOnly cookie set on first load authenticates the upgrade.
  return `${proto}//${location.host}/ws`;
}

/** The transport desktop() chooses: in the Electron shell a channel through the main process, else a WebSocket. */
export function defaultSocketFactory(): SocketFactory {
  const d = desktop();
  return d ? () => d.socket('rpc') as unknown as WebSocket : (u) => new WebSocket(u);
}

/**
 * A browser WebSocket as a FrameTransport. `onSocketClose` runs after the FrameClient has failed what was pending,
 * so the reconnect logic sees a clean slate.
 */
function socketTransport(ws: WebSocket, onSocketClose: () => void): FrameTransport {
  const closeListeners: (() => void)[] = [];
  ws.onclose = () => {
    for (const fn of closeListeners) fn();
    onSocketClose();
  };
  return {
    send: (text) => ws.send(text),
    close: () => ws.close(),
    onText: (fn) => {
      ws.onmessage = (m) => fn(typeof m.data === 'string' ? m.data : String(m.data));
    },
    onClose: (fn) => {
      closeListeners.push(fn);
    },
  };
}

export class RpcClient {
  state: ConnectionState = 'closed';
  private ws: WebSocket | undefined;
  /** The protocol over the current socket; a new one per connection (a FrameClient does not reopen). */
  private frames: FrameClient | undefined;
  private readonly eventListeners = new Set<(ev: VmEvent) => void>();
  private readonly stateListeners = new Set<(s: ConnectionState) => void>();
  private openWaiters: { resolve(): void; reject(e: Error): void }[] = [];
  private retryMs = 250;
  private stopped = false;
  private everOpen = false;
  private openedThisSocket = false;

  constructor(
    private readonly url: string = defaultEndpoint(),
    private readonly makeSocket: SocketFactory = (u) => new WebSocket(u),
    private readonly probe?: SessionProbe,
  ) {}

  connect(): void {
    if (this.stopped || this.state !== 'closed') return;
    this.setState('connecting');
    const ws = this.makeSocket(this.url);
    this.ws = ws;
    const frames = new FrameClient(socketTransport(ws, () => this.onSocketClosed(ws)));
    this.frames = frames;
    frames.onEvent((ev) => {
      for (const fn of this.eventListeners) fn(ev);
    });
    this.openedThisSocket = false;
    ws.onopen = () => {
      this.retryMs = 250;
      this.everOpen = true;
      this.openedThisSocket = true;
      this.setState('open');
      for (const w of this.openWaiters.splice(0)) w.resolve();
    };
  }

  private onSocketClosed(ws: WebSocket): void {
    if (this.ws !== ws) return;
    this.ws = undefined;
    this.frames = undefined;
    this.setState('closed');
    if (this.stopped) return;
    const retry = () => {
      // Backoff so a server restart is picked up quickly but a dead server is not hammered.
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    };
    // Refused before it opened: a server that answers but refuses the token has been restarted with a new one.
    if (this.probe && !this.openedThisSocket && this.everOpen) {
      void this.probe().then((r) => {
        if (this.stopped || this.state !== 'closed') return;
        if (r === 'expired') this.expire();
        else retry();
      });
    } else retry();
  }

  /** The session cannot come back: stop retrying, fail whatever waits. */
  private expire(): void {
    this.stopped = true;
    this.setState('expired');
    const err = new RpcCallError({ code: 'EACCES', message: 'this VMDesk session has expired: open the new link VMDesk printed', details: [] });
    for (const w of this.openWaiters.splice(0)) w.reject(err);
  }

  dispose(): void {
    this.stopped = true;
    this.ws?.close();
    const err = new RpcCallError({ code: 'ENET', message: 'the connection to VMDesk was closed', details: [] });
    for (const w of this.openWaiters.splice(0)) w.reject(err);
  }

  private setState(s: ConnectionState): void {
    this.state = s;
    for (const fn of this.stateListeners) fn(s);
  }

  onState(fn: (s: ConnectionState) => void): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  onEvent(fn: (ev: VmEvent) => void): () => void {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** The FrameClient of an open connection (connecting first if needed). */
  private async openFrames(): Promise<FrameClient> {
    if (this.state !== 'open') {
      if (this.stopped) throw new RpcCallError({ code: 'ENET', message: 'the connection to VMDesk was closed', details: [] });
      this.connect();
      await new Promise<void>((resolve, reject) => this.openWaiters.push({ resolve, reject }));
    }
    return this.frames!;
  }

  call<M extends RpcMethod>(method: M, params: RpcParams<M>, opts: { opId?: string } = {}): Promise<RpcResult<M>> {
    // Connected: the frame goes out now, not a microtask later.
    if (this.state === 'open' && this.frames) return this.frames.call(method, params, opts);
    // Lost after it had been up: say so now rather than leave a spinner waiting for a server that may not come
    // back (the list is fetched again by itself on reconnect). Before the first connection, calls wait for it.
    if (this.everOpen) {
      return Promise.reject(
        new RpcCallError({ code: 'ENET', message: this.state === 'expired' ? 'this VMDesk session has expired: open the new link VMDesk printed' : 'not connected to VMDesk; try again once the connection is back', details: [] }),
      );
    }
    return this.openFrames().then((frames) => frames.call(method, params, opts));
  }

  /** Opens at once if connected, else when the connection opens; a connection lost ends the stream (onClose). */
  openSerial(vm: string, handlers: SerialHandlers): SerialStream {
    let inner: FrameSerialStream | undefined;
    let closed = false;
    const open = (frames: FrameClient) => {
      if (closed) return;
      inner = frames.openSerial(vm, {
        onData: (b64, replay) => handlers.onData(base64ToBytes(b64), replay),
        onClose: (error) => {
          closed = true;
          handlers.onClose(error);
        },
      });
    };
    if (this.state === 'open' && this.frames) open(this.frames);
    else
      void this.openFrames().then(open, (e: unknown) => {
        if (closed) return;
        closed = true;
        handlers.onClose(e instanceof RpcCallError ? { code: e.code, message: e.message, details: e.details } : undefined);
      });
    return {
      write: (data) => {
        if (closed || !inner) return;
        inner.write(bytesToBase64(typeof data === 'string' ? new TextEncoder().encode(data) : data));
      },
      close: () => {
        if (closed) return;
        closed = true;
        inner?.close();
      },
    };
  }

  /** Like openSerial: at once if connected, else when the connection opens; a lost connection ends it (onClose). */
  openTerminal(vm: string, opts: TerminalOptions, handlers: TerminalHandlers): TerminalStream {
    let inner: FrameTerminalStream | undefined;
    let closed = false;
    const open = (frames: FrameClient) => {
      if (closed) return;
      inner = frames.openTerminal(vm, opts, {
        onOpened: (via, detail) => handlers.onOpened?.(via, detail),
        onStatus: (message) => handlers.onStatus?.(message),
        onData: (b64) => handlers.onData(base64ToBytes(b64)),
        onClose: (end) => {
          closed = true;
          handlers.onClose(end);
        },
      });
    };
    if (this.state === 'open' && this.frames) open(this.frames);
    else
      void this.openFrames().then(open, (e: unknown) => {
        if (closed) return;
        closed = true;
        handlers.onClose({ error: e instanceof RpcCallError ? { code: e.code, message: e.message, details: e.details } : undefined });
      });
    return {
      write: (data) => {
        if (closed || !inner) return;
        inner.write(bytesToBase64(typeof data === 'string' ? new TextEncoder().encode(data) : data));
      },
      resize: (cols, rows) => {
        if (!closed) inner?.resize(cols, rows);
      },
      close: () => {
        if (closed) return;
        closed = true;
        inner?.close();
      },
    };
  }
}

export function bytesToBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function base64ToBytes(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

let shared: RpcClient | undefined;

/** The app-wide client; tests replace it with setRpcClient. */
export function rpc(): RpcClient {
  if (!shared) {
    shared = new RpcClient(defaultEndpoint(), defaultSocketFactory(), desktop() ? undefined : browserSessionProbe);
    shared.connect();
  }
  return shared;
}

export function setRpcClient(c: RpcClient | undefined): void {
  shared = c;
}
