// What the Electron preload exposes as window.vmdesk, and the bridge the rest of the renderer uses; absent in a plain browser.
import { ChannelSocket, type ChannelKind, type OpenChannel } from './channel-socket';

/** window.vmdesk as main/electron/preload/index.ts builds it. */
export interface PreloadApi {
  /** A channel to VMDesk through the main process (no TCP, no token): the RPC frames, or a VM's display. */
  openChannel: OpenChannel;
  openFile(filters?: { name: string; extensions: string[] }[]): Promise<string | null>;
  revealInFolder(path: string): Promise<void>;
  openConsole(vmId: string): Promise<void>;
  /** Application-menu commands ("new-vm", "settings") forwarded from the main process. */
  onMenuCommand?(fn: (command: string) => void): void;
  /** A file opened with VMDesk that the page handles: { action: 'create', path } for an ISO. */
  onOpenPath?(fn: (cmd: { action: string; path: string }) => void): void;
}

/** The preload's functions, and the transport: a WebSocket-like channel instead of a URL. */
export interface DesktopBridge extends Omit<PreloadApi, 'openChannel'> {
  /** A WebSocket-shaped channel (RpcClient's socket, noVNC's raw channel). */
  socket(kind: ChannelKind, vm?: string): ChannelSocket;
}

declare global {
  interface Window {
    vmdesk?: PreloadApi;
  }
}

const preload: PreloadApi | undefined = typeof window !== 'undefined' ? window.vmdesk : undefined;

let bridge: DesktopBridge | undefined;

export function desktop(): DesktopBridge | undefined {
  if (!preload) return undefined;
  if (!bridge) {
    const open = preload.openChannel;
    bridge = Object.freeze({
      openFile: preload.openFile,
      revealInFolder: preload.revealInFolder,
      openConsole: preload.openConsole,
      onMenuCommand: preload.onMenuCommand,
      onOpenPath: preload.onOpenPath,
      socket: (kind: ChannelKind, vm?: string) => new ChannelSocket(open, kind, vm),
    });
  }
  return bridge;
}
