// One client connection to the daemon: RPC calls, pushed events, and the serial console streams it opened.
// Every resource a client can make the daemon hold is bounded here (see limits.ts).
import type { Core } from '../core/core.js';
import type { SerialSession } from '../core/serial.js';
import { ClientFrame, type ServerFrame } from '../api/rpc.js';
import type { VmEvent } from '../api/events.js';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { dispatch, toRpcError, type DaemonControl } from './dispatch.js';
import type { FrameChannel } from './channel.js';
import { trace } from '../platform/trace.js';
import { mib, resultReservation, type ConnectionLimits, type ServerStats } from './limits.js';
import { Terminals } from './terminals.js';

export class Session {
  private serials = new Map<number, SerialSession | 'opening'>();
  /** Terminal streams (term.* frames): SSH into the guest, or its serial console. */
  private readonly terminals: Terminals;
  private closed = false;
  private callsInFlight = 0;
  private resultBytesInFlight = 0;
  /** Set while the client's unread output is over the high-water mark: cancels the wait for it to drain. */
  private congested: (() => void) | undefined;
  /** Why frames from the client are not being read: 'output' (it is not reading ours) or 'in:<sid>' (a guest not reading its console). */
  private inputHolds = new Set<string>();

  constructor(
    private readonly channel: FrameChannel,
    private readonly core: Core,
    private readonly broadcast: (ev: VmEvent) => void,
    private readonly limits: ConnectionLimits,
    /** The daemon's counters, shared by every connection. */
    private readonly counters: ServerStats,
    hello: Extract<ServerFrame, { t: 'hello' }>,
    private readonly control?: DaemonControl,
  ) {
    this.terminals = new Terminals(core, {
      send: (f) => this.send(f),
      buffered: () => (this.closed ? 0 : channel.buffered),
      whenDrained: (fn) => channel.whenDrained(fn),
      highWater: limits.outputHighWater,
      holdInput: (why) => this.holdInput(why),
      releaseInput: (why) => this.releaseInput(why),
    });
    channel.onFrame((text) => void this.onMessage(text));
    channel.onClose(() => this.close());
    this.send(hello);
  }

  /** Called by the daemon for every event (core events and progress of any session's calls). */
  pushEvent(event: VmEvent): void {
    this.send({ t: 'event', event });
  }

  /** What this connection holds right now, for stats(). */
  usage(): { bufferedBytes: number; serialStreams: number; pausedSerialStreams: number; inputPaused: boolean } {
    return { bufferedBytes: this.closed ? 0 : this.channel.buffered, serialStreams: this.serials.size, pausedSerialStreams: this.congested ? this.serials.size : 0, inputPaused: this.inputHolds.size > 0 };
  }

  private send(frame: ServerFrame): void {
    if (this.closed) return;
    // Everything sent stays in memory until the client reads it. One that has left this much unread is not
    // going to: drop it rather than keep buffering.
    if (this.channel.buffered > this.limits.maxBufferedOutput) {
      this.counters.slowClientsClosed++;
      this.channel.terminate();
      this.close();
      return;
    }
    this.channel.send(JSON.stringify(frame));
    const buffered = this.channel.buffered;
    if (buffered > this.counters.peakBufferedBytes) this.counters.peakBufferedBytes = buffered;
    if (buffered > this.limits.outputHighWater && !this.congested) this.congest();
  }

  /**
   * The client is not keeping up: no more frames are read from it (its new calls wait in its own socket
   * instead of becoming answers here) until it has read what is buffered. Console output keeps flowing up to
   * the hard cap: a guest's console is shared with other clients and must not stall for one slow reader.
   */
  private congest(): void {
    this.counters.congestions++;
    this.holdInput('output');
    this.congested = this.channel.whenDrained(() => {
      this.congested = undefined;
      if (this.closed) return;
      this.releaseInput('output');
    });
  }

  private holdInput(why: string): void {
    if (this.inputHolds.size === 0) this.channel.pauseInput();
    this.inputHolds.add(why);
  }

  private releaseInput(why: string): void {
    if (this.inputHolds.delete(why) && this.inputHolds.size === 0 && !this.closed) this.channel.resumeInput();
  }

  private async onMessage(text: string): Promise<void> {
    if (this.closed) return;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      this.channel.end(JSON.stringify({ t: 'error', id: -1, error: { code: ErrorCode.invalid, message: 'frames must be JSON text', details: [] } } satisfies ServerFrame));
      this.close();
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
        // A guest that does not read its console must not make the daemon buffer what the client types:
        // stop reading from the client until the guest has taken it.
        const why = `in:${frame.sid}`;
        if (!s.write(Buffer.from(frame.data, 'base64')) && !this.inputHolds.has(why)) {
          this.holdInput(why);
          s.onceDrain(() => this.releaseInput(why));
        }
        return;
      }
      case 'serial.close':
        this.closeSerial(frame.sid);
        return;
      case 'term.open':
      case 'term.in':
      case 'term.resize':
      case 'term.close':
        this.terminals.handle(frame);
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
    trace(`call ${method}`);
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
      const result = await dispatch(this.core, method, params, { opId, emit: this.broadcast, daemon: this.control });
      this.send({ t: 'result', id, result });
    } catch (e) {
      this.send({ t: 'error', id, error: toRpcError(e) });
    } finally {
      this.callsInFlight--;
      this.resultBytesInFlight -= reserve;
      c.callsInFlight--;
      c.resultBytesInFlight -= reserve;
    }
  }

  private openSerial(sid: number, vm: string): void {
    if (this.serials.has(sid)) {
      this.send({ t: 'serial.closed', sid, error: toRpcError(new VmdeskError(ErrorCode.busy, `serial stream ${sid} is already open`)) });
      return;
    }
    if (this.serials.size >= this.limits.maxSerialStreams) {
      this.send({ t: 'serial.closed', sid, error: toRpcError(new VmdeskError(ErrorCode.busy, `too many serial consoles open on this connection (limit ${this.limits.maxSerialStreams})`)) });
      return;
    }
    let stream: SerialSession;
    try {
      stream = this.core.openSerial(vm);
    } catch (e) {
      this.send({ t: 'serial.closed', sid, error: toRpcError(e) });
      return;
    }
    this.serials.set(sid, stream);
    // Recent output first (from the daemon's replay of this guest), then live bytes in order.
    if (stream.history.length) this.send({ t: 'serial.data', sid, data: stream.history.toString('base64'), replay: true });
    stream.onData((chunk) => this.send({ t: 'serial.data', sid, data: chunk.toString('base64') }));
    stream.onClose(() => {
      this.releaseInput(`in:${sid}`);
      if (this.serials.get(sid) === stream) {
        this.serials.delete(sid);
        this.send({ t: 'serial.closed', sid });
      }
    });
  }

  private closeSerial(sid: number): void {
    const s = this.serials.get(sid);
    this.serials.delete(sid);
    this.releaseInput(`in:${sid}`);
    if (s && s !== 'opening') s.close();
  }

  /** Releases everything this connection holds: streams, the wait for drain, paused input. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.congested?.();
    this.congested = undefined;
    this.inputHolds.clear();
    for (const sid of [...this.serials.keys()]) this.closeSerial(sid);
    this.terminals.closeAll();
  }
}

