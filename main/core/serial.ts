// One running guest's serial console fanned out to any number of clients: the engine's single serial stream
// in, a bounded replay of recent output (seeded from the engine's own log) for clients that attach late.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import type { SerialPort } from '../engines/engine.js';

/** Recent output kept for clients that open the console later. */
export const SERIAL_REPLAY_BYTES = 64 * 1024;

export interface SerialSession {
  /** What the guest printed recently (up to SERIAL_REPLAY_BYTES), to show before the live bytes. */
  readonly history: Buffer;
  onData(fn: (chunk: Buffer) => void): void;
  /** Called once when the guest stops or the session is closed. */
  onClose(fn: () => void): void;
  /** False when the guest is not reading its console: wait for onceDrain before sending more. */
  write(data: Buffer): boolean;
  onceDrain(fn: () => void): void;
  close(): void;
}

/** The last `max` bytes of a file (none before byte `from`); empty when it does not exist. */
export function fileTail(file: string, max: number, from = 0): Buffer {
  try {
    const size = statSync(file).size;
    const len = Math.max(0, Math.min(size - from, max));
    const buf = Buffer.alloc(len);
    const fd = openSync(file, 'r');
    try {
      readSync(fd, buf, 0, len, size - len);
    } finally {
      closeSync(fd);
    }
    return buf;
  } catch {
    return Buffer.alloc(0);
  }
}

export class SerialHub {
  private ring: Buffer[] = [];
  private ringBytes = 0;
  private readonly sessions = new Set<{ data?: (c: Buffer) => void; closed?: () => void }>();
  private readonly unsubscribe: () => void;
  private ended = false;

  constructor(private readonly port: SerialPort) {
    // What the guest printed before we attached is only in the engine's log: start the replay from it.
    this.push(fileTail(port.logFile, SERIAL_REPLAY_BYTES, port.logStart));
    this.unsubscribe = port.onData((chunk) => {
      this.push(chunk);
      for (const s of this.sessions) s.data?.(chunk);
    });
  }

  private push(chunk: Buffer): void {
    if (!chunk.length) return;
    this.ring.push(chunk);
    this.ringBytes += chunk.length;
    while (this.ringBytes > SERIAL_REPLAY_BYTES && this.ring.length > 1) this.ringBytes -= this.ring.shift()!.length;
  }

  get clients(): number {
    return this.sessions.size;
  }

  open(): SerialSession {
    const s: { data?: (c: Buffer) => void; closed?: () => void } = {};
    const history = Buffer.concat(this.ring);
    const hub = this;
    let closed = this.ended;
    if (!closed) this.sessions.add(s);
    return {
      history: history.subarray(Math.max(0, history.length - SERIAL_REPLAY_BYTES)),
      onData(fn) {
        s.data = fn;
      },
      onClose(fn) {
        if (closed) queueMicrotask(fn);
        else s.closed = fn;
      },
      write(data) {
        return closed ? true : hub.port.write(data);
      },
      onceDrain(fn) {
        hub.port.onceDrain(fn);
      },
      close() {
        if (closed) return;
        closed = true;
        hub.sessions.delete(s);
      },
    };
  }

  /** The guest is gone: every session is told, nothing more arrives. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.unsubscribe();
    for (const s of [...this.sessions]) s.closed?.();
    this.sessions.clear();
  }
}
