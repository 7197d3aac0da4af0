// Client side of vmdesk-microvm's control socket. Requests are lines "<id> <command>[ <argument>]"; replies
// and events are JSON lines (native/src/host/control.h has the grammar). Everything read is bounded and
// checked: a line that is not a reply or event we know is ignored, an endless one closes the connection.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { ExitRecord } from '../../api/schema.js';
import { connectUnixSocket } from '../../platform/process.js';

/** The longest line the executable sends (an exit record with 20 lines of tail is a few KiB). */
const MAX_LINE_BYTES = 1024 * 1024;
/** Requests waiting for their reply; the daemon sends a handful at a time. */
const MAX_PENDING = 256;

export type MicrovmState = 'running' | 'paused' | 'stopping';

export interface HelloEvent {
  protocol: number;
  pid: number;
  startTime: string;
  state: MicrovmState;
}

export type ControlCommand = 'state' | 'info' | 'pause' | 'resume' | 'reset' | 'shutdown' | 'kill' | 'snapshot-save' | 'snapshot-load' | 'quit';

const STATES: readonly string[] = ['running', 'paused', 'stopping'];
const CODES = Object.values(ErrorCode) as string[];

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  cmd: string;
}

/** Whether a parsed line is an ExitRecord as the executable writes it (the fields the core relies on). */
export function isExitRecord(v: unknown): v is ExitRecord {
  const r = v as ExitRecord;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.at === 'string' &&
    typeof r.reason === 'string' &&
    (r.detail === undefined || typeof r.detail === 'string') &&
    Array.isArray(r.logTail) &&
    r.logTail.every((l) => typeof l === 'string')
  );
}

/**
 * Events: 'hello' (HelloEvent), 'state' (MicrovmState), 'exit' (ExitRecord), 'close' (the connection ended).
 */
export class ControlClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private chunks: Buffer[] = [];
  private buffered = 0;
  private closed = false;
  /** The greeting the executable sends on connect (protocol, pid, state), once it has arrived. */
  hello: HelloEvent | undefined;

  private constructor(private readonly sock: Socket) {
    super();
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => {});
    sock.on('close', () => this.onClose());
  }

  static async connect(path: string): Promise<ControlClient> {
    return new ControlClient(await connectUnixSocket(path));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends one request; resolves with its result, rejects with the executable's error as a VmdeskError. */
  request<T = Record<string, unknown>>(cmd: ControlCommand, arg?: string | number, timeoutMs = 30_000): Promise<T> {
    if (this.closed) return Promise.reject(new VmdeskError(ErrorCode.state, 'the micro-VM is not reachable (its control connection is closed)'));
    const a = arg === undefined ? '' : String(arg);
    // A newline in an argument would be a second request: nothing but printable text goes on the line.
    if (/[\u0000-\u001f\u007f]/.test(a)) return Promise.reject(new VmdeskError(ErrorCode.invalid, `${cmd}: the argument must not contain control characters`));
    if (Buffer.byteLength(a) > 4095) return Promise.reject(new VmdeskError(ErrorCode.invalid, `${cmd}: the argument is longer than 4095 bytes`));
    if (this.pending.size >= MAX_PENDING) return Promise.reject(new VmdeskError(ErrorCode.busy, 'too many micro-VM requests in flight'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new VmdeskError(ErrorCode.timeout, `the micro-VM did not answer "${cmd}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, cmd });
      this.sock.write(`${id} ${cmd}${a ? ` ${a}` : ''}\n`);
    });
  }

  /** The greeting, waiting up to timeoutMs for it; undefined when it does not come (not our executable). */
  waitHello(timeoutMs: number): Promise<HelloEvent | undefined> {
    if (this.hello || this.closed) return Promise.resolve(this.hello);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.off('hello', done);
        this.off('close', done);
        resolve(this.hello);
      };
      const timer = setTimeout(done, timeoutMs);
      this.on('hello', done);
      this.on('close', done);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: Buffer): void {
    let start = 0;
    for (let nl = d.indexOf(10); nl >= 0; nl = d.indexOf(10, start)) {
      const piece = d.subarray(start, nl);
      const line = this.chunks.length ? Buffer.concat([...this.chunks, piece]) : piece;
      this.chunks = [];
      this.buffered = 0;
      start = nl + 1;
      if (line.length <= MAX_LINE_BYTES) this.onLine(line.toString('utf8'));
      if (this.closed) return;
    }
    const rest = d.subarray(start);
    if (!rest.length) return;
    this.buffered += rest.length;
    if (this.buffered > MAX_LINE_BYTES) {
      this.sock.destroy(); // not a peer we understand
      return;
    }
    this.chunks.push(Buffer.from(rest));
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    if (typeof msg !== 'object' || msg === null) return;
    const m = msg as { id?: unknown; ok?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown }; event?: unknown; data?: unknown };
    if (typeof m.event === 'string') {
      this.onEvent(m.event, m.data);
      return;
    }
    if (typeof m.id !== 'number') return; // errors for lines without an id: nothing of ours
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.ok === true) {
      p.resolve(typeof m.result === 'object' && m.result !== null ? m.result : {});
    } else {
      const code = typeof m.error?.code === 'string' && CODES.includes(m.error.code) ? (m.error.code as ErrorCode) : ErrorCode.engine;
      const message = typeof m.error?.message === 'string' ? m.error.message.slice(0, 4096) : `the micro-VM refused "${p.cmd}"`;
      p.reject(new VmdeskError(code, message));
    }
  }

  private onEvent(name: string, data: unknown): void {
    const d = data as Record<string, unknown> | null;
    if (name === 'hello' && d && typeof d.pid === 'number' && typeof d.state === 'string' && STATES.includes(d.state)) {
      this.hello = { protocol: Number(d.protocol), pid: d.pid, startTime: String(d.startTime ?? ''), state: d.state as MicrovmState };
      this.emit('hello', this.hello);
    } else if (name === 'state' && d && typeof d.state === 'string' && STATES.includes(d.state)) {
      this.emit('state', d.state as MicrovmState);
    } else if (name === 'exit' && isExitRecord(d)) {
      this.emit('exit', d);
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new VmdeskError(ErrorCode.state, `the micro-VM closed its control connection before answering "${p.cmd}"`));
    }
    this.pending.clear();
    this.emit('close');
  }
}
