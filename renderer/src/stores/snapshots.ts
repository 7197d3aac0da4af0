// Snapshots of the VM shown in the Snapshots tab: its listing (snapshot.list), thumbnails fetched only for what
// is on screen (a few at a time, newest request first, a bounded cache), and the library's snapshot
// preferences. Nothing deep is reactive: a listing of a thousand snapshots is one plain object in a shallow ref.
import { defineStore } from 'pinia';
import { nextTick, reactive, ref, shallowRef } from 'vue';
import type { SnapshotListingWire } from '../../../main/api/rpc';
import { rpc } from '../api/client';

/** Thumbnails kept (data URLs of screenshots are tens of KiB each). */
const THUMB_CACHE = 300;
/** thumbnail calls in flight at once. */
const THUMB_PARALLEL = 4;

export const useSnapshotsStore = defineStore('snapshots', () => {
  const vmId = ref<string | null>(null);
  const listing = shallowRef<SnapshotListingWire | null>(null);
  const loading = ref(false);
  const error = ref<unknown>(null);
  /** `${vmId}/${snapshotId}` → data URL, null when the snapshot has none; absent until asked. */
  const thumbs = reactive(new Map<string, string | null>());
  const prefs = ref<{ safetyKeep: number | null } | null>(null);
  /** Tree or timeline, kept while the app runs. */
  const mode = ref<'tree' | 'timeline'>('tree');

  let generation = 0;
  let pending: Promise<SnapshotListingWire | null> | null = null;
  let pendingFor: string | null = null;

  /** Fetches the listing of `id` (the VM shown); a call for another VM drops the old one's. */
  async function load(id: string): Promise<SnapshotListingWire | null> {
    if (vmId.value !== id) {
      vmId.value = id;
      listing.value = null;
      queue.length = 0;
    }
    if (pending && pendingFor === id) return pending;
    const gen = ++generation;
    pendingFor = id;
    loading.value = true;
    pending = (async () => {
      try {
        // For bench/snapshot-gui.mjs: where the time between a click and a painted tree goes.
        performance.mark('vmdesk:snapshots-requested');
        // Brief: without each snapshot's settings (the details ask snapshot.info), half the bytes to send and parse.
        const l = await rpc().call('snapshot.list', { id, brief: true });
        if (gen === generation && vmId.value === id) {
          // For bench/snapshot-gui.mjs: the listing is here (before any render of it), and, after the DOM update, shown.
          performance.mark('vmdesk:snapshots-received');
          listing.value = Object.freeze(l) as SnapshotListingWire;
          void nextTick(() => performance.mark('vmdesk:snapshots-rendered'));
          error.value = null;
        }
        return l;
      } catch (e) {
        if (gen === generation) error.value = e;
        throw e;
      } finally {
        if (gen === generation) {
          loading.value = false;
          pending = null;
        }
      }
    })();
    return pending;
  }

  // ---- thumbnails: on demand, newest first ----
  const queue: { key: string; vm: string; snap: string }[] = [];
  let active = 0;

  function pump(): void {
    while (active < THUMB_PARALLEL && queue.length) {
      const job = queue.pop()!;
      if (thumbs.has(job.key)) continue;
      active++;
      thumbs.set(job.key, null);
      // Marked loading (null) at once so a re-render does not ask again; replaced by the image when it comes.
      void rpc()
        .call('snapshot.thumbnail', { id: job.vm, snapshot: job.snap })
        .then(
          (r) => {
            if (r.png) thumbs.set(job.key, `data:image/png;base64,${r.png}`);
            trim();
          },
          () => {},
        )
        .finally(() => {
          active--;
          pump();
        });
    }
  }

  function trim(): void {
    if (thumbs.size <= THUMB_CACHE) return;
    for (const k of thumbs.keys()) {
      if (thumbs.size <= THUMB_CACHE) break;
      thumbs.delete(k);
    }
  }

  /** The thumbnail of a snapshot that has one: its data URL once fetched (asks for it the first time). */
  function thumb(vm: string, snap: string): string | null {
    const key = `${vm}/${snap}`;
    const v = thumbs.get(key);
    if (v !== undefined) return v;
    if (!queue.some((q) => q.key === key)) {
      queue.push({ key, vm, snap });
      if (queue.length > 200) queue.shift();
      queueMicrotask(pump);
    }
    return null;
  }

  /** Forgets a snapshot's thumbnail (deleted). */
  function forget(vm: string, snap: string): void {
    thumbs.delete(`${vm}/${snap}`);
  }

  async function loadPrefs(): Promise<{ safetyKeep: number | null }> {
    prefs.value = await rpc().call('snapshot.preferences', {});
    return prefs.value;
  }

  async function savePrefs(p: { safetyKeep: number | null }): Promise<void> {
    prefs.value = await rpc().call('snapshot.preferences', p);
  }

  return { vmId, listing, loading, error, thumbs, prefs, mode, load, thumb, forget, loadPrefs, savePrefs };
});
