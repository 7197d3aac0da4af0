// Events the core emits for every change; the server forwards them to the renderer as they are.
import type { VmInfo, VmState } from './schema.js';

export type VmEvent =
  | { type: 'vm-created'; id: string; info: VmInfo }
  | { type: 'vm-updated'; id: string; info: VmInfo }
  | { type: 'vm-deleted'; id: string }
  | { type: 'vm-state'; id: string; state: VmState; info: VmInfo }
  | { type: 'progress'; opId: string; id?: string; phase: string; fraction?: number; done?: boolean; error?: string };
