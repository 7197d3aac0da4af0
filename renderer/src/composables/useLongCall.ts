// A long daemon call started from a dialog (clone, export, import): its progress events, a Cancel that asks the
// daemon to stop it (job.cancel), and the error shown in the dialog. The operation also shows in the main
// window's progress bars, so closing the dialog lets it run on.
import { computed, ref } from 'vue';
import { RpcCallError } from '../api/client';
import { errorFields, newOpId, useOperationsStore } from '../stores/operations';

export function useLongCall() {
  const ops = useOperationsStore();
  const opId = ref<string | null>(null);
  const error = ref<{ message: string; code: string; details: string[] } | null>(null);
  const cancelled = ref(false);
  const op = computed(() => (opId.value ? ops.operations[opId.value] : undefined));
  const running = computed(() => !!opId.value);

  async function run<T>(label: string, vmId: string | undefined, call: (opId: string) => Promise<T>): Promise<T | undefined> {
    const id = newOpId();
    opId.value = id;
    error.value = null;
    cancelled.value = false;
    ops.begin(id, label, vmId, true);
    try {
      return await call(id);
    } catch (e) {
      if (e instanceof RpcCallError && e.code === 'ECANCELED') cancelled.value = true;
      else error.value = errorFields(e);
      return undefined;
    } finally {
      ops.finish(id);
      opId.value = null;
    }
  }

  async function cancel(): Promise<void> {
    if (opId.value) await ops.cancel(opId.value);
  }

  return { op, running, error, cancelled, run, cancel };
}
