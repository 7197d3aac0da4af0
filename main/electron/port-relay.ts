// A desktop window's channel to VMDesk without TCP: one MessagePort (from the window's preload) relayed by the
// main process to a unix socket, as main/server/relay.ts relays a browser's WebSocket. Two kinds:
//
//   rpc  the contract's JSON frames, one per message, to and from its own connection to the daemon's socket;
//   vnc  raw RFB bytes to and from the VM's VNC unix socket, for noVNC.
//
// Messages on the port, main → window: {t:'open'} once the socket is connected; a frame (rpc: string) or bytes
// (vnc: Uint8Array); {t:'close', reason} last. Window → main: a frame or bytes; {t:'ack', n} when it has
// consumed n units (string length or byte length) of what it was sent; {t:'close'}.
//
// Every message from the window is checked (rpc: a string frame the contract knows, within the frame limit, no
// raw newline; vnc: bytes within the chunk limit) and a bad one ends the channel. A port has no backpressure of
// its own, so the window acknowledges what it consumed and the relay stops reading the socket while too much is
// unacknowledged (the daemon then holds back, bounded by its own per-connection limits); input the socket does
// not take fast enough is bounded too, past which the channel ends.
// Pure Node: the port is anything with MessagePortMain's surface; tests use node:worker_threads' MessageChannel.
import type { Socket } from 'node:net';
import { ClientFrame } from '../api/rpc.js';

export interface PortLike {
  postMessage(message: unknown): void;
  on(event: 'message', fn: (e: { data: unknown }) => void): unknown;
  on(event: 'close', fn: () => void): unknown;
  start(): void;
  close(): void;
}

export interface PortRelayOptions {
  /** Largest message accepted from the window (rpc: UTF-8 bytes of a frame; vnc: bytes). */
  maxMessageBytes: number;
  /** Unacknowledged output above which the socket is paused until the window catches up. */
  highWater: number;
  /** Input waiting for the socket past which the window is taken for a flood and the channel ends. */
  maxPendingInput: number;
  onClose?: (reason: string) => void;
  /** The socket was paused because the window is behind (tests count these). */
  onPause?: () => void;
}

export interface PortRelay {
  /** What the window has not acknowledged yet. */
  unacked(): number;
  paused(): boolean;
  close(reason: string): void;
}

export const DEFAULT_PORT_RELAY: Readonly<Omit<PortRelayOptions, 'onClose' | 'onPause'>> = Object.freeze({
  maxMessageBytes: 2 * 1024 * 1024,
  highWater: 4 * 1024 * 1024,
  maxPendingInput: 8 * 1024 * 1024,
});

type Control = { t: 'ack'; n: number } | { t: 'close' };

function control(data: unknown): Control | undefined {
  if (typeof data !== 'object' || data === null || data instanceof Uint8Array || data instanceof ArrayBuffer) return undefined;
  const d = data as { t?: unknown; n?: unknown };
  if (d.t === 'close') return { t: 'close' };
  if (d.t === 'ack' && typeof d.n === 'number' && Number.isSafeInteger(d.n) && d.n >= 0) return { t: 'ack', n: d.n };
  return undefined;
}

function bytesOf(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return undefined;
}

/** Why an rpc message is refused, or undefined for a frame to pass on. */
export function checkRpcMessage(data: unknown, maxBytes: number): string | undefined {
  if (typeof data !== 'string') return 'frames must be JSON text';
  if (data.length > maxBytes || Buffer.byteLength(data) > maxBytes) return `frame over ${maxBytes} bytes`;
  // One frame per line on the daemon's socket: a newline inside would split it (JSON text never has one).
  if (data.includes('\n')) return 'a frame must not contain a raw newline';
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return 'a frame must be JSON';
  }
  return ClientFrame.safeParse(parsed).success ? undefined : 'not a frame of the contract';
}

function relayPort(kind: 'rpc' | 'vnc', port: PortLike, sock: Socket, opts: PortRelayOptions): PortRelay {
  let closed = false;
  let unacked = 0;
  let paused = false;
  const close = (reason: string) => {
    if (closed) return;
    closed = true;
    try {
      port.postMessage({ t: 'close', reason: reason.slice(0, 200) });
    } catch {
      /* the window is gone */
    }
    port.close();
    sock.destroy();
    opts.onClose?.(reason);
  };
  const sent = (units: number) => {
    unacked += units;
    if (!paused && unacked > opts.highWater) {
      paused = true;
      sock.pause();
      opts.onPause?.();
    }
  };

  if (kind === 'rpc') {
    let pending: Buffer[] = [];
    sock.on('data', (chunk: Buffer) => {
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        if (nl < 0) break;
        const part = chunk.subarray(start, nl);
        const line = (pending.length ? Buffer.concat([...pending, part]) : part).toString('utf8');
        pending = [];
        start = nl + 1;
        if (closed) return;
        port.postMessage(line);
        sent(line.length);
      }
      if (start < chunk.length) pending.push(chunk.subarray(start));
    });
  } else {
    sock.on('data', (chunk: Buffer) => {
      if (closed) return;
      // A copy the port may take (a Buffer can be a view of Node's shared pool).
      port.postMessage(new Uint8Array(chunk));
      sent(chunk.length);
    });
  }
  if (sock.connecting) sock.once('connect', () => !closed && port.postMessage({ t: 'open' }));
  else port.postMessage({ t: 'open' });
  sock.on('error', (e) => close(`${kind === 'vnc' ? 'VNC socket' : 'daemon'}: ${e.message}`));
  sock.on('close', () => close(kind === 'vnc' ? 'display closed' : 'the daemon closed the connection'));

  port.on('message', (e) => {
    if (closed) return;
    const data = e.data;
    const c = control(data);
    if (c?.t === 'close') return close('closed by the window');
    if (c?.t === 'ack') {
      unacked = Math.max(0, unacked - c.n);
      if (paused && unacked <= opts.highWater / 2) {
        paused = false;
        sock.resume();
      }
      return;
    }
    let out: Uint8Array | string;
    if (kind === 'rpc') {
      const refused = checkRpcMessage(data, opts.maxMessageBytes);
      if (refused) return close(refused);
      out = `${data as string}\n`;
    } else {
      const bytes = bytesOf(data);
      if (!bytes) return close('RFB is bytes only');
      if (bytes.byteLength > opts.maxMessageBytes) return close(`message over ${opts.maxMessageBytes} bytes`);
      out = bytes;
    }
    if (sock.connecting || sock.writable) sock.write(out);
    if (sock.writableLength > opts.maxPendingInput) close(`more than ${opts.maxPendingInput} bytes of input waiting`);
  });
  port.on('close', () => close('the window went away'));
  port.start();
  return { unacked: () => unacked, paused: () => paused, close };
}

/** Relays the contract's frames between a window's port and its own connection to the daemon. */
export function relayRpcPort(port: PortLike, daemon: Socket, opts: PortRelayOptions): PortRelay {
  return relayPort('rpc', port, daemon, opts);
}

/** Relays RFB bytes between a window's port and a VM's VNC unix socket. */
export function relayVncPort(port: PortLike, vnc: Socket, opts: PortRelayOptions): PortRelay {
  return relayPort('vnc', port, vnc, opts);
}
