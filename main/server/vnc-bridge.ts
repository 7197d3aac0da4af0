// Bridges one noVNC WebSocket to the guest's VNC unix socket, raw RFB bytes both ways.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { whenDrained } from '../daemon/limits.js';

export interface VncBridgeOptions {
  /** Unread output on the WebSocket above which the VNC socket is paused until the client catches up. */
  highWater: number;
  /** Called once when either side has closed and both are released. */
  onClose?: () => void;
  /** Called each time the VNC socket is paused because the client is behind (tests count these). */
  onPause?: () => void;
}

/**
 * Pipes until either side closes, with backpressure both ways: QEMU's framebuffer updates arrive as fast as
 * the guest's screen changes, and a client that does not read them must not make the server buffer them,
 * so the unix socket is paused while the WebSocket's buffer is over the high-water mark (QEMU then sends
 * fewer, coalesced updates). The other way, a VNC server that does not read pauses reading the client.
 */
export function bridgeVnc(ws: WebSocket, wsSocket: Duplex, socketPath: string, opts: VncBridgeOptions): void {
  const sock = net.connect(socketPath);
  let closed = false;
  let cancelDrainWait: (() => void) | undefined;
  const closeBoth = (code: number, reason: string) => {
    if (closed) return;
    closed = true;
    cancelDrainWait?.();
    sock.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason.slice(0, 120));
    opts.onClose?.();
  };
  sock.on('data', (chunk) => {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(chunk, { binary: true });
    if (ws.bufferedAmount > opts.highWater && !cancelDrainWait) {
      sock.pause();
      opts.onPause?.();
      cancelDrainWait = whenDrained(wsSocket, () => {
        cancelDrainWait = undefined;
        if (!closed) sock.resume();
      });
    }
  });
  sock.on('error', (e) => closeBoth(1011, `VNC socket: ${e.message}`));
  sock.on('close', () => closeBoth(1000, 'display closed'));
  let inputHeld = false;
  ws.on('message', (data, isBinary) => {
    if (!isBinary || closed) return; // RFB is binary only
    const ok = sock.write(Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer));
    if (!ok && !inputHeld) {
      inputHeld = true;
      ws.pause();
      sock.once('drain', () => {
        inputHeld = false;
        if (!closed) ws.resume();
      });
    }
  });
  ws.on('close', () => closeBoth(1000, 'client left'));
  ws.on('error', () => closeBoth(1011, 'websocket error'));
}
