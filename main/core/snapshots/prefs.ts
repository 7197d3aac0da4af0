// Library-wide snapshot preferences (<home>/snapshot-preferences.json, atomic writes): how many automatic
// "Before restoring" snapshots each VM keeps. Per-VM schedules live in vm.json (snapshotSchedule).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { writeJsonAtomic } from '../../platform/atomic.js';

export const PREFS_FILE = 'snapshot-preferences.json';
/** Safety snapshots kept per VM unless the user says otherwise. */
export const DEFAULT_SAFETY_KEEP = 3;
export const SAFETY_KEEP_MAX = 100;

export const SnapshotPrefs = z.object({
  /** The last N safety snapshots each VM keeps; null keeps every one. */
  safetyKeep: z.number().int().min(1).max(SAFETY_KEEP_MAX).nullable().default(DEFAULT_SAFETY_KEEP),
});
export type SnapshotPrefs = z.infer<typeof SnapshotPrefs>;

function prefsFile(home: string): string {
  return path.join(home, PREFS_FILE);
}

/** The preferences; defaults when the file is absent, unreadable or from a newer VMDesk with other fields. */
export async function readSnapshotPrefs(home: string): Promise<SnapshotPrefs> {
  let raw: unknown = {};
  try {
    raw = JSON.parse(await fs.readFile(prefsFile(home), 'utf8'));
  } catch {
    raw = {};
  }
  const parsed = SnapshotPrefs.safeParse(raw);
  return parsed.success ? parsed.data : SnapshotPrefs.parse({});
}

export async function writeSnapshotPrefs(home: string, patch: Partial<SnapshotPrefs>): Promise<SnapshotPrefs> {
  const next = SnapshotPrefs.safeParse({ ...(await readSnapshotPrefs(home)), ...patch });
  if (!next.success) {
    const i = next.error.issues[0];
    throw new VmdeskError(ErrorCode.invalid, `invalid snapshot preferences: ${i ? `${i.path.join('.')}: ${i.message}` : 'unknown error'}`);
  }
  await writeJsonAtomic(prefsFile(home), next.data);
  return next.data;
}
