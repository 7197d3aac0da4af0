// The Electron IPC channels between preload and main, each with its argument schema; main validates every call here.
import { z } from 'zod';

/** Channel names; preload/index.ts repeats them (a sandboxed preload cannot import) and a test keeps both equal. */
export const IPC = {
  /**
   * renderer → main (ipcRenderer.postMessage with one MessagePort): open a channel to VMDesk, the contract's
   * frames ({kind:'rpc'}) or a VM's display ({kind:'vnc', vm}); see port-relay.ts. Replaces the WebSocket
   * endpoint and token: the desktop shell opens no TCP port.
   */
  channel: 'vmdesk:channel',
  openFile: 'vmdesk:open-file',
  revealInFolder: 'vmdesk:reveal-in-folder',
  openConsole: 'vmdesk:open-console',
  /** main → renderer: an application-menu command. */
  menu: 'vmdesk:menu',
  /** main → renderer: a file the user opened with VMDesk (double-click, `vmdesk file.iso`) that needs the page. */
  openPath: 'vmdesk:open-path',
} as const;

const VmId = z.string().regex(/^[A-Za-z0-9._+ -]{1,128}$/, 'bad VM id');

export const ChannelRequest = z.discriminatedUnion('kind', [z.object({ kind: z.literal('rpc') }).strict(), z.object({ kind: z.literal('vnc'), vm: VmId }).strict()]);
export type ChannelRequest = z.infer<typeof ChannelRequest>;
export const ChannelArgs = z.tuple([ChannelRequest]);

export const OpenFileArgs = z.tuple([
  z
    .array(z.object({ name: z.string().max(80), extensions: z.array(z.string().regex(/^[A-Za-z0-9*]{1,10}$/)).max(20) }).strict())
    .max(10)
    .optional(),
]);

export const RevealArgs = z.tuple([z.string().min(1).max(4096).refine((p) => p.startsWith('/') || /^[A-Za-z]:\\/.test(p), 'absolute path required')]);

export const OpenConsoleArgs = z.tuple([VmId]);

export const MENU_COMMANDS = ['new-vm', 'settings'] as const;
export type MenuCommand = (typeof MENU_COMMANDS)[number];

/** What a window is asked to do with a file opened with VMDesk (main → renderer, IPC.openPath). */
export interface OpenPathCommand {
  action: 'create';
  path: string;
}
