// What the Electron preload exposes as window.vmdesk, and the bridge the rest of the renderer uses; absent in a plain browser.

/** The server this window talks to, as the main process hands it over. */
export interface DesktopConnection {
  endpoint: string;
  token: string;
}

/** window.vmdesk as main/electron/preload/index.ts builds it. */
export interface PreloadApi {
  /** Asks the main process (validated IPC: only our own windows are answered). */
  connection(): Promise<DesktopConnection>;
  openFile(filters?: { name: string; extensions: string[] }[]): Promise<string | null>;
  revealInFolder(path: string): Promise<void>;
  openConsole(vmId: string): Promise<void>;
  /** Application-menu commands ("new-vm", "settings") forwarded from the main process. */
  onMenuCommand?(fn: (command: string) => void): void;
}

/** The preload's functions plus the connection, known synchronously once this module has loaded. */
export interface DesktopBridge extends Omit<PreloadApi, 'connection'> {
  endpoint: string;
  token: string;
}

declare global {
  interface Window {
    vmdesk?: PreloadApi;
  }
}

const preload: PreloadApi | undefined = typeof window !== 'undefined' ? window.vmdesk : undefined;

// The endpoint and token no longer ride on the renderer's command line (readable in /proc by any local user):
// the preload asks the main process for them. Asked once, here, with a top-level await, so every module that
// connects (they all import this one) runs after the answer and desktop() can stay synchronous.
const connection: DesktopConnection | undefined = preload ? await preload.connection().catch(() => undefined) : undefined;

let bridge: DesktopBridge | undefined;

export function desktop(): DesktopBridge | undefined {
  if (!preload) return undefined;
  if (!bridge) {
    bridge = Object.freeze({
      openFile: preload.openFile,
      revealInFolder: preload.revealInFolder,
      openConsole: preload.openConsole,
      onMenuCommand: preload.onMenuCommand,
      // Without an answer, fall back to this page's own server: it is the one the window was opened on,
      // and the HttpOnly cookie it set on first load authenticates the upgrade (an empty token is ignored).
      endpoint: connection?.endpoint ?? `ws://${location.host}/ws`,
      token: connection?.token ?? '',
    });
  }
  return bridge;
}
