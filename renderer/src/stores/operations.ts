// Long operations in flight (from 'progress' events) and errors waiting for the user to read them.
import { defineStore } from 'pinia';
import { ref, computed } from 'vue';
import type { VmEvent } from '../../../main/api/events';
import { RpcCallError } from '../api/client';

export interface Operation {
  opId: string;
  vmId?: string;
  label: string;
  phase: string;
  fraction?: number;
}

export interface ShownError {
  key: number;
  title: string;
  message: string;
  code: string;
  details: string[];
}

let opCounter = 0;
let errorCounter = 0;

export function newOpId(): string {
  return `op-${Date.now().toString(36)}-${(opCounter++).toString(36)}`;
}

export const useOperationsStore = defineStore('operations', () => {
  const operations = ref<Record<string, Operation>>({});
  const errors = ref<ShownError[]>([]);
  const active = computed(() => Object.values(operations.value));

  /** Registers an operation before its call goes out, so the bar shows even before the first event. */
  function begin(opId: string, label: string, vmId?: string): void {
    operations.value = { ...operations.value, [opId]: { opId, vmId, label, phase: 'starting' } };
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
      [ev.opId]: { opId: ev.opId, vmId: ev.id ?? prev?.vmId, label: prev?.label ?? ev.phase, phase: ev.phase, fraction: ev.fraction },
    };
  }

  function report(title: string, e: unknown): void {
    const err =
      e instanceof RpcCallError
        ? { code: e.code, message: e.message, details: e.details }
        : { code: 'EINTERNAL', message: e instanceof Error ? e.message : String(e), details: [] };
    errors.value = [...errors.value, { key: errorCounter++, title, ...err }].slice(-5);
  }

  function dismiss(key: number): void {
    errors.value = errors.value.filter((e) => e.key !== key);
  }

  /** Runs a call as a tracked operation: progress bar while it runs, readable error if it fails. */
  async function track<T>(label: string, vmId: string | undefined, fn: (opId: string) => Promise<T>): Promise<T | undefined> {
    const opId = newOpId();
    begin(opId, label, vmId);
    try {
      return await fn(opId);
    } catch (e) {
      report(`${label} failed`, e);
      return undefined;
    } finally {
      finish(opId);
    }
  }

  return { operations, active, errors, begin, finish, applyProgress, report, dismiss, track };
});
