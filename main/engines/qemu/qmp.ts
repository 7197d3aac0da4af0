// A small QMP client: greeting, qmp_capabilities, id-matched commands with timeouts, and events.
import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { ErrorCode, VmdeskError } from '../../api/errors.js';

export interface QmpGreeting {
  QMP: { version: { qemu: { major: number; minor: number; micro: number }; package?: string }; capabilities: unknown[] };
}

export interface QmpEvent {
  event: string;
  data: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** How long to wait for the socket, the greeting and capability negotiation together. */
  timeoutMs?: number;
  /** Default per-command timeout. */
  commandTimeoutMs?: number;
}

/**
 * Events: 'event' (QmpEvent), 'close' (Error | undefined: why, when it was not our own close()),
 * 'protocol-error' (line: string) for lines that are not JSON objects; they are skipped.
 */
export class QmpClient extends EventEmitter {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  private closeReason: Error | undefined;
  greeting: QmpGreeting | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly commandTimeoutMs: number,
  ) {
    super();
  }

  /** Connects, reads the greeting and leaves negotiation mode; rejects with VmdeskError on any failure. */
  static connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const client = new QmpClient(socket, opts.commandTimeoutMs ?? 30_000);
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.shutdownWith(err);
        socket.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new VmdeskError(ErrorCode.timeout, `QMP handshake on ${path} timed out after ${timeoutMs} ms`)), timeoutMs);
      socket.setEncoding('utf8');
      socket.on('error', (e) => {
        const err = new VmdeskError(ErrorCode.engine, `QMP socket ${path}: ${e.message}`);
        if (!settled) fail(err);
        else client.shutdownWith(err);
      });
      socket.on('close', () => {
        if (!settled) fail(new VmdeskError(ErrorCode.engine, `QMP socket ${path} closed during the handshake`));
        else client.shutdownWith(new VmdeskError(ErrorCode.engine, 'QMP connection closed (QEMU exited?)'));
      });
      socket.on('data', (chunk: string) => client.onData(chunk));
      client.once('greeting', () => {
        client
          .execute('qmp_capabilities', undefined, timeoutMs)
          .then(() => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve(client);
          })
          .catch((e: Error) => fail(e));
      });
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs one command; resolves with its "return" value, rejects with VmdeskError (EENGINE/ETIMEDOUT). */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = this.commandTimeoutMs): Promise<T> {
    if (this.closed) {
      return Promise.reject(this.closeReason ?? new VmdeskError(ErrorCode.engine, 'QMP connection is closed'));
    }
    const id = `vmdesk-${this.nextId++}`;
    const message: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) message.arguments = args;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // A late reply for this id is then dropped: the caller has already been told it failed.
        this.pending.delete(id);
        reject(new VmdeskError(ErrorCode.timeout, `QMP command ${command} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(JSON.stringify(message) + '\n');
    });
  }

  close(): void {
    if (this.closed) return;
    this.shutdownWith(new VmdeskError(ErrorCode.engine, 'QMP connection closed by the client'), false);
    this.socket.end();
    this.socket.destroy();
  }

  private shutdownWith(err: Error, notify = true): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = err;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new VmdeskError(ErrorCode.engine, `QMP command ${p.command} failed: ${err.message}`));
    }
    this.emit('close', notify ? err : undefined);
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onLine(line);
    }
  }

  private onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      msg = parsed as Record<string, unknown>;
    } catch {
      this.emit('protocol-error', line);
      return;
    }
    if ('QMP' in msg) {
      this.greeting = msg as unknown as QmpGreeting;
      this.emit('greeting', this.greeting);
      return;
    }
    if (typeof msg.event === 'string') {
      const ev: QmpEvent = { event: msg.event, data: msg.data ?? {} };
      if (msg.timestamp) ev.timestamp = msg.timestamp as QmpEvent['timestamp'];
      this.emit('event', ev);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return; // a reply to a timed-out command
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      const err = new VmdeskError(ErrorCode.engine, `QMP command ${p.command} failed: ${e.desc ?? 'unknown error'}`, e.class ? [`class: ${e.class}`] : []);
      (err as VmdeskError & { qmpClass?: string }).qmpClass = e.class;
      p.reject(err);
    } else {
      p.resolve(msg.return);
    }
  }
}
