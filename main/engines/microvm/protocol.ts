// The micro-VM host's control protocol (JSON lines over a unix socket) and where its files live.
import { join } from 'node:path';
import type { AccelChoice, ExitRecord, VmConfig } from '../../api/schema.js';

/**
 * Requests, one JSON object per line: `{"id":1,"cmd":"pause"}`. Replies: `{"id":1,"ok":true,"result":…}` or
 * `{"id":1,"ok":false,"error":{"code":"ESTATE","message":"…"}}`. Events are pushed to every control
 * connection as `{"event":"state","data":{"state":"paused"}}` and `{"event":"exit","data":ExitRecord}`.
 *
 * `serial` is special: after its reply line the connection carries raw serial bytes both ways (guest output
 * is fanned out to every serial connection and to logs/serial.log; any connection may type).
 */
export type ControlCommand =
  | 'state'
  | 'info'
  | 'pause'
  | 'resume'
  | 'reset'
  | 'shutdown'
  | 'kill'
  | 'snapshot-save'
  | 'snapshot-load'
  | 'serial';

export interface ControlRequest {
  id: number;
  cmd: ControlCommand | string;
  args?: Record<string, unknown>;
}

export type ControlReply =
  | { id: number; ok: true; result?: unknown }
  | { id: number; ok: false; error: { code: string; message: string; details?: string[] } };

export type ControlEvent = { event: 'state'; data: { state: HostState } } | { event: 'exit'; data: ExitRecord } | { event: string; data: unknown };

/** The host's view of its guest; maps onto VmState. */
export type HostState = 'starting' | 'running' | 'paused' | 'stopping' | 'stopped';

/** What the engine hands the host process (written to the runtime dir, path passed in argv). */
export interface LaunchSpec {
  config: VmConfig;
  bundleDir: string;
  runtimeDir: string;
  paused: boolean;
  accel: AccelChoice;
  /** Boot from this snapshot instead of the kernel (the disks in the config replace the snapshot's). */
  restoreFrom?: string;
}

/** Written by the host once its control socket listens; removed when it exits. */
export interface HostRecord {
  pid: number;
  startedAt: string;
  accel: AccelChoice;
  vmId: string;
}

export function runtimePaths(runtimeDir: string) {
  return {
    control: join(runtimeDir, 'microvm.sock'),
    record: join(runtimeDir, 'microvm-host.json'),
    launch: join(runtimeDir, 'microvm-launch.json'),
    /** {code, message, details} when the host fails before the guest runs. */
    startError: join(runtimeDir, 'microvm-start-error.json'),
  };
}

export function bundlePaths(bundleDir: string) {
  const logs = join(bundleDir, 'logs');
  return {
    logs,
    serialLog: join(logs, 'serial.log'),
    hostLog: join(logs, 'microvm-host.log'),
    lastExit: join(logs, 'last-exit.json'),
  };
}

/** Unix socket paths are limited to 108 bytes (104 on macOS); keep a margin. */
export const SOCKET_PATH_MAX = 100;
