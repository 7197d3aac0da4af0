// Reading what a QEMU run left behind: its log's tail (for exit records) and the bundle's last exit record.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ExitRecord } from '../../api/schema.js';
import { bundleFiles } from './layout.js';

const LOG_TAIL_LINES = 20;

/** Opens each run's section of qemu.log; the tail of a run starts after the last one. */
export const RUN_HEADER = '=== ';

/** The last lines of a log file (reads at most its final 64 KiB); sinceHeader keeps only the latest run's lines. */
export function logTail(path: string, lines = LOG_TAIL_LINES, sinceHeader = false): string[] {
  try {
    const size = statSync(path).size;
    const fd = openSync(path, 'r');
    try {
      const length = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, size - length);
      let all = buf.toString('utf8').split('\n').map((l) => l.trimEnd()).filter(Boolean);
      if (sinceHeader) {
        let start = all.length - 1;
        while (start >= 0 && !(all[start]!.startsWith(RUN_HEADER) && all[start]!.includes(' starting '))) start--;
        if (start >= 0) all = all.slice(start + 1);
      }
      return all.slice(-lines);
    } finally {
      closeSync(fd);
    }
  } catch {
    return [];
  }
}

/** The bundle's logs/last-exit.json, or undefined when there is none (or it is unreadable). */
export async function readExitRecord(bundleDir: string): Promise<ExitRecord | undefined> {
  try {
    return JSON.parse(await readFile(bundleFiles(bundleDir).lastExit, 'utf8')) as ExitRecord;
  } catch {
    return undefined;
  }
}
