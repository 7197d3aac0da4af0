// One /ws connection: RPC calls, pushed core events, and the serial console streams it opened.
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Core } from '../core/core.js';
import { ClientFrame, type ServerFrame } from '../api/rpc.js';
import type { VmEvent } from '../api/events.js';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { dispatch, toRpcError } from './rpc-handlers.js';

/** How many serial streams one socket may hold: enough for every console window, bounded against abuse. */
const MAX_SERIAL_STREAMS = 64;

export class Session {
  private serials = new Map<number, Duplex | 'opening'>();
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly core: Core,
    private readonly broadcast: (ev: VmEvent) => void,
  ) {
    ws.on('message', (data, isBinary) => void this.onMessage(data, isBinary));
    ws.on('close', () => this.close());
    ws.on('error', () => this.close());
    this.send({ t: 'hello', version: 1 });
  }

  /** Called by the server for every event (core events and progress of any session's calls). */
  pushEvent(event: VmEvent): void {
    this.send({ t: 'event', event });
  }

  private send(frame: ServerFrame): void {
    if (!this.closed && this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(frame));
  }

  private async onMessage(data: unknown, isBinary: boolean): Promise<void> {
    let json: unknown;
    try {
      if (isBinary) throw new Error('binary frame');
      json = JSON.parse(Array.isArray(data) ? Buffer.concat(data).toString('utf8') : String(data));
    } catch {
      this.ws.close(1003, 'frames must be JSON text');
      return;
    }
    const parsed = ClientFrame.safeParse(json);
    if (!parsed.success) {
      // Answer the call id when there is one, so the caller's promise settles with a readable error.
      const id = typeof (json as { id?: unknown })?.id === 'number' ? (json as { id: number }).id : -1;
      const lines = parsed.error.issues.map((i) => `${i.path.join('.') || 'frame'}: ${i.message}`);
      this.send({ t: 'error', id, error: { code: ErrorCode.invalid, message: `malformed message: ${lines[0]}`, details: lines.slice(1) } });
      return;
    }
    const frame = parsed.data;
    switch (frame.t) {
      case 'call':
        try {
          const result = await dispatch(this.core, frame.method, frame.params, { opId: frame.opId, emit: this.broadcast });
          this.send({ t: 'result', id: frame.id, result });
        } catch (e) {
          this.send({ t: 'error', id: frame.id, error: toRpcError(e) });
        }
        return;
      case 'serial.open':
        return this.openSerial(frame.sid, frame.vm);
      case 'serial.in': {
        const s = this.serials.get(frame.sid);
        if (s && s !== 'opening') s.write(Buffer.from(frame.data, 'base64'));
        return;
      }
      case 'serial.close':
        this.closeSerial(frame.sid);
        return;
    }
  }

  private async openSerial(sid: number, vm: string): Promise<void> {
    if (this.serials.has(sid)) {
      this.send({ t: 'serial.closed', sid, error: toRpcError(new VmdeskError(ErrorCode.busy, `serial stream ${sid} is already open`)) });
      return;
    }
    if (this.serials.size >= MAX_SERIAL_STREAMS) {
      this.send({ t: 'serial.closed', sid, error: toRpcError(new VmdeskError(ErrorCode.busy, 'too many serial consoles open')) });
      return;
    }
    this.serials.set(sid, 'opening');
    try {
      // Open the live stream first and hold its bytes, so nothing printed while the log is read is lost.
      const stream = await this.core.openSerial(vm);
      const held: Buffer[] = [];
      let live = false;
      stream.on('data', (chunk: Buffer) => {
        if (live) this.send({ t: 'serial.data', sid, data: chunk.toString('base64') });
        else held.push(chunk);
      });
      stream.on('close', () => {
        if (this.serials.get(sid) === stream) {
          this.serials.delete(sid);
          this.send({ t: 'serial.closed', sid });
        }
      });
      stream.on('error', () => stream.destroy());
      if (this.closed || this.serials.get(sid) !== 'opening') {
        stream.destroy();
        return;
      }
      this.serials.set(sid, stream);
      const log = await this.core.serialLog(vm);
      if (log.length) this.send({ t: 'serial.data', sid, data: log.toString('base64'), replay: true });
      // Bytes held while the log was read may already be at its end: send only what the log did not show.
      const heldBytes = Buffer.concat(held);
      const fresh = heldBytes.subarray(overlapLength(log, heldBytes));
      if (fresh.length) this.send({ t: 'serial.data', sid, data: fresh.toString('base64') });
      live = true;
    } catch (e) {
      this.serials.delete(sid);
      this.send({ t: 'serial.closed', sid, error: toRpcError(e) });
    }
  }

  private closeSerial(sid: number): void {
    const s = this.serials.get(sid);
    this.serials.delete(sid);
    if (s && s !== 'opening') s.destroy();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const sid of [...this.serials.keys()]) this.closeSerial(sid);
  }
}

/** Length of the longest suffix of `a` that is a prefix of `b`. */
export function overlapLength(a: Buffer, b: Buffer): number {
  for (let k = Math.min(a.length, b.length); k > 0; k--) {
    if (a.subarray(a.length - k).equals(b.subarray(0, k))) return k;
  }
  return 0;
}
