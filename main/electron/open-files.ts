// Files handed to VMDesk by the desktop: double-clicking an .ova, .ovf, .vmdesk or .iso (the MIME types the
// packages register), `VMDesk disk.iso`, or a second launch forwarding its arguments to the first instance.
// Appliances and archives go to the import flow, an ISO to the New VM wizard. Pure: main.ts does the rest.
import { statSync } from 'node:fs';
import path from 'node:path';

export type OpenAction = 'import' | 'create';
export interface OpenRequest {
  action: OpenAction;
  path: string;
}

export const OPENABLE: Readonly<Record<string, OpenAction>> = Object.freeze({ '.ova': 'import', '.ovf': 'import', '.vmdesk': 'import', '.iso': 'create' });

/** At most this many files from one launch (a glob gone wrong should not open a hundred dialogs). */
export const MAX_OPEN_FILES = 8;

function isRegularFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The request for one path, or undefined when VMDesk does not open that kind of file (or it is not a file). */
export function openRequestFor(file: string, cwd: string, exists: (p: string) => boolean = isRegularFile): OpenRequest | undefined {
  if (typeof file !== 'string' || !file || file.length > 4096 || file.includes('\0')) return undefined;
  let p = file;
  if (p.startsWith('file://')) {
    try {
      p = decodeURIComponent(new URL(p).pathname);
    } catch {
      return undefined;
    }
  }
  const action = OPENABLE[path.extname(p).toLowerCase()];
  if (!action) return undefined;
  const abs = path.resolve(cwd, p);
  return exists(abs) ? { action, path: abs } : undefined;
}

/**
 * The files to open from a command line (the first instance's, or one a second launch forwarded): arguments
 * after the executable that are not switches (Chromium's and ours start with "-") and name openable files.
 */
export function openRequestsFromArgv(argv: readonly string[], cwd: string, exists?: (p: string) => boolean): OpenRequest[] {
  const out: OpenRequest[] = [];
  const seen = new Set<string>();
  for (const arg of argv.slice(1)) {
    if (arg.startsWith('-')) continue;
    const r = openRequestFor(arg, cwd, exists);
    if (!r || seen.has(r.path)) continue;
    seen.add(r.path);
    out.push(r);
    if (out.length >= MAX_OPEN_FILES) break;
  }
  return out;
}
