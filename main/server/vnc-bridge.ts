// Bridges one noVNC WebSocket to the guest's VNC unix socket, raw RFB bytes both ways.
import net from 'node:net';
import type { WebSocket } from 'ws';

/** Pipes until either side closes; backpressure by pausing the unix socket while the WebSocket buffer is full. */
export function bridgeVnc(ws: WebSocket, socketPath: string): void {
  const sock = net.connect(socketPath);
  const HIGH_WATER = 4 * 1024 * 1024;
  let closed = false;
  const closeBoth = (code: number, reason: string) => {
    if (closed) return;
    closed = true;
    sock.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason.slice(0, 120));
  };
  sock.on('data', (chunk) => {
    ws.send(chunk, { binary: true });
    if (ws.bufferedAmount > HIGH_WATER) {
      sock.pause();
      const drain = setInterval(() => {
        if (closed || ws.bufferedAmount < HIGH_WATER / 4) {
          clearInterval(drain);
          sock.resume();
        }
      }, 10);
    }
  });
  sock.on('error', (e) => closeBoth(1011, `VNC socket: ${e.message}`));
  sock.on('close', () => closeBoth(1000, 'display closed'));
  ws.on('message', (data, isBinary) => {
    if (!isBinary) return; // RFB is binary only
    sock.write(Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer));
  });
  ws.on('close', () => closeBoth(1000, 'client left'));
  ws.on('error', () => closeBoth(1011, 'websocket error'));
}
