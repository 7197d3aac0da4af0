// Words and times for the snapshot view (no Vue): dates as people read them, kinds and consequences.
import type { Snap } from './layout';

const sameDay = (a: Date, b: Date) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

const formats = new Map<string, Intl.DateTimeFormat>();
/**
 * One formatter per set of options: toLocaleString() builds a new one on every call (~0.1 ms each), which a
 * thousand snapshots' rows, labels and axis times pay on every render.
 */
export function dateFormat(opts: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  const key = JSON.stringify(opts);
  let f = formats.get(key);
  if (!f) formats.set(key, (f = new Intl.DateTimeFormat(undefined, opts)));
  return f;
}

const said = new Map<string, string>();

/** "14:05:17" today, "5 Jan 14:05" this year, "5 Jan 2025 14:05" before. */
export function snapTime(iso: string, now = new Date()): string {
  const key = `${iso}|${now.getFullYear()}-${now.getMonth()}-${now.getDate()}`;
  const known = said.get(key);
  if (known !== undefined) return known;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  let out: string;
  if (sameDay(d, now)) out = dateFormat({ hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(d);
  else out = dateFormat({ day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', ...(d.getFullYear() !== now.getFullYear() ? { year: 'numeric' } : {}) }).format(d);
  if (said.size > 10_000) said.clear();
  said.set(key, out);
  return out;
}

/** The full date and time, for details and hover cards. */
export function fullTime(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : dateFormat({ weekday: 'short', day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(d);
}

export function kindWords(s: Pick<Snap, 'kind' | 'stateFile'>): string {
  if (s.stateFile) return 'Live, micro-VM (memory and CPU state; disks not captured)';
  return s.kind === 'live' ? 'Live (memory and disks)' : 'Disks only';
}

export function autoWords(s: Pick<Snap, 'auto'>): string | null {
  if (s.auto === 'safety') return 'Taken automatically before a restore';
  if (s.auto === 'scheduled') return 'Taken automatically by the schedule';
  return null;
}

/** "every 30 minutes", "every 2 hours", "every day". */
export function everyWords(minutes: number): string {
  if (minutes % 1440 === 0) return minutes === 1440 ? 'every day' : `every ${minutes / 1440} days`;
  if (minutes % 60 === 0) return minutes === 60 ? 'every hour' : `every ${minutes / 60} hours`;
  return `every ${minutes} minutes`;
}
