// What /proc says about one process: CPU time (all threads) and resident memory. Linux only; elsewhere the
// readers return undefined and callers report the value as unknown.
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';

let ticks: number | undefined;

/** Clock ticks per second of /proc/<pid>/stat's times (getconf CLK_TCK; 100 on every Linux we know). */
export function clockTicks(): number {
  if (ticks === undefined) {
    try {
      const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 2000 }).trim());
      ticks = Number.isFinite(n) && n > 0 ? n : 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** User + system CPU seconds the process (every thread) has used, from /proc/<pid>/stat. */
export function parseCpuSeconds(stat: string, hz: number): number | undefined {
  // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / hz;
}

/** Resident set size in bytes from /proc/<pid>/status (VmRSS, in kB). */
export function parseRssBytes(status: string): number | undefined {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : undefined;
}

export async function processCpuSeconds(pid: number): Promise<number | undefined> {
  try {
    return parseCpuSeconds(await readFile(`/proc/${pid}/stat`, 'utf8'), clockTicks());
  } catch {
    return undefined;
  }
}

export async function processRssBytes(pid: number): Promise<number | undefined> {
  try {
    return parseRssBytes(await readFile(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return undefined;
  }
}
