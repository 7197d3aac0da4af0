// The sandboxed preload: exposes window.vmdesk = {openChannel, openFile, revealInFolder, openConsole, onMenuCommand,
// onOpenPath}, nothing generic.
//
// A sandboxed preload cannot import local files, so this is a plain CommonJS script (see ./package.json) that
// only requires 'electron'; channel names repeat ../ipc-contract.ts, and a unit test keeps the two equal.
{
  const { contextBridge, ipcRenderer } = require('electron') as typeof import('electron');

  const CHANNELS = {
    channel: 'vmdesk:channel',
    openFile: 'vmdesk:open-file',
    revealInFolder: 'vmdesk:reveal-in-folder',
    openConsole: 'vmdesk:open-console',
    menu: 'vmdesk:menu',
    openPath: 'vmdesk:open-path',
  } as const;

  interface ChannelHandlers {
    onOpen(): void;
    onMessage(data: string | Uint8Array): void;
    onClose(reason: string): void;
  }

  /**
   * A channel to VMDesk relayed by the main process (main/electron/port-relay.ts): the contract's frames ('rpc')
   * or one VM's RFB bytes ('vnc'). The MessagePort stays here, in the preload's world; the page gets functions.
   * What the page has consumed is acknowledged, which is how the main process knows to hold back.
   */
  function openChannel(kind: 'rpc' | 'vnc', vm: string | undefined, handlers: ChannelHandlers): { send(data: string | Uint8Array): void; close(): void } {
    const { port1, port2 } = new MessageChannel();
    let closed = false;
    let unacked = 0;
    let ackTimer: ReturnType<typeof setTimeout> | undefined;
    const ack = (n: number) => {
      unacked += n;
      if (unacked >= 256 * 1024) flush();
      else ackTimer ??= setTimeout(flush, 0);
    };
    const flush = () => {
      if (ackTimer !== undefined) clearTimeout(ackTimer);
      ackTimer = undefined;
      if (!closed && unacked > 0) port1.postMessage({ t: 'ack', n: unacked });
      unacked = 0;
    };
    const end = (reason: string) => {
      if (closed) return;
      closed = true;
      port1.close();
      handlers.onClose(reason);
    };
    // The browser's MessagePort (this file is typed against Node's, which has no onmessage).
    (port1 as unknown as { onmessage: ((e: { data: unknown }) => void) | null }).onmessage = (e) => {
      if (closed) return;
      const d: unknown = e.data;
      if (typeof d === 'string') {
        handlers.onMessage(d);
        ack(d.length);
      } else if (d instanceof Uint8Array || d instanceof ArrayBuffer) {
        const bytes = d instanceof ArrayBuffer ? new Uint8Array(d) : d;
        handlers.onMessage(bytes);
        ack(bytes.byteLength);
      } else if (d && typeof d === 'object' && (d as { t?: unknown }).t === 'open') handlers.onOpen();
      else if (d && typeof d === 'object' && (d as { t?: unknown }).t === 'close') end(String((d as { reason?: unknown }).reason ?? 'closed'));
    };
    port1.start();
    const request = kind === 'vnc' ? { kind, vm: String(vm) } : { kind: 'rpc' as const };
    ipcRenderer.postMessage(CHANNELS.channel, request, [port2]);
    return {
      send: (data) => {
        if (closed) return;
        if (typeof data === 'string') port1.postMessage(data);
        else if (data instanceof Uint8Array || (data as unknown) instanceof ArrayBuffer) port1.postMessage(new Uint8Array(data as Uint8Array));
      },
      close: () => {
        if (closed) return;
        port1.postMessage({ t: 'close' });
        end('closed');
      },
    };
  }

  const api = Object.freeze({
    openChannel: (kind: unknown, vm: unknown, handlers: ChannelHandlers) => openChannel(kind === 'vnc' ? 'vnc' : 'rpc', vm === undefined ? undefined : String(vm), handlers),
    openFile: (filters?: { name: string; extensions: string[] }[]): Promise<string | null> => ipcRenderer.invoke(CHANNELS.openFile, filters),
    revealInFolder: (path: string): Promise<void> => ipcRenderer.invoke(CHANNELS.revealInFolder, String(path)),
    openConsole: (vmId: string): Promise<void> => ipcRenderer.invoke(CHANNELS.openConsole, String(vmId)),
    /** Only the command string crosses: never the IPC event (it would hand the page ipcRenderer). */
    onMenuCommand: (fn: (command: string) => void): void => {
      ipcRenderer.on(CHANNELS.menu, (_event, command: unknown) => fn(String(command)));
    },
    /** A file opened with VMDesk that the page handles (an ISO for the New VM wizard); plain values only. */
    onOpenPath: (fn: (cmd: { action: string; path: string }) => void): void => {
      ipcRenderer.on(CHANNELS.openPath, (_event, cmd: { action?: unknown; path?: unknown } | undefined) => fn({ action: String(cmd?.action), path: String(cmd?.path) }));
    },
  });

  contextBridge.exposeInMainWorld('vmdesk', api);
}
