// The sandboxed preload: exposes window.vmdesk = {connection, openFile, revealInFolder, openConsole, onMenuCommand}, nothing generic.
//
// A sandboxed preload cannot import local files, so this is a plain CommonJS script (see ./package.json) that
// only requires 'electron'; channel names repeat ../ipc-contract.ts, and a unit test keeps the two equal.
{
  const { contextBridge, ipcRenderer } = require('electron') as typeof import('electron');

  const CHANNELS = {
    connection: 'vmdesk:connection',
    openFile: 'vmdesk:open-file',
    revealInFolder: 'vmdesk:reveal-in-folder',
    openConsole: 'vmdesk:open-console',
    menu: 'vmdesk:menu',
  } as const;

  const api = Object.freeze({
    /**
     * The server's endpoint and token, asked of the main process, which answers only our own windows. They
     * used to ride on the renderer's command line, where every local user can read them in /proc.
     */
    connection: (): Promise<{ endpoint: string; token: string }> => ipcRenderer.invoke(CHANNELS.connection),
    openFile: (filters?: { name: string; extensions: string[] }[]): Promise<string | null> => ipcRenderer.invoke(CHANNELS.openFile, filters),
    revealInFolder: (path: string): Promise<void> => ipcRenderer.invoke(CHANNELS.revealInFolder, String(path)),
    openConsole: (vmId: string): Promise<void> => ipcRenderer.invoke(CHANNELS.openConsole, String(vmId)),
    /** Only the command string crosses: never the IPC event (it would hand the page ipcRenderer). */
    onMenuCommand: (fn: (command: string) => void): void => {
      ipcRenderer.on(CHANNELS.menu, (_event, command: unknown) => fn(String(command)));
    },
  });

  contextBridge.exposeInMainWorld('vmdesk', api);
}
