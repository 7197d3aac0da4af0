// Where a micro-VM's files live (sockets and the runtime record in the runtime dir; logs and the exit record
// in the bundle), and where the vmdesk-microvm executable is.
import { join } from 'node:path';
import { resources } from '../../platform/resources.js';

export interface MicrovmRuntimeFiles {
  /** Control socket: line requests, JSON-lines replies and events (native/README.md). */
  control: string;
  /** Serial socket: the guest's console as raw bytes both ways, one client (the daemon). */
  serial: string;
  /** Written by the executable once it runs: pid, start time, sockets; read to adopt it. */
  record: string;
}

export function microvmRuntimeFiles(runtimeDir: string): MicrovmRuntimeFiles {
  return {
    control: join(runtimeDir, 'microvm-control.sock'),
    serial: join(runtimeDir, 'microvm-serial.sock'),
    record: join(runtimeDir, 'microvm.json'),
  };
}

export interface MicrovmBundleFiles {
  logs: string;
  /** The executable's stdout and stderr (start failures, dropped clients, how the guest ended). */
  processLog: string;
  /** Guest output, appended across runs by the executable itself. */
  serialLog: string;
  lastExit: string;
  snapshots: string;
}

export function microvmBundleFiles(bundleDir: string): MicrovmBundleFiles {
  const logs = join(bundleDir, 'logs');
  return {
    logs,
    processLog: join(logs, 'microvm.log'),
    serialLog: join(logs, 'serial.log'),
    lastExit: join(logs, 'last-exit.json'),
    snapshots: join(bundleDir, 'snapshots'),
  };
}

/** Unix socket paths are limited to 108 bytes (104 on macOS); keep a margin. */
export const SOCKET_PATH_MAX = 100;

/**
 * The vmdesk-microvm executable: VMDESK_MICROVM_EXE when set, else the one native/build.mjs builds next to the
 * addon, in the daemon's tree (a packaged app ships it in the daemon payload, outside the archive).
 */
export function microvmExecutable(): string {
  return resources().microvmExecutable;
}
