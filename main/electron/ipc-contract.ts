// The Electron IPC channels between preload and main, each with its argument schema; main validates every call here.
import { z } from 'zod';

/** Channel names; preload/index.ts repeats them (a sandboxed preload cannot import) and a test keeps both equal. */
export const IPC = {
  openFile: 'vmdesk:open-file',
  revealInFolder: 'vmdesk:reveal-in-folder',
  openConsole: 'vmdesk:open-console',
  /** main → renderer: an application-menu command. */
  menu: 'vmdesk:menu',
} as const;

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

/** Passed to the renderer as process.argv entries (webPreferences.additionalArguments). */
export const ARG_ENDPOINT = '--vmdesk-endpoint=';
export const ARG_TOKEN = '--vmdesk-token=';
