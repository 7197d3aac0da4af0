// The gallery as the wizard sees it: image.list fetched once, then kept current from image-download and
// image-changed events; downloads started, paused, resumed and cancelled through the daemon.
import { onUnmounted, ref, shallowRef } from 'vue';
import type { CachedImage, DownloadInfo, ImageListing, UserSourceInput } from '../../../main/api/images';
import type { GalleryEntry } from '../../../main/api/images';
import { rpc } from '../api/client';
import { newOpId, useOperationsStore } from '../stores/operations';

export function useImageGallery() {
  const listing = shallowRef<ImageListing | null>(null);
  const loadError = ref('');
  /** The newest word on each image's download (events are newer than the listing). */
  const downloads = ref<Record<string, DownloadInfo>>({});
  const ops = useOperationsStore();
  let reloadTimer: ReturnType<typeof setTimeout> | undefined;

  async function load(): Promise<void> {
    try {
      const l = await rpc().call('image.list', {});
      listing.value = l;
      loadError.value = '';
      const next: Record<string, DownloadInfo> = {};
      for (const i of l.images) if (i.download) next[i.entry.id] = i.download;
      // A download in flight keeps its newest event (the listing may be older).
      for (const [id, d] of Object.entries(downloads.value)) if (!next[id] || d.state !== 'done') next[id] = d;
      downloads.value = next;
    } catch (e) {
      loadError.value = e instanceof Error ? e.message : String(e);
    }
  }

  const off = rpc().onEvent((ev) => {
    if (ev.type === 'image-download') {
      downloads.value = { ...downloads.value, [ev.download.image]: ev.download };
      if (['done', 'failed', 'cancelled', 'paused'].includes(ev.download.state)) scheduleReload();
    } else if (ev.type === 'image-changed') scheduleReload();
  });
  function scheduleReload(): void {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => void load(), 150);
  }
  onUnmounted(() => {
    off();
    clearTimeout(reloadTimer);
  });

  function item(id: string) {
    return listing.value?.images.find((i) => i.entry.id === id);
  }
  function entry(id: string): GalleryEntry | undefined {
    return item(id)?.entry;
  }
  /** Running or waiting to be resumed. */
  function activeDownload(id: string): DownloadInfo | undefined {
    const d = downloads.value[id];
    return d && ['connecting', 'running', 'verifying', 'paused'].includes(d.state) ? d : undefined;
  }

  const pulls = new Map<string, Promise<CachedImage>>();
  /** Downloads (or resumes) an image into the cache; one call per image at a time, shared by whoever asks. */
  function pull(id: string): Promise<CachedImage> {
    const running = pulls.get(id);
    if (running) return running;
    const opId = newOpId();
    ops.begin(opId, `Downloading ${entry(id)?.name ?? id}`);
    const p = rpc()
      .call('image.pull', { image: id }, { opId })
      .finally(() => {
        ops.finish(opId);
        pulls.delete(id);
        scheduleReload();
      });
    pulls.set(id, p);
    // Whoever started it may not wait for it (the Download button): the failure is shown from the events.
    p.catch(() => {});
    return p;
  }

  async function pause(id: string): Promise<void> {
    const d = await rpc().call('image.pause', { image: id });
    downloads.value = { ...downloads.value, [id]: d };
  }

  async function cancel(id: string): Promise<void> {
    await rpc().call('image.cancel', { image: id });
    const d = downloads.value[id];
    if (d) downloads.value = { ...downloads.value, [id]: { ...d, state: 'cancelled' } };
    scheduleReload();
  }

  async function addSource(src: UserSourceInput): Promise<GalleryEntry> {
    const e = await rpc().call('image.addSource', src);
    await load();
    return e;
  }

  return { listing, loadError, downloads, load, item, entry, activeDownload, pull, pause, cancel, addSource };
}

export type ImageGallery = ReturnType<typeof useImageGallery>;
