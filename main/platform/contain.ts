// The one way to turn names that came from outside (archive entries, disk ids, snapshot ids, config paths)
// into paths under a folder VMDesk owns. Everything that writes files named by untrusted input goes
// through containedPath, so "../", absolute names, NUL bytes and symbolic links planted in the folder can
// never move a write (or a later move/delete) out of it.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { VmdeskError, ErrorCode } from '../api/errors.js';

function refuse(message: string): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, message);
}

/** Printable, bounded rendering of an untrusted name for messages. */
function shown(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 120 ? `${clean.slice(0, 117)}...` : clean;
}

/** True when `p` is `root` or lies below it (both absolute; purely lexical). */
export function isInside(root: string, p: string): boolean {
  const r = path.resolve(root);
  const x = path.resolve(p);
  return x === r || x.startsWith(r.endsWith(path.sep) ? r : r + path.sep);
}

/**
 * The lexical half of containedPath: joins `segments` (each may hold "/"-separated parts) under `root`.
 * Refused: absolute segments, ".." anywhere (even when it would stay inside: no archive needs it), empty
 * or NUL-carrying segments. No file system access, so planners and tests can use it.
 */
export function joinContained(root: string, ...segments: string[]): string {
  const base = path.resolve(root);
  const parts: string[] = [];
  for (const seg of segments) {
    if (typeof seg !== 'string' || seg.length === 0) throw refuse('an empty path segment was refused');
    if (seg.includes('\0')) throw refuse(`the path segment "${shown(seg)}" contains a NUL byte and was refused`);
    if (path.isAbsolute(seg) || seg.startsWith('\\')) throw refuse(`the absolute path "${shown(seg)}" was refused where a name inside ${base} was expected`);
    for (const p of seg.split(/[/\\]/)) {
      if (p === '' || p === '.') continue;
      if (p === '..') throw refuse(`the path "${shown(seg)}" climbs out with ".." and was refused`);
      parts.push(p);
    }
  }
  const full = path.resolve(base, ...parts);
  if (!isInside(base, full)) throw refuse(`the path "${shown(segments.join('/'))}" lies outside ${base} and was refused`);
  return full;
}

/**
 * Resolves `segments` under `root` (see joinContained), then walks the components that exist with lstat:
 * a symbolic link among them must resolve inside `root` (a dangling one is refused, since writing through
 * it would create its target wherever it points). The returned path is safe to create with O_EXCL ('wx'),
 * which does not follow a link planted at the last component afterwards.
 */
export async function containedPath(root: string, ...segments: string[]): Promise<string> {
  const full = joinContained(root, ...segments);
  const base = path.resolve(root);
  let realRoot: string;
  try {
    realRoot = await fs.realpath(base);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return full; // nothing exists below a missing root
    throw e;
  }
  let cur = base;
  for (const p of path.relative(base, full).split(path.sep).filter(Boolean)) {
    cur = path.join(cur, p);
    let st;
    try {
      st = await fs.lstat(cur);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') break; // the rest does not exist yet
      throw e;
    }
    if (!st.isSymbolicLink()) continue;
    const real = await fs.realpath(cur).catch(() => null);
    if (!real || !isInside(realRoot, real)) throw refuse(`${cur} is a symbolic link leading out of ${base}; refused`);
  }
  return full;
}
