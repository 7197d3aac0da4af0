// Checks of user input against the schema, the file system and the host, before anything is written.
import { promises as fs, constants } from 'node:fs';
import os from 'node:os';
import type { ZodError } from 'zod';
import { VmdeskError, ErrorCode } from '../api/errors.js';

export function zodToError(err: ZodError, what = 'invalid input'): VmdeskError {
  const lines = err.issues.map((i) => `${i.path.length ? i.path.join('.') + ': ' : ''}${i.message}`);
  return new VmdeskError(ErrorCode.invalid, `${what}: ${lines[0] ?? 'invalid'}`, lines.slice(1));
}

/** Parses with a zod schema, turning failures into EINVAL with every issue listed. */
export function parseOrThrow<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: ZodError } }, value: unknown, what?: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw zodToError(r.error, what);
  return r.data;
}

/** The path must be a readable regular file; `what` names it in the error ("ISO", "kernel"…). */
export async function checkReadableFile(p: string, what: string): Promise<void> {
  if (/[,]/.test(p)) {
    // Escaped (",,") when passed to QEMU, but commas in paths are a classic injection vector: refuse them.
    throw new VmdeskError(ErrorCode.invalid, `${what} path "${p}" contains a comma; rename the file`);
  }
  if (/[\u0000-\u001f\u007f]/.test(p)) throw new VmdeskError(ErrorCode.invalid, `${what} path contains a newline or control character`);
  let st;
  try {
    st = await fs.stat(p);
  } catch {
    throw new VmdeskError(ErrorCode.invalid, `${what} "${p}" does not exist`);
  }
  if (!st.isFile()) throw new VmdeskError(ErrorCode.invalid, `${what} "${p}" is not a regular file`);
  try {
    await fs.access(p, constants.R_OK);
  } catch {
    throw new VmdeskError(ErrorCode.invalid, `${what} "${p}" is not readable`);
  }
}

export interface HostCapacity {
  cpus: number;
  memoryMiB: number;
  freeMemoryMiB: number;
}

/** os.cpus() parses /proc/cpuinfo (milliseconds on a busy host); the count does not change while we run. */
let cpuCount: number | undefined;

export function hostCapacity(): HostCapacity {
  cpuCount ??= typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return {
    cpus: cpuCount,
    memoryMiB: Math.floor(os.totalmem() / 1024 / 1024),
    freeMemoryMiB: Math.floor(os.freemem() / 1024 / 1024),
  };
}

/**
 * Errors past the host's hard limits (more vCPUs than host CPUs, more memory than the host has);
 * warnings for over-commit (more than free memory, or beyond what other running VMs leave).
 */
export function checkResources(
  req: { cpus: number; memoryMiB: number },
  host: HostCapacity,
  runningOthers: { cpus: number; memoryMiB: number } = { cpus: 0, memoryMiB: 0 },
): string[] {
  if (req.cpus > host.cpus) {
    throw new VmdeskError(ErrorCode.invalid, `${req.cpus} CPUs requested but this host has only ${host.cpus}`);
  }
  if (req.memoryMiB > host.memoryMiB) {
    throw new VmdeskError(ErrorCode.invalid, `${req.memoryMiB} MiB of memory requested but this host has only ${host.memoryMiB} MiB`);
  }
  const warnings: string[] = [];
  if (req.memoryMiB > host.freeMemoryMiB) warnings.push(`${req.memoryMiB} MiB is more than the host's free memory (${host.freeMemoryMiB} MiB); the guest may swap or be killed`);
  if (runningOthers.cpus + req.cpus > host.cpus) warnings.push(`CPUs over-committed: running VMs would use ${runningOthers.cpus + req.cpus} vCPUs on ${host.cpus} host CPUs`);
  if (runningOthers.memoryMiB + req.memoryMiB > host.memoryMiB) warnings.push(`memory over-committed: running VMs would use ${runningOthers.memoryMiB + req.memoryMiB} MiB of ${host.memoryMiB} MiB`);
  return warnings;
}
