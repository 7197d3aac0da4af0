// Where a QEMU VM's files live: sockets and pid records in the runtime dir, logs and firmware vars in the bundle.
import { join } from 'node:path';

export interface RuntimeFiles {
  /** The supervisor's control socket: the one entry point for CLI, app and server. */
  control: string;
  /** QEMU's QMP socket, used only by the supervisor. */
  qmp: string;
  /** QEMU's serial chardev socket, held by the supervisor and fanned out to clients. */
  serial: string;
  vnc: string;
  /** {pid, qemuPid, startedAt, accel} written by the supervisor once QEMU is up. */
  supervisorRecord: string;
  /** QEMU's listening socket for network adapter i (a "nat" adapter's passt connects to it). */
  net(i: number): string;
}

export function runtimeFiles(runtimeDir: string): RuntimeFiles {
  return {
    control: join(runtimeDir, 'ctl.sock'),
    qmp: join(runtimeDir, 'qmp.sock'),
    serial: join(runtimeDir, 'serial.sock'),
    vnc: join(runtimeDir, 'vnc.sock'),
    supervisorRecord: join(runtimeDir, 'supervisor.json'),
    net: (i: number) => join(runtimeDir, `net${i}.sock`),
  };
}

export interface BundleFiles {
  logs: string;
  qemuLog: string;
  serialLog: string;
  supervisorLog: string;
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
    supervisorLog: join(logs, 'supervisor.log'),
    lastExit: join(logs, 'last-exit.json'),
    uefiVars: join(bundleDir, 'uefi-vars.qcow2'),
  };
}

/** Unix socket paths are limited to 108 bytes (104 on macOS); keep a margin. */
export const SOCKET_PATH_MAX = 100;
