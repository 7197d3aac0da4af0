// One /ws connection: RPC calls, pushed core events, and the serial console streams it opened.
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Core } from '../core/core.js';
import { ClientFrame, type ServerFrame } from '../api/rpc.js';
import type { VmEvent } from '../api/events.js';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { dispatch, toRpcError } from './rpc-handlers.js';
import { mib, resultReservation, whenDrained, type ConnectionLimits, type ServerStats } from './limits.js';

export class Session {
  private serials = new Map<number, Duplex | 'opening'>();
  private closed = false;
  private callsInFlight = 0;
  private resultBytesInFlight = 0;
  /** Set while the client's unread output is over the high-water mark: cancels the wait for the socket to drain. */
  private congested: (() => void) | undefined;
  /** Why frames from the client are not being read: 'output' (it is not reading ours) or 'in:<sid>' (a guest not reading its console). */
  private inputHolds = new Set<string>();

  constructor(
    private readonly ws: WebSocket,
    /** The TCP socket under ws: its 'drain' says when the client has read what it was sent. */
    private readonly socket: Duplex,
    private readonly core: Core,
    private readonly broadcast: (ev: VmEvent) => void,
    private readonly limits: ConnectionLimits,
    /** The server's counters, shared by every connection. */
    private readonly counters: ServerStats,
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

  /** What this connection holds right now, for the server's stats(). */
  usage(): { bufferedBytes: number; serialStreams: number; pausedSerialStreams: number; inputPaused: boolean } {
    let paused = 0;
    for (const s of this.serials.values()) if (s !== 'opening' && s.isPaused()) paused++;
    return { bufferedBytes: this.closed ? 0 : this.ws.bufferedAmount, serialStreams: this.serials.size, pausedSerialStreams: paused, inputPaused: this.inputHolds.size > 0 };
  }

  private send(frame: ServerFrame): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    // Everything sent stays in memory until the client reads it. One that has left this much unread is not
    // going to: drop it rather than keep buffering. No close frame: it would queue behind the very bytes
    // the client is not reading, and keeping them until it does is what must not happen.
    if (this.ws.bufferedAmount > this.limits.maxBufferedOutput) {
      this.counters.slowClientsClosed++;
      this.ws.terminate();
      this.close();
      return;
    }
    this.ws.send(JSON.stringify(frame));
    const buffered = this.ws.bufferedAmount;
    if (buffered > this.counters.peakBufferedBytes) this.counters.peakBufferedBytes = buffered;
    if (buffered > this.limits.outputHighWater && !this.congested) this.congest();
  }

  /**
   * The client is not keeping up: stop producing for it. Serial streams pause (the guest's console backs up
   * into the engine, as a real UART would) and no more frames are read from it, so its new calls wait in its
   * own socket instead of becoming answers here. All resumes when the socket has drained.
   */
  private congest(): void {
    this.counters.congestions++;
    for (const s of this.serials.values()) if (s !== 'opening') s.pause();
    this.holdInput('output');
    this.congested = whenDrained(this.socket, () => {
      this.congested = undefined;
      if (this.closed) return;
      for (const s of this.serials.values()) if (s !== 'opening') s.resume();
      this.releaseInput('output');
    });
  }

  private holdInput(why: string): void {
    if (this.inputHolds.size === 0) this.ws.pause();
    this.inputHolds.add(why);
  }

  private releaseInput(why: string): void {
    if (this.inputHolds.delete(why) && this.inputHolds.size === 0 && !this.closed) this.ws.resume();
  }

  private async onMessage(data: unknown, isBinary: boolean): Promise<void> {
    if (this.closed) return;
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
        return this.call(frame.id, frame.method, frame.params, frame.opId);
      case 'serial.open':
        return this.openSerial(frame.sid, frame.vm);
      case 'serial.in': {
        const s = this.serials.get(frame.sid);
        if (!s || s === 'opening') return;
        // A guest that does not read its console must not make the server buffer what the client types:
        // stop reading from the client until the stream has taken it.
        const why = `in:${frame.sid}`;
        if (!s.write(Buffer.from(frame.data, 'base64')) && !this.inputHolds.has(why)) {
          this.holdInput(why);
          s.once('drain', () => this.releaseInput(why));
        }
        return;
      }
      case 'serial.close':
        this.closeSerial(frame.sid);
        return;
    }
  }

  /** Why a call may not start now, if it may not: each limit names itself so the caller knows what to do. */
  private refusal(method: string, reserve: number): VmdeskError | undefined {
    const l = this.limits;
    if (this.callsInFlight >= l.maxCallsInFlight) {
      return new VmdeskError(ErrorCode.busy, `too many calls in flight on this connection (limit ${l.maxCallsInFlight}): wait for answers before sending more`);
    }
    if (reserve && this.resultBytesInFlight + reserve > l.maxResultBytesInFlight) {
      return new VmdeskError(
        ErrorCode.busy,
        `${method} may answer with up to ${mib(reserve)} and this connection's running calls already may with ${mib(this.resultBytesInFlight)} (limit ${mib(l.maxResultBytesInFlight)} of answers in flight): wait for answers before sending more`,
      );
    }
    return undefined;
  }

  private async call(id: number, method: string, params: unknown, opId: string | undefined): Promise<void> {
    this.counters.callsReceived++;
    const reserve = resultReservation(method, params);
    const refused = this.refusal(method, reserve);
    if (refused) {
      this.counters.refusedCalls++;
      this.send({ t: 'error', id, error: toRpcError(refused) });
      return;
    }
    this.callsInFlight++;
    this.resultBytesInFlight += reserve;
    const c = this.counters;
    c.callsInFlight++;
    c.resultBytesInFlight += reserve;
    c.peakCallsInFlight = Math.max(c.peakCallsInFlight, this.callsInFlight);
    c.peakResultBytesInFlight = Math.max(c.peakResultBytesInFlight, this.resultBytesInFlight);
    try {
      const result = await dispatch(this.core, method, params, { opId, emit: this.broadcast });
      this.send({ t: 'result', id, result });
    } catch (e) {
      this.send({ t: 'error', id, error: toRpcError(e) });
    } finally {
      // The answer is now in the socket's buffer (counted against maxBufferedOutput) or, when the
      // connection is gone, garbage: either way this call no longer holds it.
      this.callsInFlight--;
      this.resultBytesInFlight -= reserve;
      c.callsInFlight--;
      c.resultBytesInFlight -= reserve;
    }
  }

  private async openSerial(sid: number, vm: string): Promise<void> {
    if (this.serials.has(sid)) {
      this.send({ t: 'serial.closed', sid, error: toRpcError(new VmdeskError(ErrorCode.busy, `serial stream ${sid} is already open`)) });
      return;
    }
    if (this.serials.size >= this.limits.maxSerialStreams) {
      this.send({ t: 'serial.closed', sid, error: toRpcError(new VmdeskError(ErrorCode.busy, `too many serial consoles open on this connection (limit ${this.limits.maxSerialStreams})`)) });
      return;
    }
    this.serials.set(sid, 'opening');
    try {
      // Open the live stream first and hold its bytes, so nothing printed while the log is read is lost.
      const stream = await this.core.openSerial(vm);
      const held: Buffer[] = [];
      let dedupe: ReplayDeduper | undefined;
      const forward = (bytes: Buffer) => {
        if (bytes.length) this.send({ t: 'serial.data', sid, data: bytes.toString('base64') });
      };
      stream.on('data', (chunk: Buffer) => {
        if (dedupe) forward(dedupe.push(chunk));
        else held.push(chunk);
      });
      stream.on('close', () => {
        this.releaseInput(`in:${sid}`);
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
      // Opened while the client is behind: start paused, like the streams it already has.
      if (this.congested) stream.pause();
      const log = await this.core.serialLog(vm);
      if (log.length) this.send({ t: 'serial.data', sid, data: log.toString('base64'), replay: true });
      // The engine replays its recent output to every new console client too: drop what the log already showed.
      dedupe = new ReplayDeduper(log);
      for (const chunk of held.splice(0)) forward(dedupe.push(chunk));
      setTimeout(() => forward(dedupe!.flush()), REPLAY_SETTLE_MS).unref();
    } catch (e) {
      this.serials.delete(sid);
      this.send({ t: 'serial.closed', sid, error: toRpcError(e) });
    }
  }

  private closeSerial(sid: number): void {
    const s = this.serials.get(sid);
    this.serials.delete(sid);
    this.releaseInput(`in:${sid}`);
    if (s && s !== 'opening') s.destroy();
  }

  /** Releases everything this connection holds: streams, the wait for 'drain', paused input. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.congested?.();
    this.congested = undefined;
    this.inputHolds.clear();
    for (const sid of [...this.serials.keys()]) this.closeSerial(sid);
  }
}

/** How long the start of a console stream may be held back while it is matched against the log. */
const REPLAY_SETTLE_MS = 1000;
/** How far past the log's size a stream is still matched against it, bounding what is held meanwhile. */
const MAX_REPLAY_SLACK = 1024 * 1024;

/**
 * Drops the part of a console stream that repeats the serial log already sent. The engine starts each new
 * console client with its recent output, then live bytes; its replay and QEMU's log file are not always
 * byte-identical in the middle, but both end with the newest output. So: once the stream contains the log's
 * last bytes, everything up to them was already shown. A stream whose start is nowhere in the log is live and
 * passes at once; anything still undecided after REPLAY_SETTLE_MS passes too.
 */
export class ReplayDeduper {
  private pending = Buffer.alloc(0);
  private done: boolean;
  private readonly tail: Buffer;

  constructor(private readonly log: Buffer) {
    this.done = log.length === 0;
    this.tail = log.subarray(Math.max(0, log.length - 32));
  }

  push(chunk: Buffer): Buffer {
    if (this.done) return chunk;
    this.pending = Buffer.concat([this.pending, chunk]);
    // A replay is at most what the log holds plus what arrived meanwhile; more than that cannot all be replay.
    if (this.pending.length > this.log.length + MAX_REPLAY_SLACK) return this.flush();
    const end = this.pending.indexOf(this.tail);
    if (end >= 0) {
      const out = this.pending.subarray(end + this.tail.length);
      this.finish();
      return out;
    }
    const probe = this.pending.subarray(0, Math.min(32, this.pending.length));
    if (this.log.indexOf(probe) < 0 && !this.endsWithPrefixOf(probe)) return this.flush();
    return Buffer.alloc(0); // looks like replay: wait for the log's end to come by
  }

  /** True when the log ends with the first bytes of b (the replay may start in the log's last few bytes). */
  private endsWithPrefixOf(b: Buffer): boolean {
    for (let k = Math.min(b.length, this.log.length); k > 0; k--) {
      if (this.log.subarray(this.log.length - k).equals(b.subarray(0, k))) return true;
    }
    return false;
  }

  /** Gives up matching and returns whatever is held. */
  flush(): Buffer {
    const out = this.pending;
    this.finish();
    return out;
  }

  private finish(): void {
    this.done = true;
    this.pending = Buffer.alloc(0);
  }
}
