// One client connection as a stream of JSON text frames: newline-delimited on the daemon's unix socket.
// Frames are bounded on the way in; what the peer has not read yet is visible (buffered) so a session can
// stop producing for a client that does not read.
import type { Socket } from 'node:net';
import { lineSplitter } from '../platform/lines.js';

export interface FrameChannel {
  send(text: string): void;
  /** Bytes written but not yet taken by the peer. */
  readonly buffered: number;
  /** Calls fn once the peer has read what is buffered (or the channel closed); returns a cancel function. */
  whenDrained(fn: () => void): () => void;
  pauseInput(): void;
  resumeInput(): void;
  /** Drops the connection at once (nothing more is sent). */
  terminate(): void;
  onFrame(fn: (text: string) => void): void;
  onClose(fn: () => void): void;
  /** Closes politely after a final frame (a protocol error), or at once when none. */
  end(finalText?: string): void;
}

/**
 * JSON lines over a socket. A line longer than maxFrameBytes ends the connection (a client that does not
 * frame its messages is not one we can answer).
 */
export function lineChannel(sock: Socket, maxFrameBytes: number): FrameChannel {
  let frameFn: (text: string) => void = () => {};
  const closeFns: (() => void)[] = [];
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    for (const fn of closeFns) fn();
  };
  sock.on(
    'data',
    lineSplitter(
      maxFrameBytes,
      (line) => {
        const text = line.toString('utf8');
        if (text.trim()) frameFn(text);
        return !closed;
      },
      () => sock.destroy(),
    ),
  );
  sock.on('error', () => sock.destroy());
  sock.on('close', close);
  return {
    send(text) {
      if (!closed && sock.writable) sock.write(text + '\n');
    },
    get buffered() {
      return closed ? 0 : sock.writableLength;
    },
    whenDrained(fn) {
      const fire = () => {
        cancel();
        fn();
      };
      const cancel = () => {
        sock.off('drain', fire);
        sock.off('close', fire);
      };
      sock.once('drain', fire);
      sock.once('close', fire);
      return cancel;
    },
    pauseInput: () => sock.pause(),
    resumeInput: () => sock.resume(),
    terminate: () => sock.destroy(),
    onFrame(fn) {
      frameFn = fn;
    },
    onClose(fn) {
      if (closed) queueMicrotask(fn);
      else closeFns.push(fn);
    },
    end(finalText) {
      if (finalText && !closed) sock.end(finalText + '\n');
      else sock.destroy();
    },
  };
}
