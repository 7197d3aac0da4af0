// What one client may cost the server: calls, answers, unread output, streams and sockets, each with a bound.
//
// The client holds the token, but the token says nothing about how well it behaves: a script that sends
// 400 `vm.serialLog` calls and never reads the answers once pushed the server to 3.8 GB. Every resource a
// client can make the server hold is therefore counted per connection and refused, paused or cut off at a
// limit, and everything a connection holds is released when it closes.
import type { Duplex } from 'node:stream';

const MiB = 1024 * 1024;

export interface ConnectionLimits {
  /** RPC calls one /ws connection may have running at once; more are refused with EBUSY. */
  maxCallsInFlight: number;
  /**
   * The sum of the largest answers the running calls may produce (see resultReservation). A call that would
   * take the sum past this is refused with EBUSY before any work is done, so the memory spent building
   * answers for one connection is bounded however many calls it sends.
   */
  maxResultBytesInFlight: number;
  /**
   * Output the client has not read yet (ws.bufferedAmount) above which the connection counts as congested:
   * its serial streams pause and no further frames are read from it (its new calls wait in its own socket)
   * until the socket drains. A client that reads normally never gets near it.
   */
  outputHighWater: number;
  /** Unread output past which the client is taken for one that will never read: the socket is dropped. */
  maxBufferedOutput: number;
  /** Serial console streams one /ws connection may hold open. */
  maxSerialStreams: number;
  /** Largest WebSocket message accepted from a client (ws's maxPayload; fragments count together). */
  maxFrameBytes: number;
  /** /ws connections the server holds at once; further upgrades are refused with 503. */
  maxConnections: number;
  /** VNC bridges (one per /vnc/:id socket) the server holds at once; further upgrades are refused with 503. */
  maxVncBridges: number;
}

export const DEFAULT_LIMITS: Readonly<ConnectionLimits> = Object.freeze({
  maxCallsInFlight: 32,
  maxResultBytesInFlight: 16 * MiB,
  outputHighWater: 4 * MiB,
  maxBufferedOutput: 32 * MiB,
  // Enough for every console window a person can look at, bounded against a script that opens thousands.
  maxSerialStreams: 64,
  // Requests are small; the largest legitimate frame is serial.in, whose data the contract caps at 1 MiB of base64.
  maxFrameBytes: 2 * MiB,
  maxConnections: 32,
  maxVncBridges: 16,
});

export function resolveLimits(overrides: Partial<ConnectionLimits> | undefined): ConnectionLimits {
  return { ...DEFAULT_LIMITS, ...overrides };
}

/** The contract's largest `vm.serialLog` (main/api/rpc.ts); a call without maxBytes is charged for it. */
const SERIAL_LOG_MAX_BYTES = 4 * MiB;
/**
 * PNG answers (screenshots, thumbnails) have no size in their request. A 1080p screen is a few hundred KiB;
 * this charge only decides how many may run at once, while the unread-output cap bounds what is really sent.
 */
const PNG_RESERVATION = 2 * MiB;
/** Frame overhead on top of a base64 payload: the JSON envelope. */
const ENVELOPE = 256;

const base64Length = (bytes: number) => Math.ceil(bytes / 3) * 4;

/**
 * How many bytes of answer a call may produce, charged against maxResultBytesInFlight while it runs. Only
 * methods that return bulk data are charged; every other answer is a small JSON object.
 */
export function resultReservation(method: string, params: unknown): number {
  switch (method) {
    case 'vm.serialLog': {
      const asked = (params as { maxBytes?: unknown } | undefined)?.maxBytes;
      const n = typeof asked === 'number' && Number.isFinite(asked) && asked > 0 ? Math.min(asked, SERIAL_LOG_MAX_BYTES) : SERIAL_LOG_MAX_BYTES;
      return base64Length(n) + ENVELOPE;
    }
    case 'vm.screenshot':
    case 'snapshot.thumbnail':
      return base64Length(PNG_RESERVATION) + ENVELOPE;
    default:
      return 0;
  }
}

export function mib(n: number): string {
  const v = n / MiB;
  return `${Number.isInteger(v) ? v : v.toFixed(1)} MiB`;
}

/** Counters the server keeps across all its connections; tests and diagnostics read them through stats(). */
export interface ServerStats {
  /** Open /ws connections and VNC bridges. */
  connections: number;
  vncBridges: number;
  /** RPC calls read from clients so far (answered, refused or running). */
  callsReceived: number;
  /** RPC calls running now, and the most ever running at once on one connection. */
  callsInFlight: number;
  peakCallsInFlight: number;
  /** Answer bytes reserved by running calls now, and the most ever reserved at once on one connection. */
  resultBytesInFlight: number;
  peakResultBytesInFlight: number;
  /** Unread output now (all connections) and the most ever seen on one connection right after a send. */
  bufferedBytes: number;
  peakBufferedBytes: number;
  serialStreams: number;
  pausedSerialStreams: number;
  /** Connections whose frames are not being read now: they are behind on output, or a guest is behind on their input. */
  pausedInputs: number;
  /** Calls refused with EBUSY by a limit above. */
  refusedCalls: number;
  /** Connections dropped for leaving more than maxBufferedOutput unread. */
  slowClientsClosed: number;
  /** Upgrades refused because maxConnections or maxVncBridges was reached. */
  refusedUpgrades: number;
  /** Times a connection's output went over the high-water mark and its streams and input were paused. */
  congestions: number;
  /** Times a VNC bridge paused QEMU's socket because its client was behind. */
  vncPauses: number;
}

export function emptyStats(): ServerStats {
  return {
    connections: 0,
    vncBridges: 0,
    callsReceived: 0,
    callsInFlight: 0,
    peakCallsInFlight: 0,
    resultBytesInFlight: 0,
    peakResultBytesInFlight: 0,
    bufferedBytes: 0,
    peakBufferedBytes: 0,
    serialStreams: 0,
    pausedSerialStreams: 0,
    pausedInputs: 0,
    refusedCalls: 0,
    slowClientsClosed: 0,
    refusedUpgrades: 0,
    congestions: 0,
    vncPauses: 0,
  };
}

/**
 * Calls fn once the WebSocket's unread output has been written out. ws has no 'drain' of its own, but its
 * bytes sit in the TCP socket's write buffer, and that socket emits 'drain' when the buffer empties; a
 * buffer over the high-water mark is far above the socket's own, so that 'drain' is sure to come (or 'close').
 * Returns a function that cancels the wait.
 */
export function whenDrained(socket: Duplex, fn: () => void): () => void {
  const fire = () => {
    cancel();
    fn();
  };
  const cancel = () => {
    socket.off('drain', fire);
    socket.off('close', fire);
  };
  socket.once('drain', fire);
  socket.once('close', fire);
  return cancel;
}
