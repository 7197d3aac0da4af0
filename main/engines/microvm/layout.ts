// Where a micro-VM's files live (sockets and the runtime record in the runtime dir; logs and the exit record
// in the bundle), and where the vmdesk-microvm executable is.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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

const here = dirname(fileURLToPath(import.meta.url));

/** The repository (or packaged app) root, from main/engines/microvm (TS) or dist/main/engines/microvm (JS). */
function appRoot(): string {
  let dir = here;
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    dir = dirname(dir);
  }
  return resolve(here, '../../..');
}

/**
 * The vmdesk-microvm executable: VMDESK_MICROVM_EXE when set, else the one native/build.mjs builds next to the
 * addon. A packaged app keeps it outside the asar archive (app.asar.unpacked), where it can be executed.
 */
export function microvmExecutable(): string {
  if (process.env.VMDESK_MICROVM_EXE) return process.env.VMDESK_MICROVM_EXE;
  const file = join(appRoot(), 'native', 'build', 'Release', 'vmdesk-microvm');
  return file.replace(`${join('', 'app.asar')}/`, `${join('', 'app.asar.unpacked')}/`);
}
