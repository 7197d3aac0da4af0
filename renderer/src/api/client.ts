// The renderer's one connection to the server: typed RPC calls, pushed events and serial streams over a WebSocket.
import type { RpcMethod, RpcParams, RpcResult, RpcError, ServerFrame, ClientFrame } from '../../../main/api/rpc';
import type { VmEvent } from '../../../main/api/events';
import { desktop } from './desktop';

/** An RPC failure as the server reported it (VmdeskError fields), or a connection failure (ENET). */
export class RpcCallError extends Error {
  readonly code: string;
  readonly details: string[];
  constructor(err: RpcError) {
    super(err.message);
    this.name = 'RpcCallError';
    this.code = err.code;
    this.details = err.details ?? [];
  }
}

export type ConnectionState = 'connecting' | 'open' | 'closed';

export interface SerialStream {
  write(data: string | Uint8Array): void;
  close(): void;
}

interface SerialHandlers {
  onData(bytes: Uint8Array, replay: boolean): void;
  onClose(error?: RpcError): void;
}

/** Anything with the browser WebSocket's surface; tests pass a fake. */
export type SocketFactory = (url: string) => WebSocket;

export function defaultEndpoint(): string {
  const d = desktop();
  if (d) return `${d.endpoint}?token=${encodeURIComponent(d.token)}`;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // The HttpOnly cookie set on first load authenticates the upgrade.
  return `${proto}//${location.host}/ws`;
}

export class RpcClient {
  state: ConnectionState = 'closed';
  private ws: WebSocket | undefined;
  private nextId = 1;
  private nextSid = 1;
  private pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private serials = new Map<number, SerialHandlers>();
  private eventListeners = new Set<(ev: VmEvent) => void>();
  private stateListeners = new Set<(s: ConnectionState) => void>();
  private openWaiters: { resolve(): void; reject(e: Error): void }[] = [];
  private retryMs = 250;
  private stopped = false;

  constructor(
    private readonly url: string = defaultEndpoint(),
    private readonly makeSocket: SocketFactory = (u) => new WebSocket(u),
  ) {}

  connect(): void {
    if (this.stopped || this.state !== 'closed') return;
    this.setState('connecting');
    const ws = this.makeSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 250;
      this.setState('open');
      for (const w of this.openWaiters.splice(0)) w.resolve();
    };
    ws.onmessage = (m) => this.onFrame(m.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.setState('closed');
      const err = new RpcCallError({ code: 'ENET', message: 'lost the connection to VMDesk', details: [] });
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      for (const s of this.serials.values()) s.onClose({ code: 'ENET', message: 'connection lost', details: [] });
      this.serials.clear();
      if (!this.stopped) {
        // Backoff so a server restart is picked up quickly but a dead server is not hammered.
        setTimeout(() => this.connect(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 5000);
      }
    };
  }

  dispose(): void {
    this.stopped = true;
    this.ws?.close();
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

  private whenOpen(): Promise<void> {
    if (this.state === 'open') return Promise.resolve();
    this.connect();
    return new Promise((resolve, reject) => this.openWaiters.push({ resolve, reject }));
  }

  private sendFrame(frame: ClientFrame): void {
    this.ws?.send(JSON.stringify(frame));
  }

  async call<M extends RpcMethod>(method: M, params: RpcParams<M>, opts: { opId?: string } = {}): Promise<RpcResult<M>> {
    await this.whenOpen();
    const id = this.nextId++;
    return new Promise<RpcResult<M>>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sendFrame({ t: 'call', id, method, params, ...(opts.opId ? { opId: opts.opId } : {}) });
    });
  }

  openSerial(vm: string, handlers: SerialHandlers): SerialStream {
    const sid = this.nextSid++;
    this.serials.set(sid, handlers);
    void this.whenOpen().then(() => this.sendFrame({ t: 'serial.open', sid, vm }));
    return {
      write: (data) => {
        const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
        if (this.serials.has(sid)) this.sendFrame({ t: 'serial.in', sid, data: bytesToBase64(bytes) });
      },
      close: () => {
        if (this.serials.delete(sid)) this.sendFrame({ t: 'serial.close', sid });
      },
    };
  }

  private onFrame(raw: unknown): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(raw)) as ServerFrame;
    } catch {
      return;
    }
    switch (frame.t) {
      case 'result': {
        const p = this.pending.get(frame.id);
        this.pending.delete(frame.id);
        p?.resolve(frame.result);
        return;
      }
      case 'error': {
        const p = this.pending.get(frame.id);
        this.pending.delete(frame.id);
        p?.reject(new RpcCallError(frame.error));
        return;
      }
      case 'event':
        for (const fn of this.eventListeners) fn(frame.event as VmEvent);
        return;
      case 'serial.data':
        this.serials.get(frame.sid)?.onData(base64ToBytes(frame.data), !!frame.replay);
        return;
      case 'serial.closed': {
        const s = this.serials.get(frame.sid);
        this.serials.delete(frame.sid);
        s?.onClose(frame.error);
        return;
      }
      case 'hello':
        return;
    }
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
    shared = new RpcClient();
    shared.connect();
  }
  return shared;
}

export function setRpcClient(c: RpcClient | undefined): void {
  shared = c;
}
