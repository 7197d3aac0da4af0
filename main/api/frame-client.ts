// The client side of the one contract, over any transport that carries text frames: the daemon's unix
// socket (CLI, GUI server), a WebSocket (the renderer). Typed calls, pushed events, serial streams.
// Pure TypeScript: no Node or browser APIs, so every front door shares it.
import type { RpcError, RpcMethod, RpcParams, RpcResult, ServerFrame, ClientFrame } from './rpc.js';
import type { VmEvent } from './events.js';

export interface FrameTransport {
  send(text: string): void;
  close(): void;
  onText(fn: (text: string) => void): void;
  onClose(fn: () => void): void;
}

/** An RPC failure as the daemon reported it (VmdeskError fields), or a lost connection (ENET). */
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

export interface SerialHandlers {
  /** Base64 of the bytes; `replay` marks recent output sent before the live stream. */
  onData(base64: string, replay: boolean): void;
  onClose(error?: RpcError): void;
}

export interface SerialStream {
  /** Base64 of the bytes to type. */
  write(base64: string): void;
  close(): void;
}

/** A terminal stream (term.* frames): SSH into the guest through a pty in the daemon, or its serial console. */
export interface TerminalHandlers {
  /** Open: `via` ssh (detail user@127.0.0.1:port) or serial. */
  onOpened?(via: 'ssh' | 'serial', detail?: string): void;
  /** Before it opens: what it waits for (the guest's SSH server while it boots). */
  onStatus?(message: string): void;
  /** Base64 of the bytes. */
  onData(base64: string): void;
  /** The end: the remote command's exit status (ssh), or why it could not open or ended. */
  onClose(end: { exitCode?: number | null; signal?: number | null; error?: RpcError }): void;
}

export interface TerminalOptions {
  via?: 'auto' | 'ssh' | 'serial';
  /** A command instead of a login shell (ssh only). */
  command?: string[];
  cols?: number;
  rows?: number;
  /** How long the daemon waits for the guest's SSH server. */
  waitMs?: number;
}

export interface TerminalStream {
  /** Base64 of the bytes to type. */
  write(base64: string): void;
  resize(cols: number, rows: number): void;
  close(): void;
}

export type Hello = Extract<ServerFrame, { t: 'hello' }>;

export class FrameClient {
  private nextId = 1;
  private nextSid = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly serials = new Map<number, SerialHandlers>();
  private readonly terminals = new Map<number, TerminalHandlers>();
  private readonly eventListeners = new Set<(ev: VmEvent) => void>();
  private readonly closeListeners = new Set<() => void>();
  private closed = false;
  private helloWaiters: ((h: Hello) => void)[] = [];
  hello: Hello | undefined;

  constructor(private readonly transport: FrameTransport) {
    transport.onText((t) => this.onText(t));
    transport.onClose(() => this.onClose());
  }

  /** The daemon's first frame (its protocol, version and build). */
  waitHello(): Promise<Hello> {
    if (this.hello) return Promise.resolve(this.hello);
    if (this.closed) return Promise.reject(new RpcCallError({ code: 'ENET', message: 'the connection to VMDesk closed', details: [] }));
    return new Promise((resolve) => this.helloWaiters.push(resolve));
  }

  call<M extends RpcMethod>(method: M, params: RpcParams<M>, opts: { opId?: string } = {}): Promise<RpcResult<M>> {
    if (this.closed) return Promise.reject(new RpcCallError({ code: 'ENET', message: 'the connection to VMDesk is closed', details: [] }));
    const id = this.nextId++;
    return new Promise<RpcResult<M>>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sendFrame({ t: 'call', id, method, params, ...(opts.opId ? { opId: opts.opId } : {}) });
    });
  }

  onEvent(fn: (ev: VmEvent) => void): () => void {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  onClosed(fn: () => void): () => void {
    this.closeListeners.add(fn);
    return () => this.closeListeners.delete(fn);
  }

  openSerial(vm: string, handlers: SerialHandlers): SerialStream {
    const sid = this.nextSid++;
    this.serials.set(sid, handlers);
    this.sendFrame({ t: 'serial.open', sid, vm });
    return {
      write: (data) => {
        if (this.serials.has(sid)) this.sendFrame({ t: 'serial.in', sid, data });
      },
      close: () => {
        if (this.serials.delete(sid)) this.sendFrame({ t: 'serial.close', sid });
      },
    };
  }

  openTerminal(vm: string, opts: TerminalOptions, handlers: TerminalHandlers): TerminalStream {
    const sid = this.nextSid++;
    this.terminals.set(sid, handlers);
    this.sendFrame({ t: 'term.open', sid, vm, ...opts });
    return {
      write: (data) => {
        if (this.terminals.has(sid)) this.sendFrame({ t: 'term.in', sid, data });
      },
      resize: (cols, rows) => {
        if (this.terminals.has(sid)) this.sendFrame({ t: 'term.resize', sid, cols, rows });
      },
      close: () => {
        if (this.terminals.delete(sid)) this.sendFrame({ t: 'term.close', sid });
      },
    };
  }

  close(): void {
    this.transport.close();
    this.onClose();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private sendFrame(frame: ClientFrame): void {
    if (!this.closed) this.transport.send(JSON.stringify(frame));
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new RpcCallError({ code: 'ENET', message: 'lost the connection to VMDesk', details: [] });
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const s of this.serials.values()) s.onClose({ code: 'ENET', message: 'connection lost', details: [] });
    this.serials.clear();
    for (const t of this.terminals.values()) t.onClose({ error: { code: 'ENET', message: 'connection lost', details: [] } });
    this.terminals.clear();
    for (const fn of this.closeListeners) fn();
  }

  private onText(text: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
    switch (frame.t) {
      case 'hello':
        this.hello = frame;
        for (const w of this.helloWaiters.splice(0)) w(frame);
        return;
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
        this.serials.get(frame.sid)?.onData(frame.data, !!frame.replay);
        return;
      case 'term.opened':
        this.terminals.get(frame.sid)?.onOpened?.(frame.via, frame.detail);
        return;
      case 'term.status':
        this.terminals.get(frame.sid)?.onStatus?.(frame.message);
        return;
      case 'term.data':
        this.terminals.get(frame.sid)?.onData(frame.data);
        return;
      case 'term.closed': {
        const t = this.terminals.get(frame.sid);
        this.terminals.delete(frame.sid);
        t?.onClose({ exitCode: frame.exitCode, signal: frame.signal, error: frame.error });
        return;
      }
      case 'serial.closed': {
        const s = this.serials.get(frame.sid);
        this.serials.delete(frame.sid);
        s?.onClose(frame.error);
        return;
      }
    }
  }
}
