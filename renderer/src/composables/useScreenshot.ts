// Live previews of running VMs' screens: one vm.screenshot poll per VM every few seconds, shared by every view showing it, served as a blob: URL.
import { computed, onUnmounted, ref, shallowRef, watch, type Ref } from 'vue';
import type { VmState } from '../../../main/api/schema';
import { rpc, base64ToBytes } from '../api/client';

export const PREVIEW_INTERVAL_MS = 4000;

interface Preview {
  id: string;
  url: Ref<string | null>;
  users: number;
  state: VmState;
  timer: ReturnType<typeof setTimeout> | undefined;
  inFlight: boolean;
}

// The list row and the details pane show the same VM: one poll and one blob URL serve both.
const previews = new Map<string, Preview>();

function setPicture(p: Preview, png: Uint8Array | null): void {
  if (p.url.value) URL.revokeObjectURL(p.url.value);
  p.url.value = png ? URL.createObjectURL(new Blob([png as BlobPart], { type: 'image/png' })) : null;
}

function schedule(p: Preview, delay: number): void {
  if (p.timer || p.users === 0 || p.state !== 'running') return;
  p.timer = setTimeout(() => void tick(p), delay);
}

async function tick(p: Preview): Promise<void> {
  p.timer = undefined;
  if (p.users === 0) return;
  // A paused guest's screen does not change and a hidden page needs no pictures: skip, keep the last one.
  if (p.state === 'running' && !p.inFlight && document.visibilityState !== 'hidden') {
    p.inFlight = true;
    try {
      const { png } = await rpc().call('vm.screenshot', { id: p.id });
      if (p.users > 0) setPicture(p, base64ToBytes(png));
    } catch {
      /* the VM stopped between polls; the state change clears the picture */
    } finally {
      p.inFlight = false;
    }
  }
  schedule(p, PREVIEW_INTERVAL_MS);
}

function acquire(id: string): Preview {
  let p = previews.get(id);
  if (!p) {
    p = { id, url: ref(null), users: 0, state: 'stopped', timer: undefined, inFlight: false };
    previews.set(id, p);
  }
  p.users++;
  return p;
}

function release(p: Preview): void {
  p.users--;
  if (p.users > 0) return;
  if (p.timer) clearTimeout(p.timer);
  p.timer = undefined;
  setPicture(p, null);
  previews.delete(p.id);
}

function setState(p: Preview, s: VmState): void {
  p.state = s;
  if (s === 'stopped' || s === 'crashed') setPicture(p, null);
  if (s === 'running') schedule(p, 300);
}

export function useScreenshot(id: Ref<string>, state: Ref<VmState>) {
  const current = shallowRef<Preview | null>(null);
  watch(
    [id, state],
    ([i, s]) => {
      if (current.value?.id !== i) {
        if (current.value) release(current.value);
        current.value = acquire(i);
      }
      setState(current.value!, s);
    },
    { immediate: true },
  );
  onUnmounted(() => {
    if (current.value) release(current.value);
    current.value = null;
  });
  return computed(() => current.value?.url.value ?? null);
}
