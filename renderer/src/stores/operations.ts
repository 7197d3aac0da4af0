// Long operations in flight (from 'progress' events) and errors waiting for the user to read them.
import { defineStore } from 'pinia';
import { ref, computed } from 'vue';
import type { VmEvent } from '../../../main/api/events';
import { RpcCallError, rpc } from '../api/client';

export interface Operation {
  opId: string;
  vmId?: string;
  label: string;
  phase: string;
  fraction?: number;
  /** The daemon can stop it (job.cancel): copies of disks in clones, exports, imports. */
  cancellable?: boolean;
  cancelling?: boolean;
}

export interface ShownError {
  key: number;
  title: string;
  message: string;
  code: string;
  details: string[];
  /** The VM it is about: a later success for that VM clears it (no stale "Starting failed" once it runs). */
  vmId?: string;
}

let opCounter = 0;
let errorCounter = 0;

export function newOpId(): string {
  return `op-${Date.now().toString(36)}-${(opCounter++).toString(36)}`;
}

export function errorFields(e: unknown): { code: string; message: string; details: string[] } {
  return e instanceof RpcCallError
    ? { code: e.code, message: e.message, details: e.details }
    : { code: 'EINTERNAL', message: e instanceof Error ? e.message : String(e), details: [] };
}

export const useOperationsStore = defineStore('operations', () => {
  const operations = ref<Record<string, Operation>>({});
  const errors = ref<ShownError[]>([]);
  const active = computed(() => Object.values(operations.value));

  /** Registers an operation before its call goes out, so the bar shows even before the first event. */
  function begin(opId: string, label: string, vmId?: string, cancellable = false): void {
    operations.value = { ...operations.value, [opId]: { opId, vmId, label, phase: 'starting', cancellable } };
  }

  function finish(opId: string): void {
    const { [opId]: _gone, ...rest } = operations.value;
    operations.value = rest;
  }

  function applyProgress(ev: Extract<VmEvent, { type: 'progress' }>): void {
    if (ev.done) return finish(ev.opId);
    const prev = operations.value[ev.opId];
    operations.value = {
      ...operations.value,
      [ev.opId]: { ...prev, opId: ev.opId, vmId: ev.id ?? prev?.vmId, label: prev?.label ?? ev.phase, phase: ev.phase, fraction: ev.fraction },
    };
  }

  async function cancel(opId: string): Promise<void> {
    const op = operations.value[opId];
    if (!op) return;
    operations.value = { ...operations.value, [opId]: { ...op, cancelling: true, phase: 'cancelling' } };
    await rpc()
      .call('job.cancel', { opId })
      .catch((e: unknown) => report('Cancelling failed', e, op.vmId));
  }

  function report(title: string, e: unknown, vmId?: string): void {
    errors.value = [...errors.value, { key: errorCounter++, title, ...errorFields(e), vmId }].slice(-5);
  }

  function dismiss(key: number): void {
    errors.value = errors.value.filter((e) => e.key !== key);
  }

  /** Drops the errors about a VM: something later about it went well. */
  function clearFor(vmId: string): void {
    if (errors.value.some((e) => e.vmId === vmId)) errors.value = errors.value.filter((e) => e.vmId !== vmId);
  }

  /** Runs a call as a tracked operation: progress bar while it runs, readable error if it fails. */
  async function track<T>(label: string, vmId: string | undefined, fn: (opId: string) => Promise<T>, opts: { cancellable?: boolean } = {}): Promise<T | undefined> {
    const opId = newOpId();
    begin(opId, label, vmId, opts.cancellable);
    try {
      const r = await fn(opId);
      if (vmId) clearFor(vmId);
      return r;
    } catch (e) {
      if (!(e instanceof RpcCallError && e.code === 'ECANCELED')) report(`${label} failed`, e, vmId);
      return undefined;
    } finally {
      finish(opId);
    }
  }

  return { operations, active, errors, begin, finish, applyProgress, cancel, report, dismiss, clearFor, track };
});
