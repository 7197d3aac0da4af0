// In the Electron shell the page has no WebSocket to VMDesk (the shell opens no TCP port): the preload's
// openChannel gives it a MessagePort relayed by the main process to the daemon ('rpc') or to a VM's display
// ('vnc'). ChannelSocket wraps that channel in the WebSocket surface the two users already speak: RpcClient's
// SocketFactory and noVNC's "raw channel" (send, close, binaryType, onopen/onmessage/onclose/onerror, protocol,
// readyState). So the page's code is the same in both modes; desktop() picks the transport.

export type ChannelKind = 'rpc' | 'vnc';

/** What the preload's openChannel takes and returns (main/electron/preload/index.ts). */
export interface ChannelHandlers {
  onOpen(): void;
  onMessage(data: string | Uint8Array): void;
  onClose(reason: string): void;
}
export interface ChannelHandle {
  send(data: string | Uint8Array): void;
  close(): void;
}
export type OpenChannel = (kind: ChannelKind, vm: string | undefined, handlers: ChannelHandlers) => ChannelHandle;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

export class ChannelSocket {
  static readonly CONNECTING = CONNECTING;
  static readonly OPEN = OPEN;
  static readonly CLOSING = CLOSING;
  static readonly CLOSED = CLOSED;
  // Own properties, as noVNC checks for them by name.
  readyState: number = CONNECTING;
  binaryType: 'arraybuffer' | 'blob' = 'arraybuffer';
  protocol = '';
  onopen: ((e: Event) => void) | null = null;
  onmessage: ((e: { data: string | ArrayBuffer }) => void) | null = null;
  onclose: ((e: { code: number; reason: string; wasClean: boolean }) => void) | null = null;
  onerror: ((e: Event) => void) | null = null;
  private readonly handle: ChannelHandle;

  constructor(open: OpenChannel, kind: ChannelKind, vm?: string) {
    this.handle = open(kind, vm, {
      onOpen: () => {
        if (this.readyState !== CONNECTING) return;
        this.readyState = OPEN;
        this.onopen?.(new Event('open'));
      },
      onMessage: (data) => {
        if (this.readyState !== OPEN) return;
        // noVNC reads ArrayBuffers (binaryType "arraybuffer"); RpcClient reads strings.
        const d = typeof data === 'string' ? data : (data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer);
        this.onmessage?.({ data: d });
      },
      onClose: (reason) => this.ended(reason),
    });
  }

  send(data: string | ArrayBuffer | ArrayBufferView): void {
    if (this.readyState !== OPEN) return;
    if (typeof data === 'string') this.handle.send(data);
    else if (data instanceof ArrayBuffer) this.handle.send(new Uint8Array(data));
    else this.handle.send(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  close(): void {
    if (this.readyState === CLOSED || this.readyState === CLOSING) return;
    this.readyState = CLOSING;
    this.handle.close();
    this.ended('closed');
  }

  private ended(reason: string): void {
    if (this.readyState === CLOSED) return;
    const wasOpen = this.readyState !== CONNECTING;
    this.readyState = CLOSED;
    if (!wasOpen) this.onerror?.(new Event('error'));
    this.onclose?.({ code: wasOpen ? 1000 : 1006, reason, wasClean: wasOpen });
  }
}
