// Where a QEMU VM's files live: sockets and pid records in the runtime dir, logs and firmware vars in the bundle.
import { join } from 'node:path';

export interface RuntimeFiles {
  /** QEMU's QMP socket: the daemon holds the one connection. */
  qmp: string;
  /** QEMU's serial chardev socket, held by the daemon and fanned out to clients. */
  serial: string;
  vnc: string;
  /** QEMU's listening socket for network adapter i (a "nat" adapter's passt connects to it). */
  net(i: number): string;
  /** qemu.json: pid, start time and accel of the QEMU the daemon started, for a later daemon to adopt. */
  record: string;
}

export function runtimeFiles(runtimeDir: string): RuntimeFiles {
  return {
    qmp: join(runtimeDir, 'qmp.sock'),
    serial: join(runtimeDir, 'serial.sock'),
    vnc: join(runtimeDir, 'vnc.sock'),
    net: (i: number) => join(runtimeDir, `net${i}.sock`),
    record: join(runtimeDir, 'qemu.json'),
  };
}

export interface BundleFiles {
  logs: string;
  qemuLog: string;
  serialLog: string;
  lastExit: string;
  /** Per-VM UEFI variable store, qcow2 so it is snapshotted with the disks. */
  uefiVars: string;
}

export function bundleFiles(bundleDir: string): BundleFiles {
  const logs = join(bundleDir, 'logs');
  return {
    logs,
    qemuLog: join(logs, 'qemu.log'),
    serialLog: join(logs, 'serial.log'),
    lastExit: join(logs, 'last-exit.json'),
    uefiVars: join(bundleDir, 'uefi-vars.qcow2'),
  };
}

/** Unix socket paths are limited to 108 bytes (104 on macOS); keep a margin. */
export const SOCKET_PATH_MAX = 100;
