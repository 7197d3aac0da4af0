// What the Electron preload exposes as window.vmdesk; absent in a plain browser.
export interface DesktopBridge {
  endpoint: string;
  token: string;
  openFile(filters?: { name: string; extensions: string[] }[]): Promise<string | null>;
  revealInFolder(path: string): Promise<void>;
  openConsole(vmId: string): Promise<void>;
  /** Application-menu commands ("new-vm", "settings") forwarded from the main process. */
  onMenuCommand?(fn: (command: string) => void): void;
}

declare global {
  interface Window {
    vmdesk?: DesktopBridge;
  }
}

export function desktop(): DesktopBridge | undefined {
  return typeof window !== 'undefined' ? window.vmdesk : undefined;
}
