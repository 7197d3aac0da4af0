// The supervisor's control protocol: JSON lines over runtimeDir/ctl.sock, shared by supervisor and clients.
import type { AccelChoice, ExitRecord, PortForward, VmState } from '../../api/schema.js';

/** What the engine hands the supervisor process (written to runtimeDir/launch.json). */
export interface LaunchSpec {
  vmId: string;
  vmName: string;
  qemuPath: string;
  /** Full argv; must contain -S: the supervisor attaches serial and QMP before letting the vCPUs run. */
  args: string[];
  bundleDir: string;
  runtimeDir: string;
  accel: AccelChoice;
  /** Leave the guest paused once QEMU is up instead of continuing it. */
  startPaused: boolean;
  /** "nat" adapters whose QEMU socket gets a passt process (see passt.ts). */
  passt?: { path: string; adapters: { index: number; forwards: PortForward[] }[] };
}

/** runtimeDir/supervisor.json, written once QEMU has been spawned. */
export interface SupervisorRecord {
  pid: number;
  qemuPid: number;
  startedAt: string;
  accel: AccelChoice;
  vmId: string;
  vncSocket: string;
}

export type ControlRequest =
  | { id: number; cmd: 'state' | 'info' | 'pause' | 'resume' | 'reset' | 'kill' | 'wait-started' | 'wait-exit' }
  | { id: number; cmd: 'shutdown'; timeoutMs: number }
  | { id: number; cmd: 'qmp'; execute: string; arguments?: Record<string, unknown>; timeoutMs?: number }
  /** Turns this connection into a raw byte stream to the serial console after the ok reply. */
  | { id: number; cmd: 'serial'; replay?: boolean };

export interface ControlError {
  code: string;
  message: string;
  details?: string[];
}

export type ControlMessage =
  | { id: number; ok: true; result?: unknown }
  | { id: number; ok: false; error: ControlError }
  | { event: string; data: unknown; timestamp?: { seconds: number; microseconds: number } }
  | { state: VmState }
  | { exit: ExitRecord };

export interface SupervisorInfo extends SupervisorRecord {
  state: VmState;
}

/** Event names the handle emits besides QMP's own. */
export const STATE_EVENT = 'vmdesk.state';
export const EXIT_EVENT = 'vmdesk.exit';
