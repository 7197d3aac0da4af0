// A live preview of a running VM's screen: polls vm.screenshot every few seconds and serves it as a blob: URL.
import { onUnmounted, ref, watch, type Ref } from 'vue';
import type { VmState } from '../../../main/api/schema';
import { rpc, base64ToBytes } from '../api/client';

export const PREVIEW_INTERVAL_MS = 4000;

export function useScreenshot(id: Ref<string>, state: Ref<VmState>, intervalMs = PREVIEW_INTERVAL_MS) {
  const url = ref<string | null>(null);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let alive = true;
  let inFlight = false;

  function setBlob(png: Uint8Array | null): void {
    if (url.value) URL.revokeObjectURL(url.value);
    url.value = png ? URL.createObjectURL(new Blob([png as BlobPart], { type: 'image/png' })) : null;
  }

  async function tick(): Promise<void> {
    timer = undefined;
    if (!alive) return;
    // A paused guest's screen does not change: keep the last picture, stop asking.
    if (state.value === 'running' && !inFlight && document.visibilityState !== 'hidden') {
      inFlight = true;
      try {
        const { png } = await rpc().call('vm.screenshot', { id: id.value });
        if (alive) setBlob(base64ToBytes(png));
      } catch {
        /* the VM stopped between polls; the state change will clear the picture */
      } finally {
        inFlight = false;
      }
    }
    if (alive && state.value === 'running') timer = setTimeout(() => void tick(), intervalMs);
  }

  watch(
    [id, state],
    ([, s]) => {
      if (s === 'stopped' || s === 'crashed') setBlob(null);
      if (s === 'running' && !timer) timer = setTimeout(() => void tick(), 300);
    },
    { immediate: true },
  );

  onUnmounted(() => {
    alive = false;
    if (timer) clearTimeout(timer);
    setBlob(null);
  });

  return url;
}
