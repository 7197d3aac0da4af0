// The VM state machine: which operation may run in which state, and what each leaves the VM in.
// Pure data, shared by the daemon (which enforces it), the CLI and the GUI (which grey out what is refused).
import type { VmState } from './schema.js';

/** Operations that change a VM. Each runs as the VM's one job; queries never wait for a job. */
export type VmOperation =
  | 'start'
  | 'stop'
  | 'kill'
  | 'pause'
  | 'resume'
  | 'reset'
  | 'update'
  | 'update-hardware'
  | 'rename'
  | 'delete'
  | 'disk'
  | 'snapshot.take'
  | 'snapshot.restore'
  | 'snapshot.delete'
  | 'snapshot.edit'
  | 'clone'
  | 'export'
  | 'network'
  | 'limits'
  | 'suspend'
  | 'discard-state'
  | 'usb'
  | 'migrate';

export interface OperationRule {
  /** States in which the operation may start. */
  from: readonly VmState[];
  /** The state shown while it runs, when it differs from the current one. */
  during?: VmState;
  /** Runs even while another job holds the VM (a forced power-off must always be possible). */
  preempts?: boolean;
  /** Words for refusals: "cannot <verb> "x" while it is running". */
  verb: string;
}

const ALIVE = ['starting', 'running', 'paused', 'stopping'] as const satisfies readonly VmState[];
const DOWN = ['stopped', 'crashed'] as const satisfies readonly VmState[];
const UP = ['running', 'paused'] as const satisfies readonly VmState[];
/** Memory and device state on disk (vmdesk suspend): it starts where it was, so its hardware must stay as it is. */
const SAVED = ['saved'] as const satisfies readonly VmState[];

export const OPERATIONS: Record<VmOperation, OperationRule> = {
  start: { from: [...DOWN, ...SAVED], during: 'starting', verb: 'start' },
  stop: { from: UP, during: 'stopping', verb: 'shut down' },
  kill: { from: ALIVE, preempts: true, verb: 'power off' },
  pause: { from: ['running'], verb: 'pause' },
  resume: { from: ['paused'], verb: 'resume' },
  reset: { from: UP, verb: 'reset' },
  /** Settings the running guest does not see (OS type, description). */
  update: { from: [...DOWN, ...UP, ...SAVED], verb: 'change the settings of' },
  /** CPUs, memory, disks, network, firmware, engine: only while stopped. */
  'update-hardware': { from: DOWN, verb: 'change the hardware of' },
  rename: { from: [...DOWN, ...UP, ...SAVED], verb: 'rename' },
  /** A saved VM's state file goes with it. */
  delete: { from: [...DOWN, ...SAVED], verb: 'delete' },
  disk: { from: DOWN, verb: 'change the disks of' },
  'snapshot.take': { from: [...DOWN, ...UP], verb: 'take a snapshot of' },
  'snapshot.restore': { from: [...DOWN, ...UP], verb: 'restore a snapshot of' },
  'snapshot.delete': { from: [...DOWN, ...UP, ...SAVED], verb: 'delete a snapshot of' },
  'snapshot.edit': { from: [...DOWN, ...ALIVE, ...SAVED], verb: 'edit a snapshot of' },
  clone: { from: [...DOWN, ...UP], verb: 'clone' },
  export: { from: DOWN, verb: 'export' },
  /** Port forwards and link state: applied to the running guest where the engine can (capabilities.liveNetwork). */
  network: { from: [...DOWN, ...UP], verb: 'change the network of' },
  /** Resource limits: applied live where the engine and host can (capabilities.limits.live), else kept for the next start. */
  limits: { from: [...DOWN, ...UP, ...SAVED], verb: 'change the limits of' },
  /** Save state: memory and devices to disk, then the guest process ends; the VM is 'saved'. */
  suspend: { from: UP, during: 'stopping', verb: 'save the state of' },
  'discard-state': { from: SAVED, verb: 'discard the saved state of' },
  /** USB passthrough: plugged into the running guest where the engine can, else kept for the next start. */
  usb: { from: [...DOWN, ...UP], verb: 'change the USB devices of' },
  /** Moving to another host (vmdesk migrate): stopped, or running where both ends are libvirt hosts. */
  migrate: { from: [...DOWN, ...UP], verb: 'move' },
};

/**
 * Operations that work on a VM's disk files on this machine: refused for a VM that lives on a libvirt host
 * (its disks are volumes there), with the way back (vmdesk migrate NAME --to local).
 */
export const LOCAL_DISK_OPERATIONS: readonly VmOperation[] = ['disk', 'clone', 'export'];

export function allowed(op: VmOperation, state: VmState): boolean {
  return (OPERATIONS[op].from as readonly VmState[]).includes(state);
}

/** States in which a guest process exists. */
export function isAlive(state: VmState): boolean {
  return (ALIVE as readonly VmState[]).includes(state);
}

/** A job as clients see it: what holds the VM, since when. */
export interface JobInfo {
  id: string;
  vmId: string;
  op: VmOperation | 'create' | 'import';
  /** The RPC method that started it. */
  method: string;
  startedAt: string;
}
