// A file's stamp for caches that must see any change to it: its identity, size and change times, or null while
// those times are too recent to trust (the kernel's clock for them is coarse: a second write in the same tick
// could leave them as they are). Used by the snapshot listing cache and the engines' own storage stamps.

import { promises as fs } from 'node:fs';

/** A file changed less than this long ago (ms) is not trusted to show its next change in its times. */
export const RACY_MS = 1000;

/** 'none' for a file that does not exist; null when it cannot be read or changed under RACY_MS before `now`. */
export async function fileStamp(file: string, now: number): Promise<string | null> {
  let st;
  try {
    st = await fs.stat(file, { bigint: true });
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'none' : null;
  }
  const newest = Number((st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs) / 1_000_000n);
  if (now - newest < RACY_MS) return null;
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}
