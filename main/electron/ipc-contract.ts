// The Electron IPC channels between preload and main, each with its argument schema; main validates every call here.
import { z } from 'zod';

/** Channel names; preload/index.ts repeats them (a sandboxed preload cannot import) and a test keeps both equal. */
export const IPC = {
  /** renderer → main: the server's endpoint and token (never on the command line, see main.ts). */
  connection: 'vmdesk:connection',
  openFile: 'vmdesk:open-file',
  revealInFolder: 'vmdesk:reveal-in-folder',
  openConsole: 'vmdesk:open-console',
  /** main → renderer: an application-menu command. */
  menu: 'vmdesk:menu',
} as const;

/** The connection request carries nothing: what it returns depends only on who asks. */
export const ConnectionArgs = z.tuple([]);

export interface DesktopConnection {
  /** ws://127.0.0.1:PORT/ws */
  endpoint: string;
  token: string;
}

export const OpenFileArgs = z.tuple([
  z
    .array(z.object({ name: z.string().max(80), extensions: z.array(z.string().regex(/^[A-Za-z0-9*]{1,10}$/)).max(20) }).strict())
    .max(10)
    .optional(),
]);

export const RevealArgs = z.tuple([z.string().min(1).max(4096).refine((p) => p.startsWith('/') || /^[A-Za-z]:\\/.test(p), 'absolute path required')]);

export const OpenConsoleArgs = z.tuple([z.string().regex(/^[A-Za-z0-9._+ -]{1,128}$/, 'bad VM id')]);

export const MENU_COMMANDS = ['new-vm', 'settings'] as const;
export type MenuCommand = (typeof MENU_COMMANDS)[number];
