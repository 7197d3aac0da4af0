// VMDesk's GUI servers (vmdesk serve, the desktop app's relay) leave a record in the library's runtime root
// while they listen, so the daemon can say that a port a VM wants to forward is VMDesk's own.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { processRunning, processStartTime } from './process.js';


function guiDir(runtimeRoot: string): string {
  return path.join(runtimeRoot, 'gui');
}

/** Writes the record of a GUI server listening on `port`; returns its removal. */
export function recordGuiServer(runtimeRoot: string, port: number): () => void {
  const dir = guiDir(runtimeRoot);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${process.pid}-${port}.json`);
  writeFileSync(file, JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) ?? '', port }) + '\n', { mode: 0o600 });
  return () => rmSync(file, { force: true });
}

/** GUI servers of this library that still run (records of dead ones are removed). */
export function guiServerPorts(runtimeRoot: string): { port: number; pid: number }[] {
  const dir = guiDir(runtimeRoot);
  const out: { port: number; pid: number }[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    if (!/^\d+-\d+\.json$/.test(name)) continue;
    const file = path.join(dir, name);
    try {
      const r = JSON.parse(readFileSync(file, 'utf8')) as { pid: unknown; startTime: unknown; port: unknown };
      if (typeof r.pid !== 'number' || typeof r.port !== 'number') continue;
      if (processRunning(r.pid, typeof r.startTime === 'string' && r.startTime ? r.startTime : undefined)) out.push({ port: r.port, pid: r.pid });
      else rmSync(file, { force: true });
    } catch {
      // a record being written, or garbage: not ours to judge
    }
  }
  return out;
}
