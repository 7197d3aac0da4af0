// Files dropped on the window or on a path field, turned into host paths the daemon can open.
//
// In the desktop app the preload may say where a dropped file lives. A browser never says: there a file dragged
// from a file manager often carries its file:// URI, and otherwise VMDesk looks for a file of that name and size
// where downloads usually land (the daemon runs as the same user on the same machine).
import { rpc } from '../api/client';

/** Where to look for a dropped file a browser gave no path for. */
const LIKELY_FOLDERS = ['~/Downloads', '~/Desktop', '~', '~/Documents', '/tmp'];

function fromUriList(dt: DataTransfer): string[] {
  const text = dt.getData('text/uri-list') || '';
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.startsWith('file://'))
    .map((l) => {
      try {
        return decodeURIComponent(new URL(l).pathname);
      } catch {
        return '';
      }
    })
    .filter(Boolean);
}

async function findByNameAndSize(name: string, size: number): Promise<string | undefined> {
  for (const folder of LIKELY_FOLDERS) {
    const listing = await rpc()
      .call('files.list', { path: folder })
      .catch(() => null);
    const hit = listing?.entries.find((e) => e.kind === 'file' && e.name === name && e.size === size);
    if (listing && hit) return `${listing.path.replace(/\/$/, '')}/${hit.name}`;
  }
  return undefined;
}

export interface DroppedFile {
  name: string;
  /** The host path, when one could be found. */
  path?: string;
}

/** The host paths of the files in a drop (those it could find). */
export async function droppedFiles(dt: DataTransfer | null): Promise<DroppedFile[]> {
  if (!dt) return [];
  const files = [...dt.files];
  const pathForFile = (window as { vmdesk?: { pathForFile?: (f: File) => string } }).vmdesk?.pathForFile;
  const uris = fromUriList(dt);
  const out: DroppedFile[] = [];
  for (const [i, f] of files.entries()) {
    let p = pathForFile ? (() => {
      try {
        return pathForFile(f) || undefined;
      } catch {
        return undefined;
      }
    })() : undefined;
    p ??= uris.find((u) => u.endsWith(`/${f.name}`)) ?? uris[i];
    p ??= await findByNameAndSize(f.name, f.size);
    out.push({ name: f.name, path: p });
  }
  if (!files.length) for (const u of uris) out.push({ name: u.slice(u.lastIndexOf('/') + 1), path: u });
  return out;
}

/** A drag that carries files (not text dragged within the page). */
export function carriesFiles(e: DragEvent): boolean {
  return !!e.dataTransfer && [...e.dataTransfer.types].some((t) => t === 'Files' || t === 'text/uri-list');
}

export type DropKind = 'iso' | 'import' | 'disk' | 'other';

/** What a dropped file is for: an installer ISO (the wizard), an appliance or archive or disk (import). */
export function dropKind(name: string): DropKind {
  const n = name.toLowerCase();
  if (n.endsWith('.iso')) return 'iso';
  if (/\.(ova|ovf|vmdesk)$/.test(n)) return 'import';
  if (/\.(qcow2|vmdk|vdi|vhdx|vhd|img|raw)$/.test(n)) return 'disk';
  return 'other';
}
