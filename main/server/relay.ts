// One browser (or Electron window) WebSocket relayed to its own connection to the daemon: the same frames
// both ways, the daemon validating and bounding what the client asks. The relay adds no state; it only
// passes backpressure along, so a client that does not read makes the daemon, not this process, hold back.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { whenDrained } from '../daemon/limits.js';
import { lineSplitter } from '../platform/lines.js';

/** The daemon's answers are bounded far below this; a longer line means it is not the daemon talking. */
const DAEMON_FRAME_MAX = 64 * 1024 * 1024;

export interface RelayOptions {
  /** Unread output on the WebSocket above which reading from the daemon pauses. */
  highWater: number;
  /** Unread output past which the browser is taken for one that will never read: both ends are dropped. */
  maxBuffered: number;
  onClose?: () => void;
  /** A browser client was dropped for not reading (counted by stats()). */
  onSlowClient?: () => void;
  onPause?: () => void;
  /** After each frame sent to the browser: its unread output then (the server keeps the peak for stats()). */
  onSent?: (bufferedAmount: number) => void;
}

export function relay(ws: WebSocket, wsSocket: Duplex, daemon: Socket, opts: RelayOptions): { pausedInput(): boolean; buffered(): number } {
  let closed = false;
  let cancelDrain: (() => void) | undefined;
  let inputHeld = false;
  const close = () => {
    if (closed) return;
    closed = true;
    cancelDrain?.();
    daemon.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.terminate();
    opts.onClose?.();
  };
  const split = lineSplitter(
    DAEMON_FRAME_MAX,
    (line) => {
      if (ws.readyState !== ws.OPEN) return;
      if (ws.bufferedAmount > opts.maxBuffered) {
        opts.onSlowClient?.();
        close();
        return false;
      }
      ws.send(line.toString('utf8'));
      opts.onSent?.(ws.bufferedAmount);
    },
    () => close(),
  );
  daemon.on('data', (chunk: Buffer) => {
    split(chunk);
    if (closed) return;
    if (ws.bufferedAmount > opts.highWater && !cancelDrain) {
      daemon.pause();
      opts.onPause?.();
      cancelDrain = whenDrained(wsSocket, () => {
        cancelDrain = undefined;
        if (!closed) daemon.resume();
      });
    }
  });
  daemon.on('error', () => close());
  daemon.on('close', () => close());
  ws.on('message', (data, isBinary) => {
    if (closed) return;
    if (isBinary) {
      ws.close(1003, 'frames must be JSON text');
      close();
      return;
    }
    const text = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    // One frame per line on the daemon's socket: a newline inside would split it (JSON text never has one).
    if (text.includes(0x0a)) {
      ws.close(1003, 'a frame must not contain a raw newline');
      close();
      return;
    }
    if (!daemon.write(Buffer.concat([text, Buffer.from('\n')])) && !inputHeld) {
      inputHeld = true;
      ws.pause();
      daemon.once('drain', () => {
        inputHeld = false;
        if (!closed) ws.resume();
      });
    }
  });
  ws.on('close', close);
  ws.on('error', close);
  return { pausedInput: () => inputHeld, buffered: () => (closed ? 0 : ws.bufferedAmount) };
}
