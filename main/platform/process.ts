// Small facts about other processes and their sockets, shared by the lock and both engines.
import { readFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';

/** The kernel's start time of a process (Linux: clock ticks since boot), so a reused pid is not taken for another. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * True while the process recorded as (pid, start time) still runs: not gone, not a zombie waiting for a
 * parent that died, and not a newer process that reused the pid. Without /proc (macOS) only the pid counts.
 */
export function processRunning(pid: number, startTime?: string): boolean {
  if (!pidAlive(pid)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return false;
    return !startTime || fields[19] === startTime;
  } catch {
    return true;
  }
}

/** True while a process with this pid exists (EPERM means it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Connects to a unix socket; rejects with the connect error (ENOENT, ECONNREFUSED) instead of emitting it. */
export function connectUnixSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}
